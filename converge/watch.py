"""Watch mode: apply in a loop, at once when a managed file changes, until SIGTERM/SIGINT.

For hosts without systemd, or for corrections within seconds. The loop itself lives here; what
a pass does (an ordinary ``converge apply``: same lock, report and output) is given by the
caller. Between passes it waits ``interval`` plus a random ``jitter`` (so that many hosts do not
run together) and polls the managed paths once a second (``lstat``: modification and change
time, size, inode, mode, owner): a path changed by anyone but the pass itself starts a pass at
once. Polling needs no dependency and works on every filesystem (inotify does not see changes
made on another NFS client); a thousand paths cost about 2 ms a second.

SIGTERM and SIGINT end the loop after the current pass: a pass is never cut short.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType

from converge.errors import UsageError

_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
          "ms": 0.001, "msec": 0.001,
          "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
          "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
          "d": 86400.0, "day": 86400.0, "days": 86400.0, "w": 604800.0, "week": 604800.0,
          "weeks": 604800.0}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(text: str, option: str) -> float:
    """Seconds in ``text``: ``90``, ``30s``, ``5m``, ``5min``, ``1h30m``, ``2d`` (systemd's
    time spans, a bare number being seconds)."""
    raw = text.strip().lower()
    total, pos = 0.0, 0
    while pos < len(raw):
        m = _PART.match(raw, pos)
        if m is None or m.group(2) not in _UNITS:
            raise UsageError(f"{option}: {text!r} is not a duration (examples: 90, 30s, 5min, "
                             "1h30min, 2d)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not raw:
        raise UsageError(f"{option}: empty duration")
    return total


def format_duration(seconds: float) -> str:
    """A duration for people and for systemd: ``30s``, ``5min``, ``1h30min``, ``250ms``."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    s = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts) or "0s"


Snapshot = dict[str, tuple[int, ...] | None]


def snapshot(paths: Iterable[str]) -> Snapshot:
    """What ``lstat`` says about each path (``None``: absent)."""
    found: Snapshot = {}
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            found[p] = None
            continue
        found[p] = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode,
                    st.st_uid, st.st_gid)
    return found


def changed_paths(before: Snapshot) -> list[str]:
    now = snapshot(before)
    return [p for p in before if now[p] != before[p]]


class Watcher:
    """The loop: ``run(one_pass)`` until :meth:`stop` (or SIGTERM/SIGINT, see :meth:`signals`).

    ``one_pass(reason)`` applies once and returns the paths to watch until the next pass.
    """

    def __init__(self, interval: float, jitter: float = 0.0, *, poll: float = 1.0,
                 settle: float = 1.0, rng: random.Random | None = None) -> None:
        if interval <= 0:
            raise UsageError("--interval must be positive")
        if jitter < 0:
            raise UsageError("--jitter must not be negative")
        self.interval = interval
        self.jitter = jitter
        self.poll = poll
        self.settle = settle  # least time between the end of a pass and a change-started one
        self.rng = rng or random.Random()
        self._stop = threading.Event()
        self.passes = 0
        self.stopped_by: str | None = None
        self._baseline: Snapshot | None = None

    def stop(self, why: str = "stopped") -> None:
        self.stopped_by = self.stopped_by or why
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @contextlib.contextmanager
    def signals(self, which: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
                ) -> Iterator[None]:
        """While the block runs, these signals ask the loop to stop after the current pass
        (instead of killing it or raising KeyboardInterrupt in the middle of a change)."""
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop(signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in which}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def next_wait(self) -> float:
        return self.interval + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)

    def run(self, one_pass: Callable[[str], Sequence[str]]) -> None:
        reason = "start"
        while not self.stopping:
            self.passes += 1
            self._baseline = None
            paths = list(dict.fromkeys(one_pass(reason)))
            if self.stopping:
                break
            base = self._baseline if self._baseline is not None else snapshot(paths)
            reason = self._wait(base)

    def note_baseline(self, paths: Iterable[str]) -> None:
        """Record the watched files as the pass left them (before its report is written)."""
        self._baseline = snapshot(list(dict.fromkeys(paths)))

    def _wait(self, before: Snapshot) -> str:
        """Sleep until the interval is over or a watched path changes; the reason."""
        start = time.monotonic()
        deadline = start + self.next_wait()
        while not self.stopping:
            now = time.monotonic()
            if now >= deadline:
                return "interval"
            if self._stop.wait(min(self.poll, deadline - now)):
                break
            changed = changed_paths(before)
            if changed:
                rest = self.settle - (time.monotonic() - start)
                if rest > 0 and self._stop.wait(rest):
                    break
                more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
                return f"changed: {changed[0]}{more}"
        return "stopping"
