"""Periodic drift correction: a systemd service + timer pair per desired-state file.

``converge timer install FILE --every 30min`` writes (with converge's own File and Service
resources, through the engine, under the run lock):

- ``/etc/systemd/system/converge-<name>.service``: a oneshot ``apply FILE --lock-wait 300``
  run by this same interpreter, ``SuccessExitStatus=2`` (changes made is success; 4 and 6 are
  failures systemd shows), a start timeout, ``Nice=10`` and ``IOSchedulingClass=idle``;
- ``/etc/systemd/system/converge-<name>.timer``: ``OnUnitActiveSec`` (or ``OnCalendar``) from
  ``--every``, ``RandomizedDelaySec`` from ``--splay``, ``Persistent=true``;
- ``/etc/converge/<name>.env`` (mode 0600), only when secret settings were given: the secret
  ``--set`` values as environment variables the Settings class reads. Secrets never go into a
  unit or onto a command line; other ``--set`` values go into ``ExecStart``.

``<name>`` is the desired file's stem and a short hash of its absolute path, so several
desired files each have their timer. The service file says which file it applies (a comment
line), so ``timer status`` can list them all.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converge.errors import UsageError
from converge.watch import format_duration, parse_duration

if TYPE_CHECKING:
    from pydantic import BaseModel

    from converge.facts import Facts
    from converge.host import Host
    from converge.plan import Plan
    from converge.report import RunRow
    from converge.resources.base import Resource

UNIT_DIR = "/etc/systemd/system"
ENV_DIR = "/etc/converge"
PREFIX = "converge-"
RUN_LOCK_WAIT = 300
DEFAULT_TIMEOUT = "1h"
MARK = "# converge-desired: "
SCHEDULE_MARK = "# converge-schedule: "

_SECRET_NAME = re.compile(r"pass|secret|token|credential|private|(^|_)key$", re.I)


@dataclass(frozen=True)
class Names:
    """The files of one desired file's timer."""

    name: str  # numbas-1a2b3c4d

    @property
    def service(self) -> str:
        return f"{PREFIX}{self.name}.service"

    @property
    def timer(self) -> str:
        return f"{PREFIX}{self.name}.timer"

    @property
    def service_path(self) -> str:
        return f"{UNIT_DIR}/{self.service}"

    @property
    def timer_path(self) -> str:
        return f"{UNIT_DIR}/{self.timer}"

    @property
    def env_path(self) -> str:
        return f"{ENV_DIR}/{self.name}.env"


def names_for(desired: Path) -> Names:
    path = str(desired.absolute())
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", desired.stem).strip("-")[:40] or "desired"
    return Names(f"{stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}")


# -- schedule ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    every: str  # as given
    interval: float | None  # seconds, for a time span
    calendar: str | None  # an OnCalendar= expression
    splay: float
    timeout: float

    def describe(self) -> str:
        when = f"every {format_duration(self.interval)}" if self.interval is not None \
            else f"on calendar {self.calendar!r}"
        return when + (f", splay {format_duration(self.splay)}" if self.splay else "")


def schedule(every: str, splay: str | None, timeout: str | None, host: Host) -> Schedule:
    """``--every`` as a time span (``30min``: OnUnitActiveSec) or a calendar expression
    (``hourly``, ``*-*-* 02:00``: OnCalendar, checked with ``systemd-analyze calendar``)."""
    interval: float | None
    calendar: str | None = None
    try:
        interval = parse_duration(every, "--every")
    except UsageError:
        interval = None
        calendar = every.strip()
        if not calendar or "\n" in calendar:
            raise UsageError(f"--every: {every!r} is neither a duration nor a calendar "
                             "expression") from None
        if host.which("systemd-analyze"):
            res = host.run(["systemd-analyze", "calendar", "--", calendar], check=False)
            if not res.ok:
                raise UsageError(f"--every: {every!r} is neither a duration (30s, 5min, 1h) "
                                 f"nor a calendar expression systemd accepts: "
                                 f"{res.stderr.strip() or res.stdout.strip()}") from None
    if interval is not None and interval < 1:
        raise UsageError("--every must be at least 1s")
    splay_s = parse_duration(splay, "--splay") if splay else 0.0
    timeout_s = parse_duration(timeout or DEFAULT_TIMEOUT, "--timeout")
    if timeout_s < 1:
        raise UsageError("--timeout must be at least 1s")
    return Schedule(every, interval, calendar, splay_s, timeout_s)


