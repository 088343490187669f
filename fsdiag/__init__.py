"""fsdiag: finite-sample diagnostics for diffusion posterior samplers.

Companion to Burns & Fridovich-Keil (2026), "When, why, and how do diffusion
posterior samplers fail? A finite-sample lens".
"""
from . import forward, methods, testbeds
from . import data, imaging
from .denoiser import ExactDenoiser
from .posterior import posterior_weights
from .evaluate import Report, diagnose, evaluate
from .likelihood import GaussianLikelihood
from .methods import METHODS, Approximation, Guidance, register
from .problems import Problem
from .original_dps import OriginalDPS
from .prior import EmpiricalPrior
from .sampling import SAMPLERS, CountingPrior, Run, sample, sample_exact
from .schedules import DDPMSchedule, VPSchedule
from . import sampling

__version__ = "0.1.0"

__all__ = ["EmpiricalPrior", "ExactDenoiser", "GaussianLikelihood", "VPSchedule", "DDPMSchedule",
           "sample",
           "sample_exact", "Run", "posterior_weights", "diagnose", "evaluate", "Report", "METHODS",
           "Approximation", "Guidance", "Problem", "register", "forward", "methods", "testbeds",
           "OriginalDPS", "sampling", "SAMPLERS", "CountingPrior"]
