"""Run reports and history: one JSON file per run in ``STATE_DIR/reports``.

Every ``apply`` (and ``plan --report``) leaves ``STATE_DIR/reports/<id>.json``, where the id is
the UTC start time and a short random suffix (``20261129T193012.345Z-a1b2c3``), so that names
sort by time. Reports are written atomically, mode 0600 in a 0700 directory, and rotated: only
the last N are kept (:data:`DEFAULT_KEEP`).

Each changed resource is classified:

- ``intended``: its own definition (every field it sets, rendered template or source content,
  secret values included) differs from the definition it had when it last converged: a person
  changed the desired state;
- ``corrective``: it is defined exactly as when it last converged, yet the machine differed:
  the machine drifted (a hand edit, another program).

Definitions are compared by a keyed hash (HMAC-SHA256 with a random per-host key kept in
``STATE_DIR/digest.key``, mode 0600): a report never holds a secret, nor a hash from which a
short secret could be guessed. The last converged definition of every resource is kept in
``STATE_DIR/reports/digests.json`` (so rotation does not forget it). A resource never seen
converged before counts as intended.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr

from converge.errors import UsageError
from converge.plan import ResourcePlan, Summary

if TYPE_CHECKING:
    from converge.plan import Plan
    from converge.resources.base import Resource

DEFAULT_KEEP = 100
KEEP_ENV = "CONVERGE_KEEP_REPORTS"
TRIGGER_ENV = "CONVERGE_TRIGGER"
FORMAT = 1

REPORTS = "reports"
INDEX = "digests.json"
KEY_FILE = "digest.key"

_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}$")

Cause = Literal["intended", "corrective"]


# defer_build: the schemas are built when a report is read, not by every apply that writes one
_DEFER = ConfigDict(defer_build=True)


class ResourceRecord(ResourcePlan):
    """A resource in a run report: what the plan or report said, and why it changed."""

    model_config = _DEFER

    cause: Cause | None = Field(
        default=None, description="intended (its definition changed) or corrective (the "
        "machine drifted); null when nothing changed")
    digest: str | None = Field(default=None, description="keyed hash of its definition")


class RunSummary(Summary):
    model_config = _DEFER

    changed: int = Field(default=0, description="resources changed (apply) or pending (plan)")
    intended: int = 0
    corrective: int = 0
    refreshed: int = 0


class RunReport(BaseModel):
    """One run, as stored in ``STATE_DIR/reports/<id>.json``."""

    model_config = _DEFER

    format: int = FORMAT
    id: str
    kind: Literal["apply", "plan"]
    start: _dt.datetime
    duration: float
    host: str
    trigger: str = Field(description="manual, timer or watch")
    desired: str
    desired_sha256: str
    converge_version: str
    exit_code: int
    passes: int = 0
    summary: RunSummary = Field(default_factory=RunSummary)
    resources: list[ResourceRecord] = Field(default_factory=list)


@dataclass(frozen=True)
class RunRow:
    """One line of ``converge history`` (read without validating every resource)."""

    id: str
    kind: str
    start: _dt.datetime
    duration: float
    trigger: str
    desired: str
    exit_code: int
    changed: int
    corrective: int
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "start": _iso(self.start),
                "duration": self.duration, "trigger": self.trigger, "desired": self.desired,
                "exit_code": self.exit_code, "changes": self.changed,
                "corrective": self.corrective, "failed": self.failed}


# -- where ------------------------------------------------------------------------------------

def reports_dir(state_dir: Path) -> Path:
    return state_dir / REPORTS


def keep_from_env(default: int = DEFAULT_KEEP) -> int:
    """``$CONVERGE_KEEP_REPORTS`` when set, else ``default``."""
    raw = os.environ.get(KEEP_ENV, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{KEEP_ENV} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise UsageError(f"{KEEP_ENV} must not be negative")
    return value


def trigger_from_env() -> str:
    return os.environ.get(TRIGGER_ENV, "").strip() or "manual"


def _iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def new_id(start: _dt.datetime) -> str:
    stamp = start.astimezone(_dt.UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z-{secrets.token_hex(3)}"


# -- definition digests -----------------------------------------------------------------------

def _key(state_dir: Path) -> bytes:
    """The per-host HMAC key (created on first use, mode 0600)."""
    path = state_dir / KEY_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = state_dir / f".{KEY_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a key another run just made
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, SecretStr):
        return {"$secret": value.get_secret_value()}
    if isinstance(value, SecretBytes):
        return {"$secret": value.get_secret_value().hex()}
    if isinstance(value, BaseModel):
        fields = value.__dict__
        return {name: _canonical(fields[name]) for name in sorted(value.model_fields_set)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bytes):
        return {"$sha256": hashlib.sha256(value).hexdigest()}
    return repr(value)


def definition(resource: Resource) -> bytes:
    """A resource's definition as canonical bytes: the fields it sets and the content it
    prepared (a rendered template, a source file), secrets included, never its origin."""
    private = resource.__pydantic_private__ or {}
    doc = {
        "key": private.get("_key") or resource.key,
        "fields": _canonical(resource),
        "prepared": {k: _canonical(v) for k, v in sorted(private.items())
                     if k not in ("_origin", "_key") and v is not None},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=repr).encode()


def digests(resources: Iterable[Resource], state_dir: Path) -> dict[str, str]:
    """Keyed hashes of the resources' definitions (64 bits each: enough to tell edits apart,
    and with a secret key nothing can be learnt from them)."""
    key = _key(state_dir)
    found = {}
    for r in resources:
        data = definition(r)
        found[r.key] = hmac.new(key, data, hashlib.sha256).hexdigest()[:16]
    return found


def _read_index(directory: Path) -> dict[str, str]:
    try:
        doc = json.loads((directory / INDEX).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    found = doc.get("resources") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


# -- writing ----------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    from converge.host import LocalHost

    LocalHost(state_dir=path.parent).write_atomic(str(path), data, uid=None, gid=None,
                                                  mode=0o600)


def _changed(rp: ResourcePlan, kind: str) -> bool:
    if rp.status == "skipped":
        return False
    if kind == "plan":
        return rp.action != "none"
    return rp.applied


def record(
    state_dir: Path,
    result: Plan,
    resources: Iterable[Resource],
    *,
    start: _dt.datetime,
    desired: Path,
    desired_sha256: str,
    exit_code: int,
    keep: int = DEFAULT_KEEP,
    trigger: str | None = None,
) -> RunReport | None:
    """Write the report of a plan or apply, classify its changes, rotate; returns it (``None``
    when ``keep`` is 0: reports are off). An apply also updates the converged definitions."""
    from converge import __version__

    if keep <= 0:
        return None
    directory = reports_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)
    kind: Literal["apply", "plan"] = "plan" if result.kind == "plan" else "apply"
    current = digests(resources, state_dir)
    converged = _read_index(directory)
    summary = RunSummary(**result.summary.model_dump())
    rows: list[dict[str, Any]] = []
    for rp, doc in zip(result.resources, result.model_dump(mode="json")["resources"],
                       strict=True):
        digest = current.get(rp.id)
        cause: Cause | None = None
        if _changed(rp, kind):
            summary.changed += 1
            cause = "corrective" if digest is not None and converged.get(rp.id) == digest \
                else "intended"
            setattr(summary, cause, getattr(summary, cause) + 1)
        if rp.refreshed:
            summary.refreshed += 1
        doc["cause"] = cause
        doc["digest"] = digest
        rows.append(doc)
    report_id = new_id(start)
    doc_all: dict[str, Any] = {
        "format": FORMAT,
        "id": report_id,
        "kind": kind,
        "start": _iso(start),
        "duration": result.duration or 0.0,
        "host": socket.gethostname(),
        "trigger": trigger or trigger_from_env(),
        "desired": str(desired),
        "desired_sha256": desired_sha256,
        "converge_version": __version__,
        "exit_code": exit_code,
        "passes": result.passes,
        "summary": summary.model_dump(),
        "resources": rows,
    }
    _write(directory / f"{report_id}.json",
           (json.dumps(doc_all, separators=(",", ":"), default=str) + "\n").encode())
    if kind == "apply":
        updated = dict(converged)
        for rp in result.resources:
            if rp.status in ("changed", "unchanged") and rp.id in current:
                updated[rp.id] = current[rp.id]
        if updated != converged:
            _write(directory / INDEX, json.dumps({"resources": updated}, indent=0,
                                                 sort_keys=True).encode() + b"\n")
    rotate(state_dir, keep)
    return RunReport.model_validate({**doc_all, "resources": []})


def rotate(state_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` reports; returns the ids deleted."""
    ids = list_ids(state_dir)
    gone = ids[:-keep] if keep > 0 else ids
    for report_id in gone:
        with contextlib.suppress(FileNotFoundError):
            (reports_dir(state_dir) / f"{report_id}.json").unlink()
    return gone