# -- settings ---------------------------------------------------------------------------------

def _secret_type(annotation: Any) -> bool:
    from pydantic import SecretBytes, SecretStr

    stack = [annotation]
    while stack:
        t = stack.pop()
        if isinstance(t, type) and issubclass(t, (SecretStr, SecretBytes)):
            return True
        stack.extend(typing.get_args(t))
    return False


def _env_name(cls: type[BaseModel], field_name: str) -> str:
    """The environment variable the loader reads ``field_name`` from."""
    field = cls.model_fields[field_name]
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    prefix = str(cls.model_config.get("env_prefix") or "") or "CONVERGE_"
    env = alias or prefix + field_name
    return env if cls.model_config.get("case_sensitive", False) else env.upper()


def split_settings(
    settings: BaseModel, overrides: Sequence[str], environ: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """What a timer run must be given: ``--set`` arguments for the unit's command line, and
    environment variables (named the way the loader reads them) for the root-only file.

    Secret ``--set`` values go to the file, never the command line. A setting is secret when
    its type is (or contains) ``SecretStr``/``SecretBytes``, or, to err on the safe side, when
    its name says so (password, secret, token, key...). Settings that came from ``environ``
    (the environment of the install) go to the file too: the way converge's docs recommend
    giving secrets, and then the timer's runs get them the same way.
    """
    from pydantic_settings import BaseSettings

    cls = type(settings)
    is_settings = issubclass(cls, BaseSettings)
    plain: list[str] = []
    env: dict[str, str] = {}
    given: set[str] = set()
    for pair in overrides:
        key, _, value = pair.partition("=")
        key = key.strip()
        field = cls.model_fields.get(key)
        if field is None:
            raise UsageError(f"unknown setting {key!r}")
        given.add(key)
        if not (_secret_type(field.annotation) or _SECRET_NAME.search(key)):
            plain.append(f"{key}={value}")
            continue
        if not is_settings:
            raise UsageError(
                f"setting {key} is secret, but the file's Settings is not a pydantic-settings "
                "BaseSettings, so a timer run could only get it on its command line; make "
                "Settings a BaseSettings (or use --secrets-dir)")
        env[_env_name(cls, key)] = value
    if is_settings and environ:
        sensitive = bool(cls.model_config.get("case_sensitive", False))
        found = dict(environ) if sensitive else {k.upper(): v for k, v in environ.items()}
        for name in cls.model_fields:
            var = _env_name(cls, name)
            if name not in given and var in found:
                env[var] = found[var]
    return plain, env


# -- unit files -------------------------------------------------------------------------------

def _exec_quote(arg: str) -> str:
    """One ExecStart= word: double-quoted, C escapes, % and $ kept literal."""
    body = (arg.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            .replace("%", "%%").replace("$", "$$"))
    return f'"{body}"'


def _env_quote(value: str) -> str:
    body = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") \
        .replace("`", "\\`")
    return f'"{body}"'


def _value(text: str) -> str:
    """A unit-file value on one line, specifiers kept literal."""
    return text.replace("\n", " ").replace("%", "%%")


def command(desired: Path, plain: Sequence[str], *, secrets_dir: Path | None,
            keep_reports: int | None) -> list[str]:
    """What the timer runs: this interpreter's converge, applying ``desired``."""
    argv = [sys.executable, "-m", "converge", "apply", str(desired.absolute()),
            "--lock-wait", str(RUN_LOCK_WAIT), "--no-color"]
    for pair in plain:
        argv += ["--set", pair]
    if secrets_dir is not None:
        argv += ["--secrets-dir", str(secrets_dir.absolute())]
    if keep_reports is not None:
        argv += ["--keep-reports", str(keep_reports)]
    return argv


def service_unit(names: Names, desired: Path, argv: Sequence[str], sched: Schedule, *,
                 env_file: bool, state_dir: str | None) -> str:
    lines = [
        f"{MARK}{desired.absolute()}",
        "# Written by `converge timer install`; remove with `converge timer remove`.",
        "[Unit]",
        f"Description=converge: keep {_value(str(desired.absolute()))} applied",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=" + " ".join(_exec_quote(a) for a in argv),
        "# exit 2: changes made, all converged (a success); 4 and 6: failures",
        "SuccessExitStatus=2",
        f"TimeoutStartSec={format_duration(sched.timeout)}",
        "Nice=10",
        "IOSchedulingClass=idle",
        "Environment=CONVERGE_TRIGGER=timer",
    ]
    if state_dir:
        quoted = state_dir.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        lines.append(f'Environment="CONVERGE_STATE_DIR={quoted}"')
    if env_file:
        lines.append(f"EnvironmentFile={names.env_path}")
    return "\n".join(lines) + "\n"


def timer_unit(names: Names, desired: Path, sched: Schedule) -> str:
    lines = [
        f"{MARK}{desired.absolute()}",
        f"{SCHEDULE_MARK}{sched.describe()}",  # a comment: no specifiers
        "# Written by `converge timer install`; remove with `converge timer remove`.",
        "[Unit]",
        f"Description=converge: apply {_value(str(desired.absolute()))} "
        f"{_value(sched.describe())}",
        "",
        "[Timer]",
        f"Unit={names.service}",
    ]
    if sched.interval is not None:
        first = min(sched.interval, 60.0)  # soon after boot or install, then every interval
        lines += [f"OnActiveSec={format_duration(first)}",
                  f"OnUnitActiveSec={format_duration(sched.interval)}"]
    else:
        assert sched.calendar is not None
        lines.append(f"OnCalendar={_value(sched.calendar)}")
    lines += ["# runs missed while the machine was off happen at boot (OnCalendar timers)",
              "Persistent=true",
              "AccuracySec=1s"]
    if sched.splay:
        lines.append(f"RandomizedDelaySec={format_duration(sched.splay)}")
    lines += ["", "[Install]", "WantedBy=timers.target"]
    return "\n".join(lines) + "\n"


def env_file(names: Names, desired: Path, secret: dict[str, str]) -> str:
    lines = [f"# Secret settings of {desired.absolute()} for {names.service} (root only)."]
    lines += [f"{k}={_env_quote(v)}" for k, v in sorted(secret.items())]
    return "\n".join(lines) + "\n"


# -- install and remove: converge's own resources ---------------------------------------------

def install_resources(names: Names, desired: Path, service_text: str, timer_text: str,
                      secret: dict[str, str]) -> list[Resource]:
    from pydantic import SecretStr

    from converge.resources.file import File
    from converge.resources.service import Service

    resources: list[Resource] = []
    env_key = f"File[{names.env_path}]"
    if secret:
        resources += [
            File(path=ENV_DIR, ensure="directory"),
            File(path=names.env_path, content=SecretStr(env_file(names, desired, secret)),
                 owner="root", group="root", mode="0600", backup=False),
        ]
    else:
        resources.append(File(path=names.env_path, ensure="absent", backup=False))
    resources += [
        File(path=names.service_path, content=service_text, owner="root", group="root",
             mode="0644"),
        File(path=names.timer_path, content=timer_text, owner="root", group="root",
             mode="0644", notify=[f"Service[{names.timer}]"]),
        # nothing managed but the unit's configuration: a changed unit file is reloaded
        Service(name=names.service, requires=[env_key]),
        Service(name=names.timer, enabled=True, running=True,
                requires=[f"Service[{names.service}]", env_key]),
    ]
    return resources


def remove_resources(names: Names, host: Host) -> tuple[list[Resource], list[Resource]]:
    """What removing a timer applies, in two steps: its units stopped and disabled, then its
    files removed (one catalog cannot say it: a Service depends on its unit's File)."""
    from converge.resources.file import File
    from converge.resources.service import Service

    units: list[Resource] = []
    loaded = set(_loaded_units(host, [names.timer, names.service]))
    if names.timer in loaded:
        units.append(Service(name=names.timer, running=False, enabled=False))
    if names.service in loaded:
        # a run waiting for the lock (we hold it) is stopped; none can be half-way
        units.append(Service(name=names.service, running=False,
                             requires=[u.key for u in units]))
    files: list[Resource] = [File(path=path, ensure="absent", backup=False)
                             for path in (names.timer_path, names.service_path, names.env_path)]
    return units, files


def _loaded_units(host: Host, units: Sequence[str]) -> list[str]:
    out = host.run(["systemctl", "show", "--no-pager", "-p", "Id,LoadState", "--", *units],
                   check=False).stdout
    loaded = []
    for block in out.split("\n\n"):
        p = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if p.get("LoadState") == "loaded":
            loaded.append(p.get("Id", ""))
    return loaded


def apply_resources(resources: list[Resource], host: Host, facts: Facts) -> Plan:
    """Run converge's own resources through the engine (the caller holds the run lock)."""
    from converge.engine import Engine
    from converge.graph import build

    graph = build(resources)
    return Engine(resources, graph, host, facts).apply()


def after_remove(names: Names, host: Host) -> None:
    """systemd forgets the removed units (and any failed state they left)."""
    from converge.errors import ResourceError

    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "reset-failed", "--", names.timer, names.service], check=False)
    with contextlib.suppress(ResourceError):
        host.remove(ENV_DIR)  # only if empty: it may hold secrets/ or other timers' files


