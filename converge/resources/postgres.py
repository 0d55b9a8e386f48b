"""PgRole and PgDatabase: PostgreSQL roles and databases, through psql.

All SQL travels on psql's standard input, never in its argv. Passwords never travel at all:
converge computes the verifier PostgreSQL stores (SCRAM-SHA-256 or md5, whichever the server
uses) and compares or sends that, so neither the plan, the process list nor a server log with
``log_statement=all`` ever holds a password. One query per server reads every role (or every
database) of a run.

By default converge connects as the ``postgres`` OS user over the local socket (peer
authentication), like ``runuser -u postgres -- psql``; ``connection=`` names another server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from converge.errors import CommandError, ResourceError
from converge.plan import SENSITIVE, Change
from converge.resources.base import Provider, Resource

if TYPE_CHECKING:
    from converge.host import Host


class PgConnection(BaseModel):
    """How to reach the server (defaults: the local socket, as the postgres OS user)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str | None = Field(default=None, description="Socket directory or host name.")
    port: int = Field(default=5432, ge=1, le=65535)
    os_user: str | None = Field(
        default="postgres", description="Run psql as this OS user (peer authentication).")
    user: str | None = Field(default=None, description="Database user (psql -U).")
    database: str = Field(default="postgres", description="Database to connect to.")

    def argv(self, database: str | None = None) -> list[str]:
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-d", database or self.database, "-p", str(self.port)]
        if self.host:
            argv += ["-h", self.host]
        if self.user:
            argv += ["-U", self.user]
        if self.os_user and os.geteuid() == 0 and self.os_user != "root":
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        return argv

    def describe(self) -> str:
        where = self.host or "local socket"
        return f"PostgreSQL at {where}:{self.port}"


def _identifier(name: str, what: str) -> str:
    """PostgreSQL identifiers: 1 to 63 characters, no NUL (anything else is quoted)."""
    if not name or len(name) > 63 or "\x00" in name:
        raise ValueError(f"a {what} name has 1 to 63 characters")
    return name


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    # standard_conforming_strings is set on for the session: backslashes are literal
    return "'" + value.replace("'", "''") + "'"


def _sql(host: Host, conn: PgConnection, sql: str, database: str | None = None) -> str:
    script = "SET standard_conforming_strings = on;\n" + sql
    try:
        return host.run(conn.argv(database), input=script, timeout=300, cwd="/").stdout
    except CommandError as exc:
        raise ResourceError(f"{conn.describe()}: {exc.stderr.strip() or exc}") from None


# -- password verifiers -----------------------------------------------------------------------

def md5_verifier(password: str, role: str) -> str:
    return "md5" + hashlib.md5((password + role).encode()).hexdigest()


def _saslprep(password: str) -> str:
    # PostgreSQL applies SASLprep and falls back to the raw bytes when that fails;
    # NFKC covers the normalisation part for ordinary passwords.
    return unicodedata.normalize("NFKC", password)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(stored_key).decode()}:{b64(server_key).decode()}")


def password_matches(password: str, role: str, verifier: str | None) -> bool:
    """Does the stored ``verifier`` belong to ``password``? (Computed, never asked.)"""
    if not verifier:
        return False
    if verifier.startswith("SCRAM-SHA-256$"):
        try:
            head, _keys = verifier.split("$", 2)[1:]
            iterations, salt = head.split(":", 1)
            expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(expected, verifier)
    if verifier.startswith("md5"):
        return hmac.compare_digest(md5_verifier(password, role), verifier)
    return hmac.compare_digest(password, verifier)  # an old plaintext-stored password


# -- PgRole -----------------------------------------------------------------------------------

class PgRole(Resource):
    """A PostgreSQL role (a user when it can log in)."""

    kind = "PgRole"

    name: str = Field(description="Role name (any characters; quoted properly).")
    ensure: Literal["present", "absent"] = Field(default="present", description="present or "
                                                 "absent.")
    password: SecretStr | None = Field(
        default=None, description="Password (a secret). Compared with the stored verifier "
        "(SCRAM or md5) and set as a verifier: it never appears in SQL, argv or logs.")
    login: bool | None = Field(default=None, description="LOGIN / NOLOGIN.")
    createdb: bool | None = Field(default=None, description="CREATEDB / NOCREATEDB.")
    createrole: bool | None = Field(default=None, description="CREATEROLE / NOCREATEROLE.")
    superuser: bool | None = Field(default=None, description="SUPERUSER / NOSUPERUSER.")
    connection_limit: int | None = Field(default=None, ge=-1,
                                         description="CONNECTION LIMIT (-1: none).")
    connection: PgConnection = Field(default_factory=PgConnection,
                                     description="Which server, and how to connect.")

    _name = field_validator("name")(classmethod(lambda cls, v: _identifier(v, "role")))


