"""A chapter's parameters, declared once: kinds (Int, Real, Bool, Choice, ListOf, Seed,
Methods, Device, OutDir) and `check_params`, which checks a notebook's globals against a spec
({name: kind}) and refuses names papermill injected that the spec does not list::

    book.check_params(globals(), {
        "seed": Seed(), "n_atoms": Int(min=1), "pi_1": Real(gt=0, lt=1), "methods": Methods(),
        "device": Device(), "out_dir": OutDir(), "overwrite": Bool(),
    })
"""
from __future__ import annotations

import ast
import math
import numbers
import os
import re

import numpy as np

__all__ = ["Bool", "Choice", "Device", "Int", "ListOf", "Methods", "OutDir", "Real", "Seed", "Kind",
           "check_params", "injected_parameters", "RUN"]

# What this kernel's run has told the book wing: its parameters (check_params), its chapter,
# final folder and start time (pages.setup). Captions and the provenance line read it.
RUN: dict = {}


# --------------------------------------------------------------------------------------------
# Parameter kinds. Each has `check(name, value)`, which raises TypeError (wrong type) or
# ValueError (out of range) with the parameter's name first in the message.

def _fail(exc, name, expected, value):
    raise exc(f"{name}: expected {expected}, got {value!r}"
              + (f" ({type(value).__name__})" if exc is TypeError else ""))


class Kind:
    def __repr__(self):
        return f"{type(self).__name__}({self.describe()})"


class Int(Kind):
    """An integer (not a bool) in [min, max]."""

    def __init__(self, min: int | None = None, max: int | None = None):
        self.min, self.max = min, max

    def describe(self):
        if self.min is not None and self.max is not None:
            return f"an integer in [{self.min}, {self.max}]"
        if self.min is not None:
            return f"an integer >= {self.min}"
        if self.max is not None:
            return f"an integer <= {self.max}"
        return "an integer"

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            _fail(TypeError, name, self.describe(), value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            _fail(ValueError, name, self.describe(), value)


class Seed(Int):
    """A random seed: an integer in [0, 2**32 - 1] (what both torch and numpy accept)."""

    def __init__(self):
        super().__init__(min=0, max=2 ** 32 - 1)


class Real(Kind):
    """A finite real number (an int is fine, a bool is not), optionally bounded:
    gt/ge/lt/le are >, >=, <, <=. `Real(gt=0)` is a positive number, `Real(gt=0, lt=1)` a
    probability strictly inside (0, 1)."""

    def __init__(self, gt=None, ge=None, lt=None, le=None):
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le

    def describe(self):
        lo = f"> {self.gt}" if self.gt is not None else f">= {self.ge}" if self.ge is not None else None
        hi = f"< {self.lt}" if self.lt is not None else f"<= {self.le}" if self.le is not None else None
        if lo and hi:
            left = "(" if self.gt is not None else "["
            right = ")" if self.lt is not None else "]"
            a = self.gt if self.gt is not None else self.ge
            b = self.lt if self.lt is not None else self.le
            return f"a finite number in {left}{a}, {b}{right}"
        if lo == "> 0":
            return "a positive finite number"
        return "a finite number" + (f" {lo or hi}" if lo or hi else "")

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(TypeError, name, self.describe(), value)
        v = float(value)
        if (not math.isfinite(v) or (self.gt is not None and not v > self.gt)
                or (self.ge is not None and not v >= self.ge) or (self.lt is not None and not v < self.lt)
                or (self.le is not None and not v <= self.le)):
            _fail(ValueError, name, self.describe(), value)


class Bool(Kind):
    """True or False (papermill's `-p flag False` arrives as a bool)."""

    def describe(self):
        return "True or False"

    def check(self, name, value):
        if not isinstance(value, (bool, np.bool_)):
            _fail(TypeError, name, self.describe(), value)


class Choice(Kind):
    """One of a fixed set of values (compared with ==)."""

    def __init__(self, *options):
        if not options:
            raise ValueError("Choice: expected at least one option")
        self.options = options

    def describe(self):
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, name, value):
        if not any(type(value) is type(o) and value == o for o in self.options):
            _fail(ValueError, name, self.describe(), value)


