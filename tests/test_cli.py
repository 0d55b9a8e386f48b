"""The command line, through ``main(argv)`` and through the installed ``converge`` command.

Exit codes (Puppet's): plan 0 in sync / 2 pending; apply 2 changed / 0 nothing to do; 4
failures, 6 changes and failures; 1 usage or bad desired state. ``--json`` shapes for plan and
apply, ``graph`` as DOT, settings from ``--set``, the environment and a secrets directory, secrets
never printed, ``--facts`` presets rendered without probing, and the run lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from converge.cli import main
from tests.test_bad_input import snapshot

if TYPE_CHECKING:
    from tests.conftest import CliResult

ACTIONS = {"create", "change", "remove", "none"}
STATUSES = {"ok", "pending", "changed", "unchanged", "failed", "skipped", "flapping"}


class Cli(Protocol):
    def __call__(self, *argv: str | Path) -> CliResult: ...


WriteDesired = Callable[..., Path]
Bin = Callable[..., "subprocess.CompletedProcess[str]"]


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["resources"]}


@pytest.fixture
def target(tmp_path: Path) -> Path:
    d = tmp_path / "target"
    d.mkdir()
    return d


@pytest.fixture
def simple(write_desired: WriteDesired, target: Path) -> Path:
    """A directory, a file in it and a link to the file."""
    return write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/app", ensure="directory", mode="0750")
            yield File(path="{target}/app/app.conf", content="port = 80\\n", mode="0640")
            yield File(path="{target}/current", target="{target}/app/app.conf")
    """)


# -- exit codes -------------------------------------------------------------------------------

def test_exit_codes_pending_changed_then_in_sync(cli: Cli, simple: Path, target: Path) -> None:
    plan = cli("plan", simple)
    assert plan.code == 2, plan
    assert "Plan: 3 to create, 0 to change, 0 to remove." in plan.out
    assert list(target.iterdir()) == [], "plan changed the disk"

    first = cli("apply", simple)
    assert first.code == 2, first
    assert (target / "app/app.conf").read_text() == "port = 80\n"
    assert os.readlink(target / "current") == f"{target}/app/app.conf"

    second = cli("apply", simple)
    assert second.code == 0, second
    in_sync = cli("plan", simple)
    assert in_sync.code == 0, in_sync
    assert "No changes." in in_sync.out

    (target / "app/app.conf").write_text("port = 8080\n")  # drift
    assert cli("plan", simple).code == 2
    assert cli("apply", simple).code == 2
    assert (target / "app/app.conf").read_text() == "port = 80\n"


