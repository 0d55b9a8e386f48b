"""Many hosts over SSH: converge plan/apply --host/--inventory, in parallel (converge.fleet).

The end-to-end tests boot three throwaway hosts (their own 10.250.N.2 addresses and sshd), put
their host keys in a known_hosts file of the test's own (ssh-keyscan), and run ``converge`` in
this process against them with host key checking on.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from converge import fleet
from converge.errors import UsageError
from converge.ssh import Target, parse_target
from tests.conftest import CliResult

DESIRED = """
from pydantic_settings import BaseSettings
from converge import Command, File

class Settings(BaseSettings):
    greeting: str = "hello"
    role: str = "none"

def desired(facts, settings):
    d = File(path="/etc/fleet-demo", ensure="directory", mode="0755")
    yield d
    for i in range(3):
        yield File(path=f"/etc/fleet-demo/f{i}.conf", mode="0640",
                   content=f"{settings.greeting} {i} from {facts.hostname}\\n")
    yield File(path="/etc/fleet-demo/role", content=settings.role + "\\n")
    yield Command(name="stamp", argv=["sh", "-c", "hostname > /etc/fleet-demo/stamp"],
                  creates="/etc/fleet-demo/stamp", requires=[d])
"""


# -- without hosts: inventories, --limit, --host ----------------------------------------------


def _inventory(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


INVENTORY = """
[defaults]
user = "root"
settings = { greeting = "hi", role = "default" }
ssh_options = ["ConnectTimeout=5"]

[groups.web]
hosts = ["web1", "web2"]
settings = { role = "web" }
port = 2222

[groups.db]
settings = { role = "db" }

[hosts.web1]
address = "10.0.0.1"
settings = { greeting = "hey" }

[hosts.web2]
address = "10.0.0.2"
identity_file = "keys/web2"

