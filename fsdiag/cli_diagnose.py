"""`fsdiag diagnose SAMPLER --problem NAME`: run anyone's sampler on the exact denoiser and judge it.

SAMPLER is `package.module:function` (or `path/to/file.py:function`), called as
`function(denoiser, problem, n_samples, generator)` and returning samples (n, d) or
(n, C, H, W). `denoiser` is `fsdiag.ExactDenoiser(problem.prior)` (D(x, sigma), variance
exploding); `problem` an `fsdiag.problems.InverseProblem` (y, A, noise level, image shape,
schedule helpers). Exit codes: 0 judged and within --max-tv; 1 TV over modes above --max-tv;
2 a bad SAMPLER path or signature, or samples of the wrong shape; 3 the sampler raised.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

__all__ = ["add_parser", "load_sampler", "run_diagnose", "SamplerError", "SamplerFailed"]


class SamplerError(Exception):
    """A SAMPLER that cannot be loaded or called as documented (exit code 2)."""


class SamplerFailed(Exception):
    """The SAMPLER raised while sampling (exit code 3)."""


def load_sampler(spec: str):
    """The function named by 'package.module:function' or 'path/to/file.py:function'."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise SamplerError(f"SAMPLER: expected 'package.module:function' or 'file.py:function', got {spec!r}")
    where, name = spec.split(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise SamplerError(f"SAMPLER: no file {where!r}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())          # as `python -m` would: modules next to you
            module = importlib.import_module(where)
    except SamplerError:
        raise
    except Exception as err:  # noqa: BLE001 - any import failure is the SAMPLER's, reported with its cause
        raise SamplerError(f"SAMPLER: could not import {where!r}: {type(err).__name__}: {err}") from err
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise SamplerError(f"SAMPLER: {where!r} has no function {name!r}")
    try:
        inspect.signature(fn).bind(None, None, 1, None)
    except TypeError as err:
        raise SamplerError(f"SAMPLER: {spec} must take (denoiser, problem, n_samples, generator): {err}") from err
    except ValueError:
        pass   # builtins without a signature: let the call tell
    return fn


def run_diagnose(spec: str, problem_name: str, *, n_samples: int = 256, seed: int = 0, out=None,
                 max_tv: float | None = None, problem_seed: int = 0, stream=None) -> tuple[int, dict]:
    """Load, run and judge a sampler; write the report to `out`. Returns (exit code, result)."""
    from .denoiser import ExactDenoiser
    from .evaluate import evaluate
    from .problems import as_samples, make_problem

    stream = sys.stdout if stream is None else stream
    fn = load_sampler(spec)
    problem = make_problem(problem_name, seed=problem_seed)
    denoiser = ExactDenoiser(problem.prior)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    try:
        samples = fn(denoiser, problem, n_samples, gen)
    except Exception as err:  # noqa: BLE001 - the user's code failed; the caller shows the traceback
        raise SamplerFailed(f"the sampler {spec} raised {type(err).__name__}: {err}") from err
    wall = time.perf_counter() - start
    try:
        x = as_samples(samples.detach() if isinstance(samples, torch.Tensor) else samples, problem)
    except (TypeError, ValueError) as err:
        raise SamplerError(f"SAMPLER: {spec} returned unusable samples: {err}") from err
    report = evaluate(x, problem.prior, problem.lik, method=spec, seed=seed)
    passed = max_tv is None or report.tv_modes <= max_tv
    result = {"sampler": spec, "problem": problem_name, "description": problem.description,
              "n_samples": int(x.shape[0]), "seed": seed, "problem_seed": problem_seed, "wall_time_s": wall,
              "max_tv": max_tv, "passed": passed, "report": report.to_dict()}
    text = _markdown(result, report)
    print(text, file=stream)
    if out is not None:
        _write_outputs(Path(out), result, text, report, problem, x)
        print(f"report written to {out}/ (report.md, report.json, report.png)", file=stream)
    return (0 if passed else 1), result


def _markdown(result: dict, report) -> str:
    m, h = report.modes, report.hallucination
    verdict = ("" if result["max_tv"] is None else
               f"\n**{'PASS' if result['passed'] else 'FAIL'}**: TV over modes {report.tv_modes:.4f} "
               f"{'<=' if result['passed'] else '>'} --max-tv {result['max_tv']:g}\n")
    lines = [f"# fsdiag diagnose: `{result['sampler']}` on `{result['problem']}`", "",
             f"{result['description']}. {result['n_samples']} samples, seed {result['seed']}, "
             f"wall time {result['wall_time_s']:.2f} s.", verdict,
             "| measure | sampler | exact draws (Monte Carlo floor) |", "|---|---|---|",
             f"| TV over modes | {report.tv_modes:.4f} | {report.tv_floor_modes:.4f} |",
             f"| TV over atoms | {report.tv_atoms:.4f} | {report.tv_floor_atoms:.4f} |",
             f"| mass on excluded modes (exact < 1e-3) | {h['prior_mode']:.4f} | 0 |",
             f"| mass outside the {h['level']:.0%} support (modes) | {h['outside_support_modes']:.4f} | "
             f"≤ {1 - h['level']:.2f} |",
             f"| off-support samples (radius {h['radius']:.3g}) | {h['off_support']:.4f} | 0 |", "",
             "| mode | sampler mass [95% CI] | exact |", "|---|---|---|"]
    for lab, s, lo, hi, e in zip(m["labels"], m["sampler"], m["lower"], m["upper"], m["exact"]):
        lines.append(f"| {lab} | {s:.4f} [{lo:.4f}, {hi:.4f}] | {e:.4f} |")
    return "\n".join(lines)


def _write_outputs(out: Path, result: dict, text: str, report, problem, x) -> None:
    """Write report.md, report.json and report.png into a staging folder, then swap it into
    place: the folder holds all three from one run, or what it held before."""
    from .nbtools import to_jsonable

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        (stage / "report.md").write_text(text + "\n")
        (stage / "report.json").write_text(json.dumps(to_jsonable(result), indent=2, sort_keys=True))
        _figure(report, problem, x).savefig(stage / "report.png", bbox_inches="tight", dpi=120)
        os.chmod(stage, 0o777 & ~_umask())
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _figure(report, problem, x):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import mode_weights_figure
    images = problem.image_shape is not None
    fig, axes = plt.subplots(1, 2 if images else 1, figsize=(11 if images else 6, 3.4), layout="constrained",
                             squeeze=False)
    mode_weights_figure({"sampler": report}, ax=axes[0, 0], title=f"{problem.name}: mass per mode")
    if images:
        ax = axes[0, 1]
        h, w = problem.image_shape[-2:]
        k = min(16, x.shape[0])
        tiles = x[:k].reshape(k, h, w).cpu().numpy()
        cols = 8
        rows = -(-k // cols)
        canvas = torch.ones(rows * (h + 1), cols * (w + 1), dtype=torch.float64).numpy() * float(x.min())
        for i in range(k):
            r, c = divmod(i, cols)
            canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = tiles[i]
        ax.imshow(canvas, cmap="gray_r")
        ax.set_title(f"first {k} samples", fontsize=10)
        ax.axis("off")
    return fig


def add_parser(sub) -> None:
    p = sub.add_parser("diagnose", help="judge any sampler against the exact posterior",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sampler", metavar="SAMPLER", help="package.module:function or file.py:function")
    p.add_argument("--problem", required=True, help="three_atoms, gmm2d, digits_inpainting or digits_blur")
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the generator passed to the sampler")
    p.add_argument("--problem-seed", type=int, default=0, help="seed of the problem (atoms, held-out truth, noise)")
    p.add_argument("--out", default=None, help="folder for report.md, report.json and report.png")
    p.add_argument("--max-tv", type=float, default=None, help="exit 1 when TV over modes exceeds this")
    p.set_defaults(run=_main)


def _main(args) -> int:
    from .problems import PROBLEMS
    if args.problem not in PROBLEMS:
        print(f"fsdiag diagnose: --problem: expected one of {sorted(PROBLEMS)}, got {args.problem!r}", file=sys.stderr)
        return 2
    for name in ("n_samples", "seed", "problem_seed"):
        if getattr(args, name) < (1 if name == "n_samples" else 0):
            print(f"fsdiag diagnose: --{name.replace('_', '-')}: expected a "
                  f"{'positive' if name == 'n_samples' else 'non-negative'} integer", file=sys.stderr)
            return 2
    if args.max_tv is not None and not 0 <= args.max_tv <= 1:
        print("fsdiag diagnose: --max-tv: expected a number in [0, 1]", file=sys.stderr)
        return 2
    try:
        code, _ = run_diagnose(args.sampler, args.problem, n_samples=args.n_samples, seed=args.seed,
                               out=args.out, max_tv=args.max_tv, problem_seed=args.problem_seed)
    except SamplerError as err:
        print(f"fsdiag diagnose: {err}", file=sys.stderr)
        return 2
    except SamplerFailed as err:
        traceback.print_exception(err.__cause__)
        print(f"fsdiag diagnose: {err} (traceback above)", file=sys.stderr)
        return 3
    return code
