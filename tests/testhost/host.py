"""Throwaway systemd hosts: systemd-nspawn containers booted from the cached image.

Each host gets a *slot* N (1..250), unique across concurrent runs on this machine: the slot is
an flock on ``run/N.lock`` held for the host's lifetime (by the owning Python process; for
detached hosts booted by the CLI, by the nspawn process, which inherits the descriptor). A
slot fixes the host's names and addresses:

    machine name  cvg-N          (host veth ve-cvg-N: interface names are limited to 15 chars)
    host side     10.250.N.1/24  on ve-cvg-N
    container     10.250.N.2/24  on host0, default route via 10.250.N.1 (no NAT: no internet)
    state         run/N/{upper,work,merged,console.log,meta.json,apt-archives.lock}

Whatever a crashed run left behind in a slot (overlay mount, veth, nspawn process, files) is
removed by whoever takes that slot next, or by cleanup_stale().
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._util import (
    CommandFailed,
    FileLock,
    Proc,
    TestHostError,
    alive,
    cache_dir,
    is_locked,
    link_exists,
    mounts,
    pid_namespace,
    processes,
    read_proc,
    remove_tree,
    run,
    unmount_all_under,
    wait_gone,
)
from .image import (
    Image,
    apt_archives_dir,
    apt_lists_dir,
    ensure_image,
    hosts_file,
    prefetch,
    prepare_apt_cache,
    ssh_key,
    ssh_public_key,
)

log = logging.getLogger("tests.testhost")

NET_PREFIX = "10.250"
MACHINE_PREFIX = "cvg"
SLOTS = range(1, 251)
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def run_dir() -> Path:
    return cache_dir() / "run"


@dataclass(frozen=True)
class Slot:
    index: int

    @property
    def machine(self) -> str:
        return f"{MACHINE_PREFIX}-{self.index}"

    @property
    def veth(self) -> str:
        return f"ve-{self.machine}"

    @property
    def subnet(self) -> str:
        return f"{NET_PREFIX}.{self.index}.0/24"

    @property
    def host_address(self) -> str:
        return f"{NET_PREFIX}.{self.index}.1"

    @property
    def address(self) -> str:
        return f"{NET_PREFIX}.{self.index}.2"

    @property
    def state_dir(self) -> Path:
        return run_dir() / str(self.index)

    @property
    def merged(self) -> Path:
        return self.state_dir / "merged"

    @property
    def lock_path(self) -> Path:
        return run_dir() / f"{self.index}.lock"

    @property
    def meta_path(self) -> Path:
        return self.state_dir / "meta.json"


@dataclass(frozen=True)
class Bind:
    """An extra bind mount into a host (read-only unless told otherwise)."""

    source: Path | str
    target: str
    readonly: bool = True

    def nspawn_arg(self) -> str:
        return f"--bind{'-ro' if self.readonly else ''}={self.source}:{self.target}"


# --- finding and killing containers -----------------------------------------------------------


def _option(cmdline: Sequence[str], short: str, long: str) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg in (short, long) and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(long + "="):
            return arg[len(long) + 1 :]
        if arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            return arg[len(short) :]
    return None


def _nspawns(machine: str) -> list[tuple[Proc, Path | None]]:
    """Live systemd-nspawn processes booting this machine name, with their root directory."""
    found = []
    for proc in processes():
        if not proc.cmdline or os.path.basename(proc.cmdline[0]) != "systemd-nspawn":
            continue
        if proc.state in ("Z", "X") or _option(proc.cmdline, "-M", "--machine") != machine:
            continue
        directory = _option(proc.cmdline, "-D", "--directory")
        found.append((proc, Path(directory) if directory else None))
    return found


def find_leader(nspawn_pid: int) -> int | None:
    """PID (as seen here) of the container's init: the nspawn child running systemd in its own
    PID namespace. nspawn's first child is a short-lived helper, so check both."""
    ours = pid_namespace("self")
    for proc in processes():
        if proc.ppid == nspawn_pid and proc.comm == "systemd" and proc.state not in ("Z", "X"):
            ns = pid_namespace(proc.pid)
            if ns is not None and ns != ours:
                return proc.pid
    return None


