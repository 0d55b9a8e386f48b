"""Firewall on a real firewalld (nftables backend) inside a throwaway systemd host.

The host has its own network namespace; "from outside" means from this machine to the host's
veth address, never the machine's own network. One host serves the whole module (firewalld
takes seconds to install); each test uses its own services and ports.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from converge.resources.firewall import Firewall, Found, Zone, find, parse_zones
from tests.testhost import Image
from tests.testhost.converge import ConvergeHost, boot_converge_host, by_id, changed_attributes

LISTEN_PORT = 8080


@pytest.fixture(scope="module")
def fw_host(testhost_image: Image) -> Iterator[ConvergeHost]:
    host = boot_converge_host(testhost_image, "fw")  # stops what it booted if it fails
    try:
        host.install("firewalld")
        host.run(["systemctl", "is-active", "--quiet", "firewalld"])
        # something to connect to from outside: a listener inside the host
        host.run(["systemd-run", "--unit=listener", "--", "python3", "-m", "http.server",
                  "--bind", "0.0.0.0", str(LISTEN_PORT)])
        deadline = time.monotonic() + 20
        while host.run(["python3", "-c", f"import socket; socket.create_connection(("
                        f"'127.0.0.1', {LISTEN_PORT}), 1)"], check=False).returncode:
            assert time.monotonic() < deadline, "listener did not start"
            time.sleep(0.2)
        yield host
    finally:
        host.host.stop()


def reachable(host: ConvergeHost, port: int = LISTEN_PORT) -> bool:
    """Can this machine open a TCP connection to the host (through its firewall)?"""
    try:
        with socket.create_connection((host.address, port), timeout=3):
            return True
    except OSError:  # refused/unreachable (firewalld rejects), or timed out
        return False


def fw(host: ConvergeHost, *args: str) -> set[str]:
    return set(host.run(["firewall-cmd", *args]).stdout.split())


# -- on a real firewalld ----------------------------------------------------------------------

RULES = """
from converge import Firewall

def desired(facts, settings):
    yield Firewall(port=8080, ensure={ensure!r})
    yield Firewall(service="http", ensure={ensure!r})
    yield Firewall(zone="public", service="https", source="10.250.0.0/16", ensure={ensure!r})
    yield Firewall(port="9000-9002", protocol="udp", runtime=False, ensure={ensure!r})
