"""Small helpers shared by the book's notebooks: declarative parameter checks, style, and
outputs that appear all at once.

A chapter's hidden validation cell lists every parameter with its kind::

    nbtools.check_params(globals(), {
        "seed": Seed(), "n_atoms": Int(min=1), "pi_1": Real(gt=0, lt=1), "methods": Methods(),
        "device": Device(), "out_dir": OutDir(), "overwrite": Bool(),
    })

and its visible cells write figures and metrics into a staging folder that the last cell
moves into place::

    out = nbtools.setup(out_dir, "05_mode_reweighting", overwrite=overwrite)
    nbtools.save_figure(fig, out, "mode_masses")
    nbtools.write_metrics(out, metrics)
    out = nbtools.finish(out)
"""
from __future__ import annotations

import ast
import glob
import json
import math
import numbers
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .outputs import MARKER, Target, atomic_write, owner_of

__all__ = ["Bool", "Choice", "Device", "Int", "ListOf", "Methods", "OutDir", "Real", "Seed",
           "check_params", "injected_parameters", "resolve_out_dir", "setup", "finish",
           "save_figure", "write_metrics", "to_jsonable", "figure_data", "figure_caption", "provenance", "verdict",
           "table"]


# --------------------------------------------------------------------------------------------
# Parameter kinds. Each has `check(name, value)`, which raises TypeError (wrong type) or
# ValueError (out of range) with the parameter's name first in the message.

def _fail(exc, name, expected, value):
    raise exc(f"{name}: expected {expected}, got {value!r}"
              + (f" ({type(value).__name__})" if exc is TypeError else ""))


class _Kind:
    def __repr__(self):
        return f"{type(self).__name__}({self.describe()})"


class Int(_Kind):
    """An integer (not a bool) in [min, max]."""

    def __init__(self, min: int | None = None, max: int | None = None):
        self.min, self.max = min, max

    def describe(self):
        if self.min is not None and self.max is not None:
            return f"an integer in [{self.min}, {self.max}]"
        if self.min is not None:
            return f"an integer >= {self.min}"
        if self.max is not None:
            return f"an integer <= {self.max}"
        return "an integer"

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            _fail(TypeError, name, self.describe(), value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            _fail(ValueError, name, self.describe(), value)


class Seed(Int):
    """A random seed: an integer in [0, 2**32 - 1] (what both torch and numpy accept)."""

    def __init__(self):
        super().__init__(min=0, max=2 ** 32 - 1)


class Real(_Kind):
    """A finite real number (an int is fine, a bool is not), optionally bounded:
    gt/ge/lt/le are >, >=, <, <=. `Real(gt=0)` is a positive number, `Real(gt=0, lt=1)` a
    probability strictly inside (0, 1)."""

    def __init__(self, gt=None, ge=None, lt=None, le=None):
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le

    def describe(self):
        lo = f"> {self.gt}" if self.gt is not None else f">= {self.ge}" if self.ge is not None else None
        hi = f"< {self.lt}" if self.lt is not None else f"<= {self.le}" if self.le is not None else None
        if lo and hi:
            left = "(" if self.gt is not None else "["
            right = ")" if self.lt is not None else "]"
            a = self.gt if self.gt is not None else self.ge
            b = self.lt if self.lt is not None else self.le
            return f"a finite number in {left}{a}, {b}{right}"
        if lo == "> 0":
            return "a positive finite number"
        return "a finite number" + (f" {lo or hi}" if lo or hi else "")

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(TypeError, name, self.describe(), value)
        v = float(value)
        if (not math.isfinite(v) or (self.gt is not None and not v > self.gt)
                or (self.ge is not None and not v >= self.ge) or (self.lt is not None and not v < self.lt)
                or (self.le is not None and not v <= self.le)):
            _fail(ValueError, name, self.describe(), value)


class Bool(_Kind):
    """True or False (papermill's `-p flag False` arrives as a bool)."""

    def describe(self):
        return "True or False"

    def check(self, name, value):
        if not isinstance(value, (bool, np.bool_)):
            _fail(TypeError, name, self.describe(), value)


class Choice(_Kind):
    """One of a fixed set of values (compared with ==)."""

    def __init__(self, *options):
        if not options:
            raise ValueError("Choice: expected at least one option")
        self.options = options

    def describe(self):
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, name, value):
        if not any(type(value) is type(o) and value == o for o in self.options):
            _fail(ValueError, name, self.describe(), value)


