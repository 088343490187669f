"""The networks (an MLP for vectors, a small convolutional net for images), the denoiser around
them and its training by denoising score matching (`train_denoiser`), with saved weights.

Parameterisation: x0-prediction with the preconditioning of Karras et al. (2022, EDM), written in
the VP convention x_t = a x0 + b z (a = sqrt(abar), b^2 = 1 - abar). With x = x_t / a and
sigma = b / a (the VE form, docs/design.md §3.1; the parameterisation: §3.4), c the atoms' mean and s their RMS spread (sigma_data):

    m(x_t) = c + c_skip (x - c) + c_out F_theta(c_in (x - c), c_noise),
    c_skip = s^2 / (sigma^2 + s^2),  c_out = sigma s / sqrt(sigma^2 + s^2),
    c_in = 1 / sqrt(sigma^2 + s^2),   c_noise = log(sigma) / 4.

F = 0 is the exact denoiser of N(c, s^2 I); the networks start there (zero output layer).
Training minimises E ||m(x_t) - x0||^2 / c_out^2 (EDM's weighting: unit-scale targets for F) over
atoms x0, z ~ N(0, I) and log sigma uniform on [sigma(t_lo), sigma(t_hi)] of the paper's schedule.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .._checks import as_tensor, check_int, check_positive, check_real, resolve_device
from ..prior import EmpiricalPrior
from ..schedules import VPSchedule

__all__ = ["MLP", "ConvNet", "NetworkDenoiser", "Trained", "train_denoiser"]

# Bump when the architecture or training changes: saved weights of another format are retrained.
_FORMAT = 1
_N_FREQ = 8


# ------------------------------------------------------------------ architectures
def _noise_features(c_noise: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 2 _N_FREQ + 1): c_noise and fixed sinusoids of it (c_noise spans ~[-1.2, 1.3])."""
    freqs = math.pi * 2.0 ** torch.arange(-1, _N_FREQ - 1, dtype=c_noise.dtype, device=c_noise.device)
    arg = c_noise[:, None] * freqs
    return torch.cat([c_noise[:, None], torch.cos(arg), torch.sin(arg)], 1)


