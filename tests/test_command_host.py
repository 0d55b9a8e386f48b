"""Command (guarded exec) on a throwaway systemd host: as another user, notified by a File,
with secrets in its environment, killed with everything it started when it times out."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tests.testhost.converge import by_id, changed_attributes

APP_DESIRED = """
from converge import Command, File, Group, User

def desired(facts, settings):
    yield Group(name="app", system=True)
    yield User(name="app", group="app", home="/srv/app", system=True)
    yield File(path="/srv/app", ensure="directory", owner="app", group="app", mode="0750")
    yield File(path="/srv/app/app.conf", content={conf!r}, notify=["Command[reload]"])
    yield Command(name="init", argv=["sh", "-c", 'id -un > initialized; pwd >> initialized'],
                  cwd="/srv/app", user="app", creates="/srv/app/initialized",
                  requires=["File[/srv/app]"])
    yield Command(name="seed", argv=["sh", "-c", "echo seeded > /srv/app/seed"], user="app",
                  unless=["grep", "-q", "seeded", "/srv/app/seed"],
                  requires=["Command[init]"])
    yield Command(name="reload", argv=["sh", "-c", "id -un >> /srv/app/reloads"], user="app",
                  refreshonly=True, requires=["File[/srv/app]"])
"""


def lines(host: Any, path: str) -> list[str]:
    r = host.run(["cat", path], check=False)
    return r.stdout.splitlines() if r.returncode == 0 else []


def test_user_cwd_guards_and_refreshonly_once(converge_host: Any) -> None:
    host = converge_host("cmd-user")
    path = host.write_desired(APP_DESIRED.format(conf="v1\n"))
    code, plan = host.plan_json(path)
    assert code == 2
    init = by_id(plan)["Command[init]"]["changes"][0]
    assert init["attribute"] == "run"
    assert init["before"] == "/srv/app/initialized does not exist"  # why it would run
    assert init["after"] == "sh -c 'id -un > initialized; pwd >> initialized'"
    assert not by_id(plan)["Command[reload]"]["changes"]  # only runs when notified
    assert host.run(["test", "-e", "/srv/app"], check=False).returncode == 1  # plan ran nothing

    report = host.converge_twice(path)
    assert by_id(report)["Command[reload]"]["refreshed"] is True
    assert lines(host, "/srv/app/initialized") == ["app", "/srv/app"]
    assert host.run(["stat", "-c", "%U", "/srv/app/initialized", "/srv/app/seed",
                     "/srv/app/reloads"]).stdout.split() == ["app", "app", "app"]
    assert lines(host, "/srv/app/reloads") == ["app"]  # notified once, ran once

    # the notifying file changes: the refreshonly command runs exactly once more
    path2 = host.write_desired(APP_DESIRED.format(conf="v2\n"))
    code, report = host.apply_json(path2)
    assert code == 2, json.dumps(report, indent=1)
    assert by_id(report)["Command[reload]"]["refreshed"] is True
    assert by_id(report)["Command[init]"]["status"] == "unchanged"
    assert lines(host, "/srv/app/reloads") == ["app", "app"]
    assert host.apply(path2).returncode == 0
    assert lines(host, "/srv/app/reloads") == ["app", "app"]

    # drift by hand: what the commands made is undone; the guards (run as app) see it
    host.run(["rm", "/srv/app/initialized"])
    host.run(["sh", "-c", "echo wiped > /srv/app/seed"])
    code, plan = host.plan_json(path2)
    assert code == 2
    assert changed_attributes(plan, "Command[init]") == ["run"]
    seed = by_id(plan)["Command[seed]"]["changes"][0]
    assert seed["before"] == "`grep -q seeded /srv/app/seed` failed"
    assert host.apply(path2).returncode == 2
    assert lines(host, "/srv/app/initialized") == ["app", "/srv/app"]
    assert lines(host, "/srv/app/seed") == ["seeded"]
    assert host.apply(path2).returncode == 0
    assert lines(host, "/srv/app/reloads") == ["app", "app"]


SECRET = "s3cr3t-T0ken_'\"$(rm -rf /)`x`!"


def test_secret_env_never_in_output_or_cmdline(converge_host: Any) -> None:
    host = converge_host("cmd-secret")
    host.put_file("/root/token", SECRET, mode=0o600)
    path = host.write_desired("""
        from converge import Command, Secret

        TOKEN = Secret(open("/root/token").read())

        def desired(facts, settings):
            yield Command(
                name="use-token",
                argv=["sh", "-c", 'touch /tmp/started; until [ -e /tmp/go ]; do sleep 0.05; '
                      'done; echo "token is $TOKEN"; '
                      'echo "stderr has $TOKEN too" >&2; echo "$TOKEN" > /tmp/got; exit 1'],
                env={"TOKEN": TOKEN, "PLAIN": "visible"}, user="nobody",
                creates="/run/never", timeout=60)
    """)
    plan = host.plan(path, "--log-level", "debug")
    assert plan.returncode == 2
    assert SECRET not in plan.stdout + plan.stderr

    host.run(["rm", "-f", "/tmp/started", "/tmp/go"])
    result: list[Any] = []
    apply = threading.Thread(
        target=lambda: result.append(host.apply(path, "--json", "--log-level", "debug")))
    apply.start()
    try:
        deadline = time.monotonic() + 30
        while host.run(["test", "-e", "/tmp/started"], check=False).returncode:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        # while it waits: the secret is in its environment, in no process's command line
        scan = "grep -l -F -f /root/token /proc/[0-9]*/{} 2>/dev/null; true"
        in_cmdline = host.run(["sh", "-c", scan.format("cmdline")]).stdout.split()
        in_environ = host.run(["sh", "-c", scan.format("environ")]).stdout.split()
        assert host.run(["test", "-e", "/tmp/got"], check=False).returncode == 1  # still running
    finally:
        host.run(["touch", "/tmp/go"])
        apply.join(90)
    assert in_cmdline == []
    assert in_environ, "the check itself is broken: the command should have the secret"

    (r,) = result
    assert r.returncode == 4, r.stdout + r.stderr
    assert host.get_file("/tmp/got").decode() == SECRET + "\n"  # the command got it intact
    assert SECRET not in r.stdout + r.stderr
    error = by_id(json.loads(r.stdout))["Command[use-token]"]["error"]
    assert "exited with status 1" in error
    assert "token is (sensitive)" in error and "stderr has (sensitive) too" in error
    leaked = host.run(["grep", "-r", "-l", "-F", "-f", "/root/token", "/var/lib/converge"],
                      check=False)
    assert leaked.returncode == 1, leaked.stdout  # nor in reports, history or backups


def test_timeout_kills_everything_the_command_started(converge_host: Any) -> None:
    host = converge_host("cmd-timeout")
    path = host.write_desired("""
        from converge import Command

        def desired(facts, settings):
            yield Command(name="hangs", argv=["sh", "-c", "sleep 60 & sleep 61; touch /tmp/x"],
                          timeout=1, creates="/tmp/x")
            yield Command(name="hangs-as-nobody", argv=["sh", "-c", "sleep 62 & sleep 63"],
                          user="nobody", timeout=1, creates="/tmp/y")
            yield Command(name="ghost", argv=["true"], user="no-such-user", creates="/tmp/z")
    """)
    start = time.monotonic()
    code, report = host.apply_json(path)
    assert time.monotonic() - start < 15
    assert code == 4, json.dumps(report, indent=1)
    res = by_id(report)
    for key in ("Command[hangs]", "Command[hangs-as-nobody]"):
        assert "timed out after 1 s" in res[key]["error"]
    assert "could not be run as no-such-user" in res["Command[ghost]"]["error"]
    left = host.run(["pgrep", "-a", "sleep"], check=False)
    assert left.returncode == 1, f"left running:\n{left.stdout}"