class ListOf(Kind):
    """A list (or tuple) of items of one kind, with min_len <= len <= max_len (`length` fixes it);
    `unique` refuses repeated items. Items are reported as name[i]."""

    def __init__(self, item: Kind, *, min_len: int = 1, max_len: int | None = None,
                 length: int | None = None, unique: bool = False):
        self.item, self.unique = item, unique
        self.min_len, self.max_len = (length, length) if length is not None else (min_len, max_len)

    def describe(self):
        if self.min_len == self.max_len:
            n = f"{self.min_len}"
        elif self.max_len is None:
            n = {0: "any number of", 1: "one or more"}.get(self.min_len, f"at least {self.min_len}")
        else:
            n = f"{self.min_len} to {self.max_len}"
        return f"a list of {n} {'distinct ' if self.unique else ''}items, each {self.item.describe()}"

    def check(self, name, value):
        if not isinstance(value, (list, tuple)):
            _fail(TypeError, name, self.describe(), value)
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            _fail(ValueError, name, self.describe(), value)
        for i, v in enumerate(value):
            self.item.check(f"{name}[{i}]", v)
        if self.unique and len(set(map(repr, value))) < len(value):
            _fail(ValueError, name, self.describe(), value)


class Methods(Kind):
    """A non-empty list of distinct method names registered in `fsdiag.METHODS` (looked up
    when checked, so methods registered later count)."""

    def _kind(self):
        from .. import METHODS
        return ListOf(Choice(*sorted(METHODS)), min_len=1, unique=True)

    def describe(self):
        return self._kind().describe()

    def check(self, name, value):
        self._kind().check(name, value)


class Device(Kind):
    """'auto' (CUDA when present, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""

    def describe(self):
        return "'auto', 'cpu', 'cuda' or 'cuda:N'"

    def check(self, name, value):
        if not isinstance(value, str):
            _fail(TypeError, name, self.describe(), value)
        from .._checks import resolve_device
        try:
            resolve_device(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {str(err).removeprefix('device: ')}") from None


class OutDir(Kind):
    """None (the book's own outputs folder for the chapter) or a folder path."""

    def describe(self):
        return "None or a folder path"

    def check(self, name, value):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            _fail(TypeError, name, self.describe(), value)
        if value is not None and not str(os.fspath(value)).strip():
            _fail(ValueError, name, self.describe(), value)


# --------------------------------------------------------------------------------------------
# Validation

_PAPERMILL_PATHS = re.compile(r"PAPERMILL_\w+")   # papermill --inject-paths adds these


def injected_parameters(history) -> list[str]:
    """Names assigned by papermill's injected cell(s) found in an IPython input history
    (`In`): papermill inserts after the parameters cell a cell whose source starts with the
    comment "# Parameters". Without one (jupyter-book, an interactive session) it is []."""
    names = []
    for source in history or ():
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and n.id not in names and not _PAPERMILL_PATHS.fullmatch(n.id):
                        names.append(n.id)
    return names


def check_params(namespace: dict, spec: dict) -> None:
    """Check a notebook's parameters against `spec` ({name: kind}), which must list every
    parameter. `namespace` is the notebook's `globals()`: the values are read from it, and its
    IPython history `In` shows which names papermill injected, so that a mistyped
    `-p n_partcles 10` fails here instead of running on the defaults.

    Raises ValueError (unknown parameter, value out of range) or TypeError (wrong type)
    whose message starts with the parameter's name."""
    unknown = [n for n in injected_parameters(namespace.get("In")) if n not in spec]
    if unknown:
        from .._checks import did_you_mean
        hints = [f"{n!r}{did_you_mean(n, spec)}" for n in unknown]
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                         f"this notebook's parameters are: {', '.join(spec)}")
    for name, kind in spec.items():
        if name not in namespace:
            raise ValueError(f"{name}: listed in the parameter spec but not set by the parameters cell")
        kind.check(name, namespace[name])
    RUN["params"] = {name: namespace[name] for name in spec}
