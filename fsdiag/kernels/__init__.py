"""fsdiag's engine: the streamed passes over atoms behind one small public seam.

- `store`: `AtomStore`, the atoms as the passes see them (centred chunks, weights, buffers);
- `streamed`: the passes from torch ops (the one softmax pass, the covariance pass, atom draws);
- `fused`: the fused attention route for the softmax pass and its one-time self-check;
- `nearest`: the one exact nearest-atom search;
- `engine`: `Engine`, the seam every prior and consumer calls (reduce, cov, best, nearest, ...).

Priors (`EmpiricalPrior`, `ShardedPrior`) hold an engine; the denoiser and the judge call it.
Extending the engine (another kind of shard, another device) means implementing `Engine`'s
public methods, nothing private.
"""
from .engine import ROUTES, Engine, check_result
from .nearest import Nearest, group_shares
from .store import AtomStore

__all__ = ["AtomStore", "Engine", "Nearest", "ROUTES", "check_result", "group_shares"]
