"""The engine's contracts, with a small test kind (tests/kinds.py) backed by real files."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from converge import registry
from converge.engine import Engine
from converge.errors import GraphError
from converge.facts import Facts
from converge.graph import build, generations, to_dot
from converge.host import LocalHost
from converge.resources.base import Resource
from tests.kinds import Marker, events, intervals


@pytest.fixture(autouse=True)
def marker_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.KINDS, "Marker", "tests.kinds")


def run(resources: list[Resource], tmp_path: Path, *, apply: bool = True, jobs: int = 4,
        max_passes: int = 3):  # type: ignore[no-untyped-def]
    engine = Engine(resources, build(resources), LocalHost(state_dir=tmp_path / "state"),
                    Facts(), jobs=jobs, max_passes=max_passes)
    return engine.apply() if apply else engine.plan()


def status(report, key: str) -> str:  # type: ignore[no-untyped-def]
    return next(r.status for r in report.resources if r.id == key)


def test_first_apply_changes_second_does_nothing(tmp_path: Path) -> None:
    rs: list[Resource] = [Marker(name="a", dir=str(tmp_path)),
                          Marker(name="b", dir=str(tmp_path), requires=["Marker[a]"])]
    first = run(rs, tmp_path)
    assert [r.status for r in first.resources] == ["changed", "changed"]
    assert first.passes == 2  # the second pass confirmed convergence
    second = run(rs, tmp_path)
    assert [r.status for r in second.resources] == ["unchanged", "unchanged"]
    assert second.passes == 1
    assert not run(rs, tmp_path, apply=False).pending


def test_generation_is_probed_after_its_dependencies_apply(tmp_path: Path) -> None:
    a = Marker(name="a", dir=str(tmp_path), value="42")
    b = Marker(name="b", dir=str(tmp_path), requires=[a], reads=str(tmp_path / "a"))
    run([a, b], tmp_path)
    # the probe b's change was decided on came after a had been applied
    assert (tmp_path / "b.saw").read_text() == "42"
    ev = events(tmp_path)
    b_applies = ev.index(("apply-start", "b"))
    deciding_probe = max(i for i, e in enumerate(ev[:b_applies]) if e == ("probe", "b"))
    assert ev.index(("apply-end", "a")) < deciding_probe


def test_a_no_op_run_probes_once_and_needs_no_order(tmp_path: Path) -> None:
    """Everything in sync: one batched probe of the whole catalog, no walk, no networkx."""
    import subprocess
    import sys

    rs: list[Resource] = [Marker(name="a", dir=str(tmp_path)),
                          Marker(name="b", dir=str(tmp_path), requires=["Marker[a]"])]
    run(rs, tmp_path)
    (tmp_path / "events.log").unlink()
    report = run(rs, tmp_path)
    assert report.passes == 1 and [r.status for r in report.resources] == ["unchanged"] * 2
    assert events(tmp_path) == [("probe", "a"), ("probe", "b")]
    # and the command line's no-op apply does not import networkx
    desired = tmp_path / "noop.py"
    desired.write_text(f"from converge import File\n\ndef desired(facts, settings):\n"
                       f"    yield File(path={str(tmp_path / 'f')!r}, content='x')\n")
    code = ("import sys; from converge.cli import main; main(['apply', sys.argv[1]]); "
            "main(['apply', sys.argv[1]]); print('networkx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(desired)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "True"  # the first apply had work to order
    out = subprocess.run([sys.executable, "-c", code.replace(
        "main(['apply', sys.argv[1]]); main", "main"), str(desired)],
        capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_failure_skips_descendants_only(tmp_path: Path) -> None:
    bad = Marker(name="bad", dir=str(tmp_path), fail=True)
    child = Marker(name="child", dir=str(tmp_path), requires=[bad])
    grandchild = Marker(name="grandchild", dir=str(tmp_path), requires=[child])
    other = Marker(name="other", dir=str(tmp_path))
    report = run([bad, child, grandchild, other], tmp_path)
    assert status(report, "Marker[bad]") == "failed"
    assert "was told to fail" in (report.resources[0].error or "")
    assert status(report, "Marker[child]") == "skipped"
    assert status(report, "Marker[grandchild]") == "skipped"
    assert status(report, "Marker[other]") == "changed"
    assert not (tmp_path / "child").exists() and (tmp_path / "other").exists()
    assert report.summary.failed == 1 and report.summary.skipped == 2


def test_apply_that_does_not_converge_is_a_failure(tmp_path: Path) -> None:
    liar = Marker(name="liar", dir=str(tmp_path), lie=True)
    after = Marker(name="after", dir=str(tmp_path), requires=[liar])
    report = run([liar, after], tmp_path)
    assert status(report, "Marker[liar]") == "failed"
    assert "still differs after apply (value)" in (report.resources[0].error or "")
    assert status(report, "Marker[after]") == "skipped"


def test_notify_refreshes_once_after_the_target_converges(tmp_path: Path) -> None:
    svc = Marker(name="svc", dir=str(tmp_path))
    conf1 = Marker(name="conf1", dir=str(tmp_path), notify=[svc])
    conf2 = Marker(name="conf2", dir=str(tmp_path), notify=["Marker[svc]"])
    report = run([svc, conf1, conf2], tmp_path)
    ev = events(tmp_path)
    assert ev.count(("refresh", "svc")) == 1
    # the target's own change is applied before it is refreshed; notifiers before the target
    assert ev.index(("apply-end", "svc")) < ev.index(("refresh", "svc"))
    assert ev.index(("apply-end", "conf1")) < ev.index(("apply-start", "svc"))
    assert next(r for r in report.resources if r.id == "Marker[svc]").refreshed
    # nothing changes: no refresh
    (tmp_path / "events.log").unlink()
    run([svc, conf1, conf2], tmp_path)
    assert ("refresh", "svc") not in events(tmp_path)
    # one notifier drifts: one refresh
    (tmp_path / "conf2").write_text("drift")
    (tmp_path / "events.log").unlink()
    run([svc, conf1, conf2], tmp_path)
    assert events(tmp_path).count(("refresh", "svc")) == 1


def test_failed_notifier_does_not_refresh(tmp_path: Path) -> None:
    svc = Marker(name="svc", dir=str(tmp_path))
    bad = Marker(name="bad", dir=str(tmp_path), notify=[svc], fail=True)
    report = run([svc, bad], tmp_path)
    assert status(report, "Marker[svc]") == "skipped"  # it depends on its notifier
    assert ("refresh", "svc") not in events(tmp_path)


def test_independent_resources_apply_concurrently(tmp_path: Path) -> None:
    rs: list[Resource] = [Marker(name=f"m{i}", dir=str(tmp_path), sleep=1.0) for i in range(4)]
    run(rs, tmp_path, jobs=4)
    spans = sorted(intervals(tmp_path).values())
    # all four overlap: each starts before the first one ends
    assert all(start < spans[0][1] for start, _ in spans)


def test_exclusive_provider_applies_one_at_a_time(tmp_path: Path) -> None:
    rs: list[Resource] = [Marker(name=f"m{i}", dir=str(tmp_path), sleep=0.1,
                                 provider="exclusive") for i in range(4)]
    run(rs, tmp_path, jobs=4)
    spans = sorted(intervals(tmp_path).values())
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))


def test_flapping_resource_is_reported(tmp_path: Path) -> None:
    # b overwrites a's file on every apply, so a changes on every pass
    a = Marker(name="a", dir=str(tmp_path), value="A")
    clobber_dir = tmp_path / "c"
    clobber_dir.mkdir()
    (clobber_dir / "b").symlink_to(tmp_path / "a")  # b's file *is* a's file
    b = Marker(name="b", dir=str(clobber_dir), value="B", requires=[a])
    report = run([a, b], tmp_path, max_passes=3)
    assert report.passes == 3
    assert status(report, "Marker[a]") == "flapping"
    assert "changed on 3 of 3 passes" in (report.resources[0].error or "")
    assert report.failed


def test_plan_marks_resources_downstream_of_pending_changes(tmp_path: Path) -> None:
    (tmp_path / "b").write_text("on")
    a = Marker(name="a", dir=str(tmp_path))
    b = Marker(name="b", dir=str(tmp_path), requires=[a])
    plan = run([a, b], tmp_path, apply=False)
    rb = plan.resources[1]
    assert rb.action == "none" and any("Marker[a]" in n and "stale" in n for n in rb.notes)
    assert not (tmp_path / "a").exists()  # plan changed nothing


def test_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    a = Marker(name="a", dir=str(tmp_path), requires=["Marker[c]"])
    b = Marker(name="b", dir=str(tmp_path), requires=["Marker[a]"])
    c = Marker(name="c", dir=str(tmp_path), requires=["Marker[b]"])
    with pytest.raises(GraphError) as exc:
        build([a, b, c])
    text = str(exc.value)
    assert "dependency cycle" in text
    for key in ("Marker[a]", "Marker[b]", "Marker[c]"):
        assert key in text
    assert "test_engine.py:" in text  # where each was declared


def test_missing_reference(tmp_path: Path) -> None:
    a = Marker(name="a", dir=str(tmp_path), requires=["Package[nginx]"])
    with pytest.raises(GraphError, match=r"Marker\[a\] \(.*test_engine.py:\d+\) requires "
                       r"Package\[nginx\], which is not declared"):
        build([a])


def test_generations_and_dot(tmp_path: Path) -> None:
    a = Marker(name="a", dir=str(tmp_path))
    b = Marker(name="b", dir=str(tmp_path), requires=[a])
    c = Marker(name="c", dir=str(tmp_path), notify=[b])
    g = build([a, b, c])
    assert list(generations(g)) == [["Marker[a]", "Marker[c]"], ["Marker[b]"]]
    dot = to_dot(g)
    assert '"Marker[a]" -> "Marker[b]";' in dot
    assert '"Marker[c]" -> "Marker[b]" [style=dashed, label="notify"];' in dot


def test_no_usable_provider_names_every_candidate(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import kinds

    monkeypatch.setattr(kinds.MarkerProvider, "commands", ("no-such-tool-1",))
    monkeypatch.setattr(kinds.ExclusiveMarkerProvider, "commands", ("no-such-tool-2",))
    a = Marker(name="a", dir=str(tmp_path))
    report = run([a], tmp_path)
    err = report.resources[0].error or ""
    assert report.resources[0].status == "failed"
    assert "file: missing command no-such-tool-1" in err
    assert "exclusive: missing command no-such-tool-2" in err


def test_preferred_provider_is_not_shared_by_kind(tmp_path: Path) -> None:
    """Two Services, one a supervisor group: each gets its own provider."""
    from converge.resources.service import Service

    engine = Engine([Service(name="nginx"), Service(name="app:")],
                    build([Service(name="nginx"), Service(name="app:")]),
                    LocalHost(state_dir=tmp_path), Facts(init="systemd"))
    names = {key: p.name for key, p in engine._provider_of.items()}
    errors = engine._provider_errors
    # whichever are usable here, the group never gets the systemd provider
    assert names.get("Service[app:]") in (None, "supervisor")
    assert "Service[app:]" in names or "supervisor" in errors["Service[app:]"]
