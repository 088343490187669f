"""Chapter 10: exact-in-the-limit samplers (TDS, MCGdiff) and DAPS against guidance at equal compute.
At tiny sizes: the counted denoiser evaluations match each sampler's passes per step, SMC sits at the
Monte Carlo floor and puts no mass on excluded modes on the three atoms and the 2-D mixture, ΠGDM
does not, and DAPS at its paper step size barely moves."""

import pytest

from conftest import assert_rejected, check_page_outputs, check_verdict, run_notebook

NB = "10_exact_in_the_limit.ipynb"
TINY = dict(particles=[32, 128], n_steps=30, daps_particles=64, daps_steps=[5, 15], daps_paper_steps=20,
            digits_atoms=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb10")
    return path, run_notebook(NB, path, seed=0, **TINY)


@pytest.fixture(scope="module")
def metrics(run):
    return run[1]


def rows(metrics, key, method):
    return [r for r in metrics["problems"][key]["runs"] if r["method"] == method]


@pytest.mark.notebooks
def test_denoiser_evaluations_are_the_passes_per_step(metrics):
    k = TINY["n_steps"]
    for key in metrics["problems"]:
        for r in rows(metrics, key, "tds"):              # Tweedie mean + VJP at each of the k + 1 grid times
            assert r["evaluations"] == r["n_particles"] * 2 * (k + 1)
        for r in rows(metrics, key, "mcgdiff"):          # one Tweedie mean per grid time
            assert r["evaluations"] == r["n_particles"] * (k + 1)
        for r in rows(metrics, key, "sigma_dps"):        # Tweedie mean + VJP per step, the final Tweedie mean
            assert r["evaluations"] == r["n_particles"] * (2 * k + 1)
        for r in rows(metrics, key, "daps"):             # 5 ODE steps per annealing level, the final Tweedie mean
            assert r["evaluations"] == r["n_particles"] * (5 * r["n_steps"] + 1)
        budget = metrics["problems"][key]["budget"]      # a guidance sweep stops at the SMC budget
        for m in ("sigma_dps", "pigdm", "tmpd"):
            evs = [r["evaluations"] for r in rows(metrics, key, m)]
            assert evs and all(e < budget for e in evs[:-1])


@pytest.mark.notebooks
def test_smc_reaches_the_floor_without_hallucinating_where_pigdm_does_not(metrics):
    for key in ("three_atoms", "gmm2d"):
        s = metrics["problems"][key]["summary"]
        assert s["best_smc"]["ratio"] <= 1.0, key
        assert s["excluded_smc"] <= 0.01, key
        assert rows(metrics, key, "pigdm")[-1]["excluded"] > 0.02, key          # measured 0.047 on both
    # on the 2-D mixture at 128 particles the floor (0.10) still hides ΠGDM's bias; on the atoms it does not
    pig = rows(metrics, "three_atoms", "pigdm")[-1]
    assert pig["tv_modes"] > 2 * pig["floor_q95"]
    assert metrics["problems"]["three_atoms"]["summary"]["best_guidance"]["ratio"] > 1.0


@pytest.mark.notebooks
def test_daps_at_its_paper_step_size_is_worse_than_at_one_that_mixes(metrics):
    for key in ("three_atoms", "gmm2d"):
        s = metrics["problems"][key]["summary"]
        assert s["daps_paper"] > s["daps_best"] + 0.05, key


@pytest.mark.notebooks
def test_verdict(metrics):
    v = metrics["verdict"]
    check_verdict(v, {"supported", "partly supported"})
    holds = {r["label"]: r["holds"] for r in v["evidence"]}
    assert all(h for lab, h in holds.items() if lab.startswith("three atoms")), holds
    assert f"{metrics['cost']['evaluations'][0]:.2f}" in v["claim"]          # the cost is generated, not typed


@pytest.mark.notebooks
def test_page_shows_rounded_numbers_and_figures_of_legible_width(run):
    path, _ = run
    check_page_outputs(path, NB, ["excluded_mass", "tv_vs_denoiser_evaluations", "tv_vs_wall_time"])


@pytest.mark.notebooks
@pytest.mark.parametrize("bad, name, error", [
    (dict(particles=[1, 8]), "particles", "ValueError"),
    (dict(smc=["smc"]), "smc", "ValueError"),
])
def test_bad_parameter_fails_in_the_validation_cell(tmp_path, bad, name, error):
    assert_rejected(NB, tmp_path, {**TINY, **bad}, name, error)


def test_floor_crossings_and_the_sweep_figure_on_synthetic_rows():
    from fsdiag.plots import compute_sweep_figure, floor_crossings

    def row(label, family, ev, tv, floor):
        return {"label": label, "family": family, "method": label, "evaluations": ev, "wall_s": ev / 1e4,
                "tv_modes": tv, "floor_q95": floor, "excluded": tv / 2}

    runs = [row("A", "smc", 100, 0.3, 0.2), row("A", "smc", 400, 0.05, 0.1), row("A", "smc", 1600, 0.04, 0.05),
            row("B", "guidance", 100, 0.1, 0.2), row("B", "guidance", 400, 0.2, 0.1),      # at the floor, then not
            row("C", "daps", 800, 0.5, 0.1)]
    assert floor_crossings(runs) == {"A": 400, "B": None, "C": None}
    results = {k: {"title": k, "runs": runs} for k in ("p", "q", "r", "s")}
    fig = compute_sweep_figure(results, y="excluded")
    assert len([ax for ax in fig.axes if ax.axison]) == 4 and fig.get_figwidth() <= 12   # wraps into two rows
    assert len(fig.axes[0].lines) == 3
    with pytest.raises(ValueError, match="x"):
        compute_sweep_figure(results, x="steps")
    with pytest.raises(ValueError, match="y"):
        compute_sweep_figure(results, y="w1")
