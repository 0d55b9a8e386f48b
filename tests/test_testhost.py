"""The throwaway-host harness itself: boot, run, ssh, addresses, offline apt, teardown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.testhost._util import (
    CommandFailed,
    is_locked,
    link_exists,
    mounts_under,
    pid_namespace,
    read_proc,
)
from tests.testhost.fixtures import MakeTestHost
from tests.testhost.host import Slot, TestHost, cleanup_stale
from tests.testhost.image import Image, Recipe, default_recipe, ensure_image, prefetch

pytestmark = pytest.mark.testhost

REPO = Path(__file__).resolve().parents[1]


def _footprint(host: TestHost) -> dict[str, Any]:
    """What a running host occupies on this machine, to check it is all gone later."""
    assert host.slot is not None
    return {
        "index": host.slot.index,
        "nspawn_pid": host._nspawn_pid,
        "leader": host.leader,
        "machine_id": host.get_file("/etc/machine-id").decode().strip(),
    }


def _assert_gone(footprint: dict[str, Any]) -> None:
    slot = Slot(footprint["index"])
    for pid in (footprint["nspawn_pid"], footprint["leader"]):
        proc = read_proc(pid)
        assert (
            proc is None
            or proc.state in ("Z", "X")
            or (
                pid_namespace(pid) == pid_namespace("self") and str(slot.merged) not in proc.cmdline
            )
        ), f"process {pid} of {slot.machine} still running"
    our_fds = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
    assert str(slot.lock_path) not in our_fds, "slot lock still held"
    # Concurrent runs (xdist, other sessions) may have taken the freed slot already: then the
    # slot's mount, veth and lock are theirs, and only our overlay must not be among them.
    if slot.meta_path.exists() or is_locked(slot.lock_path):
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(slot.meta_path.read_text())
            assert meta["nspawn_pid"] != footprint["nspawn_pid"], "our state dir is still there"
        with contextlib.suppress(OSError):
            machine_id = (slot.merged / "etc/machine-id").read_text().strip()
            assert machine_id != footprint["machine_id"], "our overlay is still mounted"
        return
    assert not mounts_under(slot.state_dir), "overlay still mounted"
    assert not link_exists(slot.veth), f"{slot.veth} still exists"
    assert not slot.state_dir.exists(), "state dir left behind"


def test_boot_run_ssh_and_teardown(make_testhost: MakeTestHost) -> None:
    alpha = make_testhost("alpha")
    beta = make_testhost("beta")  # concurrently running second host

    for host in (alpha, beta):
        state = host.run(["systemctl", "is-system-running"], check=False).stdout.strip()
        assert state == "running", host.run(["systemctl", "--failed"], check=False).stdout
        assert host.run(["hostname"]).stdout.strip() == host.name
    assert alpha.address != beta.address
    assert alpha.machine != beta.machine

    # run(): stdin, text output, failures carry rc and stderr, str runs via sh -c
    assert alpha.run(["cat"], input="hello\n").stdout == "hello\n"
    assert alpha.run("echo $HOME; pwd", cwd="/tmp").stdout == "/root\n/tmp\n"
    with pytest.raises(CommandFailed) as failure:
        alpha.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert failure.value.returncode == 3 and "oops" in str(failure.value)
    assert alpha.run(["false"], check=False).returncode == 1
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        alpha.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5
    # killed, not left running (a zombie until the host's init reaps it is fine)
    procs = alpha.run(["ps", "-eo", "stat=,comm="]).stdout.splitlines()
    assert not [p for p in procs if p.split()[1] == "sleep" and not p.startswith("Z")]

    # the hostname resolves locally (otherwise sudo, git, getfqdn stall for 10 s)
    started = time.monotonic()
    alpha.run(["python3", "-c", "import socket; socket.getaddrinfo(socket.gethostname(), None)"])
    assert time.monotonic() - started < 2

    # files are per host (separate overlays)
    alpha.put_file("/etc/converge-test/marker", "alpha\n", mode=0o600)
    assert alpha.get_file("/etc/converge-test/marker") == b"alpha\n"
    assert alpha.run(["stat", "-c", "%a", "/etc/converge-test/marker"]).stdout.strip() == "600"
    assert beta.run(["test", "-e", "/etc/converge-test/marker"], check=False).returncode == 1

    # ssh from this machine with the test key
    for host in (alpha, beta):
        out = subprocess.run(host.ssh_argv("hostname"), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == host.name

    # stop() leaves nothing behind: no process, mount, veth, state dir or slot lock
    footprints = [_footprint(alpha), _footprint(beta)]
    alpha.stop()
    beta.stop()
    alpha.stop()  # idempotent
    for footprint in footprints:
        _assert_gone(footprint)


def test_offline_package_install(
    make_testhost: MakeTestHost, testhost_image: Image, tmp_path: Path
) -> None:
    one = make_testhost("one")
    two = make_testhost("two")
    # no internet in hosts: name resolution fails at once, packages come from the host cache
    assert one.run(["getent", "hosts", "deb.debian.org"], check=False).returncode != 0
    assert one.run(["sh", "-c", "command -v tree"], check=False).returncode != 0

    marker = tmp_path / "marker"
    marker.touch()
    prefetch(["tree"], image=testhost_image)
    changed = subprocess.run(
        ["find", str(testhost_image.root), "-cnewer", str(marker), "-print", "-quit"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert changed == "", "prefetch modified the image"

    # concurrent installs in two hosts share the cache but not its lock
    def install(host: TestHost) -> str:
        return host.run(
            ["apt-get", "install", "-y", "-q", "tree"], env={"DEBIAN_FRONTEND": "noninteractive"}
        ).stderr

    with ThreadPoolExecutor(2) as pool:
        stderrs = list(pool.map(install, (one, two)))
    assert all("W:" not in err and "E:" not in err for err in stderrs), stderrs
    for host in (one, two):
        assert host.run(["tree", "--version"]).stdout.startswith("tree v2")

    one.install("tree")  # the TestHost helper: prefetch (cached, no-op) + apt-get install
    with pytest.raises(CommandFailed):  # not prefetched: fails fast, offline
        one.run(["apt-get", "install", "-y", "-q", "-o", "Acquire::Retries=0", "sl"], timeout=60)


def test_image_cache(testhost_image: Image) -> None:
    started = time.monotonic()
    with ensure_image() as again:
        assert again.root == testhost_image.root
    assert time.monotonic() - started < 2  # cached: no rebuild
    recipe = default_recipe()
    assert testhost_image.root.name == recipe.name
    changed = Recipe(packages=(*recipe.packages, "tree"), mirror=recipe.mirror)
    assert changed.name != recipe.name  # a changed recipe builds a new image
    info = json.loads((testhost_image.root / "etc/converge-testhost.json").read_text())
    assert info["name"] == recipe.name


INNER_TEST = """
import json, os, signal
from pathlib import Path

