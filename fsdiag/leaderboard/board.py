"""`fsdiag leaderboard`: every registered sampler (and yours) against the exact posterior, at
equal budgets of denoiser evaluations, on the built-in problems; on the batch engine
(`fsdiag.batch`): one cell per sampler x problem x budget x seed, kept in DIR/cells/<key>.json,
so a finished cell is never rerun (unless force), a killed batch resumes and a failing sampler
fails its own cells alone."""
from __future__ import annotations

import json
import os
import sys
import time

from .._checks import did_you_mean
from ..batch import run_batch
from ..outputs import atomic_write, open_folder
from .cells import PROFILES, ROW_FIELDS, Cell, expand, run_cell
from .entries import ENTRIES, installed_entries
from .tables import leaderboard_markdown, rank, results_csv

__all__ = ["leaderboard", "OWNER", "parse_add"]

OWNER = "fsdiag leaderboard"


def parse_add(spec: str) -> tuple[str, str, bool]:
    """'file.py:fn' or 'module:fn' (optionally 'NAME=file.py:fn') -> (name, spec, False)."""
    from ..cli_diagnose import load_function

    name, eq, where = spec.partition("=") if "=" in spec.split(":")[0] else ("", "", spec)
    load_function(where, "--add")                          # a bad path or name fails now, not in a worker
    return (name or where.rsplit(":", 1)[1]), where, False


def _pick(names, known, option: str) -> list[str]:
    for n in names:
        if n not in known:
            raise ValueError(f"{option}: unknown name {n!r}{did_you_mean(n, known)}; known: {', '.join(sorted(known))}")
    return list(names)


def _load(cell: Cell) -> dict | None:
    try:
        data = json.loads(cell.path.read_text())
        return data["row"] if data.get("cell", {}).get("key") == cell.key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def leaderboard(profile: str = "ci", *, samplers=None, problems=None, add=(), jobs: int = 1,
                scheduler: str | None = None, out="leaderboard", force: bool = False, overwrite: bool = False,
                progress: bool = True, stream=None) -> tuple[int, dict]:
    """Run the leaderboard; returns (exit code, result). samplers/problems: names (default all of
    the profile's); add: 'file.py:fn' specs of your samplers (also NAME=file.py:fn), beside the
    installed `fsdiag.samplers` entry points; force: rerun finished cells; overwrite: write into
    a folder this command did not write. Exit code 1 when a cell failed (the others still run).
    Raises ValueError (and OutputError, a ValueError, for --out) before any work."""
    from ..problems import PROBLEMS, make_problem

    stream = sys.stdout if stream is None else stream
    if profile not in PROFILES:
        raise ValueError(f"--profile: unknown profile {profile!r}{did_you_mean(profile, PROFILES)}; "
                         f"profiles: {', '.join(PROFILES)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs: expected a positive integer, got {jobs!r}")
    samplers = list(ENTRIES) if samplers is None else _pick(samplers, ENTRIES, "--samplers")
    problems = None if problems is None else _pick(problems, PROBLEMS, "--problems")
    adds = [parse_add(a) for a in add] + [(e.name, e.name, True) for e in installed_entries()]
    names = [a[0] for a in adds]
    clash = sorted({n for n in names if n in ENTRIES or names.count(n) > 1})
    if clash:
        raise ValueError(f"--add: the names {clash} are taken; name yours with NAME=file.py:fn")
    root = open_folder(os.fspath(out), owner=OWNER, overwrite=overwrite).path
    cells = expand(profile, samplers=samplers, problems=problems, adds=adds, out=str(root))
    start = time.perf_counter()
    ordered, ran = run_batch(run_cell, cells, done=_load, force=force, jobs=jobs, scheduler=scheduler,
                             key=lambda c: f"{c.sampler}-{c.key}", desc=f"leaderboard {profile}", unit="cell",
                             label=lambda row: f"{row['sampler']} on {row['problem']}: {row['status']}",
                             progress=progress)
    wall = time.perf_counter() - start
    ranking = rank(ordered)
    descriptions = {p: make_problem(p, seed=0).description for p in ranking}
    result = {"profile": profile, "settings": PROFILES[profile], "wall_s": wall, "ranking": ranking,
              "rows": ordered}
    atomic_write(root / "results.csv", results_csv(ordered, ROW_FIELDS))
    atomic_write(root / "leaderboard.json", json.dumps(result, indent=1, default=str))
    md = leaderboard_markdown(ranking, profile=profile, descriptions=descriptions, wall_s=wall)
    atomic_write(root / "leaderboard.md", md)
    failed = [r for r in ordered if r["status"] == "failed"]
    print(f"leaderboard ({profile}): {len(ordered)} cells ({ran} run, {len(failed)} failed) in {wall:.0f} s; "
          f"{root / 'leaderboard.md'}", file=stream)
    for r in failed[:10]:
        print(f"  failed: {r['sampler']} on {r['problem']} (budget {r['nfe']}, seed {r['seed']}): {r['error']}",
              file=stream)
    return (1 if failed else 0), result
