"""One shape for every registry: a `Registry` is a dict from a name to an entry (a class or a
function), filled by its `register` decorator, that names the caller's argument and suggests
the closest name when asked for one it does not hold.

fsdiag's registries: `fsdiag.forward.FORWARD_MODELS` (operators), `fsdiag.METHODS` (likelihood
approximations), `fsdiag.SAMPLERS` (samplers), `fsdiag.problems.PROBLEMS` (built-in problems),
`fsdiag.adapters.deepinv.SAMPLERS` (deepinv's samplers). Tests iterate over each, so a new entry
is tested the moment it is registered.
"""
from __future__ import annotations

from ._checks import did_you_mean

__all__ = ["Registry"]


class Registry(dict):
    """name -> entry. `kind` names what it holds in messages; `check(entry)` (optional) returns
    why an entry is refused, or None."""

    def __init__(self, kind: str, entries: dict | None = None, *, check=None):
        super().__init__()
        self.kind, self.check = kind, check
        for name, entry in (entries or {}).items():
            self.register(entry, name=name)

    def register(self, entry=None, *, name: str | None = None):
        """Add `entry` under `name` (default: its `name` attribute when a string, else its
        __name__); returns the entry, so it works as a decorator, bare or with name=..."""
        if entry is None:
            return lambda e: self.register(e, name=name)
        why = self.check(entry) if self.check is not None else None
        if why:
            raise TypeError(f"register: {why}")
        key = name if name is not None else getattr(entry, "name", None)
        if not isinstance(key, str):
            key = getattr(entry, "__name__", None)
        if not isinstance(key, str) or not key:
            raise TypeError(f"register: cannot tell the {self.kind}'s name; pass name=...")
        self[key] = entry
        return entry

    def lookup(self, name, argument: str):
        """The entry called `name`, or ValueError naming `argument`, the choices and the closest."""
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"{argument}: expected one of {sorted(self)}, got {name!r}"
                             f"{did_you_mean(name, self) if isinstance(name, str) else ''}")
        return self[name]
