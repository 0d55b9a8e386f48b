"""converge: declarative state reconciliation.

Desired-state files import what they declare from here::

    from converge import File

    def desired(facts, settings):
        yield File(path="/etc/motd", content="hello\\n", mode="0644")

Resource kinds are resolved lazily, so a run imports only the kinds it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from converge.errors import ConvergeError, DesiredStateError
from converge.facts import Facts

if TYPE_CHECKING:
    from pydantic import SecretStr as Secret

    from converge.resources.command import Command
    from converge.resources.file import File
    from converge.resources.fileline import FileLine
    from converge.resources.firewall import Firewall
    from converge.resources.git import GitCheckout
    from converge.resources.package import Package
    from converge.resources.postgres import PgConnection, PgDatabase, PgRole
    from converge.resources.selinux import SEBool, SEFcontext, SELinuxMode
    from converge.resources.service import Service
    from converge.resources.user import Group, User
    from converge.resources.virtualenv import Virtualenv
    from converge.resources.yumrepo import YumRepo

__version__ = "0.1.0"

__all__ = [
    "Command",
    "ConvergeError",
    "DesiredStateError",
    "Facts",
    "File",
    "FileLine",
    "Firewall",
    "GitCheckout",
    "Group",
    "Package",
    "PgConnection",
    "PgDatabase",
    "PgRole",
    "SEBool",
    "SEFcontext",
    "SELinuxMode",
    "Secret",
    "Service",
    "User",
    "Virtualenv",
    "YumRepo",
    "__version__",
]


#: names that are not kinds but live in a kind's module
_HELPERS = {"PgConnection": "converge.resources.postgres"}


def __getattr__(name: str) -> Any:
    from converge.registry import KINDS

    if name == "Secret":  # pydantic's SecretStr, imported only when a desired file asks
        from pydantic import SecretStr

        return SecretStr
    if name in KINDS or name in _HELPERS:
        import importlib

        return getattr(importlib.import_module(KINDS.get(name) or _HELPERS[name]), name)
    raise AttributeError(f"module 'converge' has no attribute {name!r}")
