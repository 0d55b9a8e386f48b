"""YumRepo: one section of a ``.repo`` file under /etc/yum.repos.d.

Only declared keys are managed: other keys of the section, other sections and comments in the
same file are left as they are. The diff is per key (``baseurl: a -> b``). A value continued on
indented lines (several baseurls, one per line) is read as one value; a managed value is
written on one line (dnf and yum also accept URLs separated by spaces or commas).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from converge.errors import ResourceError
from converge.plan import Change
from converge.resources.base import Provider, Resource

if TYPE_CHECKING:
    from converge.host import Host

REPO_DIR = "/etc/yum.repos.d"
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=\s*(.*?)\s*$")


def _flag(v: bool | None) -> str | None:
    return None if v is None else ("1" if v else "0")


class YumRepo(Resource):
    """A yum/dnf repository definition."""

    kind = "YumRepo"

    name: str = Field(description="Repository id: section [NAME] in /etc/yum.repos.d/NAME.repo.")
    ensure: Literal["present", "absent"] = Field(
        default="present",
        description="present: the section exists with the declared keys; absent: the section "
        "is removed (and the file, if nothing else is left in it).")
    file: str | None = Field(
        default=None,
        description="File name in /etc/yum.repos.d (default NAME.repo), or an absolute path.")
    descr: str | None = Field(default=None, description="Human name (the `name=` key).")
    baseurl: str | None = Field(
        default=None, description="URL(s) of the repository (`file://`, `http(s)://`); "
        "several separated by spaces or commas.")
    mirrorlist: str | None = Field(default=None, description="URL of a mirror list.")
    metalink: str | None = Field(default=None, description="URL of a metalink document.")
    enabled: bool | None = Field(default=None, description="`enabled=1` or `enabled=0`.")
    gpgcheck: bool | None = Field(
        default=None, description="Check the packages' GPG signatures (`gpgcheck=1/0`).")
    gpgkey: str | None = Field(
        default=None, description="URL(s) of the signing key(s), e.g. "
        "`file:///etc/pki/rpm-gpg/RPM-GPG-KEY-PGDG`.")
    repo_gpgcheck: bool | None = Field(
        default=None, description="Check the signature of the repository metadata.")
    priority: int | None = Field(
        default=None, ge=1, le=99,
        description="1 (highest) to 99 (the default): which repository wins for a package "
        "several offer.")
    exclude: str | None = Field(
        default=None, description="Packages never taken from this repository (globs, "
        "space-separated), e.g. `postgresql*`.")
    options: dict[str, str] = Field(default_factory=dict,
                                    description="Any other keys, as written in the file "
                                    "(`module_hotfixes`, `metadata_expire`, `sslverify`...).")

    @field_validator("name")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.:-]+$", v):
            raise ValueError(f"{v!r} is not a valid repository id")
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/") and ("/" in v or not v.endswith(".repo")):
            # dnf and yum read only *.repo files directly in the directory
            raise ValueError(f"{v!r}: a file in /etc/yum.repos.d is a NAME.repo (or give an "
                             "absolute path)")
        return v

    @model_validator(mode="after")
    def _source(self) -> YumRepo:
        if self.ensure == "present" and not (self.baseurl or self.mirrorlist or self.metalink):
            raise ValueError("a repository needs baseurl, mirrorlist or metalink")
        for k in self.options:
            if not _KEY.match(f"{k}=x") or k in self.keys_from_fields():
                raise ValueError(f"option {k!r} is invalid or duplicates a field")
        for k, v in self.settings().items():
            if "\n" in v or "\r" in v or v != v.strip():
                raise ValueError(f"{k}: a value is one line without surrounding blanks "
                                 "(separate several URLs with spaces or commas)")
        return self

    @staticmethod
    def keys_from_fields() -> set[str]:
        return {"name", "baseurl", "mirrorlist", "metalink", "enabled", "gpgcheck", "gpgkey",
                "repo_gpgcheck", "priority", "exclude"}

    @property
    def path(self) -> str:
        if self.file and self.file.startswith("/"):
            return self.file
        return f"{REPO_DIR}/{self.file or self.name + '.repo'}"

    def settings(self) -> dict[str, str]:
        """The keys this resource manages, as they are written in the file."""
        values: dict[str, str | None] = {
            "name": self.descr, "baseurl": self.baseurl, "mirrorlist": self.mirrorlist,
            "metalink": self.metalink, "enabled": _flag(self.enabled),
            "gpgcheck": _flag(self.gpgcheck), "gpgkey": self.gpgkey,
            "repo_gpgcheck": _flag(self.repo_gpgcheck),
            "priority": None if self.priority is None else str(self.priority),
            "exclude": self.exclude,
        }
        out = {k: v for k, v in values.items() if v is not None}
        out.update(self.options)
        return out


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith(("#", ";"))


def _is_continuation(line: str) -> bool:
    """An indented, non-blank, non-comment line continues the previous key's value."""
    return line[:1] in (" ", "\t") and bool(line.strip()) and not _is_comment(line)