def require_systemd(facts: Facts) -> None:
    if os.geteuid() != 0:
        raise UsageError("converge timer writes system units: run it as root")
    if facts.init != "systemd":
        raise UsageError(f"PID 1 is {facts.init}, not systemd: no timers here; "
                         "use `converge watch FILE --interval 30min` instead")


# -- status -----------------------------------------------------------------------------------

@dataclass
class TimerStatus:
    names: Names
    desired: str
    schedule: str
    enabled: str
    active: str
    next_run: _dt.datetime | None
    last_trigger: str
    last_result: str  # of the service's last run, as systemd saw it
    last_run: RunRow | None  # from the reports

    def as_dict(self) -> dict[str, Any]:
        return {
            "timer": self.names.timer, "service": self.names.service,
            "desired": self.desired, "schedule": self.schedule, "enabled": self.enabled,
            "active": self.active,
            "next_run": self.next_run.isoformat().replace("+00:00", "Z")
            if self.next_run else None,
            "last_trigger": self.last_trigger or None, "last_result": self.last_result,
            "last_run": self.last_run.as_dict() if self.last_run else None,
        }


def installed(desired: Path | None) -> list[tuple[Names, str]]:
    """The timers converge installed (of ``desired`` only, when given): names and file."""
    found: list[tuple[Names, str]] = []
    try:
        entries = sorted(os.listdir(UNIT_DIR))
    except OSError:
        return []
    for entry in entries:
        if not (entry.startswith(PREFIX) and entry.endswith(".timer")):
            continue
        names = Names(entry[len(PREFIX):-len(".timer")])
        try:
            with open(f"{UNIT_DIR}/{entry}") as f:
                first = f.readline()
        except OSError:
            continue
        if not first.startswith(MARK):
            continue
        path = first[len(MARK):].rstrip("\n")
        if desired is None or path == str(desired.absolute()):
            found.append((names, path))
    return found


