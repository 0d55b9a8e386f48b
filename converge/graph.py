"""The dependency graph: a networkx DAG of resource keys.

Edges point from a dependency to its dependent. They come from ``requires``, from ``notify``
(the notifier is applied before what it notifies), and are implied (a file requires its parent
directory, its owner and its group) when the other end is declared; when that other end is
being removed (``ensure="absent"``), the implied edge is reversed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import networkx as nx

from converge.errors import GraphError

if TYPE_CHECKING:
    from converge.resources.base import Resource


def _where(resource: Resource) -> str:
    return f" ({resource.origin})" if resource.origin else ""


def build(resources: Sequence[Resource]) -> nx.DiGraph:
    """Build and check the graph: missing references and cycles are :class:`GraphError`."""
    graph = nx.DiGraph()
    by_key = {r.key: r for r in resources}
    for r in resources:
        graph.add_node(r.key, resource=r)
    for r in resources:
        for dep in r.requires:
            if dep not in by_key:
                raise GraphError(f"{r.key}{_where(r)} requires {dep}, which is not declared")
            graph.add_edge(dep, r.key, why="requires")
        for target in r.notify:
            if target not in by_key:
                raise GraphError(f"{r.key}{_where(r)} notifies {target}, which is not declared")
            graph.add_edge(r.key, target, why="notify")
        for dep in r.implied_requires():
            if dep not in by_key or dep == r.key:
                continue
            if getattr(by_key[dep], "ensure", None) == "absent":
                # Removal runs the other way: the file before its directory, the service
                # before its unit file or package, what a user owns before the user.
                if not graph.has_edge(r.key, dep):
                    graph.add_edge(r.key, dep, why="implied")
            elif not graph.has_edge(dep, r.key):
                graph.add_edge(dep, r.key, why="implied")
    by_kind: dict[str, list[str]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r.key)
    for r in resources:
        for kind in r.requires_kinds():
            for dep in by_kind.get(kind, ()):
                # an explicit dependency the other way wins (a repo from a package's RPM)
                if dep != r.key and not graph.has_edge(dep, r.key) \
                        and not nx.has_path(graph, r.key, dep):
                    graph.add_edge(dep, r.key, why="implied")
    last_of: dict[str, str] = {}
    for r in resources:
        serial = r.serial_key()
        if serial is None:
            continue
        previous = last_of.get(serial)
        if previous is not None and not graph.has_edge(previous, r.key):
            graph.add_edge(previous, r.key, why="same target")
        last_of[serial] = r.key
    check_acyclic(graph)
    return graph


def check_acyclic(graph: nx.DiGraph) -> None:
    if nx.is_directed_acyclic_graph(graph):  # the common case, in one topological sort
        return
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:  # pragma: no cover - is_directed_acyclic_graph said otherwise
        return
    steps = []
    verbs = {"requires": "requires", "implied": "requires (implied)",
             "same target": "comes after (same target)"}
    for u, v, *_ in cycle:
        res: Resource = graph.nodes[v]["resource"]
        why = graph.edges[u, v]["why"]
        if why == "notify":
            steps.append(f"  {u}{_where(graph.nodes[u]['resource'])} notifies {v}")
        else:
            steps.append(f"  {v}{_where(res)} {verbs.get(why, why)} {u}")
    raise GraphError("dependency cycle:\n" + "\n".join(steps))


def generations(graph: nx.DiGraph) -> Iterator[list[str]]:
    """Keys in dependency order: each generation depends only on earlier ones."""
    for gen in nx.topological_generations(graph):
        yield sorted(gen)


def to_dot(graph: nx.DiGraph) -> str:
    """The graph in Graphviz DOT (notify edges dashed, implied edges dotted)."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph converge {", "  rankdir=LR;", "  node [shape=box];"]
    for key in nx.lexicographical_topological_sort(graph):
        lines.append(f"  {q(key)};")
    for u, v, why in sorted(graph.edges(data="why")):
        style = {"notify": ' [style=dashed, label="notify"]', "implied": " [style=dotted]",
                 "same target": ' [style=dotted, label="same target"]'}
        lines.append(f"  {q(u)} -> {q(v)}{style.get(why, '')};")
    lines.append("}")
    return "\n".join(lines) + "\n"
