"""`fsdiag regenerate` and `fsdiag book --from`: batches of notebook runs, skipped when unchanged,
resumed after a kill, isolated failures, a Dask LocalCluster, and a website from a batch."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fsdiag import regenerate as R

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


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One batch of two notebooks with two local jobs."""
    tmp = tmp_path_factory.mktemp("regen")
    profiles = write_profiles(tmp / "profiles.yml")
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--jobs", "2", "--out", str(tmp / "runs"),
              cwd=tmp)
    return tmp, profiles, res


def test_a_batch_runs_every_notebook_into_its_own_keyed_folder(batch):
    tmp, _, res = batch
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp / "runs" / "t" / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done", "done"]
    for r in summary["runs"]:
        run_dir = Path(r["out"])
        assert run_dir.parent.name == r["notebook"] and run_dir.name == r["key"]
        assert (run_dir / f"{r['notebook']}.ipynb").is_file() and (run_dir / "outputs" / "metrics.json").is_file()
        assert r["headline"] and all(isinstance(v, (int, float)) for v in r["headline"].values())
    assert (tmp / "runs" / "t" / "summary.csv").read_text().startswith("notebook,key,status")
    assert "2 runs: 2 done" in res.stdout
    assert not list((tmp / "runs").rglob(".*staging*"))


def test_a_rerun_skips_unchanged_runs(batch):
    tmp, profiles, _ = batch
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--out", str(tmp / "runs"), cwd=tmp)
    assert res.returncode == 0 and "2 skipped" in res.stdout


def test_a_bad_parameter_fails_alone_and_the_batch_exits_nonzero(batch):
    tmp, _, _ = batch
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
    res = cli("regenerate", "--profile", "t", "--profiles", str(profiles), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 done, 1 skipped" in res.stdout
    assert not list(out.rglob(".*staging*"))


def test_the_same_batch_runs_on_a_dask_local_cluster(batch):
    pytest.importorskip("dask.distributed")
    tmp, profiles, _ = batch
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
    tmp, _, _ = batch
    res = cli("book", "--from", str(tmp / "runs" / "t"), "--site", str(tmp / "site"), cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    page = (tmp / "site" / "notebooks" / "04_early_stopping.html").read_text()
    assert "<img" in page                                 # the batch's figures, not re-executed ones
    assert (tmp / "site" / "index.html").is_file()
    assert not (tmp / "site" / "notebooks" / "02_headline_heatmaps.html").exists()   # not in the batch


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
