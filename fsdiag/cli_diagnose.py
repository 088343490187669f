"""`fsdiag diagnose SAMPLER`: run anyone's sampler on the exact denoiser of a problem and judge it.

SAMPLER is `package.module:function` or `path/to/file.py:function`, called as
`function(denoiser, problem, n_samples, generator)` and returning samples (n, d) or
(n, C, H, W): `denoiser` is `fsdiag.ExactDenoiser(problem.prior)` (D(x, sigma), variance
exploding), `problem` an `fsdiag.Problem` (y, A, noise level, image shape,
schedule helpers), `generator` a seeded torch.Generator.

The problem is one of:
  --problem NAME                 a built-in: three_atoms, gmm2d, digits_inpainting, digits_blur
  --problem module:function      your function (also file.py:function) returning an fsdiag.Problem
                                 (fsdiag.problems.custom) or a (prior, likelihood) pair; called with
                                 seed=--problem-seed when it takes a `seed` argument
  --atoms FILE --operator SPEC (--y FILE --noise STD | --truth-index K --noise STD)
                                 your files: atoms as .npy/.npz, an idx file, or a folder of PNGs /
                                 MNIST idx files / CIFAR-10 batches; --labels FILE (.npy, one integer
                                 per atom) names the modes; --image-shape C,H,W; SPEC is an operator
                                 with options (identity, inpaint:keep=0.5, blur:std=1.5,
                                 downsample:factor=2, fourier_magnitude, matrix:A.npy, mask:M.npy, ...);
                                 --truth-index K holds atom K out as the truth and simulates y with
                                 --problem-seed

--out DIR gets report.md, report.json and report.png, staged and swapped in whole. DIR must be
new, empty, or an earlier report of this command: a folder holding other files, or a file, is
refused (exit 2) unless --force (then this report's files are added beside the others).

Exit codes:
  0  judged, and within --max-tv (or no --max-tv given)
  1  judged, and the TV over modes is above --max-tv
  2  usage: a bad SAMPLER or --problem path or signature, samples of the wrong shape, a bad option
     or file, an output place that may not be written, a missing optional dependency
  3  the sampler raised, or called sys.exit
  4  an internal error of fsdiag (please report it)
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import torch

__all__ = ["add_parser", "load_function", "load_sampler", "build_problem", "run_diagnose", "UsageError",
           "SamplerError", "SamplerFailed", "EXIT_CODES"]

EXIT_CODES = {0: "judged, within --max-tv", 1: "TV over modes above --max-tv", 2: "usage error",
              3: "the sampler raised or called sys.exit", 4: "internal error"}
REPORT_FILES = ("report.md", "report.json", "report.png")
OWNER = "fsdiag diagnose"


_PIP_NAMES = {"sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow", "yaml": "pyyaml"}


def _install_hint(err: ImportError) -> str:
    """'this needs X: pip install Y' for a missing module X (Y its package's name on PyPI)."""
    name = (err.name or "a missing module").split(".")[0]
    return f"needs {name}: pip install {_PIP_NAMES.get(name, name)}"


class UsageError(Exception):
    """A bad option, path, file, signature or output place (exit code 2)."""


SamplerError = UsageError          # a SAMPLER that cannot be loaded or called as documented


class SamplerFailed(Exception):
    """The SAMPLER raised or called sys.exit while sampling (exit code 3)."""


# ------------------------------------------------------------------ loading the user's code
def load_function(spec: str, option: str = "SAMPLER"):
    """The callable named by 'package.module:function' or 'path/to/file.py:function'."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise UsageError(f"{option}: expected 'package.module:function' or 'file.py:function', got {spec!r}")
    where, name = spec.split(":")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise UsageError(f"{option}: no file {where!r}")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())          # as `python -m` would: modules next to you
            module = importlib.import_module(where)
    except UsageError:
        raise
    except BaseException as err:  # noqa: BLE001 - any import failure (SystemExit too) is the user's file's
        if isinstance(err, KeyboardInterrupt):
            raise
        raise UsageError(f"{option}: could not import {where!r}: {type(err).__name__}: {err}") from err
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise UsageError(f"{option}: {where!r} has no function {name!r}")
    return fn


def load_sampler(spec: str):
    """The SAMPLER function, checked to take (denoiser, problem, n_samples, generator)."""
    fn = load_function(spec, "SAMPLER")
    try:
        inspect.signature(fn).bind(None, None, 1, None)
    except TypeError as err:
        raise UsageError(f"SAMPLER: {spec} must take (denoiser, problem, n_samples, generator): {err}") from err
    except ValueError:
        pass   # builtins without a signature: let the call tell
    return fn


# ------------------------------------------------------------------ the problem
def _problem_from_function(spec: str, seed: int):
    from .likelihood import GaussianLikelihood
    from .prior import EmpiricalPrior
    from .problems import Problem

    fn = load_function(spec, "--problem")
    try:
        params = inspect.signature(fn).parameters
    except ValueError:
        params = {}
    try:
        out = fn(seed=seed) if "seed" in params else fn()
    except BaseException as err:  # noqa: BLE001 - the user's problem function failed: a usage error
        if isinstance(err, KeyboardInterrupt):
            raise
        traceback.print_exception(err)
        raise UsageError(f"--problem: {spec} raised {type(err).__name__}: {err} (traceback above)") from err
    if isinstance(out, Problem):
        return out
    if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], EmpiricalPrior) \
            and isinstance(out[1], GaussianLikelihood):
        return Problem(out[0], out[1], name=spec, description=f"the problem of {spec}")
    raise UsageError(f"--problem: {spec} must return an fsdiag.Problem (fsdiag.problems.custom) "
                     f"or a (prior, likelihood) pair, got {type(out).__name__}")


def _named(option: str, err: Exception) -> UsageError:
    """A loader's or checker's error, re-worded to name the command-line option."""
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    head, sep, rest = msg.partition(": ")
    if sep and " " not in head.strip():
        msg = rest                                     # "path: ..." -> "--atoms: ..."
    return UsageError(f"{option}: {msg}")


def _image_shape(text):
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--image-shape: expected C,H,W (e.g. 1,28,28), got {text!r}") from None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--image-shape: expected C,H,W with positive sizes, got {text!r}")
    return shape


def build_problem(args):
    """The Problem that the options describe (built-in, function, or files)."""
    from ._checks import did_you_mean
    from .operators import load_array
    from .problems import PROBLEMS, custom, held_out, load_atoms, make_problem

    files = [o for o in ("atoms", "labels", "operator", "y", "noise", "truth_index", "image_shape")
             if getattr(args, o, None) is not None]
    if args.problem is not None and files:
        raise UsageError(f"--problem: give either --problem or --atoms/--operator/..., not both "
                         f"(got --{files[0].replace('_', '-')})")
    if args.problem is not None:
        if ":" in args.problem:
            return _problem_from_function(args.problem, args.problem_seed)
        if args.problem not in PROBLEMS:
            raise UsageError(f"--problem: unknown problem {args.problem!r}{did_you_mean(args.problem, PROBLEMS)}; "
                             f"built-in: {', '.join(sorted(PROBLEMS))}, or module:function / file.py:function")
        try:
            return make_problem(args.problem, seed=args.problem_seed)
        except ImportError as err:
            raise UsageError(f"--problem: {args.problem} {_install_hint(err)}") from err
    if args.atoms is None:
        raise UsageError("--problem: give a problem: --problem NAME, --problem module:function, or your "
                         "files (--atoms FILE --operator SPEC --y FILE --noise STD)")
    for opt in ("operator", "noise"):
        if getattr(args, opt) is None:
            raise UsageError(f"--{opt}: required with --atoms")
    if (args.y is None) == (args.truth_index is None):
        raise UsageError("--y: give the measurement (--y FILE) or hold an atom out as the truth (--truth-index K)")
    shape = _image_shape(args.image_shape)
    if not (math.isfinite(args.noise) and args.noise > 0):
        raise UsageError(f"--noise: expected a positive noise standard deviation, got {args.noise}")
    try:
        data = load_atoms(args.atoms, image_shape=shape)
    except (ValueError, TypeError) as err:
        raise _named("--atoms", err) from None
    except ImportError as err:
        raise UsageError(f"--atoms: reading {args.atoms} {_install_hint(err)}") from None
    labels = None
    if args.labels is not None:
        try:
            labels = load_array(args.labels, "--labels").reshape(-1)
        except ValueError as err:
            raise UsageError(str(err)) from None
        if labels.shape[0] != len(data) or labels.dtype.kind not in "iu":
            raise UsageError(f"--labels: expected {len(data)} integers (one per atom), got {labels.dtype} "
                             f"of shape {labels.shape}")
    name = Path(args.atoms).name
    try:
        if args.truth_index is not None:
            return held_out(data, args.operator, args.noise, index=args.truth_index, seed=args.problem_seed,
                            labels=labels, image_shape=shape, name=name)
        try:
            y = load_array(args.y, "--y")
        except ValueError as err:
            raise UsageError(str(err)) from None
        return custom(data, args.operator, y, args.noise, labels=labels, image_shape=shape, name=name)
    except (ValueError, TypeError) as err:
        msg = str(err)
        for arg, opt in (("operator", "--operator"), ("truth_index", "--truth-index"), ("y", "--y"),
                         ("labels", "--labels"), ("image_shape", "--image-shape"), ("noise_std", "--noise"),
                         ("atoms", "--atoms"), ("seed", "--problem-seed")):
            if msg.startswith(arg + ":"):
                raise UsageError(opt + msg[len(arg):]) from None
        raise UsageError(f"--atoms: {msg}") from None


# ------------------------------------------------------------------ running and judging
def run_diagnose(spec: str, problem, *, n_samples: int = 256, seed: int = 0, out=None, force: bool = False,
                 max_tv: float | None = None, problem_seed: int = 0, stream=None) -> tuple[int, dict]:
    """Load, run and judge a sampler on `problem` (a Problem or a built-in's name); write
    the report to `out` (a folder). Returns (exit code 0 or 1, result); raises UsageError (2) or
    SamplerFailed (3)."""
    from .denoiser import ExactDenoiser
    from .evaluate import evaluate
    from .outputs import OutputError, Target
    from .problems import as_samples, make_problem

    stream = sys.stdout if stream is None else stream
    target = None
    if out is not None:
        try:
            target = Target(out, owner=OWNER, option="--out", force=force)
        except OutputError as err:
            raise UsageError(str(err)) from None
    fn = load_sampler(spec)
    if isinstance(problem, str):
        problem = make_problem(problem, seed=problem_seed)
    denoiser = ExactDenoiser(problem.prior)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    try:
        samples = fn(denoiser, problem, n_samples, gen)
    except BaseException as err:  # noqa: BLE001 - the user's code failed (sys.exit included)
        if isinstance(err, KeyboardInterrupt):
            raise
        what = (f"called sys.exit({err.code!r})" if isinstance(err, SystemExit)
                else f"raised {type(err).__name__}: {err}")
        raise SamplerFailed(f"the sampler {spec} {what}") from err
    wall = time.perf_counter() - start
    try:
        x = as_samples(samples.detach() if isinstance(samples, torch.Tensor) else samples, problem)
    except (TypeError, ValueError) as err:
        raise UsageError(f"SAMPLER: {spec} returned unusable samples: {err}") from err
    report = evaluate(x, problem.prior, problem.lik, method=spec, seed=seed)
    passed = max_tv is None or report.tv_modes <= max_tv
    result = {"sampler": spec, "problem": problem.name, "description": problem.description,
              "n_samples": int(x.shape[0]), "seed": seed, "problem_seed": problem_seed, "wall_time_s": wall,
              "max_tv": max_tv, "passed": passed, "report": report.to_dict()}
    text = markdown(result, report)
    _say(text, stream)
    if target is not None:
        _write_outputs(target, result, text, report, problem, x)
        _say(f"report written to {target.path} ({', '.join(REPORT_FILES)})", stream)
    return (0 if passed else 1), result


def _say(text: str, stream) -> None:
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:        # `fsdiag diagnose ... | head`: the reader left; the verdict stands
        pass


def markdown(result: dict, report) -> str:
    """The report as Markdown: the problem, the verdict, the measures beside their floors, the modes."""
    m, h = report.modes, report.hallucination
    verdict = ("" if result["max_tv"] is None else
               f"\n**{'PASS' if result['passed'] else 'FAIL'}**: TV over modes {report.tv_modes:.4f} "
               f"{'<=' if result['passed'] else '>'} --max-tv {result['max_tv']:g}\n")
    absent = set(map(str, h["absent_modes"]))
    lines = [f"# fsdiag diagnose: `{result['sampler']}` on `{result['problem']}`", "",
             f"{result['description']}. {result['n_samples']} samples, seed {result['seed']}, "
             f"wall time {result['wall_time_s']:.2f} s.", verdict,
             "| measure | sampler | exact draws (Monte Carlo floor: mean, 95%) |", "|---|---|---|",
             f"| TV over modes | {report.tv_modes:.4f} | {report.tv_floor_modes:.4f}, "
             f"{report.floor['modes']['q95']:.4f} |",
             f"| TV over atoms | {report.tv_atoms:.4f} | {report.tv_floor_atoms:.4f}, "
             f"{report.floor['atoms']['q95']:.4f} |",
             f"| mass on excluded modes (exact mass < 1e-3) | {h['prior_mode']:.4f} | 0 |",
             f"| mass outside the smallest set of modes holding {h['level']:.0%} of the exact mass | "
             f"{h['outside_support_modes']:.4f} | ≤ {1 - h['level']:.2f} |",
             f"| samples off the prior's support | {h['off_support']:.4f} | 0 |", "",
             f"A sample is off the support when it is farther than {h['radius']:.3g} from every atom "
             f"({h['radius_rule']}). Each sample counts for its nearest atom's mode.", "",
             "| mode | sampler mass [95% Wilson interval] | exact mass | |", "|---|---|---|---|"]
    for lab, s, lo, hi, e in zip(m["labels"], m["sampler"], m["lower"], m["upper"], m["exact"]):
        flag = "excluded" if str(lab) in absent else ("outside interval" if not lo <= e <= hi else "")
        lines.append(f"| {lab} | {s:.4f} [{lo:.4f}, {hi:.4f}] | {e:.4f} | {flag} |")
    return "\n".join(lines)


def _write_outputs(target, result: dict, text: str, report, problem, x) -> None:
    """report.md, report.json and report.png into a staging folder swapped in whole: the folder
    holds all three from one run, or what it held before."""
    from .book.pages import to_jsonable
    from .outputs import OutputError
    from .plots.report import report_figure

    try:
        stage = target.stage()
    except OutputError as err:
        raise UsageError(str(err)) from None
    try:
        (stage / "report.md").write_text(text + "\n")
        (stage / "report.json").write_text(json.dumps(to_jsonable(result), indent=2, sort_keys=True))
        fig = report_figure(report, problem, x)
        fig.savefig(stage / "report.png", bbox_inches="tight", dpi=120)
        import matplotlib.pyplot as plt
        plt.close(fig)
        target.publish(stage)
    except OutputError as err:
        raise UsageError(str(err)) from None
    finally:
        if stage.exists():
            import shutil
            shutil.rmtree(stage, ignore_errors=True)


# ------------------------------------------------------------------ command line
def add_parser(sub) -> None:
    p = sub.add_parser("diagnose", help="judge any sampler against the exact posterior",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sampler", metavar="SAMPLER", help="package.module:function or file.py:function")
    p.add_argument("--problem", help="a built-in name, or module:function / file.py:function")
    g = p.add_argument_group("your problem as files (instead of --problem)")
    g.add_argument("--atoms", metavar="FILE", help=".npy/.npz, idx, or a folder of PNGs / MNIST / CIFAR-10")
    g.add_argument("--labels", metavar="FILE", help=".npy of one integer per atom (the modes)")
    g.add_argument("--operator", metavar="SPEC", help="e.g. identity, inpaint:keep=0.5, blur:std=1.5, matrix:A.npy")
    g.add_argument("--y", metavar="FILE", help=".npy of the measurement")
    g.add_argument("--noise", type=float, metavar="STD", help="measurement noise standard deviation")
    g.add_argument("--truth-index", type=int, metavar="K", help="hold atom K out as the truth and simulate y")
    g.add_argument("--image-shape", metavar="C,H,W", help="the atoms' image shape")
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the generator passed to the sampler")
    p.add_argument("--problem-seed", type=int, default=0, help="seed of the problem (atoms, held-out truth, noise)")
    p.add_argument("--out", default=None, help="folder for report.md, report.json and report.png")
    p.add_argument("--force", action="store_true", help="write into an existing folder or over a file in --out")
    p.add_argument("--max-tv", type=float, default=None, help="exit 1 when TV over modes exceeds this")
    p.set_defaults(run=_main)


def _check_options(args) -> None:
    from ._checks import check_int
    for name in ("n_samples", "seed", "problem_seed"):
        try:
            check_int(getattr(args, name), name, minimum=1 if name == "n_samples" else 0)
        except (TypeError, ValueError) as err:
            raise UsageError(f"--{name.replace('_', '-')}: {str(err).partition(': ')[2]}") from None
    if args.max_tv is not None and not 0 <= args.max_tv <= 1:
        raise UsageError("--max-tv: expected a number in [0, 1]")


def _main(args) -> int:
    try:
        _check_options(args)
        problem = build_problem(args)
        code, _ = run_diagnose(args.sampler, problem, n_samples=args.n_samples, seed=args.seed, out=args.out,
                               force=args.force, max_tv=args.max_tv, problem_seed=args.problem_seed)
        return code
    except UsageError as err:
        print(f"fsdiag diagnose: {err}", file=sys.stderr)
        return 2
    except SamplerFailed as err:
        traceback.print_exception(err.__cause__)
        print(f"fsdiag diagnose: {err} (traceback above)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        raise
    except ImportError as err:
        print(f"fsdiag diagnose: this {_install_hint(err)}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - a bug of fsdiag's: say so, never pass it off as a verdict
        traceback.print_exc()
        print("fsdiag diagnose: internal error (traceback above); please report it with the command you ran "
              "to the fsdiag issue tracker", file=sys.stderr)
        return 4