# -- reading ----------------------------------------------------------------------------------

def list_ids(state_dir: Path) -> list[str]:
    """Ids of the stored reports, oldest first."""
    try:
        names = os.listdir(reports_dir(state_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"cannot read the run reports in {reports_dir(state_dir)}: "
                         f"{exc.strerror}") from None
    return sorted(n[:-5] for n in names if n.endswith(".json") and _ID_RE.match(n[:-5]))


def _row(doc: dict[str, Any]) -> RunRow:
    s = doc.get("summary") or {}
    return RunRow(
        id=str(doc["id"]), kind=str(doc.get("kind", "apply")),
        start=_dt.datetime.fromisoformat(str(doc["start"]).replace("Z", "+00:00")),
        duration=float(doc.get("duration") or 0.0), trigger=str(doc.get("trigger", "?")),
        desired=str(doc.get("desired", "")), exit_code=int(doc.get("exit_code", -1)),
        changed=int(s.get("changed", 0)), corrective=int(s.get("corrective", 0)),
        failed=int(s.get("failed", 0)),
    )


def history(state_dir: Path, *, limit: int | None = None, desired: Path | None = None,
            kind: str | None = None) -> list[RunRow]:
    """The stored runs, newest first (at most ``limit``), optionally of one desired file."""
    rows: list[RunRow] = []
    wanted = str(desired.absolute()) if desired is not None else None
    for report_id in reversed(list_ids(state_dir)):
        if limit is not None and len(rows) >= limit:
            break
        try:
            doc = json.loads((reports_dir(state_dir) / f"{report_id}.json").read_text())
            row = _row(doc)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # rotated away meanwhile, unreadable, or not a report
        if wanted is not None and row.desired != wanted:
            continue
        if kind is not None and row.kind != kind:
            continue
        rows.append(row)
    return rows


def resolve(state_dir: Path, ref: str | None) -> str:
    """The id of a stored report: ``None`` for the latest, else an id, a unique prefix of
    one, or its 6-digit suffix."""
    ids = list_ids(state_dir)
    where = reports_dir(state_dir)
    if not ids:
        raise UsageError(f"no run reports in {where}")
    if ref is None:
        return ids[-1]
    ref = ref.removesuffix(".json")
    if ref in ids:
        return ref
    found = [i for i in ids if i.startswith(ref) or i.endswith(f"-{ref}")]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(f"no report {ref!r} in {where} (see converge history)")
    raise UsageError(f"{ref!r} matches {len(found)} reports: {', '.join(found[:5])}"
                     + (" ..." if len(found) > 5 else ""))


def load(state_dir: Path, report_id: str) -> RunReport:
    path = reports_dir(state_dir) / f"{report_id}.json"
    try:
        return RunReport.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"report {report_id} is gone (rotated away?)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not a readable report: {exc}") from None