def test_apply_failure_is_isolated_exit_6_then_4(
    cli: Cli, write_desired: WriteDesired, target: Path,
) -> None:
    """A File whose parent directory does not exist fails; its dependent is skipped; the
    independent resource is still applied. Changes and failures: 6; failures alone: 4."""
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/independent.conf", content="ok\\n")
            yield File(path="{target}/no-such-dir/app.conf", content="x\\n")
            yield File(path="{target}/app.link", target="{target}/no-such-dir/app.conf",
                       requires="File[{target}/no-such-dir/app.conf]")
    """)
    first = cli("apply", desired, "--json")
    assert first.code == 6, first
    report = by_id(json.loads(first.out))
    assert report[f"File[{target}/independent.conf]"]["status"] == "changed"
    failed = report[f"File[{target}/no-such-dir/app.conf]"]
    assert failed["status"] == "failed"
    assert f"{target}/no-such-dir" in failed["error"]
    skipped = report[f"File[{target}/app.link]"]
    assert skipped["status"] == "skipped"
    assert f"File[{target}/no-such-dir/app.conf]" in skipped["error"]
    assert (target / "independent.conf").read_text() == "ok\n"
    assert not (target / "app.link").is_symlink()
    assert sorted(p.name for p in target.iterdir()) == ["independent.conf"]

    second = cli("apply", desired)
    assert second.code == 4, second
    assert f"File[{target}/no-such-dir/app.conf]: failed" in second.out
    assert "1 failed, 1 skipped, 1 unchanged" in second.out


def test_plan_exit_4_and_6_when_a_resource_cannot_be_planned(
    cli: Cli, write_desired: WriteDesired, target: Path,
) -> None:
    """FileLine edits an existing file: on a missing one, plan reports a failure."""
    desired = write_desired(f"""
        from converge import File, FileLine

        def desired(facts, settings):
            yield File(path="{target}/a.conf", content="a\\n")
            yield FileLine(path="{target}/missing.conf", line="key = value")
    """)
    plan = cli("plan", desired, "--json")
    assert plan.code == 6, plan
    doc = json.loads(plan.out)
    line = by_id(doc)[f"FileLine[{target}/missing.conf:key = value]"]
    assert line["status"] == "failed" and "does not exist" in line["error"]
    assert doc["summary"]["failed"] == 1 and doc["summary"]["create"] == 1

    assert cli("apply", desired).code == 6
    after = cli("plan", desired)
    assert after.code == 4, after
    assert f"FileLine[{target}/missing.conf:key = value]" in after.out
    assert "does not exist" in after.out


# -- usage errors -----------------------------------------------------------------------------

USAGE_ERRORS: dict[str, tuple[list[str], str]] = {
    "unknown-command": (["frobnicate", "{ok}"], "invalid choice: 'frobnicate'"),
    "no-command": ([], "required: COMMAND"),
    "no-file": (["plan"], "required: file"),
    "missing-file": (["apply", "{tmp}/no-such-file.py"],
                     "{tmp}/no-such-file.py: desired-state file not found"),
    "directory": (["plan", "{tmp}"], "{tmp}: cannot read desired-state file"),
    "unknown-option": (["plan", "{ok}", "--bogus"], "unrecognized arguments: --bogus"),
    "graph-json": (["graph", "{ok}", "--json"], "unrecognized arguments: --json"),
    "unknown-preset": (["plan", "{ok}", "--facts", "rhel-99"],
                       "unknown facts preset 'rhel-99'; known presets:"),
    "apply-preset": (["apply", "{ok}", "--facts", "rhel-7"], "cannot be applied"),
    "jobs-0": (["apply", "{ok}", "--jobs", "0"], "--jobs must be at least 1"),
    "jobs-word": (["apply", "{ok}", "--jobs", "many"], "invalid int value: 'many'"),
    "log-format": (["plan", "{ok}", "--log-format", "xml"], "invalid choice: 'xml'"),
    "set-no-key": (["plan", "{ok}", "--set", "=value"], "--set expects key=value"),
}


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_1(cli: Cli, simple: Path, target: Path, tmp_path: Path,
                             argv: list[str], message: str) -> None:
    fill = {"ok": str(simple), "tmp": str(tmp_path)}
    result = cli(*[a.format(**fill) for a in argv])
    assert result.code == 1, result
    assert result.out == ""
    assert result.err.startswith("error: "), result
    assert message.format(**fill) in result.err, result
    assert "Traceback" not in result.err
    assert list(target.iterdir()) == []


def test_version_and_help_exit_0(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    version = cli("--version")
    assert (version.code, version.out.strip(), version.err) == (0, "converge 0.1.0", "")
    assert "usage: converge plan" in cli("plan", "--help").out
    assert main(["--version"]) == 0  # without streams: the process's stdout
    assert capsys.readouterr().out.strip() == "converge 0.1.0"


# -- JSON -------------------------------------------------------------------------------------

@pytest.fixture
def four_actions(write_desired: WriteDesired, target: Path) -> Path:
    """One resource for each action: create, change, remove and none."""
    (target / "change.conf").write_text("old\n")
    (target / "remove.conf").write_text("bye\n")
    (target / "same.conf").write_text("same\n")
    os.chmod(target / "same.conf", 0o644)
    return write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/create.conf", content="new\\n")
            yield File(path="{target}/change.conf", content="changed\\n")
            yield File(path="{target}/remove.conf", ensure="absent")
            yield File(path="{target}/same.conf", content="same\\n", mode="0644")
    """)