"""
RICH = 'rule family="ipv4" source address="10.250.0.0/16" service name="https" accept'


def test_add_noop_drift_and_removal(fw_host: ConvergeHost) -> None:
    host = fw_host
    assert not reachable(host), "port 8080 should be closed by firewalld's default zone"

    present = host.write_desired(RULES.format(ensure="present"))
    report = host.converge_twice(present)  # add, then a no-op, then an empty plan
    assert changed_attributes(report, "Firewall[8080/tcp]") == ["runtime", "permanent"]
    assert changed_attributes(report, "Firewall[9000-9002/udp]") == ["permanent"]
    assert {"8080/tcp"} <= fw(host, "--list-ports")
    assert "9000-9002/udp" not in fw(host, "--list-ports")  # runtime=False: not touched
    assert {"8080/tcp", "9000-9002/udp"} <= fw(host, "--permanent", "--list-ports")
    assert "http" in fw(host, "--list-services") & fw(host, "--permanent", "--list-services")
    for args in ([], ["--permanent"]):
        rules = host.run(["firewall-cmd", *args, "--zone=public", "--list-rich-rules"]).stdout
        assert RICH in rules.splitlines()
    assert reachable(host), "port 8080 should be open now"

    # runtime-only drift: someone removed the port without --permanent
    host.run(["firewall-cmd", "--remove-port=8080/tcp"])
    assert not reachable(host)
    code, plan = host.plan_json(present)
    assert code == 2
    pending = {r["id"]: r["changes"] for r in plan["resources"] if r["changes"]}
    assert pending == {"Firewall[8080/tcp]": [
        {"attribute": "runtime", "before": "absent", "after": "present", "sensitive": False,
         "diff": None}]}
    assert host.apply(present).returncode == 2
    assert reachable(host)

    # permanent-only drift: gone from the permanent configuration, still open now
    host.run(["firewall-cmd", "--permanent", "--remove-service=http"])
    text = host.plan(present)
    assert text.returncode == 2
    assert 'permanent: "absent" -> "present"' in text.stdout and "runtime:" not in text.stdout
    code, plan = host.plan_json(present)
    assert changed_attributes(plan, "Firewall[http]") == ["permanent"]
    assert host.apply(present).returncode == 2
    assert "http" in fw(host, "--permanent", "--list-services")

    # removal, from both configurations
    absent = host.write_desired(RULES.format(ensure="absent"))
    report = host.converge_twice(absent)
    assert changed_attributes(report, "Firewall[http]") == ["runtime", "permanent"]
    assert by_id(report)["Firewall[8080/tcp]"]["changes"][0]["after"] == "absent"
    assert not reachable(host), "port 8080 should be closed again"
    assert "8080/tcp" not in fw(host, "--list-ports") | fw(host, "--permanent", "--list-ports")
    assert "http" not in fw(host, "--list-services") | fw(host, "--permanent", "--list-services")
    assert RICH not in host.run(["firewall-cmd", "--zone=public", "--list-rich-rules"]).stdout


def test_port_inside_a_range_and_unknown_names(fw_host: ConvergeHost) -> None:
    host = fw_host
    host.run(["firewall-cmd", "--add-port=7000-7010/tcp"])
    host.run(["firewall-cmd", "--permanent", "--add-port=7000-7010/tcp"])
    # 7005 is open through the range: nothing to do; closing it splits the range
    inside = host.write_desired("""
        from converge import Firewall
        def desired(facts, settings):
            yield Firewall(port=7005)
    """)
    assert host.plan(inside).returncode == 0
    closed = host.write_desired("""
        from converge import Firewall
        def desired(facts, settings):
            yield Firewall(port=7005, ensure="absent")
    """)
    host.converge_twice(closed)
    assert {"7000-7004/tcp", "7006-7010/tcp"} <= fw(host, "--list-ports")
    assert "7005/tcp" not in fw(host, "--permanent", "--list-ports")

    typo = host.write_desired("""
        from converge import Firewall
        def desired(facts, settings):
            yield Firewall(service="htpp")
            yield Firewall(zone="nosuchzone", service="http")
            yield Firewall(service="ssh")
    """)
    result = host.plan(typo)
    assert result.returncode == 4, result.stdout
    assert "unknown firewalld service 'htpp'" in result.stdout
    assert "did you mean http" in result.stdout
    assert "unknown firewalld zone 'nosuchzone'" in result.stdout
    _, plan = host.plan_json(typo)
    assert by_id(plan)["Firewall[ssh]"]["status"] == "ok"  # the others still planned
    assert host.apply(typo).returncode == 4
    assert "htpp" not in host.run(["firewall-cmd", "--list-services"]).stdout


def test_firewalld_stopped_offline_cmd_and_runtime_skipped(fw_host: ConvergeHost) -> None:
    host = fw_host
    path = host.write_desired("""
        from converge import Firewall
        def desired(facts, settings):
            yield Firewall(service="imaps")
            yield Firewall(service="pop3s", runtime=True, permanent=False)
    """)
    host.run(["systemctl", "stop", "firewalld"])
    try:
        code, plan = host.plan_json(path)
        assert code == 2
        imaps = by_id(plan)["Firewall[imaps]"]
        assert [c["attribute"] for c in imaps["changes"]] == ["permanent"]
        assert any("firewalld is not running" in n and "skipped" in n for n in imaps["notes"])
        pop3s = by_id(plan)["Firewall[pop3s]"]
        assert pop3s["changes"] == [] and "nothing can be managed" in pop3s["notes"][0]
        text = host.plan(path).stdout
        assert "# firewalld is not running" in text  # the warning shows in the plan...
        code, report = host.apply_json(path)
        assert code == 2
        assert by_id(report)["Firewall[imaps]"]["notes"]  # ...and in the report
        offline = host.run(["firewall-offline-cmd", "--zone=public", "--list-services"])
        assert "imaps" in offline.stdout.split()
        assert host.apply(path).returncode == 0
    finally:
        host.run(["systemctl", "start", "firewalld"])
    assert "imaps" in fw(host, "--list-services")  # loaded from the permanent configuration
    code, plan = host.plan_json(path)
    assert code == 2 and changed_attributes(plan, "Firewall[pop3s]") == ["runtime"]
    host.apply(path)
    assert host.plan(path).returncode == 0


# -- the model and the parser (no host) -------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({}, "exactly one of service or port"),
    ({"service": "http", "port": 80}, "exactly one of service or port"),
    ({"port": 70000}, "out of range"),
    ({"port": "80-70"}, "out of range"),
    ({"port": "http"}, "a number"),
    ({"service": "http", "protocol": "udp"}, "protocol goes with port"),
    ({"service": "http", "source": "nowhere"}, "IPv4/IPv6"),
    ({"service": "http", "zone": "pub lic"}, "not a firewalld zone or service name"),
    ({"service": "http", "runtime": False, "permanent": False}, "nothing to manage"),
])
def test_invalid_rules_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Firewall(**fields)


def test_keys_and_rich_rules() -> None:
    assert Firewall(service="http").key == "Firewall[http]"
    assert Firewall(port=8080).key == "Firewall[8080/tcp]"
    assert Firewall(port="53", protocol="udp", zone="internal").key == \
        "Firewall[internal:53/udp]"
    rule = Firewall(service="ssh", source="2001:db8::/32")
    assert rule.key == "Firewall[ssh from 2001:db8::/32]"
    assert rule.rich_rule() == \
        'rule family="ipv6" source address="2001:db8::/32" service name="ssh" accept'


def test_parse_and_find() -> None:
    zones = parse_zones(
        "public (default, active)\n  target: default\n  services: dhcpv6-client http ssh\n"
        "  ports: 8000-8010/tcp 53/udp\n  rich rules: \n"
        '\trule family="ipv4" source address="10.1.2.3/8" service name="https" accept\n'
        '\trule family="ipv4" source address="10.0.0.0/8" service name="ftp" log accept\n'
        "\ntrusted\n  services: \n  ports: \n  rich rules: \n")
    assert set(zones) == {"public", "trusted"}
    public = zones["public"]
    assert public.services == {"dhcpv6-client", "http", "ssh"}
    assert find(Firewall(service="http"), public) == Found(True, ("http",))
    assert find(Firewall(port=8005), public).present
    assert find(Firewall(port="8005-8020"), public) == Found(False, ("8005-8010/tcp",))
    assert find(Firewall(port=53), public) == Found(False)  # 53/udp, not tcp
    # a rich rule is matched by meaning (10.1.2.3/8 is 10.0.0.0/8), never one with logging
    assert find(Firewall(service="https", source="10.0.0.0/8"), public).present
    assert not find(Firewall(service="ftp", source="10.0.0.0/8"), public).present
    assert find(Firewall(service="http"), zones["trusted"]) == Found(False)
    assert find(Firewall(port=1), Zone("empty")) == Found(False)
