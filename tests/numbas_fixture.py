"""The Numbas LTI provider stand-in used by the flagship's tests (tests/fixtures/numbas_app).

The real app's repository cannot be reached from test machines, so the end-to-end tests install
a tiny but real Django project with the same layout and moving parts (daphne serving
``numbasltiprovider.asgi:application``, ``manage.py run_huey``, migrations, collectstatic under
ManifestStaticFilesStorage, ``/login``, channels with a Redis channel layer).

- ``fixture_repo(dest)`` makes a bare git repository (clone it with ``file://``) with branches
  ``v3_STABLE`` and ``v4_STABLE`` and the annotated tag ``v4.4``.
- ``wheelhouse()`` downloads, once per requirements.txt, every wheel the app needs for CPython
  3.11 on manylinux x86_64 (Debian 12's python3), plus pip/setuptools/wheel, so
  ``pip install --no-index --find-links WHEELS -r requirements.txt`` works offline.
- ``settings_py(...)`` renders ``numbasltiprovider/settings.py`` the way the flagship does:
  execute the branch's ``settings.py.dist``, then assign the deployment's values.
- ``websocket_echo(...)`` is a minimal websocket client for the app's echo consumer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .testhost._util import FileLock, cache_dir, remove_tree, run

FIXTURE_APP = Path(__file__).resolve().parent / "fixtures" / "numbas_app"

# Debian 12's /usr/bin/python3 is CPython 3.11 (glibc 2.36): these tags install there.
WHEEL_TARGET = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"]
BOOTSTRAP = ["pip", "setuptools", "wheel"]
# pip download evaluates environment markers against the interpreter running it, not the
# target: Debian 12's python3 is 3.11.2, and redis 5.0.4 needs async-timeout when
# python_full_version < "3.11.3". Wheels only the target needs are listed here.
TARGET_ONLY = ["async-timeout>=4.0.3"]

# Fixed identity and dates: the same fixture files always give the same commit ids.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Numbas Fixture", "GIT_AUTHOR_EMAIL": "fixture@numbas.invalid",
    "GIT_COMMITTER_NAME": "Numbas Fixture", "GIT_COMMITTER_EMAIL": "fixture@numbas.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}
_DATES = ("2025-01-06T12:00:00+00:00", "2025-02-03T12:00:00+00:00")

# The second commit on v4_STABLE: a visible revision bump and a new (data) migration, so a
# test can tell the checkout moved, the processes restarted and `migrate` ran again.
UPDATE_FILES = {
    "numbas_lti/revision.py": (
        "# Which commit of the fixture repository this is (tests/numbas_fixture.py bumps it in "
        "the\n# second commit on v4_STABLE); shown on /login and by `manage.py fixture_info`.\n"
        "REVISION = 2\n"),
    "numbas_lti/migrations/0002_revision_2.py": (
        "from django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n\n"
        "    dependencies = [('numbas_lti', '0001_initial')]\n\n"
        "    operations = [\n"
        "        migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop),\n"
        "    ]\n"),
}
_IGNORED_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.pyc", "settings.py", "db.sqlite3")


def _ignored(directory: str, names: list[str]) -> set[str]:
    """Leave out what running the app in the fixture directory could have left behind."""
    ignored = set(_IGNORED_ANYWHERE(directory, names))
    if Path(directory) == FIXTURE_APP:
        ignored |= {"static", "media"} & set(names)  # STATIC_ROOT / MEDIA_ROOT defaults
    return ignored


@dataclass(frozen=True)
class FixtureRepo:
    """A bare repository made from tests/fixtures/numbas_app.

    ``initial``: the first commit; ``v3_STABLE`` and the annotated tag ``v4.4`` point at it
    (``git rev-parse v4.4`` gives ``tag_object``; ``v4.4^{commit}`` gives ``initial``).
    ``update``: the second commit (REVISION = 2, migration 0002), the tip of ``v4_STABLE``,
    whose parent is ``initial``. HEAD is ``v4_STABLE``.
    """

    path: Path
    initial: str
    update: str
    tag_object: str

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *argv: str) -> str:
        return _git(self.path, *argv)

    def set_branch(self, branch: str, commit: str) -> None:
        """Move (or create) a branch, as if upstream had pushed or force-pushed."""
        self.git("update-ref", f"refs/heads/{branch}", commit)

    def rev(self, ref: str) -> str:
        """The commit a branch or tag points at now."""
        return self.git("rev-parse", f"{ref}^{{commit}}")


def _git(cwd: Path, *argv: str, date: str | None = None) -> str:
    env = {**os.environ, **_GIT_ENV}
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    # safe.directory: the repository may belong to another user (fixture_repo's owner)
    proc = subprocess.run(["git", "-c", "safe.directory=*", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)} in {cwd} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}")
    return proc.stdout.strip()


def fixture_repo(dest: Path, owner: str | int | None = None) -> FixtureRepo:
    """Create a bare git repository at ``dest`` (must not exist, or be empty) from the fixture.

    The repository is left world-readable. Git (Debian 12's 2.39.5 too) refuses to clone or
    fetch from a local repository owned by another user ("detected dubious ownership"): either
    give it to the cloning user (``owner``: a user name or uid, chown -R) or list it as a
    ``safe.directory`` in that machine's system gitconfig (/etc/gitconfig).
    """
    dest = Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    work = Path(tempfile.mkdtemp(prefix="numbas-fixture-"))
    try:
        tree = work / "tree"
        shutil.copytree(FIXTURE_APP, tree, ignore=_ignored)
        _git(tree, "init", "-q", "-b", "v3_STABLE")
        _git(tree, "add", "-A")
        _git(tree, "commit", "-q", "-m", "Numbas LTI provider fixture", date=_DATES[0])
        initial = _git(tree, "rev-parse", "HEAD")
        _git(tree, "tag", "-a", "v4.4", "-m", "v4.4", date=_DATES[0])
        _git(tree, "checkout", "-q", "-b", "v4_STABLE")
        for name, text in UPDATE_FILES.items():
            (tree / name).write_text(text)
        _git(tree, "add", "-A")
        _git(tree, "commit", "-q", "-m", "Fixture revision 2 (data migration 0002)",
             date=_DATES[1])
        update = _git(tree, "rev-parse", "HEAD")
        dest.mkdir(parents=True, exist_ok=True)
        _git(dest, "init", "-q", "--bare")
        _git(tree, "push", "-q", str(dest), "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*")
        _git(dest, "symbolic-ref", "HEAD", "refs/heads/v4_STABLE")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for root, dirs, files in os.walk(dest):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    os.chmod(dest, 0o755)
    if owner is not None:
        for root, dirs, files in os.walk(dest):
            for name in [*dirs, *files]:
                shutil.chown(os.path.join(root, name), owner, owner)
        shutil.chown(dest, owner, owner)
    repo = FixtureRepo(path=dest, initial=initial, update=update,
                       tag_object=_git(dest, "rev-parse", "refs/tags/v4.4"))
    assert repo.rev("v4.4") == repo.rev("v3_STABLE") == initial
    assert repo.rev("v4_STABLE") == update
    return repo


# --- wheels -----------------------------------------------------------------------------------


def _wheelhouse_key(requirements: bytes, extra: Sequence[str]) -> str:
    blob = requirements + json.dumps([WHEEL_TARGET, BOOTSTRAP, TARGET_ONLY,
                                      sorted(extra)]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def wheelhouse(dest: Path | None = None, extra: Sequence[str] = ()) -> Path:
    """A directory of wheels for an offline install of the fixture app on CPython 3.11.

    Downloaded once into ``<cache>/numbas-wheels/<hash of requirements.txt and extra>`` (cache:
    $CONVERGE_TESTHOST_CACHE or /var/tmp/converge-testhost) under a file lock. Without ``dest``
    the cached directory itself is returned (treat it as read-only); with ``dest`` the wheels
    are hard-linked (or copied) there and ``dest`` is returned. ``extra``: more requirement
    specifiers to include (binary only), e.g. ``["psycopg2-binary==2.9.10"]``.
    """
    requirements = (FIXTURE_APP / "requirements.txt").read_bytes()
    key = _wheelhouse_key(requirements, extra)
    cached = cache_dir() / "numbas-wheels" / key
    if not (cached / ".complete").exists():
        with FileLock(cached.parent / f"{key}.lock"):
            if not (cached / ".complete").exists():
                _download(cached, extra)
    if dest is None:
        return cached
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in cached.glob("*.whl"):
        target = dest / wheel.name
        if target.exists():
            continue
        try:
            os.link(wheel, target)
        except OSError:
            shutil.copy2(wheel, target)
    return dest


def _download(cached: Path, extra: Sequence[str]) -> None:
    partial = cached.with_name(cached.name + ".partial")
    if partial.exists():
        remove_tree(partial)
    partial.mkdir(parents=True)
    # This machine's pip configuration (index, mirrors) is used on purpose: it is how wheels
    # are reached here. The offline install later ignores every configuration file.
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "-d", str(partial), *WHEEL_TARGET, "-r", str(FIXTURE_APP / "requirements.txt"),
         *BOOTSTRAP, *TARGET_ONLY, *extra], timeout=900)
    if not any(partial.glob("*.whl")):
        raise RuntimeError(f"pip download put no wheels into {partial}")
    (partial / ".complete").touch()
    if cached.exists():
        remove_tree(cached)
    partial.rename(cached)


def offline_pip_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment in which pip reads no configuration file and no PIP_* variable."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")
    return env


# --- settings.py ------------------------------------------------------------------------------

SETTINGS_LOADER = '''\
# Generated by converge: do not edit, changes are overwritten.
# It runs this branch's settings.py.dist (the app's defaults), then assigns the deployment's
# values, so it does not depend on how settings.py.dist is formatted.
import os as _os

_dist = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "settings.py.dist")
with open(_dist, encoding="utf-8") as _f:
    exec(compile(_f.read(), _dist, "exec"), globals())
del _os, _dist, _f

'''


def settings_py(assign: Mapping[str, object],
                update: Mapping[str, Mapping[str, object]] | None = None) -> str:
    """The text of a generated ``numbasltiprovider/settings.py``.

    ``assign``: top-level names replaced outright (``SECRET_KEY = '...'``); ``update``:
    dict settings from the dist file updated key by key (``HUEY.update({'connection': ...})``),
    which keeps the dist file's other keys. Values are written with ``repr()``, so they must be
    plain Python literals (str, int, bool, None, list, tuple, dict).
    """
    lines = [SETTINGS_LOADER.rstrip("\n"), ""]
    for name, value in assign.items():
        _check_literal(name, value)
        lines.append(f"{name} = {value!r}")
    for name, values in (update or {}).items():
        _check_literal(name, dict(values))
        lines.append(f"{name}.update({dict(values)!r})")
    return "\n".join(lines) + "\n"


def _check_literal(name: str, value: object) -> None:
    import ast

    if not name.isidentifier() or not name.isupper():
        raise ValueError(f"not a settings name: {name!r}")
    if ast.literal_eval(repr(value)) != value:
        raise ValueError(f"{name}: {value!r} does not round-trip as a Python literal")


# --- websocket --------------------------------------------------------------------------------


def websocket_echo(port: int, text: str, *, host: str = "127.0.0.1", host_header: str | None = None,
                   path: str = "/websocket/echo", timeout: float = 10.0) -> dict[str, str]:
    """Send ``text`` to the app's echo consumer and return its JSON reply.

    The reply is ``{"text": ..., "layer": <channel layer class name>}``; the message went
    through the channel layer's group_send.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        request = (f"GET {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"websocket handshake: connection closed: {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"websocket handshake refused: {head.decode(errors='replace')}")
        expected = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if expected.encode() not in head:
            raise ConnectionError(f"websocket handshake: bad Sec-WebSocket-Accept: {head!r}")
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        reader = _Reader(sock, rest)
        while True:
            first, second = reader.take(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", reader.take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", reader.take(8))
            data = reader.take(length)
            opcode = first & 0x0F
            if opcode == 0x1:
                result: dict[str, str] = json.loads(data)
                sock.sendall(bytes([0x88, 0x82]) + mask +
                             bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8")))
                return result
            if opcode == 0x8:
                raise ConnectionError(f"websocket closed by the server: {data!r}")


class _Reader:
    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self.sock = sock
        self.buf = buffered

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket: connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
