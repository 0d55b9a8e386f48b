"""Command: a guarded command (Puppet's exec), for steps that have no better resource.

It runs only when its guards say the work is not done yet: ``creates`` (a path that exists once
it ran), ``unless`` (an argv whose success means done) or ``onlyif`` (an argv whose failure
means done), or, with ``refreshonly``, only when a resource notifying it changed. Guards run
during ``plan`` too, so they must be read-only. A command without any guard would run on every
apply and never converge, so it is refused.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator, model_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import Provider, Resource
from converge.resources.file import AbsolutePath

if TYPE_CHECKING:
    from converge.host import Host, Result


class Command(Resource):
    """Run ``argv`` when its guards say it is needed."""

    kind = "Command"

    name: str = Field(description="The resource's name, e.g. 'migrate'.")
    argv: list[str] = Field(description="The command as an argv list (no shell).")
    cwd: str | None = Field(default=None, description="Working directory.")
    user: str | None = Field(default=None, description="Run as this user (with runuser).")
    env: dict[str, str | SecretStr] = Field(
        default_factory=dict,
        description="Extra environment; SecretStr values are passed but never shown.",
    )
    creates: AbsolutePath | None = Field(
        default=None, description="Skip when this path exists.")
    unless: list[str] | None = Field(
        default=None, description="Skip when this argv exits 0 (read-only!).")
    onlyif: list[str] | None = Field(
        default=None, description="Run only when this argv exits 0 (read-only!).")
    refreshonly: bool = Field(
        default=False, description="Run only when notified by a changed resource.")
    timeout: float = Field(default=600.0, gt=0, description="Seconds before it is killed.")

    @field_validator("argv", "unless", "onlyif")
    @classmethod
    def _non_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0]):
            raise ValueError("an argv needs at least the program")
        return v

    @model_validator(mode="after")
    def _guarded(self) -> Command:
        if not (self.creates or self.unless or self.onlyif or self.refreshonly):
            raise ValueError(
                "a Command needs a guard (creates, unless or onlyif) or refreshonly=True; "
                "otherwise it would run on every apply and never converge"
            )
        return self

    def implied_requires(self) -> Iterable[str]:
        if self.user:
            yield f"User[{self.user}]"
        if self.cwd:
            yield f"File[{self.cwd}]"

    def secrets(self) -> list[str]:
        return [v.get_secret_value() for v in self.env.values()
                if isinstance(v, SecretStr) and v.get_secret_value()]

    def environment(self) -> dict[str, str]:
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v
                for k, v in self.env.items()}

    def wrap(self, argv: Sequence[str]) -> list[str]:
        if self.user:
            return ["runuser", "-u", self.user, "--", *argv]
        return list(argv)


@dataclass(frozen=True, slots=True)
class Guards:
    """What the guards said: ``None`` when a guard is not set."""

    creates_exists: bool | None
    unless_ok: bool | None
    onlyif_ok: bool | None
    error: str | None = None  # a guard that could not be run at all

    def reason_to_run(self, desired: Command) -> str | None:
        """Why the command must run, or ``None`` when its work is done."""
        if self.creates_exists:
            return None
        if self.unless_ok:
            return None
        if self.onlyif_ok is False:
            return None
        reasons = []
        if self.creates_exists is False:
            reasons.append(f"{desired.creates} does not exist")
        if self.unless_ok is False:
            reasons.append(f"`{shlex.join(desired.unless or [])}` failed")
        if self.onlyif_ok:
            reasons.append(f"`{shlex.join(desired.onlyif or [])}` succeeded")
        return "; ".join(reasons)


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        text = text.replace(s, "(sensitive)")
    return text


class ExecProvider(Provider[Command, Guards]):
    """Runs the command and its guards through the host's runner."""

    name = "exec"

    def _run(self, host: Host, desired: Command, argv: Sequence[str],
             check: bool) -> Result:
        try:
            return host.run(desired.wrap(argv), cwd=desired.cwd, env=desired.environment(),
                            timeout=desired.timeout, check=check)
        except CommandError as exc:
            secrets = desired.secrets()
            raise CommandError(exc.argv, exc.returncode, redact(exc.stdout, secrets),
                               redact(exc.stderr, secrets), reason=exc.reason) from None

    def probe(self, host: Host, resources: Sequence[Command]) -> dict[str, Guards | None]:
        result: dict[str, Guards | None] = {}
        for r in resources:
            try:
                result[r.key] = self._guards(host, r)
            except CommandError as exc:
                result[r.key] = Guards(None, None, None, error=f"guard failed to run: {exc}")
        return result

    def _guards(self, host: Host, r: Command) -> Guards:
        creates = None
        if r.creates is not None:
            creates = host.file_states([r.creates])[r.creates] is not None
        unless = None
        if r.unless is not None and not creates:
            unless = self._run(host, r, r.unless, check=False).ok
        onlyif = None
        if r.onlyif is not None and not creates and not unless:
            onlyif = self._run(host, r, r.onlyif, check=False).ok
        return Guards(creates, unless, onlyif)

    def diff(self, desired: Command, actual: Guards | None) -> list[Change]:
        if actual is not None and actual.error:
            raise ResourceError(actual.error)
        if desired.refreshonly or actual is None:
            return []
        reason = actual.reason_to_run(desired)
        if reason is None:
            return []
        return [Change(attribute="run", before=reason, after=shlex.join(desired.argv))]

    def apply(self, host: Host, desired: Command, actual: Guards | None,
              changes: list[Change]) -> list[str]:
        self._run(host, desired, desired.argv, check=True)
        return []

    def refresh(self, host: Host, desired: Command) -> None:
        """Run again when notified, unless a guard says the work is done."""
        guards = self._guards(host, desired)
        unguarded = guards == Guards(None, None, None)
        if unguarded or guards.reason_to_run(desired) is not None:
            self._run(host, desired, desired.argv, check=True)


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"Command": [ExecProvider]}
