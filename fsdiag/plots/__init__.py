"""Figures from diagnostics' outputs. Functions here take reports, metrics and arrays and return a
matplotlib figure; nothing here runs a sampler. matplotlib is imported when a function is called.

Submodules group the figures by topic: `trajectories` (convergence, heatmaps, spread, early
stopping), `minimal` (chapter 7's minimal cause), `modes` (mode weights, hallucination,
diagnosing a sampler, deepinv), `exactness` (SMC and DAPS against compute), `leaderboard` (the
leaderboard), `conventions`, `networks` (a trained denoiser's share of the error), `images`
(imaging inverse problems) and `report` (`fsdiag diagnose`'s figure)."""
from . import conventions, exactness, images, leaderboard, minimal, modes, networks, report, trajectories
from ._common import *  # noqa: F401,F403
from ._common import __all__ as _common_all
from .conventions import *  # noqa: F401,F403
from .exactness import *  # noqa: F401,F403
from .images import *  # noqa: F401,F403
from .leaderboard import *  # noqa: F401,F403
from .minimal import *  # noqa: F401,F403
from .modes import *  # noqa: F401,F403
from .networks import *  # noqa: F401,F403
from .report import *  # noqa: F401,F403
from .trajectories import *  # noqa: F401,F403

__all__ = [*_common_all, *conventions.__all__, *exactness.__all__, *images.__all__, *leaderboard.__all__,
           *minimal.__all__, *modes.__all__, *networks.__all__, *report.__all__, *trajectories.__all__]
