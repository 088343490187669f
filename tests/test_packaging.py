"""The project's own files: environment.yml agrees with pyproject.toml; the demo runs."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_pyproject_dependencies():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = set(meta["dependencies"]) | {d for extra in meta["optional-dependencies"].values() for d in extra}
    env = ROOT / "environment.yml"
    lines = env.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_listed = {line.strip()[2:].strip() for line in lines[start + 1:]
                  if line.strip().startswith("- ") and not line.strip().startswith("- -e")}
    assert {_name(d) for d in deps} == {_name(d) for d in pip_listed}
    assert deps == pip_listed, "pins differ between pyproject.toml and environment.yml"


def test_demo_prints_every_method():
    out = subprocess.run([sys.executable, "-m", "fsdiag", "demo", "--n-particles", "256", "--n-steps", "100"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for name in ("exact posterior", "exact sampler", "fsr", "sigma_dps", "zeta_dps", "pigdm", "tmpd"):
        assert name in out
