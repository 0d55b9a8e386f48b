"""Hosts: where commands run and files are read and written.

Resource providers never call ``subprocess`` or ``os`` for the machine they manage: they go
through a :class:`Host`. :class:`LocalHost` runs commands through the ``sh`` library (always an
argv list, never a shell string) and does file work with direct system calls, so probing a
thousand files spawns no process. A remote host implements the same methods; the batched ones
(:meth:`Host.file_states`) exist so that a remote implementation can answer them in one round
trip.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import shutil
import stat as _stat
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from converge.errors import CommandError, ResourceError

DEFAULT_STATE_DIR = "/var/lib/converge"
DEFAULT_TIMEOUT = 600.0


def state_dir_from_env() -> Path:
    """The state directory (backups, reports, lock).

    ``$CONVERGE_STATE_DIR`` when set; otherwise /var/lib/converge for root and
    ``$XDG_STATE_HOME/converge`` (``~/.local/state/converge``) for other users.
    """
    explicit = os.environ.get("CONVERGE_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path(DEFAULT_STATE_DIR)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "converge"


@dataclass(frozen=True, slots=True)
class Result:
    """What a finished command said."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True, slots=True)
class FileState:
    """One path as found on a host (``lstat``; symlinks are not followed)."""

    type: str  # "file", "directory", "link" or "other"
    mode: int  # permission bits, e.g. 0o644
    uid: int
    gid: int
    content: bytes | None = None  # only when asked for, and only for regular files
    target: str | None = None  # for links


class Host(Protocol):
    """Everything a provider may do to a machine."""

    name: str
    state_dir: Path

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> Result: ...

    def which(self, command: str) -> str | None: ...

    def file_states(
        self, paths: Iterable[str], *, content_for: frozenset[str] = frozenset()
    ) -> dict[str, FileState | None]: ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def write_atomic(
        self, path: str, data: bytes, *, uid: int | None, gid: int | None, mode: int | None
    ) -> None: ...

    def make_directory(self, path: str, *, uid: int | None, gid: int | None, mode: int) -> None: ...

    def make_symlink(self, path: str, target: str) -> None: ...

    def set_owner(self, path: str, uid: int | None, gid: int | None) -> None: ...

    def set_mode(self, path: str, mode: int) -> None: ...

    def remove(self, path: str, *, recursive: bool = False) -> None: ...

    def backup(self, path: str) -> str | None: ...

    def user_id(self, name: str) -> int | None: ...

    def group_id(self, name: str) -> int | None: ...

    def user_name(self, uid: int) -> str: ...

    def group_name(self, gid: int) -> str: ...


def _file_type(mode: int) -> str:
    if _stat.S_ISREG(mode):
        return "file"
    if _stat.S_ISDIR(mode):
        return "directory"
    if _stat.S_ISLNK(mode):
        return "link"
    return "other"


