import math

import pytest
import torch

import fsdiag


def test_vp_schedule_closed_form():
    s = fsdiag.VPSchedule()
    for t in (1e-4, 0.01, 0.3, 1.0):
        assert s.alpha_bar(t) == pytest.approx(math.exp(-0.01 * t - 0.5 * 19.99 * t * t), rel=1e-14)
        # beta(t) = -d log abar / dt
        h = 1e-6
        fd = -(math.log(s.alpha_bar(t + h)) - math.log(s.alpha_bar(t - h))) / (2 * h)
        assert s.beta(t) == pytest.approx(fd, rel=1e-6)
    grid = s.time_grid(500, 1e-2)
    assert grid.shape == (501,) and grid[0] == 1.0 and grid[-1] == pytest.approx(1e-2)
    assert torch.allclose(grid[:-1] - grid[1:], torch.full((500,), (1 - 1e-2) / 500, dtype=torch.float64))


def test_ddpm_schedule_matches_the_cumulative_product():
    s = fsdiag.DDPMSchedule()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    for k in (1, 10, 500, 1000):
        assert s.alpha_bar(k / 1000) == pytest.approx(float(abar[k - 1]), rel=1e-12)
    grid = s.time_grid(250)
    assert grid.shape == (251,) and grid[0] == 1.0 and grid[-1] == 0.0 and grid[1] == pytest.approx(0.996)
