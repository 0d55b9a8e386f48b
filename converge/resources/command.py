"""Command: a guarded command (Puppet's exec), for steps that have no better resource.

It runs only when its guards say the work is not done yet: ``creates`` (a path that exists once
it ran), ``unless`` (an argv whose success means done) or ``onlyif`` (an argv whose failure
means done), or, with ``refreshonly``, only when a resource notifying it changed. Guards run
during ``plan`` too, so they must be read-only. A command without any guard would run on every
apply and never converge, so it is refused.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator, model_validator

from converge.errors import CommandError, ResourceError
from converge.host import Result
from converge.plan import Change
from converge.resources.base import Provider, Resource
from converge.resources.file import AbsolutePath

if TYPE_CHECKING:
    from converge.host import Host


class Command(Resource):
    """Run ``argv`` when its guards say it is needed."""

    kind = "Command"

    name: str = Field(description="The resource's name, e.g. 'migrate'.")
    argv: list[str] = Field(description="The command as an argv list (no shell).")
    cwd: str | None = Field(default=None, description="Working directory.")
    user: str | None = Field(default=None, description="Run it and its guards as this user "
                             "(with runuser).")
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
    timeout: float = Field(default=600.0, gt=0, description="Seconds before it is killed, "
                           "with every process it started (guards too).")

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
        if self.creates:
            yield f"File[{os.path.dirname(self.creates)}]"

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


_WRAPPER_ERROR = re.compile(r"^(?:\S*/)?(timeout|runuser): (.*)$")


def _not_run(returncode: int, stderr: str, user: str | None) -> str | None:
    """Why timeout/runuser could not start the program (``None``: it ran)."""
    m = _WRAPPER_ERROR.match(stderr.lstrip().split("\n", 1)[0])
    if m is None or returncode not in (1, 125, 126, 127):
        return None
    wrapper, message = m.groups()
    if returncode in (126, 127) and message.startswith(("failed to run", "failed to execute")):
        if "No such file or directory" in message:
            return "could not be run: command not found"
        return f"could not be run: {message}"
    if wrapper == "runuser" and user:
        return f"could not be run as {user}: {message}"
    return None


KILL_AFTER = 5.0
"""Seconds between the TERM and the KILL sent to a command that outlived its timeout."""


class ExecProvider(Provider[Command, Guards]):
    """Runs the command and its guards through the host's runner.

    Both run under coreutils ``timeout`` (when the host has it): it runs them in their own
    process group and signals the whole group, so that nothing the command started (a shell's
    children, what ``runuser`` forked) outlives its timeout.
    """

    name = "exec"

    def __init__(self) -> None:
        self._has_timeout: dict[str, bool] = {}

    def _run(self, host: Host, desired: Command, argv: Sequence[str],
             check: bool) -> Result:
        secrets = desired.secrets()
        if desired.cwd is not None:
            where = host.file_states([desired.cwd])[desired.cwd]
            if where is None or where.type not in ("directory", "link"):
                what = "does not exist" if where is None else "is not a directory"
                raise CommandError(argv, None, reason=f"could not be run: working directory "
                                   f"{desired.cwd} {what}")
        wrapped = desired.wrap(argv)
        limit = desired.timeout
        if self._has_timeout.setdefault(host.name, host.which("timeout") is not None):
            wrapped = ["timeout", "-k", f"{KILL_AFTER:g}", f"{limit:g}s", *wrapped]
            limit += KILL_AFTER + 10  # the runner's own limit: a backstop
        start = time.monotonic()
        try:
            res = host.run(wrapped, cwd=desired.cwd, env=desired.environment(), timeout=limit,
                           check=False)
        except CommandError as exc:  # could not be run at all, or the backstop fired
            raise CommandError(argv, exc.returncode, redact(exc.stdout, secrets),
                               redact(exc.stderr, secrets), reason=exc.reason) from None
        stdout, stderr = redact(res.stdout, secrets), redact(res.stderr, secrets)
        if wrapped[0] == "timeout" and res.returncode in (124, 137) \
                and time.monotonic() - start >= desired.timeout:
            raise CommandError(argv, None, stdout, stderr,
                               reason=f"timed out after {desired.timeout:g} s (killed)")
        not_run = _not_run(res.returncode, stderr, desired.user)
        if not_run:  # the program or the user does not exist: not a guard's answer
            raise CommandError(argv, res.returncode, stdout, stderr, reason=not_run)
        if check and res.returncode != 0:
            raise CommandError(argv, res.returncode, stdout, stderr)
        return Result(tuple(argv), res.returncode, stdout, stderr)

    def probe(self, host: Host, resources: Sequence[Command]) -> dict[str, Guards | None]:
        result: dict[str, Guards | None] = {}
        for r in resources:
            try:
                result[r.key] = self._guards(host, r)
            except Exception as exc:  # this command's guard only: the others still count
                text = str(exc) if isinstance(exc, CommandError) else \
                    f"{type(exc).__name__}: {exc}"
                result[r.key] = Guards(None, None, None,
                                       error=redact(f"guard failed to run: {text}", r.secrets()))
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

    def refresh(self, host: Host, desired: Command) -> bool:
        """Run again when notified, unless a guard says the work is done."""
        guards = self._guards(host, desired)
        unguarded = guards == Guards(None, None, None)
        if unguarded or guards.reason_to_run(desired) is not None:
            self._run(host, desired, desired.argv, check=True)
            return True
        return False


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"Command": [ExecProvider]}
