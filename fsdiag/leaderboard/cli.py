"""The `fsdiag leaderboard` command line."""
from __future__ import annotations

import sys

from .cells import PROFILES

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    from . import board

    p = sub.add_parser("leaderboard", help="rank every sampler (and yours) against the exact posterior",
                       description=board.__doc__)
    sizes = "; ".join(f"{name}: {spec['description']}" for name, spec in PROFILES.items())
    p.add_argument("--profile", default="ci", help=f"sizes ({sizes})")
    p.add_argument("--samplers", nargs="+", help="only these built-in samplers (default: all)")
    p.add_argument("--problems", nargs="+", help="only these problems (default: the profile's)")
    p.add_argument("--add", nargs="+", default=[], metavar="FILE.py:FN",
                   help="your samplers, fn(denoiser, problem, n_samples, generator[, budget]) as for "
                        "`fsdiag diagnose`; NAME=FILE.py:FN names one")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--jobs", type=int, default=1, help="cells in parallel on this machine")
    g.add_argument("--scheduler", help="a Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--dask", choices=["local"], help="run on a dask.distributed.LocalCluster of --jobs workers")
    p.add_argument("--out", default="leaderboard", help="output folder, relative to the working directory")
    p.add_argument("--force", action="store_true", help="rerun finished cells")
    p.add_argument("--overwrite", action="store_true", help="write into a folder this command did not write")
    p.set_defaults(run=_main)


def _main(args) -> int:
    from ..cli_diagnose import UsageError
    from .board import leaderboard

    try:
        code, _ = leaderboard(args.profile, samplers=args.samplers, problems=args.problems, add=args.add,
                              jobs=args.jobs, scheduler=args.scheduler or args.dask, out=args.out,
                              force=args.force, overwrite=args.overwrite)
    except (ValueError, UsageError) as err:
        print(f"fsdiag leaderboard: {err}", file=sys.stderr)
        return 2
    return code
