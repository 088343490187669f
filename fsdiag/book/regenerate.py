"""`fsdiag regenerate`: execute the book's notebooks in batch under a profile, locally or on Dask.

A profile (notebooks/profiles.yml) expands into runs: one notebook with one set of parameters.
Each run executes with papermill into a staging folder that is renamed, complete, to
`OUT/<profile>/<notebook>/<key>/` (the executed notebook, outputs/ with its figures, their
data and metrics.json, and run.json); `key` hashes the notebook's content, the parameters and
the fsdiag version, so an unchanged run is skipped, a killed batch resumes, and --force reruns.
A failing run (an error, or no metrics.json) never stops the others; it lands in
`<key>.failed/` and the batch's exit code is 1.

Everything is written under OUT/<profile>, resolved against the working directory: an
existing OUT/<profile> that fsdiag regenerate did not write (a user's folder with files in it)
is refused unless --overwrite, which writes the runs beside its files. Needs the book's
dependencies: pip install "fsdiag[book]".
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import bookfiles
from .._checks import did_you_mean
from ..batch import run_batch
from ..outputs import MARKER, OutputError, Target, atomic_write, open_folder, owner_of

__all__ = ["RunSpec", "load_profiles", "expand", "execute_run", "regenerate",
           "missing_dependencies", "REPO", "PROFILES", "OWNER", "BOOK_OWNER"]

# The book's files: the copy installed with fsdiag, else the source checkout (fsdiag.book.bookfiles).
REPO = bookfiles.book_root() or bookfiles.CHECKOUT
PROFILES = REPO / "notebooks" / "profiles.yml"
OWNER = "fsdiag regenerate"      # the mark (fsdiag.outputs.MARKER) in OUT/<profile> and each run folder
BOOK_OWNER = "fsdiag book"

# Modules the two commands need beyond a base install (all in fsdiag[book]); checked up front.
_NEEDS = {"regenerate": ("yaml", "papermill", "nbclient", "ipykernel", "seaborn", "pandas"),
          "regenerate --dask": ("dask", "distributed"),
          "book": ("yaml", "jupyter_book", "sphinx-mathjax-offline")}      # the last one's module has dashes


def missing_dependencies(command: str) -> list[str]:
    """The modules `command` ("regenerate", "regenerate --dask" or "book") needs that are not
    installed (found without importing them)."""
    missing = []
    for name in _NEEDS[command]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


@dataclass
class RunSpec:
    """One notebook with one set of parameters, and where its outputs land."""

    profile: str
    notebook: str          # name without .ipynb
    path: str              # the source notebook
    params: dict
    key: str
    out: str               # OUT/<profile>/<notebook>/<key>
    threads: int = 0       # torch/BLAS threads for the kernel (0: leave as is)

    @property
    def label(self) -> str:
        varying = {k: v for k, v in self.params.items() if k in ("seed",)}
        return self.notebook + (f" {varying}" if varying else "")


# ------------------------------------------------------------------ profiles
def load_profiles(path: str | os.PathLike = PROFILES) -> dict:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"profiles: no profile file at {path}")
    profiles = yaml.safe_load(path.read_text())
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) and isinstance(p.get("notebooks"), dict)
                                                 for p in profiles.values()):
        raise ValueError(f"profiles: {path} must map each profile name to a mapping with 'notebooks'")
    return profiles


def _grid(grid) -> list[dict]:
    if not grid:
        return [{}]
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"profile: a grid maps parameter names to non-empty lists, got {grid!r}")
    names = sorted(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def run_key(notebook: Path, params: dict) -> str:
    """Hash of the notebook's content, its parameters and the fsdiag version."""
    from .. import __version__
    h = hashlib.sha256(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    return h.hexdigest()[:16]


def expand(profile: str, *, profiles: dict | None = None, notebooks_dir: str | os.PathLike | None = None,
           only=None, out: str | os.PathLike = "runs") -> list[RunSpec]:
    """The runs of a profile (optionally only some notebooks), in a stable order."""
    profiles = load_profiles() if profiles is None else profiles
    if profile not in profiles:
        raise ValueError(f"--profile: unknown profile {profile!r}{did_you_mean(profile, profiles)}; "
                         f"profiles: {', '.join(sorted(profiles))}")
    spec = profiles[profile]
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else REPO / "notebooks"
    names = list(spec["notebooks"])
    if only:
        picked = []
        for want in only:
            hits = [n for n in names if n == want or n == Path(want).stem or n.startswith(f"{want}_")]
            if not hits:
                raise ValueError(f"--only: {want!r} matches no notebook of profile {profile!r}"
                                 f"{did_you_mean(want, names)} ({', '.join(names)})")
            picked += [h for h in hits if h not in picked]
        names = picked
    runs = []
    for name in names:
        nb_spec = spec["notebooks"][name] or {}
        path = nb_dir / f"{name}.ipynb"
        if not path.is_file():
            raise ValueError(f"profile: {profile!r} names {name!r}, but there is no {path}")
        fixed = {k: v for k, v in nb_spec.items() if k != "grid"}
        for point in itertools.product(_grid(spec.get("grid")), _grid(nb_spec.get("grid"))):
            params = {**(spec.get("defaults") or {}), **fixed, **point[0], **point[1]}
            key = run_key(path, params)
            runs.append(RunSpec(profile, name, str(path), params, key, str(Path(out) / profile / name / key)))
    return runs


# ------------------------------------------------------------------ one run
def _headline(metrics: dict) -> tuple[dict, str | None]:
    """A run's headline numbers and verdict: the evidence rows of its chapter's verdict
    (`nbtools.verdict`, declared once in each chapter), by label, and its status; else the
    chapter's own `headline` dict and no status. Never its parameters."""
    verdict = metrics.get("verdict")
    if isinstance(verdict, dict) and isinstance(verdict.get("evidence"), list):
        numbers = {str(r["label"]): r["value"] for r in verdict["evidence"]
                   if isinstance(r, dict) and isinstance(r.get("value"), (int, float))
                   and not isinstance(r["value"], bool) and math.isfinite(r["value"])}
        return numbers, verdict.get("status")
    head = metrics.get("headline")
    numbers = {k: v for k, v in head.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} \
        if isinstance(head, dict) else {}
    return numbers, None


def notebook_parameters(path) -> list[str]:
    """Names assigned in a notebook's cell tagged `parameters` (parsed with ast)."""
    import ast
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    return []


def _cell_error(err) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        cell = getattr(err, "exec_count", None)
        return f"{ename}: {evalue}" + (f" (cell {cell})" if cell is not None else "")
    return f"{type(err).__name__}: {err}"


def _is_run_folder(folder: Path) -> bool:
    # A run folder this command wrote: marked, or (written before folders were marked) holding
    # the run.json of the run its name is the key of.
    if owner_of(folder) == OWNER:
        return True
    try:
        return json.loads((folder / "run.json").read_text()).get("key") == folder.name.removesuffix(".failed")
    except (OSError, ValueError, AttributeError):
        return False


def _run_target(folder: Path) -> Target:
    if folder.is_dir() and owner_of(folder) is None and _is_run_folder(folder):
        atomic_write(folder / MARKER, OWNER + "\n")         # adopt an unmarked run folder of an older fsdiag
    return Target(folder, owner=OWNER, option="--out")


@contextlib.contextmanager
def _environment(**values):
    """Set environment variables for the duration (the kernel papermill starts inherits them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_run(spec: RunSpec) -> dict:
    """Execute one run into a staging folder and rename it into place. Never raises: a failure is
    reported in the returned row (status 'failed', the failing cell's error); a run that leaves
    no outputs/metrics.json failed. The kernel's working directory is a scratch folder inside the
    run, so that nothing is written outside OUT, whatever the notebook does."""
    final = Path(os.path.abspath(spec.out))
    row = {"profile": spec.profile, "notebook": spec.notebook, "key": spec.key, "params": spec.params,
           "status": "failed", "time_s": 0.0, "error": None, "headline": {}, "verdict": None, "out": str(final)}
    try:
        target = _run_target(final)
        stage = target.stage()
    except (OSError, ValueError) as err:
        row["error"] = f"{type(err).__name__}: {err}"
        return row
    try:
        if spec.threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[var] = str(spec.threads)
        start = time.perf_counter()
        try:
            import papermill as pm
            declared = notebook_parameters(spec.path)
            unknown = sorted(set(spec.params) - set(declared))
            if unknown:
                raise ValueError(f"profile {spec.profile!r}: {', '.join(unknown)} not a parameter of {spec.notebook} "
                                 f"(its parameters: {', '.join(sorted(declared))})")
            scratch = stage / "scratch"
            scratch.mkdir()
            outputs = stage / "outputs"
            # The kernel's captions name the profile and link the data where `fsdiag book --from`
            # puts it beside the page (nbtools.figure_caption reads these).
            with _environment(FSDIAG_PROFILE=spec.profile, FSDIAG_DATA_LINKS="outputs"):
                pm.execute_notebook(spec.path, str(stage / f"{spec.notebook}.ipynb"),
                                    parameters={**spec.params, "out_dir": str(outputs)}, cwd=str(scratch),
                                    progress_bar=False, kernel_name="python3", log_output=False)
            if not any(scratch.iterdir()):
                scratch.rmdir()
            metrics_file = outputs / "metrics.json"
            if not metrics_file.is_file():
                raise RuntimeError(f"the notebook finished without writing {metrics_file.relative_to(stage)} "
                                   "(its out_dir): no outputs")
            headline, verdict = _headline(json.loads(metrics_file.read_text()))
            row.update(status="done", headline=headline, verdict=verdict)
        except Exception as err:  # noqa: BLE001 - a failing run is reported, never raised
            row["error"] = _cell_error(err)
        row["time_s"] = time.perf_counter() - start
        atomic_write(stage / "run.json", json.dumps(row, indent=2, sort_keys=True, default=str))
        failed = final.with_name(f"{spec.key}.failed")
        (target if row["status"] == "done" else _run_target(failed)).publish(stage)
        if row["status"] == "done" and failed.is_dir() and _is_run_folder(failed):
            shutil.rmtree(failed, ignore_errors=True)      # a success supersedes an earlier failure of the same run
    except (OSError, ValueError) as err:                    # the run could not be put in place
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return row


def _done_row(spec: RunSpec) -> dict | None:
    run_json = Path(spec.out) / "run.json"
    if not run_json.is_file():
        return None
    row = json.loads(run_json.read_text())
    row["status"], row["time_s"] = "skipped", 0.0
    return row


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:staging|old)-\d+-[^/]*")
_LEGACY_LEFTOVER = re.compile(r"\.[0-9a-f]{16}\.(?:staging-[a-z0-9_]{8}|old-\d+)")   # fsdiag before outputs.Target


def _clean_leftovers(root: Path, notebooks) -> None:
    """Staging folders (and half-swapped old copies) that killed batches left beside the run
    folders of these notebooks: those of processes that are gone; a live batch's are its own."""
    for folder in sorted({root / name for name in notebooks}):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in sorted(folder.iterdir()):
            m = _LEFTOVER.fullmatch(p.name)
            if m:
                try:
                    Target(folder / m["name"], owner=OWNER, option="--out", force=True).clean_stale()
                except (OSError, ValueError):
                    pass
            elif _LEGACY_LEFTOVER.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)


def _summary_of(folder: Path) -> dict | None:
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _out_path(out) -> str:
    """--out as an absolute path, resolved against the caller's folder (not the kernel's)."""
    if not isinstance(out, (str, os.PathLike)) or not str(os.fspath(out)).strip():
        raise OutputError(f"--out: expected a folder path, got {out!r}")
    return os.path.abspath(os.path.expanduser(os.fspath(out)))


def _open_out(out, profile: str, overwrite: bool) -> Target:
    """OUT/<profile>, checked before any work: refused (OutputError, a usage error) when it is not a
    folder this command may write; created, marked as this command's, when it is missing."""
    base = Path(_out_path(out))
    if base.exists() and not base.is_dir():
        raise OutputError(f"--out: {base} exists and is a file; give a folder")
    path = base / profile
    summary = _summary_of(path) if path.is_dir() and owner_of(path) is None else None
    if summary is not None and summary.get("profile") == profile and isinstance(summary.get("runs"), list):
        atomic_write(path / MARKER, OWNER + "\n")          # adopt the batch folder of an older fsdiag
    return open_folder(path, owner=OWNER, overwrite=overwrite)


# ------------------------------------------------------------------ the batch
def regenerate(profile: str, *, only=None, jobs: int = 1, scheduler: str | None = None, out="runs",
               force: bool = False, overwrite: bool = False, progress: bool = True, profiles_file=PROFILES,
               notebooks_dir=None, stream=None) -> tuple[int, dict]:
    """Run a profile; returns (exit code, summary). scheduler: a Dask scheduler address
    ('tcp://host:8786') or 'local' for a dask.distributed.LocalCluster of `jobs` workers.
    out: where OUT/<profile> goes (relative to the working directory); force: rerun finished
    runs; overwrite: write into an OUT/<profile> this command did not write (its files are kept).
    Raises ValueError (OutputError for --out) before any work when the request cannot be run."""
    stream = sys.stdout if stream is None else stream
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected a positive integer, got {jobs!r}")
    profiles = load_profiles(profiles_file)
    out = _out_path(out)
    runs = expand(profile, profiles=profiles, notebooks_dir=notebooks_dir, only=only, out=out)
    root = _open_out(out, profile, overwrite).path
    _clean_leftovers(root, [spec.notebook for spec in runs])
    cores = os.cpu_count() or 1

    def threads(todo):
        for spec in todo:
            spec.threads = max(1, cores // jobs)
    start = time.perf_counter()
    ordered, _ = run_batch(execute_run, runs, done=_done_row, force=force, jobs=jobs, scheduler=scheduler,
                           key=lambda spec: f"{spec.notebook}-{spec.key}", desc=f"regenerate {profile}",
                           label=lambda row: f"{row['notebook']}: {row['status']}", progress=progress,
                           before=threads)
    summary = {"profile": profile, "out": str(root), "wall_time_s": time.perf_counter() - start,
               "runs": ordered, "across_seeds": _across_seeds(ordered)}
    _write_summary(root, summary)
    print(_table(summary), file=stream)
    return (1 if any(r["status"] == "failed" for r in ordered) else 0), summary


def _across_seeds(rows: list[dict]) -> list[dict]:
    """Mean and 95% t-interval of each headline number over runs that differ only in their seed."""
    from scipy import stats
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] != "failed" and "seed" in r["params"]:
            rest = json.dumps({k: v for k, v in r["params"].items() if k != "seed"}, sort_keys=True, default=str)
            groups.setdefault((r["notebook"], rest), []).append(r)
    out = []
    for (notebook, rest), members in groups.items():
        if len(members) < 2:
            continue
        keys = sorted(set.intersection(*(set(m["headline"]) for m in members)))
        for k in keys:
            vals = [float(m["headline"][k]) for m in members]
            n = len(vals)
            mean = sum(vals) / n
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
            half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
            out.append({"notebook": notebook, "params": json.loads(rest), "metric": k, "n_seeds": n,
                        "mean": mean, "ci95": half})
    return out


def _write_summary(root: Path, summary: dict) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["notebook", "key", "status", "time_s", "params", "error", "metric", "value"])
    for r in summary["runs"]:
        base = [r["notebook"], r["key"], r["status"], f"{r['time_s']:.2f}", json.dumps(r["params"], sort_keys=True),
                r["error"] or ""]
        for k, v in (sorted(r["headline"].items()) or [("", "")]):
            writer.writerow(base + [k, v])
    for name, text in (("summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str)),
                       ("summary.csv", buf.getvalue())):
        atomic_write(root / name, text)


def _table(summary: dict, n_metrics: int = 3) -> str:
    lines = [f"{'run':<44} {'status':<8} {'time':>8}  {'verdict':<17} evidence (the chapter's verdict rows)"]
    for r in summary["runs"]:
        label = r["notebook"] + (f" seed={r['params']['seed']}" if "seed" in r["params"] else "")
        shown = ", ".join(f"{k} = {v:.4g}" for k, v in list(r["headline"].items())[:n_metrics])
        lines.append(f"{label:<44} {r['status']:<8} {r['time_s']:>7.1f}s  {r.get('verdict') or '':<17} {shown}")
        if r["error"]:
            lines.append(f"{'':<44} error: {r['error']}  params: {json.dumps(r['params'], sort_keys=True)}")
    if summary["across_seeds"]:
        lines.append("\nacross seeds (mean ± 95% interval):")
        for a in summary["across_seeds"][:40]:
            lines.append(f"  {a['notebook']} {a['metric']}: {a['mean']:.4g} ± {a['ci95']:.2g} (n={a['n_seeds']})")
    failed = sum(r["status"] == "failed" for r in summary["runs"])
    lines.append(f"\n{len(summary['runs'])} runs: {sum(r['status'] == 'done' for r in summary['runs'])} done, "
                 f"{sum(r['status'] == 'skipped' for r in summary['runs'])} skipped, {failed} failed; "
                 f"summary in {summary['out']}/summary.json and summary.csv")
    return "\n".join(lines)
