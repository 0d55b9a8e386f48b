"""PgRole and PgDatabase against a real PostgreSQL server started by the tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from converge.resources.postgres import md5_verifier, password_matches, scram_verifier

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)

pytestmark = pytest.mark.skipif(
    (PG_BIN is None or os.geteuid() != 0) and os.environ.get("CI") != "true",
    reason="needs root and Debian's postgresql package",
)


class Server:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.log = root / "server.log"

    @property
    def connection(self) -> str:
        return f"PgConnection(host={str(self.root)!r}, port={self.port})"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-v",
             "ON_ERROR_STOP=1", "-h", str(self.root), "-p", str(self.port), "-d", database],
            input=sql, capture_output=True, text=True, check=True, cwd="/").stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg() -> Iterator[Server]:
    assert PG_BIN is not None
    root = Path(tempfile.mkdtemp(prefix="converge-pg-"))
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres", "postgres")
    server = Server(root, _free_port())
    data = root / "data"

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True, cwd="/")

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "peer", "-U", "postgres")
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = ''\nport = {server.port}\n"
                    f"unix_socket_directories = '{root}'\nlog_statement = 'all'\n")
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(server.log), "-w",
                    "start")
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       cwd="/")
        shutil.rmtree(root, ignore_errors=True)


def desired_source(server: Server, body: str, settings: str = "") -> str:
    return (f"from converge import PgConnection, PgDatabase, PgRole, Secret\n"
            f"import os\nCONN = {server.connection}\n{settings}\n"
            f"def desired(facts, settings):\n" +
            textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n")


def roles(server: Server, name: str) -> dict[str, Any]:
    out = server.psql(f"SELECT row_to_json(r) FROM (SELECT rolcanlogin, rolcreatedb, "
                      f"rolsuper, rolconnlimit FROM pg_roles WHERE rolname = '{name}') r;")
    return json.loads(out) if out else {}


def test_role_and_database_lifecycle(pg: Server, cli, write_desired) -> None:
    os.environ["PG_TEST_PW"] = "first-pw"
    try:
        path = write_desired(desired_source(pg, """
            yield PgRole(name="numbas_lti", login=True, createdb=True,
                         password=Secret(os.environ["PG_TEST_PW"]), connection=CONN)
            yield PgDatabase(name="numbas_lti", owner="numbas_lti", encoding="UTF8",
                             template="template0", connection=CONN)
        """))
        first = cli("apply", path, "--json")
        assert first.code == 2, first
        assert cli("apply", path).code == 0
        assert cli("plan", path).code == 0
        assert roles(pg, "numbas_lti") == {"rolcanlogin": True, "rolcreatedb": True,
                                           "rolsuper": False, "rolconnlimit": -1}
        assert pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database "
                       "WHERE datname = 'numbas_lti';") == "numbas_lti"
        verifier = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname='numbas_lti';")
        assert verifier.startswith("SCRAM-SHA-256$") and password_matches("first-pw",
                                                                          "numbas_lti", verifier)

        # drift by hand: attribute and password
        pg.psql("ALTER ROLE numbas_lti NOCREATEDB PASSWORD 'changed-by-hand';")
        plan = cli("plan", path, "--json")
        assert plan.code == 2
        changes = {c["attribute"]: c for c in json.loads(plan.out)["resources"][0]["changes"]}
        assert changes["createdb"]["before"] is False and changes["createdb"]["after"] is True
        assert changes["password"] == {"attribute": "password", "before": "(sensitive)",
                                       "after": "(sensitive)", "sensitive": True, "diff": None}
        text = cli("plan", path)
        assert "password  : (sensitive) will change" in text.out or \
            "password: (sensitive) will change" in text.out.replace("  ", " ").replace(
                " :", ":")
        assert cli("apply", path).code == 2
        assert cli("apply", path).code == 0
        verifier = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname='numbas_lti';")
        assert password_matches("first-pw", "numbas_lti", verifier)
        # a new desired password
        os.environ["PG_TEST_PW"] = "second-pw"
        assert cli("apply", path).code == 2
        verifier = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname='numbas_lti';")
        assert password_matches("second-pw", "numbas_lti", verifier)
        # database owner drift
        pg.psql("CREATE ROLE someone; ALTER DATABASE numbas_lti OWNER TO someone;")
        assert cli("plan", path).code == 2
        assert cli("apply", path).code == 2
        assert pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database "
                       "WHERE datname = 'numbas_lti';") == "numbas_lti"
    finally:
        os.environ.pop("PG_TEST_PW", None)
    # the passwords never reached the server log (log_statement = all)
    log = pg.log.read_text()
    assert "first-pw" not in log and "second-pw" not in log
    assert "ALTER ROLE" in log  # the log really records statements


def test_md5_server_and_tricky_password(pg: Server, cli, write_desired) -> None:
    tricky = "it's a \"quoted\" \\ back\\slash; DROP ROLE x; --"
    pg.psql("ALTER SYSTEM SET password_encryption = 'md5'; SELECT pg_reload_conf();")
    try:
        os.environ["PG_TEST_PW2"] = tricky
        path = write_desired(desired_source(pg, """
            yield PgRole(name='we"ird role', login=True,
                         password=Secret(os.environ["PG_TEST_PW2"]), connection=CONN)
        """))
        assert cli("apply", path).code == 2
        assert cli("apply", path).code == 0
        verifier = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname='we\"ird role';")
        assert verifier == md5_verifier(tricky, 'we"ird role')
        # the server's stored md5 verifier is recognised even when it later uses SCRAM
        pg.psql("ALTER SYSTEM RESET password_encryption; SELECT pg_reload_conf();")
        assert cli("plan", path).code == 0
    finally:
        os.environ.pop("PG_TEST_PW2", None)
        pg.psql("ALTER SYSTEM RESET password_encryption; SELECT pg_reload_conf();")


def test_password_never_visible_while_running(pg: Server, cli, write_desired) -> None:
    secret = "s3cret-visible-nowhere"
    os.environ["PG_TEST_PW3"] = secret
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    data = cmdline.read_bytes()
                except OSError:
                    continue
                if secret.encode() in data:
                    seen.append(str(cmdline))
            for environ in Path("/proc").glob("[0-9]*/environ"):
                try:
                    data = environ.read_bytes()
                except OSError:
                    continue
                if secret.encode() in data and str(os.getpid()) not in str(environ):
                    seen.append(str(environ))

    t = threading.Thread(target=watch)
    t.start()
    try:
        path = write_desired(desired_source(pg, """
            for i in range(5):
                yield PgRole(name=f"watched{i}", login=True,
                             password=Secret(os.environ["PG_TEST_PW3"]), connection=CONN)
        """))
        outputs = []
        for argv in (("plan",), ("apply", "--json"), ("apply",), ("plan", "--json")):
            r = cli(*argv, path, "--log-level", "debug", "--log-format", "json")
            outputs.append(r.out + r.err)
    finally:
        stop.set()
        t.join()
        os.environ.pop("PG_TEST_PW3", None)
    assert not seen, seen
    assert secret not in "".join(outputs)
    assert secret not in pg.log.read_text()


def test_dropping_a_database_with_data_needs_opt_in(pg: Server, cli, write_desired) -> None:
    pg.psql("CREATE DATABASE precious;")
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);", database="precious")
    path = write_desired(desired_source(pg, """
        yield PgDatabase(name="precious", ensure="absent", connection=CONN)
    """))
    r = cli("apply", path)
    assert r.code == 4 and "holds 1 table(s); refusing to drop it" in r.out
    assert pg.psql("SELECT count(*) FROM t;", database="precious") == "1"
    forced = write_desired(desired_source(pg, """
        yield PgDatabase(name="precious", ensure="absent", drop_data=True, connection=CONN)
    """))
    assert cli("apply", forced).code == 2
    assert cli("apply", forced).code == 0
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'precious';") == "0"


def test_server_down_fails_only_dependents(cli, write_desired, tmp_path: Path) -> None:
    path = write_desired(f"""
        from converge import File, PgConnection, PgDatabase, PgRole

        CONN = PgConnection(host="{tmp_path}", port=1)

        def desired(facts, settings):
            yield PgRole(name="app", connection=CONN)
            yield PgDatabase(name="app", owner="app", connection=CONN)
            yield File(path="{tmp_path}/independent", content="x")
    """)
    r = cli("apply", path)
    assert r.code == 6, r
    assert "PostgreSQL at " in r.out and "skipped" in r.out
    assert (tmp_path / "independent").exists()


def test_verifiers_match_postgres_computation(pg: Server) -> None:
    pg.psql("CREATE ROLE verifier_check PASSWORD 'abc def';")
    stored = pg.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'verifier_check';")
    assert password_matches("abc def", "verifier_check", stored)
    assert not password_matches("abc deg", "verifier_check", stored)
    salt_b64 = stored.split("$")[1].split(":")[1]
    import base64

    assert scram_verifier("abc def", base64.b64decode(salt_b64)) == stored
