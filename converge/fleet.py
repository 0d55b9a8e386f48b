"""Many hosts: inventories, parallel plan/apply over SSH, a summary and one exit code.

Each host is planned or applied on its own: its own :class:`~converge.ssh.SshHost` (one
multiplexed connection), its own facts (gathered on the target in one round trip), its own
settings (``--set``, overridden by the inventory's defaults, groups, then the host's own), its
own catalog and engine. Hosts run in a thread pool of ``--forks`` workers; whatever happens to
one host (unreachable, a bad setting, a failing resource) is that host's result and never stops
the others. The exit code ORs the hosts' (Puppet's 0/2/4/6); a host that could not be planned
or applied at all counts as a failure (4).

Inventory (TOML)::

    [defaults]                  # every host
    user = "root"
    ssh_options = ["ProxyJump=bastion"]
    settings = { domain = "example.org" }

    [groups.web]
    hosts = ["web1", "web2"]
    settings = { workers = 8 }

    [hosts.web1]
    address = "10.0.0.11"
    settings = { site_name = "one" }

    [hosts.web2]
    address = "10.0.0.12"
    port = 2222
    secrets_dir = "secrets/web2"   # files, one per secret setting, read on this machine
"""

from __future__ import annotations

import fnmatch
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from converge.errors import ConvergeError, UsageError
from converge.ssh import CONNECT_TIMEOUT, SshHost, Target, parse_target

if TYPE_CHECKING:
    from converge.plan import Plan

DEFAULT_FORKS = 10  # also converge.cli.DEFAULT_FORKS
EXIT_OK, EXIT_CHANGES, EXIT_FAILURES = 0, 2, 4

#: keys an inventory entry may set (hosts also ``address`` and ``groups``, groups ``hosts``)
_COMMON_KEYS = frozenset({"user", "port", "identity_file", "ssh_options", "python", "state_dir",
                          "settings", "secrets_dir", "connect_timeout"})


@dataclass
class HostSpec:
    """One host to run: how to reach it and its own settings."""

    target: Target
    settings: dict[str, Any] = field(default_factory=dict)
    secrets_dir: Path | None = None
    groups: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.target.name


@dataclass
class Inventory:
    hosts: dict[str, HostSpec]
    groups: dict[str, list[str]]


# -- inventories --------------------------------------------------------------------------------


def _check_keys(where: str, entry: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where}: expected a table")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(allowed))})")
    settings = entry.get("settings", {})
    if not isinstance(settings, Mapping):
        raise UsageError(f"{where}: settings must be a table")
    options = entry.get("ssh_options", [])
    if not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
        raise UsageError(f"{where}: ssh_options must be a list of strings (KEY=VALUE)")


