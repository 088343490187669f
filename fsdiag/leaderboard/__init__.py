"""The exact-posterior leaderboard: every registered diffusion posterior sampler, and yours,
ranked against the exact posterior at equal budgets of denoiser evaluations.

- `entries`: the samplers (`ENTRIES`), a user's (`--add`, the `fsdiag.samplers` entry points),
  the budget calibration;
- `thirdparty`: deepinv's samplers and diffusers' schedulers, registered where installed;
- `cells`: profiles, one cell per sampler x problem x budget x seed, running and judging a cell;
- `tables`: results.csv and the ranking (leaderboard.md / .json);
- `thirdparty`: deepinv's samplers and diffusers' schedulers, registered where those are installed;
- `board`: `leaderboard(...)`, the batch (`fsdiag leaderboard`). See docs/design.md §5.7.
"""
from .board import leaderboard
from .cells import PROFILES, Cell, run_cell
from .entries import ENTRIES, Entry, user_entry

__all__ = ["leaderboard", "PROFILES", "Cell", "run_cell", "ENTRIES", "Entry", "user_entry"]