def test_plan_json_shape(cli: Cli, four_actions: Path, target: Path) -> None:
    before = snapshot(target)
    result = cli("plan", four_actions, "--json")
    assert result.code == 2, result
    assert snapshot(target) == before
    doc = json.loads(result.out)
    assert doc["kind"] == "plan"
    assert doc["desired"] == str(four_actions)
    for r in doc["resources"]:
        assert isinstance(r["id"], str) and r["action"] in ACTIONS and r["status"] in STATUSES
        assert isinstance(r["changes"], list)
        for c in r["changes"]:
            assert {"attribute", "before", "after"} <= set(c)
            assert isinstance(c["attribute"], str)
    res = by_id(doc)
    assert [r["id"] for r in doc["resources"]] == [
        f"File[{target}/{n}.conf]" for n in ("create", "change", "remove", "same")]

    create = res[f"File[{target}/create.conf]"]
    assert create["action"] == "create" and create["status"] == "pending"
    assert {c["attribute"]: (c["before"], c["after"]) for c in create["changes"]} == {
        "ensure": ("absent", "file"), "content": (None, "new\n")}
    change = res[f"File[{target}/change.conf]"]
    assert change["action"] == "change"
    assert [(c["attribute"], c["before"], c["after"]) for c in change["changes"]] == [
        ("content", "old\n", "changed\n")]
    assert "-old" in change["changes"][0]["diff"] and "+changed" in change["changes"][0]["diff"]
    remove = res[f"File[{target}/remove.conf]"]
    assert remove["action"] == "remove"
    assert [(c["attribute"], c["before"], c["after"]) for c in remove["changes"]] == [
        ("ensure", "file", "absent")]
    same = res[f"File[{target}/same.conf]"]
    assert same["action"] == "none" and same["changes"] == [] and same["status"] == "ok"

    assert doc["summary"] == {"create": 1, "change": 1, "remove": 1, "none": 1, "failed": 0,
                              "skipped": 0}


def test_apply_json_shape(cli: Cli, four_actions: Path, target: Path, state_dir: Path) -> None:
    result = cli("apply", four_actions, "--json")
    assert result.code == 2, result
    doc = json.loads(result.out)
    assert doc["kind"] == "report"
    assert doc["passes"] >= 1 and isinstance(doc["duration"], float)
    res = by_id(doc)
    for name, action in [("create", "create"), ("change", "change"), ("remove", "remove")]:
        r = res[f"File[{target}/{name}.conf]"]
        assert (r["action"], r["status"]) == (action, "changed"), r
        assert isinstance(r["duration"], float) and r["duration"] >= 0
        assert r["error"] is None
    same = res[f"File[{target}/same.conf]"]
    assert (same["action"], same["status"]) == ("none", "unchanged")
    assert "duration" in same
    # what was replaced or removed is backed up, and the report says where
    backups = res[f"File[{target}/change.conf]"]["backups"]
    assert len(backups) == 1 and backups[0].startswith(str(state_dir))
    assert Path(backups[0]).read_text() == "old\n"
    assert Path(res[f"File[{target}/remove.conf]"]["backups"][0]).read_text() == "bye\n"
    assert doc["summary"] == {"create": 1, "change": 1, "remove": 1, "none": 1, "failed": 0,
                              "skipped": 0}
    assert sorted(p.name for p in target.iterdir()) == ["change.conf", "create.conf",
                                                        "same.conf"]

    again = cli("apply", four_actions, "--json")
    assert again.code == 0, again
    doc = json.loads(again.out)
    assert {r["status"] for r in doc["resources"]} == {"unchanged"}
    assert doc["summary"]["none"] == 4


# -- graph ------------------------------------------------------------------------------------

_DOT_TOKEN = re.compile(r'\s+|"(?:[^"\\]|\\.)*"|->|[{}\[\];=,]|[A-Za-z_]\w*|-?\d+(?:\.\d+)?')


def parse_dot(text: str) -> tuple[list[str], list[tuple[str, str, dict[str, str]]]]:
    """Parse the DOT subset a digraph of statements uses; raise on anything else.

    Returns the node statements and the edges with their attributes.
    """
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _DOT_TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"bad DOT at {pos}: {text[pos:pos + 20]!r}")
        if not m.group().isspace():
            tokens.append(m.group())
        pos = m.end()

    def ident(tok: str) -> str:
        if tok.startswith('"'):
            return re.sub(r"\\(.)", r"\1", tok[1:-1])
        if not re.fullmatch(r"[A-Za-z_]\w*|-?\d+(?:\.\d+)?", tok):
            raise ValueError(f"not an ID: {tok!r}")
        return tok

    def attrs(i: int) -> tuple[dict[str, str], int]:
        found: dict[str, str] = {}
        if tokens[i] != "[":
            return found, i
        i += 1
        while tokens[i] != "]":
            key, eq, value = tokens[i:i + 3]
            if eq != "=":
                raise ValueError(f"bad attribute near {key!r}")
            found[ident(key)] = ident(value)
            i += 3
            if tokens[i] in (",", ";"):
                i += 1
        return found, i + 1

    if tokens[:1] != ["digraph"] or tokens[2] != "{" or tokens[-1] != "}":
        raise ValueError("not a digraph { ... }")
    ident(tokens[1])
    nodes: list[str] = []
    edges: list[tuple[str, str, dict[str, str]]] = []
    i = 3
    while i < len(tokens) - 1:
        first = tokens[i]
        if first in ("graph", "node", "edge"):
            _, i = attrs(i + 1)
        elif tokens[i + 1] == "=":
            ident(first)
            ident(tokens[i + 2])
            i += 3
        elif tokens[i + 1] == "->":
            src, dst = ident(first), ident(tokens[i + 2])
            found, i = attrs(i + 3)
            edges.append((src, dst, found))
        else:
            nodes.append(ident(first))
            _, i = attrs(i + 1)
        if tokens[i] != ";":
            raise ValueError(f"expected ';' near {tokens[i]!r}")
        i += 1
    return nodes, edges


