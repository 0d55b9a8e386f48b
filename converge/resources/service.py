"""Service: a daemon running (or stopped) and enabled at boot (or not).

Providers: ``systemd`` (when PID 1 is systemd) and ``supervisor`` (programs and groups of
supervisord, e.g. ``numbas_lti:``). A refresh (a notifying resource changed) restarts the
service, or reloads it with ``reload=True``; a service started in this run is not restarted
again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import Provider, Resource

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.host import Host

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system",
             "/lib/systemd/system")


class Service(Resource):
    """A system service (systemd unit or supervisord program/group)."""

    kind = "Service"

    name: str = Field(description="Unit (nginx, nginx.service) or supervisor program/group "
                      "('numbas_lti:' for a group).")
    running: bool | None = Field(default=None, description="Running (true) or stopped.")
    enabled: bool | None = Field(default=None, description="Started at boot (systemd only).")
    reload: bool = Field(default=False, description="Refresh by reloading, not restarting.")
    restart_on_refresh: bool = Field(
        default=True, description="React to notifications (restart or reload).")
    settle: float = Field(
        default=1.0, ge=0, le=60,
        description="Seconds to watch a started service for an immediate crash.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v) or v.startswith("-"):
            raise ValueError(f"{v!r} is not a service name")
        return v

    @property
    def unit(self) -> str:
        if "." in self.name.rsplit("@", 1)[-1] or self.name.endswith(":"):
            return self.name
        return f"{self.name}.service"

    def preferred_provider(self) -> str | None:
        return "supervisor" if self.name.endswith(":") else None

    def implied_requires(self) -> Iterable[str]:
        base = self.name.removesuffix(".service").rstrip(":")
        yield f"Package[{base}]"
        for d in UNIT_DIRS:
            yield f"File[{d}/{self.unit}]"


@dataclass(frozen=True, slots=True)
class ServiceState:
    loaded: bool  # the unit/program is known to the service manager
    active: bool
    state: str  # ActiveState/SubState or supervisor's state, for messages
    enabled: str | None = None  # systemd UnitFileState
    needs_reload: bool = False  # systemd: unit file changed on disk / config not yet read
    file_exists: bool = False


class _ServiceProvider(Provider[Service, ServiceState]):
    def __init__(self) -> None:
        self.started: set[str] = set()

    def diff(self, desired: Service, actual: ServiceState | None) -> list[Change]:
        if actual is None:
            raise ResourceError(f"{desired.key}: not probed")
        changes: list[Change] = []
        if actual.needs_reload:
            changes.append(Change(attribute="configuration", before="changed on disk",
                                  after="reloaded"))
        if not actual.loaded and not actual.needs_reload:
            raise ResourceError(f"{self.what(desired)} {desired.unit!r} does not exist "
                                f"({actual.state})")
        if desired.enabled is not None:
            now = actual.enabled or "unknown"
            is_on = now in ("enabled", "enabled-runtime", "alias", "static", "indirect",
                            "generated")
            if now in ("static", "indirect", "generated") and desired.enabled is False:
                is_on = False  # cannot be disabled; reported below as is
            if is_on != desired.enabled:
                changes.append(Change(attribute="enabled", before=now,
                                      after="enabled" if desired.enabled else "disabled"))
        if desired.running is not None and actual.active != desired.running:
            changes.append(Change(attribute="running", before=actual.state,
                                  after="running" if desired.running else "stopped"))
        return changes

    def what(self, desired: Service) -> str:
        return "service"


class SystemdProvider(_ServiceProvider):
    """systemctl; one ``systemctl show`` for every unit of a generation."""

    name = "systemd"
    commands = ("systemctl",)

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        why = super().unusable(host, facts)
        if why is None and facts.init != "systemd":
            return f"PID 1 is {facts.init}, not systemd"
        return why

    def probe(self, host: Host, resources: Sequence[Service]) -> dict[str, ServiceState | None]:
        units = [r.unit for r in resources]
        props = "Id,LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload"
        out = host.run(["systemctl", "show", "--no-pager", "-p", props, "--", *units])
        blocks = [b for b in out.stdout.split("\n\n") if b.strip()]
        if len(blocks) != len(units):
            raise ResourceError(f"systemctl show answered {len(blocks)} units for "
                                f"{len(units)}")
        unit_files = host.file_states([f"{d}/{u}" for u in units for d in UNIT_DIRS])
        result: dict[str, ServiceState | None] = {}
        for r, block in zip(resources, blocks, strict=True):
            p = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            exists = any(unit_files.get(f"{d}/{r.unit}") for d in UNIT_DIRS)
            loaded = p.get("LoadState") == "loaded"
            active = p.get("ActiveState") in ("active", "reloading", "activating")
            result[r.key] = ServiceState(
                loaded=loaded,
                active=active,
                state=f"{p.get('ActiveState', '?')} ({p.get('SubState', '?')})" if loaded
                else p.get("LoadState", "?"),
                enabled=p.get("UnitFileState") or None,
                needs_reload=p.get("NeedDaemonReload") == "yes" or (exists and not loaded),
                file_exists=exists,
            )
        return result

    def apply(self, host: Host, desired: Service, actual: ServiceState | None,
              changes: list[Change]) -> list[str]:
        by = {c.attribute: c for c in changes}
        unit = desired.unit
        if "configuration" in by:
            host.run(["systemctl", "daemon-reload"])
        if "enabled" in by:
            if desired.enabled:
                if actual is not None and actual.enabled == "masked":
                    host.run(["systemctl", "unmask", "--", unit])
                host.run(["systemctl", "enable", "--", unit])
            else:
                host.run(["systemctl", "disable", "--", unit])
        if "running" in by:
            if desired.running:
                self._start(host, desired, ["systemctl", "start", "--", unit])
                self.started.add(desired.key)
            else:
                host.run(["systemctl", "stop", "--", unit])
        return []

    def _start(self, host: Host, desired: Service, argv: list[str]) -> None:
        try:
            host.run(argv, timeout=300)
        except CommandError as exc:
            raise ResourceError(f"{exc}\n{self._journal(host, desired.unit)}") from None
        deadline = time.monotonic() + desired.settle
        while time.monotonic() < deadline:
            state = host.run(["systemctl", "is-active", "--", desired.unit], check=False)
            if state.stdout.strip() == "failed":
                raise ResourceError(f"{desired.unit} failed right after starting\n"
                                    f"{self._journal(host, desired.unit)}")
            time.sleep(0.2)

    def _journal(self, host: Host, unit: str) -> str:
        res = host.run(["journalctl", "-u", unit, "-n", "20", "--no-pager", "-o", "cat"],
                       check=False)
        return "last journal lines:\n" + (res.stdout.strip() or "(none)")

    def refresh(self, host: Host, desired: Service) -> None:
        if not desired.restart_on_refresh or desired.key in self.started:
            return
        state = self.probe(host, [desired])[desired.key]
        if state is None or not state.active:
            return  # a stopped service picks up the change when it starts
        verb = "reload" if desired.reload else "restart"
        self._start(host, desired, ["systemctl", verb, "--", desired.unit])


class SupervisorProvider(_ServiceProvider):
    """supervisorctl: ``status`` once for all programs; ``reread`` + ``update`` to load new
    or changed program files; ``name:`` addresses a whole group."""

    name = "supervisor"
    commands = ("supervisorctl",)
    exclusive = True  # reread/update act on every program at once

    def what(self, desired: Service) -> str:
        return "supervisor program or group"

    def _status(self, host: Host) -> dict[str, str]:
        res = host.run(["supervisorctl", "status"], check=False)
        # exit 3 when some program is not running; 4 "no such process"; anything else: down
        if res.returncode not in (0, 3, 4) or "refused connection" in res.stdout + res.stderr \
                or "no such file" in (res.stdout + res.stderr).lower():
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr,
                               reason="could not reach supervisord")
        states = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1]
        return states

    def probe(self, host: Host, resources: Sequence[Service]) -> dict[str, ServiceState | None]:
        states = self._status(host)
        result: dict[str, ServiceState | None] = {}
        for r in resources:
            if r.name.endswith(":"):
                members = {k: v for k, v in states.items() if k.startswith(r.name)}
            else:
                members = {k: v for k, v in states.items() if k == r.name}
            if not members:
                result[r.key] = ServiceState(loaded=False, active=False, state="not loaded",
                                             needs_reload=True)
                continue
            values = sorted(set(members.values()))
            bad = [k for k, v in members.items() if v in ("FATAL", "BACKOFF", "EXITED")]
            running = all(v in ("RUNNING", "STARTING") for v in members.values())
            result[r.key] = ServiceState(
                loaded=True, active=running and not bad,
                state=", ".join(f"{k} {v}" for k, v in sorted(members.items())) if bad
                else "/".join(values),
            )
        return result

    def diff(self, desired: Service, actual: ServiceState | None) -> list[Change]:
        if desired.enabled is not None:
            raise ResourceError(f"{desired.key}: supervisor has no 'enabled'; set autostart "
                                "in the program file instead")
        return super().diff(desired, actual)

    def apply(self, host: Host, desired: Service, actual: ServiceState | None,
              changes: list[Change]) -> list[str]:
        by = {c.attribute: c for c in changes}
        target = desired.name
        if "configuration" in by:
            host.run(["supervisorctl", "reread"])
            res = host.run(["supervisorctl", "update", desired.name.rstrip(":")], check=False)
            if res.returncode or "ERROR" in res.stdout:
                raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
        if "running" in by:
            if desired.running:
                self._ctl(host, desired, "start", target)
                self.started.add(desired.key)
            else:
                self._ctl(host, desired, "stop", target)
        return []

    def _ctl(self, host: Host, desired: Service, verb: str, target: str) -> None:
        arg = f"{target}*" if target.endswith(":") else target
        res = host.run(["supervisorctl", verb, arg], check=False, timeout=300)
        text = res.stdout + res.stderr
        if res.returncode not in (0,) or "ERROR" in text:
            tail = host.run(["supervisorctl", "tail", arg.rstrip("*") if not
                             target.endswith(":") else arg, "stderr"], check=False)
            raise CommandError(res.argv, res.returncode, res.stdout,
                               res.stderr + ("\n" + tail.stdout[-2000:] if tail.ok else ""))

    def refresh(self, host: Host, desired: Service) -> None:
        if not desired.restart_on_refresh or desired.key in self.started:
            return
        # Program files may have changed: load them (restarts what changed), then restart.
        host.run(["supervisorctl", "reread"])
        host.run(["supervisorctl", "update", desired.name.rstrip(":")], check=False)
        state = self.probe(host, [desired])[desired.key]
        if state is not None and state.loaded and desired.running is not False:
            self._ctl(host, desired, "restart", desired.name)


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "Service": [SystemdProvider, SupervisorProvider],
}
