"""A remote host over OpenSSH: the :class:`~converge.host.Host` protocol, in few round trips.

Transport: the ``ssh`` client (the user's ssh config and agent, ``BatchMode=yes``, host keys
checked: ``StrictHostKeyChecking=yes`` unless an ssh option says otherwise). One master
connection per host per run (``ControlMaster``/``ControlPath`` in a private directory,
``ControlPersist=60``), every exchange a multiplexed session over it, the master closed by
:meth:`SshHost.close` (``ssh -O exit``).

Nothing is installed on the target: every exchange runs ``python3 -c REMOTE`` (the small,
stdlib-only program below, Python 3.6+) and talks to it on stdin/stdout:

- ``run``: the first stdin line is JSON ``{argv, env, cwd, timeout}`` (so environment values,
  which may be secrets, never appear in an argv on either machine), the rest of stdin is the
  command's input. The command's stdout/stderr are relayed as they are; the helper appends a
  marker with the exit status to stderr, so a dropped connection is never mistaken for a
  command's failure.
- ``ops``: a JSON batch of file and account operations (lstat+read of a whole batch of paths,
  atomic writes with owner and mode set before the rename, backups under the target's state
  directory, ``which``, facts...), answered with one JSON document: one round trip each.
- ``lock``: holds ``STATE_DIR/run.lock`` on the target (the lock a local ``converge apply`` on
  that machine takes too) for as long as the session's stdin stays open.

Remote command lines are always ``shlex.join`` of an argv list.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.errors import CommandError, ConvergeError, LockError, ResourceError
from converge.host import DEFAULT_STATE_DIR, DEFAULT_TIMEOUT, FileState, Result

if TYPE_CHECKING:
    from converge.facts import Facts


class HostUnreachable(ConvergeError):
    """The host could not be reached (connection, authentication, host key, no python3)."""


#: the program run on the target for every exchange (stdlib only, Python 3.6+)
REMOTE = r'''
import base64, errno, json, os, shutil, stat, sys, tempfile
MARK = b"\x00CONVERGE-RC "
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEEP = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR")

def header():
    data = b""
    while True:
        c = os.read(0, 1)
        if not c or c == b"\n":
            return json.loads(data.decode("utf-8"))
        data += c

def full_path(path):
    dirs = [d for d in (path or "").split(":") if d]
    for d in STD_PATH.split(":"):
        if d not in dirs:
            dirs.append(d)
    return ":".join(dirs)

def mark(doc):
    os.write(2, MARK + json.dumps(doc).encode() + b"\n")

def run(req):
    import signal, subprocess
    env = dict((k, os.environ[k]) for k in KEEP if k in os.environ)
    env["PATH"] = full_path(env.get("PATH"))
    env["LC_ALL"] = "C"
    env.update(req.get("env") or {})
    cwd = req.get("cwd")
    if cwd and not os.path.isdir(cwd):
        return mark({"rc": None, "reason": "could not be run: no directory %s" % cwd})
    stdin = None if req.get("input") else subprocess.DEVNULL
    try:
        p = subprocess.Popen(req["argv"], env=env, cwd=cwd or None, stdin=stdin,
                             start_new_session=True)
    except FileNotFoundError:
        return mark({"rc": None, "reason": "could not be run: command not found"})
    except PermissionError:
        return mark({"rc": None, "reason": "could not be run: permission denied"})
    try:
        rc = p.wait(req.get("timeout"))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
        return mark({"rc": None, "reason": "timed out after %s s" % req.get("timeout")})
    if rc < 0:
        return mark({"rc": None, "reason": "was killed by signal %d" % -rc})
    mark({"rc": rc})

def lock(req):
    import fcntl, time
    d = req["dir"]
    os.makedirs(d, 0o700, exist_ok=True)
    fd = os.open(os.path.join(d, "run.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.time() + req.get("wait", 0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.time() >= deadline:
                holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip() or "unknown"
                sys.stdout.write("busy %s\n" % holder)
                sys.stdout.flush()
                return
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, ("%d\n" % os.getpid()).encode(), 0)
    sys.stdout.write("locked\n")
    sys.stdout.flush()
    while os.read(0, 4096):
        pass
    os.ftruncate(fd, 0)

def kind(mode):
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"

def read(path):
    try:
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Failed("cannot read %s: %s" % (path, exc.strerror))

class Failed(Exception):
    pass

def names(ids, lookup):
    found = {}
    for i in ids:
        try:
            found[str(i)] = lookup(i)[0]
        except KeyError:
            found[str(i)] = str(i)
    return found

def op_stat(req):
    import grp, pwd
    states, uids, gids = {}, set(), set()
    content = set(req.get("content") or ())
    for path in req["paths"]:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            states[path] = None
            continue
        except OSError as exc:
            raise Failed("cannot inspect %s: %s" % (path, exc.strerror))
        k = kind(st.st_mode)
        data = target = None
        if k == "file" and path in content:
            data = read(path)
        elif k == "link":
            target = os.readlink(path)
        states[path] = [k, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data, target]
        uids.add(st.st_uid)
        gids.add(st.st_gid)
    return {"states": states, "users": names(uids, pwd.getpwuid),
            "groups": names(gids, grp.getgrgid)}

def fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

def op_write(req):
    path, uid, gid, mode = req["path"], req.get("uid"), req.get("gid"), req.get("mode")
    directory = os.path.dirname(path) or "."
    try:
        cur = os.lstat(path)
    except FileNotFoundError:
        cur = None
    if cur is not None and not stat.S_ISLNK(cur.st_mode):
        uid = cur.st_uid if uid is None else uid
        gid = cur.st_gid if gid is None else gid
        mode = stat.S_IMODE(cur.st_mode) if mode is None else mode
    if mode is None:
        mode = 0o644
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                   suffix=".converge", dir=directory)
    except OSError as exc:
        raise Failed("cannot create a file in %s: %s" % (directory, exc.strerror))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(req["data"]))
            f.flush()
            if uid is not None or gid is not None:
                os.fchown(f.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise Failed("cannot write %s: %s" % (path, exc.strerror))
    fsync_dir(directory)

def op_mkdir(req):
    path, uid, gid = req["path"], req.get("uid"), req.get("gid")
    try:
        os.mkdir(path, 0o700)
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        os.chmod(path, req["mode"])
    except OSError as exc:
        raise Failed("cannot create directory %s: %s" % (path, exc.strerror))

def op_symlink(req):
    path = req["path"]
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".converge-link")
    try:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(req["target"], tmp)
        os.rename(tmp, path)
    except OSError as exc:
        raise Failed("cannot create link %s: %s" % (path, exc.strerror))

def op_chown(req):
    uid, gid = req.get("uid"), req.get("gid")
    try:
        os.lchown(req["path"], -1 if uid is None else uid, -1 if gid is None else gid)
    except OSError as exc:
        raise Failed("cannot change owner of %s: %s" % (req["path"], exc.strerror))

def op_chmod(req):
    try:
        os.chmod(req["path"], req["mode"])
    except OSError as exc:
        raise Failed("cannot change mode of %s: %s" % (req["path"], exc.strerror))

def op_remove(req):
    path = req["path"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            if req.get("recursive"):
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise Failed("directory %s is not empty" % path)
        raise Failed("cannot remove %s: %s" % (path, exc.strerror))

def op_backup(req):
    path, root = req["path"], req["root"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    first = os.path.join(root, path.lstrip("/"))
    dest, n = first, 0
    while os.path.lexists(dest):
        n += 1
        dest = "%s.%d" % (first, n)
    try:
        os.makedirs(os.path.dirname(dest), 0o700, exist_ok=True)
        os.chmod(os.path.dirname(root), 0o700)
        if stat.S_ISDIR(st.st_mode):
            shutil.copytree(path, dest, symlinks=True)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), dest)
        else:
            shutil.copy2(path, dest)
    except OSError as exc:
        raise Failed("cannot back up %s to %s: %s" % (path, dest, exc.strerror))
    return dest

def which(names):
    path = full_path(os.environ.get("PATH"))
    return dict((n, shutil.which(n, path=path)) for n in names)

def accounts():
    import grp, pwd
    return {"users": dict((u.pw_name, u.pw_uid) for u in pwd.getpwall()),
            "groups": dict((g.gr_name, g.gr_gid) for g in grp.getgrall())}

def op_facts(req):
    import platform, socket
    files = {}
    for path in req["files"]:
        try:
            files[path] = read(path)
        except Failed:
            files[path] = None
    doc = {"files": files, "which": which(req["which"]), "hostname": socket.gethostname(),
           "python": platform.python_version(), "euid": os.geteuid()}
    doc.update(accounts())
    return doc

OPS = {"stat": op_stat, "read": lambda r: read(r["path"]), "write": op_write,
       "mkdir": op_mkdir, "symlink": op_symlink, "chown": op_chown, "chmod": op_chmod,
       "remove": op_remove, "backup": op_backup, "which": lambda r: which(r["names"]),
       "accounts": lambda r: accounts(), "facts": op_facts}

def ops(req):
    data = b""
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        data += chunk
    results = []
    for req in json.loads(data.decode("utf-8")):
        try:
            results.append({"ok": OPS[req["op"]](req)})
        except Failed as exc:
            results.append({"error": str(exc)})
        except OSError as exc:
            results.append({"error": "%s: %s" % (exc.filename or req["op"], exc.strerror)})
    sys.stdout.write(json.dumps(results))
    sys.stdout.flush()

req = header()
{"run": run, "lock": lock, "ops": ops}[req["mode"]](req)
'''

_MARK = b"\x00CONVERGE-RC "
#: what ``python3 -c`` gets: REMOTE compressed (10 kB -> 4 kB on every exchange's command line)
_BOOTSTRAP = ("import base64,zlib;exec(zlib.decompress(base64.b64decode('"
              + base64.b64encode(zlib.compress(REMOTE.encode(), 9)).decode() + "')))")
#: files and commands the facts round trip brings back (what Facts.gather looks at)
FACT_FILES = ("/etc/os-release", "/proc/1/comm", "/sys/fs/selinux/enforce", "/etc/selinux/config")
FACT_COMMANDS = ("apt-get", "dnf", "yum", "getenforce", "systemctl", "timeout", "useradd",
                 "systemd-analyze", "firewall-cmd", "firewall-offline-cmd", "supervisorctl")
#: how long connecting may take, by default
CONNECT_TIMEOUT = 15


@dataclass(frozen=True)
class Target:
    """Where and how to reach one host (from ``--host`` or an inventory)."""

    name: str  # as the user calls it: inventory name or the --host argument
    address: str  # what ssh connects to (a name from ssh_config, a DNS name or an address)
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()  # extra -o options, before converge's own (they win)
    python: str = "python3"
    state_dir: str = DEFAULT_STATE_DIR
    connect_timeout: int = CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        for what, value in (("address", self.address), ("user", self.user or "x"),
                            ("python", self.python)):
            if not value or value.startswith("-") or any(c.isspace() for c in value):
                raise ValueError(f"{self.name}: invalid {what} {value!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"{self.name}: invalid port {self.port}")

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}" if self.user else self.address

    @property
    def display(self) -> str:
        """The destination with its port, for people."""
        if self.port is None:
            return self.destination
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}:{self.port}" if self.user else f"{host}:{self.port}"


def parse_target(text: str, **settings: Any) -> Target:
    """``[user@]host[:port]`` (``[v6addr]:port`` for IPv6) from ``--host``."""
    user: str | None = None
    rest = text
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
    port: int | None = None
    if rest.startswith("["):
        addr, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(text, tail[1:])
        elif tail:
            raise ValueError(f"invalid host {text!r}")
        rest = addr
    elif rest.count(":") == 1:
        rest, _, p = rest.partition(":")
        port = _port(text, p)
    settings.setdefault("user", user)
    if port is not None:
        settings["port"] = port
    return Target(name=text, address=rest, **settings)


def _port(text: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"invalid port in host {text!r}")
    return int(value)


@dataclass
class _Counter:
    round_trips: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: int, received: int) -> None:
        with self.lock:
            self.round_trips += 1
            self.bytes_out += sent
            self.bytes_in += received


class SshHost:
    """A host reached over OpenSSH (see the module docstring)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.name
        self.state_dir = Path(target.state_dir)
        self.counter = _Counter()
        self._control_dir: str | None = None
        self._connected = False
        self._backup_stamp: str | None = None
        self._which: dict[str, str | None] = {}
        self._users: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._user_names: dict[int, str] = {}
        self._group_names: dict[int, str] = {}
        self._preloaded: dict[str, bytes | None] = {}
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SshHost {self.name} {self.target.display}>"

    # -- connection -------------------------------------------------------------------------

    def _ssh_base(self) -> list[str]:
        t = self.target
        assert self._control_dir is not None
        argv = ["ssh"]
        for opt in t.ssh_options:  # first: for ssh the first value given wins
            argv += ["-o", opt]
        argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                 "-o", f"ConnectTimeout={t.connect_timeout}",
                 "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                 "-o", f"ControlPath={self._control_dir}/%C"]
        if t.port is not None:
            argv += ["-p", str(t.port)]
        if t.identity_file:
            argv += ["-i", os.path.expanduser(t.identity_file)]
        return argv

    def connect(self) -> None:
        """Open the master connection (one per host per run); raise HostUnreachable."""
        if self._connected:
            return
        if shutil.which("ssh") is None:
            raise HostUnreachable("the OpenSSH client (ssh) is not installed on this machine")
        self._control_dir = tempfile.mkdtemp(prefix="converge-ssh-")
        argv = [*self._ssh_base(), "-o", "ControlMaster=yes", "-o", "ControlPersist=60",
                "-N", "-f", self.target.destination]
        # -f: the master goes to the background once authenticated; its stderr is a file, so
        # that no pipe stays open behind it
        with tempfile.TemporaryFile() as errfile:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=errfile, timeout=self.target.connect_timeout + 30)
            except subprocess.TimeoutExpired:
                self._cleanup_dir()
                raise HostUnreachable("connecting timed out") from None
            errfile.seek(0)
            message = errfile.read().decode("utf-8", "replace").strip()
        self.counter.add(0, 0)
        if proc.returncode != 0:
            self._cleanup_dir()
            raise HostUnreachable(f"cannot connect to {self.target.display}"
                                  f": {_last_lines(message) or f'ssh exited {proc.returncode}'}")
        self._connected = True

    def close(self) -> None:
        """Close the master connection and forget the control directory."""
        if self._control_dir is None:
            return
        if self._connected:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([*self._ssh_base(), "-O", "exit", self.target.destination],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30)
            self._connected = False
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._control_dir is not None:
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None

    def __enter__(self) -> SshHost:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remote_argv(self) -> list[str]:
        remote = shlex.join([self.target.python, "-c", _BOOTSTRAP])
        return [*self._ssh_base(), "-o", "ControlMaster=no", "-T", self.target.destination,
                remote]

    def _exchange(self, stdin: bytes, timeout: float | None) -> subprocess.CompletedProcess[bytes]:
        if not self._connected:
            self.connect()
        try:
            proc = subprocess.run(self._remote_argv(), input=stdin, capture_output=True,
                                  timeout=None if timeout is None else timeout + 60)
        except subprocess.TimeoutExpired:
            raise HostUnreachable("no answer from the host") from None
        self.counter.add(len(stdin), len(proc.stdout) + len(proc.stderr))
        return proc

    def _unreachable(self, proc: subprocess.CompletedProcess[bytes]) -> HostUnreachable:
        err = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode == 127:
            return HostUnreachable(f"{self.target.python} not found on the host "
                                   f"(converge needs python3 there): {_last_lines(err)}")
        return HostUnreachable(f"lost the connection (ssh exited "
                               f"{proc.returncode}): {_last_lines(err)}")

    # -- commands ---------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> Result:
        """Run ``argv`` on the host (no shell there either); like :meth:`LocalHost.run`."""
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        data = input.encode() if isinstance(input, str) else (input or b"")
        head = {"mode": "run", "argv": argv, "env": dict(env or {}), "cwd": cwd,
                "timeout": timeout, "input": input is not None}
        proc = self._exchange(json.dumps(head).encode() + b"\n" + data, timeout)
        with self._cache_lock:  # a command may have installed commands or added users
            self._which = {k: v for k, v in self._which.items() if v is not None}
        pos = proc.stderr.rfind(_MARK)
        if pos < 0:
            raise self._unreachable(proc)
        status = json.loads(proc.stderr[pos + len(_MARK):].decode())
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr[:pos].decode("utf-8", "replace")
        if status["rc"] is None:
            raise CommandError(argv, None, stdout, stderr, reason=status["reason"])
        result = Result(tuple(argv), int(status["rc"]), stdout, stderr)
        if check and result.returncode != 0:
            raise CommandError(argv, result.returncode, result.stdout, result.stderr)
        return result

    def ops(self, requests: Sequence[dict[str, Any]]) -> list[Any]:
        """Run a batch of operations in one round trip; raise the first one's error."""
        proc = self._exchange(b'{"mode": "ops"}\n' + json.dumps(list(requests)).encode(), 600)
        if proc.returncode != 0 or not proc.stdout.startswith(b"["):
            raise self._unreachable(proc)
        results: list[dict[str, Any]] = json.loads(proc.stdout)
        for r in results:
            if "error" in r:
                raise ResourceError(r["error"])
        return [r["ok"] for r in results]

    def op(self, request: dict[str, Any]) -> Any:
        return self.ops([request])[0]

    @contextlib.contextmanager
    def lock(self, *, wait: float = 0.0) -> Iterator[None]:
        """Hold the target's run lock (``STATE_DIR/run.lock``) for the duration."""
        if not self._connected:
            self.connect()
        head = json.dumps({"mode": "lock", "dir": str(self.state_dir), "wait": wait})
        proc = subprocess.Popen(self._remote_argv(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(head.encode() + b"\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().decode("utf-8", "replace").strip()
            self.counter.add(len(head) + 1, len(answer))
            if answer.startswith("busy"):
                waited = f" after waiting {wait:g}s" if wait else ""
                raise LockError(f"another converge run (pid "
                                f"{answer[5:] or 'unknown'}) holds {self.state_dir}/run.lock"
                                f"{waited}")
            if answer != "locked":
                proc.stdin.close()
                err = proc.stderr.read() if proc.stderr else b""
                raise HostUnreachable(f"cannot take the run lock: "
                                      f"{_last_lines(err.decode('utf-8', 'replace'))}")
            yield
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def which(self, command: str) -> str | None:
        with self._cache_lock:
            if command in self._which:
                return self._which[command]
        found: dict[str, str | None] = self.op({"op": "which", "names": [command]})
        with self._cache_lock:
            self._which.update(found)
        return found[command]

    # -- facts --------------------------------------------------------------------------------

    def gather_facts(self, commands: Iterable[str] = ()) -> Facts:
        """The host's facts in one round trip (also warms the which and account caches)."""
        from converge.facts import Facts

        names = sorted({*FACT_COMMANDS, *commands})
        doc = self.op({"op": "facts", "files": list(FACT_FILES), "which": names})
        with self._cache_lock:
            self._which.update(doc["which"])
            self._set_accounts(doc)
            self._preloaded = {p: None if v is None else base64.b64decode(v)
                               for p, v in doc["files"].items()}
        try:
            facts = Facts.gather(self)  # reads and which-lookups answered from the caches
        finally:
            self._preloaded = {}
        return replace(facts, hostname=doc["hostname"], python_version=doc["python"])

    def _set_accounts(self, doc: Mapping[str, Any]) -> None:
        self._users = dict(doc["users"])
        self._groups = dict(doc["groups"])
        self._user_names.update({v: k for k, v in reversed(self._users.items())})
        self._group_names.update({v: k for k, v in reversed(self._groups.items())})

    # -- files ------------------------------------------------------------------------------

    def file_states(
        self, paths: Iterable[str], *, content_for: frozenset[str] = frozenset()
    ) -> dict[str, FileState | None]:
        paths = list(paths)
        if not paths:
            return {}
        wanted = [p for p in paths if p in content_for]
        doc = self.op({"op": "stat", "paths": paths, "content": wanted})
        with self._cache_lock:
            self._user_names.update({int(k): v for k, v in doc["users"].items()})
            self._group_names.update({int(k): v for k, v in doc["groups"].items()})
        states: dict[str, FileState | None] = {}
        for path, st in doc["states"].items():
            if st is None:
                states[path] = None
                continue
            kind, mode, uid, gid, content, target = st
            states[path] = FileState(kind, mode, uid, gid,
                                     None if content is None else base64.b64decode(content),
                                     target)
        return states

    def read_bytes(self, path: str) -> bytes | None:
        if path in self._preloaded:
            return self._preloaded[path]
        data = self.op({"op": "read", "path": path})
        return None if data is None else base64.b64decode(data)

    def write_atomic(
        self, path: str, data: bytes, *, uid: int | None, gid: int | None, mode: int | None
    ) -> None:
        self.op({"op": "write", "path": path, "data": base64.b64encode(data).decode(),
                 "uid": uid, "gid": gid, "mode": mode})

    def make_directory(self, path: str, *, uid: int | None, gid: int | None, mode: int) -> None:
        self.op({"op": "mkdir", "path": path, "uid": uid, "gid": gid, "mode": mode})

    def make_symlink(self, path: str, target: str) -> None:
        self.op({"op": "symlink", "path": path, "target": target})

    def set_owner(self, path: str, uid: int | None, gid: int | None) -> None:
        self.op({"op": "chown", "path": path, "uid": uid, "gid": gid})

    def set_mode(self, path: str, mode: int) -> None:
        self.op({"op": "chmod", "path": path, "mode": mode})

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self.op({"op": "remove", "path": path, "recursive": recursive})

    def backup(self, path: str) -> str | None:
        """Copy what is at ``path`` under the target's state directory (as LocalHost does)."""
        import datetime as _dt

        if self._backup_stamp is None:
            self._backup_stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S.%f")
        root = self.state_dir / "backup" / self._backup_stamp
        dest: str | None = self.op({"op": "backup", "path": path, "root": str(root)})
        return dest

    # -- accounts -----------------------------------------------------------------------------

    def _account(self, table: str, name: str) -> int | None:
        if name.isdigit():
            return int(name)
        with self._cache_lock:
            known = self._users if table == "users" else self._groups
            if name in known:
                return known[name]
        doc = self.op({"op": "accounts"})  # a miss: the account may be new
        with self._cache_lock:
            self._set_accounts(doc)
            known = self._users if table == "users" else self._groups
            return known.get(name)

    def user_id(self, name: str) -> int | None:
        return self._account("users", name)

    def group_id(self, name: str) -> int | None:
        return self._account("groups", name)

    def _name(self, table: str, ident: int) -> str:
        with self._cache_lock:
            known = self._user_names if table == "users" else self._group_names
            if ident in known:
                return known[ident]
        doc = self.op({"op": "accounts"})
        with self._cache_lock:
            self._set_accounts(doc)
            known = self._user_names if table == "users" else self._group_names
            return known.get(ident, str(ident))

    def user_name(self, uid: int) -> str:
        return self._name("users", uid)

    def group_name(self, gid: int) -> str:
        return self._name("groups", gid)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:])