# -- rendering for people ---------------------------------------------------------------------

def _when(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(s: float) -> str:
    return f"{s:.2f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


EXIT_MEANING = {0: "nothing to do", 2: "changes", 4: "failures", 6: "changes and failures",
                1: "could not run"}


def render_history(rows: list[RunRow], *, state_dir: Path) -> str:
    if not rows:
        return f"No runs recorded in {reports_dir(state_dir)}."
    head = ("ID", "STARTED (UTC)", "KIND", "TRIGGER", "CHANGES", "CORRECTIVE", "FAILED",
            "DURATION", "EXIT")
    table = [head] + [
        (r.id, r.start.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S"), r.kind, r.trigger,
         str(r.changed), str(r.corrective), str(r.failed), _seconds(r.duration),
         str(r.exit_code)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    right = {4, 5, 6, 7, 8}
    lines = []
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    desired = sorted({r.desired for r in rows})
    if len(desired) == 1:
        lines.append(f"\n{len(rows)} run(s) of {desired[0]}.")
    return "\n".join(lines)


def render(report: RunReport, *, colour: bool = False) -> str:
    from converge.plan import render_result

    s = report.summary
    meaning = EXIT_MEANING.get(report.exit_code, "?")
    out = [
        f"Run {report.id} ({report.kind}, {report.trigger})",
        f"  started   {_when(report.start)}, took {_seconds(report.duration)}, "
        f"exit {report.exit_code} ({meaning})",
        f"  host      {report.host}",
        f"  desired   {report.desired} (sha256 {report.desired_sha256[:12]})",
        f"  converge  {report.converge_version}",
        "",
    ]
    for r in report.resources:
        if r.cause is None and r.status in ("unchanged", "ok") and not r.refreshed \
                and not r.notes:
            continue
        out.extend(render_result(r, colour, cause=r.cause))
    verb = "Plan" if report.kind == "plan" else "Apply"
    what = "pending" if report.kind == "plan" else "changed"
    out.append(
        f"{verb}: {s.changed} {what} ({s.intended} intended, {s.corrective} corrective), "
        f"{s.failed} failed, {s.skipped} skipped, {s.none} unchanged.")
    return "\n".join(out)
