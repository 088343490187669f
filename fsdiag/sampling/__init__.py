"""fsdiag's samplers, each a plain function over a schedule's time grid with one shared signature
(`registry`), returning a `Run`:

- `guidance.sample`: the reverse VP-SDE (or DDPM) guided by a likelihood approximation
  (`fsdiag.METHODS`: the FSR itself, sigma-/zeta-DPS, PiGDM, TMPD, original DPS, ...);
- `exact.sample_exact`: the exact ancestral sampler of the finite-sample reference;
- `tds.tds`, `mcgdiff.mcgdiff` / `mcgdiff_lite`: sequential Monte Carlo (asymptotically exact);
- `daps.daps`: decoupled annealing;
- `reddiff.reddiff` (variational), `ddnm.ddnm` (range-null decomposition), `pnpdm.pnpdm` (split Gibbs),
  `lgd.lgd_mc` (Monte Carlo loss guidance).

Shared parts: `steps` (one step function per discretisation), `common` (set-up, the `record` rule,
particle checks), `resampling` (SMC weights), `counting.CountingPrior` (denoiser evaluations).
`SAMPLERS` holds every sampler by name.
"""
from .counting import CountingPrior, count_evaluations
from .registry import SAMPLERS, register_sampler
from .run import Run
from .guidance import sample
from .exact import sample_exact
from .tds import tds
from .mcgdiff import mcgdiff, mcgdiff_lite, release_indices
from .daps import daps
from .reddiff import reddiff
from .ddnm import ddnm
from .pnpdm import pnpdm
from .lgd import lgd_mc
from .resampling import (RESAMPLING_SCHEMES, effective_sample_size, multinomial_resample, normalise, resample,
                         resample_if_degenerate, systematic_resample)

register_sampler(sample, small_on_one_thread=False)
register_sampler(sample_exact, name="exact", small_on_one_thread=False)

__all__ = ["Run", "SAMPLERS", "register_sampler", "CountingPrior", "count_evaluations", "sample", "sample_exact",
           "tds", "mcgdiff", "mcgdiff_lite", "release_indices", "daps", "reddiff", "ddnm", "pnpdm", "lgd_mc",
           "RESAMPLING_SCHEMES", "effective_sample_size", "multinomial_resample", "normalise", "resample",
           "resample_if_degenerate", "systematic_resample"]