class ListOf(_Kind):
    """A list (or tuple) of items of one kind, with min_len <= len <= max_len (`length` fixes it);
    `unique` refuses repeated items. Items are reported as name[i]."""

    def __init__(self, item: _Kind, *, min_len: int = 1, max_len: int | None = None,
                 length: int | None = None, unique: bool = False):
        self.item, self.unique = item, unique
        self.min_len, self.max_len = (length, length) if length is not None else (min_len, max_len)

    def describe(self):
        if self.min_len == self.max_len:
            n = f"{self.min_len}"
        elif self.max_len is None:
            n = {0: "any number of", 1: "one or more"}.get(self.min_len, f"at least {self.min_len}")
        else:
            n = f"{self.min_len} to {self.max_len}"
        return f"a list of {n} {'distinct ' if self.unique else ''}items, each {self.item.describe()}"

    def check(self, name, value):
        if not isinstance(value, (list, tuple)):
            _fail(TypeError, name, self.describe(), value)
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            _fail(ValueError, name, self.describe(), value)
        for i, v in enumerate(value):
            self.item.check(f"{name}[{i}]", v)
        if self.unique and len(set(map(repr, value))) < len(value):
            _fail(ValueError, name, self.describe(), value)


class Methods(_Kind):
    """A non-empty list of distinct method names registered in `fsdiag.METHODS` (looked up
    when checked, so methods registered later count)."""

    def _kind(self):
        from . import METHODS
        return ListOf(Choice(*sorted(METHODS)), min_len=1, unique=True)

    def describe(self):
        return self._kind().describe()

    def check(self, name, value):
        self._kind().check(name, value)


class Device(_Kind):
    """'auto' (CUDA when present, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""

    def describe(self):
        return "'auto', 'cpu', 'cuda' or 'cuda:N'"

    def check(self, name, value):
        if not isinstance(value, str):
            _fail(TypeError, name, self.describe(), value)
        from ._checks import resolve_device
        try:
            resolve_device(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {str(err).removeprefix('device: ')}") from None


class OutDir(_Kind):
    """None (the book's own outputs folder for the chapter) or a folder path."""

    def describe(self):
        return "None or a folder path"

    def check(self, name, value):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            _fail(TypeError, name, self.describe(), value)
        if value is not None and not str(os.fspath(value)).strip():
            _fail(ValueError, name, self.describe(), value)


# --------------------------------------------------------------------------------------------
# Validation

_PAPERMILL_PATHS = re.compile(r"PAPERMILL_\w+")   # papermill --inject-paths adds these


def injected_parameters(history) -> list[str]:
    """Names assigned by papermill's injected cell(s) found in an IPython input history
    (`In`): papermill inserts after the parameters cell a cell whose source starts with the
    comment "# Parameters". Without one (jupyter-book, an interactive session) it is []."""
    names = []
    for source in history or ():
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and n.id not in names and not _PAPERMILL_PATHS.fullmatch(n.id):
                        names.append(n.id)
    return names


def check_params(namespace: dict, spec: dict) -> None:
    """Check a notebook's parameters against `spec` ({name: kind}), which must list every
    parameter. `namespace` is the notebook's `globals()`: the values are read from it, and its
    IPython history `In` shows which names papermill injected, so that a mistyped
    `-p n_partcles 10` fails here instead of running on the defaults.

    Raises ValueError (unknown parameter, value out of range) or TypeError (wrong type)
    whose message starts with the parameter's name."""
    unknown = [n for n in injected_parameters(namespace.get("In")) if n not in spec]
    if unknown:
        from ._checks import did_you_mean
        hints = [f"{n!r}{did_you_mean(n, spec)}" for n in unknown]
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                         f"this notebook's parameters are: {', '.join(spec)}")
    for name, kind in spec.items():
        if name not in namespace:
            raise ValueError(f"{name}: listed in the parameter spec but not set by the parameters cell")
        kind.check(name, namespace[name])
    _RUN["params"] = {name: namespace[name] for name in spec}


