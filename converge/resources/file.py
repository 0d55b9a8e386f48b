"""File: regular files, directories and symbolic links.

The diff checks aspects in a fixed order, each skipped when its field is unset (an unset
field is not managed): ensure (what kind of thing is at the path), content, link target,
owner, group, mode.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)

from converge.errors import DesiredStateError, ResourceError
from converge.plan import SENSITIVE, Change
from converge.resources.base import Provider, Resource

if TYPE_CHECKING:
    from converge.host import FileState, Host


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute, got {path!r}")
    if ".." in path.split("/"):
        raise ValueError(f"path must not contain '..': {path!r}")
    normal = os.path.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


def _mode_type(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f"mode must be a string of octal digits like '0644', not the number {value} "
            "(a number is ambiguous: 644 and 0o644 are different modes)"
        )
    return value


def _mode(value: str) -> str:
    if not isinstance(value, str) or not value.isdigit() or not 3 <= len(value) <= 4:
        raise ValueError(
            f"mode must be 3 or 4 octal digits as a string, like '0644'; got {value!r}"
        )
    if any(c not in "01234567" for c in value):
        raise ValueError(f"mode {value!r} is not octal (digits 0-7 only)")
    return value.rjust(4, "0")


AbsolutePath = Annotated[str, AfterValidator(_absolute)]
Mode = Annotated[str, BeforeValidator(_mode_type), AfterValidator(_mode)]

Ensure = Literal["file", "directory", "link", "absent", "present"]


class File(Resource):
    """A file, directory or symbolic link at an absolute ``path``."""

    kind = "File"

    path: AbsolutePath = Field(description="Absolute path; the resource's name.")
    ensure: Ensure | None = Field(
        default=None,
        description="file, directory, link, absent, or present (exists, any type). "
        "Default: link when target is set, file when content/template/source is, else present.",
    )
    content: str | SecretStr | None = Field(default=None, description="Exact file content.")
    template: str | None = Field(
        default=None,
        description="Jinja2 template path (relative paths are relative to the desired file); "
        "undefined variables are errors.",
    )
    vars: dict[str, Any] | None = Field(default=None, description="Variables for the template.")
    source: str | None = Field(
        default=None,
        description="Copy content from this local file (relative to the desired file).",
    )
    target: str | None = Field(default=None, description="Where a link points.")
    owner: str | None = Field(default=None, description="User name or numeric uid.")
    group: str | None = Field(default=None, description="Group name or numeric gid.")
    mode: Mode | None = Field(default=None, description="Permission bits as octal, e.g. '0644'.")
    sensitive: bool = Field(
        default=False,
        description="Never show the content, not even in diffs (implied by SecretStr content "
        "or secret template variables).",
    )
    force: bool = Field(
        default=False,
        description="Allow replacing a directory by a file or link, and removing a non-empty "
        "directory (its content is backed up first).",
    )
    backup: bool = Field(default=True, description="Back up replaced or removed content.")

    _data: bytes | None = PrivateAttr(default=None)
    _secret: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _consistent(self) -> File:
        given = [n for n in ("content", "template", "source") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of content, template, source (got {', '.join(given)})")
        ensure = self.effective_ensure
        if given and ensure not in ("file", "present"):
            raise ValueError(f"{given[0]} is only valid for a file, not ensure={ensure!r}")
        if ensure == "link" and not self.target:
            raise ValueError("ensure='link' needs a target")
        if self.target is not None and ensure != "link":
            raise ValueError(f"target is only valid with ensure='link', not {ensure!r}")
        if self.vars is not None and self.template is None:
            raise ValueError("vars is only used with template")
        if ensure == "absent" and (self.owner or self.group or self.mode):
            raise ValueError("owner, group and mode make no sense with ensure='absent'")
        if ensure == "link" and self.mode is not None:
            raise ValueError("a link has no mode of its own (set the mode on its target)")
        return self

    @property
    def ident(self) -> str:
        return self.path

    @property
    def effective_ensure(self) -> Ensure:
        if self.ensure is not None:
            return self.ensure
        if self.target is not None:
            return "link"
        if self.content is not None or self.template is not None or self.source is not None:
            return "file"
        return "present"

    @property
    def manages_content(self) -> bool:
        return self.content is not None or self.template is not None or self.source is not None

    @property
    def is_sensitive(self) -> bool:
        return self.sensitive or self._secret or isinstance(self.content, SecretStr)

    def implied_requires(self) -> Iterable[str]:
        parent = os.path.dirname(self.path)
        if parent != self.path:
            yield f"File[{parent}]"
        if self.owner and not self.owner.isdigit():
            yield f"User[{self.owner}]"
        if self.group and not self.group.isdigit():
            yield f"Group[{self.group}]"

    def prepare(self, base_dir: Path) -> None:
        if self.template is not None:
            from converge.templates import render

            text, secret = render(base_dir, self.template, self.vars or {}, self.key)
            self._data = text.encode()
            self._secret = secret
        elif self.source is not None:
            src = Path(self.source) if self.source.startswith("/") else base_dir / self.source
            try:
                self._data = src.read_bytes()
            except OSError as exc:
                raise DesiredStateError(
                    f"{self.key}: cannot read source {src}: {exc.strerror}"
                ) from exc

    def desired_bytes(self) -> bytes | None:
        """The content to write (``None`` when content is not managed)."""
        if isinstance(self.content, SecretStr):
            return self.content.get_secret_value().encode()
        if self.content is not None:
            return self.content.encode()
        return self._data


@dataclass(frozen=True, slots=True)
class FileActual:
    type: str
    mode: str
    owner: str
    uid: int
    group: str
    gid: int
    content: bytes | None
    target: str | None


def describe(data: bytes) -> str:
    """A short, printable stand-in for file content."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None and len(text) <= 60 and text.count("\n") <= 1:
        return text
    return f"sha256:{hashlib.sha256(data).hexdigest()[:12]} ({len(data)} bytes)"


