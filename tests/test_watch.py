"""``converge watch``: the installed command in a subprocess, as a person or a supervisor would
run it. It applies at start, again at once when a managed file is changed by hand, on its
interval, never two passes at once (the run lock), and stops cleanly on SIGTERM/SIGINT after
finishing the pass in progress."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from converge.errors import UsageError
from converge.watch import Watcher, format_duration, parse_duration

EXE = Path(sys.executable).parent / "converge"


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@contextlib.contextmanager
def watching(*argv: str | Path, state_dir: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([str(EXE), "watch", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CONVERGE_STATE_DIR": str(state_dir)})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def history(state_dir: Path) -> list[dict[str, object]]:
    out = subprocess.run([str(EXE), "history", "--json"], capture_output=True, text=True,
                         env={**os.environ, "CONVERGE_STATE_DIR": str(state_dir)}, check=True)
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    return out, err


@pytest.fixture
def target(tmp_path: Path) -> Path:
    d = tmp_path / "target"
    d.mkdir()
    return d


def test_watch_repairs_a_hand_edit_at_once_and_stops_on_sigterm(
    write_desired, target: Path, state_dir: Path,
) -> None:
    conf = target / "app.conf"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{conf}", content="port = 80\\n", mode="0640")
    """)
    with watching(desired, "--interval", "1h", state_dir=state_dir) as proc:
        assert wait_for(lambda: conf.exists() and len(history(state_dir)) == 1), \
            "first pass did not apply"
        assert conf.read_text() == "port = 80\n"

        conf.write_text("port = 8080\n")  # by hand
        start = time.monotonic()
        assert wait_for(lambda: conf.read_text() == "port = 80\n", timeout=10), \
            "the hand edit was not repaired"
        took = time.monotonic() - start
        assert took < 5, f"repair took {took:.1f}s"
        os.chmod(conf, 0o666)  # metadata only: seen too
        assert wait_for(lambda: os.stat(conf).st_mode & 0o777 == 0o640, timeout=10)
        assert wait_for(lambda: len(history(state_dir)) == 3)

        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "watch stopped (SIGTERM) after 3 pass(es)" in err
    assert "pass 2 (changed: " in out and str(conf) in out
    rows = history(state_dir)
    assert [(r["trigger"], r["changes"], r["corrective"]) for r in rows] == [
        ("watch", 1, 1), ("watch", 1, 1), ("watch", 1, 0)]


def test_sigint_during_a_pass_finishes_it_first(write_desired, target: Path,
                                                state_dir: Path) -> None:
    """A pass is never cut short: the signal ends the loop once the pass is done."""
    started = target / "started"
    desired = write_desired(f"""
        from converge import Command, File

        def desired(facts, settings):
            # a slow pass: the guard takes 2 s (and says the work is done)
            yield Command(name="slow", argv=["true"],
                          unless=["sh", "-c", "touch {started}; sleep 2"])
            yield File(path="{target}/after.conf", content="done\\n",
                       requires=["Command[slow]"])
    """)
    with watching(desired, "--interval", "1h", state_dir=state_dir) as proc:
        assert wait_for(started.exists, timeout=15)
        _, err = stop(proc, signal.SIGINT)  # in the middle of the pass
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "interrupted" not in err
    assert (target / "after.conf").read_text() == "done\n"  # the pass went to its end
    assert "watch stopped (SIGINT) after 1 pass(es)" in err
    assert [r["exit_code"] for r in history(state_dir)] == [2]


def test_interval_and_the_run_lock(write_desired, target: Path, state_dir: Path) -> None:
    """Passes come every interval; a pass that finds another run holding the lock waits
    (--lock-wait), then says so and tries again next time: two runs never overlap."""
    conf = target / "app.conf"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{conf}", content="x\\n")
    """)
    state_dir.mkdir()
    fd = os.open(state_dir / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        with watching(desired, "--interval", "1s", "--lock-wait", "0.2",
                      state_dir=state_dir) as proc:
            time.sleep(2.5)
            assert not conf.exists(), "a pass ran while another run held the lock"
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert wait_for(conf.exists, timeout=10)
            assert wait_for(lambda: len(history(state_dir)) >= 2, timeout=10)  # interval
            _, err = stop(proc)
    finally:
        os.close(fd)
    assert proc.returncode == 0, err
    assert "another converge run (pid 4242) holds" in err
    assert [r["exit_code"] for r in history(state_dir)][-1] == 2


def test_a_watch_that_cannot_start_exits_1(write_desired, state_dir: Path) -> None:
    broken = write_desired("def desired(facts, settings):\n    yield (\n")
    r = subprocess.run([str(EXE), "watch", str(broken), "--interval", "1s"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    assert "syntax error" in r.stderr and "Traceback" not in r.stderr
    bad = subprocess.run([str(EXE), "watch", str(broken), "--interval", "soon"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "--interval: 'soon' is not a duration" in bad.stderr


# -- the loop's pieces ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("30s", 30), ("5m", 300), ("5min", 300), ("1h30min", 5400), ("2d", 172800),
    ("1.5h", 5400), ("250ms", 0.25), (" 1 h 5 s ", 3605),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "--x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 fortnights", "-5s", "1h-"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--x"):
        parse_duration(text, "--x")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 300, 5400, 90061, 0.25, 0)] == [
        "5s", "5min", "1h30min", "1d1h1min1s", "250ms", "0s"]


def test_jitter_is_added_within_bounds() -> None:
    import random

    w = Watcher(10, 5, rng=random.Random(1))
    waits = [w.next_wait() for _ in range(200)]
    assert all(10 <= x <= 15 for x in waits) and max(waits) - min(waits) > 3
    with pytest.raises(UsageError):
        Watcher(0)
