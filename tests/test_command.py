"""Command (guarded exec) on the local host with real programs, in temp dirs."""

from __future__ import annotations

import json
import os
from pathlib import Path


def test_creates_guard_lifecycle(cli, write_desired, tmp_path: Path) -> None:
    marker = tmp_path / "initdb.done"
    desired = write_desired(f"""
        from converge import Command

        def desired(facts, settings):
            yield Command(name="initdb", argv=["touch", "{marker}"], creates="{marker}")
    """)
    plan = cli("plan", desired, "--json")
    assert plan.code == 2
    change = json.loads(plan.out)["resources"][0]["changes"][0]
    assert change["attribute"] == "run" and "does not exist" in change["before"]
    assert not marker.exists()  # plan ran nothing but the read-only guard
    assert cli("apply", desired).code == 2 and marker.exists()
    assert cli("apply", desired).code == 0
    assert cli("plan", desired).code == 0
    marker.unlink()  # drift
    assert cli("plan", desired).code == 2
    assert cli("apply", desired).code == 2 and marker.exists()


def test_unless_and_onlyif(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "count"
    desired = write_desired(f"""
        from converge import Command

        def desired(facts, settings):
            yield Command(name="fill", argv=["sh", "-c", "echo full > {f}"],
                          unless=["grep", "-q", "full", "{f}"])
            yield Command(name="empty-if-huge", argv=["truncate", "-s", "0", "{f}"],
                          onlyif=["test", "-s", "{f}.huge"], requires=["Command[fill]"])
    """)
    assert cli("apply", desired).code == 2
    assert f.read_text() == "full\n"
    assert cli("apply", desired).code == 0
    Path(f"{f}.huge").write_text("x")
    r = cli("apply", desired)
    # truncate runs, but its onlyif guard still succeeds afterwards: not converged, and said so
    assert r.code == 6 and "still differs after apply" in r.out


def test_failure_shows_output_and_skips_dependents(cli, write_desired, tmp_path: Path) -> None:
    desired = write_desired(f"""
        from converge import Command, File

        def desired(facts, settings):
            yield Command(name="broken", argv=["sh", "-c", "echo oops >&2; exit 3"],
                          creates="{tmp_path}/never")
            yield File(path="{tmp_path}/after", content="x", requires=["Command[broken]"])
            yield File(path="{tmp_path}/independent", content="y")
    """)
    r = cli("apply", desired)
    assert r.code == 6, r
    assert "exited with status 3" in r.out and "oops" in r.out
    assert "skipped" in r.out
    assert not (tmp_path / "after").exists() and (tmp_path / "independent").exists()


def test_refreshonly_runs_once_when_notified(cli, write_desired, tmp_path: Path) -> None:
    log = tmp_path / "reloads"
    desired = write_desired(f"""
        from converge import Command, File

        def desired(facts, settings):
            yield File(path="{tmp_path}/a.conf", content="a", notify=["Command[reload]"])
            yield File(path="{tmp_path}/b.conf", content="b", notify=["Command[reload]"])
            yield Command(name="reload", argv=["sh", "-c", "echo reload >> {log}"],
                          refreshonly=True)
    """)
    assert cli("apply", desired).code == 2
    assert log.read_text() == "reload\n"
    assert cli("apply", desired).code == 0
    assert log.read_text() == "reload\n"
    (tmp_path / "a.conf").write_text("drift")
    assert cli("apply", desired).code == 2
    assert log.read_text() == "reload\nreload\n"


def test_secret_env_never_printed_and_not_in_argv(cli, write_desired, tmp_path: Path) -> None:
    secret = "pa$$-w0rd'\"secret"
    out = tmp_path / "got"
    desired = write_desired(f"""
        import os
        from converge import Command, Secret

        def desired(facts, settings):
            yield Command(name="use-secret",
                          argv=["sh", "-c", 'printf %s "$PW" > {out}; echo "pw is $PW"; exit 1'],
                          env={{"PW": Secret(os.environ["TEST_PW"])}}, creates="{out}.done")
    """)
    os.environ["TEST_PW"] = secret
    try:
        r = cli("apply", desired, "--log-level", "debug")
    finally:
        del os.environ["TEST_PW"]
    assert r.code == 4
    assert out.read_text() == secret  # the command got it
    assert secret not in r.out + r.err
    assert "pw is (sensitive)" in r.out


def test_user_and_cwd(cli, write_desired, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777)
    desired = write_desired(f"""
        from converge import Command

        def desired(facts, settings):
            yield Command(name="whoami", argv=["sh", "-c", "id -un > who; pwd >> who"],
                          cwd="{work}", user="nobody", creates="{work}/who")
    """)
    assert cli("apply", desired).code == 2
    assert (work / "who").read_text() == f"nobody\n{work}\n"


def test_unguarded_command_is_refused(cli, write_desired, tmp_path: Path) -> None:
    desired = write_desired("""
        from converge import Command

        def desired(facts, settings):
            yield Command(name="always", argv=["true"])
    """)
    r = cli("plan", desired)
    assert r.code == 1 and "needs a guard" in r.err and ".py:4:" in r.err


def test_missing_guard_program_fails_only_that_command(cli, write_desired,
                                                       tmp_path: Path) -> None:
    desired = write_desired(f"""
        from converge import Command

        def desired(facts, settings):
            yield Command(name="bad", argv=["true"], unless=["no-such-program-xyz"])
            yield Command(name="good", argv=["touch", "{tmp_path}/good"],
                          creates="{tmp_path}/good")
    """)
    r = cli("apply", desired)
    assert r.code == 6, r
    assert "command not found" in r.out and (tmp_path / "good").exists()
