"""Low-level helpers of the test-host harness: paths, file locks, commands, mounts, processes.

Standard library only. Everything here runs on the machine that hosts the containers (as root).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tests.testhost")

DEFAULT_CACHE = "/var/tmp/converge-testhost"
CACHE_ENV = "CONVERGE_TESTHOST_CACHE"


class TestHostError(RuntimeError):
    """Any failure of the harness itself (not of the code under test)."""

    __test__ = False  # not a pytest test class


class CommandFailed(subprocess.CalledProcessError):
    """A command failed; carries argv, returncode, stdout and stderr and prints them readably."""

    def __init__(
        self, argv: Sequence[str], returncode: int, stdout: str, stderr: str, where: str = ""
    ) -> None:
        super().__init__(returncode, list(argv), stdout, stderr)
        self.argv = list(argv)
        self.where = where

    def __str__(self) -> str:
        on = f" on {self.where}" if self.where else ""
        parts = [f"command {self.argv!r}{on} exited with status {self.returncode}"]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text and text.strip():
                parts.append(f"--- {label} (last 2000 chars) ---\n{text[-2000:].rstrip()}")
        return "\n".join(parts)


def cache_dir() -> Path:
    """Root of everything the harness keeps on this machine (image, keys, apt cache, run state)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 300.0,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a host-side command, capturing text output; raise CommandFailed if check and rc != 0."""
    log.debug("run %s", list(argv))
    proc = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class FileLock:
    """An flock(2) on a lock file; released on release(), close or process death.

    The lock belongs to the open file description, so a child that inherits the descriptor
    (``pass_fds``) keeps the lock alive after this process exits.
    """

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        if self._fd is None:
            raise TestHostError(f"lock {self.path} is not held")
        return self._fd

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock. Non-blocking or with a timeout: return False if someone else holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                if blocking and deadline is None:
                    fcntl.flock(fd, mode)
                else:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    os.close(fd)
                    return False
                time.sleep(0.1)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing our descriptor drops our reference to the lock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """True if somebody holds an flock on path (probes with a non-blocking exclusive lock)."""
    if not path.exists():
        return False
    probe = FileLock(path)
    if probe.acquire(blocking=False):
        probe.release()
        return False
    return True


# --- mounts -----------------------------------------------------------------------------------


def _unescape_mount(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    mountpoint: Path
    fstype: str
    source: str
    options: str  # superblock options (lowerdir=... for overlayfs)


def mounts() -> list[Mount]:
    result = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        rfields = right.split()
        result.append(
            Mount(
                mountpoint=Path(_unescape_mount(fields[4])),
                fstype=rfields[0],
                source=_unescape_mount(rfields[1]) if len(rfields) > 1 else "",
                options=rfields[2] if len(rfields) > 2 else "",
            )
        )
    return result


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first (the order to unmount them in)."""
    root = path.resolve() if path.exists() else path
    found = {m.mountpoint for m in mounts() if m.mountpoint == root or root in m.mountpoint.parents}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path, *, attempts: int = 20) -> None:
    """Unmount everything at or below path; retry busy mounts, finally detach them lazily."""
    for attempt in range(attempts):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            lazy = attempt == attempts - 1
            run(["umount", *(["--lazy"] if lazy else []), str(point)], check=False)
        if mounts_under(path):
            time.sleep(0.1)
    left = mounts_under(path)
    if left:
        raise TestHostError(f"could not unmount {', '.join(map(str, left))}")


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts what is below path and never crosses into another filesystem."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all_under(path)
    run(["rm", "-rf", "--one-file-system", "--", str(path)])


# --- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    state: str
    cmdline: tuple[str, ...]


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2 :].split()
    cmdline = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1])
    return Proc(pid=pid, ppid=int(rest[1]), comm=comm, state=rest[0], cmdline=cmdline)


def processes() -> Iterator[Proc]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                yield proc


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    proc = read_proc(pid)
    return proc is not None and proc.state not in ("Z", "X")


def pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()
