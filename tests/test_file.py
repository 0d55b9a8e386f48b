"""File on the real filesystem: every behaviour through plan/apply, with the standard pattern
(first apply changes, second changes nothing, plan is then empty, drift by hand is detected and
repaired)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from converge.facts import Facts
from converge.graph import build
from converge.host import LocalHost
from converge.resources.file import File

Cli = Callable[..., object]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def converge_twice(cli: Callable[..., object], desired: Path) -> dict[str, object]:
    """First apply changes (2), second changes nothing (0), plan is then empty (0)."""
    first = cli("apply", desired, "--json")
    assert first.code == 2, first  # type: ignore[attr-defined]
    second = cli("apply", desired)
    assert second.code == 0, second  # type: ignore[attr-defined]
    plan = cli("plan", desired, "--json")
    assert plan.code == 0, plan  # type: ignore[attr-defined]
    assert all(r["action"] == "none" for r in json.loads(plan.out)["resources"])  # type: ignore[attr-defined]
    report: dict[str, object] = json.loads(first.out)  # type: ignore[attr-defined]
    return report


def by_id(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in doc["resources"]}  # type: ignore[attr-defined,index]


def test_file_content_mode_owner_lifecycle(cli, write_desired, tmp_path: Path) -> None:
    root = tmp_path / "srv"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{root}", ensure="directory", mode="0750")
            yield File(path="{root}/motd", content="hello\\n", mode="0640",
                       owner="daemon", group="daemon")
    """)
    report = converge_twice(cli, desired)
    motd = root / "motd"
    assert motd.read_text() == "hello\n"
    assert mode_of(motd) == 0o640 and mode_of(root) == 0o750
    st = os.stat(motd)
    import grp
    import pwd

    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == ("daemon",
                                                                                   "daemon")
    res = by_id(report)[f"File[{motd}]"]
    assert res["action"] == "create" and res["status"] == "changed"

    # drift by hand: content, mode and owner
    motd.write_text("tampered\n")
    os.chmod(motd, 0o666)
    os.chown(motd, 0, -1)
    plan = cli("plan", desired, "--json")
    assert plan.code == 2
    changes = {c["attribute"]: c for c in by_id(json.loads(plan.out))[f"File[{motd}]"]["changes"]}
    assert set(changes) == {"content", "mode", "owner"}
    assert changes["mode"]["before"] == "0666" and changes["mode"]["after"] == "0640"
    assert changes["owner"]["before"] == "root" and changes["owner"]["after"] == "daemon"
    assert "-tampered" in changes["content"]["diff"] and "+hello" in changes["content"]["diff"]
    text = cli("plan", desired)
    assert "~ File[" in text.out and '"0666" -> "0640"' in text.out
    assert "Plan: 0 to create, 1 to change, 0 to remove." in text.out

    repaired = cli("apply", desired, "--json")
    assert repaired.code == 2
    assert motd.read_text() == "hello\n" and mode_of(motd) == 0o640
    assert pwd.getpwuid(os.stat(motd).st_uid).pw_name == "daemon"
    # the replaced content was backed up, and the report says where
    backups = by_id(json.loads(repaired.out))[f"File[{motd}]"]["backups"]
    assert len(backups) == 1 and Path(backups[0]).read_text() == "tampered\n"
    assert cli("apply", desired).code == 0


def test_mode_only_drift_changes_nothing_else(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("keep me\n")
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{f}", mode="0600")
    """)
    report = converge_twice(cli, desired)
    assert [c["attribute"] for c in by_id(report)[f"File[{f}]"]["changes"]] == ["mode"]
    assert f.read_text() == "keep me\n"  # unset content is not managed
    assert mode_of(f) == 0o600


def test_absent_file_and_backup(cli, write_desired, tmp_path: Path, state_dir: Path) -> None:
    f = tmp_path / "old.conf"
    f.write_text("precious\n")
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{f}", ensure="absent")
    """)
    plan = cli("plan", desired)
    assert plan.code == 2 and f"- File[{f}]" in plan.out
    assert "Plan: 0 to create, 0 to change, 1 to remove." in plan.out
    report = converge_twice(cli, desired)
    assert not f.exists()
    backup = by_id(report)[f"File[{f}]"]["backups"][0]
    assert backup.startswith(str(state_dir / "backup"))
    assert Path(backup).read_text() == "precious\n"
    # drift: the file comes back
    f.write_text("again\n")
    assert cli("plan", desired).code == 2
    assert cli("apply", desired).code == 2 and not f.exists()


