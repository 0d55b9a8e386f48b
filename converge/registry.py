"""The explicit registry of resource kinds and their providers.

A kind's module is imported only when a desired-state file uses it (``converge.File`` is
resolved lazily), so a run pays only for the kinds it declares.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from converge.errors import DesiredStateError, NoProviderError

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.host import Host
    from converge.resources.base import Provider, Resource

#: kind name -> module that defines the model and its providers (``PROVIDERS[kind]``)
KINDS: dict[str, str] = {
    "File": "converge.resources.file",
    "FileLine": "converge.resources.fileline",
    "Command": "converge.resources.command",
    "User": "converge.resources.user",
    "Group": "converge.resources.user",
    "Package": "converge.resources.package",
    "YumRepo": "converge.resources.yumrepo",
    "Service": "converge.resources.service",
    "PgRole": "converge.resources.postgres",
    "PgDatabase": "converge.resources.postgres",
    "Firewall": "converge.resources.firewall",
    "SEBool": "converge.resources.selinux",
    "SELinuxMode": "converge.resources.selinux",
    "SEFcontext": "converge.resources.selinux",
    "GitCheckout": "converge.resources.git",
    "Virtualenv": "converge.resources.virtualenv",
}


def providers_for(kind: str) -> list[type[Provider[Any, Any]]]:
    module = importlib.import_module(KINDS[kind])
    providers: dict[str, list[type[Provider[Any, Any]]]] = module.PROVIDERS
    return providers[kind]


def choose_provider(resource: Resource, host: Host, facts: Facts) -> type[Provider[Any, Any]]:
    """The first usable provider (in preference order), or the one the resource names.

    When none fits, the error names every candidate and why it was rejected.
    """
    candidates = providers_for(resource.kind)
    wanted = resource.provider or resource.preferred_provider()
    if wanted is not None:
        named = [p for p in candidates if p.name == wanted]
        if not named:
            names = ", ".join(p.name for p in candidates)
            raise DesiredStateError(
                f"{resource.key}: unknown provider {wanted!r} (known: {names})"
                + (f" (declared at {resource.origin})" if resource.origin else "")
            )
        candidates = named
    reasons = []
    for p in candidates:
        why = p.unusable(host, facts)
        if why is None:
            return p
        reasons.append(f"{p.name}: {why}")
    raise NoProviderError(f"no usable provider ({'; '.join(reasons)})")
