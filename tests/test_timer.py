"""Periodic drift correction with a systemd timer, and who may write a desired file.

Locally: the unit files converge writes (schedule, quoting, secrets kept out of them), and, as
root, the refusal of a desired file (or a module it imports, or its directory) that anyone but
root could write. On a throwaway systemd host: install a timer, see it repair drift made by hand
and record the repair as corrective, a manual apply meeting a timer run that holds the lock,
``timer status``, and ``timer remove`` leaving nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from converge import timer
from converge.errors import UsageError
from converge.host import LocalHost

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the check applies to root only")


# -- as root, a desired file others can write is refused --------------------------------------

@pytest.fixture
def target(tmp_path: Path) -> Path:
    d = tmp_path / "target"
    d.mkdir()
    return d


@root_only
@pytest.mark.parametrize("command", ["plan", "apply", "graph"])
def test_group_writable_desired_file_is_refused(cli, write_desired, target: Path,
                                                command: str) -> None:
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/x.conf", content="x\\n")
    """)
    os.chmod(desired, 0o664)
    r = cli(command, desired)
    assert r.code == 1, r
    assert f"desired-state file {desired} is not safe: it is writable by its group" in r.err
    assert "whoever can write it is root" in r.err and f"chmod go-w {desired}" in r.err
    assert "Traceback" not in r.err and r.out == ""
    assert list(target.iterdir()) == []
    os.chmod(desired, 0o644)
    assert cli("plan", desired).code == 2


@root_only
def test_unsafe_modules_owners_and_directories_are_refused(cli, tmp_path: Path,
                                                           target: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "helper.py").write_text("GREETING = 'hi'\n")
    desired = conf / "site.py"
    # it even catches the ImportError: the refusal stands
    desired.write_text(
        "from converge import File\n"
        "try:\n    import helper\n    G = helper.GREETING\nexcept ImportError:\n    G = 'none'\n"
        f"def desired(facts, settings):\n    yield File(path='{target}/g', content=G)\n")
    assert cli("plan", desired).code == 2  # all root's: fine

    os.chmod(conf / "helper.py", 0o646)
    r = cli("apply", desired)
    assert r.code == 1, r
    assert f"module helper {conf}/helper.py is not safe: it is writable by others" in r.err
    os.chmod(conf / "helper.py", 0o644)

    os.chown(conf / "helper.py", 65534, -1)
    r = cli("plan", desired)
    assert r.code == 1 and "owned by" in r.err and "not root" in r.err, r
    os.chown(conf / "helper.py", 0, -1)

    os.chmod(conf, 0o777)
    r = cli("plan", desired)
    assert r.code == 1, r
    assert f"the directory of desired-state file {conf} is not safe" in r.err
    os.chmod(conf, 0o1777)  # sticky, like /tmp: others cannot replace root's files
    assert cli("plan", desired).code == 2
    assert list(target.iterdir()) == []