def status(desired: Path | None, host: Host, state_dir: Path) -> list[TimerStatus]:
    from converge.report import history

    result = []
    for names, path in installed(desired):
        props = dict(
            line.split("=", 1) for line in host.run(
                ["systemctl", "show", "--no-pager", "-p",
                 "UnitFileState,ActiveState,SubState,LastTriggerUSec,NextElapseUSecRealtime",
                 "--", names.timer], check=False).stdout.splitlines() if "=" in line)
        svc = dict(
            line.split("=", 1) for line in host.run(
                ["systemctl", "show", "--no-pager", "-p", "Result,ExecMainStatus,ActiveState",
                 "--", names.service], check=False).stdout.splitlines() if "=" in line)
        sched = "?"
        try:
            with open(names.timer_path) as f:
                for line in f:
                    if line.startswith(SCHEDULE_MARK):
                        sched = line[len(SCHEDULE_MARK):].strip()
        except OSError:
            pass
        runs = history(state_dir, limit=1, desired=Path(path), kind="apply")
        result_text = svc.get("Result", "?")
        if svc.get("ExecMainStatus") not in (None, "", "0"):
            result_text += f" (exit {svc['ExecMainStatus']})"
        if svc.get("ActiveState") == "activating":
            result_text = "running now"
        result.append(TimerStatus(
            names=names, desired=path, schedule=sched,
            enabled=props.get("UnitFileState", "?"),
            active=f"{props.get('ActiveState', '?')} ({props.get('SubState', '?')})",
            next_run=_next_run(host, names.timer, props.get("NextElapseUSecRealtime", "")),
            last_trigger=props.get("LastTriggerUSec", ""),
            last_result=result_text, last_run=runs[0] if runs else None,
        ))
    return result


