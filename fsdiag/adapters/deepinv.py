"""DeepInverse (deepinv 0.5) against the exact posterior: the only module that imports deepinv.

Three pieces, so that deepinv's own samplers, unchanged, can be judged by `fsdiag.evaluate`:

- `from_physics(physics, img_shape)`: a deepinv `Physics` as an fsdiag forward model, so the
  exact posterior (`fsdiag.GaussianLikelihood`, `fsdiag.posterior_weights`) uses the very
  operator the sampler uses; `likelihood(physics, y, img_shape)` adds its Gaussian noise level.
- The exact denoiser: `fsdiag.ExactDenoiser(prior)` already has deepinv's denoiser signature
  `forward(x, sigma)` on (B, C, H, W) images, so it goes wherever deepinv takes a denoiser.
  Convention: deepinv images live in [0, 1], so the atoms are stored in [0, 1] too; nothing
  is rescaled anywhere.
- `run(name, denoiser, physics, y, n=...)`: one of deepinv's samplers (`SAMPLERS`) at given
  settings, n independent samples (n, d) and the wall time. `SETTINGS[name]` holds each
  sampler's documented defaults and the settings its paper recommends.
- The other way round, `to_physics(forward, image_shape, noise_std)`: an fsdiag linear operator
  as a deepinv physics (deepinv's `Inpainting` for a pixel mask; `svd=True`: the SVD of the
  operator's matrix as a `DecomposablePhysics`, for DDRM), `to_measurement` its y, and
  `problem_physics(problem)` both for a built-in problem (the leaderboard's deepinv entries).

`import fsdiag` never imports deepinv (`pip install "fsdiag[deepinv]"`, see the Makefile's
`deepinv` target for a CPU-only torch).
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..forward import ForwardModel, LinearForwardModel
from ..likelihood import GaussianLikelihood
from ..registry import Registry

__all__ = ["import_deepinv", "from_physics", "likelihood", "PhysicsForward", "LinearPhysicsForward", "to_physics",
           "to_measurement", "problem_physics",
           "SAMPLERS", "SETTINGS", "SETTINGS_NOTES", "settings_for", "SamplerRun", "run"]

_TORCHVISION_LIB = None


def import_deepinv():
    """`import deepinv`, made to work beside a CPU-only torch.

    deepinv imports torchvision at its top level. PyPI's Linux torchvision wheels are CUDA
    builds: next to a CPU torch their compiled operators (`_C.so`, linked to libtorch_cuda)
    do not load, which torchvision tolerates except for two unconditional fake-kernel
    registrations (`torchvision::nms`, `torchvision::qnms`) that then fail at import. When
    the compiled operators do not load, we declare those two operator schemas (no kernels)
    so the import goes through; nothing deepinv's samplers or operators call uses them, and
    calling torchvision's nms would raise. With a matching torchvision this does nothing.
    """
    global _TORCHVISION_LIB
    try:
        import deepinv
        return deepinv
    except RuntimeError as err:  # only the failure described above is handled
        if "torchvision::nms" not in str(err):
            raise
    spec = importlib.util.find_spec("torchvision")
    compiled = sorted(Path(spec.submodule_search_locations[0]).glob("_C.*"))
    try:
        torch.ops.load_library(str(compiled[0]))
    except (IndexError, OSError):
        if _TORCHVISION_LIB is None:
            lib = torch.library.Library("torchvision", "FRAGMENT")
            for op in ("nms", "qnms"):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _TORCHVISION_LIB = lib  # the schemas live as long as this object
    import deepinv
    return deepinv


# ------------------------------------------------------------------ the operator
def _physics_dtype(physics) -> torch.dtype:
    """The floating dtype of the physics' own tensors (deepinv builds them in float32)."""
    for t in list(physics.buffers()) + list(physics.parameters()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


class PhysicsForward(ForwardModel):
    """A deepinv `Physics` on (B, d) rows of flattened images of shape `img_shape`.

    A is evaluated by the physics itself, in the physics' dtype (inputs are cast, outputs
    cast back), so it is the sampler's operator to the last bit; `vjp` differentiates it.
    """

    name = "deepinv"

    def __init__(self, physics, img_shape):
        self.physics = physics
        self.img_shape = tuple(int(s) for s in img_shape)
        if len(self.img_shape) != 3 or min(self.img_shape) < 1:
            raise ValueError(f"img_shape: expected (C, H, W) with positive sizes, got {img_shape!r}")
        self.dtype = _physics_dtype(physics)
        self.device = next((t.device for t in physics.buffers()), torch.device("cpu"))
        with torch.no_grad():
            probe = physics.A(torch.zeros(1, *self.img_shape, dtype=self.dtype, device=self.device))
        self.y_shape = tuple(probe.shape[1:])

    @property
    def d(self) -> int:
        return math.prod(self.img_shape)

    def out_dim(self, d):
        if d != self.d:
            raise ValueError(f"x: this physics acts on images {self.img_shape} (d = {self.d}), got d = {d}")
        return math.prod(self.y_shape)

    def _images(self, x):
        self._check_x(x)
        self.out_dim(x.shape[1])
        return x.reshape(x.shape[0], *self.img_shape).to(dtype=self.dtype, device=self.device)

    def __call__(self, x):
        return self.physics.A(self._images(x)).reshape(x.shape[0], -1).to(dtype=x.dtype, device=x.device)

    def vjp(self, x, v):
        _, pullback = torch.func.vjp(self.physics.A, self._images(x))
        out = pullback(v.reshape(v.shape[0], *self.y_shape).to(dtype=self.dtype, device=self.device))[0]
        return out.reshape(x.shape[0], -1).to(dtype=x.dtype, device=x.device)

    def __repr__(self):
        return f"{type(self).__name__}({type(self.physics).__name__}, img_shape={self.img_shape})"


class LinearPhysicsForward(PhysicsForward, LinearForwardModel):
    """A linear deepinv `Physics`: J^T v is the physics' own `A_adjoint`, and the matrix is A
    applied to the identity (for small images)."""

    def vjp(self, x, v):
        self.out_dim(x.shape[1])
        u = v.reshape(v.shape[0], *self.y_shape).to(dtype=self.dtype, device=self.device)
        return self.physics.A_adjoint(u).reshape(v.shape[0], -1).to(dtype=x.dtype, device=x.device)

    def matrix_for(self, d, dtype=torch.float64, device=None, *, max_dim: int = 4096):
        """The (m, d) matrix of A, column j = A e_j, in the physics' dtype then cast."""
        self.out_dim(d)
        if d > max_dim:
            raise ValueError(f"d: building the matrix of A needs d <= max_dim = {max_dim}, got d = {d}")
        eye = torch.eye(d, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cols = torch.cat([self.physics.A(eye[s:s + 256].reshape(-1, *self.img_shape)).reshape(-1, self.out_dim(d))
                              for s in range(0, d, 256)])
        return cols.T.to(dtype=dtype, device=device)


def from_physics(physics, img_shape) -> PhysicsForward:
    """The fsdiag forward model of a deepinv `Physics` (linear ones get the adjoint and matrix)."""
    dinv = import_deepinv()
    if not isinstance(physics, dinv.physics.Physics):
        raise TypeError(f"physics: expected a deepinv.physics.Physics, got {type(physics).__name__}")
    cls = LinearPhysicsForward if isinstance(physics, dinv.physics.LinearPhysics) else PhysicsForward
    return cls(physics, img_shape)


def likelihood(physics, y, img_shape) -> GaussianLikelihood:
    """The exact Gaussian likelihood p(y | x) of one measurement y under `physics`, whose
    noise model must be deepinv's `GaussianNoise` (its sigma is the noise level)."""
    dinv = import_deepinv()
    noise = getattr(physics, "noise_model", None)
    if not isinstance(noise, dinv.physics.GaussianNoise):
        raise ValueError(f"physics: expected a deepinv.physics.GaussianNoise noise model, got {type(noise).__name__}")
    y = torch.as_tensor(y)
    if y.ndim == 4:
        if y.shape[0] != 1:
            raise ValueError(f"y: expected one measurement, got a batch of {y.shape[0]}")
        y = y[0]
    return GaussianLikelihood(from_physics(physics, img_shape), y.reshape(-1).double(), float(noise.sigma))


# ------------------------------------------------------------------ fsdiag's operator as a physics
class _Linear(torch.autograd.Function):
    """M w on rows with the adjoint M^T as its derivative (and the other way round): exact
    gradients for deepinv's autograd-based samplers whatever the operator's own code does."""

    @staticmethod
    def forward(ctx, w, forward, d, adjoint):
        ctx.op, ctx.d, ctx.adjoint = forward, d, adjoint
        return forward.apply_At(w, d) if adjoint else forward.apply_A(w)

    @staticmethod
    def backward(ctx, g):
        return _Linear.apply(g, ctx.op, ctx.d, not ctx.adjoint), None, None, None


def _pixel_mask(forward, d: int):
    """The (d,) boolean mask of an fsdiag pixel mask (`Mask`, `imaging.PixelMask`), else None."""
    from ..forward import Mask
    from ..imaging import PixelMask

    if isinstance(forward, (Mask, PixelMask)):
        return forward.mask.reshape(-1).cpu().bool() if forward.mask.numel() == d else None
    return None


def _svd_physics(dinv, forward, shape, noise, device, dtype):
    """A DecomposablePhysics U diag(s) V^T of the operator's dense matrix (small d): DDRM's form."""
    d = math.prod(shape)
    U, s, Vh = torch.linalg.svd(forward.dense(d, torch.float64), full_matrices=True)   # Vh (d, d)
    r = s.shape[0]
    U, Vh = U[:, :r].to(device=device, dtype=dtype), Vh.to(device=device, dtype=dtype)
    mask = torch.zeros(d, dtype=dtype, device=device)
    mask[:r] = s.to(dtype)

    class SVDPhysics(dinv.physics.DecomposablePhysics):
        def V_adjoint(self, x):
            return (x.reshape(x.shape[0], d) @ Vh.T.to(x.dtype)).reshape(x.shape[0], *shape)

        def V(self, z):
            return (z.reshape(z.shape[0], d) @ Vh.to(z.dtype)).reshape(z.shape[0], *shape)

        def U(self, z):
            return z.reshape(z.shape[0], d)[:, :r] @ U.T.to(z.dtype)

        def U_adjoint(self, y):
            out = y.new_zeros(y.shape[0], d)
            out[:, :r] = y.reshape(y.shape[0], -1) @ U.to(y.dtype)
            return out.reshape(y.shape[0], *shape)

    return SVDPhysics(mask=mask.reshape(1, *shape), img_size=shape, noise_model=noise, device=device).to(dtype)


def to_physics(forward, image_shape, noise_std: float, *, device="cpu", dtype=torch.float32, svd: bool = False):
    """A deepinv LinearPhysics of an fsdiag linear forward model on images `image_shape` (C, H, W),
    with deepinv's `GaussianNoise(noise_std)`:

    - a pixel mask (`fsdiag.forward.Mask`, `fsdiag.imaging.PixelMask`): deepinv's `Inpainting`
      (a DecomposablePhysics, so DDRM runs), y images (B, C, H, W) zero where unobserved;
    - `svd=True`: a DecomposablePhysics of the dense matrix's SVD (small d; DDRM runs on it);
    - otherwise: A and A_adjoint are the operator's own `apply_A` / `apply_At` on the flattened
      images, y rows (B, m) (the operator's bias, if any, goes into `to_measurement`'s y).
    Build the matching y with `to_measurement` (or both at once: `problem_physics`)."""
    from ..forward import LinearForwardModel

    dinv = import_deepinv()
    if not isinstance(forward, LinearForwardModel):
        raise TypeError(f"forward: expected a linear fsdiag forward model, got {forward!r}")
    shape = tuple(int(s) for s in image_shape)
    d = math.prod(shape)
    forward.out_dim(d)
    noise = dinv.physics.GaussianNoise(sigma=torch.tensor(float(noise_std), dtype=dtype, device=device))
    mask = _pixel_mask(forward, d)
    if mask is not None:
        return dinv.physics.Inpainting(img_size=shape, mask=mask.reshape(shape).to(dtype), noise_model=noise,
                                       device=device).to(dtype)
    if svd:
        return _svd_physics(dinv, forward, shape, noise, device, dtype)

    def A(x, **kwargs):
        return _Linear.apply(x.reshape(x.shape[0], d), forward, d, False)

    def A_adjoint(y, **kwargs):
        return _Linear.apply(y.reshape(y.shape[0], -1), forward, d, True).reshape(y.shape[0], *shape)

    return dinv.physics.LinearPhysics(A=A, A_adjoint=A_adjoint, img_size=shape, noise_model=noise,
                                      device=device).to(dtype)


def to_measurement(forward, y, image_shape, *, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """fsdiag measurements y ((m,) or rows (B, m), of A(x) = M x + c) as `to_physics`'s physics
    sees them: images (B, C, H, W) for a pixel mask, else rows (B, m) of y - c."""
    shape = tuple(int(s) for s in image_shape)
    d = math.prod(shape)
    y = torch.as_tensor(y)
    y = y.reshape(1, -1) if y.ndim == 1 else y
    mask = _pixel_mask(forward, d)
    if mask is not None:
        out = y.new_zeros(y.shape[0], d, dtype=torch.float64)
        out[:, mask] = y.to(torch.float64)
        return out.reshape(y.shape[0], *shape).to(device=device, dtype=dtype)
    c = forward.offset(d, torch.float64)
    y = y.to(torch.float64)
    return (y if c is None else y - c).to(device=device, dtype=dtype)


def problem_physics(problem, *, device="cpu", dtype=torch.float32, svd: bool = False):
    """(physics, y) of an fsdiag image problem with a linear operator and one noise level."""
    if problem.image_shape is None:
        raise ValueError(f"problem: {problem.name} is not an image problem (image_shape is None)")
    std = problem.lik.noise_std
    if not bool((std == std[0]).all()):
        raise ValueError("problem: deepinv's GaussianNoise has one noise level; this likelihood has several")
    physics = to_physics(problem.forward, problem.image_shape, float(std[0]), device=device, dtype=dtype, svd=svd)
    return physics, to_measurement(problem.forward, problem.lik.y, problem.image_shape, device=device, dtype=dtype)


# ------------------------------------------------------------------ deepinv's samplers
def _diffusion_solver(dinv, solver, num_steps, dtype):
    """The solver deepinv's DPS class builds from a name (the same time grids)."""
    names = {"ancestral": (dinv.sampling.AncestralSolver, 0.0), "ddpm": (dinv.sampling.DDPMSolver, 0.0),
             "ddim": (dinv.sampling.DDIMSolver, 0.0), "euler": (dinv.sampling.EulerSolver, 1e-3)}
    if solver not in names:
        raise ValueError(f"solver: expected one of {sorted(names)}, got {solver!r}")
    cls, t_end = names[solver]
    return cls(timesteps=torch.linspace(1, t_end, num_steps, dtype=dtype))


def _posterior_diffusion(fidelity):
    def build(dinv, denoiser, physics, *, num_steps=1000, solver="ddpm", alpha=1.0, **fid):
        data_fidelity = getattr(dinv.sampling, fidelity)(**fid)
        sde = dinv.sampling.VariancePreservingDiffusion(alpha=alpha, dtype=torch.float64)
        model = dinv.sampling.PosteriorDiffusion(
            data_fidelity=data_fidelity, denoiser=denoiser, sde=sde,
            solver=_diffusion_solver(dinv, solver, num_steps, torch.float64), dtype=torch.float64)
        return lambda y: model(y, physics)
    build.fidelity = fidelity
    build.extra = ("num_steps", "solver", "alpha")
    return build


def _dps(dinv, denoiser, physics, **settings):
    model = dinv.sampling.DPS(denoiser, **settings)
    return lambda y: model(y, physics)


def _diffpir(dinv, denoiser, physics, **settings):
    model = dinv.sampling.DiffPIR(denoiser, dinv.optim.data_fidelity.L2(), **settings)
    return lambda y: model(y, physics)


def _ddrm(dinv, denoiser, physics, *, num_steps=100, **settings):
    import numpy as np
    model = dinv.sampling.DDRM(denoiser, sigmas=np.linspace(1, 0, num_steps), **settings)
    return lambda y: model(y, physics)


def _langevin(cls_name):
    def build(dinv, denoiser, physics, **settings):
        # Negative log-likelihood ||Ax - y||^2 / (2 sigma_y^2): the exact one for Gaussian noise.
        fidelity = dinv.optim.data_fidelity.L2(sigma=float(physics.noise_model.sigma))
        chain = getattr(dinv.sampling, cls_name)(dinv.optim.ScorePrior(denoiser), fidelity,
                                                 save_chain=True, **settings)

        def sample(y):
            # One chain per row of y; each returns its last state (a draw once the chain has mixed).
            chain.sample(y, physics)
            return chain.get_chain()[-1]["x"]
        return sample
    build.cls = cls_name
    return build


SAMPLERS = Registry("deepinv sampler", {
    "DPS": _dps,
    "DiffPIR": _diffpir,
    "DDRM": _ddrm,
    "PD-DPS": _posterior_diffusion("DPSDataFidelity"),
    "PD-PiGDM": _posterior_diffusion("PiGDMDataFidelity"),
    "PD-MM": _posterior_diffusion("MomentMatchingDataFidelity"),
    "ULA": _langevin("ULA"),
    "SKRock": _langevin("SKRock"),
})

_DDPM_MEAN_BETA = 0.5 * (0.1 + 20.0) / 1000  # deepinv's VP SDE over 1000 steps: beta_i = beta(t) dt


def _langevin_step(noise_std: float, sigma: float) -> float:
    """1 / (L_y + L / sigma^2): the Lipschitz bound of ULA/SKRock's docstrings for ||A|| <= 1."""
    return 1.0 / (1.0 / noise_std ** 2 + 1.0 / sigma ** 2)


def settings_for(name: str, which: str, *, noise_std: float) -> dict:
    """Settings of sampler `name`: `which` = "defaults" (deepinv's documented constructor
    defaults; {} except where deepinv has none) or "paper" (what its paper recommends,
    translated to deepinv's parameters; see `SETTINGS_NOTES`)."""
    if name not in SAMPLERS:
        raise ValueError(f"name: expected one of {list(SAMPLERS)}, got {name!r}")
    if which == "defaults":
        # PosteriorDiffusion has no default SDE or solver: `run` gives it DPS's (VP, DDPM, 1000
        # steps). ULA's and SKRock's documented max_iter=1e3 is a float, which their own
        # sampling loop refuses (range(1e3) raises TypeError): 1000 is what it means.
        return {"max_iter": 1000} if name in ("ULA", "SKRock") else {}
    if which != "paper":
        raise ValueError(f"which: expected 'defaults' or 'paper', got {which!r}")
    sigma_pnp = 5 / 255
    return {
        # Chung et al. step zeta'/||r|| on grad ||r||^2 (zeta' = 1, in [-1, 1] units) is
        # 4 zeta' grad ||r||_[0,1] per DDPM step; deepinv multiplies its weight by beta_i.
        "DPS": {"weight": 4.0 / _DDPM_MEAN_BETA},
        "DiffPIR": {"zeta": 1.0, "lambda_": 7.0},
        "DDRM": {"num_steps": 20},  # 20 NFEs, eta = 0.85, eta_b = 1 (deepinv's defaults)
        "PD-DPS": {"guidance": "annealed"},
        "PD-PiGDM": {"num_steps": 100, "solver": "ddpm"},  # Song et al.: 100 steps, eta = 1
        "PD-MM": {"num_steps": 100, "cg_max_iter": 1},
        "ULA": {"sigma": sigma_pnp, "step_size": _langevin_step(noise_std, sigma_pnp) / 3, "max_iter": 2000,
                "thinning": 1},
        "SKRock": {"sigma": sigma_pnp, "step_size": _langevin_step(noise_std, sigma_pnp), "max_iter": 200,
                   "thinning": 1},
    }[name]


SETTINGS_NOTES = {
    "DPS": "Chung et al. 2023: zeta' = 1, 1000 DDPM steps; weight = 4 zeta' / mean(beta_i) (deepinv's "
           "weight multiplies grad ||r|| and is scaled by beta_i per step)",
    "DiffPIR": "Zhu et al. 2023: lambda = 7 (deepinv's default too), zeta = 1 for inpainting (our reading), "
               "100 steps",
    "DDRM": "Kawar et al. 2022: 20 steps, eta = 0.85, eta_b = 1",
    "PD-DPS": "DPS data fidelity with guidance='annealed' (weight ~ 1 is natural, deepinv's docs)",
    "PD-PiGDM": "Song et al. 2023: 100 steps, eta = 1 (DDPM-like ancestral steps)",
    "PD-MM": "Rozet et al. 2024: few steps and CG iterations (here 100 steps, one CG iteration)",
    "ULA": "Laumont et al. 2022: sigma = 5/255, step = 1 / (3 (L_y + 1/sigma^2)), alpha = 1",
    "SKRock": "Pereyra et al. 2020: s = 10, eta = 0.05, step = 1 / (L_y + 1/sigma^2)",
}

SETTINGS = ("defaults", "paper")


def _check_settings(dinv, name, settings):
    """deepinv forwards unknown keywords silently (**kwargs); refuse them here, by name."""
    build = SAMPLERS[name]
    if hasattr(build, "fidelity"):
        cls = getattr(dinv.sampling, build.fidelity)
        allowed = set(inspect.signature(cls).parameters) | set(build.extra)
    elif hasattr(build, "cls"):
        allowed = set(inspect.signature(getattr(dinv.sampling, build.cls)).parameters) - {"prior", "data_fidelity"}
    else:
        cls = {"DPS": dinv.sampling.DPS, "DiffPIR": dinv.sampling.DiffPIR, "DDRM": dinv.sampling.DDRM}[name]
        allowed = set(inspect.signature(cls).parameters) - {"denoiser", "model", "data_fidelity", "kwargs",
                                                           "sigmas"}
        if name == "DDRM":
            allowed.add("num_steps")
    allowed -= {"args", "kwargs", "denoiser", "save_chain"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(f"settings: {name} does not take {unknown}; expected some of {sorted(allowed)}")


@dataclass
class SamplerRun:
    """n samples (n, d) of one deepinv sampler, with its settings and wall time."""

    name: str
    samples: torch.Tensor
    wall_s: float
    settings: dict = field(default_factory=dict)


def run(name: str, denoiser, physics, y, *, n: int, seed: int = 0, batch: int | None = None,
        **settings) -> SamplerRun:
    """Draw n samples with deepinv's sampler `name` (a key of SAMPLERS), unchanged: y (one
    measurement, (1, ...) or without the batch axis) is repeated into batches of `batch`
    rows (default n), each row an independent run. Returns (n, d) samples in float64."""
    dinv = import_deepinv()
    if name not in SAMPLERS:
        raise ValueError(f"name: expected one of {list(SAMPLERS)}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    batch = n if batch is None else batch
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected a positive integer, got {batch!r}")
    _check_settings(dinv, name, settings)
    y = torch.as_tensor(y)
    y1 = y if y.ndim >= 2 and y.shape[0] == 1 else y.unsqueeze(0)
    sample = SAMPLERS[name](dinv, denoiser, physics, **settings)
    # deepinv's samplers draw from torch's global generator (DiffPIR, DDRM, the Langevin
    # chains) or from their solver's own one seeded from it: seeding it makes runs repeatable.
    # fork_rng restores the caller's global generator state afterwards (CPU and CUDA).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        out, start = [], time.perf_counter()
        for s in range(0, n, batch):
            rows = min(batch, n - s)
            x = sample(y1.expand(rows, *y1.shape[1:]).clone())
            out.append(x.detach().reshape(rows, -1).to(torch.float64).cpu())
        wall = time.perf_counter() - start
    return SamplerRun(name, torch.cat(out), wall, dict(settings))
