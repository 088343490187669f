"""`fsdiag regenerate` and `fsdiag book --from`: batches of notebook runs, skipped when unchanged,
resumed after a kill, isolated failures, a Dask LocalCluster, and a website from a batch; every
path resolved against the caller's folder, and nothing written or replaced that is not theirs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fsdiag.book import regenerate as R
from fsdiag.book import site

ROOT = Path(__file__).resolve().parents[1]
TINY = {"04_early_stopping": {"n_atoms": 32, "n_particles": 128, "n_steps": 40, "n_record": 3},
        "01_finite_sample_lens": {"n_atoms_max": 400, "n_sizes": 3, "n_seeds": 2, "n_grid": 40, "n_bins": 8}}
pytestmark = pytest.mark.notebooks


def write_profiles(path, *, bad=False, seeds=None):
    nbs = {k: dict(v) for k, v in TINY.items()}
    if bad:
        nbs["01_finite_sample_lens"]["n_sizes"] = -1      # fails in the chapter's parameter check
    prof = {"description": "test", "notebooks": nbs}
    if seeds:
        prof["grid"] = {"seed": seeds}
    path.write_text(yaml.safe_dump({"t": prof}))
    return path


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fsdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def one_line_error(res, *needles):
    """A usage error: exit code 2, one line on stderr naming what is wrong, no traceback."""
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch of two notebooks with two local jobs, given a RELATIVE --out: the runs land under
    the caller's folder, not under the notebooks' own folder (papermill's working directory)."""
    tmp = tmp_path_factory.mktemp("regen")
    profiles = write_profiles(tmp / "profiles.yml")
    before = sorted(p.name for p in (ROOT / "notebooks").iterdir())
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--jobs", "2", "--out", "runs", cwd=tmp)
    stray = sorted(set(p.name for p in (ROOT / "notebooks").iterdir()) - set(before) - {"outputs"})
    return tmp, profiles, res, stray


def test_a_batch_runs_every_notebook_into_its_own_keyed_folder(batch):
    tmp, _, res, stray = batch
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp / "runs" / "t" / "summary.json").read_text())
    assert summary["out"] == str(tmp / "runs" / "t")
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    for r in summary["runs"]:
        run_dir = Path(r["out"])
        assert run_dir == tmp / "runs" / "t" / r["notebook"] / r["key"]          # under the caller's folder
        assert (run_dir / f"{r['notebook']}.ipynb").is_file() and (run_dir / "run.json").is_file()
        outputs = run_dir / "outputs"
        figures = sorted(outputs.glob("*.png"))
        assert figures, f"no figures in {outputs}"
        for png in figures:                                   # each figure with the data it plots
            assert png.stat().st_size > 0
            assert png.with_suffix(".csv").read_text().startswith("panel,kind,label,x,y,value")
        assert json.loads((outputs / "metrics.json").read_text())
        assert r["headline"] and all(isinstance(v, (int, float)) for v in r["headline"].values())
    assert (tmp / "runs" / "t" / "summary.csv").read_text().startswith("notebook,key,status")
    assert "2 runs: 2 done" in res.stdout
    assert not list((tmp / "runs").rglob(".*staging*"))
    assert sorted(p.name for p in tmp.iterdir()) == ["profiles.yml", "runs"]
    assert stray == [], f"the batch wrote into {ROOT / 'notebooks'}: {stray}"


def test_a_rerun_skips_unchanged_runs(batch):
    # The same folder, now given as an absolute path: the runs made with the relative one are found.
    tmp, profiles, _, _ = batch
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--out", str(tmp / "runs"), cwd=tmp)
    assert res.returncode == 0 and "2 skipped" in res.stdout


def test_a_bad_parameter_fails_alone_and_the_batch_exits_nonzero(batch):
    tmp, _, _, _ = batch
    bad = write_profiles(tmp / "bad.yml", bad=True)
    res = cli("regenerate", "--profile", "t", "--profiles", str(bad), "--out", str(tmp / "runs"), cwd=tmp)
    assert res.returncode == 1
    rows = {r["notebook"]: r for r in json.loads((tmp / "runs" / "t" / "summary.json").read_text())["runs"]}
    assert rows["04_early_stopping"]["status"] == "skipped"
    assert rows["01_finite_sample_lens"]["status"] == "failed"
    assert "n_sizes" in rows["01_finite_sample_lens"]["error"]
    assert "n_sizes" in res.stdout and "failed" in res.stdout
    assert (Path(rows["01_finite_sample_lens"]["out"]).with_name(rows["01_finite_sample_lens"]["key"] + ".failed")
            / "run.json").is_file()


def test_a_killed_batch_resumes_where_it_stopped(tmp_path):
    profiles = write_profiles(tmp_path / "profiles.yml")
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "fsdiag", "regenerate", "--profile", "t", "--profiles",
                             str(profiles), "--out", str(out)], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not list(out.glob("t/*/*/run.json")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)                  # the batch and its kernel, mid-way
    proc.wait()
    finished = list(out.glob("t/*/*/run.json"))
    assert len(finished) == 1
    assert list(out.rglob(".*staging*"))                 # the killed run's staging folder, left behind
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 done, 1 skipped" in res.stdout
    assert not list(out.rglob(".*staging*"))


