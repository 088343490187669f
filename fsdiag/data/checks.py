"""Argument checks and error messages shared by the loaders: the dtype, a path, an optional
dependency, a library's error as one line."""
from __future__ import annotations

import os
from pathlib import Path

import torch

_DTYPES = (torch.float32, torch.float64)


def check_dtype(dtype) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def require(module: str, package: str):
    """Import an optional dependency (the `book` extra) or say how to install it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this loader needs {package}: pip install {package} (or fsdiag[book])") from err


def check_path(path, *, folder: bool | None = None, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a file or folder path, got {type(path).__name__}")
    try:
        p = Path(path)
        exists, is_dir, is_file = p.exists(), p.is_dir(), p.is_file()
    except (OSError, ValueError, TypeError) as err:        # a NUL byte, a bytes path, a name too long
        raise ValueError(f"{name}: cannot use {path!r} as a path ({one_line(err)})") from None
    if not exists:
        raise ValueError(f"{name}: {str(p)!r} does not exist")
    if folder is True and not is_dir:
        raise ValueError(f"{name}: expected a folder, got the file {str(p)!r}")
    if folder is False and not is_file:
        raise ValueError(f"{name}: expected a file, got the folder {str(p)!r}")
    return p


def one_line(err: BaseException, limit: int = 200) -> str:
    """A library's error as one short line, for a message of our own that names the argument."""
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
