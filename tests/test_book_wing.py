"""The book wing (fsdiag.book): the declarative parameter specs, papermill's unknown parameters, and outputs that
appear all at once (staging folder, commit, cleanup of killed runs)."""
import csv
import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsdiag.book import chapters, pages, params, tables
from fsdiag.book.params import Bool, Choice, Device, Int, ListOf, Methods, OutDir, Real, Seed

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def rejects(kind, value, error=ValueError, name="knob"):
    with pytest.raises(error, match=rf"^{name}"):
        kind.check(name, value)


# ---------------------------------------------------------------------------------- kinds

def test_int():
    Int(min=1).check("n", 1)
    Int(min=1, max=7).check("n", 7)
    rejects(Int(min=1), 0)
    rejects(Int(min=1, max=7), 8)
    rejects(Int(), 2.5, TypeError)
    rejects(Int(), True, TypeError)
    rejects(Int(), "3", TypeError)
    rejects(Seed(), -1)
    rejects(Seed(), 2 ** 32)
    Seed().check("seed", 2 ** 32 - 1)


def test_real():
    Real().check("x", -3)                          # an int is a number
    Real(gt=0).check("x", 1e-300)
    Real(gt=0, lt=1).check("p", 0.5)
    for v in (0.0, 1.0, -0.1):
        rejects(Real(gt=0, lt=1), v)
    Real(ge=0, le=1).check("p", 0.0)
    rejects(Real(ge=0, le=1), 1.5)
    for v in (math.nan, math.inf, -math.inf):
        rejects(Real(), v)
    rejects(Real(), "0.3", TypeError)
    rejects(Real(), False, TypeError)
    rejects(Real(), None, TypeError)


def test_bool_choice_device_outdir():
    Bool().check("flag", False)
    rejects(Bool(), 0, TypeError)
    rejects(Bool(), "False", TypeError)
    Choice("radial", "polar_angle").check("op", "radial")
    rejects(Choice("radial", "polar_angle"), "polar")
    rejects(Choice(1, 2), True)                       # True == 1, but it is not the option 1
    Device().check("device", "auto")
    Device().check("device", "cpu")
    rejects(Device(), "tpu")
    rejects(Device(), 0, TypeError)
    OutDir().check("out_dir", None)
    OutDir().check("out_dir", "runs/05")
    rejects(OutDir(), "  ")
    rejects(OutDir(), 5, TypeError)


def test_lists_report_the_item():
    ListOf(Real(gt=0)).check("noise", [0.5, 1])
    ListOf(Real(), length=2).check("means", (-2.0, 2.0))
    rejects(ListOf(Real()), [])                       # non-empty by default
    rejects(ListOf(Real(), length=2), [1.0])
    rejects(ListOf(Real(), max_len=2), [1, 2, 3])
    rejects(ListOf(Real()), 1.0, TypeError)
    rejects(ListOf(Real()), "1, 2", TypeError)
    with pytest.raises(ValueError, match=r"^noise\[1\]: expected a positive"):
        ListOf(Real(gt=0)).check("noise", [0.5, -1])
    with pytest.raises(ValueError, match=r"^methods\[1\]: expected one of .*'pigdm'"):
        Methods().check("methods", ["fsr", "bogus"])
    rejects(Methods(), ["fsr", "fsr"], name="methods")
    rejects(Methods(), "fsr", TypeError, name="methods")
    Methods().check("methods", ["fsr", "pigdm"])


@given(v=st.integers(-50, 50), lo=st.integers(-20, 20), span=st.integers(0, 20))
def test_int_accepts_exactly_its_range(v, lo, span):
    kind = Int(min=lo, max=lo + span)
    if lo <= v <= lo + span:
        kind.check("n", v)
    else:
        rejects(kind, v, name="n")


@given(v=st.floats(allow_nan=True, allow_infinity=True), lo=st.floats(-10, 10), hi=st.floats(-10, 10))
def test_real_accepts_exactly_its_open_interval(v, lo, hi):
    kind = Real(gt=lo, lt=hi)
    if math.isfinite(v) and lo < v < hi:
        kind.check("x", v)
    else:
        rejects(kind, v, name="x")


@given(values=st.lists(st.one_of(st.floats(-5, 5), st.text(max_size=3), st.booleans(), st.none()), max_size=5),
       lo=st.integers(0, 3), extra=st.integers(0, 3))