def test_graph_prints_dot_with_requires_notify_and_implied_edges(
    cli: Cli, write_desired: WriteDesired, target: Path,
) -> None:
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/app", ensure="directory")
            yield File(path="{target}/app/app.conf", content="x\\n",
                       notify="File[{target}/reloaded]")
            yield File(path="{target}/current", target="{target}/app/app.conf",
                       requires="File[{target}/app/app.conf]")
            yield File(path="{target}/reloaded", content="y\\n")
    """)
    result = cli("graph", desired)
    assert result.code == 0, result
    assert list(target.iterdir()) == []
    nodes, edges = parse_dot(result.out)
    app, conf, current, reloaded = (f"File[{target}/{n}]"
                                    for n in ("app", "app/app.conf", "current", "reloaded"))
    assert sorted(nodes) == sorted([app, conf, current, reloaded])
    found = {(a, b): attrs for a, b, attrs in edges}
    assert set(found) == {(app, conf), (conf, current), (conf, reloaded)}
    assert "style" not in found[(conf, current)]  # requires: a plain edge
    assert found[(app, conf)].get("style") == "dotted"  # implied: the parent directory
    assert found[(conf, reloaded)].get("label") == "notify"


def test_graph_of_a_cycle_is_an_error(cli: Cli, write_desired: WriteDesired,
                                      target: Path) -> None:
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/a", content="a", requires="File[{target}/b]")
            yield File(path="{target}/b", content="b", requires="File[{target}/a]")
    """)
    result = cli("graph", desired)
    assert result.code == 1 and result.out == ""
    assert "dependency cycle" in result.err


def test_parse_dot_rejects_what_is_not_dot() -> None:
    assert parse_dot('digraph g {\n  "a" -> "b" [style=dotted];\n}\n') == (
        [], [("a", "b", {"style": "dotted"})])
    for bad in ("graph g { a; }", 'digraph g { "a" -> ; }', "digraph g { a b; }",
                'digraph g { "a }'):
        with pytest.raises((ValueError, IndexError)):
            parse_dot(bad)


# -- settings ---------------------------------------------------------------------------------

def test_set_env_and_secrets_dir_reach_the_settings_class(
    cli: Cli, write_desired: WriteDesired, target: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desired = write_desired(f"""
        from pydantic_settings import BaseSettings, SettingsConfigDict

        from converge import File

        class Settings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix="CONVERGE_CLI_TEST_")

            domain: str = "default.example"
            port: int = 80
            aliases: list[str] = []

        def desired(facts, settings):
            yield File(path="{target}/site.conf",
                       content=f"{{settings.domain}}:{{settings.port}}:"
                               + ",".join(settings.aliases) + "\\n")
    """)
    site = target / "site.conf"

    def rendered(*args: str) -> str:
        result = cli("apply", desired, *args)
        assert result.code in (0, 2), result
        return site.read_text()

    assert rendered() == "default.example:80:\n"
    assert rendered("--set", "port=8080", "--set", 'aliases=["www.example", "example"]') == (
        "default.example:8080:www.example,example\n")
    monkeypatch.setenv("CONVERGE_CLI_TEST_DOMAIN", "env.example")
    monkeypatch.setenv("CONVERGE_CLI_TEST_PORT", "8443")
    assert rendered() == "env.example:8443:\n"
    assert rendered("--set", "domain=cli.example") == "cli.example:8443:\n"  # --set wins
    monkeypatch.delenv("CONVERGE_CLI_TEST_DOMAIN")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "CONVERGE_CLI_TEST_domain").write_text("file.example")
    assert rendered("--secrets-dir", str(secrets)) == "file.example:8443:\n"


SECRET = "pw-Zq8-unlikely-7731"
NEW_SECRET = "pw-Kx3-unlikely-0264"