@root_only
def test_timer_install_refuses_a_group_writable_file_before_anything(cli, write_desired,
                                                                     target: Path) -> None:
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/x.conf", content="x\\n")
    """)
    os.chmod(desired, 0o660)
    r = cli("timer", "install", desired, "--every", "5min")
    assert r.code == 1, r
    assert "writable by its group" in r.err and "Traceback" not in r.err
    assert not any(Path(timer.UNIT_DIR).glob(f"{timer.PREFIX}desired*")) \
        if Path(timer.UNIT_DIR).is_dir() else True


# -- unit files -------------------------------------------------------------------------------

class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUMBAS_")

    domain: str = "example.org"
    db_password: SecretStr = SecretStr("x")
    api_token: str = "plain type, secret name"


def test_settings_split_secrets_from_the_command_line() -> None:
    plain, secret = timer.split_settings(
        Settings(), ["domain=lti.example.org", "db_password=p$w%d \"q\"", "api_token=t0k"])
    assert plain == ["domain=lti.example.org"]
    assert secret == {"NUMBAS_DB_PASSWORD": 'p$w%d "q"', "NUMBAS_API_TOKEN": "t0k"}
    # settings the install got from its environment are kept for the timer the same way
    plain, env = timer.split_settings(
        Settings(), ["api_token=t0k"],
        {"numbas_db_password": "from-env", "NUMBAS_DOMAIN": "env.example.org",
         "NUMBAS_API_TOKEN": "ignored: --set wins", "HOME": "/root"})
    assert plain == []
    assert env == {"NUMBAS_DB_PASSWORD": "from-env", "NUMBAS_DOMAIN": "env.example.org",
                   "NUMBAS_API_TOKEN": "t0k"}


def test_units_quote_values_and_hold_no_secret(tmp_path: Path) -> None:
    desired = tmp_path / "numbas site.py"
    names = timer.names_for(desired)
    assert names.name.startswith("numbas-site-") and len(names.name) == len("numbas-site-") + 8
    assert timer.names_for(tmp_path / "other" / "numbas site.py") != names
    sched = timer.schedule("30min", "5min", None, LocalHost())
    argv = timer.command(desired, ["domain=a %n $HOME \"b\""], secrets_dir=None,
                         keep_reports=50)
    service = timer.service_unit(names, desired, argv, sched, env_file=True,
                                 state_dir="/var/lib/converge-%test")
    assert 'ExecStart="' in service
    assert '"--set" "domain=a %%n $$HOME \\"b\\""' in service
    assert '"--lock-wait" "300"' in service and '"--keep-reports" "50"' in service
    assert "SuccessExitStatus=2" in service and "TimeoutStartSec=1h" in service
    assert "Nice=10" in service and "IOSchedulingClass=idle" in service
    assert f"EnvironmentFile={names.env_path}" in service
    assert 'Environment="CONVERGE_STATE_DIR=/var/lib/converge-%%test"' in service
    timer_text = timer.timer_unit(names, desired, sched)
    for line in ("OnUnitActiveSec=30min", "OnActiveSec=1min", "RandomizedDelaySec=5min",
                 "Persistent=true", f"Unit={names.service}", "WantedBy=timers.target"):
        assert line in timer_text.splitlines(), line
    env = timer.env_file(names, desired, {"NUMBAS_DB_PASSWORD": 'p$w\\d "q" `x`'})
    assert 'NUMBAS_DB_PASSWORD="p\\$w\\\\d \\"q\\" \\`x\\`"' in env


def test_schedule_forms_and_errors() -> None:
    host = LocalHost()
    assert timer.schedule("5s", None, "90s", host).interval == 5
    assert timer.schedule("5s", None, "90s", host).timeout == 90
    if host.which("systemd-analyze"):
        cal = timer.schedule("hourly", None, None, host)
        assert cal.interval is None and cal.calendar == "hourly"
        with pytest.raises(UsageError, match="neither a duration"):
            timer.schedule("every full moon", None, None, host)
    with pytest.raises(UsageError, match="at least 1s"):
        timer.schedule("500ms", None, None, host)


# -- on a systemd host ------------------------------------------------------------------------

DESIRED = """
from pydantic_settings import BaseSettings
from converge import Command, File, Secret

class Settings(BaseSettings):
    greeting: str = "hello"
    token: Secret

def desired(facts, settings):
    yield File(path="/etc/drift-test.conf", content=f"greeting = {settings.greeting}\\n",
               mode="0644")
    yield File(path="/etc/drift-test.token", content=settings.token, mode="0600")
    # a slow run while /run/slow exists (the guard sleeps, then says the work is done)
    yield Command(name="slow", argv=["true"],
                  unless=["sh", "-c", "test ! -e /run/slow || sleep 8"])
