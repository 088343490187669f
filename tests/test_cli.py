"""`fsdiag diagnose`: a user's sampler file, written here, judged through the command line."""
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

import fsdiag
from fsdiag.__main__ import main
from fsdiag.problems import PROBLEMS, blur_matrix, make_problem

SAMPLERS = textwrap.dedent('''
    import torch
    import fsdiag


    def exact(denoiser, problem, n_samples, generator):
        # The exact ancestral sampler, then one call of the denoiser at sigma = 0 (snaps to atoms).
        run = fsdiag.sample_exact(problem.prior, problem.lik, n_particles=n_samples, n_steps=30,
                                  generator=generator, progress=False)
        return problem.to_images(denoiser(run.samples, 0.0))


    def prior_only(denoiser, problem, n_samples, generator):
        # Ignores y: a probability-flow ODE in the VE convention, Euler steps on the denoiser alone.
        sig = problem.sigma_grid(40)
        x = sig[0] * torch.randn(n_samples, problem.dim, generator=generator, dtype=torch.float64)
        for s, s_next in zip(sig[:-1].tolist(), sig[1:].tolist()):
            x = x + (s_next - s) * (x - denoiser(x, s)) / s
        return denoiser(x, 0.0)


    def wrong_shape(denoiser, problem, n_samples, generator):
        return torch.zeros(n_samples, problem.dim + 1)


    def crashes(denoiser, problem, n_samples, generator):
        raise RuntimeError("boom")


    def two_args(denoiser, problem):
        return None
''')


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "user_samplers.py").write_text(SAMPLERS)
    return tmp_path


def cli_process(*args, cwd):
    """The real command line, in a subprocess."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "fsdiag", "diagnose", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli(user_dir, monkeypatch, capsys):
    """The same entry point in this process (a subprocess costs seconds of imports per call)."""
    monkeypatch.chdir(user_dir)
    monkeypatch.syspath_prepend(str(user_dir))

    def run(*args, cwd=None):
        code = main(["diagnose", *args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def test_exact_sampler_passes_and_writes_all_outputs(user_dir):
    out = user_dir / "report"
    res = cli_process("user_samplers:exact", "--problem", "gmm2d", "--n-samples", "400", "--out", str(out),
              "--max-tv", "0.15", cwd=user_dir)
    assert res.returncode == 0, res.stderr
    assert "PASS" in res.stdout and "TV over modes" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "report.png"]
    data = json.loads((out / "report.json").read_text())
    rep = data["report"]
    assert data["passed"] and data["n_samples"] == 400
    # Exact draws score like exact draws: at most a little above the simulated Monte Carlo floor.
    assert rep["tv_modes"] <= rep["floor"]["modes"]["q95"] + 0.02
    assert rep["excluded_mass"] < 0.01
    assert not [p for p in user_dir.iterdir() if p.name.startswith(".report")]   # no staging litter


def test_a_sampler_that_ignores_y_fails_the_guard(cli, user_dir):
    res = cli(str(user_dir / "user_samplers.py") + ":prior_only", "--problem", "three_atoms", "--n-samples", "200",
              "--max-tv", "0.1", cwd=user_dir)
    assert res.returncode == 1, res.stderr
    assert "FAIL" in res.stdout


@pytest.mark.parametrize("spec,needle", [
    ("user_samplers", "package.module:function"),
    ("no_such_module:f", "could not import"),
    ("user_samplers:missing", "no function 'missing'"),
    ("user_samplers:two_args", "must take (denoiser, problem, n_samples, generator)"),
    ("user_samplers:wrong_shape", "samples: expected shape"),
    ("nofile.py:f", "no file"),
])
def test_bad_sampler_paths_and_signatures_exit_2(cli, user_dir, spec, needle):
    res = cli(spec, "--problem", "three_atoms", "--n-samples", "8", cwd=user_dir)
    assert res.returncode == 2
    assert needle in res.stderr


def test_a_crashing_sampler_exits_3_with_its_traceback(cli, user_dir):
    res = cli("user_samplers:crashes", "--problem", "three_atoms", "--n-samples", "8", cwd=user_dir)
    assert res.returncode == 3
    assert "RuntimeError: boom" in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--problem", "nope"], "--problem"), (["--problem", "gmm2d", "--n-samples", "0"], "--n-samples"),
    (["--problem", "gmm2d", "--max-tv", "2"], "--max-tv"),
])
def test_bad_options_exit_2(cli, user_dir, args, needle):
    res = cli("user_samplers:exact", *args, cwd=user_dir)
    assert res.returncode == 2 and needle in res.stderr


def test_blur_matrix_is_a_normalised_symmetric_convolution():
    B = blur_matrix(8, 8, 1.0)
    assert torch.allclose(B, B.T)
    # Away from the border each row sums to one; the 2-D kernel is the outer product of 1-D ones.
    assert float(B[3 * 8 + 3].sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(B[0].sum()) < 1.0
    img = torch.zeros(64, dtype=torch.float64)
    img[27] = 1.0
    out = (B @ img).reshape(8, 8)
    assert torch.allclose(out, out.T) and int(out.argmax()) == 27


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_every_problem_is_consistent(name):
    p = make_problem(name, seed=0)
    psi = fsdiag.posterior_weights(p.prior, p.lik)
    assert float(psi.sum()) == pytest.approx(1.0)
    x = p.prior.atoms[:3]
    assert p.A(p.to_images(x)).shape == (3, p.lik.obs_dim)
    v = torch.randn(3, p.lik.obs_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # <A x, v> = <x, A^T v> for the linear problems' operators.
    assert float((p.A(x) * v).sum() - (x * p.A_vjp(x, v)).sum()) == pytest.approx(
        float(((p.lik.forward.bias if p.lik.forward.bias is not None else 0) * v).sum()), abs=1e-9)
    sig = p.sigma_grid(10)
    assert bool((sig[1:] < sig[:-1]).all()) and float(sig[-1]) > 0
    if p.truth is not None and p.image_shape:
        assert not bool((p.prior.atoms == p.truth).all(1).any())   # leave-one-out: the truth is no atom
    with pytest.raises(ValueError, match="problem"):
        make_problem("unknown")