def test_non_empty_directory_not_removed_without_force(cli, write_desired,
                                                        tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "keep").write_text("x")
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{d}", ensure="absent")
    """)
    r = cli("apply", desired)
    assert r.code == 4, r
    assert "not empty" in r.out and "force=True" in r.out
    assert (d / "keep").read_text() == "x"

    forced = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{d}", ensure="absent", force=True)
    """)
    report = converge_twice(cli, forced)
    assert not d.exists()
    backup = Path(by_id(report)[f"File[{d}]"]["backups"][0])
    assert (backup / "keep").read_text() == "x"


def test_empty_directory_removed(cli, write_desired, tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{d}", ensure="absent")
    """)
    converge_twice(cli, desired)
    assert not d.exists()


def test_directory_not_replaced_by_file_without_force(cli, write_desired, tmp_path: Path) -> None:
    d = tmp_path / "thing"
    d.mkdir()
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{d}", content="x")
    """)
    plan = cli("plan", desired)
    assert plan.code == 4 and "is a directory" in plan.out
    assert cli("apply", desired).code == 4
    assert d.is_dir()


def test_link_lifecycle(cli, write_desired, tmp_path: Path) -> None:
    target_a, target_b = tmp_path / "a", tmp_path / "b"
    target_a.write_text("a")
    target_b.write_text("b")
    link = tmp_path / "current"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{link}", target="{target_a}")
    """)
    converge_twice(cli, desired)
    assert os.readlink(link) == str(target_a)
    # drift: someone repoints the link
    link.unlink()
    link.symlink_to(target_b)
    plan = cli("plan", desired, "--json")
    change = by_id(json.loads(plan.out))[f"File[{link}]"]["changes"][0]
    assert change == {"attribute": "target", "before": str(target_b), "after": str(target_a),
                      "sensitive": False, "diff": None}
    assert cli("apply", desired).code == 2
    assert os.readlink(link) == str(target_a)
    # a regular file where the link should be is replaced (and backed up)
    link.unlink()
    link.write_text("not a link")
    report = json.loads(cli("apply", desired, "--json").out)
    assert os.readlink(link) == str(target_a)
    assert Path(by_id(report)[f"File[{link}]"]["backups"][0]).read_text() == "not a link"


def test_template_rendering_and_drift(cli, write_desired, tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "site.conf.j2").write_text(
        "server_name {{ domain }};\n{% for p in ports %}listen {{ p }};\n{% endfor %}"
    )
    out = tmp_path / "site.conf"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{out}", template="templates/site.conf.j2",
                       vars={{"domain": "example.org", "ports": [80, 443]}})
    """)
    converge_twice(cli, desired)
    assert out.read_text() == "server_name example.org;\nlisten 80;\nlisten 443;\n"
    out.write_text("server_name evil;\n")
    assert cli("plan", desired).code == 2
    assert cli("apply", desired).code == 2
    assert out.read_text().startswith("server_name example.org;")


def test_source_copies_a_local_file(cli, write_desired, tmp_path: Path) -> None:
    src = tmp_path / "files" / "502.html"
    src.parent.mkdir()
    src.write_bytes(b"<h1>502</h1>\n\x00binary-ok")
    dest = tmp_path / "502.html"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{dest}", source="files/502.html", mode="0644")
    """)
    converge_twice(cli, desired)
    assert dest.read_bytes() == src.read_bytes()
    src.write_bytes(b"<h1>new</h1>\n")
    plan = cli("plan", desired, "--json")
    assert plan.code == 2
    assert cli("apply", desired).code == 2 and dest.read_bytes() == b"<h1>new</h1>\n"


def test_sensitive_content_is_never_shown(cli, write_desired, tmp_path: Path,
                                          state_dir: Path) -> None:
    secret = "s3cr3t-'\"\\-value"
    f = tmp_path / "db.conf"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db_password").write_text(secret)
    desired = write_desired(f"""
        from converge import File, Secret
        from pydantic_settings import BaseSettings

        class Settings(BaseSettings):
            db_password: Secret

        def desired(facts, settings):
            yield File(path="{f}", content=settings.db_password, mode="0600")
            yield File(path="{f}.tmpl", template="t.j2", vars={{"pw": settings.db_password}})
            yield File(path="{f}.flag", content="password=hunter2\\n", sensitive=True)
    """)
    (tmp_path / "t.j2").write_text("password={{ pw }}\n")
    outputs = []
    for argv in (("plan",), ("plan", "--json"), ("apply", "--json"), ("plan",), ("apply",)):
        r = cli(*argv, desired, "--secrets-dir", secrets, "--log-level", "debug")
        outputs.append(r.out + r.err)
        if argv == ("apply", "--json"):
            assert r.code == 2
    f.write_text("old")  # drift: the plan must say it changes without showing either value
    for argv in (("plan",), ("plan", "--json"), ("apply", "--json")):
        r = cli(*argv, desired, "--secrets-dir", secrets)
        outputs.append(r.out + r.err)
    joined = "\n".join(outputs)
    assert secret not in joined and "hunter2" not in joined and "old" not in joined
    assert "(sensitive)" in joined
    assert f.read_text() == secret and mode_of(f) == 0o600
    assert (tmp_path / "db.conf.tmpl").read_text() == f"password={secret}\n"


def test_atomic_write_sets_mode_before_rename(tmp_path: Path) -> None:
    """Watch the directory while writing: the final name never shows a looser mode."""
    host = LocalHost(state_dir=tmp_path / "state")
    path = str(tmp_path / "secret.key")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.append(stat.S_IMODE(os.lstat(path).st_mode))

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(200):
            host.write_atomic(path, b"k" * (i + 1) * 100, uid=None, gid=None, mode=0o600)
    finally:
        stop.set()
        t.join()
    assert seen and set(seen) == {0o600}
    # no temporary files are left behind
    assert os.listdir(tmp_path) == ["secret.key"]


def test_write_failure_keeps_the_original(tmp_path: Path) -> None:
    """A real write error (file size limit exceeded) leaves the original and no temp file."""
    import subprocess
    import sys

    target = tmp_path / "conf"
    target.write_text("original")
    script = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
from converge.host import LocalHost
from converge.errors import ResourceError
try:
    LocalHost().write_atomic({str(target)!r}, b"x" * 4096, uid=None, gid=None, mode=0o644)
except ResourceError as exc:
    print("refused:", exc)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("refused: cannot write"), r
    assert target.read_text() == "original"
    assert sorted(os.listdir(tmp_path)) == ["conf"]


def test_unknown_owner_fails_only_that_resource(cli, write_desired, tmp_path: Path) -> None:
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{tmp_path}/a", content="a", owner="no-such-user-xyz")
            yield File(path="{tmp_path}/b", content="b")
    """)
    r = cli("apply", desired)
    assert r.code == 6, r
    assert "user 'no-such-user-xyz' does not exist" in r.out
    assert (tmp_path / "b").read_text() == "b" and not (tmp_path / "a").exists()


