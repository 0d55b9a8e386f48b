#!/usr/bin/env python3
"""Time the flagship on a fresh throwaway Debian host: from nothing to a working site, then a
no-op run (apply and plan), as a user would run them there.

    sudo .venv/bin/python bench/numbas_e2e.py [--repeat 3]

Needs what the test suite needs (root, debootstrap, systemd-nspawn; see install.sh --dev).
Packages come from the harness's offline cache and a local wheelhouse, so the figures measure
converge and the services, not the network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.numbas_fixture import fixture_repo, wheelhouse
from tests.test_numbas import DEBIAN_PACKAGES, DOMAIN, SECRETS
from tests.testhost import Bind, ensure_image, prefetch
from tests.testhost.converge import boot_converge_host

DESIRED = "/opt/converge-src/desired/numbas.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="no-op runs to time")
    args = parser.parse_args()

    image = ensure_image()
    with tempfile.TemporaryDirectory(prefix="converge-bench-") as work:
        repo = fixture_repo(Path(work) / "numbas.git")
        wheels = wheelhouse()
        prefetch(DEBIAN_PACKAGES, image=image)
        host = boot_converge_host(image, "numbasbench", binds=[
            Bind(repo.path, "/srv/git/numbas.git"), Bind(wheels, "/srv/wheels")])
        try:
            host.put_file("/etc/gitconfig", "[safe]\n\tdirectory = *\n")
            settings = ["--set", f"domain={DOMAIN}",
                        "--set", "source=file:///srv/git/numbas.git",
                        "--set", 'pip_options=["--no-index", "--find-links", "/srv/wheels"]',
                        "--set", 'extra_packages=["channels_redis==4.2.0", "redis==5.0.4"]',
                        "--set", "build_packages=false"]

            def timed(verb: str) -> tuple[float, int]:
                t0 = time.monotonic()
                r = host.converge(verb, DESIRED, *settings, env=SECRETS, timeout=1800)
                return time.monotonic() - t0, r.returncode

            fresh, code = timed("apply")
            if code != 2:
                print(f"first apply exited {code}", file=sys.stderr)
                return 1
            noop = [timed("apply") for _ in range(args.repeat)]
            plans = [timed("plan") for _ in range(args.repeat)]
            resources = host.converge("plan", DESIRED, *settings, "--json", env=SECRETS)
            count = resources.stdout.count('"id":')
        finally:
            host.host.stop()
    print(f"flagship on a fresh Debian 12 test host ({count} resources, packages from a local "
          "cache, Python wheels offline)")
    print(f"  fresh host -> working site (one apply): {fresh:7.1f} s")
    for name, runs in (("no-op apply", noop), ("plan (in sync)", plans)):
        times = [t for t, _ in runs]
        codes = sorted({c for _, c in runs})
        print(f"  {name:<15} median {statistics.median(times):6.2f} s   min {min(times):6.2f} s"
              f"   exit codes {codes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