def test_list_errors_always_name_the_parameter(values, lo, extra):
    kind = ListOf(Real(gt=0), min_len=lo, max_len=lo + extra)
    ok = lo <= len(values) <= lo + extra and all(
        isinstance(v, float) and v > 0 for v in values)
    if ok:
        kind.check("levels", values)
    else:
        with pytest.raises((TypeError, ValueError), match=r"^levels"):
            kind.check("levels", values)


# ------------------------------------------------------------------- check_params and history

SPEC = {"seed": Seed(), "n_particles": Int(min=1), "noise_std": Real(gt=0), "methods": Methods(),
        "device": Device(), "out_dir": OutDir(), "overwrite": Bool()}
DEFAULTS = dict(seed=0, n_particles=64, noise_std=0.3, methods=["fsr"], device="cpu", out_dir=None, overwrite=False)
PARAMS_CELL = "seed = 0\nn_particles = 64\nnoise_std = 0.3\n"


def test_check_params_reads_the_namespace():
    params.check_params(dict(DEFAULTS), SPEC)
    with pytest.raises(ValueError, match="^n_particles: expected an integer >= 1, got 0"):
        params.check_params({**DEFAULTS, "n_particles": 0}, SPEC)
    with pytest.raises(TypeError, match="^noise_std"):
        params.check_params({**DEFAULTS, "noise_std": "x"}, SPEC)
    with pytest.raises(ValueError, match="^overwrite: listed in the parameter spec but not set"):
        params.check_params({k: v for k, v in DEFAULTS.items() if k != "overwrite"}, SPEC)


def test_injected_parameters_from_a_fake_history():
    history = ["", PARAMS_CELL, "# Parameters\nn_partcles = 10\nseed = 3\nPAPERMILL_INPUT_PATH = 'a.ipynb'\n",
               "params.check_params(globals(), SPEC)"]
    assert params.injected_parameters(history) == ["n_partcles", "seed"]
    assert params.injected_parameters(["", PARAMS_CELL]) == []          # the book build: nothing injected
    assert params.injected_parameters(None) == []
    assert params.injected_parameters(["# Parameters\nthis is not python("]) == []


def test_an_unknown_injected_parameter_fails_with_the_known_ones():
    ns = {**DEFAULTS, "In": ["", PARAMS_CELL, "# Parameters\nn_partcles = 10\n", "..."]}
    with pytest.raises(ValueError, match=r"unknown parameter 'n_partcles' \(did you mean 'n_particles'\?\); "
                                         r"this notebook's parameters are: seed, n_particles, noise_std"):
        params.check_params(ns, SPEC)
    ns["In"][2] = "# Parameters\nseed = 3\nn_particles = 10\n"                     # known names are fine
    params.check_params(ns, SPEC)


def test_the_real_papermill_injection_is_recognised():
    from papermill.translators import PythonTranslator
    cell = PythonTranslator.codify({"n_partcles": 10, "methods": ["fsr"], "out_dir": None}, "Parameters")
    assert params.injected_parameters([cell]) == ["n_partcles", "methods", "out_dir"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_of_every_notebook_has_a_spec(path, monkeypatch):
    # Run the parameters cell and the validation cell in-process: the spec names exactly the
    # parameters, the defaults pass, and the validation cell is the one collapsed in the book.
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    source, check = ("".join(c["source"]) for c in cells[:2])
    assert cells[0]["metadata"]["tags"] == ["parameters"]
    assert cells[1]["metadata"]["tags"] == ["hide-input"]
    assert "".join(cells[-1]["source"]).strip().endswith("out = book.finish(out)")
    ns = {}
    exec(source, ns)
    names = set(ns) - {"__builtins__"}
    seen = {}
    real = params.check_params
    monkeypatch.setattr(chapters, "check_params", lambda namespace, spec: (seen.update(spec), real(namespace, spec)))
    exec(check, ns)
    assert set(seen) == names
    assert ns["out_dir"] is None and ns["overwrite"] is False
    assert len(check.splitlines()) <= 20


# ---------------------------------------------------------------------------- staging and commit

@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def fig():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    f, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    return f


def mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_outputs_appear_at_the_end_with_the_usual_modes(tmp_path, umask):
    final = tmp_path / "out"
    out = pages.setup(final, "x")
    assert out.parent == tmp_path and out.name.startswith(f".out.staging-{os.getpid()}-") and not final.exists()
    pages.save_figure(fig(), out, "a")
    pages.write_metrics(out, {"x": 1.5})
    assert not final.exists()                                   # nothing visible before the commit
    assert pages.finish(out) == final
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]              # no staging, no temp litter
    # The figure, its data, the metrics, and the mark that a notebook's run wrote this folder.
    assert sorted(p.name for p in final.iterdir()) == [".fsdiag-owner", "a.csv", "a.png", "metrics.json"]
    assert mode(final) == 0o755 and mode(final / "a.png") == mode(final / "metrics.json") == 0o644
    assert json.loads((final / "metrics.json").read_text()) == {"x": 1.5}
    # The figure's plotted data: the line (0, 0), (1, 1).
    rows = list(csv.reader((final / "a.csv").open()))
    assert rows[0] == ["panel", "kind", "label", "x", "y", "value"]
    assert [(float(r[3]), float(r[4])) for r in rows[1:]] == [(0.0, 0.0), (1.0, 1.0)]


