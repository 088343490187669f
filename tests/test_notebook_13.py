"""Chapter 13 (the paper's imaging setting): every sampler on digits and texture patches under image
operators, judged against the exact posterior over atoms. The exact sampler stays within the Monte
Carlo floor, approximations put mass on ruled-out classes, early-stopped Tweedie means are blurred."""
import math

import numpy as np
import pytest

from conftest import ROOT, assert_rejected, check_page_outputs, check_verdict, run_notebook

NB = "13_imaging.ipynb"
TINY = dict(operators=["inpainting", "fourier_magnitude"], n_particles=32, n_steps=20, n_patches=300,
            n_candidates=5, sweep_sizes=[300, 1000], sweep_particles=16, sweep_steps=10,
            tweedie_times=[1.0, 0.3, 0.05])


FIGURES = ["maps_digits", "maps_textures", "class_weights_digits", "class_weights_textures", "tweedie_blur", "growth"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb13")
    return path, run_notebook(NB, path, seed=0, **TINY)


@pytest.fixture(scope="module")
def metrics(run):
    return run[1]


@pytest.mark.notebooks
def test_page_outputs(run):
    check_page_outputs(run[0], NB, FIGURES)


@pytest.mark.notebooks
def test_every_problem_has_every_runnable_sampler(metrics):
    assert set(metrics["problems"]) == {f"{d}/{op}" for d in ("digits", "textures") for op in TINY["operators"]}
    assert metrics["skipped"] == {"inpainting": [], "fourier_magnitude": ["pigdm", "tmpd"]}
    for key, p in metrics["problems"].items():
        names = set(p["methods"])
        assert {"exact sampler", "FSR", "σ-DPS"} <= names, key
        assert ("ΠGDM" in names and "TMPD" in names) == key.endswith("/inpainting"), key
        k = len(metrics["class_names"][key.split("/")[0]])
        assert len(p["exact_classes"]) == k and math.isclose(sum(p["exact_classes"]), 1.0, rel_tol=1e-6)
        for name, r in p["methods"].items():
            s, lo, hi = (np.asarray(r[x]) for x in ("classes", "lower", "upper"))
            assert s.shape == (k,) and math.isclose(s.sum(), 1.0, rel_tol=1e-6), (key, name)
            assert np.all(lo <= s + 1e-12) and np.all(s <= hi + 1e-12), (key, name)
            # ruled-out mass is the mass on classes the exact posterior gives < 1e-3
            ruled_out = np.asarray(p["exact_classes"]) < 1e-3
            assert r["excluded_mass"] == pytest.approx(float(s[ruled_out].sum())), (key, name)


@pytest.mark.notebooks
def test_exact_sampler_within_floor_and_some_approximation_hallucinates(metrics):
    for key, p in metrics["problems"].items():
        ex = p["methods"]["exact sampler"]
        assert ex["tv_modes"] <= ex["floor_q95"] + 0.05, key
        assert ex["excluded_mass"] <= 0.03, key
    assert metrics["summary"]["exact_gap"] <= 0.05
    approx = [r["excluded_mass"] for p in metrics["problems"].values() for n, r in p["methods"].items()
              if n not in ("exact sampler", "FSR")]
    assert max(approx) > 0.05
    assert metrics["summary"]["max_excluded"] == pytest.approx(max(approx))


@pytest.mark.notebooks
def test_tweedie_mean_blur_increases_with_t(metrics):
    for key, p in metrics["problems"].items():
        ex = p["methods"]["exact sampler"]
        t, blur = np.asarray(ex["times"]), np.asarray(ex["blur"])
        assert t[0] == pytest.approx(1.0) and t[-1] == pytest.approx(0.01)
        assert np.all(np.diff(t) < 0)
        assert blur[-1] < 0.5, key                  # at t_min the Tweedie mean is near the atoms it ends on
        assert blur[0] > blur[-1] + 0.5, key        # at t = 1 it is the prior mean: flat
        assert metrics["summary"]["blur_gain"][key.replace("/", ", ").replace(
            "inpainting", "random-pixel inpainting").replace("fourier_magnitude", "Fourier magnitude")] > 0.2


@pytest.mark.notebooks
def test_growth_sweep_and_verdict(metrics):
    sw = metrics["sweep"]
    assert sw["sizes"] == [300, 1000] and len(sw["ess"]) == 2 and all(e >= 1 for e in sw["ess"])
    assert set(sw["methods"]) == {"exact sampler", "σ-DPS", "ΠGDM"}
    for m in sw["methods"].values():
        assert len(m["tv_modes"]) == len(m["excluded"]) == len(m["tv_above_floor"]) == 2
        assert m["tv_above_floor"] == pytest.approx([t - q for t, q in zip(m["tv_modes"], m["floor_q95"])])
    # the exact sampler stays within its Monte Carlo floor at every N
    assert max(sw["methods"]["exact sampler"]["tv_above_floor"]) <= 0.1
    v = metrics["verdict"]
    check_verdict(v)
    rows = {r["label"]: r for r in v["evidence"]}
    assert rows["exact sampler: largest TV over classes above the 95% Monte Carlo quantile"]["holds"]
    assert rows["largest mass an approximation puts on classes the exact posterior rules out"]["holds"]
    assert v["status"] in {"supported", "partly supported"}


def gpu_profile() -> dict:
    """The chapter's parameters in the gpu profile of notebooks/profiles.yml (defaults included)."""
    from fsdiag.regenerate import expand
    return dict(expand("gpu", only=["13_imaging"])[0].params)


# The gpu profile's code path on the CPU: every parameter of the profile (32x32 patches, TMPD's CG
# iterations, all operators and methods) except the counts, which are tiny.
GPU_COUNTS = dict(n_patches=400, sweep_sizes=[300, 1000], n_particles=16, n_steps=10, sweep_particles=16,
                  sweep_steps=10, n_candidates=5, device="cpu", n_threads=1)


def test_gpu_profile_names_only_parameters_of_the_chapter():
    from fsdiag.regenerate import notebook_parameters
    p = gpu_profile()
    assert p["patch_size"] == 32 and max(p["sweep_sizes"]) == 10 ** 6 and p["device"] == "cuda"
    assert set(p) <= set(notebook_parameters(ROOT / "notebooks" / NB))
    assert set(GPU_COUNTS) <= set(notebook_parameters(ROOT / "notebooks" / NB))


@pytest.mark.notebooks
def test_gpu_profile_code_path_runs_on_the_cpu_at_tiny_counts(tmp_path):
    from fsdiag.data import patch_coverage
    profile = gpu_profile()
    params = {**profile, **GPU_COUNTS}
    m = run_notebook(NB, tmp_path, **params)
    check_page_outputs(tmp_path, NB, FIGURES)
    for key in set(profile) - set(GPU_COUNTS):            # everything but the counts is the profile's
        assert m["params"].get(key, profile[key]) == profile[key], key
    ops = m["params"]["operators"]
    assert set(m["problems"]) == {f"{d}/{op}" for d in ("digits", "textures") for op in ops}
    for op in ops:
        truth = np.asarray(m["problems"][f"textures/{op}"]["truth"])
        assert truth.shape == (1, 32, 32)
        runs = m["problems"][f"textures/{op}"]["methods"]
        assert len(runs["exact sampler"]["times"]) == len(runs["exact sampler"]["blur"]) >= 2
        for name, r in runs.items():
            assert np.isfinite([r["tv_modes"], r["mean_rmse"], r["std_ratio"], r["excluded_mass"]]).all(), (op, name)
    assert m["sweep"]["sizes"] == [300, 1000] and all(np.isfinite(m["sweep"]["ess"]))
    # the overlap of the texture pool (the largest N plus the held-out candidates), in closed form
    pool = max(GPU_COUNTS["n_patches"], *GPU_COUNTS["sweep_sizes"]) + GPU_COUNTS["n_candidates"]
    assert set(m["texture_coverage"]) == {"400", str(pool)}
    expect = patch_coverage(pool, 32, sources=m["params"]["textures"])
    assert m["texture_coverage"][str(pool)]["repeat_fraction"] == pytest.approx(expect["repeat_fraction"])
    assert m["texture_coverage"][str(pool)]["neighbours"] == pytest.approx(expect["neighbours"])
    check_verdict(m["verdict"])


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    (dict(operators=["radon"]), "operators", "ValueError"),
    (dict(n_particles=0), "n_particles", "ValueError"),
    (dict(tweedie_times=[2.0]), "tweedie_times", "ValueError"),
    (dict(patch_size=7, operators=["downsampling"]), "patch_size", "ValueError"),
    (dict(n_atom=10), "n_atom", "ValueError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, {**TINY, **bad}, name, error)
