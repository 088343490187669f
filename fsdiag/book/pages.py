"""A chapter's outputs, which appear all at once, and its verdict.

Its visible cells write figures and metrics into a staging folder that the last cell moves
into place::

    out = book.setup(out_dir, "05_mode_reweighting", overwrite=overwrite)
    book.save_figure(fig, out, "mode_masses")
    book.write_metrics(out, metrics)
    out = book.finish(out)
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from ..outputs import MARKER, Target, atomic_write, owner_of
from .params import RUN, injected_parameters

__all__ = ["resolve_out_dir", "book_outputs", "setup", "finish", "save_figure", "write_metrics", "to_jsonable",
           "figure_data", "figure_caption", "provenance", "verdict", "show", "run_params", "OWNER", "BOOK_NOTEBOOKS"]


# --------------------------------------------------------------------------------------------
# Outputs: a run writes into a staging folder next to out_dir; finish() swaps it into place.
# The rule is fsdiag.outputs' (the one every command follows): out_dir may be replaced only when
# it is missing, empty or marked as a notebook's outputs; a user's folder or file is refused.


OWNER = "fsdiag notebook"       # the mark (fsdiag.outputs.MARKER) in a folder a notebook's run wrote
_OUTPUT_SUFFIXES = (".png", ".json", ".csv")   # what a chapter writes into out_dir


def _book_notebooks() -> Path | None:
    # The book's notebooks/ folder: the copy installed with fsdiag, else the source checkout's.
    from . import bookfiles
    return bookfiles.notebooks_dir()


BOOK_NOTEBOOKS = _book_notebooks()


def book_outputs() -> Path:
    """Where the book keeps its chapters' outputs: <repo>/notebooks/outputs in a source checkout,
    else ./outputs (nothing is ever written inside the installed package)."""
    from . import bookfiles
    if BOOK_NOTEBOOKS is not None and not bookfiles.is_installed_copy(BOOK_NOTEBOOKS.parent):
        return BOOK_NOTEBOOKS / "outputs"
    return Path.cwd().resolve() / "outputs"


def resolve_out_dir(out_dir, chapter: str) -> Path:
    """out_dir=None is the book's own folder for the chapter (book_outputs()/chapter, whatever
    the working directory); a relative path is relative to the working directory."""
    if out_dir is None:
        return book_outputs() / chapter
    return Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir))))


def _is_chapter_folder(path: Path) -> bool:
    # Is this the book's own outputs folder of some chapter (notebooks/outputs/<chapter>)?
    path = Path(os.path.realpath(path))
    return path.parent == book_outputs().resolve() and (
        BOOK_NOTEBOOKS is None or (BOOK_NOTEBOOKS / f"{path.name}.ipynb").is_file())


def _adopt_chapter_folder(final: Path) -> None:
    # The book's own notebooks/outputs/<chapter> (git-ignored build output) written before folders
    # were marked: a folder of figures, their data and metrics only is a chapter's, and is marked
    # as such so that the book build may replace it. Only there; anything else stays refused.
    if not final.is_dir() or final.is_symlink() or owner_of(final) is not None:
        return
    entries = list(final.iterdir())
    if entries and all(e.is_file() and not e.is_symlink() and e.suffix in _OUTPUT_SUFFIXES for e in entries):
        atomic_write(final / MARKER, OWNER + "\n")


def _target(final: Path):
    return Target(final, owner=OWNER, option="out_dir", override=None)


def _history() -> list:
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    ip = get_ipython()
    return ip.user_ns.get("In", []) if ip is not None else []


def setup(out_dir, chapter: str, *, overwrite: bool = False) -> Path:
    """Apply the book's seaborn style and open a staging folder for this run's outputs.

    out_dir is resolved by `resolve_out_dir`. It may be a new or empty folder, or one an earlier
    run of a notebook wrote (marked so); a user's folder with files in it, or a file, is refused
    (ValueError naming out_dir) before anything is computed. A papermill run given parameters
    also refuses to write into a chapter's own folder of the book's outputs
    (book_outputs()/<chapter>) unless overwrite=True; the book build and an interactive session
    inject none and may. Leftovers of killed runs are cleaned up here.
    Returns the staging folder (a hidden sibling of out_dir): pass it to save_figure and
    write_metrics, then to finish() in the last cell."""
    import matplotlib
    import seaborn as sns
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.autolayout": False})
    final = resolve_out_dir(out_dir, chapter)
    injected = injected_parameters(_history())
    chapter_folder = _is_chapter_folder(final)
    if injected and not overwrite and chapter_folder:
        raise ValueError(f"out_dir: this run was given parameters ({', '.join(injected)}) and would replace the "
                         f"book's own outputs in {final}; pass another folder (-p out_dir DIR) or "
                         f"-p overwrite True")
    if chapter_folder:
        _adopt_chapter_folder(final)
    target = _target(final)
    # A setup cell run again in the same kernel: its earlier staging folder goes (the other
    # leftovers, of processes that are gone, are cleaned by stage()).
    for mine in final.parent.glob(f".{glob.escape(final.name)}.staging-{os.getpid()}-*") if final.parent.is_dir() else ():
        shutil.rmtree(mine, ignore_errors=True)
    staging = target.stage()
    RUN.update(chapter=chapter, final=final, started=time.perf_counter())
    return staging


def finish(out) -> Path:
    """Move the staging folder from setup() into place as out_dir, replacing an earlier run's
    folder whole, and print what was written. Returns out_dir. The staging folder is gone
    afterwards, whatever happens."""
    staging = Path(out)
    m = re.fullmatch(r"\.(.+)\.staging-(\d+)-[^/]+", staging.name)
    if m is None or not staging.is_dir():
        raise ValueError(f"out: expected the staging folder returned by nbtools.setup, got {str(out)!r}")
    final = staging.parent / m[1]
    try:
        target = _target(final)
    except ValueError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    target.publish(staging)
    if not _in_notebook():          # a page shows its figures and provenance, not the plumbing
        try:
            shown = final.relative_to(Path.cwd().resolve())
        except ValueError:
            shown = final
        print(f"wrote {', '.join(sorted(p.name for p in final.iterdir() if p.name != MARKER))} to {shown}")
    _display_markdown(provenance())
    return final


def _git_commit() -> str:
    import subprocess
    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else "unknown"


def provenance() -> str:
    """One line for the page: the fsdiag version and commit, the wall time since setup() and
    the parameters this run used (as check_params saw them)."""
    from .. import __version__
    wall = time.perf_counter() - RUN["started"] if "started" in RUN else float("nan")
    params = ", ".join(f"`{k}={v!r}`" for k, v in RUN.get("params", {}).items() if k not in ("out_dir", "overwrite"))
    return (f"*Produced by fsdiag {__version__} (commit {_git_commit()}) in {wall:.0f} s of wall time"
            + (f", with {params}" if params else "") + ".*")


def _display_markdown(text: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Markdown(text))


def show(text: str) -> None:
    """Show markdown text on the page (in a notebook; elsewhere nothing)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a markdown string, got {type(text).__name__}")
    _display_markdown(text)


