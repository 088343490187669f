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
from fsdiag.operators import blur_matrix
from fsdiag.problems import PROBLEMS, make_problem

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


    def exits(denoiser, problem, n_samples, generator):
        import sys
        sys.exit(0)
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
    assert sorted(p.name for p in out.iterdir()) == [".fsdiag-owner", "report.json", "report.md", "report.png"]
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
    if p.forward.is_linear:     # <A x, v> = <x, A^T v> for the linear problems' operators
        assert float((p.A(x) * v).sum() - (x * p.A_vjp(x, v)).sum()) == pytest.approx(
            float(((p.forward.bias if p.forward.bias is not None else 0) * v).sum()), abs=1e-9)
    else:                       # a nonlinear operator: its VJP against finite differences
        u = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        fd = (p.A(x + 1e-6 * u) - p.A(x - 1e-6 * u)) / 2e-6
        assert float((fd * v).sum()) == pytest.approx(float((u * p.A_vjp(x, v)).sum()), rel=1e-5, abs=1e-7)
    sig = p.sigma_grid(10)
    assert bool((sig[1:] < sig[:-1]).all()) and float(sig[-1]) > 0
    if p.truth is not None and p.image_shape:
        assert not bool((p.prior.atoms == p.truth).all(1).any())   # leave-one-out: the truth is no atom
    with pytest.raises(ValueError, match="problem"):
        make_problem("unknown")


# ------------------------------------------------------------------ issue 16: your problem, your files, exit codes
PROBLEM_FILE = textwrap.dedent('''
    import torch
    import fsdiag
    from fsdiag.problems import custom


    def two_clusters(seed=0):
        g = torch.Generator().manual_seed(seed)
        side = torch.randint(0, 2, (200, 1), generator=g)
        atoms = torch.randn(200, 2, generator=g, dtype=torch.float64) * 0.3 + 3.0 * side
        return custom(atoms, torch.tensor([[1.0, 1.0]]), [3.0], 0.5, labels=side[:, 0])


    def pair():
        return fsdiag.testbeds.three_atoms()


    def not_a_problem():
        return 42
''')


@pytest.fixture
def files(user_dir):
    """A user's data as files: digits as .npy atoms and labels, a measurement y."""
    from sklearn.datasets import load_digits
    import numpy as np
    d = load_digits()
    np.save(user_dir / "atoms.npy", (d.data[1:] / 16.0).astype("float32"))
    np.save(user_dir / "labels.npy", d.target[1:])
    np.save(user_dir / "y.npy", (d.data[0, :32] / 16.0))          # the top half of a held-out zero
    (user_dir / "user_problems.py").write_text(PROBLEM_FILE)
    return user_dir


@pytest.mark.parametrize("problem", ["user_problems:two_clusters", "user_problems.py:two_clusters",
                                     "user_problems:pair"])
def test_a_problem_given_as_a_function_is_judged(cli, files, problem):
    res = cli("user_samplers:exact", "--problem", problem, "--n-samples", "300", "--max-tv", "0.2")
    assert res.returncode == 0, res.stderr
    assert "PASS" in res.stdout


def test_a_problem_given_as_files_is_judged_and_reported(cli, files):
    mask = torch.zeros(64, dtype=torch.bool)
    mask[:32] = True
    torch.save(None, files / "unused.pt")
    import numpy as np
    np.save(files / "mask.npy", mask.numpy())
    res = cli("user_samplers:exact", "--atoms", "atoms.npy", "--labels", "labels.npy", "--image-shape", "1,8,8",
              "--operator", "mask:mask.npy", "--y", "y.npy", "--noise", "0.5", "--n-samples", "200",
              "--out", "rep", "--max-tv", "0.25")
    assert res.returncode == 0, res.stderr
    data = json.loads((files / "rep" / "report.json").read_text())
    assert data["problem"] == "atoms.npy" and data["report"]["modes"]["labels"] == list(range(10))
    assert data["report"]["tv_modes"] <= data["report"]["floor"]["modes"]["q95"] + 0.05


def test_a_held_out_atom_is_the_truth_and_y_is_simulated(cli, files):
    args = ["user_samplers:exact", "--atoms", "atoms.npy", "--labels", "labels.npy", "--image-shape", "1,8,8",
            "--operator", "inpaint:keep=0.5", "--truth-index", "3", "--noise", "0.3", "--n-samples", "64"]
    first = cli(*args, "--out", "a")
    again = cli(*args, "--out", "b")
    other = cli(*args, "--problem-seed", "1", "--out", "c")
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr
    read = [json.loads((files / k / "report.json").read_text())["report"]["exact_weights"] for k in "abc"]
    assert read[0] == read[1] and read[0] != read[2]                  # same seed, same y; another seed, another y
    assert "held out as the truth" in json.loads((files / "a" / "report.json").read_text())["description"]


