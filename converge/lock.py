"""One run at a time per host: an advisory lock file in the state directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from converge.errors import LockError


@contextlib.contextmanager
def run_lock(state_dir: Path, *, wait: float = 0.0) -> Iterator[None]:
    """Hold ``STATE_DIR/run.lock`` for the duration; wait up to ``wait`` seconds for it."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LockError(f"cannot create state directory {state_dir}: {exc.strerror}") from None
    path = state_dir / "run.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LockError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    waited = f" after waiting {wait:g}s" if wait else ""
                    raise LockError(
                        f"another converge run (pid {holder}) holds {path}{waited}; "
                        "try again later or pass --lock-wait SECONDS"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