def test_inner(make_testhost):
    host = make_testhost("inner")
    Path(os.environ["FOOTPRINT"]).write_text(json.dumps(
        {"index": host.slot.index, "nspawn_pid": host._nspawn_pid, "leader": host.leader,
         "machine_id": host.get_file("/etc/machine-id").decode().strip()}))
    if os.environ["MODE"] == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    assert False, "this test fails on purpose"
"""


@pytest.mark.parametrize("mode", ["fail", "crash"])
def test_teardown_after_failure_or_crash(testhost_image: Image, tmp_path: Path, mode: str) -> None:
    """A failing test still tears its hosts down; a killed run is cleaned up by the next."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    footprint_file = tmp_path / "footprint.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FOOTPRINT": str(footprint_file), "MODE": mode}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.testhost.fixtures",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    footprint = json.loads(footprint_file.read_text())
    if mode == "fail":
        assert result.returncode == 1, result.stdout + result.stderr
        assert "this test fails on purpose" in result.stdout
    else:
        assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
        # What the next run's session fixture does. A concurrent run may be doing it right
        # now (holding the slot lock, so ours skips the slot): give it a moment.
        deadline = time.monotonic() + 30
        while True:
            cleanup_stale()
            try:
                _assert_gone(footprint)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    _assert_gone(footprint)
