"""FileLine: one line of a file that converge does not own as a whole (pg_hba.conf, sshd_config).

``ensure="present"``: when ``match`` (a regular expression) matches lines, they are replaced by
``line``; otherwise ``line`` is appended unless it is already there. ``ensure="absent"``
removes the lines equal to ``line`` (or matching ``match``). The rest of the file, its owner
and its mode are left as they are; the replaced content is backed up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from converge.errors import ResourceError
from converge.plan import Change
from converge.resources.base import Provider, Resource
from converge.resources.file import AbsolutePath, content_diff

if TYPE_CHECKING:
    from converge.host import Host


class FileLine(Resource):
    """Ensure a line is present in (or absent from) a file."""

    kind = "FileLine"

    path: AbsolutePath = Field(description="The file to edit; it must exist.")
    line: str = Field(description="The whole line, without its newline.")
    match: str | None = Field(
        default=None, description="Regular expression; matching lines are replaced by `line`."
    )
    ensure: Literal["present", "absent"] = Field(
        default="present", description="present: the line is there (replacing what `match` "
        "finds); absent: no line equals `line` or matches `match`.")
    multiple: bool = Field(
        default=False, description="Replace every matching line (otherwise more than one "
        "match is an error)."
    )
    name: str | None = Field(default=None, description="Name of the resource (default: path "
                             "and match or line).")
    backup: bool = Field(default=True, description="Back up the file before editing it.")

    @field_validator("line")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if "\n" in v:
            raise ValueError("line must not contain a newline")
        return v

    @field_validator("match")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"match is not a valid regular expression: {exc}") from None
        return v

    @property
    def ident(self) -> str:
        return self.name or f"{self.path}:{self.match or self.line}"

    def implied_requires(self) -> Iterable[str]:
        yield f"File[{self.path}]"

    def conflict(self, by_key: Mapping[str, Resource]) -> str | None:
        owner = by_key.get(f"File[{self.path}]")
        if owner is not None and getattr(owner, "manages_content", False):
            return (f"{self.key} edits {self.path}, whose whole content File[{self.path}] "
                    "manages: they would undo each other on every run")
        return None

    def serial_key(self) -> str | None:
        return f"file:{self.path}"

    def edit(self, text: str) -> str:
        """The file's new text (pure: the diff and the apply compute it the same way).

        Lines are split on the file's own newline (``\r\n`` files stay ``\r\n``). When
        ``line`` is already present, other lines matching ``match`` contradict it and are
        removed rather than duplicated.
        """
        newline = "\r\n" if "\r\n" in text else "\n"
        body = text[: -len(newline)] if text.endswith(newline) else text
        lines = body.split(newline) if body else []
        pattern = re.compile(self.match) if self.match else None

        def matches(candidate: str) -> bool:
            if pattern is not None:
                return bool(pattern.search(candidate))
            return candidate == self.line

        if self.ensure == "absent":
            new = [ln for ln in lines if not (ln == self.line or matches(ln))]
        else:
            hits = [i for i, ln in enumerate(lines) if matches(ln) and ln != self.line]
            if self.line in lines:
                drop = set(hits)
                new = [ln for i, ln in enumerate(lines) if i not in drop]
            elif hits:
                if len(hits) > 1 and not self.multiple:
                    raise ResourceError(
                        f"{self.key}: match {self.match!r} matches {len(hits)} lines of "
                        f"{self.path}; set multiple=True to replace them all"
                    )
                new = list(lines)
                for i in hits:
                    new[i] = self.line
            else:
                new = [*lines, self.line]
        if new == lines:
            return text
        return newline.join(new) + newline if new else ""


class LineProvider(Provider[FileLine, bytes]):
    """Reads and rewrites the file through the host's atomic write."""

    name = "posix"

    def probe(self, host: Host, resources: Sequence[FileLine]) -> dict[str, bytes | None]:
        return {r.key: host.read_bytes(r.path) for r in resources}

    def diff(self, desired: FileLine, actual: bytes | None) -> list[Change]:
        if actual is None:
            if desired.ensure == "absent":
                return []
            raise ResourceError(f"{desired.path} does not exist (FileLine edits existing files; "
                                "declare a File to create it)")
        text = actual.decode("utf-8", "surrogateescape")
        new = desired.edit(text)
        if new == text:
            return []
        old_lines = set(text.splitlines())
        kept = set(new.splitlines())
        removed = [ln for ln in text.splitlines() if ln not in kept]
        return [Change(
            attribute="line",
            before="\n".join(removed) if removed else None,
            after=desired.line if desired.ensure == "present" and desired.line not in old_lines
            else None,
            diff=content_diff(desired.path, actual, new.encode("utf-8", "surrogateescape")),
        )]

    def apply(
        self, host: Host, desired: FileLine, actual: bytes | None, changes: list[Change]
    ) -> list[str]:
        assert actual is not None
        new = desired.edit(actual.decode("utf-8", "surrogateescape"))
        backups = []
        if desired.backup:
            saved = host.backup(desired.path)
            if saved:
                backups.append(saved)
        host.write_atomic(desired.path, new.encode("utf-8", "surrogateescape"),
                          uid=None, gid=None, mode=None)
        return backups


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"FileLine": [LineProvider]}