[hosts.db1]
address = "10.0.0.3"
groups = ["db"]
port = 2200
secrets_dir = "secrets/db1"
"""


def test_inventory_layers_defaults_groups_host(tmp_path: Path) -> None:
    inv = fleet.load_inventory(_inventory(tmp_path, INVENTORY), cli_ssh_options=["A=1"])
    assert list(inv.hosts) == ["web1", "web2", "db1"]
    assert inv.groups == {"web": ["web1", "web2"], "db": ["db1"]}
    web1, web2, db1 = inv.hosts.values()
    assert web1.settings == {"greeting": "hey", "role": "web"}
    assert web2.settings == {"greeting": "hi", "role": "web"}
    assert db1.settings == {"greeting": "hi", "role": "db"}
    assert (web1.target.destination, web1.target.port) == ("root@10.0.0.1", 2222)
    assert db1.target.port == 2200  # the host's own beats its group's
    assert web2.target.identity_file == str(tmp_path / "keys/web2")
    assert db1.secrets_dir == tmp_path / "secrets/db1"
    assert web1.target.ssh_options == ("A=1", "ConnectTimeout=5")  # command line first: wins


@pytest.mark.parametrize(("limit", "expected"), [
    (None, ["web1", "web2", "db1"]),
    ("web", ["web1", "web2"]),
    ("db1,web2", ["web2", "db1"]),
    ("web*,!web2", ["web1"]),
    ("!db", ["web1", "web2"]),
])
def test_limit(tmp_path: Path, limit: str | None, expected: list[str]) -> None:
    inv = fleet.load_inventory(_inventory(tmp_path, INVENTORY))
    assert [s.name for s in fleet.select(inv, limit)] == expected


@pytest.mark.parametrize(("text", "message"), [
    ("[hosts.a]\nadress = 'x'\n", "unknown key(s) adress"),
    ("[groups.g]\nhosts = ['nope']\n[hosts.a]\n", "unknown host 'nope'"),
    ("[hosts.a]\nuser = '-oProxyCommand=x'\n", "invalid user"),
    ("[hosts.a]\nport = 70000\n", "invalid port"),
    ("[defaults]\nuser = 'root'\n", "declares no hosts"),
])
def test_bad_inventories(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fleet.load_inventory(_inventory(tmp_path, text))


def test_unknown_limit_is_a_usage_error(tmp_path: Path) -> None:
    inv = fleet.load_inventory(_inventory(tmp_path, INVENTORY))
    with pytest.raises(UsageError, match="neither a host nor a group"):
        fleet.select(inv, "web3")


def test_parse_target() -> None:
    assert parse_target("root@web1:2222") == Target("root@web1:2222", "web1", "root", 2222)
    assert parse_target("web1").destination == "web1"
    assert parse_target("[fd00::1]:22").address == "fd00::1"
    with pytest.raises(ValueError):
        parse_target("-oProxyCommand=evil")


def test_cli_refuses_bad_fleet_usage(cli: Callable[..., CliResult],
                                     write_desired: Callable[[str], Path]) -> None:
    path = write_desired(DESIRED)
    r = cli("apply", path, "--host", "web1", "--forks", "0")
    assert (r.code, "--forks must be at least 1") == (1, r.err.strip().removeprefix("error: "))
    r = cli("plan", path, "--limit", "web")
    assert r.code == 1 and "--limit selects hosts of an --inventory" in r.err
    r = cli("plan", path, "--host", "web1", "--ssh-option=-oProxyCommand=x")
    assert r.code == 1 and "--ssh-option expects KEY=VALUE" in r.err


# -- three real hosts -----------------------------------------------------------------------


def _known_hosts(tmp_path: Path, hosts: list[Any]) -> Path:
    lines = []
    for h in hosts:
        scan = subprocess.run(["ssh-keyscan", "-T", "10", h.address], capture_output=True,
                              text=True, timeout=60, check=True)
        assert scan.stdout.strip(), scan.stderr
        lines.append(scan.stdout)
    path = tmp_path / "known_hosts"
    path.write_text("".join(lines))
    return path


def _ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return ["--ssh-option", f"UserKnownHostsFile={known_hosts}",
            "--ssh-option", f"IdentityFile={key}", "--ssh-option", "IdentitiesOnly=yes",
            "--ssh-option", "ConnectTimeout=5"]


@pytest.fixture
def three(make_testhost: Callable[..., Any], tmp_path: Path) -> tuple[list[Any], list[str]]:
    hosts = [make_testhost(name) for name in ("fleet-a", "fleet-b", "fleet-c")]
    return hosts, _ssh_options(hosts[0].ssh_key, _known_hosts(tmp_path, hosts))


def _fleet_inventory(tmp_path: Path, hosts: list[Any]) -> Path:
    a, b, c = hosts
    return _inventory(tmp_path, f"""
[defaults]
user = "root"
settings = {{ role = "plain" }}

[groups.front]
hosts = ["a", "b"]
settings = {{ role = "front" }}

[hosts.a]
address = "{a.address}"
settings = {{ greeting = "ahoy" }}

[hosts.b]
address = "{b.address}"

