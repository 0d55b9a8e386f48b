"""Load a desired-state file: import it, build its settings, call ``desired``, collect resources.

Every problem becomes a :class:`DesiredStateError` naming the file and line (or the resource);
nothing here touches the managed host except reading the template and source files the
desired state names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from converge.errors import DesiredStateError, UsageError
from converge.facts import Facts
from converge.resources.base import Resource


class NoSettings(BaseModel):
    """The settings of a desired-state file that declares no ``Settings`` class."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Catalog:
    """A loaded desired state: its resources in declaration order, settings and facts."""

    path: Path
    resources: list[Resource]
    settings: BaseModel
    facts: Facts
    digest: str = ""
    by_key: dict[str, Resource] = field(default_factory=dict)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic error without input values (an input may be a secret)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(model)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{prefix}{loc}: {msg}")
    return "; ".join(parts)


def _line_in(exc: BaseException, filename: str) -> int | None:
    """The deepest line of ``filename`` in the exception's traceback."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def import_file(path: Path) -> types.ModuleType:
    """Import a desired-state file as a module (its directory importable for its helpers)."""
    filename = str(path)
    try:
        source = path.read_bytes()
    except FileNotFoundError:
        raise DesiredStateError("desired-state file not found", file=filename) from None
    except OSError as exc:
        raise DesiredStateError(f"cannot read desired-state file: {exc.strerror}",
                                file=filename) from None
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise DesiredStateError(f"syntax error: {exc.msg}", file=filename,
                                line=exc.lineno) from None
    digest = hashlib.sha256(source).hexdigest()
    name = f"converge_desired_{path.stem}_{digest[:8]}"
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except ValidationError as exc:
        raise DesiredStateError(format_validation_error(exc, f"{exc.title}: "), file=filename,
                                line=_line_in(exc, filename)) from None
    except Exception as exc:
        hint = ""
        if isinstance(exc, ImportError) and exc.name == "converge":
            from converge.registry import KINDS

            hint = f" (converge provides: {', '.join(sorted(KINDS))}, Secret, Facts)"
        raise DesiredStateError(f"error while importing: {type(exc).__name__}: {exc}{hint}",
                                file=filename, line=_line_in(exc, filename)) from None
    module.__dict__["__converge_digest__"] = digest
    return module


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings from ``--set``; JSON for lists and objects."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            # not the whole argument: it may be a secret typed with the wrong separator
            raise UsageError(f"--set expects key=value, got an argument without '=' "
                             f"(starting {pair[:3]!r}...)")
        if value[:1] in "[{":
            try:
                values[key] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        values[key] = value
    return values


def _with_env_prefix(cls: type[Any], prefix: str) -> type[Any]:
    """``cls`` reading environment variables PREFIX<NAME> (secret files keep their names).

    Without a prefix a setting named `user` or `home` would silently take $USER or $HOME.
    """
    from pydantic_settings import EnvSettingsSource

    def settings_customise_sources(
        subcls: type[Any], settings_cls: type[Any], init_settings: Any, env_settings: Any,
        dotenv_settings: Any, file_secret_settings: Any,
    ) -> tuple[Any, ...]:
        env = EnvSettingsSource(settings_cls, env_prefix=prefix)
        return (init_settings, env, dotenv_settings, file_secret_settings)

    return type(cls.__name__, (cls,), {
        "__module__": cls.__module__,
        "settings_customise_sources": classmethod(settings_customise_sources),
    })


def build_settings(
    module: types.ModuleType,
    overrides: Mapping[str, Any],
    secrets_dir: Path | None,
) -> BaseModel:
    filename = module.__file__ or "?"
    cls = module.__dict__.get("Settings")
    if cls is None:
        if overrides:
            raise UsageError(f"{filename} declares no Settings; cannot --set "
                             + ", ".join(sorted(overrides)))
        return NoSettings()
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        raise DesiredStateError("Settings must be a pydantic BaseSettings (or BaseModel) class",
                                file=filename)
    unknown = sorted(set(overrides) - set(cls.model_fields))
    if unknown:
        known = ", ".join(sorted(cls.model_fields)) or "(none)"
        raise UsageError(f"unknown setting(s) {', '.join(unknown)} for {filename}; known: {known}")
    kwargs: dict[str, Any] = dict(overrides)
    sources = "--set"
    from pydantic_settings import BaseSettings

    if issubclass(cls, BaseSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        if not prefix:
            prefix = "CONVERGE_"
            cls = _with_env_prefix(cls, prefix)
        sources = f"--set, environment variables {prefix.upper()}<NAME>"
        if secrets_dir is not None:
            if not secrets_dir.is_dir():
                raise UsageError(f"secrets directory {secrets_dir} does not exist")
            kwargs["_secrets_dir"] = str(secrets_dir)
            sources += f", files in {secrets_dir}"
    try:
        settings: BaseModel = cls(**kwargs)
        return settings
    except ValidationError as exc:
        message = format_validation_error(exc)
        if any(e["type"] == "missing" for e in exc.errors()):
            message += f" (settings come from {sources})"
        raise DesiredStateError("invalid settings: " + message, file=filename) from None


def collect(module: types.ModuleType, facts: Facts, settings: BaseModel) -> list[Resource]:
    filename = module.__file__ or "?"
    func = module.__dict__.get("desired")
    if func is None or not callable(func):
        raise DesiredStateError(
            "defines no desired(facts, settings) function returning resources", file=filename
        )
    code = getattr(func, "__code__", None)
    def_line = code.co_firstlineno if code is not None else None
    resources: list[Resource] = []
    current_line = def_line
    try:
        produced = func(facts, settings)
        if produced is None:
            raise DesiredStateError("desired() returned None; return or yield resources",
                                    file=filename, line=def_line)
        if not isinstance(produced, Iterable) or isinstance(produced, (str, bytes)):
            raise DesiredStateError(
                f"desired() returned {type(produced).__name__}, not an iterable of resources",
                file=filename, line=def_line)
        generator = produced if isinstance(produced, types.GeneratorType) else None
        for item in _flatten(produced):
            if generator is not None and generator.gi_frame is not None:
                current_line = generator.gi_frame.f_lineno
            if not isinstance(item, Resource):
                raise DesiredStateError(
                    f"desired() produced {item!r} ({type(item).__name__}), not a resource",
                    file=filename, line=current_line)
            resources.append(item)
    except DesiredStateError:
        raise
    except ValidationError as exc:
        raise DesiredStateError(format_validation_error(exc, f"{exc.title}: "), file=filename,
                                line=_line_in(exc, filename) or current_line) from None
    except Exception as exc:
        line = _line_in(exc, filename)
        raise DesiredStateError(f"error in desired(): {type(exc).__name__}: {exc}",
                                file=filename, line=line if line is not None else def_line
                                ) from None
    return resources


def _flatten(items: Iterable[Any]) -> Iterable[Any]:
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item


def _secret_values(settings: BaseModel) -> list[str]:
    """Every secret value in the settings (to keep them out of error messages)."""
    from pydantic import SecretStr

    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
    return found


def _redacted(exc: DesiredStateError, secrets: list[str], suffix: str = "") -> DesiredStateError:
    text = str(exc)
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "(sensitive)")
    exc.args = (text + suffix,)
    return exc


@contextlib.contextmanager
def _importable(directory: Path) -> Iterator[None]:
    """Helper modules next to the desired file can be imported while it loads and runs."""
    entry = str(directory)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            sys.path.remove(entry)


def load(
    path: Path,
    facts: Facts,
    overrides: Mapping[str, Any] | None = None,
    secrets_dir: Path | None = None,
) -> Catalog:
    """Load ``path`` into a checked catalog (resources validated, unique, prepared)."""
    path = path.absolute()
    with _importable(path.parent):
        module = import_file(path)
        settings = build_settings(module, overrides or {}, secrets_dir)
        try:
            resources = collect(module, facts, settings)
        except DesiredStateError as exc:
            raise _redacted(exc, _secret_values(settings)) from None
    by_key: dict[str, Resource] = {}
    for r in resources:
        if r.key in by_key:
            first = by_key[r.key]
            raise DesiredStateError(
                f"duplicate resource {r.key}: declared at {first.origin} and at {r.origin}"
            )
        by_key[r.key] = r
    from converge.registry import providers_for

    for r in resources:
        where = f" (declared at {r.origin})" if r.origin else ""
        problem = r.conflict(by_key)
        if problem is not None:
            raise DesiredStateError(problem + where)
        if r.provider is not None:
            names = [p.name for p in providers_for(r.kind)]
            if r.provider not in names:
                raise DesiredStateError(f"{r.key}: unknown provider {r.provider!r} "
                                        f"(known: {', '.join(names)}){where}")
    for r in resources:
        try:
            r.prepare(path.parent)
        except DesiredStateError as exc:
            where = f" (declared at {r.origin})" if r.origin else ""
            raise _redacted(exc, _secret_values(settings), where) from None
    return Catalog(path, resources, settings, facts, module.__dict__["__converge_digest__"],
                   by_key)
