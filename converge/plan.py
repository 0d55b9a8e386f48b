"""What differs and what was done: Change, ResourcePlan, Plan and their rendering.

A :class:`Change` is one attribute's ``before -> after``. Providers build them in ``diff``;
secrets are replaced by :data:`SENSITIVE` *there*, so no later step can leak them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SENSITIVE = "(sensitive)"
#: how the engine's notes on possibly stale probes begin (shown only with the changes)
STALE_NOTE = "depends on "

Action = Literal["create", "change", "remove", "none"]
Status = Literal["ok", "pending", "changed", "unchanged", "failed", "skipped", "flapping"]


class Change(BaseModel):
    """One attribute of one resource, as it is (``before``) and as it will be (``after``)."""

    model_config = ConfigDict(frozen=True)

    attribute: str
    before: Any = None
    after: Any = None
    sensitive: bool = False
    diff: str | None = Field(default=None, description="unified diff, for file content")


class ResourcePlan(BaseModel):
    """A resource's pending (plan) or performed (report) changes."""

    id: str
    action: Action = "none"
    status: Status = "ok"
    changes: list[Change] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    duration: float | None = None
    backups: list[str] = Field(default_factory=list)
    refreshed: bool = False
    applied: bool = Field(default=False, description="apply ran (even if it did not converge)")


class Summary(BaseModel):
    create: int = 0
    change: int = 0
    remove: int = 0
    none: int = 0
    failed: int = 0
    skipped: int = 0


class Plan(BaseModel):
    """A plan (``converge plan``) or a run report (``converge apply``)."""

    kind: Literal["plan", "report"] = "plan"
    desired: str = ""
    host: str = "localhost"
    resources: list[ResourcePlan] = Field(default_factory=list)
    summary: Summary = Field(default_factory=Summary)
    passes: int = 0
    duration: float | None = None

    def summarise(self) -> None:
        s = Summary()
        for r in self.resources:
            if r.status in ("failed", "flapping"):
                s.failed += 1
            elif r.status == "skipped":
                s.skipped += 1
            else:
                setattr(s, r.action, getattr(s, r.action) + 1)
        self.summary = s

    @property
    def pending(self) -> bool:
        return any(r.action != "none" for r in self.resources if r.status != "skipped")

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "flapping") for r in self.resources)


def action_of(changes: list[Change]) -> Action:
    """Derive a resource's action from its changes (by convention, the ``ensure`` change)."""
    if not changes:
        return "none"
    for c in changes:
        if c.attribute == "ensure":
            if c.after == "absent":
                return "remove"
            if c.before == "absent":
                return "create"
    return "change"


# -- rendering for people ---------------------------------------------------------------------

_SYMBOL = {"create": "+", "change": "~", "remove": "-", "none": " "}
_COLOUR = {"create": "32", "change": "33", "remove": "31", "none": "0"}


def _fmt(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code != "0" else text


def render_changes(rp: ResourcePlan, colour: bool) -> list[str]:
    lines: list[str] = []
    width = max((len(c.attribute) for c in rp.changes), default=0)
    for c in rp.changes:
        name = c.attribute.ljust(width)
        if c.sensitive:
            lines.append(f"      ~ {name}: {SENSITIVE} will change")
            continue
        if rp.action == "create" and c.before in (None, "absent"):
            lines.append(f"      + {name}: {_fmt(c.after)}")
        elif c.after is None and rp.action == "remove":
            lines.append(f"      - {name}: {_fmt(c.before)}")
        else:
            lines.append(f"      ~ {name}: {_fmt(c.before)} -> {_fmt(c.after)}")
        if c.diff:
            for d in c.diff.rstrip("\n").splitlines():
                code = {"+": "32", "-": "31", "@": "36"}.get(d[:1], "0")
                if d.startswith(("+++", "---")):
                    code = "1"
                lines.append("          " + _paint(d, code, colour))
    return lines


def render_plan(plan: Plan, *, colour: bool = False, verbose: bool = False) -> str:
    out: list[str] = []
    shown = [r for r in plan.resources
             if r.action != "none" or r.status != "ok" or verbose
             or any(not n.startswith(STALE_NOTE) for n in r.notes)]
    for r in shown:
        head = f"  {_SYMBOL[r.action]} {r.id}"
        out.append(_paint(head, _COLOUR[r.action], colour))
        out.extend(render_changes(r, colour))
        for note in r.notes:
            out.append(f"      # {note}")
        if r.error:
            text = f"      ! error: {r.error}".replace("\n", "\n        ")
            out.append(_paint(text, "31", colour))
        out.append("")
    s = plan.summary
    if plan.kind == "plan":
        if not plan.pending and not plan.failed:
            out.append("No changes. The system matches the desired state.")
        else:
            out.insert(0, "converge will perform the following actions:\n")
            out.append(f"Plan: {s.create} to create, {s.change} to change, {s.remove} to remove.")
        if s.failed:
            out.append(_paint(f"{s.failed} resource(s) could not be planned.", "31", colour))
    return "\n".join(out)


def render_result(r: ResourcePlan, colour: bool, *, cause: str | None = None) -> list[str]:
    """One resource of a run report: what happened to it, its changes, notes and error."""
    mark = {"failed": "!", "flapping": "!", "skipped": "-"}.get(
        r.status, _SYMBOL[r.action] if r.status == "changed" or cause else " ")
    code = {"failed": "31", "flapping": "31", "skipped": "33"}.get(r.status, _COLOUR[r.action])
    why = f", {cause}" if cause else ""
    took = f" ({r.duration:.2f}s)" if r.duration is not None and r.applied else ""
    out = [_paint(f"  {mark} {r.id}: {r.status}{why}{took}", code, colour)]
    out.extend(render_changes(r, colour))
    if r.refreshed:
        out.append("      refreshed")
    out.extend(f"      backup: {b}" for b in r.backups)
    out.extend(f"      # {note}" for note in r.notes)
    if r.error:
        out.append(_paint("      " + r.error.replace("\n", "\n      "), "31", colour))
    return out


def render_report(report: Plan, *, colour: bool = False) -> str:
    out: list[str] = []
    for r in report.resources:
        if r.status in ("unchanged", "ok") and not r.refreshed and not r.notes:
            continue
        out.extend(render_result(r, colour))
    s = report.summary
    changed = s.create + s.change + s.remove
    took = f" in {report.duration:.2f}s" if report.duration is not None else ""
    out.append(
        f"Apply: {changed} changed ({s.create} created, {s.change} changed, {s.remove} removed), "
        f"{s.failed} failed, {s.skipped} skipped, {s.none} unchanged{took}."
    )
    return "\n".join(out)
