"""Run reports and history: written by every apply (and ``plan --report``), rotated, listed by
``converge history`` and shown by ``converge report``; each change classified as intended (the
desired state changed) or corrective (the machine drifted). Secrets never reach a report."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

SECRET = "s3cret-Value-42"


@pytest.fixture
def target(tmp_path: Path) -> Path:
    d = tmp_path / "target"
    d.mkdir()
    return d


def desired_source(target: Path, greeting: str = "hello", extra: str = "extra") -> str:
    return f"""
        from pydantic_settings import BaseSettings
        from converge import File, Secret

        class Settings(BaseSettings):
            token: Secret = Secret("initial-token")

        def desired(facts, settings):
            yield File(path="{target}/app.conf", content="greeting = {greeting}\\n", mode="0644")
            yield File(path="{target}/extra.conf", content="{extra}\\n")
            yield File(path="{target}/token", content=settings.token, mode="0600")
    """


def reports(state_dir: Path) -> list[Path]:
    d = state_dir / "reports"
    return sorted(p for p in d.iterdir() if p.name != "digests.json") if d.exists() else []


def latest(cli: Any) -> dict[str, Any]:
    r = cli("report", "--json")
    assert r.code == 0, r
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def causes(doc: dict[str, Any]) -> dict[str, str | None]:
    return {r["id"]: r["cause"] for r in doc["resources"]}


def test_apply_writes_a_report_history_lists_it(cli, write_desired, target: Path,
                                                state_dir: Path) -> None:
    desired = write_desired(desired_source(target))
    assert cli("apply", desired).code == 2
    files = reports(state_dir)
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir / "reports").stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "digest.key").stat().st_mode) == 0o600

    doc = latest(cli)
    assert doc["id"] == files[0].stem
    assert doc["kind"] == "apply" and doc["trigger"] == "manual"
    assert doc["desired"] == str(desired)
    assert doc["desired_sha256"] == hashlib.sha256(desired.read_bytes()).hexdigest()
    assert doc["exit_code"] == 2 and doc["passes"] == 2
    assert doc["host"] and doc["converge_version"]
    assert doc["start"].endswith("Z") and isinstance(doc["duration"], float)
    app = {r["id"]: r for r in doc["resources"]}[f"File[{target}/app.conf]"]
    assert (app["action"], app["status"], app["cause"]) == ("create", "changed", "intended")
    assert [c["attribute"] for c in app["changes"]] == ["ensure", "content", "mode"]
    assert isinstance(app["duration"], float) and len(app["digest"]) == 16
    assert doc["summary"]["changed"] == 3 and doc["summary"]["intended"] == 3

    assert cli("apply", desired).code == 0  # a no-op run is recorded too
    hist = cli("history", "--json")
    assert hist.code == 0, hist
    rows = json.loads(hist.out)
    assert [(r["exit_code"], r["changes"], r["corrective"]) for r in rows] == [(0, 0, 0),
                                                                               (2, 3, 0)]
    assert rows[1]["id"] == doc["id"]
    text = cli("history")
    assert text.code == 0
    assert doc["id"] in text.out and "CORRECTIVE" in text.out and "manual" in text.out

    shown = cli("report", doc["id"][-6:])  # by its suffix
    assert shown.code == 0, shown
    assert f"Run {doc['id']} (apply, manual)" in shown.out
    assert f"+ File[{target}/app.conf]: changed, intended" in shown.out
    assert "Apply: 3 changed (3 intended, 0 corrective)" in shown.out
    assert cli("report", doc["id"][:19]).code == 0  # by a unique prefix


def test_intended_and_corrective_changes(cli, write_desired, target: Path,
                                         state_dir: Path) -> None:
    desired = write_desired(desired_source(target))
    assert cli("apply", desired).code == 2

    # the machine drifts: corrective
    (target / "app.conf").write_text("greeting = tampered\n")
    os.chmod(target / "extra.conf", 0o666)
    assert cli("apply", desired).code == 2
    doc = latest(cli)
    assert causes(doc) == {f"File[{target}/app.conf]": "corrective",
                           f"File[{target}/extra.conf]": None,  # mode is not managed
                           f"File[{target}/token]": None}
    assert doc["summary"]["corrective"] == 1 and doc["summary"]["intended"] == 0

    # the desired state changes (one file) while another drifts: each classified
    desired.write_text(desired.read_text().replace("greeting = hello", "greeting = bonjour"))
    (target / "extra.conf").write_text("tampered\n")
    assert cli("apply", desired).code == 2
    doc = latest(cli)
    assert causes(doc) == {f"File[{target}/app.conf]": "intended",
                           f"File[{target}/extra.conf]": "corrective",
                           f"File[{target}/token]": None}

    # a secret setting changes: intended, and its value is in no report
    assert cli("apply", desired, "--set", f"token={SECRET}").code == 2
    doc = latest(cli)
    assert causes(doc)[f"File[{target}/token]"] == "intended"
    # the token is then drifted by hand: corrective (same secret, hashed with the host key)
    (target / "token").write_text("other\n")
    assert cli("apply", desired, "--set", f"token={SECRET}").code == 2
    assert causes(latest(cli))[f"File[{target}/token]"] == "corrective"
    for path in (state_dir / "reports").iterdir():
        assert SECRET not in path.read_text(), path
    assert SECRET not in cli("history").out + cli("report").out

    # a change whose apply failed does not count as converged: the retry is still intended
    desired.write_text(desired.read_text().replace(f'path="{target}/extra.conf"',
                                                   f'path="{target}/missing/extra.conf"'))
    assert cli("apply", desired, "--set", f"token={SECRET}").code == 4
    doc = latest(cli)
    assert doc["summary"]["failed"] == 1
    (target / "missing").mkdir()
    assert cli("apply", desired, "--set", f"token={SECRET}").code == 2
    assert causes(latest(cli))[f"File[{target}/missing/extra.conf]"] == "intended"


def test_plan_report_is_optional_and_changes_no_digest(cli, write_desired, target: Path,
                                                       state_dir: Path) -> None:
    desired = write_desired(desired_source(target))
    assert cli("plan", desired).code == 2
    assert reports(state_dir) == []  # a plan writes nothing unless asked
    assert cli("apply", desired).code == 2
    (target / "app.conf").write_text("drift\n")
    assert cli("plan", desired, "--report").code == 2
    doc = latest(cli)
    assert doc["kind"] == "plan" and doc["exit_code"] == 2
    assert causes(doc)[f"File[{target}/app.conf]"] == "corrective"
    app = {r["id"]: r for r in doc["resources"]}[f"File[{target}/app.conf]"]
    assert app["status"] == "pending"
    assert "Plan: 1 pending (0 intended, 1 corrective)" in cli("report").out

    assert cli("apply", desired).code == 2
    assert causes(latest(cli))[f"File[{target}/app.conf]"] == "corrective"
    kinds = [r["kind"] for r in json.loads(cli("history", "--json").out)]
    assert kinds == ["apply", "plan", "apply"]


def test_reports_are_rotated(cli, write_desired, target: Path, state_dir: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    desired = write_desired(desired_source(target))
    for _ in range(4):
        cli("apply", desired, "--keep-reports", "3")
    ids = [p.stem for p in reports(state_dir)]
    assert len(ids) == 3
    history = [r["id"] for r in json.loads(cli("history", "--json").out)]
    assert history == sorted(ids, reverse=True)

    monkeypatch.setenv("CONVERGE_KEEP_REPORTS", "2")
    assert cli("apply", desired).code == 0
    assert len(reports(state_dir)) == 2
    assert cli("apply", desired, "--keep-reports", "0").code == 0  # none written, none deleted
    assert len(reports(state_dir)) == 2
    assert json.loads(cli("history", "--limit", "1", "--json").out)[0]["id"] == \
        reports(state_dir)[-1].stem

    bad = cli("apply", desired, "--keep-reports", "-1")
    assert bad.code == 1 and "--keep-reports" in bad.err


def test_history_filters_and_report_errors(cli, write_desired, target: Path,
                                           state_dir: Path) -> None:
    empty = cli("history")
    assert empty.code == 0 and "No runs recorded" in empty.out
    missing = cli("report")
    assert missing.code == 1 and "no run reports" in missing.err

    one = write_desired(desired_source(target))
    other = write_desired(f"""
        from converge import File

        def desired(facts, settings):
            yield File(path="{target}/other.conf", content="x\\n")
    """)
    assert cli("apply", one).code == 2
    assert cli("apply", other).code == 2
    rows = json.loads(cli("history", str(other), "--json").out)
    assert [r["desired"] for r in rows] == [str(other)]
    unknown = cli("report", "ffffff")
    assert unknown.code == 1 and "no report 'ffffff'" in unknown.err
    assert "Traceback" not in unknown.err


def test_unwritable_reports_are_a_warning_not_a_failure(cli, write_desired, target: Path,
                                                        state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / "reports").write_text("not a directory\n")
    desired = write_desired(desired_source(target))
    r = cli("apply", desired)
    assert r.code == 2, r
    assert "warning: no run report written" in r.err
    assert (target / "app.conf").exists()
