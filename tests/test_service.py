"""Service on throwaway systemd hosts: real systemd units and real supervisord programs.

Restarts are proven with start counters (each start appends a line to a file) and PIDs, never
with timing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.testhost.converge import ConvergeHost, boot_converge_host, by_id, changed_attributes
from tests.testhost.image import Image

# A tiny web service; every start (not reload) appends a line to /var/lib/web.starts.
WEB_UNIT = """\
[Unit]
Description=converge test web server

[Service]
Environment=VERSION={version}
ExecStartPre=/bin/sh -c 'echo "start $VERSION" >> /var/lib/web.starts'
ExecStart=/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1 --directory /srv/www

[Install]
WantedBy=multi-user.target
"""

WEB_DESIRED = """
from converge import File, Service

UNIT = {unit!r}

def desired(facts, settings):
    yield File(path="/srv/www", ensure="directory")
    yield File(path="/srv/www/index.html", content="hello {version}\\n",
               notify=["Service[web]"])
    yield File(path="/etc/systemd/system/web.service", content=UNIT, notify=["Service[web]"])
    yield Service(name="web", running={running}, enabled={enabled},
                  requires=["File[/srv/www/index.html]"])
"""


def web_desired(version: int = 1, running: bool = True, enabled: bool = True) -> str:
    return WEB_DESIRED.format(unit=WEB_UNIT.format(version=version), running=running,
                              enabled=enabled, version=version)


def show(host: Any, unit: str, prop: str) -> str:
    return str(host.run(["systemctl", "show", "-p", prop, "--value", "--", unit]).stdout.strip())


def starts(host: Any, path: str = "/var/lib/web.starts") -> list[str]:
    r = host.run(["cat", path], check=False)
    return r.stdout.splitlines() if r.returncode == 0 else []


def http_get(host: Any, port: int) -> str:
    r = host.run(["python3", "-c", "import sys, urllib.request; "
                  f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{port}/', "
                  "timeout=5).read().decode())"], check=False)
    return str(r.stdout) if r.returncode == 0 else f"(failed: {r.stderr.strip()[-200:]})"


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


# --- systemd ----------------------------------------------------------------------------------


def test_systemd_unit_lifecycle_drift_and_restart_once(converge_host: Any) -> None:
    host = converge_host("svc-web")
    path = host.write_desired(web_desired(1), "web.py")
    report = host.converge_twice(path)
    assert set(changed_attributes(report, "Service[web]")) == {"running", "enabled"}
    assert show(host, "web", "ActiveState") == "active"
    assert show(host, "web", "UnitFileState") == "enabled"
    # notified by the unit file it just got, but started in this run: not restarted again
    assert starts(host) == ["start 1"]
    assert wait_for(lambda: http_get(host, 8080) == "hello 1\n")

    # drift by hand: stopped and disabled
    host.run(["systemctl", "stop", "web"])
    host.run(["systemctl", "disable", "web"])
    code, plan = host.plan_json(path)
    assert code == 2
    changes = {c["attribute"]: c for c in by_id(plan)["Service[web]"]["changes"]}
    assert set(changes) == {"running", "enabled"}
    assert changes["running"]["before"].startswith("inactive")
    assert changes["enabled"]["before"] == "disabled"
    assert host.apply(path).returncode == 2
    assert show(host, "web", "ActiveState") == "active"
    assert show(host, "web", "UnitFileState") == "enabled"
    assert starts(host) == ["start 1", "start 1"]

    # the unit file and the page change (both notify): daemon-reload, exactly one restart
    pid = show(host, "web", "MainPID")
    path2 = host.write_desired(web_desired(2), "web2.py")
    code, report = host.apply_json(path2)
    assert code == 2, json.dumps(report, indent=1)
    svc = by_id(report)["Service[web]"]
    assert [c["attribute"] for c in svc["changes"]] == ["configuration"]  # daemon-reload
    assert svc["refreshed"] is True
    assert show(host, "web", "NeedDaemonReload") == "no"
    assert "VERSION=2" in show(host, "web", "Environment")
    assert by_id(report)["File[/srv/www/index.html]"]["status"] == "changed"
    assert starts(host) == ["start 1", "start 1", "start 2"]
    assert wait_for(lambda: http_get(host, 8080) == "hello 2\n")
    assert show(host, "web", "MainPID") not in (pid, "0")
    assert host.apply(path2).returncode == 0
    assert host.plan(path2).returncode == 0
    assert len(starts(host)) == 3


def test_systemd_reload_keeps_the_main_process(converge_host: Any) -> None:
    host = converge_host("svc-nginx")
    host.install("nginx")
    assert show(host, "nginx", "ActiveState") == "active"
    master = show(host, "nginx", "MainPID")
    site = """server {{ listen 127.0.0.1:8081; location / {{ return 200 "{body}\\n"; }} }}\n"""
    desired = """
        from converge import File, Service

        def desired(facts, settings):
            yield File(path="/etc/nginx/conf.d/test.conf", content={site!r},
                       notify=["Service[nginx]"])
            yield Service(name="nginx", running=True, enabled=True, reload=True)
    """
    path = host.write_desired(desired.format(site=site.format(body="one")))
    report = host.converge_twice(path)
    assert by_id(report)["Service[nginx]"]["refreshed"] is True
    assert wait_for(lambda: http_get(host, 8081) == "one\n")
    path = host.write_desired(desired.format(site=site.format(body="two")))
    assert host.apply(path).returncode == 2
    assert wait_for(lambda: http_get(host, 8081) == "two\n")
    assert show(host, "nginx", "MainPID") == master  # reloaded, never restarted
    assert host.apply(path).returncode == 0


def test_systemd_unit_that_cannot_start_and_unknown_unit(converge_host: Any) -> None:
    host = converge_host("svc-broken")
    path = host.write_desired("""
        from converge import File, Service

        BROKEN = '''[Service]
        ExecStart=/bin/sh -c 'echo "cannot open /etc/broken.conf" >&2; exit 3'
        '''
        MISSING = '''[Service]
        ExecStart=/usr/local/bin/no-such-daemon --serve
        '''

        def desired(facts, settings):
            yield File(path="/etc/systemd/system/broken.service", content=BROKEN)
            yield File(path="/etc/systemd/system/missing.service", content=MISSING)
            yield Service(name="broken", running=True)
            yield Service(name="missing", running=True)
            yield Service(name="no-such-unit", running=True)
            yield File(path="/etc/after-broken", content="x", requires=["Service[broken]"])
            yield File(path="/etc/independent", content="y")
    """)
    code, report = host.apply_json(path)
    assert code == 6, json.dumps(report, indent=1)
    res = by_id(report)
    broken = res["Service[broken]"]
    assert broken["status"] == "failed"
    assert "cannot open /etc/broken.conf" in broken["error"]  # the service's own stderr
    assert "status=3" in broken["error"]
    missing = res["Service[missing]"]
    assert missing["status"] == "failed"
    assert "/usr/local/bin/no-such-daemon" in missing["error"]
    assert "No such file or directory" in missing["error"]
    unknown = res["Service[no-such-unit]"]
    assert unknown["status"] == "failed"
    assert unknown["error"] == "service 'no-such-unit.service' does not exist (not-found)"
    assert res["File[/etc/after-broken]"]["status"] == "skipped"
    assert res["File[/etc/independent]"]["status"] == "changed"
    assert host.run(["test", "-e", "/etc/after-broken"], check=False).returncode == 1

    # again: nothing else to do, still a failure, and only this attempt's journal lines
    r = host.apply(path)
    assert r.returncode == 4, r.stdout
    assert "cannot open /etc/broken.conf" in r.stdout
    block = r.stdout.split("Service[broken]", 1)[1].split("Service[missing]", 1)[0]
    assert block.count("cannot open /etc/broken.conf") == 1, block


def test_systemd_refresh_does_not_start_a_stopped_service(converge_host: Any) -> None:
    host = converge_host("svc-stopped")
    path = host.write_desired(web_desired(1, running=False, enabled=False))
    report = host.converge_twice(path)
    assert by_id(report)["Service[web]"]["status"] == "unchanged"
    assert show(host, "web", "ActiveState") == "inactive"
    # running by hand: the next apply stops it, and the notification does not restart it
    host.run(["systemctl", "start", "web"])
    path = host.write_desired(web_desired(2, running=False, enabled=False))
    code, report = host.apply_json(path)
    assert code == 2, json.dumps(report, indent=1)
    assert "running" in changed_attributes(report, "Service[web]")
    assert show(host, "web", "ActiveState") == "inactive"
    assert starts(host) == ["start 1"]  # the start by hand only
    assert host.apply(path).returncode == 0


# --- supervisor -------------------------------------------------------------------------------

GROUP_CONF = """\
[group:web]
programs=a,b