def run_params(namespace: dict, chapter: str, *, drop=("n_threads",), **extra) -> dict:
    """The parameters a chapter records in metrics.json: every parameter of its spec found in
    `namespace` (the notebook's globals()) except device, out_dir, overwrite and `drop`; lists
    copied; `extra` entries added (thresholds the chapter fixes, say)."""
    from .chapters import spec
    if not isinstance(namespace, dict):
        raise TypeError(f"namespace: expected a dict such as globals(), got {type(namespace).__name__}")
    names = [n for n in spec(chapter) if n not in ("device", "out_dir", "overwrite", *drop)]
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ValueError(f"namespace: parameters {missing} of {chapter} are not defined")
    out = {n: list(namespace[n]) if isinstance(namespace[n], (list, tuple)) else namespace[n] for n in names}
    return {**out, **extra}


class SavedFile(type(Path())):
    """The path of a saved output; as a notebook cell's last value it shows nothing (the figure and
    its caption are the output, not a local path that may not exist on the reader's machine)."""

    def _ipython_display_(self):
        pass


def save_figure(fig, out_dir, name: str) -> Path:
    """Save a figure as out_dir/name.png and the data it plots as out_dir/name.csv (out_dir:
    the folder from setup). In a notebook, also show the figure with a caption under it: the
    command that regenerates it and links to its numbers (the figure is then closed, so a
    following plt.show() does not show it twice)."""
    out_dir = Path(out_dir)
    png = atomic_write(out_dir / f"{name}.png", lambda tmp: fig.savefig(tmp, bbox_inches="tight", format="png"))
    rows = figure_data(fig)
    atomic_write(out_dir / f"{name}.csv", lambda tmp: _write_csv(tmp, rows))
    if _in_notebook():
        import matplotlib.pyplot as plt
        from IPython.display import display
        display(fig)
        plt.close(fig)
        _display_markdown(figure_caption(name))
    return SavedFile(png)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ != "TerminalInteractiveShell"


def figure_caption(name: str) -> str:
    """The line under a figure: how to regenerate it, and its data (download links when the
    outputs lie under the notebook's folder, as in the book)."""
    chapter = RUN.get("chapter", "")
    final = RUN.get("final")
    # Under `fsdiag regenerate` the run's profile and its data's place beside the page of a book
    # built with `fsdiag book --from` (outputs/<chapter>/); the book build itself: the cpu profile.
    profile = os.environ.get("FSDIAG_PROFILE", "cpu")
    given = [n for n in injected_parameters(_history()) if n not in ("out_dir", "overwrite")]
    params = ", ".join(f"{n}={RUN['params'][n]!r}" for n in given if n in RUN.get("params", {}))
    parts = [f"Regenerate: `fsdiag regenerate --profile {profile} --only {chapter}`"
             + (f" (this run's parameters: {params})" if params else "")]
    rel = None
    if os.environ.get("FSDIAG_DATA_LINKS"):
        rel = f"{os.environ['FSDIAG_DATA_LINKS']}/{chapter}"
    elif final is not None:
        try:
            rel = Path(final).relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            rel = None
    if rel is not None:
        parts.append(f"data: {{download}}`{name}.csv <{rel}/{name}.csv>`, "
                     f"{{download}}`metrics.json <{rel}/metrics.json>`")
    elif final is not None:
        parts.append(f"data: `{final}/{name}.csv`, `{final}/metrics.json`")
    return " · ".join(parts)


