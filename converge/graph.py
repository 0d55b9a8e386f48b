"""The dependency graph: a DAG of resource keys, ordered by networkx.

Edges point from a dependency to its dependent. They come from ``requires``, from ``notify``
(the notifier is applied before what it notifies), and are implied (a file requires its parent
directory, its owner and its group) when the other end is declared; when that other end is
being removed (``ensure="absent"``), the implied edge is reversed.
"""

from __future__ import annotations

import graphlib
import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from converge.errors import GraphError

if TYPE_CHECKING:
    import networkx as nx

    from converge.resources.base import Resource


class Graph:
    """The DAG, kept as plain dicts while it is built and checked, and handed to networkx
    (:attr:`nx`) to order an apply that has work to do, or to draw it.

    A run that finds nothing to change never needs an order, and so never pays for
    importing networkx (its import is most of a no-op run's fixed cost).
    """

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self._succ: dict[str, dict[str, str]] = {}
        self._pred: dict[str, dict[str, str]] = {}
        self._nx: nx.DiGraph | None = None

    def add_node(self, key: str, resource: Resource) -> None:
        self.resources[key] = resource
        self._succ.setdefault(key, {})
        self._pred.setdefault(key, {})
        self._nx = None

    def add_edge(self, u: str, v: str, why: str) -> None:
        self._succ[u][v] = why
        self._pred[v][u] = why
        self._nx = None

    def has_edge(self, u: str, v: str) -> bool:
        return v in self._succ.get(u, {})

    def why(self, u: str, v: str) -> str:
        return self._succ[u][v]

    def predecessors(self, key: str) -> Iterator[str]:
        return iter(self._pred[key])

    def has_path(self, source: str, target: str) -> bool:
        seen = {source}
        stack = [source]
        while stack:
            for nxt in self._succ[stack.pop()]:
                if nxt == target:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    def static_order(self) -> list[str]:
        """Every key after its dependencies (raises ``graphlib.CycleError`` on a cycle)."""
        return list(graphlib.TopologicalSorter(
            {k: preds.keys() for k, preds in self._pred.items()}).static_order())

    @property
    def nx(self) -> nx.DiGraph:
        """The same graph as a networkx DiGraph (nodes carry ``resource``, edges ``why``)."""
        if self._nx is None:
            import networkx

            g = networkx.DiGraph()
            for key, resource in self.resources.items():
                g.add_node(key, resource=resource)
            for u, targets in self._succ.items():
                for v, why in targets.items():
                    g.add_edge(u, v, why=why)
            self._nx = g
        return self._nx

    def __getattr__(self, name: str) -> Any:
        # anything else a networkx graph offers (edges, nodes, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.nx, name)


def _where(resource: Resource) -> str:
    return f" ({resource.origin})" if resource.origin else ""


def build(resources: Sequence[Resource]) -> Graph:
    """Build and check the graph: missing references and cycles are :class:`GraphError`."""
    graph = Graph()
    by_key = {r.key: r for r in resources}
    for r in resources:
        graph.add_node(r.key, r)
    for r in resources:
        for dep in r.requires:
            if dep not in by_key:
                raise GraphError(f"{r.key}{_where(r)} requires {dep}, which is not declared")
            graph.add_edge(dep, r.key, "requires")
        for target in r.notify:
            if target not in by_key:
                raise GraphError(f"{r.key}{_where(r)} notifies {target}, which is not declared")
            graph.add_edge(r.key, target, "notify")
        for dep in r.implied_requires():
            if dep not in by_key or dep == r.key:
                continue
            if getattr(by_key[dep], "ensure", None) == "absent":
                # Removal runs the other way: the file before its directory, the service
                # before its unit file or package, what a user owns before the user.
                if not graph.has_edge(r.key, dep):
                    graph.add_edge(r.key, dep, "implied")
            elif not graph.has_edge(dep, r.key):
                graph.add_edge(dep, r.key, "implied")
    by_kind: dict[str, list[str]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r.key)
    for r in resources:
        for kind in r.requires_kinds():
            for dep in by_kind.get(kind, ()):
                # an explicit dependency the other way wins (a repo from a package's RPM)
                if dep != r.key and not graph.has_edge(dep, r.key) \
                        and not graph.has_path(r.key, dep):
                    graph.add_edge(dep, r.key, "implied")
    last_of: dict[str, str] = {}
    for r in resources:
        serial = r.serial_key()
        if serial is None:
            continue
        previous = last_of.get(serial)
        if previous is not None and not graph.has_edge(previous, r.key):
            graph.add_edge(previous, r.key, "same target")
        last_of[serial] = r.key
    check_acyclic(graph)
    return graph


def check_acyclic(graph: Graph) -> None:
    try:
        graph.static_order()
        return
    except graphlib.CycleError as exc:
        nodes: list[str] = exc.args[1]  # each an immediate predecessor of the next
    cycle = list(itertools.pairwise(nodes))
    steps = []
    verbs = {"requires": "requires", "implied": "requires (implied)",
             "same target": "comes after (same target)"}
    for u, v in cycle:
        res = graph.resources[v]
        why = graph.why(u, v)
        if why == "notify":
            steps.append(f"  {u}{_where(graph.resources[u])} notifies {v}")
        else:
            steps.append(f"  {v}{_where(res)} {verbs.get(why, why)} {u}")
    raise GraphError("dependency cycle:\n" + "\n".join(steps))


def generations(graph: Graph) -> Iterator[list[str]]:
    """Keys in dependency order: each generation depends only on earlier ones (networkx)."""
    import networkx

    for gen in networkx.topological_generations(graph.nx):
        yield sorted(gen)


def to_dot(graph: Graph) -> str:
    """The graph in Graphviz DOT (notify edges dashed, implied edges dotted)."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph converge {", "  rankdir=LR;", "  node [shape=box];"]
    import networkx

    g = graph.nx
    for key in networkx.lexicographical_topological_sort(g):
        lines.append(f"  {q(key)};")
    for u, v, why in sorted(g.edges(data="why")):
        style = {"notify": ' [style=dashed, label="notify"]', "implied": " [style=dotted]",
                 "same target": ' [style=dotted, label="same target"]'}
        lines.append(f"  {q(u)} -> {q(v)}{style.get(why, '')};")
    lines.append("}")
    return "\n".join(lines) + "\n"
