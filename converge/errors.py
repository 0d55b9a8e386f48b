"""The errors converge shows to users.

Every error a user can see is a :class:`ConvergeError`; the CLI is the only place that turns
them into exit codes and prints them.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConvergeError(Exception):
    """Base class of every error converge reports to a user."""


class DesiredStateError(ConvergeError):
    """The desired state is invalid: the message names the file and line or the resource."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(f"{where}{message}")


class UsageError(ConvergeError):
    """The command line (or a setting given on it) is wrong."""


class GraphError(DesiredStateError):
    """A missing reference or a dependency cycle."""


class NoProviderError(ConvergeError):
    """No provider can manage a resource on this host; the message names every candidate."""


class ResourceError(ConvergeError):
    """A resource could not be probed, diffed or applied."""


class NotConvergedError(ResourceError):
    """A resource still differs from its desired state after it was applied."""


class LockError(ConvergeError):
    """Another converge run holds the host's lock."""


class CommandError(ResourceError):
    """A command exited with a non-zero status (or timed out).

    Carries the argv, exit status and output so the user sees exactly what ran and what it said.
    Secret values must never reach argv (they travel on stdin or in environment variables), so
    the argv is safe to print.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        *,
        reason: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason
        super().__init__(self._format())

    def _format(self) -> str:
        import shlex

        status = self.reason or f"exited with status {self.returncode}"
        lines = [f"command {shlex.join(self.argv)} {status}"]
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = text.rstrip()
            if text:
                tail = text.splitlines()[-20:]
                lines.append(f"{label}:")
                lines.extend(f"    {t}" for t in tail)
        return "\n".join(lines)
