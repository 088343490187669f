"""Chapter 11 (beyond the paper): conventions decide failures. ΠGDM's hallucinated prior modes on the
three-atom testbed come from the paper code's r_t² and vanish under Song et al.'s; the discretisation and
the step count leave them in place; DPS's mode-weight error changes size with its scaling."""

import pytest

from conftest import assert_rejected, check_page_outputs, check_verdict, run_notebook

NB = "11_conventions.ipynb"
TINY = dict(n_particles=512, n_steps=100, step_counts=[50, 100])
PAPER, SONG = "r² = (1−ᾱ)/ᾱ, the paper's code", "r² = 1−ᾱ, Song et al."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb11")
    return path, run_notebook(NB, path, seed=0, **TINY)


@pytest.fixture(scope="module")
def metrics(run):
    return run[1]


def pick(metrics, y, family, convention, schedule="VP-SDE Euler–Maruyama", n_steps=100):
    hits = [r for r in metrics["results"] if r["y"] == y and r["family"] == family and r["convention"] == convention
            and r["schedule"] == schedule and r["n_steps"] == n_steps]
    assert len(hits) == 1, (y, family, convention, schedule, n_steps)
    return hits[0]


@pytest.mark.notebooks
def test_every_convention_schedule_and_step_count_ran_and_is_a_distribution(metrics):
    # 2 observations x 5 conventions x 2 discretisations x 2 step counts
    assert len(metrics["results"]) == 40
    for r in metrics["results"]:
        assert sum(r["atom_mass"]) == pytest.approx(1.0)
        assert r["excluded_lower"] <= r["excluded_mass"] <= r["excluded_upper"]
        assert 0 <= r["tv"] <= 1
    # The exact reference: one supported atom at y = -1.8, two (about 90/10) at y = -0.9.
    assert metrics["exact"]["-1.8"]["posterior"][0] > 0.999
    assert metrics["exact"]["-0.9"]["posterior"][:2] == pytest.approx([0.902, 0.098], abs=0.002)


@pytest.mark.notebooks
def test_pigdm_hallucination_depends_on_r2_and_not_on_the_discretisation(metrics):
    paper, song = pick(metrics, -1.8, "ΠGDM", PAPER), pick(metrics, -1.8, "ΠGDM", SONG)
    assert paper["excluded_lower"] > 0.05 and song["excluded_mass"] < 0.005
    ddpm = pick(metrics, -1.8, "ΠGDM", PAPER, schedule="DDPM ancestral")
    assert abs(ddpm["excluded_mass"] - paper["excluded_mass"]) < 0.03
    finding = [f for f in metrics["findings"] if (f["y"], f["family"], f["kind"], f["axis"]) ==
               (-1.8, "ΠGDM", "hallucination", "convention")]
    assert len(finding) == 1 and finding[0]["status"] == "depends"
    assert finding[0]["failing"] == {PAPER: True, SONG: False}
    assert any("ΠGDM hallucination at y = -1.8" in s for s in metrics["depends_on_convention"])


@pytest.mark.notebooks
def test_dps_never_hallucinates_at_the_papers_y_and_its_mode_weights_are_wrong_under_every_scaling(metrics):
    dps = [r for r in metrics["results"] if r["family"] == "DPS"]
    assert max(r["excluded_mass"] for r in dps if r["y"] == -1.8) < 0.005
    assert "DPS mode weights at y = -0.9" in metrics["persists_under_every_convention"]
    floor = metrics["exact"]["-0.9"]["floor"]["q95"]
    tvs = [r["tv"] for r in dps if r["y"] == -0.9]
    assert min(tvs) > floor + 0.02


@pytest.mark.notebooks
def test_findings_follow_from_the_thresholds(metrics):
    th = metrics["thresholds"]
    for f in metrics["findings"]:
        for label, value in f["values"].items():
            if f["kind"] == "mode weights":
                floor = metrics["exact"][str(f["y"])]["floor"]["q95"]
                assert f["failing"][label] == (value > floor + th["tv_margin"]), f
        n = sum(f["failing"].values())
        assert f["status"] == ("persists" if n == len(f["failing"]) else "absent" if n == 0 else "depends"), f


@pytest.mark.notebooks
def test_verdict_the_failures_size_depends_on_the_convention(metrics):
    v = metrics["verdict"]
    check_verdict(v, {"supported"})
    assert len(v["evidence"]) == 5


@pytest.mark.notebooks
def test_page_shows_rounded_numbers_and_a_figure_of_legible_width(run):
    path, _ = run
    check_page_outputs(path, NB, ["conventions"])


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    (dict(step_counts=[50, 300]), "step_counts", "ValueError"),
    (dict(zetta=0.1), "zetta", "ValueError"),
    (dict(observations=["a"]), "observations", "TypeError"),
])
def test_bad_or_unknown_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, {**TINY, **bad}, name, error)
