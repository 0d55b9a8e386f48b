"""The resource model and the provider contract shared by every kind.

A resource is a frozen pydantic model (``extra="forbid"``): pure data, validated without
touching any host, identified as ``Kind[name]``. A field left unset is not managed.

A provider binds a kind to a host:

- ``probe(host, resources)`` returns the actual state of all of them, batched;
- ``diff(desired, actual)`` is pure and returns the :class:`~converge.plan.Change` list;
- ``apply(host, desired, actual, changes)`` does exactly those changes;
- ``refresh(host, desired)`` reacts to a notification (restart, re-run).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.host import Host
    from converge.plan import Change

KEY_RE = re.compile(r"^([A-Z][A-Za-z0-9]*)\[(.+)\]$", re.S)

_INTERNAL = (str(Path(__file__).resolve().parent.parent), "/pydantic/", "/pydantic_core/")


def _to_keys(value: Any) -> Any:
    """Accept a resource, a ``Kind[name]`` key, or a list of them; keep keys."""
    if value is None:
        return ()
    if isinstance(value, (Resource, str)):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        return value  # let pydantic report the type error
    keys = []
    for item in value:
        if isinstance(item, Resource):
            keys.append(item.key)
        elif isinstance(item, str):
            if not KEY_RE.match(item):
                raise ValueError(f"{item!r} is not a resource reference like 'File[/etc/motd]'")
            keys.append(item)
        else:
            raise ValueError(f"{item!r} is neither a resource nor a 'Kind[name]' reference")
    return tuple(keys)


Refs = Annotated[tuple[str, ...], BeforeValidator(_to_keys)]


def _caller_origin() -> str | None:
    """file:line of the first frame outside converge and pydantic (the desired-state file)."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_INTERNAL[0]) and "/pydantic" not in filename:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return None


class Resource(BaseModel):
    """Common fields of every resource kind."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    kind: ClassVar[str] = "Resource"

    requires: Refs = ()
    """Resources (or ``Kind[name]`` keys) that must be converged before this one."""
    notify: Refs = ()
    """Resources refreshed (service restarted, command re-run) when this one changes."""
    provider: str | None = None
    """Force a provider by name instead of choosing one by the host's capabilities."""

    _origin: str | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        self._origin = _caller_origin()

    @property
    def ident(self) -> str:
        """The name inside ``Kind[...]``: the ``name`` field by default (File: its path)."""
        return str(getattr(self, "name"))  # noqa: B009 - subclasses declare the field

    @functools.cached_property
    def key(self) -> str:
        # frozen, so computed once; a cached_property lives in the instance's __dict__, where
        # reading it costs nothing (private attributes go through pydantic's __getattr__)
        return f"{self.kind}[{self.ident}]"

    @property
    def origin(self) -> str | None:
        """Where the resource was declared (``file:line``), when known."""
        return self._origin

    def implied_requires(self) -> Iterable[str]:
        """Keys this resource depends on *if they are declared* (parent dir, owner...)."""
        return ()

    def conflict(self, by_key: Mapping[str, Resource]) -> str | None:
        """Why this resource cannot coexist with the rest of the catalog (``None``: it can).

        Two resources fighting over one thing would change it on every run.
        """
        return None

    def preferred_provider(self) -> str | None:
        """A provider this resource implies when none is named (a supervisor group)."""
        return None

    def requires_kinds(self) -> Iterable[str]:
        """Kinds whose every declared resource this one depends on (packages need repos)."""
        return ()

    def serial_key(self) -> str | None:
        """Resources sharing a serial key are applied one after another, in declaration order.

        Two edits of one file must not be probed together and then applied one over the other.
        """
        return None

    def prepare(self, base_dir: Path) -> None:
        """Control-side work done at load time (render templates, read sources).

        Runs before anything is probed, so that an error here stops the run before any change.
        """

    def __str__(self) -> str:
        return self.key


R = TypeVar("R", bound=Resource)
S = TypeVar("S")


class Provider(Generic[R, S]):
    """Binds a resource kind to the commands or calls that manage it on a host."""

    name: ClassVar[str]
    commands: ClassVar[tuple[str, ...]] = ()
    """Commands that must exist on the host for this provider to be usable."""
    exclusive: ClassVar[bool] = False
    """Apply one resource at a time (e.g. the package manager holds a lock)."""

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        """Why this provider cannot work on ``host`` (``None`` when it can)."""
        missing = [c for c in cls.commands if host.which(c) is None]
        if missing:
            return "missing command " + ", ".join(missing)
        return None

    def probe(self, host: Host, resources: Sequence[R]) -> dict[str, S | None]:
        raise NotImplementedError

    def diff(self, desired: R, actual: S | None) -> list[Change]:
        raise NotImplementedError

    def notes(self, desired: R, actual: S | None) -> list[str]:
        """Warnings for plan and report that are not changes (pure, like ``diff``): e.g.
        "runtime value not managed: SELinux is disabled". Not a failure, never silent."""
        return []

    def apply(self, host: Host, desired: R, actual: S | None, changes: list[Change]) -> list[str]:
        """Make exactly ``changes``; return the paths of backups made (if any)."""
        raise NotImplementedError

    def apply_batch(
        self, host: Host, items: Sequence[tuple[R, S | None, list[Change]]]
    ) -> dict[str, list[str] | BaseException]:
        """Apply several resources; an exclusive provider gets all of a generation's at once
        and may do them in one operation (one ``dnf install a b c``). Per resource: the
        backups made, or the exception that failed it."""
        outcome: dict[str, list[str] | BaseException] = {}
        for desired, actual, changes in items:
            try:
                outcome[desired.key] = self.apply(host, desired, actual, changes)
            except Exception as exc:
                outcome[desired.key] = exc
        return outcome

    def refresh(self, host: Host, desired: R) -> bool | None:
        """React to a notification. Most kinds have nothing to do.

        Return ``False`` when there was nothing to do (a stopped service, a command whose
        guard says its work is done): the report then does not claim a refresh."""
        return False


class BatchProvider(Provider[R, S]):
    """A provider whose real work is :meth:`apply_batch` (one command for many resources);
    ``apply`` of one resource is a batch of one."""

    def apply(self, host: Host, desired: R, actual: S | None, changes: list[Change]) -> list[str]:
        outcome = self.apply_batch(host, [(desired, actual, changes)])[desired.key]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