def test_the_same_batch_runs_on_a_dask_local_cluster(batch):
    pytest.importorskip("dask.distributed")
    tmp, profiles, _, _ = batch
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--dask", "local", "--jobs", "2",
              "--out", str(tmp / "dask_runs"), cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    ours = json.loads((tmp / "dask_runs" / "t" / "summary.json").read_text())["runs"]
    assert [r["status"] for r in ours] == ["done", "done"]
    for r in ours:
        # The same runs as the local batch (same keys), and the same numbers: same parameters, same seeds.
        local = json.loads((tmp / "runs" / "t" / r["notebook"] / r["key"] / "run.json").read_text())
        assert r["headline"] == local["headline"]


def test_the_book_builds_from_a_batch_without_executing(batch):
    tmp, _, _, _ = batch
    runs = tmp / "runs" / "t"
    before = {p: sorted(q.name for q in p.iterdir()) for p in (tmp, runs)}
    res = cli("book", "--from", "runs/t", "--site", "site", cwd=tmp)       # relative to the caller's folder
    assert res.returncode == 0, res.stdout + res.stderr
    page = (tmp / "site" / "notebooks" / "04_early_stopping.html").read_text()
    assert "<img" in page                                 # the batch's figures, not re-executed ones
    # Every "data:" link of every page resolves to a file of the site, and the captions name the
    # profile that produced the run and its parameters; no local or staging path is shown.
    import html as html_lib
    import re
    for chapter in ("01_finite_sample_lens", "04_early_stopping"):
        text = (tmp / "site" / "notebooks" / f"{chapter}.html").read_text()
        links = re.findall(r'href="(\.\./_downloads/[^"]+)"', text)
        assert len(links) >= 2, chapter
        for link in links:
            assert (tmp / "site" / "notebooks" / html_lib.unescape(link)).resolve().is_file(), link
        words = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", text)).split())
        assert f"fsdiag regenerate --profile t --only {chapter}" in words
        assert "this run’s parameters" in words or "this run's parameters" in words
        assert "staging" not in text and "PosixPath(" not in text and str(tmp) not in text
    assert (tmp / "site" / "index.html").is_file()
    assert not (tmp / "site" / "notebooks" / "02_headline_heatmaps.html").exists()   # not in the batch
    # The book's source was built inside the site's staging folder, which is gone: nothing new in
    # DIR or the caller's folder but the site.
    assert sorted(q.name for q in runs.iterdir()) == before[runs]
    assert sorted(q.name for q in tmp.iterdir()) == sorted(before[tmp] + ["site"])
    assert not [p for p in (tmp / "site").iterdir() if p.name.startswith(".") and p.name != ".buildinfo"
                and p.name != ".fsdiag-owner"]
    # A second build replaces the site it wrote; a user's folder is refused, whole and untouched.
    again = cli("book", "--from", "runs/t", "--site", "site", cwd=tmp)
    assert again.returncode == 0, again.stdout + again.stderr
    mine = tmp / "my_site"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    one_line_error(cli("book", "--from", "runs/t", "--site", "my_site", cwd=tmp), "--site", "notes.txt")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp.iterdir() if p.name.startswith(".my_site")]
    one_line_error(cli("book", "--from", "runs/nope", cwd=tmp), "--from", "nope")


def test_a_users_folder_under_out_is_refused_and_kept(tmp_path):
    profiles = write_profiles(tmp_path / "profiles.yml")
    mine = tmp_path / "runs" / "t"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    line = one_line_error(cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--out", "runs",
                              cwd=tmp_path), "--out", str(mine), "notes.txt", "--overwrite")
    assert "--force" not in line                          # --force means "rerun", not "write here"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["t"]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_overwrite_writes_beside_a_users_files_and_does_not_claim_the_folder(tmp_path, monkeypatch):
    mine = tmp_path / "runs" / "t"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    target = R._open_out(tmp_path / "runs", "t", overwrite=True)
    assert target.path == mine and not target.owned()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "runs" / "f").write_text("a file")
    with pytest.raises(ValueError, match="^--out: .*is a file.*--overwrite"):
        R._open_out(tmp_path / "runs", "f", overwrite=False)
    assert R._open_out(tmp_path / "runs", "f", overwrite=True).owned()     # --overwrite replaces a file
    monkeypatch.chdir(tmp_path)
    new = R._open_out("runs_new", "t", overwrite=False)   # relative: the working directory's
    assert new.path == tmp_path / "runs_new" / "t" and new.owned()
    assert sorted(p.name for p in new.path.iterdir()) == [".fsdiag-owner"]


