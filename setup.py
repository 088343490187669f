"""Build hook: the wheel carries the book's files (the notebooks, notebooks/profiles.yml,
_config.yml, _toc.yml, book/, references.bib) as package data under fsdiag/_book/, so that
`fsdiag regenerate` and `fsdiag book` work from an installed wheel. The repository keeps its
layout (`jupyter-book build .` from the root); the copy is made in the build folder only.
Everything else about the package is in pyproject.toml."""
import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _book_files() -> list[str]:
    # One list, in fsdiag/book/bookfiles.py (loaded by path: importing fsdiag would import torch).
    spec = importlib.util.spec_from_file_location("_fsdiag_bookfiles", HERE / "fsdiag" / "book" / "bookfiles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.BOOK_FILES)


def _expand(pattern: str) -> list[Path]:
    """The files a BOOK_FILES entry names, relative to HERE (a folder: its files, hidden ones left out)."""
    hits = sorted(HERE.glob(pattern))
    if not hits:
        raise FileNotFoundError(f"setup.py: the book's {pattern!r} is missing from {HERE}")
    files = []
    for hit in hits:
        inner = sorted(hit.rglob("*")) if hit.is_dir() else [hit]
        files += [f.relative_to(HERE) for f in inner if f.is_file()
                  and not any(part.startswith(".") or part == "__pycache__" for part in f.relative_to(HERE).parts)]
    return files


class build_py_with_book(build_py):
    """build_py, then copy the book's files into <build>/fsdiag/_book/ (not for an editable
    install: the checkout itself serves them)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "fsdiag" / "_book"
        if dest.exists():
            shutil.rmtree(dest)
        for rel in (f for pattern in _book_files() for f in _expand(pattern)):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(HERE / rel, dest / rel)


setup(cmdclass={"build_py": build_py_with_book})
