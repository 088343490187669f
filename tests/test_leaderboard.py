"""`fsdiag leaderboard`: every registered sampler and a user's, ranked against the exact posterior
at equal budgets (the ci profile, run for real); the exact control sits at its floor; cells
resume, fail alone and never touch a user's folder; budgets are spent, not exceeded."""
import csv
import json
import math
import textwrap

import pytest
import torch

import fsdiag
from fsdiag.__main__ import main
from fsdiag.leaderboard import ENTRIES, leaderboard
from fsdiag.leaderboard.cells import PROFILES, spread_error
from fsdiag.leaderboard.entries import steps_for_budget
from fsdiag.problems import PROBLEMS, make_problem

USER = textwrap.dedent('''
    import torch

    def prior_only(denoiser, problem, n_samples, generator, budget=50):
        """A user's sampler: Euler steps of the probability-flow ODE, no guidance at all."""
        sigmas = torch.logspace(1.5, -3, budget + 1, dtype=torch.float64)
        x = sigmas[0] * torch.randn(n_samples, problem.dim, generator=generator, dtype=torch.float64)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (s_next - s) * (x - denoiser(x, s)) / s
        return denoiser(x, sigmas[-1])

    def broken(denoiser, problem, n_samples, generator):
        raise RuntimeError("this sampler is broken")
    ''')


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The ci profile with the user's sampler, run once for the module."""
    root = tmp_path_factory.mktemp("board")
    (root / "mine.py").write_text(USER)
    out = root / "lb"
    code, result = leaderboard("ci", add=[f"{root / 'mine.py'}:prior_only"], out=str(out), progress=False)
    return root, out, code, result


def test_every_registered_sampler_and_the_users_are_ranked(board):
    root, out, code, result = board
    assert code == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    spec = PROFILES["ci"]
    assert len(rows) == (len(ENTRIES) + 1) * len(spec["problems"]) * len(spec["budgets"]) * len(spec["seeds"])
    assert {r["sampler"] for r in rows} == set(ENTRIES) | {"prior_only"}
    for problem in spec["problems"]:
        ranked = result["ranking"][problem][spec["budgets"][0]]
        names = [e["sampler"] for e in ranked]
        assert set(names) == set(ENTRIES) | {"prior_only"}
        done = [e for e in ranked if e["status"] == "done"]
        assert [e["rank"] for e in done] == list(range(1, len(done) + 1))
        assert all(a["ratio"][0] <= b["ratio"][0] for a, b in zip(done, done[1:]))        # ranked by TV / floor
        exact = next(e for e in ranked if e["sampler"] == "exact")
        assert exact["tv_modes"] <= exact["tv_floor_q95"] + 1e-12, (problem, exact)      # the control sits at its floor
        user = next(e for e in ranked if e["sampler"] == "prior_only")
        assert user["status"] == "done" and user["rank"] >= 1
    # the user's prior-only sampler ignores y: on the three atoms it cannot find the posterior's atom
    three = {e["sampler"]: e for e in result["ranking"]["three_atoms"][spec["budgets"][0]]}
    assert three["prior_only"]["tv_modes"] > 0.3 > three["exact"]["tv_modes"]
    md = (out / "leaderboard.md").read_text()
    assert "prior_only" in md and "| 1 | exact |" in md
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["profile"] == "ci" and set(saved["ranking"]) == set(spec["problems"])


def test_budgets_are_spent_and_not_exceeded(board):
    _, out, _, result = board
    budget = PROFILES["ci"]["budgets"][0]
    for row in result["rows"]:
        if row["status"] == "done" and row["family"] != "user":
            assert budget * 0.6 <= row["nfe_used"] <= budget, row