def test_secret_setting_is_never_printed(
    cli: Cli, write_desired: WriteDesired, target: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "db.j2").write_text("[db]\npassword = {{ password }}\n")
    desired = write_desired(f"""
        from pydantic import SecretStr
        from pydantic_settings import BaseSettings, SettingsConfigDict

        from converge import File

        class Settings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix="CONVERGE_CLI_SECRET_")

            db_password: SecretStr

        def desired(facts, settings):
            pw = settings.db_password
            yield File(path="{target}/secret.conf", content=pw, mode="0600")
            yield File(path="{target}/templated.conf", template="db.j2",
                       vars={{"password": pw}}, mode="0600")
            yield File(path="{target}/flagged.conf", sensitive=True, mode="0600",
                       content="password = " + pw.get_secret_value() + "\\n")
    """)
    files = [target / n for n in ("secret.conf", "templated.conf", "flagged.conf")]
    printed: list[str] = []

    def run(*args: str, code: int) -> CliResult:
        result = cli(*args)
        printed.append(result.out + result.err)
        assert result.code == code, result
        return result

    plan = run("plan", str(desired), "--set", f"db_password={SECRET}", code=2)
    assert plan.out.count("(sensitive)") == 3

    doc = json.loads(run("plan", str(desired), "--set", f"db_password={SECRET}", "--json",
                         code=2).out)
    for r in doc["resources"]:
        (content,) = [c for c in r["changes"] if c["attribute"] == "content"]
        assert content["sensitive"] is True
        assert (content["before"], content["after"], content["diff"]) == (
            None, "(sensitive)", None)

    monkeypatch.setenv("CONVERGE_CLI_SECRET_DB_PASSWORD", SECRET)
    report = json.loads(run("apply", str(desired), "--json", code=2).out)
    assert {r["status"] for r in report["resources"]} == {"changed"}
    assert files[0].read_text() == SECRET
    assert files[1].read_text() == f"[db]\npassword = {SECRET}\n"
    assert files[2].read_text() == f"password = {SECRET}\n"

    # a changed secret: before and after are both hidden, in the text report and the logs
    changed = run("apply", str(desired), "--set", f"db_password={NEW_SECRET}",
                  "--log-format", "json", "--log-level", "debug", code=2)
    assert changed.out.count("(sensitive)") == 3
    doc = json.loads(run("apply", str(desired), "--set", f"db_password={SECRET}", "--json",
                         code=2).out)
    for r in doc["resources"]:
        assert [(c["before"], c["after"]) for c in r["changes"]] == [
            ("(sensitive)", "(sensitive)")]

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "CONVERGE_CLI_SECRET_db_password").write_text(SECRET)
    monkeypatch.delenv("CONVERGE_CLI_SECRET_DB_PASSWORD")
    run("apply", str(desired), "--secrets-dir", str(secrets), code=0)
    run("plan", str(desired), "--secrets-dir", str(secrets), "-v", code=0)

    listing = run("plan", str(desired), "--set", f"db_password={SECRET}", "--facts", "rhel-7",
                  code=0)
    assert "(sensitive)" in listing.out
    run("plan", str(desired), "--set", f"db_password={SECRET}", "--facts", "rhel-7", "--json",
        code=0)
    run("graph", str(desired), "--set", f"db_password={SECRET}", code=0)
    run("apply", str(desired), "--set", f"db_pasword={SECRET}", code=1)  # a typo in the key

    for text in printed:
        assert SECRET not in text and NEW_SECRET not in text, text


# -- facts presets ----------------------------------------------------------------------------

