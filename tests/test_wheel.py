"""fsdiag installed from its wheel, away from this repository: the wheel carries the book's files;
a base install (no extras) runs every documented command without a traceback; with the book's
dependencies `fsdiag regenerate` and `fsdiag book --from` work in any folder and write only
under --out / --site.

Two virtual environments, built once per module:
- `base_venv`: a fresh venv (no system site packages): torch==2.13.0 first, then the wheel and
  its base dependencies (a constraints file pins torch);
- `book_venv`: a venv WITH the system's site packages (the book's dependencies are there, a full
  install would take minutes) and the wheel installed with --no-deps, so that its own files are
  the ones used (checked: fsdiag imports from the venv, not from this checkout).
`fsdiag_cli(venv, *args, cwd=...)` runs the venv's `fsdiag` as an activated venv would.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.wheel

TORCH = "torch==2.13.0"     # the CPU wheel (see the Makefile); an unpinned torch would pull a CUDA build
BOOK_FILES = ["_config.yml", "_toc.yml", "references.bib", "book/intro.md", "book/fsr_math.md",
              "book/bibliography.md", "book/_static/fsdiag.css", "notebooks/profiles.yml"]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
# Not the sources: build outputs and caches that a working tree may hold.
_NOT_SOURCES = shutil.ignore_patterns(".git", "_build", "build", "dist", "*.egg-info", "__pycache__", "outputs",
                                      ".venv", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints", "*.pyc")


def _run(cmd, *, cwd, env=None, timeout=900):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _clean_env(venv: Path | None = None) -> dict:
    """The environment of a shell where `venv` is activated (and nothing points at this checkout)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["PYTHONNOUSERSITE"] = "1"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv.parent)
        env["PATH"] = f"{venv}{os.pathsep}{env.get('PATH', '')}"
    return env


def fsdiag_cli(venv: Path, *args, cwd, timeout=600) -> subprocess.CompletedProcess:
    """Run `fsdiag ARGS` from the venv whose bin folder is `venv`, in `cwd`."""
    return subprocess.run([str(venv / "fsdiag"), *map(str, args)], cwd=cwd, env=_clean_env(venv),
                          capture_output=True, text=True, timeout=timeout)


def venv_python(venv: Path, code: str, *, cwd) -> str:
    return _run([venv / "python", "-c", code], cwd=cwd, env=_clean_env(venv)).stdout.strip()


def installed_package(venv: Path, cwd) -> Path:
    """The fsdiag package the venv imports, checked to be the venv's own copy (not this checkout)."""
    pkg = Path(venv_python(venv, "import fsdiag; print(fsdiag.__file__)", cwd=cwd)).parent
    assert pkg.is_relative_to(venv.parent) and not pkg.is_relative_to(ROOT), pkg
    return pkg


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if "__pycache__" not in p.parts}


# --------------------------------------------------------------------------------------------- builds

@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    # A copy of the working tree: building in place would leave build/ and an egg-info in the checkout.
    src = tmp_path_factory.mktemp("sources") / "fsdiag"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCES, symlinks=True)
    return src


