"""Small helpers shared by the book's notebooks: parameter checks, style, atomic outputs."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["setup", "check_params", "save_figure", "write_metrics", "to_jsonable"]


def check_params(**params) -> None:
    """Validate notebook parameters by name: ints >= 1 for sizes, a non-negative int seed,
    'auto'/'cpu'/'cuda' for device. Raises ValueError naming the bad parameter."""
    for name, value in params.items():
        if name == "device":
            from ._checks import resolve_device
            resolve_device(value)
        elif name == "seed":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"seed: expected a non-negative integer, got {value!r}")
        elif name.startswith("n_") or name.endswith("_steps"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")


def setup(out_dir: str | os.PathLike) -> Path:
    """Create out_dir and apply the book's seaborn style; returns out_dir as a Path."""
    import matplotlib
    import seaborn as sns
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.autolayout": False})
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_figure(fig, out_dir, name: str) -> Path:
    """Save a figure as out_dir/name.png via a temporary file (never half-written)."""
    return _atomic_write(Path(out_dir) / f"{name}.png", lambda tmp: fig.savefig(tmp, bbox_inches="tight", format="png"))


def to_jsonable(obj):
    """Tensors, arrays and numpy scalars to plain Python for json."""
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def write_metrics(out_dir, metrics: dict) -> Path:
    """Write out_dir/metrics.json atomically."""
    text = json.dumps(to_jsonable(metrics), indent=2, sort_keys=True, allow_nan=True)
    return _atomic_write(Path(out_dir) / "metrics.json", lambda tmp: Path(tmp).write_text(text))
