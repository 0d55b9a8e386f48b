"""The command line: the only place errors become exit codes and output is printed.

Exit codes (Puppet's detailed exit codes, for scripts and timers):
0 nothing to do / in sync, 2 changes made (apply) or pending (plan), 4 failures,
6 changes and failures, 1 bad desired state or usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from converge.errors import ConvergeError, DesiredStateError, LockError, UsageError

if TYPE_CHECKING:
    from converge.loader import Catalog
    from converge.plan import Plan, ResourcePlan
    from converge.resources.base import Resource

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_FAILURES = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("file", type=Path, help="desired-state file (Python)")
    common.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting (repeatable)")
    common.add_argument("--secrets-dir", type=Path,
                        help="directory of secret files, one per setting (pydantic-settings)")
    common.add_argument("--facts", metavar="PRESET",
                        help="use another platform's facts (e.g. rhel-7) instead of probing")
    common.add_argument("--log-format", choices=("console", "json"), default="console",
                        help="log lines (on stderr) for people or as JSON lines")
    common.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="warning", help="least important log events shown")
    common.add_argument("--no-color", action="store_true", help="plain output")

    # what an apply takes, whether run once (apply) or in a loop (watch)
    applying = _Parser(add_help=False)
    applying.add_argument("--jobs", type=int, default=None,
                          help="resources applied concurrently")
    applying.add_argument("--max-passes", type=int, default=None,
                          help="repeat until a pass changes nothing, at most this often")
    applying.add_argument("--keep-reports", type=_count, default=None, metavar="N",
                          help="keep the last N run reports (default 100; 0: write none)")

    parser = _Parser(prog="converge", description="Declarative state reconciliation.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("plan", parents=[common], help="show what apply would change")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="list resources in sync too")
    p.add_argument("--report", action="store_true",
                   help="also write a run report (see converge history)")
    p.add_argument("--keep-reports", type=_count, default=None, metavar="N",
                   help="keep the last N run reports (default 100)")

    a = sub.add_parser("apply", parents=[common, applying],
                       help="change the host to match the file")
    a.add_argument("--json", action="store_true", help="print the run report as JSON")
    a.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another run's lock")

    for each in (p, a):
        _add_fleet_options(each)
    sub.add_parser("graph", parents=[common], help="print the dependency graph as DOT")
    _add_drift_commands(sub, common, applying)
    return parser


#: converge.fleet.DEFAULT_FORKS (not imported here: a local run never loads the fleet code)
DEFAULT_FORKS = 10


def _add_fleet_options(parser: _Parser) -> None:
    g = parser.add_argument_group("remote hosts (over OpenSSH; see docs/fleet.md)")
    g.add_argument("--host", dest="hosts", action="append", default=[],
                   metavar="[USER@]HOST[:PORT]", help="a remote host (repeatable)")
    g.add_argument("--inventory", type=Path, metavar="FILE",
                   help="TOML inventory of hosts and groups, with their settings")
    g.add_argument("--limit", metavar="PATTERNS",
                   help="inventory hosts, groups or globs, comma-separated; !PATTERN excludes")
    g.add_argument("--forks", type=int, default=DEFAULT_FORKS, metavar="N",
                   help=f"hosts run in parallel (default {DEFAULT_FORKS})")
    g.add_argument("--ssh-option", dest="ssh_options", action="append", default=[],
                   metavar="KEY=VALUE", help="extra ssh -o option for every host (repeatable)")


def _version() -> str:
    from converge import __version__

    return f"converge {__version__}"


def _load(args: argparse.Namespace) -> Catalog:
    from converge.facts import Facts, preset
    from converge.host import LocalHost
    from converge.loader import load, parse_overrides
    from converge.trust import guard

    facts = preset(args.facts) if args.facts else Facts.gather(LocalHost())
    secrets_dir = args.secrets_dir
    if secrets_dir is None and os.path.isdir("/etc/converge/secrets"):
        secrets_dir = Path("/etc/converge/secrets")
    with guard(args.file):  # as root: refuse a desired file others could write
        return load(args.file, facts, parse_overrides(args.overrides), secrets_dir)


def _exit_code(report: Plan) -> int:
    code = EXIT_OK
    if report.kind == "plan":
        changed = report.pending
    else:  # what was done, not what was attempted
        changed = any(r.applied or r.refreshed for r in report.resources)
    if changed:
        code |= EXIT_CHANGES
    if report.failed:
        code |= EXIT_FAILURES
    return code


def _progress(stream: TextIO, total: int) -> Any:
    """A one-line progress display on a terminal (nothing otherwise)."""
    if not stream.isatty():
        return None
    seen: set[str] = set()

    def on_event(what: str, rp: ResourcePlan) -> None:
        seen.add(rp.id)
        stream.write(f"\r\x1b[K[{len(seen)}/{total}] {what}: {rp.id}"[:200])
        stream.flush()

    return on_event


def catalog_fields(resource: Resource) -> dict[str, Any]:
    """A resource's declared fields for display: secrets and sensitive content redacted."""
    from pydantic import SecretStr

    from converge.plan import SENSITIVE

    fields: dict[str, Any] = {}
    sensitive = bool(getattr(resource, "is_sensitive", False))
    for name in resource.model_fields_set:
        value = getattr(resource, name)
        if isinstance(value, SecretStr) or (sensitive and name in ("content", "vars")):
            fields[name] = SENSITIVE
        elif isinstance(value, dict):
            fields[name] = {k: SENSITIVE if isinstance(v, SecretStr) else v
                            for k, v in value.items()}
        else:
            fields[name] = value
    return fields