class LocalHost:
    """The machine converge runs on."""

    def __init__(self, *, state_dir: Path | None = None, name: str = "localhost") -> None:
        self.name = name
        self.state_dir = state_dir if state_dir is not None else state_dir_from_env()
        self._backup_stamp: str | None = None

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
        """Run ``argv`` (never through a shell) and return what it said.

        Commands get a small environment (:data:`INHERITED_ENV` from converge's own, never
        the rest), ``LC_ALL=C`` for parseable output, plus ``env``. Secrets belong in
        ``input`` or ``env``, never in ``argv``.
        """
        import sh  # imported here: a run that executes no command never pays for it

        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        full_env = {**command_environment(), **(env or {})}
        try:
            command = sh.Command(argv[0])
        except sh.CommandNotFound:
            raise CommandError(argv, None, reason="could not be run: command not found") from None
        # The timeout is a timer that kills the command's process group: sh's own _timeout
        # polls every 0.1 s, which costs every command ~100 ms.
        timed_out = threading.Event()
        proc = command(
            *argv[1:],
            _in=input,
            _env=full_env,
            _cwd=cwd,
            _bg=True,
            _new_session=True,
            _ok_code=_ANY_EXIT,
            _return_cmd=True,
            _tty_out=False,
            _decode_errors="replace",
        )

        def expire() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError, OSError):
                proc.kill_group()

        timer = threading.Timer(timeout, expire) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
        if timed_out.is_set():
            raise CommandError(argv, None, _decode(proc.stdout), _decode(proc.stderr),
                               reason=f"timed out after {timeout} s")
        if proc.exit_code < 0:
            raise CommandError(argv, None, _decode(proc.stdout), _decode(proc.stderr),
                               reason=f"was killed by signal {-proc.exit_code}")
        result = Result(
            tuple(argv), int(proc.exit_code), _decode(proc.stdout), _decode(proc.stderr)
        )
        if check and result.returncode != 0:
            raise CommandError(argv, result.returncode, result.stdout, result.stderr)
        return result

    def which(self, command: str) -> str | None:
        return shutil.which(command)

    # -- files ------------------------------------------------------------------------------

    def file_states(
        self, paths: Iterable[str], *, content_for: frozenset[str] = frozenset()
    ) -> dict[str, FileState | None]:
        """``lstat`` every path; read the content of those in ``content_for`` that are files."""
        states: dict[str, FileState | None] = {}
        lstat = os.lstat
        for path in paths:
            try:
                st = lstat(path)
            except FileNotFoundError:
                states[path] = None
                continue
            except NotADirectoryError:
                states[path] = None
                continue
            kind = _file_type(st.st_mode)
            content = None
            target = None
            if kind == "file" and path in content_for:
                content = self.read_bytes(path)
            elif kind == "link":
                target = os.readlink(path)
            states[path] = FileState(kind, _stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                     content, target)
        return states

    def read_bytes(self, path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResourceError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            chunks: list[bytes] = []
            size = os.fstat(fd).st_size
            while True:
                chunk = os.read(fd, max(size + 1, 65536))
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        except OSError as exc:
            raise ResourceError(f"cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def write_atomic(
        self, path: str, data: bytes, *, uid: int | None, gid: int | None, mode: int | None
    ) -> None:
        """Replace ``path`` with ``data`` atomically.

        The temporary file is created in the same directory with mode 0600, then given its owner
        and mode *before* the rename, so the content is never visible with looser permissions
        or under the wrong owner. Unset owner/mode keep those of the file being replaced (new
        files: root-ish defaults, mode 0644).
        """
        directory = os.path.dirname(path) or "."
        try:
            current = os.lstat(path)
        except FileNotFoundError:
            current = None
        if current is not None and not _stat.S_ISLNK(current.st_mode):
            uid = current.st_uid if uid is None else uid
            gid = current.st_gid if gid is None else gid
            mode = _stat.S_IMODE(current.st_mode) if mode is None else mode
        if mode is None:
            mode = 0o644
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".converge",
                                       dir=directory)
        except OSError as exc:
            raise ResourceError(f"cannot create a file in {directory}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if uid is not None or gid is not None:
                    os.fchown(f.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise ResourceError(f"cannot write {path}: {exc.strerror}") from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)

    def make_directory(self, path: str, *, uid: int | None, gid: int | None, mode: int) -> None:
        try:
            os.mkdir(path, 0o700)
            if uid is not None or gid is not None:
                os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
            os.chmod(path, mode)
        except OSError as exc:
            raise ResourceError(f"cannot create directory {path}: {exc.strerror}") from exc

    def make_symlink(self, path: str, target: str) -> None:
        """Point ``path`` at ``target``, replacing an existing link atomically."""
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.converge-link")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.rename(tmp, path)
        except OSError as exc:
            raise ResourceError(f"cannot create link {path}: {exc.strerror}") from exc

    def set_owner(self, path: str, uid: int | None, gid: int | None) -> None:
        try:
            os.lchown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        except OSError as exc:
            raise ResourceError(f"cannot change owner of {path}: {exc.strerror}") from exc

    def set_mode(self, path: str, mode: int) -> None:
        try:
            os.chmod(path, mode)
        except OSError as exc:
            raise ResourceError(f"cannot change mode of {path}: {exc.strerror}") from exc

    def remove(self, path: str, *, recursive: bool = False) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        try:
            if _stat.S_ISDIR(st.st_mode):
                if recursive:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise ResourceError(f"directory {path} is not empty") from exc
            raise ResourceError(f"cannot remove {path}: {exc.strerror}") from exc

    def backup(self, path: str) -> str | None:
        """Copy what is at ``path`` under the state directory; return where it went.

        All backups of one run share a timestamped directory:
        ``STATE_DIR/backup/20261129T190000.123456/etc/nginx/nginx.conf``; a path backed up
        again in the same run (two edits of one file) gets ``.1``, ``.2``... so the first
        backup, the original, is never overwritten.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if self._backup_stamp is None:
            self._backup_stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S.%f")
        first = self.state_dir / "backup" / self._backup_stamp / path.lstrip("/")
        dest = first
        n = 0
        while os.path.lexists(dest):
            n += 1
            dest = first.with_name(f"{first.name}.{n}")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.state_dir / "backup", 0o700)
            if _stat.S_ISDIR(st.st_mode):
                shutil.copytree(path, dest, symlinks=True, dirs_exist_ok=True)
            elif _stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), dest)
            else:
                shutil.copy2(path, dest)
        except OSError as exc:
            # A replaced file without a backup would be lost data: refuse to go on.
            raise ResourceError(f"cannot back up {path} to {dest}: {exc.strerror}") from exc
        return str(dest)

    # -- accounts -----------------------------------------------------------------------------

    def user_id(self, name: str) -> int | None:
        import pwd

        if name.isdigit():
            return int(name)
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None

    def group_id(self, name: str) -> int | None:
        import grp

        if name.isdigit():
            return int(name)
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None

    def user_name(self, uid: int) -> str:
        import pwd

        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def group_name(self, gid: int) -> str:
        import grp

        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)


#: every exit status and death by signal: the runner decides what is an error, not sh
_ANY_EXIT = [*range(256), *range(-64, 0)]

#: what commands inherit from converge's own environment: never the rest, which may hold the
#: secrets a desired state's settings were read from (CONVERGE_DB_PASSWORD...)
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR",
                 "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                 "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT")


def command_environment() -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"  # parseable output
    return env


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def _fsync_dir(directory: str) -> None:
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