def test_a_second_run_resumes_and_a_failing_sampler_fails_alone(board, capsys):
    root, out, _, _ = board
    code, result = leaderboard("ci", problems=["three_atoms"], samplers=["exact"],
                               add=[f"{root / 'mine.py'}:prior_only", f"{root / 'mine.py'}:broken"], out=str(out),
                               progress=False)
    assert code == 1                                          # one sampler failed ...
    by = {r["sampler"]: r for r in result["rows"]}
    assert by["broken"]["status"] == "failed" and "this sampler is broken" in by["broken"]["error"]
    assert by["exact"]["status"] == "done" and by["prior_only"]["status"] == "done"   # ... alone
    printed = capsys.readouterr().out
    assert "failed: broken on three_atoms" in printed
    assert "3 cells (1 run, 1 failed)" in printed                  # exact and prior_only: resumed, not rerun
    first = (len(ENTRIES) + 1) * len(PROFILES["ci"]["problems"])   # the first run's cells (with deepinv's and
    assert len(list((out / "cells").glob("*.json"))) == first + 1  # diffusers' where installed), and the new one


def test_bad_options_and_a_users_folder_exit_2(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    for argv, words in ((["--out", str(tmp_path / "notes")], "did not write"),
                        (["--profile", "cii"], "did you mean 'ci'"),
                        (["--samplers", "sigma_dsp"], "did you mean 'sigma_dps'"),
                        (["--problems", "gmm"], "--problems"),
                        (["--add", "nofile.py:fn"], "--add")):
        out = [] if "--out" in argv else ["--out", str(tmp_path / "x")]
        assert main(["leaderboard", *argv, *out]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (argv, err)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_steps_for_budget_solves_the_cost_of_a_step():
    problem = make_problem("three_atoms")
    for name, per_step in (("sigma_dps", 2.0), ("exact", 1.0), ("tds", 2.0)):
        n_steps, cost = steps_for_budget(ENTRIES[name], problem, 40)
        assert cost == pytest.approx(per_step), name
        assert 15 <= n_steps <= 40, (name, n_steps)


def test_spread_error_is_zero_for_exact_spread_and_grows_with_the_error():
    g = torch.Generator().manual_seed(0)
    prior = fsdiag.EmpiricalPrior(torch.randn(400, 3, generator=g, dtype=torch.float64), device="cpu")
    psi = torch.full((400,), 1 / 400, dtype=torch.float64)
    draws = prior.atoms[torch.multinomial(psi, 20000, replacement=True, generator=g)]
    assert spread_error(draws, prior, psi) < 0.02
    assert spread_error(0.5 * draws, prior, psi) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("name", ["digits_box_inpainting", "digits_downsampling", "digits_fourier_magnitude",
                                  "textures_inpainting"])
def test_the_new_built_in_problems_hold_their_truth_out_and_fit_it(name):
    problem = make_problem(name, seed=3)
    assert name in PROBLEMS and problem.image_shape == (1, 8, 8)
    assert not bool((problem.prior.atoms == problem.truth).all(1).any())          # the truth is no atom
    r = problem.lik.residual(problem.truth) / problem.lik.noise_std
    chi2 = float((r * r).sum())
    assert chi2 < problem.lik.obs_dim + 6 * math.sqrt(2 * problem.lik.obs_dim)     # y was simulated from it
    assert problem.prior.labels is not None and int(problem.prior.labels.unique().numel()) >= 6


def test_an_installed_package_adds_its_sampler_through_the_entry_point_group(tmp_path, monkeypatch):
    import importlib.metadata

    (tmp_path / "pkg_sampler.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint("from_a_package", "pkg_sampler:prior_only", "fsdiag.samplers")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == "fsdiag.samplers" else [])
    code, result = leaderboard("ci", problems=["three_atoms"], samplers=["exact"], out=str(tmp_path / "lb"),
                               progress=False)
    assert code == 0 and {r["sampler"] for r in result["rows"]} == {"exact", "from_a_package"}
    assert next(r for r in result["rows"] if r["sampler"] == "from_a_package")["family"] == "user"


def test_cells_run_in_parallel_processes_give_the_same_rows(tmp_path):
    """--jobs 2: cells in a process pool (each pickled, run and judged there) give the same numbers."""
    kw = dict(problems=["three_atoms"], samplers=["exact", "sigma_dps"], progress=False)
    _, one = leaderboard("ci", out=str(tmp_path / "one"), **kw)
    _, two = leaderboard("ci", out=str(tmp_path / "two"), jobs=2, **kw)
    pick = lambda res: {(r["sampler"], r["seed"]): (r["tv_modes"], r["nfe_used"]) for r in res["rows"]}  # noqa: E731
    assert pick(one) == pick(two) and len(pick(one)) == 2