class MLP(nn.Module):
    """F(u, c_noise) for vectors: [u, noise features] -> `depth` hidden layers of `width` (SiLU) -> d."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3):
        super().__init__()
        self.dim = dim
        layers, n_in = [], dim + 2 * _N_FREQ + 1
        for _ in range(depth):
            layers += [nn.Linear(n_in, width), nn.SiLU()]
            n_in = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(n_in, dim)

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(torch.cat([u, _noise_features(c_noise)], 1)))


class _Block(nn.Module):
    def __init__(self, channels: int, n_emb: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(n_emb, channels)

    def forward(self, h, e):
        r = self.conv1(nn.functional.silu(h)) + self.emb(e)[:, :, None, None]
        return h + self.conv2(nn.functional.silu(r))


class ConvNet(nn.Module):
    """F(u, c_noise) for images (C, H, W): a 3x3 conv in, `depth` residual blocks of two 3x3 convs
    (noise features added per channel), a 3x3 conv out. Full resolution throughout (8x8 is small)."""

    def __init__(self, image_shape, channels: int = 32, depth: int = 2):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c_img = self.image_shape[0]
        n_emb = 2 * _N_FREQ + 1
        self.embed = nn.Sequential(nn.Linear(n_emb, channels), nn.SiLU())
        self.conv_in = nn.Conv2d(c_img, channels, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(channels, channels) for _ in range(depth))
        self.out = nn.Conv2d(channels, c_img, 3, padding=1)

    def forward(self, u: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        e = self.embed(_noise_features(c_noise))
        h = self.conv_in(u.reshape(u.shape[0], *self.image_shape))
        for blk in self.blocks:
            h = blk(h, e)
        return self.out(nn.functional.silu(h)).reshape(u.shape[0], -1)


def _init(net: nn.Module, generator: torch.Generator) -> None:
    """Seeded initialisation (LeCun-uniform weights, zero biases) with a zero output layer, so the
    untrained denoiser is the Gaussian one (F = 0); never the global random state."""
    for mod in net.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            fan_in = mod.weight[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            w = torch.rand(mod.weight.shape, generator=generator, dtype=torch.float64) * 2 - 1
            with torch.no_grad():
                mod.weight.copy_(bound * w)
                mod.bias.zero_()
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()


def _build(config: dict, dtype, device, generator: torch.Generator | None) -> nn.Module:
    # Built on the meta device: nn.Module constructors draw their default initialisation from the
    # global random state, which fsdiag never touches. _init (or a state dict) fills the weights.
    with torch.device("meta"):
        if config["arch"] == "mlp":
            net = MLP(config["dim"], config["width"], config["depth"])
        else:
            net = ConvNet(config["image_shape"], config["width"], config["depth"])
    net = net.to_empty(device="cpu").to(torch.float64)
    if generator is not None:
        _init(net, generator)
    return net.to(dtype=dtype, device=device)


class NetworkDenoiser(nn.Module):
    """m(x_t, abar) ~ E[x0 | x_t] in the VP convention from a network F, with EDM preconditioning
    (module docstring). `center` (d,) and `sigma_data` are the training atoms' mean and RMS spread."""

    def __init__(self, net: nn.Module, center: torch.Tensor, sigma_data: float, scale: float):
        super().__init__()
        self.net = net
        self.register_buffer("center", center.clone())
        self.sigma_data = float(sigma_data)
        self.scale = float(scale)   # max |atom| of the training data, for samplers' sanity checks

    @property
    def dim(self) -> int:
        return self.center.shape[0]

    def forward(self, x_t: torch.Tensor, abar) -> torch.Tensor:
        """x_t (B, d); abar a float or a (B,) tensor in (0, 1)."""
        co = _coefficients(abar, self.sigma_data, x_t.device)
        center = self.center.to(torch.float64)
        cast = lambda t: t.to(x_t.dtype)   # noqa: E731
        # c + c_skip (x - c) = (c_skip / a) x_t + (1 - c_skip) c; c_in (x - c) = (c_in / a) x_t - c_in c:
        # x = x_t / a itself would overflow float32 for abar ~ 1e-300.
        skip = cast(co["skip_a"]) * x_t + cast(co["one_minus_skip"] * center)
        u = cast(co["in_a"]) * x_t - cast(co["in"] * center)
        c_noise = cast(co["noise"]).reshape(-1).expand(x_t.shape[0])
        return skip + cast(co["out"]) * self.net(u, c_noise)


def _coefficients(abar, sigma_data: float, device) -> dict:
    """The EDM preconditioning of the module docstring as float64 (B or 1, 1) tensors, written
    with D = abar + b^2 / s^2 = abar (sigma^2 + s^2) / s^2 so that no intermediate overflows or
    cancels for any abar in (0, 1) and any s up to float64's range (sigma^2 = b^2 / abar is inf
    for a subnormal abar, and 1 - abar rounds to 0 in float32 near abar = 1):
        c_skip = abar / D, 1 - c_skip = (b^2 / s^2) / D, c_skip / a = a / D,
        c_out = sqrt(b^2 / D), c_in = a / (s sqrt(D)), c_in / a = 1 / (s sqrt(D)),
        c_noise = log(sigma^2) / 8 = (log b^2 - log abar) / 8.
    The caller casts them to the network's dtype."""
    abar = torch.as_tensor(abar, dtype=torch.float64, device=device).reshape(-1, 1)
    s = float(sigma_data)
    a = abar.sqrt()
    b2 = 1.0 - abar
    e = b2 / s / s
    D = abar + e
    root = D.sqrt()
    return {"skip_a": a / D, "one_minus_skip": e / D, "out": (b2 / D).sqrt(),
            "in": a / (s * root), "in_a": 1.0 / (s * root),
            "noise": 0.125 * (torch.log(b2) - torch.log(abar))}


# ------------------------------------------------------------------ training
@dataclass
class Trained:
    """A trained (or loaded) denoiser. trained: False when saved weights were found and loaded."""

    denoiser: NetworkDenoiser
    trained: bool
    path: Path | None
    losses: list = field(default_factory=list)   # mean training loss per 1% of the steps
    seconds: float = 0.0                          # wall time of the training (0 when loaded)
    key: str = ""
    config: dict = field(default_factory=dict)