def load_inventory(path: Path, *, cli_ssh_options: Sequence[str] = ()) -> Inventory:
    """Read a TOML inventory (see the module docstring); relative paths are relative to it."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"inventory {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read inventory {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"inventory {path}: {exc}") from None
    unknown = sorted(set(doc) - {"defaults", "groups", "hosts"})
    if unknown:
        raise UsageError(f"inventory {path}: unknown table(s) {', '.join(unknown)} "
                         "(known: defaults, groups, hosts)")
    base = path.parent
    defaults = doc.get("defaults", {})
    _check_keys(f"{path} [defaults]", defaults, _COMMON_KEYS)
    groups_doc: dict[str, Any] = doc.get("groups", {})
    hosts_doc: dict[str, Any] = doc.get("hosts", {})
    if not hosts_doc:
        raise UsageError(f"inventory {path} declares no hosts ([hosts.NAME] tables)")
    members: dict[str, list[str]] = {}
    for gname, g in groups_doc.items():
        _check_keys(f"{path} [groups.{gname}]", g, _COMMON_KEYS | {"hosts"})
        if gname in hosts_doc:
            raise UsageError(f"{path}: {gname!r} is both a group and a host")
        listed = g.get("hosts", [])
        if not (isinstance(listed, list) and all(isinstance(h, str) for h in listed)):
            raise UsageError(f"{path} [groups.{gname}]: hosts must be a list of host names")
        for h in listed:
            if h not in hosts_doc:
                raise UsageError(f"{path} [groups.{gname}]: unknown host {h!r}")
        members[gname] = list(listed)
    for hname, h in hosts_doc.items():
        _check_keys(f"{path} [hosts.{hname}]", h, _COMMON_KEYS | {"address", "groups"})
        for gname in h.get("groups", []):
            if gname not in groups_doc:
                raise UsageError(f"{path} [hosts.{hname}]: unknown group {gname!r}")
            if hname not in members[gname]:
                members[gname].append(hname)

    hosts: dict[str, HostSpec] = {}
    for hname, h in hosts_doc.items():
        mine = sorted(g for g, m in members.items() if hname in m)
        # least to most specific: defaults, groups (alphabetically), the host
        layers = [defaults, *(groups_doc[g] for g in mine), h]
        merged: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        options: list[str] = list(cli_ssh_options)
        for layer in layers:
            merged.update({k: v for k, v in layer.items()
                           if k not in ("settings", "ssh_options", "hosts", "groups")})
            settings.update(layer.get("settings", {}))
        for layer in reversed(layers):  # ssh: the first value of an option wins
            options += layer.get("ssh_options", [])
        secrets = merged.pop("secrets_dir", None)
        identity = merged.pop("identity_file", None)
        try:
            target = Target(
                name=hname,
                address=str(merged.pop("address", hname)),
                user=merged.pop("user", None),
                port=merged.pop("port", None),
                identity_file=str(base / Path(identity).expanduser()) if identity else None,
                ssh_options=tuple(options),
                python=str(merged.pop("python", "python3")),
                state_dir=str(merged.pop("state_dir", "/var/lib/converge")),
                connect_timeout=int(merged.pop("connect_timeout", CONNECT_TIMEOUT)),
            )
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path} [hosts.{hname}]: {exc}") from None
        hosts[hname] = HostSpec(target, settings,
                                base / Path(secrets).expanduser() if secrets else None,
                                tuple(mine))
    return Inventory(hosts, members)


def select(inventory: Inventory, limit: str | None) -> list[HostSpec]:
    """The hosts ``--limit`` selects: comma-separated host names, group names or glob
    patterns; ``!pattern`` excludes. Without a limit: every host."""
    if not limit:
        return list(inventory.hosts.values())
    chosen: list[str] = []
    excluded: set[str] = set()
    for raw in limit.split(","):
        pattern = raw.strip()
        if not pattern:
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if pattern in inventory.groups:
            names = inventory.groups[pattern]
        elif pattern in inventory.hosts:
            names = [pattern]
        else:
            names = [h for h in inventory.hosts if fnmatch.fnmatchcase(h, pattern)]
            names += [h for g, m in inventory.groups.items()
                      if fnmatch.fnmatchcase(g, pattern) for h in m]
            if not names and not any(c in pattern for c in "*?["):
                raise UsageError(f"--limit: {pattern!r} is neither a host nor a group of the "
                                 "inventory")
        if negate:
            excluded.update(names)
        else:
            chosen += [n for n in names if n not in chosen]
    if all(raw.strip().startswith("!") for raw in limit.split(",") if raw.strip()):
        chosen = list(inventory.hosts)  # only exclusions: from every host
    selected = [inventory.hosts[n] for n in inventory.hosts if n in chosen and n not in excluded]
    if not selected:
        raise UsageError(f"--limit {limit!r} selects no host")
    return selected


def specs_from_args(hosts: Sequence[str], inventory: Path | None, limit: str | None,
                    ssh_options: Sequence[str]) -> list[HostSpec]:
    """The hosts of a run: the inventory's (after ``--limit``), then each ``--host``."""
    specs: list[HostSpec] = []
    if inventory is not None:
        specs = select(load_inventory(inventory, cli_ssh_options=ssh_options), limit)
    elif limit:
        raise UsageError("--limit selects hosts of an --inventory")
    elif not hosts:
        raise UsageError("--ssh-option applies to remote hosts: give --host or --inventory")
    for text in hosts:
        try:
            specs.append(HostSpec(parse_target(text, ssh_options=tuple(ssh_options))))
        except ValueError as exc:
            raise UsageError(f"--host: {exc}") from None
    names = [s.name for s in specs]
    if not specs:
        raise UsageError("no hosts")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"host(s) given twice: {', '.join(dupes)}")
    return specs


# -- runs -------------------------------------------------------------------------------------


@dataclass
class HostRun:
    """What happened on one host."""

    name: str
    destination: str
    exit_code: int = EXIT_FAILURES
    result: Plan | None = None
    error: str | None = None
    duration: float = 0.0
    round_trips: int = 0
    bytes_out: int = 0
    bytes_in: int = 0

    @property
    def changes(self) -> int | None:
        if self.result is None:
            return None
        if self.result.kind == "plan":
            return sum(1 for r in self.result.resources
                       if r.action != "none" and r.status != "skipped")
        return sum(1 for r in self.result.resources if r.applied or r.refreshed)

    @property
    def failures(self) -> int | None:
        return None if self.result is None else self.result.summary.failed

    @property
    def status(self) -> str:
        if self.result is None:
            return "unreachable" if self.error and self.error.startswith("unreachable") \
                else "error"
        if self.result.failed:
            return "failed"
        if self.changes:
            return "pending" if self.result.kind == "plan" else "changed"
        return "in sync"

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.name, "destination": self.destination, "status": self.status,
                "exit_code": self.exit_code, "changes": self.changes,
                "failures": self.failures, "duration": round(self.duration, 3),
                "round_trips": self.round_trips, "bytes_out": self.bytes_out,
                "bytes_in": self.bytes_in, "error": self.error,
                "result": None if self.result is None else self.result.model_dump(mode="json")}