def test_present_creates_an_empty_file_and_manages_only_what_is_set(
    cli, write_desired, tmp_path: Path
) -> None:
    f = tmp_path / "touched"
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{f}", ensure="present", mode="0604")
    """)
    converge_twice(cli, desired)
    assert f.read_bytes() == b"" and mode_of(f) == 0o604
    f.write_text("someone's data")
    assert cli("plan", desired).code == 0  # content is not managed
    assert f.read_text() == "someone's data"


def test_file_diff_is_pure_and_ordered() -> None:
    from converge.resources.file import FileActual, LocalFileProvider

    p = LocalFileProvider()
    desired = File(path="/x", content="new\n", owner="root", group="0", mode="0644")
    actual = FileActual("file", "0600", "daemon", 1, "root", 0, b"old\n", None)
    changes = p.diff(desired, actual)
    assert [c.attribute for c in changes] == ["content", "owner", "mode"]  # group 0 == root
    assert p.diff(desired, actual) == changes
    created = p.diff(desired, None)
    assert [c.attribute for c in created] == ["ensure", "content", "owner", "group", "mode"]


def test_implied_edges_parent_directory_and_owner() -> None:
    parent = File(path="/srv/app", ensure="directory")
    child = File(path="/srv/app/conf", content="x")
    graph = build([child, parent])
    assert graph.has_edge("File[/srv/app]", "File[/srv/app/conf]")
    assert graph.edges["File[/srv/app]", "File[/srv/app/conf]"]["why"] == "implied"


def test_no_subprocess_for_file_probes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from converge.engine import Engine

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("a File probe spawned a process")

    monkeypatch.setattr(subprocess.Popen, "__init__", forbidden)
    monkeypatch.setattr(os, "fork", forbidden)
    files = [File(path=str(tmp_path / f"f{i}"), content=str(i)) for i in range(50)]
    host = LocalHost(state_dir=tmp_path / "state")
    engine = Engine(files, build(files), host, Facts())
    report = engine.apply()
    assert report.summary.create == 50
    assert Engine(files, build(files), host, Facts()).plan().pending is False


def test_removal_runs_children_first(cli, write_desired, tmp_path: Path) -> None:
    """An absent directory and an absent file in it: the implied edge is reversed, so the file
    goes first and the directory is empty when it is removed (no force needed)."""
    d = tmp_path / "old"
    d.mkdir()
    (d / "app.conf").write_text("x")
    desired = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{d}", ensure="absent")
            yield File(path="{d}/app.conf", ensure="absent")
    """)
    graph = cli("graph", desired)
    assert f'"File[{d}/app.conf]" -> "File[{d}]" [style=dotted];' in graph.out
    converge_twice(cli, desired)
    assert not d.exists()
