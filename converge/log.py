"""structlog configuration: readable console lines for people, JSON lines for machines.

structlog is imported on the first event only, so a run that has nothing to say (a no-op
apply) does not pay for it. Logs go to stderr; the plan and report go to stdout.
"""

from __future__ import annotations

import sys
from typing import Any

_config: dict[str, Any] = {"format": "console", "level": "info", "stream": None}
_logger: Any = None

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure(fmt: str = "console", level: str = "info", stream: Any = None) -> None:
    """Choose the format (``console`` or ``json``) and the minimum level."""
    global _logger
    if fmt not in ("console", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    _config.update(format=fmt, level=level, stream=stream)
    _logger = None


def _build() -> Any:
    import structlog

    stream = _config["stream"] or sys.stderr
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if _config["format"] == "json":
        processors.append(structlog.processors.JSONRenderer())
    else:
        colours = hasattr(stream, "isatty") and stream.isatty()
        processors.append(structlog.dev.ConsoleRenderer(colors=colours))
    return structlog.wrap_logger(
        structlog.PrintLogger(file=stream),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[_config["level"]]),
        cache_logger_on_first_use=True,
    )


def event(level: str, message: str, **fields: Any) -> None:
    """Log ``message`` with ``fields`` (which must never hold secret values)."""
    global _logger
    if _LEVELS[level] < _LEVELS[_config["level"]]:
        return
    if _logger is None:
        _logger = _build()
    getattr(_logger, level)(message, **fields)