def test_only_the_leftovers_of_dead_processes_are_cleaned(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    nb = tmp_path / "t" / "04_early_stopping"
    for name in (f".0123456789abcdef.staging-{dead}-x1", f".0123456789abcdef.staging-{os.getpid()}-x2",
                 ".0123456789abcdef.staging-ab12cd34", "notes.txt.staging-1-x"):
        (nb / name).mkdir(parents=True)
    (tmp_path / "t" / "mine" / f".a.staging-{dead}-x").mkdir(parents=True)       # not a notebook of the batch
    R._clean_leftovers(tmp_path / "t", ["04_early_stopping"])
    assert sorted(p.name for p in nb.iterdir()) == sorted([f".0123456789abcdef.staging-{os.getpid()}-x2",
                                                           "notes.txt.staging-1-x"])
    assert (tmp_path / "t" / "mine" / f".a.staging-{dead}-x").is_dir()


@pytest.mark.parametrize("out, needle", [
    ("afile", "is a file"), ("afile/sub", "is a file"), ("/proc/x", "cannot be created"), ("", "expected a folder"),
])
def test_an_out_that_cannot_be_a_folder_is_one_line_and_exit_2(tmp_path, out, needle):
    (tmp_path / "afile").write_text("mine")
    res = cli("regenerate", "--profile", "ci", "--only", "01", "--out", out, cwd=tmp_path)
    one_line_error(res, "--out", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine"


def test_without_the_book_dependencies_regenerate_and_book_say_what_to_install(tmp_path):
    # A base install (no fsdiag[book]): papermill and jupyter-book hidden from the import system.
    for command in (["regenerate", "--profile", "ci"], ["book", "--from", str(tmp_path)]):
        res = subprocess.run([sys.executable, "-c", "import sys; sys.modules['papermill'] = sys.modules['jupyter_book'] "
                              "= None; from fsdiag.__main__ import main; sys.exit(main(sys.argv[1:]))", *command],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        one_line_error(res, "install fsdiag[book]", 'pip install "fsdiag[book]"')
    assert list(tmp_path.iterdir()) == []                  # checked before any work


def test_a_run_that_writes_no_metrics_failed(tmp_path):
    # A notebook that runs without error but writes nothing into out_dir: a failed run, not "done".
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"},
                                            "language_info": {"name": "python"}})
    cell = nbformat.v4.new_code_cell("out_dir = None")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print('nothing written')")]
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "99_silent.ipynb")
    profiles = tmp_path / "profiles.yml"
    profiles.write_text(yaml.safe_dump({"t": {"notebooks": {"99_silent": {}}}}))
    code, summary = R.regenerate("t", out=tmp_path / "runs", profiles_file=profiles, notebooks_dir=tmp_path / "nbs",
                                 progress=False, stream=open(os.devnull, "w"))
    (row,) = summary["runs"]
    assert code == 1 and row["status"] == "failed" and "metrics.json" in row["error"]
    run_dirs = sorted(p.name for p in (tmp_path / "runs" / "t" / "99_silent").iterdir())
    assert run_dirs == [f"{row['key']}.failed"]           # kept for a look, never taken for a finished run


def test_the_book_takes_each_chapters_finished_run(tmp_path):
    nb = "04_early_stopping"
    for name, status, seed in (("b.failed", "failed", 0), (".b.staging-1-x", "done", 0), ("c", "done", 2),
                               ("d", "done", 1), ("e", "failed", 0)):
        (tmp_path / nb / name).mkdir(parents=True)
        (tmp_path / nb / name / f"{nb}.ipynb").write_text("{}")
        (tmp_path / nb / name / "run.json").write_text(json.dumps({"status": status, "params": {"seed": seed}}))
    assert site._pick(tmp_path, nb) == tmp_path / nb / "d" / f"{nb}.ipynb"     # the lowest seed of the finished runs
    assert site._pick(tmp_path, "01_finite_sample_lens") is None


def test_profiles_expand_grids_and_name_only_declared_parameters(tmp_path):
    profiles = R.load_profiles()
    assert {"ci", "cpu", "gpu", "paper"} <= set(profiles)
    for name in profiles:
        for spec in R.expand(name, profiles=profiles, out=tmp_path):
            declared = R.notebook_parameters(spec.path)
            assert set(spec.params) <= set(declared), (name, spec.notebook, set(spec.params) - set(declared))
    paper = R.expand("paper", profiles=profiles, only=["07"], out=tmp_path)
    assert sorted(s.params["seed"] for s in paper) == [0, 1, 2, 3, 4] and len({s.key for s in paper}) == 5
    with pytest.raises(ValueError, match="profile"):
        R.expand("nope", profiles=profiles)
    with pytest.raises(ValueError, match="only"):
        R.expand("ci", profiles=profiles, only=["99"])


def test_across_seeds_gives_a_t_interval():
    rows = [{"notebook": "n", "status": "done", "params": {"seed": s, "a": 1}, "headline": {"x": v}}
            for s, v in enumerate([1.0, 2.0, 3.0])]
    (agg,) = R._across_seeds(rows)
    # mean 2, sd 1, n 3: half-width t_{0.975, 2} / sqrt(3) = 4.3027 / 1.7321
    assert agg["mean"] == pytest.approx(2.0) and agg["ci95"] == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)