# --------------------------------------------------------------------------------------------
# Outputs: a run writes into a staging folder next to out_dir; finish() swaps it into place.
# The rule is fsdiag.outputs' (the one every command follows): out_dir may be replaced only when
# it is missing, empty or marked as a notebook's outputs; a user's folder or file is refused.

# What this kernel's run has told nbtools: its parameters (check_params), its chapter, final
# folder and start time (setup). Captions and the provenance line read it.
_RUN: dict = {}

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
    _RUN.update(chapter=chapter, final=final, started=time.perf_counter())
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
    from . import __version__
    wall = time.perf_counter() - _RUN["started"] if "started" in _RUN else float("nan")
    params = ", ".join(f"`{k}={v!r}`" for k, v in _RUN.get("params", {}).items() if k not in ("out_dir", "overwrite"))
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
    chapter = _RUN.get("chapter", "")
    final = _RUN.get("final")
    # Under `fsdiag regenerate` the run's profile and its data's place beside the page of a book
    # built with `fsdiag book --from` (outputs/<chapter>/); the book build itself: the cpu profile.
    profile = os.environ.get("FSDIAG_PROFILE", "cpu")
    given = [n for n in injected_parameters(_history()) if n not in ("out_dir", "overwrite")]
    params = ", ".join(f"{n}={_RUN['params'][n]!r}" for n in given if n in _RUN.get("params", {}))
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


# --------------------------------------------------------------------------------------------
# Tables for the page.

def _table_number(x) -> str:
    """3 significant digits, no exponent below 1000, thousands separated above."""
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    text = f"{x:.3g}"
    if "e" in text and abs(x) >= 1e-4:
        digits = 2 - math.floor(math.log10(abs(x)))
        text = f"{x:.{digits}f}"
    return text


def _table_header(key, names) -> str:
    if isinstance(key, tuple):
        return ", ".join(h for h in (_table_header(k, names) for k in key) if h)
    if names and key in names:
        return str(names[key])
    text = str(key)
    return text.replace("_", " ") if re.fullmatch(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)+", text) else text


def table(data, *, names: dict | None = None):
    """A pandas Styler for display() of a table on the page: `data` is a DataFrame, a list of
    row dicts or a dict of column dicts. Integer-valued columns print as integers, booleans as
    yes/no, other floats with 3 significant digits, missing values as n/a (numbers do not wrap,
    right-aligned); snake_case headers become words and `names` (e.g. method key -> display name) renames headers and string cells.
    A meaningful index (a pivot table's, say) becomes ordinary columns; no index column shows."""
    import pandas as pd

    df = data.copy() if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if not isinstance(df.index, pd.RangeIndex) or any(n is not None for n in df.index.names):
        df.index = df.index.set_names([n if n is not None else "" for n in df.index.names])
        df = df.reset_index()
    df.columns = [_table_header(c, names) for c in df.columns]
    formats, numeric = {}, []
    for col in df.columns:
        values = df[col]
        present = values.dropna()
        if len(present) and all(isinstance(v, (bool, np.bool_)) for v in present):
            formats[col] = lambda v: "n/a" if v is None or v != v else ("yes" if v else "no")
        elif len(present) and all(isinstance(v, numbers.Real) for v in present):
            integral = all(float(v).is_integer() for v in present)
            numeric.append(col)
            formats[col] = (lambda v, integral=integral: "n/a" if v is None or v != v
                            else (f"{int(v):d}" if integral else _table_number(float(v))))
        elif names:
            formats[col] = lambda v: str(names.get(v, v)) if isinstance(v, str) else (
                "n/a" if v is None or v != v else str(v))
        else:
            formats[col] = lambda v: "n/a" if v is None or (isinstance(v, float) and v != v) else str(v)
    styler = df.style.format(formats).hide(axis="index")
    styler = styler.set_table_styles([{"selector": "th", "props": [("white-space", "nowrap")]}])
    if numeric:                                 # numbers never wrap; long text may
        styler = styler.set_properties(subset=numeric, **{"white-space": "nowrap", "text-align": "right"})
    return styler