[hosts.c]
address = "{c.address}"
""")


def _json(r: CliResult) -> dict[str, Any]:
    assert r.out.strip(), f"no output (exit {r.code}): {r.err}"
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def _by_host(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in doc["hosts"]}


def test_three_hosts_in_parallel_then_no_change(
        three: tuple[list[Any], list[str]], tmp_path: Path, cli: Callable[..., CliResult],
        write_desired: Callable[[str], Path]) -> None:
    hosts, ssh = three
    path = write_desired(DESIRED)
    inventory = _fleet_inventory(tmp_path, hosts)

    first = cli("apply", path, "--inventory", inventory, "--set", "greeting=hi", "--json", *ssh)
    doc = _json(first)
    assert first.code == 2, json.dumps(doc, indent=1)
    runs = _by_host(doc)
    assert [runs[h]["status"] for h in "abc"] == ["changed"] * 3
    assert all(runs[h]["changes"] == 6 and runs[h]["round_trips"] > 0 for h in "abc")

    # per-host settings: host beats group beats defaults beats --set; facts are the host's own
    for name, host, greeting, role in (("a", hosts[0], "ahoy", "front"),
                                       ("b", hosts[1], "hi", "front"),
                                       ("c", hosts[2], "hi", "plain")):
        assert host.get_file("/etc/fleet-demo/f1.conf") == \
            f"{greeting} 1 from {host.name}\n".encode(), name
        assert host.get_file("/etc/fleet-demo/role") == f"{role}\n".encode()
        assert host.get_file("/etc/fleet-demo/stamp") == f"{host.name}\n".encode()
        mode = host.run(["stat", "-c", "%a %U", "/etc/fleet-demo/f0.conf"]).stdout.strip()
        assert mode == "640 root"

    # the second run changes nothing; the no-op costs the same few round trips on every host
    second = cli("apply", path, "--inventory", inventory, "--set", "greeting=hi", *ssh)
    assert second.code == 0, second.out + second.err
    table = second.out[second.out.index("HOST"):]
    assert [line.split()[:2] for line in table.splitlines()[1:4]] == \
        [["a", "in"], ["b", "in"], ["c", "in"]]
    assert "apply: 3 host(s): 3 in sync; exit 0" in second.out

    # a drifted file on one host: only that host has a pending change (--limit, --host)
    hosts[1].put_file("/etc/fleet-demo/role", "edited\n")
    plan = cli("plan", path, "--inventory", inventory, "--limit", "front", "--json",
               "--set", "greeting=hi", *ssh)
    runs = _by_host(_json(plan))
    assert plan.code == 2 and sorted(runs) == ["a", "b"]
    assert (runs["a"]["changes"], runs["b"]["changes"]) == (0, 1)
    plan = cli("plan", path, "--host", f"root@{hosts[2].address}", "--set", "role=plain",
               "--set", "greeting=hi", *ssh)
    assert plan.code == 0, plan.out + plan.err


def test_one_host_down_the_others_converge(
        three: tuple[list[Any], list[str]], tmp_path: Path, cli: Callable[..., CliResult],
        write_desired: Callable[[str], Path]) -> None:
    hosts, ssh = three
    path = write_desired(DESIRED)
    hosts[2].run(["systemctl", "stop", "ssh.service"])
    r = cli("apply", path, "--inventory", _fleet_inventory(tmp_path, hosts), "--forks", "2",
            *ssh)
    assert r.code == 6, r.out + r.err  # changes (a, b) and a failure (c)
    table = r.out[r.out.index("HOST"):].splitlines()
    assert table[1].split()[:3] == ["a", "changed", "6"]
    assert table[2].split()[:3] == ["b", "changed", "6"]
    assert table[3].split()[:4] == ["c", "unreachable", "-", "-"]
    assert f"c: unreachable: cannot connect to root@{hosts[2].address}: ssh: " in r.out
    for host in hosts[:2]:
        assert host.get_file("/etc/fleet-demo/role") == b"front\n"


def test_host_key_checking(make_testhost: Callable[..., Any], tmp_path: Path,
                           cli: Callable[..., CliResult],
                           write_desired: Callable[[str], Path]) -> None:
    host = make_testhost("fleet-key")
    path = write_desired(DESIRED)
    # a known_hosts entry with another key for this address: refused
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True)
    other = (tmp_path / "other.pub").read_text().split()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{host.address} {other[0]} {other[1]}\n")
    r = cli("apply", path, "--host", f"root@{host.address}", "--json",
            *_ssh_options(host.ssh_key, wrong))
    run = _json(r)["hosts"][0]
    assert (r.code, run["status"]) == (4, "unreachable")
    assert "Host key verification failed" in run["error"]
    # a host not in known_hosts at all: refused too (StrictHostKeyChecking=yes)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    r = cli("plan", path, "--host", f"root@{host.address}", *_ssh_options(host.ssh_key, empty))
    assert r.code == 4 and "Host key verification failed" in r.out
    assert host.run(["test", "-e", "/etc/fleet-demo"], check=False).returncode == 1
