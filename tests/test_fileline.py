"""FileLine on real files: pg_hba.conf's ident -> md5, append, absent, refusal on ambiguity."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

V4 = "host    all             all             127.0.0.1/32            md5"
V6 = "host    all             all             ::1/128                 md5"
PG_HBA = """\
# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     peer
host    all             all             127.0.0.1/32            ident
host    all             all             ::1/128                 ident
"""


def test_pg_hba_ident_to_md5(cli, write_desired, tmp_path: Path) -> None:
    hba = tmp_path / "pg_hba.conf"
    hba.write_text(PG_HBA)
    os.chmod(hba, 0o600)
    desired = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{hba}", match=r"^host\\s+all\\s+all\\s+127\\.0\\.0\\.1/32\\s",
                           line="{V4}")
            yield FileLine(path="{hba}", match=r"^host\\s+all\\s+all\\s+::1/128\\s",
                           line="{V6}")
    """)
    plan = cli("plan", desired)
    assert plan.code == 2, plan
    assert "-host    all             all             127.0.0.1/32            ident" in plan.out
    first = cli("apply", desired, "--json")
    assert first.code == 2, first
    text = hba.read_text()
    assert "ident" not in text and text.count("md5") == 2
    assert text.startswith("# TYPE") and "peer" in text  # the rest is untouched
    assert stat.S_IMODE(os.stat(hba).st_mode) == 0o600  # mode kept
    backups = [b for r in json.loads(first.out)["resources"] for b in r["backups"]]
    assert backups and Path(backups[0]).read_text() in (PG_HBA, PG_HBA.replace(
        "127.0.0.1/32            ident", "127.0.0.1/32            md5"))
    assert cli("apply", desired).code == 0
    assert cli("plan", desired).code == 0
    # drift by hand
    hba.write_text(text.replace("::1/128                 md5", "::1/128                 trust"))
    assert cli("plan", desired).code == 2
    assert cli("apply", desired).code == 2
    assert hba.read_text() == text


def test_append_when_missing_and_absent(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "sshd_config"
    f.write_text("Port 22\nPermitRootLogin yes\n")
    desired = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{f}", line="PasswordAuthentication no")
            yield FileLine(path="{f}", line="PermitRootLogin yes", ensure="absent")
    """)
    assert cli("apply", desired).code == 2
    assert f.read_text() == "Port 22\nPasswordAuthentication no\n"
    assert cli("apply", desired).code == 0


def test_ambiguous_match_is_refused(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("a=1\na=2\n")
    desired = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{f}", match="^a=", line="a=3")
    """)
    r = cli("apply", desired)
    assert r.code == 4 and "matches 2 lines" in r.out
    assert f.read_text() == "a=1\na=2\n"
    multi = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{f}", match="^a=", line="a=3", multiple=True)
    """)
    assert cli("apply", multi).code == 2
    assert f.read_text() == "a=3\na=3\n"
    assert cli("apply", multi).code == 0


def test_missing_file_is_a_clear_failure(cli, write_desired, tmp_path: Path) -> None:
    desired = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{tmp_path}/nope", line="x")
    """)
    r = cli("apply", desired)
    assert r.code == 4 and "does not exist" in r.out


def test_requires_the_declared_file(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "made"
    desired = write_desired(f"""
        from converge import File, FileLine

        def desired(facts, settings):
            yield FileLine(path="{f}", line="added")
            yield File(path="{f}", ensure="present")
    """)
    assert cli("apply", desired).code == 2
    assert f.read_text() == "added\n"
    assert cli("apply", desired).code == 0


def test_crlf_file_keeps_its_newlines(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "win.ini"
    f.write_bytes(b"[a]\r\nkey=old\r\nother=1\f2\r\n")
    desired = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{f}", match="^key=", line="key=new")
    """)
    assert cli("apply", desired).code == 2
    assert f.read_bytes() == b"[a]\r\nkey=new\r\nother=1\f2\r\n"
    assert cli("apply", desired).code == 0


def test_present_line_and_a_contradicting_match(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "pg_hba.conf"
    f.write_text("host all all 127.0.0.1/32 ident\nhost all all 127.0.0.1/32 md5\n")
    desired = write_desired(f"""
        from converge import FileLine

        def desired(facts, settings):
            yield FileLine(path="{f}", match=r"^host all all 127\\.0\\.0\\.1/32 ",
                           line="host all all 127.0.0.1/32 md5")
    """)
    plan = json.loads(cli("plan", desired, "--json").out)
    change = plan["resources"][0]["changes"][0]
    assert change["before"] == "host all all 127.0.0.1/32 ident"
    assert cli("apply", desired).code == 2
    assert f.read_text() == "host all all 127.0.0.1/32 md5\n"  # no duplicate
    assert cli("apply", desired).code == 0


def test_plan_of_an_edit_to_a_file_created_first(cli, write_desired, tmp_path: Path) -> None:
    f = tmp_path / "new.conf"
    desired = write_desired(f"""
        from converge import File, FileLine

        def desired(facts, settings):
            yield File(path="{f}", ensure="present")
            yield FileLine(path="{f}", line="setting=1")
    """)
    plan = cli("plan", desired, "--json")
    assert plan.code == 2, plan  # pending, not failed
    doc = json.loads(plan.out)
    line = doc["resources"][1]
    assert line["status"] == "pending" and "cannot be planned before" in line["notes"][0]
    assert doc["summary"]["failed"] == 0
    assert cli("apply", desired).code == 2
    assert f.read_text() == "setting=1\n"