def test_figure_data_reads_every_kind_of_artist():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    f, axes = plt.subplots(1, 3)
    axes[0].set_title("left")
    axes[0].bar([0, 1], [0.25, 0.75], label="mass")
    axes[1].scatter([1.0, 2.0], [3.0, 4.0], label="pts")
    axes[2].imshow(np.arange(6.0).reshape(2, 3))
    rows = pages.figure_data(f)
    plt.close(f)
    assert [(r[0], r[1], r[3], r[4]) for r in rows if r[1] == "bar"] == [("left", "bar", 0.0, 0.25), ("left", "bar", 1.0, 0.75)]
    assert [(r[3], r[4]) for r in rows if r[1] == "points"] == [(1.0, 3.0), (2.0, 4.0)]
    img = [(r[3], r[4], r[5]) for r in rows if r[1] == "image"]
    assert img[:3] == [(0, 0, 0.0), (1, 0, 1.0), (2, 0, 2.0)] and len(img) == 6


def test_caption_and_provenance_name_the_command_the_data_and_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"seed": 3, "out_dir": None}
    params.check_params(ns, {"seed": params.Seed(), "out_dir": params.OutDir()})
    out = pages.setup(tmp_path / "outputs" / "ch", "ch")
    cap = pages.figure_caption("fig")
    assert "fsdiag regenerate --profile cpu --only ch" in cap
    assert "{download}`fig.csv <outputs/ch/fig.csv>`" in cap and "metrics.json <outputs/ch/metrics.json>" in cap
    line = pages.provenance()
    assert "`seed=3`" in line and "wall time" in line and "out_dir" not in line
    pages.finish(out)


def test_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        out = pages.setup(tmp_path / "out", "x")
        pages.write_metrics(out, {})
        final = pages.finish(out)
    finally:
        os.umask(old)
    assert mode(final / "metrics.json") == 0o600 and mode(final) == 0o700