@dataclass(frozen=True, slots=True)
class RoleState:
    superuser: bool
    createrole: bool
    createdb: bool
    login: bool
    connection_limit: int
    verifier: str | None
    scram: bool  # the server stores new passwords as SCRAM


_ROLE_FLAGS = (("superuser", "SUPERUSER"), ("createrole", "CREATEROLE"),
               ("createdb", "CREATEDB"), ("login", "LOGIN"))

_ROLES_SQL = """
SELECT json_build_object(
  'scram', current_setting('server_version_num')::int >= 100000
           AND current_setting('password_encryption') = 'scram-sha-256',
  'roles', coalesce(json_agg(json_build_object(
      'name', rolname, 'superuser', rolsuper, 'createrole', rolcreaterole,
      'createdb', rolcreatedb, 'login', rolcanlogin, 'connection_limit', rolconnlimit,
      'verifier', rolpassword)), '[]'::json))
FROM pg_authid;
"""


_PgResource = TypeVar("_PgResource", "PgRole", "PgDatabase")


def _group_by_connection(
    resources: Sequence[_PgResource],
) -> dict[PgConnection, list[_PgResource]]:
    groups: dict[PgConnection, list[_PgResource]] = {}
    for r in resources:
        groups.setdefault(r.connection, []).append(r)
    return groups


class PsqlRoleProvider(Provider[PgRole, RoleState]):
    """psql; every role of a server read by one query of pg_authid."""

    name = "psql"
    commands = ("psql",)

    def probe(self, host: Host, resources: Sequence[PgRole]) -> dict[str, RoleState | None]:
        result: dict[str, RoleState | None] = {}
        for conn, group in _group_by_connection(resources).items():
            doc = json.loads(_sql(host, conn, _ROLES_SQL).strip())
            roles = {r["name"]: r for r in doc["roles"]}
            for r in group:
                row = roles.get(r.name)
                result[r.key] = None if row is None else RoleState(
                    row["superuser"], row["createrole"], row["createdb"], row["login"],
                    row["connection_limit"], row["verifier"], doc["scram"])
        return result

    def diff(self, desired: PgRole, actual: RoleState | None) -> list[Change]:
        if desired.ensure == "absent":
            return [Change(attribute="ensure", before="present", after="absent")] if actual \
                else []
        changes: list[Change] = []
        if actual is None:
            changes.append(Change(attribute="ensure", before="absent", after="present"))
        for attr, _ in _ROLE_FLAGS:
            want = getattr(desired, attr)
            have = getattr(actual, attr) if actual else None
            if want is not None and want != have:
                changes.append(Change(attribute=attr, before=have, after=want))
        if desired.connection_limit is not None and (
            actual is None or actual.connection_limit != desired.connection_limit
        ):
            changes.append(Change(attribute="connection_limit",
                                  before=actual.connection_limit if actual else None,
                                  after=desired.connection_limit))
        if desired.password is not None and not (
            actual is not None and password_matches(
                desired.password.get_secret_value(), desired.name, actual.verifier)
        ):
            changes.append(Change(attribute="password",
                                  before=SENSITIVE if actual and actual.verifier else None,
                                  after=SENSITIVE, sensitive=True))
        return changes

    def apply(self, host: Host, desired: PgRole, actual: RoleState | None,
              changes: list[Change]) -> list[str]:
        role = quote_ident(desired.name)
        if desired.ensure == "absent":
            _sql(host, desired.connection, f"DROP ROLE {role};\n")
            return []
        by = {c.attribute: c for c in changes}
        options = []
        for attr, keyword in _ROLE_FLAGS:
            if attr in by:
                options.append(keyword if getattr(desired, attr) else "NO" + keyword)
        if "connection_limit" in by:
            options.append(f"CONNECTION LIMIT {int(desired.connection_limit or -1)}")
        if "password" in by and desired.password is not None:
            scram = actual.scram if actual is not None else self._server_scram(host, desired)
            plain = desired.password.get_secret_value()
            verifier = scram_verifier(plain) if scram else md5_verifier(plain, desired.name)
            options.append(f"PASSWORD {quote_literal(verifier)}")
        verb = "CREATE" if actual is None else "ALTER"
        if options or verb == "CREATE":
            _sql(host, desired.connection, f"{verb} ROLE {role} {' '.join(options)};\n")
        return []

    def _server_scram(self, host: Host, desired: PgRole) -> bool:
        doc = json.loads(_sql(host, desired.connection, _ROLES_SQL).strip())
        return bool(doc["scram"])


