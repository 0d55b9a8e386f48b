"""As root, a desired-state file is code root runs: refuse one that someone else could write.

Whoever can change a desired-state file, a helper module it imports from its directory, or a
directory on the way to them, can run any command as root on the next ``converge apply`` (or
timer run). So, when converge runs as root (effective uid 0), it refuses, with the reason:

- a file (the desired file, an imported module, its cached bytecode) not owned by root, or
  writable by its group or by others;
- a directory on the path to one of them not owned by root, or writable by its group or by
  others without the sticky bit (with it, as in /tmp, others cannot replace root's files).

Helper modules are checked as they are imported, before they run: an import hook watches
imports resolved inside the desired file's directory while the file loads.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import stat
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

from converge.errors import DesiredStateError

WHY = "a desired-state file is code converge runs as root: whoever can write it is root"


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _problem(st: os.stat_result, is_dir: bool) -> str | None:
    if st.st_uid != 0:
        return f"it is owned by {_owner(st.st_uid)}, not root"
    mode = stat.S_IMODE(st.st_mode)
    if is_dir and mode & stat.S_ISVTX:
        return None  # sticky: others may add files, never replace root's
    writers = [who for who, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH))
               if mode & bit]
    if writers:
        return f"it is writable by {' and '.join(writers)} (mode {mode:04o})"
    return None


def _refuse(path: Path, what: str, problem: str, file: Path) -> DesiredStateError:
    fix = f"chmod go-w {path}"
    if "owned by" in problem:
        fix = f"chown root {path} && {fix}"
    return DesiredStateError(
        f"refusing to run as root: {what} {path} is not safe: {problem}; {WHY}. "
        f"Fix: {fix}.", file=str(file))


def check_file(path: Path, what: str, *, desired: Path | None = None,
               stop_at: Path | None = None) -> None:
    """Raise :class:`DesiredStateError` unless ``path`` and every directory above it (up to
    ``stop_at``, already checked, or /) are root's alone."""
    desired = desired or path
    try:
        real = Path(os.path.realpath(path))
        st = os.stat(real)
    except OSError:
        return  # the loader reports a missing or unreadable file
    problem = _problem(st, is_dir=False)
    if problem:
        raise _refuse(real, what, problem, desired)
    parents: list[Path] = [real.parent, *real.parent.parents]
    if path.absolute() != real:  # a link: whoever can replace the link matters too
        parents = [path.absolute().parent, *path.absolute().parent.parents, *parents]
    seen: set[Path] = set()
    for d in parents:
        if d in seen:
            continue
        seen.add(d)
        if stop_at is not None and d == stop_at:
            break
        try:
            dst = os.stat(d)
        except OSError:
            continue
        problem = _problem(dst, is_dir=True)
        if problem:
            raise _refuse(d, f"the directory of {what}", problem, desired)


#: modules imported from a desired file's directory by an earlier load in this process
_HELPERS: set[str] = set()


class _Watch(importlib.abc.MetaPathFinder):
    """Checks (as root) every module that would be imported from ``directory`` before it
    runs, and remembers it, so that the next load imports it afresh."""

    def __init__(self, directory: Path, desired: Path, check: bool) -> None:
        self.directory = directory
        self.desired = desired
        self.check = check
        self.refusal: DesiredStateError | None = None

    def _inside(self, entry: str) -> bool:
        try:
            return Path(entry).absolute().is_relative_to(self.directory)
        except (OSError, ValueError):
            return False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        search = [str(self.directory)] if path is None else [p for p in path if self._inside(p)]
        if not search:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, search)
        if spec is None or not spec.origin or not spec.has_location:
            return None
        _HELPERS.add(fullname)
        if not self.check:
            return None
        origin = Path(spec.origin)
        try:
            check_file(origin, f"module {fullname}", desired=self.desired,
                       stop_at=self.directory.parent)
            cached = importlib.util.cache_from_source(str(origin))
            if os.path.exists(cached):
                check_file(Path(cached), f"cached bytecode of module {fullname}",
                           desired=self.desired, stop_at=self.directory.parent)
        except DesiredStateError as exc:
            self.refusal = self.refusal or exc
            raise ImportError(str(exc), name=fullname) from None
        return None  # checked: the normal machinery imports it


@contextlib.contextmanager
def guard(desired: Path) -> Iterator[None]:
    """As root, check ``desired`` and, while the block loads it, what it imports from its
    directory. Helpers an earlier load imported are imported again (and checked again): a
    long-running process (``converge watch``) sees them as they are now."""
    for name in list(_HELPERS):
        sys.modules.pop(name, None)
    _HELPERS.clear()
    path = desired.absolute()
    as_root = os.geteuid() == 0
    if as_root:
        check_file(path, "desired-state file")
    watch = _Watch(path.parent, path, as_root)  # the loader imports helpers from path.parent
    sys.meta_path.insert(0, watch)
    try:
        yield
    except DesiredStateError:
        if watch.refusal is not None:
            raise watch.refusal from None
        raise
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(watch)
    if watch.refusal is not None:  # the file caught the ImportError: refuse all the same
        raise watch.refusal
