"""Figures for the book's chapters (see fsdiag.plots). Functions take diagnostics outputs and return figures."""
from __future__ import annotations

__all__: list[str] = []