# -- PgDatabase -------------------------------------------------------------------------------

class PgDatabase(Resource):
    """A PostgreSQL database."""

    kind = "PgDatabase"

    name: str = Field(description="Database name.")
    ensure: Literal["present", "absent"] = Field(default="present", description="present or "
                                                 "absent.")
    owner: str | None = Field(default=None, description="Owning role.")
    encoding: str | None = Field(default=None, description="e.g. UTF8 (only at creation; a "
                                 "different encoding on an existing database is an error).")
    template: str | None = Field(default=None, description="Template database at creation.")
    drop_data: bool = Field(
        default=False, description="Allow ensure='absent' to drop a database that holds "
        "tables. Without it such a drop is refused.")
    connection: PgConnection = Field(default_factory=PgConnection,
                                     description="Which server, and how to connect.")

    _name = field_validator("name")(classmethod(lambda cls, v: _identifier(v, "database")))

    def implied_requires(self) -> Iterable[str]:
        if self.owner:
            yield f"PgRole[{self.owner}]"


@dataclass(frozen=True, slots=True)
class DatabaseState:
    owner: str
    encoding: str
    tables: int | None = None  # counted only for databases to be dropped


_DATABASES_SQL = """
SELECT coalesce(json_agg(json_build_object('name', datname,
  'owner', pg_get_userbyid(datdba), 'encoding', pg_encoding_to_char(encoding))), '[]'::json)
FROM pg_database;
"""

_TABLES_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%';
"""


class PsqlDatabaseProvider(Provider[PgDatabase, DatabaseState]):
    """psql; every database of a server read by one query of pg_database."""

    name = "psql"
    commands = ("psql",)

    def probe(self, host: Host, resources: Sequence[PgDatabase]
              ) -> dict[str, DatabaseState | None]:
        result: dict[str, DatabaseState | None] = {}
        for conn, group in _group_by_connection(resources).items():
            rows = {d["name"]: d for d in json.loads(_sql(host, conn, _DATABASES_SQL).strip())}
            for r in group:
                row = rows.get(r.name)
                if row is None:
                    result[r.key] = None
                    continue
                tables = None
                if r.ensure == "absent":
                    tables = int(_sql(host, conn, _TABLES_SQL, database=r.name).strip())
                result[r.key] = DatabaseState(row["owner"], row["encoding"], tables)
        return result

    def diff(self, desired: PgDatabase, actual: DatabaseState | None) -> list[Change]:
        if desired.ensure == "absent":
            if actual is None:
                return []
            if actual.tables and not desired.drop_data:
                raise ResourceError(
                    f"{desired.key} holds {actual.tables} table(s); refusing to drop it "
                    "(set drop_data=True to drop it with its data)")
            return [Change(attribute="ensure", before="present", after="absent")]
        changes: list[Change] = []
        if actual is None:
            changes.append(Change(attribute="ensure", before="absent", after="present"))
            if desired.owner:
                changes.append(Change(attribute="owner", after=desired.owner))
            if desired.encoding:
                changes.append(Change(attribute="encoding", after=desired.encoding))
            return changes
        if desired.encoding and desired.encoding.upper().replace("-", "") != \
                actual.encoding.upper().replace("-", ""):
            raise ResourceError(f"{desired.key} has encoding {actual.encoding}, not "
                                f"{desired.encoding}; an encoding cannot be changed in place")
        if desired.owner and desired.owner != actual.owner:
            changes.append(Change(attribute="owner", before=actual.owner, after=desired.owner))
        return changes

    def apply(self, host: Host, desired: PgDatabase, actual: DatabaseState | None,
              changes: list[Change]) -> list[str]:
        db = quote_ident(desired.name)
        conn = desired.connection
        if desired.ensure == "absent":
            _sql(host, conn, f"DROP DATABASE {db};\n")
        elif actual is None:
            options = []
            if desired.owner:
                options.append(f"OWNER {quote_ident(desired.owner)}")
            if desired.encoding:
                options.append(f"ENCODING {quote_literal(desired.encoding)}")
            if desired.template:
                options.append(f"TEMPLATE {quote_ident(desired.template)}")
            _sql(host, conn, f"CREATE DATABASE {db} {' '.join(options)};\n")
        elif desired.owner:
            _sql(host, conn, f"ALTER DATABASE {db} OWNER TO {quote_ident(desired.owner)};\n")
        return []


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "PgRole": [PsqlRoleProvider],
    "PgDatabase": [PsqlDatabaseProvider],
}