@pytest.mark.parametrize("args,needle", [
    (["--problem", "three_atom"], "did you mean 'three_atoms'"),
    (["--problem", "user_problems:not_a_problem"], "must return an fsdiag.Problem"),
    (["--atoms", "atoms.npy", "--operator", "blurr", "--noise", "0.3", "--truth-index", "0"],
     "--operator: unknown operator 'blurr' (did you mean 'blur'?)"),
    (["--atoms", "atoms.npy", "--operator", "blur:sd=1", "--image-shape", "1,8,8", "--noise", "0.3",
      "--truth-index", "0"], "did you mean 'std'"),
    (["--atoms", "atoms.npy", "--operator", "blur", "--noise", "0.3", "--truth-index", "0"], "--image-shape"),
    (["--atoms", "truncated.npy", "--operator", "identity", "--noise", "0.3", "--truth-index", "0"], "--atoms:"),
    (["--atoms", "atoms.npy", "--operator", "identity", "--noise", "0.3", "--y", "garbage.npy"], "--y:"),
    (["--atoms", "atoms.npy", "--labels", "garbage.npy", "--operator", "identity", "--noise", "0.3",
      "--truth-index", "0"], "--labels:"),
    (["--atoms", "atoms.npy", "--operator", "identity", "--noise", "0.3", "--truth-index", "99999"],
     "--truth-index"),
    (["--atoms", "atoms.npy", "--operator", "identity", "--noise", "-1", "--truth-index", "0"], "--noise"),
    (["--atoms", "atoms.npy", "--operator", "identity", "--noise", "0.3"], "--y"),
    (["--problem", "gmm2d", "--seed", str(2 ** 64)], "--seed"),
    (["--problem", "gmm2d", "--problem-seed", str(2 ** 63)], "--problem-seed"),
    (["--problem", "gmm2d", "--atoms", "atoms.npy"], "--problem"),
])
def test_bad_problems_and_files_exit_2_with_one_line_naming_the_option(cli, files, args, needle):
    (files / "truncated.npy").write_bytes((files / "atoms.npy").read_bytes()[:200])
    (files / "garbage.npy").write_bytes(b"not an array at all")
    res = cli("user_samplers:exact", *args, "--n-samples", "8")
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr


def test_out_never_loses_a_users_file_or_folder(cli, files):
    mine = files / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (files / "notes.txt").write_text("my file")
    before = sorted(p.name for p in files.iterdir())
    for out in ("mine", "notes.txt", "notes.txt/sub", "", "/proc/x/y"):
        res = cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8", "--out", out)
        assert res.returncode == 2, (out, res.stderr)
        assert "--out" in res.stderr and "Traceback" not in res.stderr
    assert (mine / "notes.txt").read_text() == "my notes" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (files / "notes.txt").read_text() == "my file"
    assert sorted(p.name for p in files.iterdir()) == before             # no staging or old folders left
    # --force adds this report's files beside the user's, which stay.
    res = cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8", "--out", "mine", "--force")
    assert res.returncode == 0 and (mine / "notes.txt").read_text() == "my notes"
    assert {"report.md", "report.json", "report.png"} <= {p.name for p in mine.iterdir()}
    # A previous report of this command is replaced whole.
    assert cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8", "--out", "rep").returncode == 0
    (files / "rep" / "report.md").write_text("stale")
    assert cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8", "--out", "rep").returncode == 0
    assert (files / "rep" / "report.md").read_text() != "stale"


def test_exit_codes_mean_one_thing_each(cli, files, monkeypatch):
    assert cli("user_samplers:exits", "--problem", "three_atoms", "--n-samples", "8").returncode == 3
    # A sampler that passes is never reported as a regression when fsdiag itself fails: 4, not 1.
    import fsdiag.plots.report as report_plots

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the report")
    monkeypatch.setattr(report_plots, "report_figure", broken)
    res = cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8", "--out", "rep", "--max-tv", "0.5")
    assert res.returncode == 4 and "internal error" in res.stderr and "please report" in res.stderr
    assert not (files / "rep").exists() and not [p for p in files.iterdir() if ".staging" in p.name]


def test_help_documents_every_exit_code(cli, capsys):
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "3 ", "4 "):
        assert f"\n  {code}" in text
    assert "--truth-index" in text and "module:function" in text


def test_a_missing_optional_dependency_is_one_line_and_exit_2(cli, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    res = cli("user_samplers:exact", "--problem", "digits_inpainting", "--n-samples", "8")
    assert res.returncode == 2 and "pip install scikit-learn" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_empty_folder_becomes_the_commands_own(cli, files):
    (files / "empty").mkdir()
    for _ in range(2):     # the second run replaces the first report, which the first run marked
        assert cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8", "--out", "empty").returncode == 0
    assert (files / "empty" / ".fsdiag-owner").read_text().strip() == "fsdiag diagnose"


def test_a_npy_header_promising_more_than_the_file_holds_is_refused_before_allocating(cli, user_dir):
    from numpy.lib import format as npy_format
    with open(user_dir / "big.npy", "wb") as f:         # 800 GB promised, 64 bytes there
        npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 11,)})
        f.write(b"\0" * 64)
    res = cli("user_samplers:exact", "--problem", "three_atoms", "--n-samples", "8")
    assert res.returncode == 0
    res = cli("user_samplers:exact", "--atoms", "big.npy", "--operator", "identity", "--noise", "1",
              "--truth-index", "0")
    assert res.returncode == 2 and res.stderr.startswith("fsdiag diagnose: --atoms:")
