"""Developer CLI for throwaway systemd test hosts (run as root from the repository root).

python -m tests.testhost build [--rebuild]     build (or find) the cached image
python -m tests.testhost boot NAME             boot a host that outlives this command
python -m tests.testhost run NAME -- CMD...    run a command in it (exit status passed on)
python -m tests.testhost ssh NAME [CMD...]     ssh into it with the test key
python -m tests.testhost list                  hosts and their addresses
python -m tests.testhost stop NAME... | --all  halt and remove hosts
python -m tests.testhost cleanup              remove leftovers of crashed runs
python -m tests.testhost prefetch PKG...       download .debs for offline apt in hosts
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from ._util import TestHostError
from .host import TestHost, cleanup_stale, iter_running, list_hosts
from .image import ensure_image, prefetch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testhost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build or find the cached image")
    build.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    boot = sub.add_parser("boot", help="boot a detached host")
    boot.add_argument("name")
    run = sub.add_parser("run", help="run a command in a host")
    run.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("name")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    ssh = sub.add_parser("ssh", help="ssh into a host")
    ssh.add_argument("name")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("list", help="list hosts")
    stop = sub.add_parser("stop", help="stop hosts")
    stop.add_argument("names", nargs="*")
    stop.add_argument("--all", action="store_true")
    sub.add_parser("cleanup", help="remove leftovers of crashed runs")
    pre = sub.add_parser("prefetch", help="download packages into the host-side apt cache")
    pre.add_argument("packages", nargs="*")
    pre.add_argument("--refresh", action="store_true", help="refresh the apt lists first")
    return parser


def _strip_dashdash(cmd: Sequence[str]) -> list[str]:
    return list(cmd[1:]) if cmd and cmd[0] == "--" else list(cmd)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if os.geteuid() != 0:
        print("error: test hosts need root", file=sys.stderr)
        return 1
    try:
        return _dispatch(args)
    except TestHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "build":
        started = time.monotonic()
        with ensure_image(rebuild=args.rebuild) as image:
            print(f"{image.root} ({time.monotonic() - started:.1f} s)")
    elif args.command == "boot":
        if any(m["name"] == args.name and m["running"] for m in list_hosts()):
            print(f"error: a host named {args.name!r} is already running", file=sys.stderr)
            return 1
        host = TestHost(args.name, detach=True).boot()
        print(
            f"{host.name}: {host.address} (machine {host.machine}, booted in "
            f"{host.boot_seconds:.1f} s)"
        )
        print(f"  python -m tests.testhost ssh {host.name}")
    elif args.command == "run":
        cmd = _strip_dashdash(args.cmd)
        if not cmd:
            print("error: no command given", file=sys.stderr)
            return 2
        env = dict(item.partition("=")[::2] for item in args.env)
        result = TestHost.find(args.name).run_bytes(cmd, check=False, timeout=None, env=env)
        sys.stdout.buffer.write(result.stdout)
        sys.stderr.buffer.write(result.stderr)
        return result.returncode
    elif args.command == "ssh":
        argv = TestHost.find(args.name).ssh_argv(*_strip_dashdash(args.cmd))
        os.execvp(argv[0], argv)
    elif args.command == "list":
        for meta in list_hosts():
            state = "running" if meta["running"] else "stale"
            print(f"{meta['name']:20} {meta['address']:15} {meta['machine']:8} {state}")
    elif args.command == "stop":
        hosts = list(iter_running()) if args.all else [TestHost.find(n) for n in args.names]
        for host in hosts:
            host.stop()
            print(f"stopped {host.name}")
    elif args.command == "cleanup":
        cleaned = cleanup_stale()
        print(f"cleaned {', '.join(cleaned)}" if cleaned else "nothing to clean")
    elif args.command == "prefetch":
        prefetch(args.packages, refresh=args.refresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