[program:a]
command=/bin/sh -c 'echo "a $VERSION" >> /var/lib/web.starts; exec /usr/bin/python3 -m http.server 8001 --bind 127.0.0.1'
environment=VERSION="{version}"
startsecs=1

[program:b]
command=/bin/sh -c 'echo "b $VERSION" >> /var/lib/web.starts; exec /usr/bin/python3 -m http.server 8002 --bind 127.0.0.1'
environment=VERSION="{version}"
startsecs=1
"""  # noqa: E501

GROUP_DESIRED = """
from converge import File, Service

def desired(facts, settings):
    yield File(path="/etc/supervisor/conf.d/web.conf", content={conf!r},
               notify=["Service[web:]"])
    yield Service(name="web:", running=True)
"""


@pytest.fixture(scope="module")
def supervisor_host(testhost_image: Image) -> Iterator[ConvergeHost]:
    """One host with supervisord for the supervisor tests (installing it is the slow part);
    each test uses its own programs and desired-state files."""
    host = boot_converge_host(testhost_image, "svc-super")
    try:
        host.install("supervisor")
        yield host
    finally:
        host.host.stop()


def supervisor_status(host: Any) -> dict[str, list[str]]:
    out = host.run(["supervisorctl", "status"], check=False).stdout
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}


def test_supervisor_group_lifecycle_drift_and_restart_once(supervisor_host: Any) -> None:
    host = supervisor_host
    path = host.write_desired(GROUP_DESIRED.format(conf=GROUP_CONF.format(version=1)))
    report = host.converge_twice(path)
    assert "running" in changed_attributes(report, "Service[web:]")
    status = supervisor_status(host)
    assert status["web:a"][0] == status["web:b"][0] == "RUNNING"
    assert sorted(starts(host)) == ["a 1", "b 1"]  # started once, not restarted on notify
    assert wait_for(lambda: all("Directory listing" in http_get(host, port)
                                for port in (8001, 8002)))

    # drift by hand: the whole group stopped
    host.run(["supervisorctl", "stop", "web:*"])
    code, plan = host.plan_json(path)
    assert code == 2
    assert changed_attributes(plan, "Service[web:]") == ["running"]
    assert host.apply(path).returncode == 2
    status = supervisor_status(host)
    assert status["web:a"][0] == status["web:b"][0] == "RUNNING"
    assert sorted(starts(host)) == ["a 1", "a 1", "b 1", "b 1"]

    # the program file changes: reread + update, and each program restarts exactly once
    pids = {name: s[2] for name, s in supervisor_status(host).items()}
    path = host.write_desired(GROUP_DESIRED.format(conf=GROUP_CONF.format(version=2)))
    code, report = host.apply_json(path)
    assert code == 2, json.dumps(report, indent=1)
    assert changed_attributes(report, "Service[web:]") == ["configuration"]
    assert sorted(starts(host)) == ["a 1", "a 1", "a 2", "b 1", "b 1", "b 2"]
    status = supervisor_status(host)
    assert status["web:a"][0] == status["web:b"][0] == "RUNNING"
    assert all(status[name][2] != pid for name, pid in pids.items())
    assert host.apply(path).returncode == 0
    assert host.plan(path).returncode == 0
    assert len(starts(host)) == 6


def test_supervisor_crashing_and_unknown_programs(supervisor_host: Any) -> None:
    host = supervisor_host
    path = host.write_desired("""
        from converge import File, Service

        CRASH = '''[program:crash]
        command=/bin/sh -c 'echo "crash: /etc/crash.ini: No such file or directory" >&2; exit 1'
        startsecs=1
        startretries=1
        '''

        def desired(facts, settings):
            yield File(path="/etc/supervisor/conf.d/crash.conf", content=CRASH)
            yield Service(name="crash", provider="supervisor", running=True)
            yield Service(name="nosuch:", running=True)
            yield File(path="/etc/after-crash", content="x", requires=["Service[crash]"])
            yield File(path="/etc/independent", content="y")
    """)
    code, report = host.apply_json(path)
    assert code == 6, json.dumps(report, indent=1)
    res = by_id(report)
    crash = res["Service[crash]"]
    assert crash["status"] == "failed"
    assert "BACKOFF" in crash["error"] or "FATAL" in crash["error"], crash["error"]
    assert "crash: /etc/crash.ini: No such file or directory" in crash["error"]
    assert res["File[/etc/after-crash]"]["status"] == "skipped"
    assert res["File[/etc/independent]"]["status"] == "changed"
    assert res["Service[nosuch:]"]["error"] == \
        "supervisor program or group 'nosuch:' does not exist (unknown to supervisord)"
    r = host.apply(path)
    assert r.returncode == 4, r.stdout
    assert "crash: /etc/crash.ini: No such file or directory" in r.stdout
    code, plan = host.plan_json(path)
    assert code == 6  # still failing, and File[/etc/after-crash] still to be made
    # BACKOFF until supervisord gives up retrying, then FATAL
    assert by_id(plan)["Service[crash]"]["changes"][0]["before"] in ("crash BACKOFF",
                                                                     "crash FATAL")


def test_supervisor_reload_signals_instead_of_restarting(supervisor_host: Any) -> None:
    host = supervisor_host
    desired = """
        from converge import File, Service

        PROGRAM = '''[program:hup]
        command=/bin/sh -c 'echo start >> /var/lib/hup.log; trap "echo reload >> /var/lib/hup.log" HUP; while :; do sleep 0.1; done'
        startsecs=1
        '''

        def desired(facts, settings):
            yield File(path="/etc/supervisor/conf.d/hup.conf", content=PROGRAM)
            yield File(path="/etc/hup.ini", content={setting!r}, notify=["Service[hup]"])
            yield Service(name="hup", provider="supervisor", running=True, reload=True)
    """  # noqa: E501
    path = host.write_desired(desired.format(setting="v1\n"))
    assert host.apply(path).returncode == 2
    assert starts(host, "/var/lib/hup.log") == ["start"]  # started in this run: not signalled
    pid = supervisor_status(host)["hup"][2]
    path = host.write_desired(desired.format(setting="v2\n"))
    code, report = host.apply_json(path)
    assert code == 2 and by_id(report)["Service[hup]"]["refreshed"] is True
    assert wait_for(lambda: starts(host, "/var/lib/hup.log") == ["start", "reload"])
    assert supervisor_status(host)["hup"][2] == pid
    assert host.apply(path).returncode == 0