def _next_run(host: Host, timer: str, shown: str) -> _dt.datetime | None:
    """When the timer elapses next: systemd's JSON listing (it converts monotonic timers to
    wall-clock time); else the realtime property, when the systemd is too old for JSON."""
    res = host.run(["systemctl", "list-timers", "--all", "--no-pager", "-o", "json", "--",
                    timer], check=False)
    if res.ok:
        try:
            for entry in json.loads(res.stdout):
                if entry.get("unit") == timer:
                    usec = int(entry.get("next") or 0)
                    return _dt.datetime.fromtimestamp(usec / 1e6, _dt.UTC) if usec else None
        except (ValueError, TypeError, AttributeError):
            pass
    shown = shown.strip()
    if not shown or shown == "n/a":
        return None
    for fmt in ("%a %Y-%m-%d %H:%M:%S %Z", "%a %Y-%m-%d %H:%M:%S"):
        try:
            return _dt.datetime.strptime(shown, fmt).replace(tzinfo=_dt.UTC)
        except ValueError:
            continue
    return None


def render_status(found: Sequence[TimerStatus]) -> str:
    from converge.report import EXIT_MEANING

    if not found:
        return "No converge timers installed."
    out: list[str] = []
    now = _dt.datetime.now(_dt.UTC)
    for t in found:
        out.append(f"{t.names.timer}  ({t.desired})")
        out.append(f"  schedule   {t.schedule}")
        out.append(f"  timer      {t.enabled}, {t.active}")
        if t.next_run is not None:
            left = max(0.0, (t.next_run - now).total_seconds())
            out.append(f"  next run   {t.next_run:%Y-%m-%d %H:%M:%S} UTC "
                       f"(in {format_duration(left)})")
        else:
            out.append("  next run   none scheduled")
        r = t.last_run
        if r is None:
            out.append("  last run   none recorded")
        else:
            out.append(
                f"  last run   {r.start.astimezone(_dt.UTC):%Y-%m-%d %H:%M:%S} UTC "
                f"({r.trigger}): exit {r.exit_code} ({EXIT_MEANING.get(r.exit_code, '?')}), "
                f"{r.changed} change(s) ({r.corrective} corrective), {r.failed} failure(s), "
                f"{r.duration:.2f}s  [converge report {r.id}]")
        out.append(f"  unit       last result: {t.last_result}")
        out.append("")
    return "\n".join(out).rstrip("\n")
