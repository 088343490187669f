"""The command lines of the book wing: `fsdiag regenerate` and `fsdiag book --from`."""
from __future__ import annotations

import sys

from . import regenerate as _regenerate_module
from .regenerate import PROFILES, missing_dependencies, regenerate
from .site import build_book_from

__all__ = ["add_parsers"]


# ------------------------------------------------------------------ command line
def add_parsers(sub) -> None:
    import argparse
    p = sub.add_parser("regenerate", help="execute the book's notebooks in batch under a profile",
                       description=_regenerate_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu", help="a profile of notebooks/profiles.yml (ci, cpu, gpu, paper)")
    p.add_argument("--only", nargs="+", metavar="NB", help="only these notebooks (e.g. 05 or 05_mode_reweighting)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, default=1, help="runs in parallel on this machine")
    where.add_argument("--scheduler", help="a Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--dask", choices=["local"], help="run on a dask.distributed.LocalCluster of --jobs workers")
    p.add_argument("--out", default="runs", help="output folder, relative to the working directory (default ./runs); "
                                                 "the runs go to OUT/<profile>/")
    p.add_argument("--force", action="store_true", help="rerun runs that already finished")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing OUT/<profile> that fsdiag regenerate did not write (refused "
                        "otherwise); its other files are kept")
    p.add_argument("--profiles", default=str(PROFILES), help=argparse.SUPPRESS)
    p.set_defaults(run=_main_regenerate)
    b = sub.add_parser("book", help="build the website from a regeneration run, executing nothing",
                       description="Build the website from the executed notebooks of `fsdiag regenerate` "
                                   "(nothing is executed). Exit codes: 0 built; 1 the build failed; 2 a usage "
                                   "error (no DIR, a --site that may not be written, missing dependencies). "
                                   'Needs the book\'s dependencies: pip install "fsdiag[book]".')
    b.add_argument("--from", dest="runs_dir", required=True, metavar="DIR", help="OUT/<profile> of fsdiag regenerate")
    b.add_argument("--site", default=None,
                   help="where the html goes (default DIR/_site): a new or empty folder, or one an earlier "
                        "fsdiag book wrote (replaced whole)")
    b.set_defaults(run=_main_book)


def _missing_line(command: str, missing: list[str]) -> str:
    return (f"fsdiag {command}: needs the book's dependencies, missing here: {', '.join(missing)}; "
            'install fsdiag[book] (pip install "fsdiag[book]")')


def _main_regenerate(args) -> int:
    missing = missing_dependencies("regenerate")
    if args.dask == "local" or args.scheduler is not None:
        missing += missing_dependencies("regenerate --dask")
    if missing:
        print(_missing_line("regenerate", missing), file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("fsdiag regenerate: --jobs: expected a positive integer", file=sys.stderr)
        return 2
    scheduler = "local" if args.dask == "local" else args.scheduler
    try:
        code, _ = regenerate(args.profile, only=args.only, jobs=args.jobs, scheduler=scheduler, out=args.out,
                             force=args.force, overwrite=args.overwrite, profiles_file=args.profiles)
    except ValueError as err:
        print(f"fsdiag regenerate: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"fsdiag regenerate: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return code


def _main_book(args) -> int:
    missing = missing_dependencies("book")
    if missing:
        print(_missing_line("book", missing), file=sys.stderr)
        return 2
    try:
        build_book_from(args.runs_dir, site=args.site)
    except ValueError as err:
        print(f"fsdiag book: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:
        print(f"fsdiag book: {err}", file=sys.stderr)
        return 1
    return 0