@pytest.fixture(scope="module")
def wheel(sources, tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", dist, "-q"], cwd=sources)
    (whl,) = dist.glob("fsdiag-*.whl")
    return whl


def _venv(where: Path, wheel: Path, *, system_site_packages: bool) -> Path:
    _run([sys.executable, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []), where],
         cwd=where.parent)
    venv = where / "bin"
    pip = [venv / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if system_site_packages:
        _run([*pip, "--no-deps", wheel], cwd=where.parent, env=_clean_env(venv))
    else:
        constraints = where / "constraints.txt"
        constraints.write_text(TORCH + "\n")
        _run([*pip, TORCH], cwd=where.parent, env=_clean_env(venv))
        _run([*pip, "-c", constraints, wheel], cwd=where.parent, env=_clean_env(venv))
    return venv


@pytest.fixture(scope="module")
def base_venv(wheel, tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding the wheel and its base dependencies only."""
    return _venv(tmp_path_factory.mktemp("venvs") / "base", wheel, system_site_packages=False)


@pytest.fixture(scope="module")
def book_venv(wheel, tmp_path_factory) -> Path:
    """The bin folder of a venv that sees the system's packages (the book's dependencies), with
    the wheel installed in it (its own files shadow this checkout's editable install)."""
    return _venv(tmp_path_factory.mktemp("venvs") / "book", wheel, system_site_packages=True)


# ----------------------------------------------------------------------------------------- the wheel

def test_the_wheel_carries_the_book_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    book = {n.removeprefix("fsdiag/_book/") for n in names if n.startswith("fsdiag/_book/")}
    assert set(BOOK_FILES) <= book, sorted(set(BOOK_FILES) - book)
    assert {f"notebooks/{nb}" for nb in NOTEBOOKS} <= book
    assert len(NOTEBOOKS) >= 13
    # Sources only: no executed outputs, no hidden files, nothing outside those folders.
    assert not [n for n in book if "outputs/" in n or any(part.startswith(".") for part in n.split("/"))]
    assert {n.split("/")[0] for n in book} == {"_config.yml", "_toc.yml", "references.bib", "book", "notebooks"}
    assert "fsdiag/book/bookfiles.py" in names and "fsdiag/outputs.py" in names


def test_the_sdist_carries_them_too(sources, tmp_path):
    # MANIFEST.in: the sdist has the book's files, and a wheel built from the sdist has them under fsdiag/_book.
    _run([sys.executable, "setup.py", "-q", "sdist", "-d", tmp_path / "sdist"], cwd=sources)
    (sdist,) = (tmp_path / "sdist").glob("fsdiag-*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", sdist, "--no-deps", "-w", tmp_path / "dist", "-q"], cwd=tmp_path)
    (whl,) = (tmp_path / "dist").glob("fsdiag-*.whl")
    book = {n.removeprefix("fsdiag/_book/") for n in zipfile.ZipFile(whl).namelist() if n.startswith("fsdiag/_book/")}
    assert set(BOOK_FILES) <= book and {f"notebooks/{nb}" for nb in NOTEBOOKS} <= book


# ------------------------------------------------------------------------------------ a base install

SAMPLER = '''import fsdiag


def exact(denoiser, problem, n_samples, generator):
    return fsdiag.sample_exact(problem.prior, problem.lik, n_particles=n_samples, n_steps=30,
                               generator=generator, progress=False).samples
'''


def test_a_base_install_runs_help_and_diagnose(base_venv, tmp_path):
    installed_package(base_venv, tmp_path)
    res = fsdiag_cli(base_venv, "--help", cwd=tmp_path)
    assert res.returncode == 0 and all(c in res.stdout for c in ("demo", "diagnose", "regenerate", "book"))
    (tmp_path / "mysampler.py").write_text(SAMPLER)
    res = fsdiag_cli(base_venv, "diagnose", "mysampler.py:exact", "--problem", "three_atoms", "--n-samples", "64",
                     "--out", "rep", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    for name in ("report.md", "report.json", "report.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["n_samples"] == 64


USER_FILES = SAMPLER + '''

def prior_only(denoiser, problem, n_samples, generator):
    # ignores y: the exact sampler of the prior alone, snapped to atoms
    import torch
    idx = torch.multinomial(problem.prior.weights.double(), n_samples, replacement=True, generator=generator)
    return problem.prior.atoms[idx]


def crashes(denoiser, problem, n_samples, generator):
    raise RuntimeError("boom")


def exits(denoiser, problem, n_samples, generator):
    raise SystemExit(0)
'''

PROBLEM = '''import torch
from fsdiag.problems import custom


def clusters(seed=0):
    g = torch.Generator().manual_seed(seed)
    side = torch.randint(0, 2, (200, 1), generator=g)
    atoms = torch.randn(200, 2, generator=g, dtype=torch.float64) * 0.3 + 3.0 * side
    return custom(atoms, torch.tensor([[1.0, 1.0]]), [3.0], 0.5, labels=side[:, 0])
'''


def test_a_base_install_judges_your_problem_keeps_your_files_and_means_each_exit_code(base_venv, tmp_path):
    import numpy as np
    (tmp_path / "mine.py").write_text(USER_FILES)
    (tmp_path / "myproblem.py").write_text(PROBLEM)
    rng = np.random.default_rng(0)
    atoms = np.concatenate([rng.normal(0, 0.3, (100, 3)), rng.normal(3, 0.3, (100, 3))])
    np.save(tmp_path / "atoms.npy", atoms)
    np.save(tmp_path / "labels.npy", np.repeat([0, 1], 100))
    np.save(tmp_path / "y.npy", np.array([2.9, 3.1]))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "paper.txt").write_text("mine too")

    def diagnose(*args):
        return fsdiag_cli(base_venv, "diagnose", *args, "--n-samples", "200", cwd=tmp_path)

    # 0: your problem as a function, and as files (atoms, labels, an operator SPEC, y).
    by_function = diagnose("mine.py:exact", "--problem", "myproblem.py:clusters", "--max-tv", "0.2", "--out", "a")
    assert by_function.returncode == 0 and "PASS" in by_function.stdout, by_function.stderr
    by_files = diagnose("mine.py:exact", "--atoms", "atoms.npy", "--labels", "labels.npy", "--operator",
                        "inpaint:keep=0.67,seed=1", "--y", "y.npy", "--noise", "0.3", "--max-tv", "0.2", "--out", "b")
    assert by_files.returncode == 0, by_files.stderr
    assert json.loads((tmp_path / "b" / "report.json").read_text())["report"]["modes"]["labels"] == [0, 1]
    held = diagnose("mine.py:exact", "--atoms", "atoms.npy", "--operator", "identity", "--truth-index", "150",
                    "--noise", "0.3")
    assert held.returncode == 0, held.stderr
    # 1: only "TV above --max-tv".
    assert diagnose("mine.py:prior_only", "--problem", "myproblem.py:clusters", "--max-tv", "0.1").returncode == 1
    # 2: usage, one line; a user's folder and file under --out survive.
    for args in (["--problem", "nope"], ["--problem", "three_atoms", "--out", "notes"],
                 ["--problem", "three_atoms", "--out", "paper.txt"],
                 ["--atoms", "atoms.npy", "--operator", "blurr", "--noise", "1", "--truth-index", "0"]):
        res = diagnose("mine.py:exact", *args)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert (tmp_path / "paper.txt").read_text() == "mine too"
    # 3: the sampler raised, or called sys.exit.
    assert diagnose("mine.py:crashes", "--problem", "three_atoms").returncode == 3
    assert diagnose("mine.py:exits", "--problem", "three_atoms").returncode == 3
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("args", [("regenerate", "--profile", "ci"), ("book", "--from", "runs/ci")])
def test_a_base_install_says_to_install_the_book_extra(base_venv, tmp_path, args):
    res = fsdiag_cli(base_venv, *args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "install fsdiag[book]" in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []                   # checked before any work


# ---------------------------------------------------------------- regenerate and book from the wheel

@pytest.fixture(scope="module")
def ci_run(book_venv, tmp_path_factory):
    """`fsdiag regenerate --profile ci --only 01_finite_sample_lens --out runs` from a temporary
    folder, with the wheel's fsdiag; returns (folder, result, the installed package, whether it changed)."""
    for module in ("papermill", "jupyter_book", "yaml", "ipykernel"):   # the book venv borrows them from here
        pytest.importorskip(module)
    cwd = tmp_path_factory.mktemp("user")
    pkg = installed_package(book_venv, cwd)
    before, notebooks_before = _tree(pkg), sorted(p.name for p in (ROOT / "notebooks").iterdir())
    res = fsdiag_cli(book_venv, "regenerate", "--profile", "ci", "--only", "01_finite_sample_lens", "--out", "runs",
                     cwd=cwd)
    changed = sorted(set(_tree(pkg).items()) ^ set(before.items()))
    stray = sorted(set(p.name for p in (ROOT / "notebooks").iterdir()) - set(notebooks_before) - {"outputs"})
    return cwd, res, pkg, changed + stray


def test_regenerate_from_the_wheel_writes_the_run_under_out(ci_run):
    cwd, res, pkg, changed = ci_run
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 runs: 1 done" in res.stdout
    (run_json,) = (cwd / "runs" / "ci" / "01_finite_sample_lens").glob("*/run.json")
    run = run_json.parent
    assert json.loads(run_json.read_text())["status"] == "done"
    executed = run / "01_finite_sample_lens.ipynb"
    nb = json.loads(executed.read_text())
    # The wheel's notebook, executed by a kernel that imported the wheel's fsdiag: this checkout's
    # would name its git commit in the provenance line, an installed package has none.
    assert Path(nb["metadata"]["papermill"]["input_path"]).is_relative_to(pkg / "_book" / "notebooks")
    assert "(commit unknown)" in executed.read_text()
    figures = sorted((run / "outputs").glob("*.png"))
    assert figures
    for png in figures:
        assert png.stat().st_size > 0 and png.with_suffix(".csv").is_file(), png
    assert json.loads((run / "outputs" / "metrics.json").read_text())
    # Nothing outside the folder: the installed package (the notebooks' own folder) is untouched,
    # the caller's folder holds only --out, and no staging folder survives.
    assert changed == []
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]
    assert not [p for p in cwd.rglob(".*") if p.name not in (".fsdiag-owner",)]


def test_book_from_the_wheel_builds_the_site(ci_run, book_venv):
    cwd, res, pkg, _ = ci_run
    assert res.returncode == 0, res.stdout + res.stderr
    before = _tree(pkg)
    out = fsdiag_cli(book_venv, "book", "--from", "runs/ci", "--site", "site", cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (cwd / "site" / "index.html").is_file()
    assert (cwd / "site" / "notebooks" / "01_finite_sample_lens.html").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == ["runs", "site"]
    assert not [p for p in (cwd / "runs").rglob(".*") if p.name != ".fsdiag-owner"]
    assert _tree(pkg) == before
