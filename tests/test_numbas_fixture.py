"""Smoke test of the Numbas LTI provider stand-in (tests/fixtures/numbas_app) on this machine.

It deploys the fixture the way desired/numbas.py will, minus supervisord and nginx: an offline
virtualenv from the wheelhouse with Debian's python3, a checkout of the fixture repository, a
generated settings.py (executes settings.py.dist, then assigns), PostgreSQL with password auth
over TCP, Redis for cache, huey and the channel layer, then migrate, collectstatic,
createsuperuser, daphne and run_huey. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .numbas_fixture import (
    FixtureRepo,
    fixture_repo,
    offline_pip_env,
    settings_py,
    websocket_echo,
    wheelhouse,
)

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
PYTHON = Path("/usr/bin/python3")
REDIS = shutil.which("redis-server")
DOMAIN = "numbas.test"


def _can_venv() -> bool:
    return PYTHON.exists() and subprocess.run(
        [str(PYTHON), "-c", "import ensurepip, venv"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    (PG_BIN is None or os.geteuid() != 0 or not _can_venv() or shutil.which("git") is None)
    and os.environ.get("CI") != "true",
    reason="needs root, Debian's postgresql and python3-venv packages, and git",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}:\n{log.read_text()[-3000:]}")


@dataclass
class Processes:
    """Every process the test starts; all are stopped in the end, whatever happened."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=cwd, env=env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                self.stop(proc)


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()