def figure_data(fig, max_rows: int = 200_000) -> list[tuple]:
    """What a matplotlib figure plots, as rows (panel, kind, label, x, y, value): lines and
    scatter points (x, y), bars (centre, height), images and meshes (column, row, value)."""
    from matplotlib.collections import PathCollection, QuadMesh
    from matplotlib.image import AxesImage
    from matplotlib.patches import Rectangle
    rows: list[tuple] = []
    for i, ax in enumerate(fig.axes):
        panel = ax.get_title() or f"panel {i}"
        for line in ax.get_lines():
            label = line.get_label()
            for x, y in np.asarray(line.get_xydata(), dtype=float):
                rows.append((panel, "line", label, x, y, ""))
        for coll in ax.collections:
            if isinstance(coll, PathCollection):
                for x, y in np.asarray(coll.get_offsets(), dtype=float):
                    rows.append((panel, "points", coll.get_label(), x, y, ""))
            elif isinstance(coll, QuadMesh):
                arr = np.ma.filled(np.asarray(coll.get_array(), dtype=float).reshape(-1), np.nan)
                shape = coll.get_coordinates().shape[:2]
                ncol = max(shape[1] - 1, 1)
                rows += [(panel, "mesh", coll.get_label(), k % ncol, k // ncol, v) for k, v in enumerate(arr)]
        for cont in ax.containers:
            for patch in cont:
                if isinstance(patch, Rectangle):
                    rows.append((panel, "bar", cont.get_label(), patch.get_x() + patch.get_width() / 2,
                                 patch.get_height(), ""))
        for im in ax.get_images():
            if isinstance(im, AxesImage):
                arr = np.asarray(im.get_array(), dtype=float)
                arr = arr.reshape(arr.shape[0], arr.shape[1], -1).mean(-1) if arr.ndim >= 2 else arr.reshape(1, -1)
                rows += [(panel, "image", im.get_label(), c, r, arr[r, c])
                         for r in range(arr.shape[0]) for c in range(arr.shape[1])]
        if len(rows) > max_rows:
            break
    return rows[:max_rows]


def _write_csv(path, rows) -> None:
    import csv
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["panel", "kind", "label", "x", "y", "value"])
        w.writerows(rows)


def to_jsonable(obj):
    """Tensors, arrays and numpy scalars to plain Python for json."""
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def write_metrics(out_dir, metrics: dict) -> Path:
    """Write out_dir/metrics.json (out_dir: the folder from setup)."""
    text = json.dumps(to_jsonable(metrics), indent=2, sort_keys=True, allow_nan=True)
    return SavedFile(atomic_write(Path(out_dir) / "metrics.json", text))


# --------------------------------------------------------------------------------------------
# The verdict that ends each chapter: the claim, whether this run supports it, and the numbers
# (with their thresholds) that decide it.

_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_STATUS = {"supported": "tip", "partly supported": "warning", "not reproduced": "danger"}


def verdict(claim: str, evidence, *, regime: str = "") -> dict:
    """Decide and show a chapter's verdict. evidence: (label, value, op, threshold) tuples with op
    one of <, <=, >, >=; each holds when `value op threshold`. All hold: "supported"; some:
    "partly supported"; none: "not reproduced". `regime` says where the claim was tested (or where
    it holds when it does not on the default problem). Returns a JSON-ready dict for metrics.json
    and, in a notebook, shows it as a box."""
    if not isinstance(claim, str) or not claim:
        raise ValueError("claim: expected a non-empty sentence")
    rows = []
    for item in evidence:
        if not (isinstance(item, (tuple, list)) and len(item) == 4 and item[2] in _OPS):
            raise ValueError(f"evidence: expected (label, value, op, threshold) with op in {sorted(_OPS)}, got {item!r}")
        label, value, op, threshold = item
        value, threshold = float(value), float(threshold)
        rows.append({"label": str(label), "value": value, "op": op, "threshold": threshold,
                     "holds": bool(math.isfinite(value) and _OPS[op](value, threshold))})
    if not rows:
        raise ValueError("evidence: expected at least one (label, value, op, threshold)")
    n_hold = sum(r["holds"] for r in rows)
    status = "supported" if n_hold == len(rows) else ("not reproduced" if n_hold == 0 else "partly supported")
    table = "\n".join(f"| {r['label']} | {r['value']:.4g} | {r['op']} {r['threshold']:.4g} | "
                       f"{'yes' if r['holds'] else 'no'} |" for r in rows)
    text = (f":::{{admonition}} Verdict: {status}\n:class: {_STATUS[status]}\n**Claim.** {claim}\n\n"
            + (f"{regime}\n\n" if regime else "")
            + "| evidence | this run | threshold | holds |\n|---|---|---|---|\n" + table + "\n:::")
    _display_markdown(text)
    return {"claim": claim, "status": status, "regime": regime, "evidence": rows}


