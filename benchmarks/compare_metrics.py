"""Compare every chapter's metrics.json between two `fsdiag regenerate` outputs.

    python benchmarks/compare_metrics.py OLD NEW [--rtol 0] [--only 03 10]

OLD and NEW are regenerate's --out folders (or their <profile>/ subfolder). Runs of a chapter are
paired by their parameters (run.json); wall-time and timing fields are ignored. Prints one line
per difference and exits 1 when there is any (a chapter missing from NEW included), else 0."""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

# Keys whose values are timings: they differ from run to run by design.
TIMING = re.compile(r"(^|_)(wall|time_s|seconds|elapsed|timing|wall_s)($|_)|^time$", re.IGNORECASE)


def chapters_root(path: Path) -> Path:
    """The folder holding the chapters' folders: `path` itself or its only profile subfolder."""
    if not path.is_dir():
        raise ValueError(f"{path}: expected a folder written by fsdiag regenerate")
    if any(p.is_dir() and p.name[:2].isdigit() for p in path.iterdir()):
        return path
    subs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subs) == 1:
        return chapters_root(subs[0])
    raise ValueError(f"{path}: no chapter folders (NN_name/) in it or in a single profile folder under it")


def runs(root: Path) -> dict:
    """{(chapter, parameters as JSON): metrics} of every finished run under root."""
    out = {}
    for metrics in sorted(root.glob("*/*/outputs/metrics.json")):
        run_dir = metrics.parent.parent
        if run_dir.name.endswith(".failed") or run_dir.name.startswith("."):
            continue
        try:
            params = json.loads((run_dir / "run.json").read_text()).get("params", {})
        except (OSError, ValueError):
            params = {}
        params = {k: v for k, v in params.items() if k not in ("out_dir", "overwrite")}
        out[(run_dir.parent.name, json.dumps(params, sort_keys=True))] = json.loads(metrics.read_text())
    return out


def differences(old, new, path: str = "", rtol: float = 0.0) -> list[str]:
    """Human-readable differences between two JSON values, timing keys skipped."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for k in sorted(set(old) | set(new), key=str):
            if TIMING.search(str(k)):
                continue
            if k not in new:
                diffs.append(f"{path}/{k}: only in OLD")
            elif k not in old:
                diffs.append(f"{path}/{k}: only in NEW")
            else:
                diffs += differences(old[k], new[k], f"{path}/{k}", rtol)
        return diffs
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} items in OLD, {len(new)} in NEW"]
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]", rtol)]
    numbers = (int, float)
    if isinstance(old, numbers) and isinstance(new, numbers) and not isinstance(old, bool) and not isinstance(new, bool):
        if old == new or (math.isnan(old) and math.isnan(new)) or math.isclose(old, new, rel_tol=rtol, abs_tol=0.0):
            return []
        return [f"{path}: {old!r} -> {new!r}"]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def compare(old_dir, new_dir, *, only=None, rtol: float = 0.0, stream=sys.stdout) -> int:
    """Print the differences between the runs of OLD and NEW (only the chapters in NEW, or those
    `only` names by prefix); 1 when there is any, else 0."""
    if not (isinstance(rtol, (int, float)) and rtol >= 0):
        raise ValueError(f"rtol: expected a non-negative number, got {rtol!r}")
    old, new = runs(chapters_root(Path(old_dir))), runs(chapters_root(Path(new_dir)))
    keys = sorted(k for k in (new if only is None else old) if only is None or any(k[0].startswith(o) for o in only))
    if not keys:
        raise ValueError("no runs to compare: NEW has no metrics.json (or --only matches no chapter)")
    n_diff = 0
    for key in keys:
        chapter = key[0]
        if key not in old or key not in new:
            print(f"{chapter}: run with parameters {key[1]} only in {'NEW' if key not in old else 'OLD'}", file=stream)
            n_diff += 1
            continue
        diffs = differences(old[key], new[key], rtol=rtol)
        n_diff += len(diffs)
        print(f"{chapter}: {'same' if not diffs else f'{len(diffs)} differences'}", file=stream)
        for d in diffs[:50]:
            print(f"  {d}", file=stream)
    print(f"{len(keys)} runs compared, {n_diff} differences (timing fields ignored)", file=stream)
    return 1 if n_diff else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--only", nargs="+", help="chapters to compare, by prefix (default: every chapter in NEW)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for numbers (default 0: exact)")
    args = p.parse_args(argv)
    try:
        return compare(args.old, args.new, only=args.only, rtol=args.rtol)
    except ValueError as err:
        print(f"compare_metrics: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