MAX_DIFF_LINES = 400


def content_diff(path: str, before: bytes | None, after: bytes) -> str:
    """Unified diff of two contents (binary content is only said to differ)."""
    try:
        old = (before or b"").decode().splitlines(keepends=True)
        new = after.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return "Binary content differs\n"
    lines = list(difflib.unified_diff(
        old, new, fromfile=path if before is not None else "/dev/null",
        tofile=f"{path} (desired)",
    ))
    if len(lines) > MAX_DIFF_LINES:
        more = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"... {more} more diff lines not shown\n"]
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def _id_matches(desired: str, name: str, number: int) -> bool:
    return int(desired) == number if desired.isdigit() else desired == name


class LocalFileProvider(Provider[File, FileActual]):
    """Files through the host's file operations: no process is spawned to probe or write."""

    name = "posix"

    def probe(self, host: Host, resources: Sequence[File]) -> dict[str, FileActual | None]:
        content_for = frozenset(
            r.path for r in resources if r.manages_content and r.effective_ensure != "absent"
        )
        states = host.file_states([r.path for r in resources], content_for=content_for)
        users: dict[int, str] = {}
        groups: dict[int, str] = {}
        result: dict[str, FileActual | None] = {}
        for r in resources:
            st: FileState | None = states[r.path]
            if st is None:
                result[r.key] = None
                continue
            if st.uid not in users:
                users[st.uid] = host.user_name(st.uid)
            if st.gid not in groups:
                groups[st.gid] = host.group_name(st.gid)
            result[r.key] = FileActual(st.type, f"{st.mode:04o}", users[st.uid], st.uid,
                                       groups[st.gid], st.gid, st.content, st.target)
        return result

    def diff(self, desired: File, actual: FileActual | None) -> list[Change]:
        ensure = desired.effective_ensure
        before_type = actual.type if actual is not None else "absent"
        changes: list[Change] = []
        if ensure == "absent":
            if actual is not None:
                # A non-empty directory without force is refused at apply time, not here:
                # what a directory holds is not probed.
                changes.append(Change(attribute="ensure", before=before_type, after="absent"))
            return changes
        want_type = "file" if ensure == "present" else ensure
        if actual is None:
            changes.append(Change(attribute="ensure", before="absent", after=want_type))
        elif ensure == "present" and actual.type == "directory" and desired.manages_content:
            raise ResourceError(f"{desired.path} is a directory; content can only be managed "
                                "for a file")
        elif ensure != "present" and actual.type != ensure:
            if actual.type == "directory" and not desired.force:
                raise ResourceError(
                    f"{desired.path} is a directory; refusing to replace it with a {ensure} "
                    "(set force=True to replace it; its content is backed up)"
                )
            if actual.type == "other":
                raise ResourceError(f"{desired.path} is a special file; refusing to replace it")
            changes.append(Change(attribute="ensure", before=actual.type, after=ensure))
        replacing = actual is None or (ensure != "present" and actual.type != ensure)
        current = None if replacing or actual is None else actual

        data = desired.desired_bytes()
        if data is not None:
            old = current.content if current is not None else None
            if old != data:
                if desired.is_sensitive:
                    changes.append(Change(attribute="content", before=SENSITIVE if old is not None
                                          else None, after=SENSITIVE, sensitive=True))
                else:
                    changes.append(Change(
                        attribute="content",
                        before=describe(old) if old is not None else None,
                        after=describe(data),
                        diff=content_diff(desired.path, old, data),
                    ))
        if ensure == "link" and desired.target is not None:
            old_target = current.target if current is not None else None
            if old_target != desired.target:
                changes.append(Change(attribute="target", before=old_target, after=desired.target))
        if desired.owner is not None and (
            current is None or not _id_matches(desired.owner, current.owner, current.uid)
        ):
            changes.append(Change(attribute="owner", before=current.owner if current else None,
                                  after=desired.owner))
        if desired.group is not None and (
            current is None or not _id_matches(desired.group, current.group, current.gid)
        ):
            changes.append(Change(attribute="group", before=current.group if current else None,
                                  after=desired.group))
        if desired.mode is not None and ensure != "link" and (
            current is None or current.mode != desired.mode
        ):
            changes.append(Change(attribute="mode", before=current.mode if current else None,
                                  after=desired.mode))
        return changes

    def apply(
        self, host: Host, desired: File, actual: FileActual | None, changes: list[Change]
    ) -> list[str]:
        backups: list[str] = []
        by_attr = {c.attribute: c for c in changes}
        path = desired.path

        def keep() -> None:
            if desired.backup:
                saved = host.backup(path)
                if saved:
                    backups.append(saved)

        ensure = by_attr.get("ensure")
        uid = resolve_id(host.user_id, desired.owner, "user")
        gid = resolve_id(host.group_id, desired.group, "group")
        mode = int(desired.mode, 8) if desired.mode is not None else None

        if ensure is not None and ensure.after == "absent":
            assert actual is not None
            if actual.type == "directory" and not desired.force:
                try:
                    host.remove(path)  # rmdir: only an empty directory goes
                except ResourceError as exc:
                    raise ResourceError(
                        f"{exc}; refusing to remove it "
                        "(set force=True to remove it; its content is backed up first)"
                    ) from None
                return backups
            keep()
            host.remove(path, recursive=True)
            return backups

        if ensure is not None and actual is not None:
            # Replacing one type with another: what was there is kept, then removed.
            keep()
            host.remove(path, recursive=desired.force)
            actual = None

        if ensure is not None:
            want = ensure.after
            if want == "file":
                if mode is None:
                    # a new file holding a secret is never world-readable by default
                    mode = 0o600 if desired.is_sensitive else 0o644
                host.write_atomic(path, desired.desired_bytes() or b"", uid=uid, gid=gid,
                                  mode=mode)
                return backups
            if want == "directory":
                host.make_directory(path, uid=uid, gid=gid, mode=mode if mode is not None
                                    else 0o755)
                return backups
            if want == "link":
                assert desired.target is not None
                host.make_symlink(path, desired.target)
                if uid is not None or gid is not None:
                    host.set_owner(path, uid, gid)
                return backups

        if "content" in by_attr:
            keep()
            host.write_atomic(path, desired.desired_bytes() or b"", uid=uid, gid=gid, mode=mode)
            return backups
        if "target" in by_attr:
            assert desired.target is not None
            host.make_symlink(path, desired.target)
        if "owner" in by_attr or "group" in by_attr:
            host.set_owner(path, uid if "owner" in by_attr else None,
                           gid if "group" in by_attr else None)
        if "mode" in by_attr and mode is not None:
            host.set_mode(path, mode)
        return backups


def resolve_id(lookup: Any, name: str | None, what: str) -> int | None:
    """A user or group name (or number) as its id; a name that does not exist is an error."""
    if name is None:
        return None
    number: int | None = lookup(name)
    if number is None:
        raise ResourceError(f"{what} {name!r} does not exist")
    return number


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"File": [LocalFileProvider]}
