"""The fsdiag command line.

`fsdiag demo`: each method's mass per atom on the paper's three-atom testbed.
`fsdiag diagnose SAMPLER --problem NAME`: judge any sampler against the exact posterior.
`fsdiag regenerate --profile NAME`: execute the book's notebooks in batch (locally or on Dask).
`fsdiag book --from DIR`: build the website from a regeneration run.
`fsdiag leaderboard --profile NAME`: rank every sampler (and yours) against the exact posterior.
"""
from __future__ import annotations

import argparse
import sys

from .cli_diagnose import add_parser as add_diagnose_parser
from .book.cli import add_parsers as add_regenerate_parsers
from .leaderboard.cli import add_parser as add_leaderboard_parser

from . import METHODS, VPSchedule, posterior_weights, sample, sample_exact
from .diagnostics import atom_mass, wilson_interval
from .testbeds import PAPER_METHOD_PARAMS, three_atoms


def demo(n_particles: int = 4096, n_steps: int = 500, seed: int = 42, progress: bool = False) -> dict:
    """Atoms {-1.8, 0.2, 2.2}, identity model, noise 0.3, y = -1.8 (docs/design.md §6, claim 6)."""
    prior, lik = three_atoms()
    atoms = prior.atoms
    abar = VPSchedule().alpha_bar(1e-2)
    rows = {"exact posterior": posterior_weights(prior, lik)}
    rows["exact sampler"] = atom_mass(prior, sample_exact(prior, lik, n_particles=n_particles, n_steps=n_steps,
                                                          seed=seed, progress=progress).samples, abar)
    for name in METHODS:
        run = sample(prior, lik, method=name, n_particles=n_particles, n_steps=n_steps, seed=seed,
                     progress=progress, **PAPER_METHOD_PARAMS.get(name, {}))
        rows[name] = atom_mass(prior, run.samples, abar)
    print(f"three-atom testbed, {n_particles} particles, {n_steps} Euler-Maruyama steps, t_min = 0.01")
    print(f"{'':18}" + "".join(f"{f'x = {float(a):+.1f}':>22}" for a in atoms[:, 0]))
    for name, mass in rows.items():
        cells = []
        for k, p in enumerate(mass.tolist()):
            if name == "exact posterior":
                cells.append(f"{p:>22.3g}")
            else:
                lo, hi = wilson_interval(round(p * n_particles), n_particles)
                cells.append(f"{f'{p:.4f} [{float(lo):.3f},{float(hi):.3f}]':>22}")
        print(f"{name:18}" + "".join(cells))
    return {k: v.tolist() for k, v in rows.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fsdiag", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="mass per atom of every method on the three-atom testbed")
    d.add_argument("--n-particles", type=int, default=4096)
    d.add_argument("--n-steps", type=int, default=500)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--progress", action="store_true")
    add_diagnose_parser(sub)
    add_regenerate_parsers(sub)
    add_leaderboard_parser(sub)
    args = parser.parse_args(argv)
    if args.command in ("diagnose", "regenerate", "book", "leaderboard"):
        return args.run(args)
    demo(args.n_particles, args.n_steps, args.seed, args.progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