def _catalog_listing(catalog: Catalog) -> str:
    """A catalog rendered for a preset platform: every resource and what it manages."""
    lines = [f"Catalog of {catalog.path} for {catalog.facts.preset} (not probed):", ""]
    for r in catalog.resources:
        lines.append(f"  {r.key}")
        for name, value in catalog_fields(r).items():
            lines.append(f"      {name}: {value!r}")
    lines.append("")
    lines.append(f"{len(catalog.resources)} resources.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    import contextlib

    try:
        with contextlib.redirect_stdout(out):  # --help and --version print to our stdout
            args = _parser().parse_args(list(argv) if argv is not None else None)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_ERROR
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    from converge import log

    log.configure(args.log_format, args.log_level, err)
    colour = not args.no_color and out.isatty() and "NO_COLOR" not in os.environ
    try:
        return _run(args, out, err, colour)
    except DesiredStateError as exc:
        print(f"error: {exc}", file=err)
        print("Nothing was applied.", file=err)
        return EXIT_ERROR
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_ERROR
    except LockError as exc:  # the run could not start: nothing was done
        print(f"error: {exc}", file=err)
        return EXIT_ERROR
    except ConvergeError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_FAILURES
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, colour: bool) -> int:
    if args.command in _DRIFT_COMMANDS:
        return _run_drift(args, out, err, colour)
    if getattr(args, "hosts", None) or getattr(args, "inventory", None) is not None \
            or getattr(args, "limit", None) or getattr(args, "ssh_options", None):
        return _run_fleet(args, out, colour)
    from converge.graph import build, to_dot

    catalog = _load(args)
    graph = build(catalog.resources)
    if args.command == "graph":
        out.write(to_dot(graph))
        return EXIT_OK
    if args.facts:
        if args.command == "apply":
            raise UsageError("--facts renders another platform's catalog; it cannot be applied")
        if args.json:
            import json

            doc = {"facts": catalog.facts.as_dict(), "resources": [
                {"id": r.key, "fields": catalog_fields(r)} for r in catalog.resources]}
            out.write(json.dumps(doc, indent=2, default=str) + "\n")
        else:
            out.write(_catalog_listing(catalog) + "\n")
        return EXIT_OK

    from converge.engine import DEFAULT_JOBS, DEFAULT_MAX_PASSES, Engine
    from converge.host import LocalHost
    from converge.plan import render_plan, render_report

    host = LocalHost()
    if args.command == "plan":
        started = _utcnow()
        engine = Engine(catalog.resources, graph, host, catalog.facts)
        plan = engine.plan()
        plan.desired = str(catalog.path)
        _record_run(args, catalog, plan, started, host.state_dir, err)
        if args.json:
            out.write(plan.model_dump_json(indent=2) + "\n")
        else:
            out.write(render_plan(plan, colour=colour, verbose=args.verbose) + "\n")
        return _exit_code(plan)

    from converge.lock import run_lock

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.max_passes is not None and args.max_passes < 1:
        raise UsageError("--max-passes must be at least 1")
    if args.lock_wait < 0:
        raise UsageError("--lock-wait must not be negative")
    progress = None if args.json else _progress(err, len(catalog.resources))
    started = _utcnow()
    with run_lock(host.state_dir, wait=args.lock_wait):
        engine = Engine(catalog.resources, graph, host, catalog.facts,
                        jobs=args.jobs or DEFAULT_JOBS,
                        max_passes=args.max_passes or DEFAULT_MAX_PASSES,
                        on_event=progress)
        report = engine.apply()
        args.managed_paths = _managed_paths(catalog)
        after_apply = getattr(args, "after_apply", None)
        if after_apply is not None:  # watch: note the managed files' state right now
            after_apply()
        _record_run(args, catalog, report, started, host.state_dir, err)
    if progress is not None:
        err.write("\r\x1b[K")
    report.desired = str(catalog.path)
    if args.json:
        out.write(report.model_dump_json(indent=2) + "\n")
    else:
        out.write(render_report(report, colour=colour) + "\n")
    return _exit_code(report)