"""

TOKEN = "t0k$en %i \"q\" `x`"


def poll(fn: Any, timeout: float = 30.0, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def cv(host: Any, *argv: str, **kw: Any) -> Any:
    return host.converge(*argv, **kw)


def timer_runs(host: Any, path: str) -> list[dict[str, Any]]:
    r = cv(host, "history", path, "--json")
    assert r.returncode == 0, r.stderr
    return [row for row in json.loads(r.stdout) if row["trigger"] == "timer"]


def test_timer_corrects_drift_and_is_removed_without_trace(converge_host: Any) -> None:
    host = converge_host("drifttimer")
    path = host.write_desired(DESIRED, name="drift test.py")
    names = timer.names_for(Path(path))

    # a group-writable desired file: refused, nothing installed
    host.run(["chmod", "0660", path])
    r = cv(host, "timer", "install", path, "--every", "2s", "--set", f"token={TOKEN}")
    assert r.returncode == 1 and "writable by its group" in r.stderr, r.stderr
    assert host.run(["sh", "-c", "ls /etc/systemd/system | grep converge"],
                    check=False).stdout == ""
    host.run(["chmod", "0600", path])

    # the token the recommended way, from the environment (CONVERGE_ prefix: none declared)
    r = cv(host, "timer", "install", path, "--every", "2s", "--splay", "1s", "--set",
           "greeting=hi there", env={"CONVERGE_TOKEN": TOKEN})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{names.timer}: applies {path} every 2s, splay 1s" in r.stderr
    # the secret is in the root-only environment file and nowhere else
    env_mode = host.run(["stat", "-c", "%a %U", names.env_path]).stdout.split()
    assert env_mode == ["600", "root"]
    units = host.run(["cat", names.service_path, names.timer_path]).stdout
    assert "t0k" not in units and "greeting=hi there" in units
    assert "t0k" not in host.run(["systemctl", "show", "-p", "ExecStart", names.service]).stdout
    assert host.run(["systemctl", "is-enabled", names.timer]).stdout.strip() == "enabled"

    # the timer's first run converges the file, with the settings given at install
    assert poll(lambda: timer_runs(host, path)), "the timer never ran"
    assert host.get_file("/etc/drift-test.conf") == b"greeting = hi there\n"
    assert host.get_file("/etc/drift-test.token") == TOKEN.encode()

    # drift by hand: repaired by a timer run, recorded as corrective
    host.run(["sh", "-c", "echo 'greeting = tampered' > /etc/drift-test.conf"])
    assert poll(lambda: host.get_file("/etc/drift-test.conf") == b"greeting = hi there\n"), \
        "the timer did not repair the drift"
    runs = poll(lambda: [r for r in timer_runs(host, path) if r["corrective"] == 1])
    assert runs, timer_runs(host, path)
    shown = cv(host, "report", str(runs[0]["id"]), "--json")
    doc = json.loads(shown.stdout)
    res = {x["id"]: x for x in doc["resources"]}["File[/etc/drift-test.conf]"]
    assert (res["status"], res["cause"]) == ("changed", "corrective")
    assert doc["trigger"] == "timer" and doc["exit_code"] == 2
    # exit 2 (changes made) is a success for systemd; no timer run failed
    assert host.run(["systemctl", "is-failed", names.service], check=False).stdout.strip() \
        != "failed"

    # status: last and next run
    status = cv(host, "timer", "status", path, "--json")
    assert status.returncode == 0, status.stderr
    (st,) = json.loads(status.stdout)
    assert st["desired"] == path and st["enabled"] == "enabled"
    assert st["last_run"]["trigger"] == "timer"
    text = cv(host, "timer", "status").stdout
    assert names.timer in text and "last run" in text and "next run" in text

    # a manual apply while a timer run holds the lock: refused at once, or waits
    host.run(["touch", "/run/slow"])

    def holding() -> bool:
        pid = host.run(["systemctl", "show", "-p", "MainPID", "--value", names.service]
                       ).stdout.strip()
        held = host.run(["cat", "/var/lib/converge/run.lock"], check=False).stdout.strip()
        return pid not in ("", "0") and held == pid

    assert poll(holding, timeout=20, every=0.2), "no slow timer run seen holding the lock"
    refused = cv(host, "apply", path, "--set", "greeting=hi there",
                 env={"CONVERGE_TOKEN": TOKEN})
    assert refused.returncode == 1, refused
    assert "another converge run (pid" in refused.stderr and "Traceback" not in refused.stderr
    host.run(["rm", "/run/slow"])
    waited = cv(host, "apply", path, "--set", "greeting=hi there", "--lock-wait", "60",
                env={"CONVERGE_TOKEN": TOKEN})
    assert waited.returncode == 0, waited.stdout + waited.stderr

    # remove: nothing of it is left
    removed = cv(host, "timer", "remove", path)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    left = host.run(["sh", "-c", "ls /etc/systemd/system /etc/systemd/system/*.wants; "
                     "ls /etc/converge 2>/dev/null; systemctl list-timers --all --no-pager; "
                     "systemctl list-units --all --no-pager; systemctl list-unit-files "
                     "--no-pager"]).stdout
    assert names.name not in left and "drift" not in left, left
    again = cv(host, "timer", "remove", path)
    assert again.returncode == 1 and "no converge timer applies" in again.stderr
    assert cv(host, "timer", "status").stdout.strip() == "No converge timers installed."
    # the history stays
    assert timer_runs(host, path)


def test_timer_install_needs_systemd_and_root_here(cli, write_desired, target: Path) -> None:
    """On this machine (often without systemd as PID 1) install explains what is missing."""
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/x.conf", content="x\\n")
    """)
    from converge.facts import Facts

    if Facts.gather(LocalHost()).init == "systemd" and os.geteuid() == 0:
        pytest.skip("this machine runs systemd: installing would change it")
    r = cli("timer", "install", desired, "--every", "5min")
    assert r.code == 1 and ("not systemd" in r.err or "as root" in r.err), r
    assert "Traceback" not in r.err
