"""Jinja2 templates, rendered on the control side at load time (so errors stop the run early).

Undefined variables are errors (``StrictUndefined``). ``SecretStr`` variables are unwrapped for
the template and mark the rendered file sensitive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converge.errors import DesiredStateError


def render(base_dir: Path, template: str, variables: dict[str, Any], key: str) -> tuple[str, bool]:
    """Render ``template`` (relative to ``base_dir``) with ``variables``.

    Returns the text and whether any secret went into it.
    """
    import jinja2
    from pydantic import BaseModel, SecretStr

    path = Path(template) if template.startswith("/") else base_dir / template
    secret = False

    def unwrap(value: Any) -> Any:
        nonlocal secret
        if isinstance(value, SecretStr):
            secret = True
            return value.get_secret_value()
        if isinstance(value, BaseModel):  # e.g. the settings object: its secrets too
            return {k: unwrap(getattr(value, k)) for k in type(value).model_fields}
        if isinstance(value, dict):
            return {k: unwrap(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(unwrap(v) for v in value)
        return value

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(path.parent), str(base_dir)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    try:
        tmpl = env.get_template(path.name)
        return tmpl.render(**unwrap(variables)), secret
    except jinja2.TemplateNotFound as exc:
        raise DesiredStateError(f"{key}: template {exc.name} not found (looked in {path.parent})"
                                ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise DesiredStateError(f"{key}: template syntax error: {exc.message}",
                                file=exc.filename or str(path), line=exc.lineno) from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, str(path))
        raise DesiredStateError(f"{key}: template {exc.message}", file=str(path),
                                line=line) from None
    except Exception as exc:  # an error raised by the template's own expressions
        line = _template_line(exc, str(path))
        raise DesiredStateError(f"{key}: template failed: {type(exc).__name__}: {exc}",
                                file=str(path), line=line) from None


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line an exception was raised at (jinja2 maps its frames to the template)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