def test_facts_preset_renders_the_catalog_without_probing(
    cli: Cli, write_desired: WriteDesired, target: Path,
) -> None:
    desired = write_desired(f"""
        from converge import File, FileLine

        def desired(facts, settings):
            if facts.is_redhat:
                yield File(path="{target}/yum.repos.d/app.repo",
                           content=f"# {{facts.os_id}} {{facts.os_version}}\\n")
            else:
                yield File(path="{target}/sources.list.d/app.list",
                           content=f"# {{facts.os_id}} {{facts.os_version}}\\n")
            # probing this would fail: FileLine needs the file to exist
            yield FileLine(path="{target}/missing.conf", line="key = value")
    """)
    probed = cli("plan", desired)
    assert probed.code in (4, 6), probed  # the probe really fails on this host

    rhel = cli("plan", desired, "--facts", "rhel-7")
    assert rhel.code == 0, rhel
    assert "for rhel-7 (not probed)" in rhel.out
    assert f"File[{target}/yum.repos.d/app.repo]" in rhel.out and "# rhel 7" in rhel.out
    assert "sources.list.d" not in rhel.out
    assert f"FileLine[{target}/missing.conf:key = value]" in rhel.out

    debian = cli("plan", desired, "--facts", "debian-12")
    assert debian.code == 0, debian
    assert f"File[{target}/sources.list.d/app.list]" in debian.out and "# debian 12" in debian.out

    doc = json.loads(cli("plan", desired, "--facts", "rhel-7", "--json").out)
    assert doc["facts"]["preset"] == "rhel-7"
    assert (doc["facts"]["os_family"], doc["facts"]["os_version"]) == ("redhat", "7")
    assert [r["id"] for r in doc["resources"]] == [
        f"File[{target}/yum.repos.d/app.repo]", f"FileLine[{target}/missing.conf:key = value]"]
    assert list(target.iterdir()) == []


# -- the run lock -----------------------------------------------------------------------------

@contextlib.contextmanager
def holding_lock(state_dir: Path) -> Iterator[int]:
    """Hold the run lock the way another converge run would."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)


def test_apply_refuses_while_another_run_holds_the_lock(
    cli: Cli, simple: Path, target: Path, state_dir: Path,
) -> None:
    lock = state_dir / "run.lock"
    with holding_lock(state_dir):
        refused = cli("apply", simple)
        assert refused.code not in (0, 2), refused
        assert str(lock) in refused.err and str(os.getpid()) in refused.err
        assert "--lock-wait" in refused.err
        assert list(target.iterdir()) == [], "applied without the lock"

        start = time.monotonic()
        waited = cli("apply", simple, "--lock-wait", "0.3")
        assert waited.code not in (0, 2), waited
        assert time.monotonic() - start >= 0.3
        assert "after waiting 0.3s" in waited.err and str(lock) in waited.err
        assert list(target.iterdir()) == []

        assert cli("plan", simple).code == 2  # plan only reads: it does not need the lock

    assert cli("apply", simple).code == 2  # released: the next run goes ahead


def test_lock_wait_waits_for_the_other_run(cli: Cli, simple: Path, target: Path,
                                           state_dir: Path) -> None:
    with holding_lock(state_dir) as fd:
        release = threading.Timer(0.4, fcntl.flock, (fd, fcntl.LOCK_UN))
        start = time.monotonic()
        release.start()
        try:
            result = cli("apply", simple, "--lock-wait", "20")
        finally:
            release.join()
    assert result.code == 2, result
    assert time.monotonic() - start >= 0.4
    assert (target / "app/app.conf").read_text() == "port = 80\n"


# -- the installed command --------------------------------------------------------------------

def test_installed_command_exit_codes_and_json(converge_bin: Bin, simple: Path,
                                               target: Path) -> None:
    plan = converge_bin("plan", simple, "--json")
    assert plan.returncode == 2, plan
    doc = json.loads(plan.stdout)
    assert doc["kind"] == "plan" and doc["summary"]["create"] == 3
    assert {r["action"] for r in doc["resources"]} == {"create"}

    apply = converge_bin("apply", simple, "--json")
    assert apply.returncode == 2, apply
    doc = json.loads(apply.stdout)
    assert doc["kind"] == "report"
    assert all(r["status"] == "changed" and isinstance(r["duration"], float)
               for r in doc["resources"])

    again = converge_bin("apply", simple)
    assert again.returncode == 0, again
    assert "Apply: 0 changed" in again.stdout

    usage = converge_bin("frobnicate", simple)
    assert usage.returncode == 1 and usage.stdout == ""
    assert "invalid choice: 'frobnicate'" in usage.stderr and "Traceback" not in usage.stderr


# -- loading ----------------------------------------------------------------------------------

def test_desired_can_import_a_helper_next_to_it_when_called(
    cli: Cli, write_desired: WriteDesired, target: Path, tmp_path: Path,
) -> None:
    helper = "converge_cli_helper_" + re.sub(r"\W", "_", tmp_path.name)
    (tmp_path / f"{helper}.py").write_text("BANNER = 'managed by converge\\n'\n")
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            import {helper}

            yield File(path="{target}/motd", content={helper}.BANNER)
    """)
    result = cli("apply", desired)
    assert result.code == 2, result
    assert (target / "motd").read_text() == "managed by converge\n"