def _run_fleet(args: argparse.Namespace, out: TextIO, colour: bool) -> int:
    """plan/apply on remote hosts (converge.fleet)."""
    from converge import fleet
    from converge.loader import parse_overrides
    from converge.trust import guard

    if args.facts:
        raise UsageError("--facts renders one platform's catalog; remote hosts are probed")
    if args.command == "plan" and args.report:
        raise UsageError("--report: remote runs write no run reports yet")
    if args.command == "apply":
        if args.jobs is not None and args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if args.max_passes is not None and args.max_passes < 1:
            raise UsageError("--max-passes must be at least 1")
        if args.lock_wait < 0:
            raise UsageError("--lock-wait must not be negative")
    if args.forks < 1:
        raise UsageError("--forks must be at least 1")
    for opt in args.ssh_options:
        if "=" not in opt or opt.startswith("-"):
            raise UsageError(f"--ssh-option expects KEY=VALUE, got {opt!r}")
    specs = fleet.specs_from_args(args.hosts, args.inventory, args.limit, args.ssh_options)
    with guard(args.file):  # as root: refuse a desired file others could write
        pass
    opts = fleet.FleetOptions(
        command=args.command, file=args.file.absolute(),
        overrides=parse_overrides(args.overrides), secrets_dir=args.secrets_dir,
        forks=args.forks, jobs=getattr(args, "jobs", None),
        max_passes=getattr(args, "max_passes", None),
        lock_wait=getattr(args, "lock_wait", 0.0))
    return fleet.main(opts, specs, out, json_output=args.json, colour=colour,
                      verbose=getattr(args, "verbose", False))


# -- drift correction: reports and history, timer, watch --------------------------------------

_DRIFT_COMMANDS = ("history", "report", "timer", "watch")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _add_drift_commands(sub: Any, common: _Parser, applying: _Parser) -> None:
    output = _Parser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--log-format", choices=("console", "json"), default="console",
                        help="log lines (on stderr) for people or as JSON lines")
    output.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="warning", help="least important log events shown")
    output.add_argument("--no-color", action="store_true", help="plain output")

    h = sub.add_parser("history", parents=[output], help="list recent runs (newest first)")
    h.add_argument("file", type=Path, nargs="?", help="only the runs of this desired file")
    h.add_argument("-n", "--limit", type=_count, default=20,
                   help="at most this many runs (default 20; 0: all kept)")

    r = sub.add_parser("report", parents=[output], help="show a run's report (default: the "
                       "latest)")
    r.add_argument("id", nargs="?", help="report id, a unique prefix, or its 6-digit suffix")

    w = sub.add_parser("watch", parents=[common, applying],
                       help="apply in a loop, at once when a managed file changes")
    w.add_argument("--interval", default="5min", help="time between passes (default 5min)")
    w.add_argument("--jitter", default="0", help="add up to this much, at random, to each wait")
    w.add_argument("--lock-wait", type=float, default=60.0, metavar="SECONDS",
                   help="wait this long for another run's lock (default 60)")

    t = sub.add_parser("timer", help="a systemd timer applying a desired file periodically")
    tsub = t.add_subparsers(dest="timer_command", metavar="ACTION", parser_class=_Parser)
    tsub.required = True
    ti = tsub.add_parser("install", parents=[common], help="install (or update) the timer")
    ti.add_argument("--every", required=True,
                    help="interval (30min, 1h) or systemd calendar expression (hourly)")
    ti.add_argument("--splay", default=None,
                    help="random delay added to each run (RandomizedDelaySec)")
    ti.add_argument("--timeout", default=None, help="longest a run may take (default 1h)")
    ti.add_argument("--keep-reports", type=_count, default=None, metavar="N",
                    help="the timer's runs keep the last N run reports (default 100)")
    ti.add_argument("--lock-wait", type=float, default=60.0, metavar="SECONDS",
                    help="wait this long for a run in progress (default 60)")
    ti.add_argument("--json", action="store_true", help="print the install report as JSON")
    ts = tsub.add_parser("status", parents=[output], help="timers, their last and next runs")
    ts.add_argument("file", type=Path, nargs="?", help="only the timer of this desired file")
    tr = tsub.add_parser("remove", parents=[output], help="stop and remove the timer")
    tr.add_argument("file", type=Path, help="the desired file the timer applies")
    tr.add_argument("--lock-wait", type=float, default=60.0, metavar="SECONDS",
                    help="wait this long for a run in progress (default 60)")


