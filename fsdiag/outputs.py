"""Where a command's outputs land, and the rule that keeps a user's files safe.

Every command that writes a folder (`fsdiag diagnose --out`, `fsdiag regenerate --out`, a
notebook's `out_dir`, `fsdiag book --site`) goes through `Target`:

- the place is resolved against the caller's working directory once, up front;
- a folder is replaced only when it is missing, empty, or marked as written by the same
  command (a `.fsdiag-owner` file naming it); anything else — a user's folder with files in
  it, an existing file — is refused with an `OutputError` naming the option, unless `force`;
- the outputs are written into a hidden staging folder beside the target and swapped in whole
  (`publish`), so the target holds one complete run or what it held before; staging folders
  never survive the process that made them (a crash included: the next run removes leftovers
  of dead processes).

With `force`, a user's non-empty folder is kept and only the files of this run are written
into it, one by one, each replacing its namesake; an existing file is replaced.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["OutputError", "Target", "MARKER", "owner_of", "umask", "atomic_write", "open_folder"]

MARKER = ".fsdiag-owner"


class OutputError(ValueError):
    """An output place that cannot or may not be written (a usage error: exit code 2)."""


def umask() -> int:
    """The process's umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def owner_of(folder: Path) -> str | None:
    """The command that marked `folder` as its output, or None."""
    try:
        return (Path(folder) / MARKER).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def atomic_write(path: Path, data) -> Path:
    """Write `path` through a temporary sibling and a rename: never half-written. `data` is text,
    bytes, or a function that writes the file it is given (e.g. `lambda tmp: fig.savefig(tmp)`).
    The file is created by open(), so the umask applies."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class Target:
    """One output folder of one command (`owner`, e.g. "fsdiag diagnose"), given by the caller
    through the option `option` (e.g. "--out"); `override` names the caller's way to pass `force`
    in refusals (None: there is none). Construct it before doing the work: a place that may not
    be written is refused then, not after minutes of sampling."""

    def __init__(self, path, *, owner: str, option: str = "--out", force: bool = False,
                 override: str | None = "--force"):
        self.owner, self.option, self.force, self.override = owner, option, bool(force), override
        if not isinstance(path, (str, os.PathLike)):
            raise OutputError(f"{option}: expected a folder path, got {type(path).__name__}")
        text = os.fspath(path)
        if not str(text).strip():
            raise OutputError(f"{option}: expected a folder path, got an empty string")
        self.path = Path(os.path.abspath(os.path.expanduser(text)))
        self.check()

    def _refuse(self, why: str):
        raise OutputError(f"{self.option}: {self.path} {why}")

    def check(self) -> None:
        """Refuse a place this command may not write (see the module's docstring)."""
        p = self.path
        for parent in p.parents:                   # the nearest existing ancestor must be a writable folder
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    self._refuse(f"cannot be created: {parent} is a file, not a folder")
                if not os.access(parent, os.W_OK | os.X_OK):
                    self._refuse(f"cannot be created: {parent} is not writable")
                break
        if p.is_symlink() and not p.exists():
            self._refuse("is a broken symbolic link")
        if not p.exists():
            return
        if not p.is_dir():
            if not self.force:
                self._refuse("exists and is a file; give a folder" + self._hint("to replace the file"))
            return
        if not os.access(p, os.W_OK | os.X_OK) or not os.access(p.parent, os.W_OK | os.X_OK):
            self._refuse("is not writable")
        if self.owned() or self.force:
            return
        try:
            entries = sorted(e.name for e in p.iterdir())
        except OSError as err:
            self._refuse(f"cannot be read: {err.strerror}")
        if entries:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            self._refuse(f"holds files that {self.owner} did not write ({shown}); give a new or empty folder"
                         + self._hint("to add this run's files beside them"))

    def _hint(self, what: str) -> str:
        return "" if self.override is None else f" (or {self.override} {what})"

    def owned(self) -> bool:
        """Is the target a folder an earlier run of this command wrote?"""
        return self.path.is_dir() and owner_of(self.path) == self.owner

    # -------------------------------------------------------------- staging
    def _sibling_pattern(self) -> re.Pattern:
        return re.compile(re.escape(f".{self.path.name}.") + r"(staging|old)-(\d+)-.*")

    def clean_stale(self) -> None:
        """Remove staging/old siblings left by processes that are gone (a killed run)."""
        parent = self.path.parent
        if not parent.is_dir():
            return
        pat = self._sibling_pattern()
        for p in parent.iterdir():
            m = pat.fullmatch(p.name)
            if m and not _pid_alive(int(m[2])):
                if m[1] == "old" and not self.path.exists() and (p / "previous").exists():
                    os.rename(p / "previous", self.path)   # a swap killed half-way: put the previous run back
                shutil.rmtree(p, ignore_errors=True)

    def stage(self) -> Path:
        """A fresh, hidden staging folder beside the target (created with its parents)."""
        self.check()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._refuse(f"cannot be created: {err.strerror or err}")
        self.clean_stale()
        try:
            return Path(tempfile.mkdtemp(prefix=f".{self.path.name}.staging-{os.getpid()}-", dir=self.path.parent))
        except OSError as err:
            self._refuse(f"cannot be written: {err.strerror or err}")

    def publish(self, stage: Path) -> Path:
        """Mark `stage` as this command's and swap it in as the target; returns the target.
        The staging folder is gone afterwards, whatever happens."""
        stage = Path(stage)
        try:
            self.check()                               # the place may have changed while the work ran
            (stage / MARKER).write_text(self.owner + "\n")
            os.chmod(stage, 0o777 & ~umask())
            p = self.path
            if p.is_dir() and not self.owned() and any(p.iterdir()):   # force on a user's folder: add, keep theirs
                for f in sorted(stage.iterdir()):
                    if f.name == MARKER:
                        continue
                    dest = p / f.name
                    if dest.is_dir() and not dest.is_symlink():
                        raise OutputError(f"{self.option}: {dest} is a folder; not replaced")
                    os.replace(f, dest)
                return p
            old = None
            if p.exists() or p.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-{os.getpid()}-", dir=p.parent))
                os.replace(p, old / "previous")
            try:
                os.replace(stage, p)
            except OSError:
                if old is not None:
                    os.replace(old / "previous", p)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return p
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EXDEV):
                raise OutputError(f"{self.option}: {self.path} could not be written: {err.strerror}") from err
            raise
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


def open_folder(path, *, owner: str, option: str = "--out", overwrite: bool = False,
                override: str = "--overwrite") -> Target:
    """A folder a batch command writes into over many runs (files added one by one, atomically,
    so that a killed batch resumes): checked as `Target` (refused when it is a user's), then
    created and marked as `owner`'s when it is missing or empty."""
    target = Target(path, owner=owner, option=option, force=overwrite, override=override)
    p = target.path
    try:
        if not target.owned():
            if not p.is_dir() and (p.exists() or p.is_symlink()):
                p.unlink()                                  # a file: Target refused it unless overwrite
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                p.mkdir()                                   # atomic: a concurrent batch may have made it
            except FileExistsError:
                pass
            if owner_of(p) is None and not any(p.iterdir()):
                atomic_write(p / MARKER, owner + "\n")      # a new or empty folder: ours from now on
    except OSError as err:
        raise OutputError(f"{option}: {p} cannot be created: {err.strerror or err}") from None
    return target