def test_a_rerun_replaces_out_dir_whole(tmp_path):
    out = pages.setup(tmp_path / "out", "x")
    pages.save_figure(fig(), out, "old_only")
    pages.write_metrics(out, {"run": 1})
    pages.finish(out)
    out = pages.setup(tmp_path / "out", "x")
    pages.write_metrics(out, {"run": 2})
    assert (tmp_path / "out" / "old_only.png").exists()           # the old run stays until the commit
    final = pages.finish(out)
    assert sorted(p.name for p in final.iterdir()) == [".fsdiag-owner", "metrics.json"]
    assert json.loads((final / "metrics.json").read_text()) == {"run": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_run_leaves_the_old_outputs_and_the_next_setup_cleans_up(tmp_path):
    out = pages.setup(tmp_path / "out", "x")
    pages.write_metrics(out, {"run": 1})
    pages.finish(out)
    pid = os.fork()                      # a run killed while writing: SIGKILL, so no cleanup code runs
    if pid == 0:
        try:
            out = pages.setup(tmp_path / "out", "x")
            pages.write_metrics(out, {"run": 2})
            (out / ".half.png.tmp-1").write_text("half")
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert "out" in left and any(n.startswith(".out.staging-") for n in left)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"run": 1}   # old outputs, untouched
    out = pages.setup(tmp_path / "out", "x")                  # the next run's setup removes the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", out.name])
    pages.finish(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_commit_killed_halfway_is_undone_by_the_next_setup(tmp_path):
    # Killed between "move the old out_dir aside" and "rename the new one in" (fsdiag.outputs'
    # layout: .out.old-PID-*/previous): out is missing, and the next setup puts the old copy back.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".out.old-{pid}-x1" / "previous").mkdir(parents=True)
    (tmp_path / f".out.old-{pid}-x1" / "previous" / "metrics.json").write_text("{}")
    (tmp_path / f".out.old-{pid}-x1" / "previous" / ".fsdiag-owner").write_text("fsdiag notebook\n")
    (tmp_path / f".out.staging-{pid}-x2").mkdir()
    out = pages.setup(tmp_path / "out", "x")
    assert (tmp_path / "out" / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", out.name])


def test_a_folder_that_is_not_a_notebooks_outputs_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="^out_dir: .*notes.txt"):
        pages.setup(tmp_path / "mine", "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="^out_dir: .*is a file"):
        pages.setup(tmp_path / "file", "x")
    (tmp_path / "report").mkdir()                               # another command's outputs
    (tmp_path / "report" / ".fsdiag-owner").write_text("fsdiag diagnose\n")
    (tmp_path / "report" / "report.json").write_text("{}")
    with pytest.raises(ValueError, match="^out_dir: .*report.json") as err:
        pages.setup(tmp_path / "report", "x")
    assert "--force" not in str(err.value)                      # a notebook has no such option
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine", "report"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (tmp_path / "file").read_text() == ""


def test_an_unmarked_folder_of_figures_is_replaced_only_as_the_books_chapter_folder(tmp_path, monkeypatch):
    # notebooks/outputs/<chapter> written before folders were marked: the book build replaces it;
    # the same files anywhere else are a user's folder.
    book = tmp_path / "notebooks"
    book.mkdir()
    (book / "05_x.ipynb").write_text("{}")
    monkeypatch.setattr(pages, "BOOK_NOTEBOOKS", book)
    monkeypatch.setattr(pages, "_history", lambda: ["", "seed = 0"])      # the book build injects nothing
    for folder in (book / "outputs" / "05_x", tmp_path / "elsewhere"):
        folder.mkdir(parents=True)
        (folder / "old.png").write_bytes(b"png")
        (folder / "metrics.json").write_text('{"run": 0}')
    with pytest.raises(ValueError, match="^out_dir: .*elsewhere"):
        pages.setup(tmp_path / "elsewhere", "05_x")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["metrics.json", "old.png"]
    out = pages.setup(None, "05_x")
    pages.write_metrics(out, {"run": 1})
    final = pages.finish(out)
    assert final == book / "outputs" / "05_x"
    assert sorted(p.name for p in final.iterdir()) == [".fsdiag-owner", "metrics.json"]
    # ... but not when it holds something a chapter does not write.
    (final / "notes.txt").write_text("mine")
    (final / ".fsdiag-owner").unlink()
    with pytest.raises(ValueError, match="^out_dir: .*notes.txt"):
        pages.setup(None, "05_x")


def test_finish_needs_the_staging_folder(tmp_path):
    with pytest.raises(ValueError, match="^out: expected the staging folder"):
        pages.finish(tmp_path)


# -------------------------------------------------------------------------------- out_dir rule

def test_out_dir_none_is_the_book_folder_wherever_the_kernel_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pages.resolve_out_dir(None, "05_x") == ROOT / "notebooks" / "outputs" / "05_x"
    assert pages.resolve_out_dir("runs/05", "05_x") == tmp_path / "runs" / "05"
    assert pages.resolve_out_dir(tmp_path / "a", "05_x") == tmp_path / "a"


def test_a_run_given_parameters_needs_overwrite_for_the_book_outputs(tmp_path, monkeypatch):
    book = tmp_path / "notebooks"
    book.mkdir()
    (book / "05_x.ipynb").write_text("{}")
    (book / "06_y.ipynb").write_text("{}")
    monkeypatch.setattr(pages, "BOOK_NOTEBOOKS", book)
    monkeypatch.setattr(pages, "_history", lambda: ["", "seed = 0", "# Parameters\nseed = 3\n"])
    for out_dir in (None, book / "outputs" / "06_y", book / "outputs" / "." / "05_x"):     # any chapter's own folder
        with pytest.raises(ValueError, match=r"^out_dir: this run was given parameters \(seed\).*overwrite True"):
            pages.setup(out_dir, "05_x")
    assert sorted(p.name for p in book.iterdir()) == ["05_x.ipynb", "06_y.ipynb"]
    pages.finish(pages.setup(tmp_path / "elsewhere", "05_x"))           # any other folder is fine,
    pages.finish(pages.setup(book / "outputs" / "05_x_seed3", "05_x"))  # even next to the book's
    out = pages.setup(None, "05_x", overwrite=True)
    assert pages.finish(out) == tmp_path / "notebooks" / "outputs" / "05_x"
    monkeypatch.setattr(pages, "_history", lambda: ["", "seed = 0"])      # the book build injects nothing
    pages.finish(pages.setup(None, "05_x"))


def test_verdict_counts_the_evidence_that_holds():
    ok = pages.verdict("c", [("a", 0.1, "<", 0.2), ("b", 3.0, ">=", 3.0)])
    assert ok["status"] == "supported" and all(r["holds"] for r in ok["evidence"])
    part = pages.verdict("c", [("a", 0.1, "<", 0.2), ("b", 2.0, ">", 3.0)])
    assert part["status"] == "partly supported"
    none = pages.verdict("c", [("a", float("nan"), "<", 0.2)], regime="r")
    assert none["status"] == "not reproduced" and none["regime"] == "r"
    json.dumps(ok)
    with pytest.raises(ValueError, match="evidence"):
        pages.verdict("c", [("a", 0.1, "~", 0.2)])
    with pytest.raises(ValueError, match="evidence"):
        pages.verdict("c", [])


# ---------------------------------------------------------------------------------- tables

def _cells(styler):
    import re
    html = styler.to_html()
    return re.findall(r"<td[^>]*>([^<]*)</td>", html), re.findall(r"<th[^>]*>([^<]*)</th>", html)


def test_table_formats_counts_booleans_floats_and_headers():
    import pandas as pd
    rows = [{"noise_std": 0.03, "n_atoms": 1.0, "supported": True, "mean_abs_error": 0.123456, "method": "sigma_dps"},
            {"noise_std": 0.1, "n_atoms": 9.0, "supported": False, "mean_abs_error": 12345.6, "method": "fsr"}]
    cells, heads = _cells(tables.table(rows, names={"sigma_dps": "σ-DPS", "fsr": "FSR"}))
    assert cells == ["0.03", "1", "yes", "0.123", "σ-DPS", "0.1", "9", "no", "12,346", "FSR"]
    assert [h for h in heads if h.strip()] == ["noise std", "n atoms", "supported", "mean abs error", "method"]
    # same from a DataFrame, with NaN as n/a and no index column
    df = pd.DataFrame({"x": [np.nan, 2.5e-3], "k": [3, 4]}, index=[7, 8])
    cells, _ = _cells(tables.table(df.reset_index(drop=True)))
    assert cells == ["n/a", "3", "0.0025", "4"]


def test_table_turns_a_pivot_index_into_columns_and_maps_method_headers():
    import pandas as pd
    long = pd.DataFrame({"noise_std": [0.03, 0.03, 0.1, 0.1], "method": ["fsr", "sigma_dps"] * 2,
                         "off_support": [0.5, 0.25, 0.0, 1.0]})
    wide = long.pivot_table(index="noise_std", columns="method", values="off_support")
    styler = tables.table(wide, names={"sigma_dps": "σ-DPS", "fsr": "FSR"})
    assert list(styler.data.columns) == ["noise std", "FSR", "σ-DPS"]
    cells, _ = _cells(styler)
    assert cells == ["0.03", "0.5", "0.25", "0.1", "0", "1"]


def test_table_numbers_do_not_wrap_but_text_may():
    html = tables.table([{"sampler": "DPS", "note": "a long sentence " * 5, "TV": 0.5}]).to_html()
    import re
    nowrap = re.findall(r"#(T_\w+_row0_col\d+)[^{]*\{[^}]*white-space: nowrap", html)
    assert [n.rsplit("_", 1)[1] for n in nowrap] == ["col2"]
