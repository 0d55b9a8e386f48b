"""User and Group: local accounts through the shadow-utils commands.

One ``getent passwd`` and one ``getent group`` (plus ``getent shadow`` when a password hash is
managed) per probe, however many accounts are declared. Removing a user never removes its home
unless ``remove_home`` is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from converge.errors import ResourceError
from converge.plan import SENSITIVE, Change
from converge.resources.base import Provider, Resource
from converge.resources.file import AbsolutePath

if TYPE_CHECKING:
    from converge.host import Host

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _account_name(v: str) -> str:
    if not v or len(v) > 32 or v[0] == "-" or not set(v) <= _NAME_CHARS or v.isdigit():
        raise ValueError(f"{v!r} is not a valid account name")
    return v


class Group(Resource):
    """A local group."""

    kind = "Group"

    name: str = Field(description="Group name.")
    gid: int | None = Field(default=None, ge=0, description="Numeric id.")
    system: bool = Field(default=False, description="Create as a system group (groupadd -r).")
    ensure: Literal["present", "absent"] = Field(
        default="present", description="present or absent (groupdel).")

    _check = field_validator("name")(classmethod(lambda cls, v: _account_name(v)))


class User(Resource):
    """A local user account."""

    kind = "User"

    name: str = Field(description="Login name.")
    ensure: Literal["present", "absent"] = Field(
        default="present", description="present or absent (userdel; the home directory is "
        "kept unless remove_home).")
    uid: int | None = Field(default=None, ge=0, description="Numeric id.")
    group: str | None = Field(default=None, description="Primary group (name).")
    groups: list[str] | None = Field(default=None, description="Supplementary groups.")
    membership: Literal["minimum", "exact"] = Field(
        default="minimum",
        description="minimum: add missing groups and keep others (usermod -a -G); "
        "exact: the user is in exactly `groups`.",
    )
    home: AbsolutePath | None = Field(default=None, description="Home directory.")
    manage_home: bool = Field(
        default=False, description="Create the home directory when creating the user.")
    shell: str | None = Field(default=None, description="Login shell.")
    system: bool = Field(default=False, description="Create as a system account (useradd -r).")
    comment: str | None = Field(default=None, description="GECOS field.")
    password_hash: SecretStr | None = Field(
        default=None, description="crypt(3) hash for /etc/shadow (sensitive).")
    remove_home: bool = Field(
        default=False, description="With ensure='absent', also remove the home directory.")

    _check = field_validator("name")(classmethod(lambda cls, v: _account_name(v)))

    @model_validator(mode="after")
    def _consistent(self) -> User:
        for g in [self.group or "x", *(self.groups or [])]:
            _account_name(g)
        if self.ensure == "absent" and any(
            getattr(self, f) is not None for f in ("uid", "group", "groups", "home", "shell")
        ):
            raise ValueError("uid, group, groups, home and shell make no sense with "
                             "ensure='absent'")
        return self

    def implied_requires(self) -> Iterable[str]:
        for g in [self.group, *(self.groups or [])]:
            if g:
                yield f"Group[{g}]"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    group: str
    groups: tuple[str, ...]
    home: str
    shell: str
    comment: str
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _getent(host: Host, database: str) -> list[list[str]]:
    result = host.run(["getent", database], check=False)
    if result.returncode not in (0, 2):  # 2: the database is empty
        raise ResourceError(f"getent {database} failed: {result.stderr.strip()}")
    return [line.split(":") for line in result.stdout.splitlines() if line]


def read_groups(host: Host) -> dict[str, GroupEntry]:
    entries = {}
    for f in _getent(host, "group"):
        if len(f) >= 4 and f[2].isdigit():
            entries[f[0]] = GroupEntry(f[0], int(f[2]), tuple(m for m in f[3].split(",") if m))
    return entries


class UseraddProvider(Provider[User, Account]):
    """useradd / usermod / userdel, chpasswd -e for the hash (on stdin, never in argv)."""

    name = "useradd"
    commands = ("getent", "useradd", "usermod", "userdel")

    def probe(self, host: Host, resources: Sequence[User]) -> dict[str, Account | None]:
        groups = read_groups(host)
        by_gid = {g.gid: g.name for g in groups.values()}
        member_of: dict[str, list[str]] = {}
        for g in groups.values():
            for m in g.members:
                member_of.setdefault(m, []).append(g.name)
        shadow: dict[str, str] = {}
        if any(r.password_hash is not None for r in resources):
            shadow = {f[0]: f[1] for f in _getent(host, "shadow") if len(f) > 1}
        passwd = {f[0]: f for f in _getent(host, "passwd") if len(f) >= 7}
        result: dict[str, Account | None] = {}
        for r in resources:
            f = passwd.get(r.name)
            if f is None:
                result[r.key] = None
                continue
            gid = int(f[3])
            result[r.key] = Account(
                name=f[0], uid=int(f[2]), gid=gid, group=by_gid.get(gid, str(gid)),
                groups=tuple(sorted(member_of.get(r.name, []))), home=f[5], shell=f[6],
                comment=f[4], password_hash=shadow.get(r.name),
            )
        return result

    def diff(self, desired: User, actual: Account | None) -> list[Change]:
        if desired.ensure == "absent":
            return [Change(attribute="ensure", before="present", after="absent")] if actual \
                else []
        changes: list[Change] = []
        if actual is None:
            changes.append(Change(attribute="ensure", before="absent", after="present"))

        def check(attr: str, want: Any, have: Any) -> None:
            if want is not None and want != have:
                changes.append(Change(attribute=attr, before=have, after=want))

        check("uid", desired.uid, actual.uid if actual else None)
        check("group", desired.group, actual.group if actual else None)
        if desired.groups is not None:
            have = list(actual.groups) if actual else []
            want = sorted(set(desired.groups)) if desired.membership == "exact" else sorted(
                set(desired.groups) | set(have))
            if want != sorted(have):
                changes.append(Change(attribute="groups", before=sorted(have), after=want))
        check("home", desired.home, actual.home if actual else None)
        check("shell", desired.shell, actual.shell if actual else None)
        check("comment", desired.comment, actual.comment if actual else None)
        if desired.password_hash is not None and (
            actual is None or actual.password_hash != desired.password_hash.get_secret_value()
        ):
            changes.append(Change(attribute="password_hash", before=SENSITIVE if actual else None,
                                  after=SENSITIVE, sensitive=True))
        return changes

    def apply(self, host: Host, desired: User, actual: Account | None,
              changes: list[Change]) -> list[str]:
        by = {c.attribute: c for c in changes}
        if desired.ensure == "absent":
            host.run(["userdel", *(["-r"] if desired.remove_home else []), desired.name])
            return []
        if actual is None:
            argv = ["useradd"]
            if desired.uid is not None:
                argv += ["-u", str(desired.uid)]
            if desired.group:
                argv += ["-g", desired.group]
            elif host.which("useradd") and _has_group(host, desired.name):
                argv += ["-g", desired.name]  # a group of the same name exists: use it
            if desired.groups:
                argv += ["-G", ",".join(sorted(set(desired.groups)))]
            if desired.home:
                argv += ["-d", desired.home]
            argv += ["-m"] if desired.manage_home else ["-M"]
            if desired.shell:
                argv += ["-s", desired.shell]
            if desired.system:
                argv += ["-r"]
            if desired.comment is not None:
                argv += ["-c", desired.comment]
            host.run([*argv, desired.name])
        else:
            argv = ["usermod"]
            if "uid" in by:
                argv += ["-u", str(desired.uid)]
            if "group" in by:
                argv += ["-g", str(desired.group)]
            if "groups" in by:
                after = by["groups"].after
                if desired.membership == "exact":
                    argv += ["-G", ",".join(after)]
                else:
                    missing = sorted(set(after) - set(by["groups"].before or []))
                    argv += ["-a", "-G", ",".join(missing)]
            if "home" in by:
                argv += ["-d", str(desired.home)]
            if "shell" in by:
                argv += ["-s", str(desired.shell)]
            if "comment" in by:
                argv += ["-c", str(desired.comment)]
            if len(argv) > 1:
                host.run([*argv, desired.name])
        if "password_hash" in by and desired.password_hash is not None:
            host.run(["chpasswd", "-e"],
                     input=f"{desired.name}:{desired.password_hash.get_secret_value()}\n")
        return []


def _has_group(host: Host, name: str) -> bool:
    return host.run(["getent", "group", name], check=False).ok


class GroupaddProvider(Provider[Group, GroupEntry]):
    """groupadd / groupmod / groupdel."""

    name = "groupadd"
    commands = ("getent", "groupadd", "groupmod", "groupdel")

    def probe(self, host: Host, resources: Sequence[Group]) -> dict[str, GroupEntry | None]:
        groups = read_groups(host)
        return {r.key: groups.get(r.name) for r in resources}

    def diff(self, desired: Group, actual: GroupEntry | None) -> list[Change]:
        if desired.ensure == "absent":
            return [Change(attribute="ensure", before="present", after="absent")] if actual \
                else []
        if actual is None:
            changes = [Change(attribute="ensure", before="absent", after="present")]
            if desired.gid is not None:
                changes.append(Change(attribute="gid", after=desired.gid))
            return changes
        if desired.gid is not None and desired.gid != actual.gid:
            return [Change(attribute="gid", before=actual.gid, after=desired.gid)]
        return []

    def apply(self, host: Host, desired: Group, actual: GroupEntry | None,
              changes: list[Change]) -> list[str]:
        if desired.ensure == "absent":
            host.run(["groupdel", desired.name])
        elif actual is None:
            argv = ["groupadd"]
            if desired.gid is not None:
                argv += ["-g", str(desired.gid)]
            if desired.system:
                argv.append("-r")
            host.run([*argv, desired.name])
        else:
            host.run(["groupmod", "-g", str(desired.gid), desired.name])
        return []


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "User": [UseraddProvider],
    "Group": [GroupaddProvider],
}