@dataclass
class FleetOptions:
    command: str  # plan or apply
    file: Path
    overrides: dict[str, Any]
    secrets_dir: Path | None
    forks: int = DEFAULT_FORKS
    jobs: int | None = None
    max_passes: int | None = None
    lock_wait: float = 0.0


_LOAD_LOCK = threading.Lock()  # loading imports the desired file: one host at a time


def _provider_commands() -> set[str]:
    """Every command some provider needs (looked up in the facts round trip)."""
    from converge.registry import KINDS, providers_for

    found: set[str] = set()
    for kind in KINDS:
        for p in providers_for(kind):
            found.update(p.commands)
    return found


def run_host(spec: HostSpec, opts: FleetOptions, commands: set[str]) -> HostRun:
    """Plan or apply one host; never raises for what happens on the host."""
    from converge.cli import _exit_code
    from converge.engine import DEFAULT_JOBS, DEFAULT_MAX_PASSES, Engine
    from converge.graph import build
    from converge.loader import load
    from converge.ssh import HostUnreachable
    from converge.trust import guard

    run = HostRun(spec.name, spec.target.display)
    host = SshHost(spec.target)
    started = time.monotonic()
    try:
        host.connect()
        facts = host.gather_facts(commands)
        with _LOAD_LOCK, guard(opts.file):
            catalog = load(opts.file, facts, {**opts.overrides, **spec.settings},
                           spec.secrets_dir or opts.secrets_dir)
        graph = build(catalog.resources)
        if opts.command == "plan":
            result = Engine(catalog.resources, graph, host, facts).plan()
        else:
            with host.lock(wait=opts.lock_wait):
                result = Engine(catalog.resources, graph, host, facts,
                                jobs=opts.jobs or DEFAULT_JOBS,
                                max_passes=opts.max_passes or DEFAULT_MAX_PASSES).apply()
        result.desired = str(catalog.path)
        run.result = result
        run.exit_code = _exit_code(result)
    except HostUnreachable as exc:
        run.error = f"unreachable: {exc}"
    except ConvergeError as exc:
        run.error = str(exc)
    except Exception as exc:  # one host's bug is that host's failure, not the fleet's
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        host.close()
        run.duration = time.monotonic() - started
        run.round_trips = host.counter.round_trips
        run.bytes_out, run.bytes_in = host.counter.bytes_out, host.counter.bytes_in
    return run


def run_fleet(specs: Sequence[HostSpec], opts: FleetOptions,
              on_done: Callable[[HostRun], None] | None = None) -> list[HostRun]:
    """Run every host (``opts.forks`` at a time); results in the order of ``specs``."""
    commands = _provider_commands()
    lock = threading.Lock()

    def one(spec: HostSpec) -> HostRun:
        result = run_host(spec, opts, commands)
        if on_done is not None:
            with lock:
                on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=min(opts.forks, len(specs)) or 1,
                            thread_name_prefix="converge-host") as pool:
        return list(pool.map(one, specs))


def exit_code(runs: Sequence[HostRun]) -> int:
    code = EXIT_OK
    for r in runs:
        code |= r.exit_code
    return code


# -- output -----------------------------------------------------------------------------------


def render_host(run: HostRun, *, colour: bool = False, verbose: bool = False) -> str:
    from converge.plan import render_plan, render_report

    head = f"== {run.name} ({run.destination})"
    if run.result is None:
        return f"{head}: {run.error}\n"
    body = render_plan(run.result, colour=colour, verbose=verbose) \
        if run.result.kind == "plan" else render_report(run.result, colour=colour)
    return f"{head}\n{body}\n"


def render_summary(runs: Sequence[HostRun], command: str) -> str:
    heads = ("HOST", "STATUS", "CHANGES", "FAILED", "TIME", "ROUND TRIPS")
    rows = [(r.name, r.status, "-" if r.changes is None else str(r.changes),
             "-" if r.failures is None else str(r.failures), f"{r.duration:.2f}s",
             str(r.round_trips)) for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    told = ", ".join(f"{n} {s}" for s, n in counts.items())
    lines.append(f"{command}: {len(runs)} host(s): {told}; exit {exit_code(runs)}")
    errors = [r for r in runs if r.error]
    for r in errors:
        lines.append(f"  {r.name}: {r.error.splitlines()[0] if r.error else ''}")
    return "\n".join(lines)


def main(opts: FleetOptions, specs: Sequence[HostSpec], out: TextIO, *, json_output: bool,
         colour: bool, verbose: bool = False) -> int:
    """The CLI's fleet path: per-host sections as hosts finish, then the summary."""
    import json

    def on_done(run: HostRun) -> None:
        if not json_output:
            out.write(render_host(run, colour=colour, verbose=verbose) + "\n")
            out.flush()

    runs = run_fleet(specs, opts, on_done)
    code = exit_code(runs)
    if json_output:
        doc = {"kind": opts.command, "desired": str(opts.file.absolute()), "exit_code": code,
               "hosts": [r.as_dict() for r in runs]}
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(render_summary(runs, opts.command) + "\n")
    return code
