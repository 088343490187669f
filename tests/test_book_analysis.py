"""The book wing's shared chapter numbers (fsdiag.book.analysis) and benchmarks/compare_metrics.py."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fsdiag
from fsdiag import book
from fsdiag.testbeds import PAPER_METHOD_PARAMS

ROOT = Path(__file__).resolve().parents[1]


def test_method_params_are_the_papers_with_the_chapters_zeta():
    assert book.method_params() == {"fsr": {}, "sigma_dps": {}, "zeta_dps": dict(PAPER_METHOD_PARAMS["zeta_dps"]),
                                    "pigdm": {}, "tmpd": {}}
    assert book.method_params(["zeta_dps", "pigdm"], zeta=0.7) == {"zeta_dps": {"zeta": 0.7}, "pigdm": {}}
    book.method_params(zeta=0.7)["zeta_dps"]["zeta"] = 9.0          # a copy: the paper's values stay
    assert PAPER_METHOD_PARAMS["zeta_dps"]["zeta"] != 9.0
    with pytest.raises(ValueError, match="zeta"):
        book.method_params(zeta=0)
    with pytest.raises(TypeError, match="methods"):
        book.method_params("fsr")


def labelled_prior():
    atoms = torch.tensor([[-2.0], [-1.9], [0.0], [2.0]], dtype=torch.float64)
    return fsdiag.EmpiricalPrior(atoms, labels=torch.tensor([0, 0, 1, 2]))


def test_class_weights_sum_psi_per_label_and_entropy_is_in_nats():
    prior = labelled_prior()
    w = book.class_weights(prior, torch.tensor([0.1, 0.2, 0.3, 0.4]), 4)
    assert w.dtype == torch.float64 and w.tolist() == pytest.approx([0.3, 0.3, 0.4, 0.0])
    assert book.class_entropy(torch.tensor([1.0, 0.0], dtype=torch.float64)) == 0.0
    assert book.class_entropy(torch.tensor([0.25] * 4, dtype=torch.float64)) == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="psi"):
        book.class_weights(prior, torch.ones(3) / 3, 4)
    with pytest.raises(ValueError, match="n_classes"):
        book.class_weights(prior, torch.ones(4) / 4, 0)


def test_most_ambiguous_picks_the_measurement_between_classes():
    prior = labelled_prior()
    liks = [fsdiag.GaussianLikelihood(fsdiag.forward.Affine(torch.eye(1, dtype=torch.float64)),
                                      torch.tensor([y], dtype=torch.float64), 0.5) for y in (-2.0, 1.0, 2.0, 1.0)]
    j, entropy = book.most_ambiguous(prior, iter(liks), 3)
    assert j == 1 and len(entropy) == 4                 # y = 1 lies between classes 1 and 2; the tie goes to the first
    assert entropy[1] == entropy[3] and entropy[1] > max(entropy[0], entropy[2])
    with pytest.raises(ValueError, match="likelihoods"):
        book.most_ambiguous(prior, [], 3)


def test_with_ci_is_the_wilson_interval_of_the_count():
    f, lo, hi = book.with_ci(0.3, 10)
    assert f == 0.3 and lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)
    assert book.with_ci(0.0, 100)[1] == 0.0
    with pytest.raises(ValueError, match="fraction"):
        book.with_ci(1.5, 10)
    with pytest.raises(ValueError, match="n"):
        book.with_ci(0.5, 0)


def write_run(root: Path, chapter: str, metrics: dict, params=None):
    run = root / "ci" / chapter / "abc"
    (run / "outputs").mkdir(parents=True)
    (run / "outputs" / "metrics.json").write_text(json.dumps(metrics))
    (run / "run.json").write_text(json.dumps({"status": "done", "params": params or {"seed": 0}}))


def test_compare_metrics_ignores_timings_and_reports_every_other_difference(tmp_path):
    base = {"tv": 0.25, "rows": [{"wall_s": 1.0, "n": 3}], "cost": {"wall": 2.0}, "verdict": {"status": "supported"}}
    write_run(tmp_path / "old", "01_x", base)
    write_run(tmp_path / "same", "01_x", {**base, "rows": [{"wall_s": 9.0, "n": 3}], "cost": {"wall": 5.0}})
    write_run(tmp_path / "new", "01_x", {**base, "tv": 0.26, "rows": [{"wall_s": 1.0, "n": 4}]})
    tool = [sys.executable, str(ROOT / "benchmarks" / "compare_metrics.py")]
    res = subprocess.run([*tool, str(tmp_path / "old"), str(tmp_path / "same")], capture_output=True, text=True)
    assert res.returncode == 0 and "01_x: same" in res.stdout
    res = subprocess.run([*tool, str(tmp_path / "old"), str(tmp_path / "new")], capture_output=True, text=True)
    assert res.returncode == 1
    assert "/tv: 0.25 -> 0.26" in res.stdout and "/rows[0]/n: 3 -> 4" in res.stdout and "2 differences" in res.stdout
    res = subprocess.run([*tool, str(tmp_path / "old"), str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert res.returncode == 2 and "nowhere" in res.stderr
