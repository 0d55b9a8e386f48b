"""Service: a daemon running (or stopped) and enabled at boot (or not).

Providers: ``systemd`` (when PID 1 is systemd) and ``supervisor`` (programs and groups of
supervisord, e.g. ``numbas_lti:``). A refresh (a notifying resource changed) restarts the
service, or reloads it with ``reload=True``; a service started (or, for supervisor, reloaded by
``update``) in this run is not restarted again, and a stopped one is not started.
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
    from converge.host import Host, Result

JOURNAL_WAIT = 3.0  # seconds to wait for a failed unit's own output to reach the journal
STARTING_WAIT = 5.0  # seconds a probe waits for supervisor programs to leave STARTING

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system",
             "/lib/systemd/system")
SUPERVISOR_FILES = ("/etc/supervisor/conf.d/{}.conf", "/etc/supervisord.d/{}.ini",
                    "/etc/supervisord.d/{}.conf")
JOURNAL_LINES = 20
TAIL_LINES = 20


class Service(Resource):
    """A system service (systemd unit or supervisord program/group)."""

    kind = "Service"

    name: str = Field(description="Unit (nginx, nginx.service) or supervisor program/group "
                      "('numbas_lti:' for a group).")
    running: bool | None = Field(default=None, description="Running (true) or stopped.")
    enabled: bool | None = Field(default=None, description="Started at boot (systemd only).")
    reload: bool = Field(default=False, description="Refresh by reloading, not restarting "
                         "(systemctl reload; supervisor: SIGHUP).")
    restart_on_refresh: bool = Field(
        default=True, description="React to notifications (restart or reload).")
    check: list[str] | None = Field(
        default=None,
        description="A read-only command that must succeed before a refresh restarts or "
        "reloads the service, e.g. ['nginx', '-t']: a broken configuration is reported and "
        "the running service is left alone.")
    settle: float = Field(
        default=1.0, ge=0, le=60,
        description="systemd: seconds to watch a started, restarted or reloaded unit for an "
        "immediate crash (supervisor uses each program's startsecs).")

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
        group = self.name.split(":", 1)[0]  # supervisor program files, by convention
        for path in SUPERVISOR_FILES:
            yield f"File[{path.format(group)}]"


@dataclass(frozen=True, slots=True)
class ServiceState:
    loaded: bool  # the unit/program is known to the service manager
    active: bool
    state: str  # ActiveState/SubState or supervisor's state, for messages
    enabled: str | None = None  # systemd UnitFileState
    needs_reload: bool = False  # systemd: unit file changed on disk / config not yet read
    file_exists: bool = False


def run_check(host: Host, desired: Service) -> None:
    """The service's configuration check, before a restart or reload."""
    if desired.check:
        try:
            host.run(desired.check, timeout=120)
        except CommandError as exc:
            raise ResourceError(f"{desired.key}: not restarted: the configuration check "
                                f"failed, the running service was left alone\n{exc}") from None


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
            raise ResourceError(f"{self.what(desired)} {self.target(desired)!r} does not exist "
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

    def target(self, desired: Service) -> str:
        return desired.unit


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
        """start/restart/reload, then watch the unit for ``settle`` seconds: a unit that fails
        (or, with ``Restart=``, is waiting to be restarted after a crash) is a failure."""
        try:
            host.run(argv, timeout=300)
        except CommandError as exc:
            raise ResourceError(f"{exc}\n{self._journal(host, desired.unit)}") from None
        deadline = time.monotonic() + desired.settle
        while True:
            p = self._show(host, desired.unit, "ActiveState,SubState,Result")
            if p.get("ActiveState") == "failed" or p.get("SubState") == "auto-restart":
                raise ResourceError(
                    f"{desired.unit} failed right after {argv[1]} "
                    f"({p.get('ActiveState')}/{p.get('SubState')}, result: "
                    f"{p.get('Result', '?')})\n{self._journal(host, desired.unit)}")
            if time.monotonic() >= deadline:
                return
            time.sleep(0.2)

    @staticmethod
    def _show(host: Host, unit: str, props: str) -> dict[str, str]:
        out = host.run(["systemctl", "show", "--no-pager", "-p", props, "--", unit]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def _journal(self, host: Host, unit: str) -> str:
        """The journal of the unit's last activation (its own output and systemd's messages
        about it), or, failing that, its last lines."""
        invocation = self._show(host, unit, "InvocationID").get("InvocationID", "")
        # The unit's own output reaches journald through a stream that can lag behind
        # systemd's "failed" message: wait (a few seconds at most, and only on this failure
        # path) until some of the unit's own lines are there.
        deadline = time.monotonic() + JOURNAL_WAIT
        while invocation:
            host.run(["journalctl", "--sync"], check=False)
            own = host.run(["journalctl", "--no-pager", "-o", "cat", "-n", "1",
                            f"_SYSTEMD_INVOCATION_ID={invocation}"], check=False)
            if own.stdout.strip() or time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        lines = ""
        if invocation:
            res = host.run(["journalctl", "--no-pager", "-o", "cat", "-n", str(JOURNAL_LINES),
                            f"_SYSTEMD_INVOCATION_ID={invocation}", "+",
                            f"INVOCATION_ID={invocation}"], check=False)
            lines = res.stdout.strip() if res.ok else ""
        if not lines:
            res = host.run(["journalctl", "--no-pager", "-o", "cat", "-n", str(JOURNAL_LINES),
                            "-u", unit], check=False)
            lines = res.stdout.strip()
        return "last journal lines:\n" + (lines or "(none)")

    def refresh(self, host: Host, desired: Service) -> bool:
        if not desired.restart_on_refresh or desired.key in self.started:
            return False
        state = self.probe(host, [desired])[desired.key]
        if state is None or not state.active:
            return False  # a stopped service picks up the change when it starts
        run_check(host, desired)
        verb = "reload" if desired.reload else "restart"
        self._start(host, desired, ["systemctl", verb, "--", desired.unit])
        return True


class SupervisorProvider(_ServiceProvider):
    """supervisorctl: ``reread`` and ``status`` once for all programs (``reread`` only parses
    the program files and says which groups changed; nothing is started or stopped);
    ``update GROUP`` to load a new or changed group; ``name:`` addresses a whole group."""

    name = "supervisor"
    commands = ("supervisorctl",)
    exclusive = True  # reread/update act on supervisord's whole configuration

    BAD = ("FATAL", "BACKOFF", "EXITED", "UNKNOWN")
    UP = ("RUNNING", "STARTING")

    def what(self, desired: Service) -> str:
        return "supervisor program or group"

    def target(self, desired: Service) -> str:
        return desired.name

    @staticmethod
    def _unreachable(res: Result) -> bool:
        """supervisorctl's own complaint that it cannot talk to supervisord (its first line:
        what follows may be a program's output, which may well say 'No such file')."""
        first = (res.stdout.strip() or res.stderr.strip()).split("\n", 1)[0].lower()
        return first.startswith("error: <class") or "refused connection" in first \
            or first.startswith("unix://") or first.startswith("http://")

    def _ctl(self, host: Host, *args: str, timeout: float = 300) -> Result:
        res = host.run(["supervisorctl", *args], check=False, timeout=timeout)
        if self._unreachable(res):
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr,
                               reason="could not reach supervisord")
        return res

    def _status(self, host: Host) -> dict[str, str]:
        res = self._ctl(host, "status")
        # exit 3 when some program is not running; anything else but 0: trouble
        if res.returncode not in (0, 3):
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
        states = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                states[parts[0]] = parts[1]
        return states

    def _reread(self, host: Host) -> dict[str, str]:
        """Group -> available/changed/disappeared, for program files changed on disk."""
        res = self._ctl(host, "reread")
        if res.returncode or res.stdout.startswith("ERROR"):
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr,
                               reason="could not read the program files")
        pending = {}
        for line in res.stdout.splitlines():
            group, sep, what = line.strip().rpartition(": ")
            if sep and what in ("available", "changed", "disappeared"):
                pending[group] = what
        return pending

    @staticmethod
    def _group(desired: Service) -> str:
        return desired.name.split(":", 1)[0]

    @staticmethod
    def _arg(desired: Service) -> str:
        return f"{desired.name}*" if desired.name.endswith(":") else desired.name

    @staticmethod
    def _members(desired: Service, states: dict[str, str]) -> dict[str, str]:
        if desired.name.endswith(":"):  # a group; a lone program is its own group
            group = desired.name[:-1]
            return {k: v for k, v in states.items() if k == group or k.startswith(desired.name)}
        return {k: v for k, v in states.items() if k == desired.name}

    def probe(self, host: Host, resources: Sequence[Service]) -> dict[str, ServiceState | None]:
        pending = self._reread(host)
        states = self._status(host)
        # A program in STARTING is not known to run yet (supervisord retries a crashing one
        # through STARTING and BACKOFF): wait, briefly, for a state that says.
        deadline = time.monotonic() + STARTING_WAIT
        while time.monotonic() < deadline and any(
            v == "STARTING" for r in resources for v in self._members(r, states).values()
        ):
            time.sleep(0.25)
            states = self._status(host)
        result: dict[str, ServiceState | None] = {}
        for r in resources:
            on_disk = pending.get(self._group(r))
            members = self._members(r, states)
            if not members:
                result[r.key] = ServiceState(
                    loaded=False, active=False,
                    state="not loaded" if on_disk == "available" else "unknown to supervisord",
                    needs_reload=on_disk == "available")
                continue
            bad = {k: v for k, v in members.items() if v in self.BAD}
            running = all(v in self.UP for v in members.values())
            result[r.key] = ServiceState(
                loaded=True, active=running,
                state=", ".join(f"{k} {v}" for k, v in sorted(members.items())) if bad
                else "/".join(sorted(set(members.values()))),
                needs_reload=on_disk == "changed",
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
        if "configuration" in by:
            # update stops a changed group and starts it again with its new configuration
            # (autostart programs): that is the restart a refresh would do, so none follows.
            group = self._group(desired)
            res = self._ctl(host, "update", group)
            if res.returncode or "ERROR" in res.stdout:
                raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
            self.started.add(desired.key)
        if desired.running and ("running" in by or "configuration" in by):
            self._start(host, desired, "start")
            self.started.add(desired.key)
        elif desired.running is False and ("running" in by or "configuration" in by):
            res = self._ctl(host, "stop", self._arg(desired))
            if res.returncode or self._errors(res, ("not running",)):
                raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
        return []

    @staticmethod
    def _errors(res: Result, harmless: tuple[str, ...]) -> list[str]:
        return [line for line in (res.stdout + res.stderr).splitlines()
                if "ERROR" in line and not any(h in line for h in harmless)]

    def _start(self, host: Host, desired: Service, verb: str) -> None:
        """start/restart, then wait for the programs to leave STARTING (supervisord calls a
        program started once it stayed up for its ``startsecs``): one in BACKOFF, FATAL or
        EXITED is a failure, shown with the tail of its output."""
        res = self._ctl(host, verb, self._arg(desired))
        errors = self._errors(res, ("already started", "not running"))
        give_up = time.monotonic() + 300  # startsecs of the slowest program, at most
        while True:
            members = self._members(desired, self._status(host))
            bad = {k: v for k, v in members.items() if v in self.BAD}
            if errors or bad or not members:
                shown = ", ".join(f"{k} {v}" for k, v in sorted(members.items()))
                why = "; ".join([*errors, shown] if shown else errors) or "no such program"
                raise ResourceError(f"{desired.name} did not start: {why}"
                                    f"{self._tails(host, list(bad or members))}")
            starting = [k for k, v in members.items() if v == "STARTING"]
            if not starting:  # RUNNING: it stayed up for its startsecs
                if all(v == "RUNNING" for v in members.values()):
                    return
                raise ResourceError(f"{desired.name} did not start: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(members.items())))
            if time.monotonic() >= give_up:
                raise ResourceError(f"{desired.name}: still starting after 300 s: "
                                    + ", ".join(starting))
            time.sleep(0.2)

    def _tails(self, host: Host, programs: list[str]) -> str:
        """The last lines of each program's stderr (or stdout, when stderr is redirected)."""
        out = []
        for program in sorted(programs)[:5]:
            text = ""
            for stream in ("stderr", "stdout"):
                res = host.run(["supervisorctl", "tail", "-3000", program, stream],
                               check=False, timeout=30)
                text = res.stdout.strip() if res.ok and "ERROR" not in res.stdout[:80] else ""
                if text:
                    lines = text.splitlines()[-TAIL_LINES:]
                    out.append(f"last {stream} lines of {program}:")
                    out.extend(f"  {line}" for line in lines)
                    break
            if not text:
                out.append(f"{program}: no output captured")
        return "\n" + "\n".join(out) if out else ""

    def refresh(self, host: Host, desired: Service) -> bool:
        if not desired.restart_on_refresh or desired.key in self.started:
            return False
        state = self.probe(host, [desired])[desired.key]
        if state is None or not state.loaded or not state.active:
            return False  # stopped: it picks up the change when it starts
        run_check(host, desired)
        if desired.reload:
            res = self._ctl(host, "signal", "HUP", self._arg(desired))
            if res.returncode or self._errors(res, ()):
                raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
            return True
        self._start(host, desired, "restart")
        return True


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "Service": [SystemdProvider, SupervisorProvider],
}