def _atoms_hash(atoms: torch.Tensor) -> str:
    a = np.ascontiguousarray(atoms.detach().cpu().to(torch.float64).numpy())
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def _check_range(t_range) -> tuple[float, float]:
    if not isinstance(t_range, (tuple, list)) or len(t_range) != 2:
        raise ValueError(f"t_range: expected (t_lo, t_hi) with 0 < t_lo < t_hi <= 1, got {t_range!r}")
    lo, hi = (check_real(t, "t_range") for t in t_range)
    if not (0.0 < lo < hi <= 1.0):
        raise ValueError(f"t_range: expected (t_lo, t_hi) with 0 < t_lo < t_hi <= 1, got {t_range!r}")
    return lo, hi


def train_denoiser(atoms, *, arch: str = "mlp", image_shape=None, seed: int = 0, steps: int = 2000,
                   batch_size: int = 256, lr: float = 2e-3, width: int = 128, depth: int = 3,
                   t_range=(1e-3, 1.0), weights_dir=None, device="auto", dtype=torch.float32,
                   progress: bool = True) -> Trained:
    """Fit a denoiser to `atoms` (N, d) (or an EmpiricalPrior's atoms) by denoising score matching.

    arch: "mlp" (width, depth: hidden layers) or "conv" (needs image_shape (C, H, W) with
    C H W = d; width: channels, depth: residual blocks). Adam with a cosine-decayed learning rate,
    `steps` minibatches of `batch_size` atoms; every draw from a torch.Generator seeded by `seed`.
    With `weights_dir`, weights are saved there as <arch>-<key>.pt, key a hash of the atoms, the
    seed and every hyper-parameter; when that file exists it is loaded and training is skipped.
    """
    if isinstance(atoms, EmpiricalPrior):
        atoms = atoms.atoms
    dev = resolve_device(device)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    x0 = as_tensor(atoms, "atoms", ndim=2, dtype=dtype, device=dev)
    n, d = x0.shape
    if n < 1 or d < 1:
        raise ValueError(f"atoms: expected shape (N, d) with N, d >= 1, got {tuple(x0.shape)}")
    if not isinstance(arch, str) or arch not in ("mlp", "conv"):
        raise ValueError(f"arch: expected 'mlp' or 'conv', got {arch!r}")
    if arch == "conv":
        if image_shape is None:
            raise ValueError("image_shape: arch='conv' needs the image shape (C, H, W) of the atoms")
        try:
            image_shape = tuple(check_int(s, "image_shape") for s in image_shape)
        except TypeError as err:
            raise TypeError(f"image_shape: expected (C, H, W) integers, got {image_shape!r}") from err
        if len(image_shape) != 3 or math.prod(image_shape) != d:
            raise ValueError(f"image_shape: expected (C, H, W) with C*H*W = {d}, got {image_shape}")
    elif image_shape is not None:
        raise ValueError("image_shape: only arch='conv' takes an image shape")
    seed = check_int(seed, "seed", minimum=0)
    steps = check_int(steps, "steps", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    width = check_int(width, "width")
    depth = check_int(depth, "depth", minimum=0 if arch == "conv" else 1)
    t_lo, t_hi = _check_range(t_range)
    config = {"format": _FORMAT, "arch": arch, "dim": d, "image_shape": list(image_shape) if image_shape else None,
              "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "width": width, "depth": depth,
              "t_range": [t_lo, t_hi], "dtype": str(dtype).replace("torch.", ""), "atoms": _atoms_hash(x0)}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]

    # In float64: float32 atoms near 1e30 have a spread whose square overflows float32.
    x64 = x0.to(torch.float64)
    center64 = x64.mean(0)
    center = center64.to(dtype)
    sigma_data = max(float((x64 - center64).pow(2).mean().sqrt()), 1e-3)   # one atom: no spread to scale by
    del x64
    scale = float(x0.abs().max())
    path = None
    if weights_dir is not None:
        folder = Path(weights_dir)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"weights_dir: {folder} exists and is not a folder")
        path = folder / f"{arch}-{key}.pt"
        if path.is_file():
            loaded = _load_cached(path, key, config, dtype, dev)
            if loaded is not None:
                net, losses = loaded
                den = NetworkDenoiser(net, center, sigma_data, scale).eval()
                return Trained(den, False, path, losses, 0.0, key, config)

    gen = torch.Generator(device=dev).manual_seed(seed)
    cpu_gen = torch.Generator().manual_seed(seed)
    net = _build(config, dtype, dev, cpu_gen)
    den = NetworkDenoiser(net, center, sigma_data, scale)
    sched = VPSchedule()
    lo = 0.5 * math.log((1 - sched.alpha_bar(t_lo)) / sched.alpha_bar(t_lo))
    hi = 0.5 * math.log((1 - sched.alpha_bar(t_hi)) / sched.alpha_bar(t_hi))
    # The noise levels are absolute (the paper's schedule, for data of unit scale). Atoms so large
    # that their rounding in `dtype` is 1e6 times the smallest noise level leave nothing to learn
    # there, and the loss (m - x0)^2 / c_out^2 ~ (rounding / sigma)^2 would swamp (or overflow) it.
    rounding = torch.finfo(dtype).eps * scale
    if steps and rounding > 1e6 * math.exp(lo):
        raise ValueError(f"atoms: max |atom| = {scale:.3g} is too large to train in {dtype} at the "
                         f"smallest noise level sigma = {math.exp(lo):.3g} (t = {t_lo:g}): the atoms' "
                         f"rounding ({rounding:.3g}) is more than 1e6 times that noise; rescale the atoms "
                         "(or raise t_range's lower end)")
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    losses, window = [], []
    every = max(1, steps // 100)
    start = time.perf_counter()
    den.train()
    for k in tqdm(range(steps), desc=f"training {arch}", disable=not progress, leave=False, mininterval=2.0):
        for g in opt.param_groups:   # cosine decay to 0
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / steps))
        idx = torch.randint(0, n, (batch_size,), generator=gen, device=dev)
        log_sigma = lo + (hi - lo) * torch.rand(batch_size, generator=gen, dtype=dtype, device=dev)
        sigma2 = torch.exp(2 * log_sigma)
        abar = 1.0 / (1.0 + sigma2)
        z = torch.randn(batch_size, d, generator=gen, dtype=dtype, device=dev)
        x_t = abar.sqrt()[:, None] * x0[idx] + (1 - abar).sqrt()[:, None] * z
        # EDM's weight 1 / c_out^2, applied before squaring: (m - x0)^2 of atoms near 1e30
        # overflows float32, (m - x0) / c_out does not.
        c_out = _coefficients(abar, sigma_data, dev)["out"].to(dtype)
        loss = (((den(x_t, abar) - x0[idx]) / c_out) ** 2).sum(1).mean() / d
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"lr: the training loss became {value} at step {k + 1} of {steps} "
                                     f"(lr = {lr:g}, atoms' spread {sigma_data:.3g}, dtype {dtype}); "
                                     "lower lr, rescale the atoms or train in float64")
        window.append(value)
        if len(window) == every or k == steps - 1:
            losses.append(sum(window) / len(window))
            window = []
    seconds = time.perf_counter() - start
    den.eval()
    bad = [name for name, p in net.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise FloatingPointError(f"lr: training left non-finite weights in {', '.join(bad)} "
                                 f"(lr = {lr:g}, atoms' spread {sigma_data:.3g}, dtype {dtype}); "
                                 "lower lr, rescale the atoms or train in float64")
    if path is not None:
        _save_cached(path, {"key": key, "config": config, "losses": losses,
                            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}})
    return Trained(den, True, path, losses, seconds, key, config)


def _load_cached(path: Path, key: str, config: dict, dtype, device):
    """(net, losses) from saved weights, or None when the file is of another key or config, or
    cannot be used (truncated, not a weights file, wrong shapes, non-finite values): then a
    warning says so and the caller trains again (and overwrites the file)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict):
            raise TypeError(f"expected a dict, got {type(saved).__name__}")
        if saved.get("key") != key or saved.get("config") != config:
            return None
        net = _build(config, dtype, device, None)
        net.load_state_dict(saved["state"])
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            raise ValueError("non-finite weights")
        losses = [float(v) for v in saved.get("losses", [])]
    except Exception as err:  # noqa: BLE001 - any unreadable cache entry is retrained
        warnings.warn(f"weights_dir: ignoring the unusable saved weights {path} "
                      f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                      "training again", RuntimeWarning, stacklevel=3)
        return None
    return net, losses


def _save_cached(path: Path, payload: dict) -> None:
    """Write the weights atomically: a uniquely named file beside the target, then rename, so
    that neither a crash nor a concurrent writer leaves a truncated file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

