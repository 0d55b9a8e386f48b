"""A small resource kind for engine tests (not shipped): a value kept in a file.

It exercises the engine's contracts (generations, verify, refresh, isolation, concurrency)
with real files, and can be told to misbehave.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from converge.errors import ResourceError
from converge.host import Host
from converge.plan import Change
from converge.resources.base import Provider, Resource


class Marker(Resource):
    kind: ClassVar[str] = "Marker"

    name: str
    dir: str
    value: str = "on"
    fail: bool = False  # apply raises
    lie: bool = False  # apply reports success but changes nothing
    sleep: float = 0.0
    reads: str | None = None  # record what this file held when probed (generation probing)

    @property
    def file(self) -> Path:
        return Path(self.dir) / self.name

    def log(self, what: str) -> None:
        with open(Path(self.dir) / "events.log", "a") as f:
            f.write(f"{time.monotonic():.6f} {what} {self.name}\n")


class MarkerProvider(Provider[Marker, str]):
    name = "file"

    def probe(self, host: Host, resources: Sequence[Marker]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for r in resources:
            r.log("probe")
            if r.reads is not None:
                seen = Path(r.reads).read_text() if os.path.exists(r.reads) else "(missing)"
                with open(Path(r.dir) / f"{r.name}.saw", "w") as f:
                    f.write(seen)
            out[r.key] = r.file.read_text() if r.file.exists() else None
        return out

    def diff(self, desired: Marker, actual: str | None) -> list[Change]:
        if actual == desired.value:
            return []
        return [Change(attribute="value", before=actual, after=desired.value)]

    def apply(self, host: Host, desired: Marker, actual: Any, changes: list[Change]) -> list[str]:
        desired.log("apply-start")
        if desired.sleep:
            time.sleep(desired.sleep)
        if desired.fail:
            raise ResourceError(f"{desired.key} was told to fail")
        if not desired.lie:
            desired.file.write_text(desired.value)
        desired.log("apply-end")
        return []

    def refresh(self, host: Host, desired: Marker) -> None:
        desired.log("refresh")


class ExclusiveMarkerProvider(MarkerProvider):
    name = "exclusive"
    exclusive = True


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "Marker": [MarkerProvider, ExclusiveMarkerProvider],
}


def events(directory: Path) -> list[tuple[str, str]]:
    path = directory / "events.log"
    if not path.exists():
        return []
    return [tuple(line.split()[1:3]) for line in path.read_text().splitlines()]  # type: ignore[misc]


def intervals(directory: Path) -> dict[str, tuple[float, float]]:
    start: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for line in (directory / "events.log").read_text().splitlines():
        t, what, title = line.split()
        if what == "apply-start":
            start[title] = float(t)
        elif what == "apply-end":
            spans[title] = (start[title], float(t))
    return spans