def _kill_container(nspawn_pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM nspawn (the container halts cleanly, ~2 s); SIGKILL init and nspawn if it hangs."""

    def gone(timeout: float) -> bool:
        if popen is not None:
            try:
                popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return wait_gone(nspawn_pid, timeout)

    if not alive(nspawn_pid):
        gone(0)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(nspawn_pid, signal.SIGTERM)
    if gone(15):
        return
    log.warning("container of nspawn %d did not halt in time; killing it", nspawn_pid)
    leader = find_leader(nspawn_pid)
    for pid in (leader, nspawn_pid):  # init first: killing it ends its whole PID namespace
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if not gone(10):
        raise TestHostError(f"nspawn process {nspawn_pid} survived SIGKILL")


def _delete_link(name: str) -> None:
    deadline = time.monotonic() + 3
    while link_exists(name) and time.monotonic() < deadline:
        time.sleep(0.05)  # nspawn's netns is going away and takes the veth with it
    if link_exists(name):
        run(["ip", "link", "delete", name], check=False)


def _reap_slot(slot: Slot) -> bool:
    """Remove everything of ours left in slot (caller holds its lock). True if anything was."""
    did = False
    for proc, directory in _nspawns(slot.machine):
        if directory == slot.merged:
            log.info("stopping stale container %s (nspawn pid %d)", slot.machine, proc.pid)
            _kill_container(proc.pid)
            did = True
    if slot.state_dir.exists():
        log.info("removing stale state of %s in %s", slot.machine, slot.state_dir)
        did = True
    if any(_cgroup_pids(group) for group in _cgroups(slot)):
        did = True
    _remove_cgroups(slot)
    unmount_all_under(slot.state_dir)
    if link_exists(slot.veth) and not _nspawns(slot.machine):
        log.info("removing stale link %s", slot.veth)
        _delete_link(slot.veth)
        did = True
    remove_tree(slot.state_dir)
    return did


def _used_by_others(slot: Slot) -> str | None:
    """Why slot is busy with something that is not ours (another cache dir, other tools)."""
    if _nspawns(slot.machine):
        return f"a container named {slot.machine} is running"
    if link_exists(slot.veth):
        return f"link {slot.veth} exists"
    prefix = f"{NET_PREFIX}.{slot.index}."
    routes = run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout
    addrs = run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    if prefix in routes or prefix in addrs:
        return f"{slot.subnet} is in use"
    return None


def _allocate_slot() -> tuple[Slot, FileLock]:
    for index in SLOTS:
        slot = Slot(index)
        lock = FileLock(slot.lock_path)
        if not lock.acquire(blocking=False):
            continue
        try:
            _reap_slot(slot)
            reason = _used_by_others(slot)
        except BaseException:
            lock.release()
            raise
        if reason is None:
            return slot, lock
        log.debug("skipping slot %d: %s", index, reason)
        lock.release()
    raise TestHostError(f"no free test-host slot in {run_dir()} (all {len(SLOTS)} taken)")


def cleanup_stale() -> list[str]:
    """Reap every slot whose owner is gone (crashed runs). Returns the machines cleaned."""
    cleaned: list[str] = []
    directory = run_dir()
    if not directory.is_dir():
        return cleaned
    indexes = {int(p.stem) for p in directory.glob("*.lock") if p.stem.isdigit()}
    indexes |= {int(p.name) for p in directory.iterdir() if p.name.isdigit()}
    for index in sorted(indexes):
        slot = Slot(index)
        lock = FileLock(slot.lock_path)
        if not lock.acquire(blocking=False):
            continue
        try:
            if _reap_slot(slot):
                cleaned.append(slot.machine)
        finally:
            lock.release()
    return cleaned


# --- cgroups ----------------------------------------------------------------------------------
#
# With --keep-unit and no systemd on the host, nspawn splits the cgroup it starts in into
# supervisor/ and payload/. Started from one shared cgroup, all containers would share one
# payload/ and their systemds would fight over the same unit cgroups (units failing at random
# with status 219/CGROUP). So each nspawn starts in its own cgroup, which also lets us find and
# kill whatever a host left behind.


def _cgroup_hierarchies() -> list[Path]:
    """Writable hierarchies systemd uses: cgroup2 and the named v1 systemd hierarchy."""
    found = []
    for m in mounts():
        options = m.options.split(",")
        systemd_hierarchy = m.fstype == "cgroup" and "name=systemd" in options
        if (m.fstype == "cgroup2" or systemd_hierarchy) and os.access(m.mountpoint, os.W_OK):
            found.append(m.mountpoint)
    return sorted(set(found))


def _cgroups(slot: Slot) -> list[Path]:
    # per cache dir, so that runs with another cache dir never touch our cgroups
    tag = hashlib.sha256(str(cache_dir()).encode()).hexdigest()[:8]
    return [root / f"converge-testhost-{tag}" / slot.machine for root in _cgroup_hierarchies()]


def _cgroup_pids(group: Path) -> set[int]:
    pids: set[int] = set()
    for dirpath, _, _ in os.walk(group):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


def _remove_cgroups(slot: Slot) -> None:
    """Kill whatever is still in the slot's cgroups, then remove them."""
    for group in _cgroups(slot):
        if not group.exists():
            continue
        deadline = time.monotonic() + 10
        while pids := {pid for pid in _cgroup_pids(group) if alive(pid)}:
            if time.monotonic() >= deadline:
                raise TestHostError(f"processes {sorted(pids)} in {group} survive SIGKILL")
            log.info("killing leftover processes %s of %s", sorted(pids), slot.machine)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for dirpath, _, _ in os.walk(group, topdown=False):
            for _ in range(50):  # a just-emptied cgroup can be busy for a moment
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                raise TestHostError(f"cannot remove cgroup {dirpath}")


# --- the host ---------------------------------------------------------------------------------

_INTO_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class TestHost:
    """A throwaway systemd host. ``boot()`` it, ``run()`` commands in it, ``stop()`` it.

    name is the host's hostname (not its machine name, which comes from the slot). With
    detach=True (the CLI), the host outlives this process until ``stop()``.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        name: str = "testhost",
        *,
        image: Image | None = None,
        binds: Sequence[Bind] = (),
        nspawn_args: Sequence[str] = (),
        boot_timeout: float = 60.0,
        detach: bool = False,
    ) -> None:
        if not _HOSTNAME_RE.match(name):
            raise ValueError(f"invalid host name {name!r} (lowercase letters, digits, '-')")
        self.name = name
        self.binds = tuple(binds)
        self.nspawn_args = tuple(nspawn_args)
        self.boot_timeout = boot_timeout
        self.detach = detach
        self.slot: Slot | None = None
        self.image_root: Path | None = image.root if image is not None else None
        self.boot_seconds: float | None = None
        self._image = image
        self._image_lock: FileLock | None = None
        self._slot_lock: FileLock | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._nspawn_pid: int | None = None
        self._leader: int | None = None

    def __repr__(self) -> str:
        where = f" {self.machine} {self.address}" if self.slot else ""
        return f"<TestHost {self.name}{where}>"

    def __enter__(self) -> TestHost:
        if self._nspawn_pid is None:
            self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- identity ----------------------------------------------------------------------------

    def _slot(self) -> Slot:
        if self.slot is None:
            raise TestHostError(f"{self.name} is not booted")
        return self.slot

    @property
    def machine(self) -> str:
        return self._slot().machine

    @property
    def address(self) -> str:
        """The host's private IPv4 address, reachable from this machine."""
        return self._slot().address

    @property
    def host_address(self) -> str:
        """This machine's address on the host's network (e.g. to serve something to it)."""
        return self._slot().host_address

    @property
    def state_dir(self) -> Path:
        return self._slot().state_dir

    @property
    def console_log(self) -> Path:
        return self.state_dir / "console.log"

    @property
    def ssh_user(self) -> str:
        return "root"

    @property
    def ssh_key(self) -> Path:
        return ssh_key()

    @property
    def leader(self) -> int:
        """PID of the container's init as seen from this machine."""
        if self._leader is None or not alive(self._leader):
            pid = self._nspawn_pid
            leader = find_leader(pid) if pid is not None else None
            if leader is None:
                raise TestHostError(f"{self!r} is not running")
            self._leader = leader
        return self._leader

    @property
    def running(self) -> bool:
        return self._nspawn_pid is not None and alive(self._nspawn_pid)

    # --- lifecycle ---------------------------------------------------------------------------

    def boot(self) -> TestHost:
        """Allocate a slot, mount the overlay, start systemd and wait until it is running."""
        if self.slot is not None:
            raise TestHostError(f"{self!r} is already booted")
        started = time.monotonic()
        try:
            self._acquire_image()
            key = ssh_public_key()
            prepare_apt_cache()
            self.slot, self._slot_lock = _allocate_slot()
            self._prepare_root(key)
            self._start()
            self._wait_leader()
            self._setup_network()
            self.wait_running(self.boot_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        log.info("booted %r in %.1f s", self, self.boot_seconds)
        if self.detach:  # the nspawn process holds the slot and image locks from now on
            for lock in (self._slot_lock, self._image_lock):
                if lock is not None:
                    lock.release()
        return self

    def _acquire_image(self) -> None:
        own = self._image is None
        image = self._image or ensure_image()
        try:
            self.image_root = image.root
            self._image_lock = FileLock(image.lock_path, shared=True)
            self._image_lock.acquire()
            if not image.root.is_dir():
                raise TestHostError(f"image {image.root} vanished")
        finally:
            if own:
                image.release()

    def _prepare_root(self, authorized_key: str) -> None:
        slot = self._slot()
        for sub in ("upper", "work", "merged"):
            (slot.state_dir / sub).mkdir(parents=True, exist_ok=True)
        run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.image_root},upperdir={slot.state_dir / 'upper'},"
                f"workdir={slot.state_dir / 'work'}",
                str(slot.merged),
            ]
        )
        # per-host files go to the overlay's upper dir, never into the image
        etc = slot.merged / "etc"
        (etc / "hostname").write_text(f"{self.name}\n")
        (etc / "hosts").write_text(hosts_file(self.name))
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        ssh_dir = slot.merged / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(authorized_key)
        keys.chmod(0o600)
        # apt in each host locks its own file: the shared archive dir's lock would make
        # concurrent installs in different hosts fail ("Unable to lock the download directory")
        (slot.state_dir / "apt-archives.lock").touch()
        (slot.state_dir / "apt-auxfiles").mkdir(exist_ok=True)

    def _nspawn_argv(self) -> list[str]:
        slot = self._slot()
        return [
            "systemd-nspawn",
            "--directory",
            str(slot.merged),
            "--machine",
            slot.machine,
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "--network-veth",
            "--link-journal=no",
            "--resolv-conf=off",
            f"--bind={apt_archives_dir()}:/var/cache/apt/archives",
            f"--bind={slot.state_dir / 'apt-archives.lock'}:/var/cache/apt/archives/lock",
            f"--bind-ro={apt_lists_dir()}:/var/lib/apt/lists",
            f"--bind={slot.state_dir / 'apt-auxfiles'}:/var/lib/apt/lists/auxfiles",
            *(b.nspawn_arg() for b in self.binds),
            *self.nspawn_args,
        ]

    def _start(self) -> None:
        slot = self._slot()
        argv = self._nspawn_argv()
        pass_fds: tuple[int, ...] = ()
        # start nspawn in its own cgroup(s) (see _cgroups) through a tiny sh wrapper
        procs = []
        for group in _cgroups(slot):
            group.mkdir(parents=True, exist_ok=True)
            procs.append(str(group / "cgroup.procs"))
        argv = ["sh", "-c", _INTO_CGROUPS, "nspawn-wrapper", *procs, "--", *argv]
        if self.detach:
            locks = (self._slot_lock, self._image_lock)
            pass_fds = tuple(lock.fileno() for lock in locks if lock is not None)
        elif threading.current_thread() is threading.main_thread():
            # if this process dies, even by SIGKILL, nspawn gets SIGTERM and halts the host.
            # PDEATHSIG fires when the parent *thread* ends: only safe from the main thread.
            argv = ["setpriv", "--pdeathsig", "TERM", *argv]
        with (slot.state_dir / "console.log").open("wb") as console:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        self._nspawn_pid = self._popen.pid
        slot.meta_path.write_text(
            json.dumps(
                {
                    "name": self.name,
                    "index": slot.index,
                    "machine": slot.machine,
                    "address": slot.address,
                    "nspawn_pid": self._nspawn_pid,
                    "image": str(self.image_root),
                    "detached": self.detach,
                    "owner_pid": os.getpid(),
                },
                indent=2,
            )
            + "\n"
        )

    def _console_tail(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _wait_leader(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        assert self._nspawn_pid is not None
        while True:
            leader = find_leader(self._nspawn_pid)
            if leader is not None:
                self._leader = leader
                return
            if not alive(self._nspawn_pid):
                raise TestHostError(f"nspawn exited early; console:\n{self._console_tail()}")
            if time.monotonic() >= deadline:
                raise TestHostError(f"container did not start; console:\n{self._console_tail()}")
            time.sleep(0.02)

    def _setup_network(self) -> None:
        slot = self._slot()
        deadline = time.monotonic() + 10
        while not link_exists(slot.veth):
            if time.monotonic() >= deadline:
                raise TestHostError(f"{slot.veth} did not appear")
            time.sleep(0.02)
        run(["ip", "address", "add", f"{slot.host_address}/24", "dev", slot.veth])
        run(["ip", "link", "set", slot.veth, "up"])
        inside = ["nsenter", "--target", str(self.leader), "--net", "ip"]
        run([*inside, "address", "add", f"{slot.address}/24", "dev", "host0"])
        run([*inside, "link", "set", "host0", "up"])
        # A default route like a real host's. Safe only because this machine does not forward
        # (no way out); otherwise leave it away so tests cannot reach beyond their hosts.
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0":
            run([*inside, "route", "add", "default", "via", slot.host_address])
        else:
            log.warning("ip_forward is on here: %r gets no default route", self)

    def wait_running(self, timeout: float = 60.0) -> str:
        """Wait until ``systemctl is-system-running`` says running or degraded; return it."""
        deadline = time.monotonic() + timeout
        state = ""
        while True:
            try:
                state = self.run(
                    ["systemctl", "is-system-running"], check=False, timeout=10
                ).stdout.strip()
            except subprocess.TimeoutExpired:
                state = "(timeout)"
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run(["systemctl", "--failed", "--no-legend"], check=False)
                    log.warning("%r is degraded:\n%s", self, failed.stdout)
                return state
            if not self.running:
                tail = self._console_tail()
                raise TestHostError(f"{self!r} stopped while booting; console:\n{tail}")
            if time.monotonic() >= deadline:
                raise TestHostError(f"{self!r} not running after {timeout} s (state {state!r})")
            time.sleep(0.05)

    def stop(self) -> None:
        """Halt the host and remove everything it had (idempotent, safe after a failed boot)."""
        slot = self.slot
        errors: list[BaseException] = []
        if self._nspawn_pid is not None:
            try:
                _kill_container(self._nspawn_pid, self._popen)
            except Exception as exc:  # keep cleaning up, report at the end
                errors.append(exc)
        if slot is not None:
            lock = self._slot_lock or FileLock(slot.lock_path)
            if not lock.acquire(timeout=30):
                errors.append(TestHostError(f"slot {slot.index} is still locked by someone"))
            else:
                try:
                    _remove_cgroups(slot)
                    unmount_all_under(slot.state_dir)
                    _delete_link(slot.veth)
                    remove_tree(slot.state_dir)
                except Exception as exc:
                    errors.append(exc)
                finally:
                    lock.release()
        if self._image_lock is not None:
            self._image_lock.release()
        self.slot = None
        self._slot_lock = self._image_lock = None
        self._popen = None
        self._nspawn_pid = self._leader = None
        if errors:
            raise TestHostError(f"stopping {self.name} failed: {errors!r}") from errors[0]

    # --- using it ----------------------------------------------------------------------------

    def run_bytes(
        self,
        argv: str | Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Like run() but with bytes in and out."""
        args = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
        environment = {
            "HOME": "/root",
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "PATH": CONTAINER_PATH,
            **(env or {}),
        }
        cmd = [
            "nsenter",
            "--target",
            str(self.leader),
            "--all",
            "env",
            "-i",
            *(["--chdir", cwd] if cwd else []),
            *(f"{k}={v}" for k, v in environment.items()),
            *args,
        ]
        # own session, so a timeout can kill what nsenter started inside, too
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(args, timeout or 0, out, err) from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if check and proc.returncode != 0:
            raise CommandFailed(
                args,
                proc.returncode,
                out.decode("utf-8", "replace"),
                err.decode("utf-8", "replace"),
                where=self.name,
            )
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def run(
        self,
        argv: str | Sequence[str],
        *,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float | None = 300.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host as root (clean environment plus env); a str runs via sh -c.

        Returns text output; raises CommandFailed (a CalledProcessError) if check and rc != 0,
        subprocess.TimeoutExpired after timeout seconds (the command is killed).
        """
        data = input.encode() if isinstance(input, str) else input
        result = self.run_bytes(argv, input=data, check=check, timeout=timeout, env=env, cwd=cwd)
        return subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )

    def put_file(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Write a file inside the host (parent directories created), owned by root."""
        self.run_bytes(
            [
                "sh",
                "-c",
                'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" -- "$1"',
                "put_file",
                path,
                f"{mode:o}",
            ],
            input=data.encode() if isinstance(data, str) else data,
        )

    def get_file(self, path: str) -> bytes:
        return self.run_bytes(["cat", "--", path]).stdout

    def install(self, *packages: str, timeout: float = 900.0) -> None:
        """Install Debian packages: prefetch them on the host, then apt-get install offline."""
        image = self._image or ensure_image()
        try:
            prefetch(packages, image=image, timeout=timeout)
        finally:
            if self._image is None:
                image.release()
        self.run(
            ["apt-get", "install", "-y", "-q", *packages],
            env={"DEBIAN_FRONTEND": "noninteractive"},
            timeout=timeout,
        )

    def ssh_argv(self, *command: str) -> list[str]:
        """argv for ``ssh root@address [command]`` with the test key, no host key checks."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.ssh_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            f"{self.ssh_user}@{self.address}",
            *command,
        ]

    # --- hosts booted by another process (CLI) -----------------------------------------------

    @classmethod
    def find(cls, name: str) -> TestHost:
        """Attach to a running host booted by another process (e.g. the CLI) by its name."""
        for meta in list_hosts():
            if meta["name"] == name and meta["running"]:
                return cls._attach(meta)
        raise TestHostError(f"no running test host named {name!r}")

    @classmethod
    def _attach(cls, meta: Mapping[str, Any]) -> TestHost:
        host = cls(str(meta["name"]), detach=bool(meta["detached"]))
        host.slot = Slot(int(meta["index"]))
        host.image_root = Path(meta["image"])
        host._nspawn_pid = int(meta["nspawn_pid"])
        return host


def list_hosts() -> list[dict[str, Any]]:
    """Metadata of the hosts in the run dir (running or stale)."""
    result = []
    for meta_path in sorted(run_dir().glob("*/meta.json")):
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(meta_path.read_text())
            slot = Slot(int(meta["index"]))
            proc = read_proc(int(meta["nspawn_pid"]))
            meta["running"] = (
                proc is not None
                and proc.state not in ("Z", "X")
                and _option(proc.cmdline, "-D", "--directory") == str(slot.merged)
            )
            meta["slot_locked"] = is_locked(slot.lock_path)
            result.append(meta)
    return result


def iter_running() -> Iterator[TestHost]:
    for meta in list_hosts():
        if meta["running"]:
            yield TestHost._attach(meta)
