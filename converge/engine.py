"""The reconciler: probe -> diff -> apply -> verify, generation by generation.

- ``plan`` probes everything (batched per provider, providers concurrently), diffs and marks
  the resources downstream of a pending change (their probe may be stale).
- ``apply`` walks the DAG's topological generations. Each generation is probed just before it
  is applied, so it sees what its dependencies did. Independent resources apply concurrently
  (a provider may be exclusive). Every applied resource is probed again: if it still differs,
  it failed (NotConverged). A failure skips its descendants only. Notified resources are
  refreshed once, after they converge. Passes repeat until one changes nothing; a resource
  that changes on every pass up to the bound is reported as flapping.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from converge import log
from converge.errors import ConvergeError, NoProviderError, NotConvergedError
from converge.graph import generations
from converge.plan import STALE_NOTE, Change, Plan, ResourcePlan, action_of
from converge.registry import choose_provider

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.graph import Graph
    from converge.host import Host
    from converge.resources.base import Provider, Resource

DEFAULT_JOBS = 4
DEFAULT_MAX_PASSES = 3


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ConvergeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Outcome:
    """What happened to one resource over the whole run."""

    plan: ResourcePlan
    changed_passes: list[int] = field(default_factory=list)
    done: bool = False  # failed or skipped: not touched again


class Engine:
    """Plans and applies one catalog on one host."""

    def __init__(
        self,
        resources: Sequence[Resource],
        graph: Graph,
        host: Host,
        facts: Facts,
        *,
        jobs: int = DEFAULT_JOBS,
        max_passes: int = DEFAULT_MAX_PASSES,
        on_event: Callable[[str, ResourcePlan], None] | None = None,
    ) -> None:
        self.resources = list(resources)
        self.by_key = {r.key: r for r in self.resources}
        self.graph = graph
        self.host = host
        self.facts = facts
        self.jobs = max(1, jobs)
        self.max_passes = max(1, max_passes)
        self.on_event = on_event
        self._providers: dict[type[Provider[Any, Any]], Provider[Any, Any]] = {}
        self._provider_of: dict[str, Provider[Any, Any]] = {}
        self._provider_errors: dict[str, str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._generations: list[list[str]] | None = None
        self._choose_providers()

    # -- providers ----------------------------------------------------------------------------

    def _choose_providers(self) -> None:
        chosen: dict[tuple[str, str | None], type[Provider[Any, Any]] | NoProviderError] = {}
        for r in self.resources:
            sig = (r.kind, r.provider or r.preferred_provider())
            if sig not in chosen:
                try:
                    chosen[sig] = choose_provider(r, self.host, self.facts)
                except NoProviderError as exc:
                    chosen[sig] = exc
            cls = chosen[sig]
            if isinstance(cls, NoProviderError):
                self._provider_errors[r.key] = f"{r.key}: {cls}"
                continue
            if cls not in self._providers:
                self._providers[cls] = cls()
            self._provider_of[r.key] = self._providers[cls]

    def _retry_provider(self, key: str) -> bool:
        """Choose again, just before the resource's turn: its dependencies may have just
        installed the command its provider needs (supervisorctl from Package[supervisor])."""
        resource = self.by_key[key]
        try:
            cls = choose_provider(resource, self.host, self.facts)
        except NoProviderError as exc:
            self._provider_errors[key] = f"{key}: {exc}"
            return False
        del self._provider_errors[key]
        if cls not in self._providers:
            self._providers[cls] = cls()
        self._provider_of[key] = self._providers[cls]
        return True

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Future[Any] | Any]:
        """Run ``fn`` over items, concurrently when there is more than one."""
        if len(items) <= 1 or self.jobs == 1:
            results: list[Any] = []
            for item in items:
                f: Future[Any] = Future()
                try:
                    f.set_result(fn(item))
                except BaseException as exc:
                    f.set_exception(exc)
                results.append(f)
            return results
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="converge")
        return [self._pool.submit(fn, item) for item in items]

    def _probe(self, keys: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Probe ``keys`` batched per provider; returns states and per-key probe errors."""
        groups: dict[Provider[Any, Any], list[Resource]] = defaultdict(list)
        for k in keys:
            groups[self._provider_of[k]].append(self.by_key[k])
        items = list(groups.items())
        futures = self._map(lambda item: item[0].probe(self.host, item[1]), items)
        states: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for (_, resources), fut in zip(items, futures, strict=True):
            try:
                states.update(fut.result())
            except Exception as exc:
                for r in resources:
                    errors[r.key] = f"probe failed: {_error_text(exc)}"
        return states, errors

    def _diff(self, key: str, actual: Any) -> list[Change]:
        return list(self._provider_of[key].diff(self.by_key[key], actual))

    def _notes(self, key: str, actual: Any) -> list[str]:
        return list(self._provider_of[key].notes(self.by_key[key], actual))

    # -- plan ---------------------------------------------------------------------------------

    def plan(self) -> Plan:
        start = time.monotonic()
        plans = {r.key: ResourcePlan(id=r.key) for r in self.resources}
        probe_keys = [k for k in plans if k not in self._provider_errors]
        for k, msg in self._provider_errors.items():
            plans[k].status = "failed"
            plans[k].error = msg
        try:
            states, errors = self._probe(probe_keys)
            for k in probe_keys:
                rp = plans[k]
                if k in errors:
                    rp.status, rp.error = "failed", errors[k]
                    continue
                try:
                    rp.changes = self._diff(k, states.get(k))
                    rp.notes.extend(self._notes(k, states.get(k)))
                except Exception as exc:
                    rp.status, rp.error = "failed", _error_text(exc)
                    continue
                rp.action = action_of(rp.changes)
                rp.status = "pending" if rp.changes else "ok"
        finally:
            self.close()
        self._mark_stale(plans)
        result = Plan(kind="plan", host=self.host.name, resources=list(plans.values()),
                      duration=time.monotonic() - start)
        result.summarise()
        return result

    def _mark_stale(self, plans: dict[str, ResourcePlan]) -> None:
        upstream_pending: dict[str, list[str]] = {}
        for key in self.graph.static_order():
            causes: list[str] = []
            notifiers = [p for p in self.graph.predecessors(key)
                         if plans[p].status == "pending" and key in self.by_key[p].notify]
            if notifiers:
                plans[key].notes.append(f"will be refreshed if {', '.join(notifiers)} "
                                        "change(s)")
            if plans[key].action == "create":
                continue  # what does not exist yet cannot have been probed stale
            for pred in self.graph.predecessors(key):
                if plans[pred].status == "pending":
                    causes.append(pred)
                causes.extend(c for c in upstream_pending.get(pred, ()) if c not in causes)
            if causes:
                upstream_pending[key] = causes
                shown = ", ".join(causes[:3]) + (f" and {len(causes) - 3} more"
                                                 if len(causes) > 3 else "")
                rp = plans[key]
                if rp.status == "failed":
                    # e.g. a line edit of a file that an earlier resource creates: the probe
                    # cannot see what does not exist yet; apply will probe it in its turn.
                    rp.notes.append(f"cannot be planned before {shown} change(s): {rp.error}")
                    rp.status, rp.action, rp.error = "pending", "change", None
                else:
                    rp.notes.append(
                        f"{STALE_NOTE}{shown}, which will change first: this probe may be stale"
                    )

    # -- apply --------------------------------------------------------------------------------

    def apply(self) -> Plan:
        start = time.monotonic()
        outcomes = {r.key: _Outcome(ResourcePlan(id=r.key, status="unchanged"))
                    for r in self.resources}
        passes = 0
        try:
            passes = 1 if self._in_sync(outcomes) else self._apply_passes(outcomes)
        finally:
            self.close()
        report = Plan(kind="report", host=self.host.name,
                      resources=[o.plan for o in outcomes.values()], passes=passes,
                      duration=time.monotonic() - start)
        report.summarise()
        return report

    def _in_sync(self, outcomes: dict[str, _Outcome]) -> bool:
        """Probe and diff everything at once, as a plan does. Nothing differs: the run is a
        no-op, and needs no order (nor networkx). Anything else -- a change, an error -- and
        the walk generation by generation decides, probing each just before its turn."""
        if self._provider_errors:
            return False
        states, errors = self._probe(list(self.by_key))
        if errors:
            return False
        notes: dict[str, list[str]] = {}
        for key in self.by_key:
            try:
                if self._diff(key, states.get(key)):
                    return False
                notes[key] = self._notes(key, states.get(key))
            except Exception:  # reported by the walk
                return False
        for key, found in notes.items():
            outcomes[key].plan.notes.extend(found)
        return True

    def _apply_passes(self, outcomes: dict[str, _Outcome]) -> int:
        """Walk the graph until a pass changes nothing (bounded); returns the passes made."""
        passes = 0
        for passes in range(1, self.max_passes + 1):
            if not self._apply_pass(outcomes, passes):
                break
        else:
            self._report_flapping(outcomes, passes)
        return passes

    def _fail(self, outcomes: dict[str, _Outcome], key: str, error: str) -> None:
        o = outcomes[key]
        o.plan.status, o.plan.error, o.done = "failed", error, True
        log.event("error", "failed", resource=key, error=error)
        self._emit("failed", o.plan)

    def _emit(self, what: str, rp: ResourcePlan) -> None:
        if self.on_event is not None:
            self.on_event(what, rp)

    def _apply_pass(self, outcomes: dict[str, _Outcome], pass_no: int) -> bool:
        """One walk of the graph; returns whether anything changed."""
        changed_any = False
        notified: set[str] = set()
        if self._generations is None:
            self._generations = list(generations(self.graph))
        for gen in self._generations:
            ready: list[str] = []
            for key in gen:
                o = outcomes[key]
                if o.done:
                    continue
                if key in self._provider_errors and not self._retry_provider(key):
                    self._fail(outcomes, key, self._provider_errors[key])
                    continue
                blocked = [p for p in self.graph.predecessors(key)
                           if outcomes[p].plan.status in ("failed", "skipped", "flapping")]
                if blocked:
                    o.plan.status, o.done = "skipped", True
                    o.plan.error = f"skipped: {', '.join(sorted(blocked))} did not converge"
                    self._emit("skipped", o.plan)
                    continue
                ready.append(key)
            if not ready:
                continue
            states, errors = self._probe(ready)
            todo: list[tuple[str, Any, list[Change]]] = []
            for key in ready:
                if key in errors:
                    self._fail(outcomes, key, errors[key])
                    continue
                try:
                    changes = self._diff(key, states.get(key))
                    notes = outcomes[key].plan.notes
                    notes.extend(n for n in self._notes(key, states.get(key)) if n not in notes)
                except Exception as exc:
                    self._fail(outcomes, key, _error_text(exc))
                    continue
                if changes:
                    todo.append((key, states.get(key), changes))
            applied = self._apply_changes(outcomes, todo)
            if applied:
                self._verify(outcomes, applied, pass_no)
                for key in applied:
                    if outcomes[key].plan.status != "failed":
                        changed_any = True
                        notified.update(self.by_key[key].notify)
            for key in ready:
                if key in notified and not outcomes[key].done:
                    self._refresh(outcomes, key)
        return changed_any

    def _apply_changes(
        self, outcomes: dict[str, _Outcome], todo: list[tuple[str, Any, list[Change]]]
    ) -> list[str]:
        """Apply every item; exclusive providers one at a time. Returns keys applied."""
        if not todo:
            return []
        tasks: list[list[tuple[str, Any, list[Change]]]] = []
        exclusive: dict[Provider[Any, Any], list[tuple[str, Any, list[Change]]]] = {}
        for item in todo:
            provider = self._provider_of[item[0]]
            if provider.exclusive:
                exclusive.setdefault(provider, []).append(item)
            else:
                tasks.append([item])
        tasks.extend(exclusive.values())

        def run(task: list[tuple[str, Any, list[Change]]]) -> list[tuple[str, float, Any]]:
            provider = self._provider_of[task[0][0]]
            t0 = time.monotonic()
            try:
                outcome = provider.apply_batch(
                    self.host, [(self.by_key[k], actual, ch) for k, actual, ch in task])
            except Exception as exc:  # the whole batch failed
                outcome = {k: exc for k, _, _ in task}
            took = (time.monotonic() - t0) / len(task)
            done: list[tuple[str, float, Any]] = []
            for key, _actual, changes in task:
                result = outcome.get(key, ConvergeError(f"{key}: provider reported nothing"))
                done.append((key, took, result if isinstance(result, BaseException)
                             else (changes, result or [])))
            return done

        applied: list[str] = []
        for fut in self._map(run, tasks):
            for key, took, result in fut.result():
                o = outcomes[key]
                o.plan.duration = (o.plan.duration or 0.0) + took
                if isinstance(result, BaseException):
                    planned = next(ch for k, _, ch in todo if k == key)
                    if not o.changed_passes:  # keep what it tried to change, for the report
                        o.plan.changes, o.plan.action = list(planned), action_of(planned)
                    self._fail(outcomes, key, _error_text(result))
                    continue
                changes, backups = result
                if not o.changed_passes:
                    o.plan.changes = list(changes)
                    o.plan.action = action_of(changes)
                else:  # a later pass: list what it changed that the first had not
                    seen = {c.attribute for c in o.plan.changes}
                    o.plan.changes.extend(c for c in changes if c.attribute not in seen)
                o.plan.backups.extend(backups)
                o.plan.applied = True
                applied.append(key)
        return applied

    def _verify(self, outcomes: dict[str, _Outcome], keys: list[str], pass_no: int) -> None:
        states, errors = self._probe(keys)
        for key in keys:
            o = outcomes[key]
            if key in errors:
                self._fail(outcomes, key, f"verification {errors[key]}")
                continue
            try:
                left = self._diff(key, states.get(key))
            except Exception as exc:
                self._fail(outcomes, key, f"verification failed: {_error_text(exc)}")
                continue
            if left:
                attrs = ", ".join(c.attribute for c in left)
                self._fail(outcomes, key, str(NotConvergedError(
                    f"{key} still differs after apply ({attrs})")))
                continue
            o.plan.status = "changed"
            o.changed_passes.append(pass_no)
            log.event("info", "changed", resource=key,
                      attributes=[c.attribute for c in o.plan.changes])
            self._emit("changed", o.plan)

    def _refresh(self, outcomes: dict[str, _Outcome], key: str) -> None:
        o = outcomes[key]
        if o.plan.refreshed:
            return
        t0 = time.monotonic()
        try:
            done = self._provider_of[key].refresh(self.host, self.by_key[key])
        except Exception as exc:
            self._fail(outcomes, key, f"refresh failed: {_error_text(exc)}")
            return
        finally:
            o.plan.duration = (o.plan.duration or 0.0) + time.monotonic() - t0
        if done is False:
            return
        o.plan.refreshed = True
        log.event("info", "refreshed", resource=key)
        self._emit("refreshed", o.plan)

    def _report_flapping(self, outcomes: dict[str, _Outcome], passes: int) -> None:
        """The last pass still changed things: what changed on two or more passes flaps."""
        for key, o in outcomes.items():
            if passes not in o.changed_passes or o.done:
                continue
            if len(o.changed_passes) >= 2:
                o.plan.status, o.done = "flapping", True
                o.plan.error = (f"changed on {len(o.changed_passes)} of {passes} passes: "
                                "something keeps undoing it")
                log.event("error", "flapping", resource=key, passes=o.changed_passes)
                self._emit("flapping", o.plan)
            else:
                o.plan.notes.append(f"changed on the last allowed pass ({passes}); "
                                    "not yet confirmed by a pass without changes")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
