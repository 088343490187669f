"""benchmarks/gpu_check.sh, the one script a GPU session runs (issue 11), in its dry mode on the CPU:
every stage runs at tiny sizes, the results land in the output folder, a stage that runs out of time
is stopped with everything it started (the Jupyter kernel too) and the stages after it still run."""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
TINY_CH13 = {"operators": ["inpainting"], "methods": ["sigma_dps"], "sweep_methods": ["sigma_dps"],
             "n_candidates": 2, "tweedie_times": [1.0, 0.3], "sweep_sizes": [300], "n_patches": 300,
             "n_particles": 8, "n_steps": 5, "sweep_particles": 8, "sweep_steps": 5}


def run_check(out: Path, run_id: str, **env) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable, "GPU_CHECK_RUN_ID": run_id,
           "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=240)


def processes_of(run_id: str) -> list[int]:
    """Live processes whose environment carries this run's marker (the script exports it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"GPU_CHECK_RUN_ID={run_id}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.notebooks
def test_dry_run_runs_every_stage_and_collects_the_chapter(tmp_path):
    res = run_check(tmp_path, f"dry-{os.getpid()}", GPU_CHECK_STAGES="env,setup,bench,scale,ch13,collect",
                    GPU_CHECK_SCALE_N="200,500", GPU_CHECK_CH13_OVERRIDES=json.dumps(TINY_CH13))
    log = (tmp_path / "gpu_check.log").read_text()
    assert res.returncode == 0, log[-4000:]
    heads = [m[1] for m in re.finditer(r"^={16,} (\S+)", log, re.M)]
    assert heads[:6] == ["env", "setup", "bench", "scale", "ch13", "collect"]
    summary = log.split(" summary (")[1].splitlines()[1:]
    assert [s.split()[:2] for s in summary] == [["env", "ok"], ["setup", "ok"], ["cuda_tests", "not"], ["bench", "ok"],
                                                ["scale", "ok"], ["ch13", "ok"], ["collect", "ok"]]
    # at most 8 plain files with plain names come back from a device run
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["13_imaging.ipynb", "ch13_outputs.tar.gz", "ch13_params.yaml", "gpu_check.log",
                     "metrics.json", "scale.json"]
    scale = json.loads((tmp_path / "scale.json").read_text())
    assert scale["patch_size"] == 32 and sorted(map(int, scale["sizes"])) == [200, 500]
    for row in scale["sizes"].values():
        assert {"exact", "fsr", "sigma_dps", "pigdm", "tmpd"} <= set(row) and row["evaluate_s"] > 0
    assert scale["predicted_chapter_s"]["total_without_digits"] > 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["params"]["patch_size"] == 32 and m["params"]["operators"] == ["inpainting"]
    assert m["sweep"]["sizes"] == [300] and m["verdict"]["status"]
    with tarfile.open(tmp_path / "ch13_outputs.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"metrics.json", "growth.png", "maps_textures.png", "tweedie_blur.png"} <= names
    assert "predicted chapter 13 time" in log and "N = 300: exact ESS" in log


@pytest.mark.notebooks
def test_a_stage_out_of_time_is_stopped_with_its_kernel_and_the_rest_still_runs(tmp_path):
    run_id = f"timeout-{os.getpid()}"
    start = time.perf_counter()
    # 24 s budget, 15 s kept for collecting: the chapter (default dry counts, ~25 s and more on a
    # quiet machine) gets ~9 s and is stopped whatever the machine's speed
    res = run_check(tmp_path, run_id, GPU_CHECK_STAGES="ch13,collect", GPU_CHECK_BUDGET_S="24")
    log = (tmp_path / "gpu_check.log").read_text()
    assert res.returncode == 1, log[-3000:]
    assert "out of time" in log
    summary = log.split(" summary (")[1]
    assert "ch13        TIMEOUT" in summary and "collect     ok" in summary
    assert time.perf_counter() - start < 24 + 30
    time.sleep(1)
    assert processes_of(run_id) == [], "the stopped stage left processes running"
    assert (tmp_path / "ch13_params.yaml").is_file() and (tmp_path / "gpu_check.log").is_file()
