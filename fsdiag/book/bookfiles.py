"""Where the book's files are: the notebooks, notebooks/profiles.yml and the book's sources
(_config.yml, _toc.yml, book/, references.bib).

An installed wheel carries a copy of them inside the package, in `fsdiag/_book/` (setup.py
copies them there at build time); a source checkout (an editable install, or running from the
repository) has them in the repository's root, beside the `fsdiag/` package. `book_root()`
prefers the installed copy and falls back to the checkout.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["BOOK_FILES", "INSTALLED", "CHECKOUT", "book_root", "is_installed_copy", "notebooks_dir",
           "profiles_file"]

# What the wheel carries, relative to the repository's root (setup.py and MANIFEST.in use this list too).
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib", "book", "notebooks/*.ipynb", "notebooks/profiles.yml")

_PACKAGE = Path(__file__).resolve().parent.parent   # fsdiag/, this file being fsdiag/book/bookfiles.py
INSTALLED = _PACKAGE / "_book"          # the copy inside an installed wheel
CHECKOUT = _PACKAGE.parent              # the repository's root, when fsdiag runs from a checkout


def _complete(root: Path) -> bool:
    return (root / "_toc.yml").is_file() and (root / "notebooks" / "profiles.yml").is_file()


def book_root() -> Path | None:
    """The folder holding _toc.yml, _config.yml, references.bib, book/ and notebooks/: the
    installed copy inside the package when present, else the source checkout; None when neither
    has them (a broken install)."""
    for root in (INSTALLED, CHECKOUT):
        if _complete(root):
            return root
    return None


def is_installed_copy(root) -> bool:
    """Is `root` the copy inside the installed package (read-only territory: nothing is written there)?"""
    try:
        return Path(root).resolve() == INSTALLED
    except OSError:
        return False


def notebooks_dir() -> Path | None:
    """The book's notebooks/ folder (see book_root), or None."""
    root = book_root()
    return None if root is None else root / "notebooks"


def profiles_file() -> Path:
    """notebooks/profiles.yml of the book (a path that does not exist when the book's files are missing)."""
    root = book_root()
    return (CHECKOUT if root is None else root) / "notebooks" / "profiles.yml"
