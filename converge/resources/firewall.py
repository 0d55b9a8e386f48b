"""Firewall: a service or port open (or closed) in a firewalld zone.

firewalld keeps two configurations: the *runtime* one (what the kernel enforces now) and the
*permanent* one (what it loads at start or reload). Both are managed by default and compared
separately, so a rule removed with ``firewall-cmd --remove-service`` (runtime only) or with
``--permanent`` only is drift, shown as such.

Probe: ``firewall-cmd --list-all-zones`` and ``firewall-cmd --permanent --list-all-zones`` for
every rule at once (plus ``--get-services`` only when a declared service is in neither, to tell
a typo from a missing rule). The default zone is read from ``firewalld.conf``. Apply: one
``firewall-cmd [--permanent] --zone=Z --add-service=a --add-service=b`` per configuration,
zone and option, never a ``--reload`` (which would drop runtime-only state and disturb
connections). When firewalld is not running, the permanent configuration is edited with
``firewall-offline-cmd`` and the runtime is skipped, with a note.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import BatchProvider, Provider, Resource

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.host import Host

FIREWALLD_CONF = "/etc/firewalld/firewalld.conf"
FALLBACK_ZONE = "public"  # firewalld's own default when firewalld.conf names none
NOT_RUNNING = 252  # firewall-cmd's exit status when firewalld is not running

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_PORT_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def _port(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # let pydantic refuse it
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str):
        m = _PORT_RE.match(value.strip())
        if not m:
            raise ValueError(f"port must be a number (8080) or a range ('8000-8010'), "
                             f"not {value!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"port {value!r} is out of range (1-65535, low-high)")
        return str(lo) if lo == hi else f"{lo}-{hi}"
    return value


class Firewall(Resource):
    """A service or port open (or closed) in a firewalld zone, at runtime and permanently."""

    kind = "Firewall"

    zone: str | None = Field(
        default=None,
        description="firewalld zone; unset: the default zone (DefaultZone in firewalld.conf).")
    service: str | None = Field(
        default=None,
        description="A firewalld service (http, https, ssh...: `firewall-cmd --get-services`). "
        "Give either service or port.")
    port: str | None = Field(
        default=None, description="A port (8080) or range ('8000-8010'), with protocol.")
    protocol: Literal["tcp", "udp", "sctp", "dccp"] = Field(
        default="tcp", description="Protocol of port.")
    source: str | None = Field(
        default=None,
        description="Allow only from this address or network (10.0.0.0/8, 2001:db8::/32); "
        "managed as a firewalld rich rule.")
    ensure: Literal["present", "absent"] = Field(
        default="present", description="present: allowed; absent: not allowed by this rule.")
    permanent: bool = Field(
        default=True, description="Manage the permanent configuration (loaded at start).")
    runtime: bool = Field(
        default=True, description="Manage the runtime configuration (enforced now).")

    @field_validator("port", mode="before")
    @classmethod
    def _port_value(cls, v: Any) -> Any:
        return _port(v)

    @field_validator("zone", "service")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a firewalld zone or service name")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"source must be an IPv4/IPv6 address or network, not {v!r}") \
                from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Firewall:
        if (self.service is None) == (self.port is None):
            raise ValueError("give exactly one of service or port")
        if self.service is not None and "protocol" in self.model_fields_set:
            raise ValueError("protocol goes with port, not with service")
        if not (self.permanent or self.runtime):
            raise ValueError("permanent and runtime are both false: nothing to manage")
        return self

    @property
    def what(self) -> str:
        return self.service if self.service is not None else f"{self.port}/{self.protocol}"

    @property
    def ident(self) -> str:
        zone = f"{self.zone}:" if self.zone else ""
        source = f" from {self.source}" if self.source else ""
        return f"{zone}{self.what}{source}"

    def implied_requires(self) -> Iterable[str]:
        yield "Package[firewalld]"
        yield "Service[firewalld]"  # started first, so that the runtime can be managed

    def rich_rule(self) -> str:
        """The rich rule for a rule with a source (firewalld's own spelling)."""
        assert self.source is not None
        net = ipaddress.ip_network(self.source, strict=False)
        if self.service is not None:
            target = f'service name="{self.service}"'
        else:
            target = f'port port="{self.port}" protocol="{self.protocol}"'
        return (f'rule family="ipv{net.version}" source address="{self.source}" '
                f"{target} accept")


# -- what firewall-cmd says -------------------------------------------------------------------

PortRange = tuple[int, int, str]  # low, high, protocol


@dataclass(frozen=True, slots=True)
class Zone:
    """One zone of one configuration, as ``--list-all-zones`` prints it."""

    name: str
    services: frozenset[str] = frozenset()
    ports: tuple[PortRange, ...] = ()
    rich_rules: tuple[str, ...] = ()


def parse_zones(text: str) -> dict[str, Zone]:
    """Parse ``firewall-cmd [--permanent] --list-all-zones``.

    A zone is a header line (``public`` or ``public (default, active)``) followed by
    indented ``key: value`` lines; rich rules follow ``rich rules:``, one per line.
    """
    zones: dict[str, Zone] = {}
    name: str | None = None
    fields: dict[str, str] = {}
    rules: list[str] = []
    key = ""

    def flush() -> None:
        if name is not None:
            zones[name] = Zone(
                name=name,
                services=frozenset(fields.get("services", "").split()),
                ports=tuple(p for p in map(_parse_port, fields.get("ports", "").split())
                            if p is not None),
                rich_rules=tuple(rules),
            )

    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            flush()
            name = line.split()[0]
            fields, rules, key = {}, [], ""
            continue
        stripped = line.strip()
        m = re.match(r"^([a-z0-9-]+( [a-z]+)?):(?: (.*))?$", stripped)
        if m and not stripped.startswith("rule "):
            key = m.group(1)
            fields[key] = m.group(3) or ""
        elif key == "rich rules":
            rules.append(stripped)
    flush()
    return zones


def _parse_port(text: str) -> PortRange | None:
    port, _, proto = text.partition("/")
    m = _PORT_RE.match(port)
    if not m or not proto:
        return None
    lo = int(m.group(1))
    return lo, int(m.group(2) or lo), proto


def _rich_rule_key(text: str) -> tuple[Any, ...] | None:
    """What a simple rich rule allows: ``(network, "service", name)`` or ``(network, "port",
    low, high, protocol)``; ``None`` for anything else (logging, limits, other actions...),
    which converge never touches."""
    try:
        tokens = shlex.split(text)
    except ValueError:
        return None
    if not tokens or tokens[0] != "rule" or tokens[-1] != "accept":
        return None
    attrs: dict[str, str] = {}
    elements: list[str] = []
    for tok in tokens[1:-1]:
        k, sep, v = tok.partition("=")
        if sep:
            attrs[f"{elements[-1] if elements else 'rule'}.{k}"] = v
        else:
            elements.append(tok)
    allowed = {"rule.family", "source.address", "service.name", "port.port", "port.protocol"}
    if set(attrs) - allowed or "source.address" not in attrs:
        return None
    try:
        net = ipaddress.ip_network(attrs["source.address"], strict=False)
    except ValueError:
        return None
    if elements == ["source", "service"]:
        return net, "service", attrs.get("service.name")
    if elements == ["source", "port"]:
        p = _parse_port(f"{attrs.get('port.port', '')}/{attrs.get('port.protocol', '')}")
        return None if p is None else (net, "port", *p)
    return None


def _desired_key(desired: Firewall) -> tuple[Any, ...]:
    assert desired.source is not None
    net = ipaddress.ip_network(desired.source, strict=False)
    if desired.service is not None:
        return net, "service", desired.service
    p = _parse_port(f"{desired.port}/{desired.protocol}")
    assert p is not None
    return (net, "port", *p)


@dataclass(frozen=True, slots=True)
class Found:
    """How much of one rule one configuration has."""

    present: bool  # fully there
    remove: tuple[str, ...] = ()  # what to remove to make it absent (empty: nothing is there)

    def describe(self) -> str:
        if self.present:
            return "present"
        return "partly present" if self.remove else "absent"


def find(desired: Firewall, zone: Zone) -> Found:
    if desired.source is not None:
        want = _desired_key(desired)
        matching = tuple(r for r in zone.rich_rules if _rich_rule_key(r) == want)
        return Found(bool(matching), matching)
    if desired.service is not None:
        there = desired.service in zone.services
        return Found(there, (desired.service,) if there else ())
    lo, hi, proto = _parse_port(f"{desired.port}/{desired.protocol}") or (0, -1, "")
    ranges = sorted((a, b) for a, b, p in zone.ports if p == proto)
    covered_to = lo - 1
    for a, b in ranges:
        if a <= covered_to + 1 and b > covered_to:
            covered_to = b
    overlaps = []
    for a, b in ranges:
        start, end = max(a, lo), min(b, hi)
        if start <= end:  # removing a part of a range splits it (firewalld does that)
            overlaps.append(f"{start}/{proto}" if start == end else f"{start}-{end}/{proto}")
    return Found(covered_to >= hi, tuple(overlaps))


@dataclass(frozen=True, slots=True)
class FirewallState:
    zone: str  # the zone the rule lives in (the default zone resolved)
    running: bool  # firewalld is running: the runtime configuration exists
    permanent: Found
    runtime: Found | None = None  # None when firewalld is not running
    error: str | None = None  # unknown zone or service: reported by diff


def _not_running_note(desired: Firewall) -> str | None:
    if not desired.runtime:
        return None
    if desired.permanent:
        return ("firewalld is not running: the runtime configuration is skipped; the "
                "permanent rule takes effect when firewalld starts")
    return ("firewalld is not running and permanent=False: nothing can be managed "
            "(skipped)")


class FirewalldProvider(BatchProvider[Firewall, FirewallState]):
    """firewall-cmd (firewall-offline-cmd when firewalld is stopped); two probes for all
    rules, batched changes, no reload."""

    name = "firewalld"
    commands = ("firewall-cmd",)
    exclusive = True  # applied as one batch: one firewall-cmd per zone and option

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        if host.which("firewall-cmd") is None:
            return "missing command firewall-cmd (install the firewalld package)"
        return None

    # -- probe --------------------------------------------------------------------------------

    def _default_zone(self, host: Host) -> str:
        text = (host.read_bytes(FIREWALLD_CONF) or b"").decode("utf-8", "replace")
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "DefaultZone" and value.strip():
                return value.strip()
        return FALLBACK_ZONE

    def _list(self, host: Host, argv: list[str]) -> dict[str, Zone] | None:
        res = host.run(argv, check=False, timeout=120)
        if res.returncode == NOT_RUNNING:
            return None
        if res.returncode != 0:
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
        return parse_zones(res.stdout)

    def probe(self, host: Host, resources: Sequence[Firewall]
              ) -> dict[str, FirewallState | None]:
        runtime = self._list(host, ["firewall-cmd", "--list-all-zones"])
        running = runtime is not None
        if running:
            permanent = self._list(host, ["firewall-cmd", "--permanent", "--list-all-zones"])
            if permanent is None:  # stopped between the two calls
                raise ResourceError("firewalld stopped while it was being probed")
        else:
            if host.which("firewall-offline-cmd") is None:
                raise ResourceError("firewalld is not running and firewall-offline-cmd is "
                                    "missing: cannot read the permanent configuration")
            permanent = self._list(host, ["firewall-offline-cmd", "--list-all-zones"])
            if permanent is None:
                raise ResourceError("firewall-offline-cmd refused to run")
        default = self._default_zone(host)
        states: dict[str, FirewallState | None] = {}
        unknown_services: list[str] = []
        for r in resources:
            zone = r.zone or default
            if zone not in permanent or (runtime is not None and zone not in runtime):
                if zone in permanent:
                    error = (f"firewalld zone {zone!r} exists only in the permanent "
                             "configuration: reload firewalld to create it at runtime")
                else:
                    known = ", ".join(sorted(permanent))
                    error = f"unknown firewalld zone {zone!r} (zones: {known})"
                states[r.key] = FirewallState(zone=zone, running=running,
                                              permanent=Found(False), error=error)
                continue
            perm = find(r, permanent[zone])
            rt = find(r, runtime[zone]) if runtime is not None else None
            states[r.key] = FirewallState(zone=zone, running=running, permanent=perm,
                                          runtime=rt)
            if r.service is not None and not perm.remove and not (rt and rt.remove):
                unknown_services.append(r.key)
        if unknown_services:
            # in no zone's configuration: a rule to add, or a typo? Ask firewalld once.
            argv = ["firewall-cmd", "--get-services"] if running else \
                ["firewall-offline-cmd", "--get-services"]
            services = set(host.run(argv, timeout=120).stdout.split())
            by_key = {r.key: r for r in resources}
            for key in unknown_services:
                name = by_key[key].service
                if name not in services:
                    near = difflib.get_close_matches(str(name), sorted(services), n=3)
                    hint = f"; did you mean {', '.join(near)}?" if near else ""
                    cmd = argv[0]
                    state = states[key]
                    assert state is not None
                    states[key] = FirewallState(
                        zone=state.zone, running=running, permanent=state.permanent,
                        runtime=state.runtime,
                        error=f"unknown firewalld service {name!r} (not in `{cmd} "
                              f"--get-services`{hint})")
        return states

    # -- diff ---------------------------------------------------------------------------------

    def diff(self, desired: Firewall, actual: FirewallState | None) -> list[Change]:
        if actual is None:
            raise ResourceError(f"{desired.key}: not probed")
        if actual.error:
            raise ResourceError(actual.error)
        want = desired.ensure == "present"
        changes: list[Change] = []
        configs: list[tuple[str, Found | None]] = []
        if desired.runtime and actual.running:
            configs.append(("runtime", actual.runtime))
        if desired.permanent:
            configs.append(("permanent", actual.permanent))
        for attribute, found in configs:
            assert found is not None
            if (want and not found.present) or (not want and found.remove):
                changes.append(Change(attribute=attribute, before=found.describe(),
                                      after=desired.ensure))
        return changes

    def notes(self, desired: Firewall, actual: FirewallState | None) -> list[str]:
        """What this rule cannot manage on this host (shown in plan and report)."""
        if actual is None or actual.running:
            return []
        note = _not_running_note(desired)
        return [note] if note else []

    # -- apply --------------------------------------------------------------------------------

    def _operations(self, desired: Firewall, actual: FirewallState, changes: list[Change]
                    ) -> list[tuple[tuple[str, ...], str, str]]:
        """(command prefix, option, value) for every change."""
        ops: list[tuple[tuple[str, ...], str, str]] = []
        for change in changes:
            if change.attribute == "runtime":
                prefix: tuple[str, ...] = ("firewall-cmd", f"--zone={actual.zone}")
                found = actual.runtime
            elif actual.running:
                prefix = ("firewall-cmd", "--permanent", f"--zone={actual.zone}")
                found = actual.permanent
            else:
                prefix = ("firewall-offline-cmd", f"--zone={actual.zone}")
                found = actual.permanent
            assert found is not None
            what = "rich-rule" if desired.source else "service" if desired.service else "port"
            if desired.ensure == "present":
                value = desired.rich_rule() if desired.source else desired.what
                ops.append((prefix, f"--add-{what}", value))
            else:
                ops.extend((prefix, f"--remove-{what}", v) for v in found.remove)
        return ops


    def apply_batch(self, host: Host,
                    items: Sequence[tuple[Firewall, FirewallState | None, list[Change]]]
                    ) -> dict[str, list[str] | BaseException]:
        """One command per configuration, zone and option (``--add-service=a
        --add-service=b``); a failed command fails the rules it carried."""
        groups: dict[tuple[tuple[str, ...], str], list[tuple[str, str]]] = {}
        outcome: dict[str, list[str] | BaseException] = {}
        for desired, actual, changes in items:
            outcome[desired.key] = []
            if actual is None:
                outcome[desired.key] = ResourceError(f"{desired.key}: not probed")
                continue
            for prefix, option, value in self._operations(desired, actual, changes):
                groups.setdefault((prefix, option), []).append((desired.key, value))
        for (prefix, option), members in groups.items():
            keys = [k for k, _ in members if not isinstance(outcome[k], BaseException)]
            if not keys:
                continue
            argv = [*prefix, *(f"{option}={v}" for k, v in members if k in keys)]
            try:
                host.run(argv, timeout=120)
            except CommandError as exc:
                for k in keys:
                    outcome[k] = exc
        return outcome


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "Firewall": [FirewalldProvider],
}