def parse_section(text: str, section: str) -> dict[str, str] | None:
    """The keys of ``[section]`` (``None`` if there is no such section); a value continued on
    indented lines has its lines joined by newlines."""
    current = None
    found: dict[str, str] | None = None
    last: str | None = None
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            current = m.group(1).strip()
            if current == section:
                found = {}
            last = None
            continue
        if current != section or found is None:
            continue
        if last is not None and _is_continuation(line):
            found[last] += "\n" + line.strip()
            continue
        k = _KEY.match(line)
        if k and not _is_comment(line) and not line[:1].isspace():
            found[k.group(1)] = k.group(2)
            last = k.group(1)
        else:
            last = None  # a comment or a blank line ends a continued value
    return found


def edit_section(text: str, section: str, values: dict[str, str] | None) -> str:
    """Set ``values`` in ``[section]`` (``None``: remove the section), keeping all else."""
    lines = text.splitlines()
    out: list[str] = []
    current = None
    seen: set[str] = set()
    in_target = False
    found = False

    def flush() -> None:
        if in_target and values is not None:
            missing = [f"{k}={v}" for k, v in values.items() if k not in seen]
            # keep blank lines that separated the section from the next one at the end
            trailing = []
            while out and not out[-1].strip():
                trailing.append(out.pop())
            out.extend(missing)
            out.extend(trailing)

    replacing = False  # inside the continuation lines of a value just rewritten
    for line in lines:
        m = _SECTION.match(line)
        if m:
            flush()
            current = m.group(1).strip()
            in_target = current == section
            found = found or in_target
            replacing = False
            if in_target and values is None:
                continue
            out.append(line)
            continue
        if in_target:
            if values is None:
                continue
            if replacing and _is_continuation(line):
                continue  # the old value's continuation: replaced with the key
            replacing = False
            k = _KEY.match(line)
            if k and not _is_comment(line) and not line[:1].isspace() and k.group(1) in values:
                key = k.group(1)
                replacing = True
                if key in seen:
                    continue  # a duplicate key: the managed value is written once
                seen.add(key)
                out.append(f"{key}={values[key]}")
                continue
        out.append(line)
    flush()
    if not found and values is not None:
        if out and out[-1].strip():
            out.append("")
        out.append(f"[{section}]")
        out.extend(f"{k}={v}" for k, v in values.items())
    return "\n".join(out) + "\n" if out else ""


class RepoFileProvider(Provider[YumRepo, bytes]):
    """Edits the .repo file in place (atomic write, backup of the previous content)."""

    name = "repofile"

    def probe(self, host: Host, resources: Sequence[YumRepo]) -> dict[str, bytes | None]:
        return {r.key: host.read_bytes(r.path) for r in resources}

    def diff(self, desired: YumRepo, actual: bytes | None) -> list[Change]:
        text = actual.decode("utf-8", "replace") if actual is not None else ""
        current = parse_section(text, desired.name)
        if desired.ensure == "absent":
            if current is None:
                return []
            return [Change(attribute="ensure", before="present", after="absent")]
        changes: list[Change] = []
        if current is None:
            changes.append(Change(attribute="ensure", before="absent", after="present"))
            current = {}
        for key, value in desired.settings().items():
            if current.get(key) != value:
                changes.append(Change(attribute=key, before=current.get(key), after=value))
        return changes

    def apply(self, host: Host, desired: YumRepo, actual: bytes | None,
              changes: list[Change]) -> list[str]:
        text = actual.decode("utf-8", "replace") if actual is not None else ""
        values = None if desired.ensure == "absent" else desired.settings()
        new = edit_section(text, desired.name, values)
        backups = []
        if actual is not None:
            saved = host.backup(desired.path)
            if saved:
                backups.append(saved)
        if not new.strip() and actual is not None:
            host.remove(desired.path)
        else:
            if actual is None and desired.path.startswith(REPO_DIR + "/") and \
                    host.file_states([REPO_DIR])[REPO_DIR] is None:
                # Debian's dnf and yum packages do not create it; RHEL's always have it.
                # Several repositories are applied concurrently: another may have just made it.
                try:
                    host.make_directory(REPO_DIR, uid=0, gid=0, mode=0o755)
                except ResourceError:
                    if host.file_states([REPO_DIR])[REPO_DIR] is None:
                        raise
            host.write_atomic(desired.path, new.encode(), uid=0 if actual is None else None,
                              gid=0 if actual is None else None, mode=0o644 if actual is None
                              else None)
        return backups


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"YumRepo": [RepoFileProvider]}
