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

    parser = _Parser(prog="converge", description="Declarative state reconciliation.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("plan", parents=[common], help="show what apply would change")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="list resources in sync too")

    a = sub.add_parser("apply", parents=[common], help="change the host to match the file")
    a.add_argument("--json", action="store_true", help="print the run report as JSON")
    a.add_argument("--jobs", type=int, default=None, help="resources applied concurrently")
    a.add_argument("--max-passes", type=int, default=None,
                   help="repeat until a pass changes nothing, at most this often")
    a.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another run's lock")

    sub.add_parser("graph", parents=[common], help="print the dependency graph as DOT")
    return parser


def _version() -> str:
    from converge import __version__

    return f"converge {__version__}"


def _load(args: argparse.Namespace) -> Catalog:
    from converge.facts import Facts, preset
    from converge.host import LocalHost
    from converge.loader import load, parse_overrides

    facts = preset(args.facts) if args.facts else Facts.gather(LocalHost())
    secrets_dir = args.secrets_dir
    if secrets_dir is None and os.path.isdir("/etc/converge/secrets"):
        secrets_dir = Path("/etc/converge/secrets")
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
        engine = Engine(catalog.resources, graph, host, catalog.facts)
        plan = engine.plan()
        plan.desired = str(catalog.path)
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
    with run_lock(host.state_dir, wait=args.lock_wait):
        engine = Engine(catalog.resources, graph, host, catalog.facts,
                        jobs=args.jobs or DEFAULT_JOBS,
                        max_passes=args.max_passes or DEFAULT_MAX_PASSES,
                        on_event=progress)
        report = engine.apply()
    if progress is not None:
        err.write("\r\x1b[K")
    report.desired = str(catalog.path)
    if args.json:
        out.write(report.model_dump_json(indent=2) + "\n")
    else:
        out.write(render_report(report, colour=colour) + "\n")
    return _exit_code(report)


def entry() -> None:
    sys.exit(main())