@dataclass
class Postgres:
    port: int
    password: str


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A throwaway server on 127.0.0.1 with md5 password auth over TCP (as the guide sets up)."""
    assert PG_BIN is not None
    root = Path(tempfile.mkdtemp(prefix="numbas-pg-"))
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    server = Postgres(port=port, password="s3cr'et \"pw\"")

    def as_postgres(*argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                              capture_output=True, text=True, cwd="/", input=input)

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth-local=peer", "--auth-host=md5")
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                    f"unix_socket_directories = '{root}'\n")
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                    "-w", "start")
        sql = ("CREATE ROLE numbas_lti LOGIN CREATEDB PASSWORD "
               + "'" + server.password.replace("'", "''") + "';\n"
               "CREATE DATABASE numbas_lti OWNER numbas_lti;\n")
        as_postgres(str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(root),
                    "-p", str(port), "-d", "postgres", input=sql)
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       cwd="/")
        shutil.rmtree(root, ignore_errors=True)


def _http(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": DOMAIN, **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def test_fixture_repo_layout(tmp_path: Path) -> None:
    repo = fixture_repo(tmp_path / "numbas-lti-provider.git")
    again = fixture_repo(tmp_path / "again.git")
    assert (repo.initial, repo.update) == (again.initial, again.update)  # deterministic
    assert repo.git("rev-parse", f"{repo.update}^") == repo.initial
    assert repo.git("cat-file", "-t", "v4.4") == "tag"
    assert repo.git("symbolic-ref", "HEAD") == "refs/heads/v4_STABLE"
    files = set(repo.git("ls-tree", "-r", "--name-only", repo.initial).splitlines())
    assert {"manage.py", "requirements.txt", "first_setup.py", "numbasltiprovider/asgi.py",
            "numbasltiprovider/settings.py.dist", "numbas_lti/migrations/0001_initial.py",
            "numbas_lti/static/numbas_lti/app.css"} <= files
    assert not any("__pycache__" in f or f.endswith("/settings.py") for f in files)
    assert repo.git("ls-tree", repo.initial, "manage.py").startswith("100755 ")
    changed = repo.git("diff", "--name-only", repo.initial, repo.update).splitlines()
    assert sorted(changed) == ["numbas_lti/migrations/0002_revision_2.py",
                               "numbas_lti/revision.py"]
    repo.set_branch("v4_STABLE", repo.initial)
    assert repo.rev("v4_STABLE") == repo.initial


def test_fixture_app_deploys_and_serves(tmp_path: Path, postgres: Postgres,
                                        procs: Processes) -> None:
    wheels = wheelhouse()
    assert (wheels / ".complete").exists()

    # virtualenv with Debian's python3, installed offline (no index, no pip configuration)
    venv = tmp_path / "venv"
    env = offline_pip_env()
    subprocess.run([str(PYTHON), "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-index",
           "--find-links", str(wheels)]
    subprocess.run([*pip, "--upgrade", "pip", "setuptools", "wheel"], check=True,
                   capture_output=True, env=env)

    repo: FixtureRepo = fixture_repo(tmp_path / "numbas-lti-provider.git")
    app = tmp_path / "numbas-lti-provider"
    subprocess.run(["git", "clone", "-q", "--branch", "v4.4", repo.url, str(app)], check=True,
                   capture_output=True)
    install = subprocess.run([*pip, "-r", str(app / "requirements.txt")], capture_output=True,
                             text=True, env=env)
    assert install.returncode == 0, install.stderr

    # Redis (cache, huey, channel layer) on a port of its own
    redis_port = _free_port() if REDIS else None
    if REDIS:
        log = tmp_path / "redis.log"
        redis = procs.start([REDIS, "--bind", "127.0.0.1", "--port", str(redis_port),
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], log)
        assert redis_port is not None
        _wait_port(redis_port, redis, log)

    static_root, media_root = tmp_path / "srv-static", tmp_path / "srv-media"
    assign: dict[str, object] = {
        "DEBUG": False,
        "SECRET_KEY": "fixture-secret-key-" + "x" * 40,
        "ALLOWED_HOSTS": [DOMAIN],
        "INSTANCE_NAME": "Converge Test University",
        "DATABASES": {"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": "numbas_lti",
            "USER": "numbas_lti", "PASSWORD": postgres.password, "HOST": "127.0.0.1",
            "PORT": str(postgres.port)}},
        "STATIC_ROOT": str(static_root) + "/",
        "MEDIA_ROOT": str(media_root) + "/",
        "DEFAULT_FROM_EMAIL": "numbas@numbas.test",
    }
    update: dict[str, dict[str, object]] = {}
    if REDIS:
        assign["CACHES"] = {"default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{redis_port}/1"}}
        assign["CHANNEL_LAYERS"] = {"default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{redis_port}/2"]}}}
        update["HUEY"] = {"connection": {"host": "127.0.0.1", "port": redis_port, "db": 0}}
    else:  # no redis-server here: keep what does not need it
        assign["CACHES"] = {"default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        update["HUEY"] = {"huey_class": "huey.SqliteHuey",
                          "connection": {"filename": str(tmp_path / "huey.sqlite3")}}
    settings_file = app / "numbasltiprovider" / "settings.py"
    settings_file.write_text(settings_py(assign, update))
    # the checkout stays clean: settings.py is ignored like in the real app
    status = subprocess.run(["git", "-C", str(app), "status", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert status == "", status

    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DJANGO_", "PIP_", "PYTHON"))}
    py = str(venv / "bin/python")

    def manage(*argv: str, check: bool = True,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([py, "manage.py", *argv], cwd=app, capture_output=True,
                                text=True, env={**run_env, **(extra_env or {})}, timeout=120)
        if check:
            assert result.returncode == 0, (argv, result.stdout, result.stderr)
        return result

    manage("check")
    assert manage("migrate", "--check", check=False).returncode != 0  # fresh database
    manage("migrate", "--noinput")
    manage("migrate", "--check")
    manage("collectstatic", "--noinput")
    manifest = json.loads((static_root / "staticfiles.json").read_text())
    assert "numbas_lti/app.css" in manifest["paths"]
    info = json.loads(manage("fixture_info").stdout)
    assert info["admin_exists"] is False
    admin_env = {"DJANGO_SUPERUSER_USERNAME": "admin", "DJANGO_SUPERUSER_EMAIL":
                 "admin@numbas.test", "DJANGO_SUPERUSER_PASSWORD": "correct horse battery"}
    manage("createsuperuser", "--noinput", extra_env=admin_env)
    info = json.loads(manage("fixture_info").stdout)
    assert info["admin_exists"] is True and info["revision"] == 1
    assert info["database"] == "django.db.backends.postgresql" and info["debug"] is False
    assert info["static_root"] == str(static_root) + "/"
    if REDIS:
        assert info["channel_layer"] == "RedisChannelLayer"
        assert info["huey"] == "PriorityRedisHuey"
        assert info["cache"] == "django.core.cache.backends.redis.RedisCache"

    # daphne serves the ASGI application, like each numbas_lti_daphne program
    port = _free_port()
    log = tmp_path / "daphne.log"
    daphne = procs.start([str(venv / "bin/daphne"), "-b", "127.0.0.1", "-p", str(port),
                          "numbasltiprovider.asgi:application"], log, cwd=app, env=run_env)
    _wait_port(port, daphne, log)
    status_code, headers, _ = _http(port, "/login", {})
    assert status_code == 301 and headers["location"] == f"https://{DOMAIN}/login"
    status_code, _, body = _http(port, "/login", {"X-Forwarded-Proto": "https"})
    assert status_code == 200, body[-2000:]
    assert "Log in as an administrator" in body and "fixture revision 1" in body
    assert "/static/numbas_lti/app." in body  # the hashed name from staticfiles.json
    status_code, headers, _ = _http(port, "/", {"X-Forwarded-Proto": "https"})
    assert status_code == 302 and headers["location"] == "/login"  # an admin exists
    status_code, _, _ = _http(port, "/login", {"X-Forwarded-Proto": "https",
                                                "Host": "evil.test"})
    assert status_code == 400  # ALLOWED_HOSTS applies
    reply = websocket_echo(port, "hello through the layer", host_header=DOMAIN)
    assert reply["text"] == "hello through the layer"
    if REDIS:
        assert reply["layer"] == "RedisChannelLayer"

    # huey: a task enqueued from one process runs in the consumer (run_huey)
    token = f"ping-{os.getpid()}-{time.time_ns()}"
    manage("enqueue_ping", token)
    assert manage("ping_done", token, check=False).returncode != 0
    log = tmp_path / "huey.log"
    huey = procs.start([py, "manage.py", "run_huey", "-w", "2"], log, cwd=app, env=run_env)
    deadline = time.monotonic() + 30
    while manage("ping_done", token, check=False).returncode != 0:
        assert huey.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)
    procs.stop(huey)
    procs.stop(daphne)

    # moving the checkout to v4_STABLE's tip brings a new migration
    subprocess.run(["git", "-C", str(app), "fetch", "-q", "origin"], check=True)
    subprocess.run(["git", "-C", str(app), "checkout", "-q", repo.update], check=True)
    assert manage("migrate", "--check", check=False).returncode != 0
    manage("migrate", "--noinput")
    manage("migrate", "--check")
    assert json.loads(manage("fixture_info").stdout)["revision"] == 2
    assert settings_file.exists()  # the untracked, ignored settings survive the checkout