def _utcnow() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC)


def _managed_paths(catalog: Catalog) -> list[str]:
    """The desired file and every absolute path a resource manages (what watch polls)."""
    return [str(catalog.path)] + [
        p for r in catalog.resources
        if isinstance(p := getattr(r, "path", None), str) and p.startswith("/")]


def _record_run(args: argparse.Namespace, catalog: Catalog, result: Plan, started: Any,
                state_dir: Path, err: TextIO) -> None:
    """After a plan or apply: remember the paths the run manages (for watch) and write the
    run report (every apply; a plan with --report). A report that cannot be written is a
    warning: the run itself happened."""
    args.managed_paths = _managed_paths(catalog)
    if result.kind == "plan" and not getattr(args, "report", False):
        return
    from converge import report as reports

    try:
        keep = args.keep_reports if getattr(args, "keep_reports", None) is not None \
            else reports.keep_from_env()
        reports.record(state_dir, result, catalog.resources, start=started,
                       desired=catalog.path, desired_sha256=catalog.digest,
                       exit_code=_exit_code(result), keep=keep)
    except (OSError, ConvergeError) as exc:
        print(f"warning: no run report written: {exc}", file=err)


def _run_drift(args: argparse.Namespace, out: TextIO, err: TextIO, colour: bool) -> int:
    if args.command == "watch":
        return _watch(args, out, err, colour)
    if args.command == "timer":
        return _timer(args, out, err, colour)
    import json

    from converge import report as reports
    from converge.host import state_dir_from_env

    state_dir = state_dir_from_env()
    if args.command == "history":
        rows = reports.history(state_dir, limit=args.limit or None, desired=args.file)
        if args.json:
            out.write(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
        else:
            out.write(reports.render_history(rows, state_dir=state_dir) + "\n")
        return EXIT_OK
    run = reports.load(state_dir, reports.resolve(state_dir, args.id))
    if args.json:
        out.write(run.model_dump_json(indent=2) + "\n")
    else:
        out.write(reports.render(run, colour=colour) + "\n")
    return EXIT_OK


def _watch(args: argparse.Namespace, out: TextIO, err: TextIO, colour: bool) -> int:
    import os as _os

    from converge.report import TRIGGER_ENV
    from converge.watch import Watcher, format_duration, parse_duration

    if args.facts:
        raise UsageError("--facts renders another platform's catalog; it cannot be applied")
    watcher = Watcher(parse_duration(args.interval, "--interval"),
                      parse_duration(args.jitter, "--jitter"))
    apply_args = argparse.Namespace(**vars(args))
    apply_args.command, apply_args.json = "apply", False
    apply_args.managed_paths = [str(args.file.absolute())]
    # the baseline of "changed since the pass" is taken as soon as the engine is done, so
    # an edit made while the report is written is not mistaken for the pass's own
    apply_args.after_apply = lambda: watcher.note_baseline(apply_args.managed_paths)
    trigger = _os.environ.get(TRIGGER_ENV)
    _os.environ[TRIGGER_ENV] = trigger or "watch"  # recorded in each pass's report

    def one_pass(reason: str) -> list[str]:
        stamp = _utcnow().strftime("%Y-%m-%d %H:%M:%S UTC")
        out.write(f"== {stamp} pass {watcher.passes} ({reason})\n")
        out.flush()
        try:
            code = _run(apply_args, out, err, colour)
            out.write(f"exit {code}\n")
        except (DesiredStateError, UsageError) as exc:
            if watcher.passes == 1:
                raise  # a watch that cannot even start: exit 1
            print(f"error: {exc}", file=err)
            print("Nothing was applied.", file=err)
        except ConvergeError as exc:  # the lock, the state directory
            print(f"error: {exc}", file=err)
        out.flush()
        err.flush()
        return list(apply_args.managed_paths)

    every = format_duration(watcher.interval)
    jitter = f" (+ up to {format_duration(watcher.jitter)})" if watcher.jitter else ""
    print(f"watching {args.file}: a pass every {every}{jitter} and when a managed file "
          "changes; SIGTERM or Ctrl-C stops after the current pass", file=err)
    try:
        with watcher.signals():
            watcher.run(one_pass)
    finally:
        if trigger is None:
            del _os.environ[TRIGGER_ENV]
    print(f"watch stopped ({watcher.stopped_by or 'done'}) after {watcher.passes} pass(es)",
          file=err)
    return EXIT_OK


def _timer(args: argparse.Namespace, out: TextIO, err: TextIO, colour: bool) -> int:
    from converge import timer
    from converge.facts import Facts
    from converge.host import LocalHost
    from converge.lock import run_lock
    from converge.plan import render_report

    host = LocalHost()
    if args.timer_command == "status":
        import json

        found = timer.status(args.file, host, host.state_dir)
        if args.file is not None and not found:
            raise UsageError(f"no converge timer applies {args.file.absolute()}")
        if args.json:
            out.write(json.dumps([t.as_dict() for t in found], indent=2) + "\n")
        else:
            out.write(timer.render_status(found) + "\n")
        return EXIT_OK

    if args.timer_command == "remove":
        names = timer.names_for(args.file)
        if not any(os.path.lexists(p) for p in (names.timer_path, names.service_path,
                                                 names.env_path)):
            others = ", ".join(p for _, p in timer.installed(None)) or "none"
            raise UsageError(f"no converge timer applies {args.file.absolute()} "
                             f"({names.timer_path} does not exist); timers installed for: "
                             f"{others}")
        facts = Facts.gather(host)
        timer.require_systemd(facts)
        with run_lock(host.state_dir, wait=args.lock_wait):
            units, files = timer.remove_resources(names, host)
            result = timer.apply_resources(units, host, facts)
            if not result.failed:
                removed = timer.apply_resources(files, host, facts)
                result.resources += removed.resources
                result.duration = (result.duration or 0.0) + (removed.duration or 0.0)
                result.summarise()
                if not removed.failed:
                    timer.after_remove(names, host)
        done = f"Removed {names.timer}, {names.service} and their files."
    else:  # install
        from converge.graph import build

        if args.facts:
            raise UsageError("--facts: a timer applies this machine, with its own facts")
        catalog = _load(args)  # checks the file (and, as root, who can write it) and settings
        build(catalog.resources)
        facts = catalog.facts
        timer.require_systemd(facts)
        sched = timer.schedule(args.every, args.splay, args.timeout, host)
        plain, secret = timer.split_settings(catalog.settings, args.overrides, os.environ)
        names = timer.names_for(catalog.path)
        argv = timer.command(catalog.path, plain, secrets_dir=args.secrets_dir,
                             keep_reports=args.keep_reports)
        state_env = os.environ.get("CONVERGE_STATE_DIR")
        resources = timer.install_resources(
            names, catalog.path,
            timer.service_unit(names, catalog.path, argv, sched, env_file=bool(secret),
                               state_dir=str(Path(state_env).absolute()) if state_env
                               else None),
            timer.timer_unit(names, catalog.path, sched), secret)
        with run_lock(host.state_dir, wait=args.lock_wait):
            result = timer.apply_resources(resources, host, facts)
        done = f"{names.timer}: applies {catalog.path} {sched.describe()}" + (
            f"; settings from the environment and secrets in {names.env_path}"
            if secret else "")
    if getattr(args, "json", False):
        out.write(result.model_dump_json(indent=2) + "\n")
    else:
        out.write(render_report(result, colour=colour) + "\n")
    if result.failed:
        return EXIT_FAILURES
    print(done, file=err)
    return EXIT_OK


def entry() -> None:
    sys.exit(main())
