"""Virtualenv: a Python virtual environment with the distributions a project requires.

The probe runs the environment's own interpreter once (a small script: its version, the
interpreter it is based on, its marker environment and every installed distribution with its
``direct_url.json``) and reads the requirements file(s) from the host. The diff compares them
with the `packaging` library: names normalised, version specifiers (pre-releases count once
installed), environment markers evaluated for that interpreter, and VCS requirements
(``git+https://...@ref``) compared by URL and ref against what pip recorded. Apply creates the
environment when missing (``python -m venv``) and installs exactly the missing or wrong
requirements in one ``pip install``.

A virtualenv is derived data: one whose interpreter is not the desired one (or no longer runs)
is recreated, and the plan says so. Nothing installed by hand is uninstalled.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import Field, field_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import Provider, Resource
from converge.resources.file import AbsolutePath

if TYPE_CHECKING:
    from converge.host import Host

DEFAULT_PYTHON = "python3"
VERSION_RE = re.compile(r"^\d+(\.\d+){0,2}$")
VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
#: pip's options of a requirements file that take a value (a path one is made absolute)
PATH_OPTIONS = {"-f": "--find-links", "--find-links": "--find-links",
                "-c": "--constraint", "--constraint": "--constraint"}

#: Run by the environment's interpreter (or a candidate one): what it is, what it has.
PROBE_SCRIPT = r"""
import json, os, platform, sys
iv = sys.implementation.version
impl = "%d.%d.%d" % (iv.major, iv.minor, iv.micro)
if iv.releaselevel != "final":
    impl += iv.releaselevel[0] + str(iv.serial)
info = {
    "version": platform.python_version(),
    "executable": os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable),
    "env": {
        "implementation_name": sys.implementation.name,
        "implementation_version": impl,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}
if sys.argv[1:] == ["dists"]:
    from importlib import metadata
    dists = []
    for d in metadata.distributions():
        name = d.metadata["Name"]
        if name:
            try:
                direct = d.read_text("direct_url.json")
            except Exception:
                direct = None
            dists.append([name, d.version, direct])
    info["dists"] = dists
print(json.dumps(info))
"""


# -- requirements --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    """One requirement, from a requirements file or ``packages``."""

    text: str  # as written (a relative path made absolute): shown in the plan
    origin: str  # "requirements.txt:3" or "packages"
    name: str | None  # canonical project name (None: a URL without a name)
    specifier: SpecifierSet = field(default_factory=SpecifierSet)
    marker: Marker | None = None
    url: str | None = None  # a direct reference: VCS, archive or local path
    vcs_ref: str | None = None
    editable: bool = False

    @property
    def key(self) -> str:
        return self.name or self.text

    @property
    def pip_args(self) -> list[str]:
        return ["-e", self.text.removeprefix("-e").strip()] if self.editable else [self.text]


def _is_url(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def _is_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def _egg_name(url: str) -> str | None:
    fragment = urlsplit(url).fragment
    for part in fragment.split("&"):
        key, _, value = part.partition("=")
        if key == "egg" and value:
            return canonicalize_name(re.split(r"-\d", value, maxsplit=1)[0])
    return None


def split_vcs(url: str) -> tuple[str, str | None]:
    """A direct reference's URL as pip records it (no ``git+``, ref, fragment or password)
    and the ref it names (``@v1.2`` at the end of the path)."""
    scheme_less = url
    for prefix in VCS_SCHEMES:
        if url.startswith(prefix):
            scheme_less = url[len(prefix):]
    parts = urlsplit(scheme_less)
    path, ref = parts.path, None
    if url.startswith(VCS_SCHEMES) and "@" in path.rsplit("/", 1)[-1]:
        path, ref = path.rsplit("@", 1)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # user info is not part of the identity
    return urlunsplit((parts.scheme, netloc, unquote(path).rstrip("/"), parts.query, "")), ref


def parse_requirement(text: str, origin: str, base: str | None = None,
                      editable: bool = False) -> Wanted:
    """One requirement as pip reads it: PEP 508 (``name[extra]>=1; marker``, ``name @ url``),
    a pip-style URL (``git+https://host/repo@ref#egg=name``) or a local path."""
    if base is not None and _is_path(text) and not text.startswith("/"):
        text = str(PurePosixPath(base) / text)
    if _is_url(text) or _is_path(text):
        url = text if _is_url(text) else f"file://{text}"
        clean, ref = split_vcs(url)
        shown = f"-e {text}" if editable else text
        return Wanted(shown, origin, _egg_name(url), url=clean, vcs_ref=ref, editable=editable)
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{origin}: {text!r} is not a requirement: {exc}") from None
    direct, vcs_ref = split_vcs(req.url) if req.url else (None, None)
    return Wanted(text, origin, canonicalize_name(req.name), req.specifier, req.marker,
                  direct, vcs_ref, editable)


Parsed = Wanted | tuple[Literal["include"], str] | tuple[Literal["option"], list[str]]


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with continuations joined and comments removed, numbered as in the file."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            pending += raw[:-1]
            continue
        line = " ".join(re.sub(r"(^|\s)#.*$", "", pending + raw).split())
        pending = ""
        if line:
            yield start, line
    if pending.strip():
        yield start, " ".join(pending.split())


def parse_requirements(text: str, path: str) -> list[Parsed]:
    """A requirements file: requirements, ``-r`` includes and pip options, in order.

    Relative paths (includes, local projects, ``--find-links``, constraints) are relative to
    the file's directory. Options are passed to pip as they are; they are not compared.
    """
    base = str(PurePosixPath(path).parent)
    name = PurePosixPath(path).name
    items: list[Parsed] = []
    for number, line in _logical_lines(text):
        origin = f"{name}:{number}"
        if not line.startswith("-"):
            req, sep, rest = line.partition(" --")
            if sep:
                raise ValueError(f"{origin}: per-requirement options (--{rest.split()[0]}) "
                                 "are not supported (converge installs the requirements "
                                 "named on pip's command line)")
            items.append(parse_requirement(req.strip(), origin, base))
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"{origin}: {exc}") from None
        option, _, inline = words[0].partition("=")
        if option.startswith("-") and not option.startswith("--") and len(option) > 2:
            option, inline = option[:2], option[2:]  # -rfile.txt
        values = ([inline] if inline else []) + words[1:]
        if option in ("-r", "--requirement", "-e", "--editable") and len(values) != 1:
            raise ValueError(f"{origin}: {option} needs exactly one value")
        if option in ("-r", "--requirement"):
            items.append(("include", str(PurePosixPath(base) / values[0])))
        elif option in ("-e", "--editable"):
            items.append(parse_requirement(values[0], origin, base, editable=True))
        elif option in PATH_OPTIONS:
            target = values[0] if values else ""
            if target and not _is_url(target) and not target.startswith("/"):
                target = str(PurePosixPath(base) / target)
            items.append(("option", [PATH_OPTIONS[option], target]))
        elif option == "-i" or option.startswith("--"):
            # --index-url, --no-index, --extra-index-url, --pre...: for pip, not compared
            items.append(("option", [option, *values]))
        else:
            raise ValueError(f"{origin}: unknown option {option}")
    return items


# -- the model -----------------------------------------------------------------------------------


class Virtualenv(Resource):
    """A Python virtual environment at ``path`` with the required distributions installed."""

    kind = "Virtualenv"

    path: AbsolutePath = Field(description="The environment's directory; the resource's name.")
    python: str | None = Field(
        default=None,
        description="The interpreter: a path (/usr/bin/python3), a command (python3.11) or a "
        "version (3.11, 3.11.2; looked for as pythonX.Y on PATH). An environment based on "
        "another one is recreated. Unset: python3 for a new environment; an existing one's "
        "is left alone.")
    requirements: AbsolutePath | None = Field(
        default=None,
        description="A requirements file on the host (e.g. inside a checkout); -r includes, "
        "pip options, VCS and local requirements are understood.")
    packages: list[str] = Field(
        default_factory=list,
        description="More requirements, e.g. 'channels_redis==3.3.0'; one named in the "
        "requirements file too is replaced by this one.")
    pip_options: list[str] = Field(
        default_factory=list,
        description="Options for pip install, e.g. ['--no-index', '--find-links', "
        "'/srv/wheels'] for offline installs, or ['--index-url', URL].")
    owner: str | None = Field(
        default=None,
        description="User that owns the environment; venv and pip run as this user (runuser).")
    system_site_packages: bool | None = Field(
        default=None,
        description="Let the environment see the interpreter's own site-packages. Unset: "
        "created without; an existing environment's setting is left alone.")
    timeout: float = Field(
        default=1800.0, gt=0, description="Seconds the venv creation or pip may take.")

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_requirement(text.strip(), "packages")
        return v

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        if v is not None and (not v or v.startswith("-") or any(c.isspace() for c in v)):
            raise ValueError(f"{v!r} is neither an interpreter nor a version")
        return v

    @property
    def ident(self) -> str:
        return self.path

    @property
    def bin_python(self) -> str:
        return f"{self.path}/bin/python"

    def implied_requires(self) -> Iterable[str]:
        yield f"File[{PurePosixPath(self.path).parent}]"
        if self.owner and not self.owner.isdigit():
            yield f"User[{self.owner}]"
        if self.python and self.python.startswith("/"):
            yield f"File[{self.python}]"
        if self.requirements:
            yield f"File[{self.requirements}]"
            for parent in PurePosixPath(self.requirements).parents:
                yield f"GitCheckout[{parent}]"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        if self.owner:
            return ["runuser", "-u", self.owner, "--", *argv]
        return list(argv)


# -- state ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interpreter:
    command: str  # what to run
    version: str
    executable: str  # the real interpreter binary
    env: Mapping[str, str]

    def __str__(self) -> str:
        return f"{self.version} ({self.executable})"


@dataclass(frozen=True, slots=True)
class Installed:
    name: str
    version: str
    url: str | None = None  # direct_url.json: where it came from (None: an index)
    requested: str | None = None  # the VCS ref asked for
    commit: str | None = None
    editable: bool = False

    def __str__(self) -> str:
        where = self.requested or (self.commit[:7] if self.commit else None)
        if self.url and where:
            return f"{self.version} ({self.url}@{where})"
        return f"{self.version} ({self.url})" if self.url else self.version


@dataclass(frozen=True, slots=True)
class VenvState:
    type: Literal["absent", "empty", "other", "venv"]
    uid: int = -1
    owner: str = ""
    python: Interpreter | None = None  # what the environment runs
    broken: str | None = None  # why its interpreter did not run
    system_site_packages: bool | None = None
    installed: Mapping[str, Installed] = field(default_factory=dict)
    wanted: tuple[Wanted, ...] = ()  # from the requirements file(s)
    options: tuple[str, ...] = ()  # pip options from the requirements file(s)
    interpreter: Interpreter | None = None  # the desired one, when it matters
    interpreter_error: str | None = None
    error: str | None = None  # the probe failed


def _installed(dists: list[list[Any]]) -> dict[str, Installed]:
    found: dict[str, Installed] = {}
    for name, version, direct in dists:
        key = canonicalize_name(name)
        if key in found:
            continue  # the first on sys.path is the one imported
        url = requested = commit = None
        editable = False
        if direct:
            try:
                info = json.loads(direct)
                url = split_vcs(info["url"])[0]
                vcs = info.get("vcs_info") or {}
                requested, commit = vcs.get("requested_revision"), vcs.get("commit_id")
                editable = bool((info.get("dir_info") or {}).get("editable"))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        found[key] = Installed(name, version, url, requested, commit, editable)
    return found


def check(w: Wanted, installed: Mapping[str, Installed]) -> tuple[bool, str | None]:
    """Whether ``w`` is satisfied, and what is installed in its place."""
    dist = installed.get(w.name) if w.name else next(
        (d for d in installed.values() if w.url and d.url == w.url), None)
    if dist is None:
        return False, None
    if w.url is not None:
        if dist.url != w.url:
            return False, f"{dist.version} (from {dist.url or 'an index'})"
        if w.vcs_ref and w.vcs_ref != dist.requested \
                and not (dist.commit or "").startswith(w.vcs_ref):
            return False, str(dist)
        return True, str(dist)
    if w.specifier:
        try:
            version = Version(dist.version)
        except InvalidVersion:
            return False, dist.version
        if not w.specifier.contains(version, prereleases=True):
            return False, str(dist)
    return True, str(dist)


def _version_matches(spec: str, version: str) -> bool:
    want = spec.split(".")
    return version.split(".")[:len(want)] == want


# -- provider ------------------------------------------------------------------------------------


class VenvProvider(Provider[Virtualenv, VenvState]):
    """``python -m venv`` and pip, as the environment's owner."""

    name = "venv"

    def probe(self, host: Host, resources: Sequence[Virtualenv]) -> dict[str, VenvState | None]:
        paths = [p for r in resources for p in (r.path, f"{r.path}/pyvenv.cfg")]
        states = host.file_states(paths, content_for=frozenset(
            f"{r.path}/pyvenv.cfg" for r in resources))
        interpreters: dict[str, Interpreter | str] = {}
        result: dict[str, VenvState | None] = {}
        for r in resources:
            try:
                result[r.key] = self._probe_one(host, r, states, interpreters)
            except ResourceError as exc:  # one environment's trouble is not the others'
                result[r.key] = VenvState(type="venv", error=str(exc))
        return result

    def _probe_one(self, host: Host, r: Virtualenv, states: Mapping[str, Any],
                   interpreters: dict[str, Interpreter | str]) -> VenvState:
        wanted, options = self._requirements(host, r)
        st, cfg = states[r.path], states[f"{r.path}/pyvenv.cfg"]
        base = VenvState(type="absent", wanted=wanted, options=options)
        if st is not None:
            base = VenvState(type="other", uid=st.uid, owner=host.user_name(st.uid),
                             wanted=wanted, options=options)
        if st is None or (st.type == "directory" and cfg is None
                          and not host.run(["ls", "-A", r.path]).stdout.strip()):
            return self._with_interpreter(host, r, replace(base, type="absent" if st is None
                                                           else "empty"), interpreters)
        if st.type != "directory" or cfg is None:
            return base
        text = (cfg.content or b"").decode(errors="replace")
        m = re.search(r"^\s*include-system-site-packages\s*=\s*(\w+)", text, re.M)
        state = replace(base, type="venv",
                        system_site_packages=m.group(1).lower() == "true" if m else False)
        info, why = self._run_probe(host, r)
        if info is None:
            return self._with_interpreter(host, r, replace(state, broken=why), interpreters)
        python = Interpreter(r.bin_python, info["version"], info["executable"], info["env"])
        state = replace(state, python=python, installed=_installed(info["dists"]))
        if r.python is not None and not (VERSION_RE.match(r.python)
                                         and _version_matches(r.python, python.version)):
            # a path or command must be run to know which interpreter it is; a version
            # only when this one is not it (then the environment is made again)
            state = self._with_interpreter(host, r, state, interpreters)
        return state

    def _run_probe(self, host: Host, r: Virtualenv) -> tuple[dict[str, Any] | None, str]:
        """What the environment's interpreter says, or why it does not run (it is broken:
        made again). Anything else (a timeout, a missing owner) is an error, not a reason to
        throw the environment away."""
        if r.owner is not None and host.user_id(r.owner) is None:
            raise ResourceError(f"user {r.owner!r} does not exist")
        try:
            # as the owner: starting the interpreter runs the environment's .pth files
            res = host.run(r.wrap([r.bin_python, "-I", "-B", "-c", PROBE_SCRIPT, "dists"]),
                           check=False, cwd="/", timeout=r.timeout)
        except CommandError as exc:
            if exc.returncode is None and "not found" in (exc.reason or ""):
                return None, f"{r.bin_python} is missing or its interpreter is gone"
            raise
        if res.ok:
            try:
                info: dict[str, Any] = json.loads(res.stdout)
                return info, ""
            except ValueError:
                pass
        lines = res.stderr.strip().splitlines()
        if r.owner is not None and res.returncode in (1, 126, 127) \
                and any("runuser:" in line and "execute" in line for line in lines):
            return None, f"{r.bin_python} is missing or its interpreter is gone"
        if res.ok or (res.returncode == 1 and lines and lines[0].startswith("runuser:")):
            raise ResourceError(f"cannot read {r.path}: {res.stdout.strip()[:200]}"
                                f"{res.stderr.strip()[-500:]}")
        return None, (lines or [f"exit status {res.returncode}"])[-1]

    def _requirements(self, host: Host, r: Virtualenv
                      ) -> tuple[tuple[Wanted, ...], tuple[str, ...]]:
        if r.requirements is None:
            return (), ()
        wanted: list[Wanted] = []
        options: list[str] = []
        seen: set[str] = set()

        def read(path: str, parent: str | None) -> None:
            if path in seen:
                return
            seen.add(path)
            data = host.read_bytes(path)
            if data is None:
                by = f" (included by {parent})" if parent else ""
                raise ResourceError(f"requirements file {path}{by} does not exist")
            try:
                items = parse_requirements(data.decode(), path)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ResourceError(f"{path}: {exc}") from None
            for item in items:
                if isinstance(item, Wanted):
                    wanted.append(item)
                elif item[0] == "include":
                    read(item[1], path)
                else:
                    options.extend(item[1])

        read(r.requirements, None)
        return tuple(wanted), tuple(options)

    def _with_interpreter(self, host: Host, r: Virtualenv, state: VenvState,
                          cache: dict[str, Interpreter | str]) -> VenvState:
        spec = r.python or DEFAULT_PYTHON
        if spec not in cache:
            cache[spec] = self._find_interpreter(host, spec, r.timeout)
        found = cache[spec]
        if isinstance(found, str):
            return replace(state, interpreter_error=found)
        return replace(state, interpreter=found)

    def _find_interpreter(self, host: Host, spec: str, timeout: float) -> Interpreter | str:
        """The interpreter ``spec`` names, or why there is none."""
        if VERSION_RE.match(spec):
            parts = spec.split(".")
            names = [f"python{'.'.join(parts[:2])}"] if len(parts) > 1 else []
            names += [f"python{parts[0]}"] if parts[0] != "3" else ["python3"]
            res = host.run(["which", "-a", *dict.fromkeys(names)], check=False)
            candidates = list(dict.fromkeys(res.stdout.split()))
        else:
            candidates = [spec]
        seen: list[str] = []
        for command in candidates:
            res = host.run([command, "-I", "-B", "-c", PROBE_SCRIPT], check=False,
                           timeout=timeout)
            try:
                info = json.loads(res.stdout) if res.ok else None
            except ValueError:
                info = None
            if info is None:
                if not VERSION_RE.match(spec):
                    why = (res.stderr.strip().splitlines() or ["it did not run"])[-1]
                    return f"the interpreter {spec} does not run: {why}"
                continue
            found = Interpreter(command, info["version"], info["executable"], info["env"])
            if not VERSION_RE.match(spec) or _version_matches(spec, found.version):
                return found
            seen.append(f"{found.version} at {command}")
        return (f"no Python {spec} on the host (found on PATH: "
                f"{', '.join(seen) or 'no python' + spec.split('.')[0]})")

    # -- diff ---------------------------------------------------------------------------------

    @staticmethod
    def _wanted(desired: Virtualenv, actual: VenvState) -> list[Wanted]:
        merged = {w.key: w for w in actual.wanted}
        for text in desired.packages:
            w = parse_requirement(text.strip(), "packages")
            merged[w.key] = w
        return list(merged.values())

    @staticmethod
    def _remake(desired: Virtualenv, actual: VenvState) -> str | None:
        """Why the environment must be made again (None: it need not)."""
        if actual.broken is not None:
            return f"its interpreter does not run ({actual.broken})"
        if desired.python is None or actual.python is None:
            return None
        if VERSION_RE.match(desired.python):
            if _version_matches(desired.python, actual.python.version):
                return None
        elif actual.interpreter is None or \
                actual.interpreter.executable == actual.python.executable:
            return None
        return f"it runs {actual.python}"

    def diff(self, desired: Virtualenv, actual: VenvState | None) -> list[Change]:
        if actual is None:
            actual = VenvState(type="absent")
        if actual.error:
            raise ResourceError(actual.error)
        if actual.type == "other":
            raise ResourceError(f"{desired.path} exists and is not a virtualenv (no "
                                "pyvenv.cfg); refusing to replace it")
        creating = actual.type in ("absent", "empty")
        remake = None if creating else self._remake(desired, actual)
        changes: list[Change] = []
        if creating or remake:
            if actual.interpreter is None:
                raise ResourceError(actual.interpreter_error or "no interpreter found")
            env: Mapping[str, str] = actual.interpreter.env
            installed: Mapping[str, Installed] = {}
            if creating:
                changes.append(Change(attribute="ensure", before="absent", after="present"))
                changes.append(Change(attribute="python", after=str(actual.interpreter)))
            else:
                before = str(actual.python) if actual.python else f"broken: {actual.broken}"
                changes.append(Change(
                    attribute="python", before=before,
                    after=f"{actual.interpreter}: the virtualenv is recreated and every "
                    "requirement installed again"))
        else:
            assert actual.python is not None
            env, installed = actual.python.env, actual.installed
            if desired.system_site_packages is not None \
                    and desired.system_site_packages != actual.system_site_packages:
                changes.append(Change(attribute="system_site_packages",
                                      before=actual.system_site_packages,
                                      after=desired.system_site_packages))
        if desired.owner is not None and (creating or not _id_matches(
                desired.owner, actual.owner, actual.uid)):
            changes.append(Change(attribute="owner", before=None if creating else actual.owner,
                                  after=desired.owner))
        for w in self._wanted(desired, actual):
            if w.marker is not None and not w.marker.evaluate({**env, "extra": ""}):
                continue
            ok, instead = check(w, installed)
            if not ok:
                changes.append(Change(attribute=f"package {w.key}", before=instead,
                                      after=w.text))
        return changes

    # -- apply --------------------------------------------------------------------------------

    def apply(self, host: Host, desired: Virtualenv, actual: VenvState | None,
              changes: list[Change]) -> list[str]:
        actual = actual or VenvState(type="absent")
        by = {c.attribute: c for c in changes}
        made = ""
        if "ensure" in by or "python" in by:
            assert actual.interpreter is not None
            if "python" in by and "ensure" not in by:
                host.remove(desired.path, recursive=True)  # derived data, rebuilt just below
                made = "the virtualenv was recreated"
            else:
                made = "the virtualenv was created"
            self._create(host, desired, actual.interpreter)
        elif "owner" in by:
            host.run(["chown", "-R", "-P", "-h", "--", str(desired.owner), desired.path],
                     timeout=desired.timeout)
        if "system_site_packages" in by:
            self._set_system_site_packages(host, desired)
        install = [w for w in self._wanted(desired, actual) if f"package {w.key}" in by]
        if install:
            self._install(host, desired, actual, install, made)
        return []

    def _create(self, host: Host, desired: Virtualenv, interpreter: Interpreter) -> None:
        if desired.owner is not None:
            # made (or given) to the owner first: venv, running as the owner, fills it in
            uid = host.user_id(desired.owner)
            if uid is None:
                raise ResourceError(f"user {desired.owner!r} does not exist")
            gid = int(host.run(["id", "-g", "--", desired.owner]).stdout.strip())
            if host.file_states([desired.path])[desired.path] is None:
                host.make_directory(desired.path, uid=uid, gid=gid, mode=0o755)
            else:  # an empty directory
                host.set_owner(desired.path, uid, gid)
        argv = [interpreter.command, "-m", "venv"]
        if desired.system_site_packages:
            argv.append("--system-site-packages")
        host.run(desired.wrap([*argv, desired.path]), cwd="/", timeout=desired.timeout)

    def _set_system_site_packages(self, host: Host, desired: Virtualenv) -> None:
        cfg = f"{desired.path}/pyvenv.cfg"
        text = (host.read_bytes(cfg) or b"").decode()
        value = "true" if desired.system_site_packages else "false"
        line = f"include-system-site-packages = {value}"
        new, n = re.subn(r"^\s*include-system-site-packages\s*=.*$", line, text, flags=re.M)
        if not n:
            new = text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"
        host.write_atomic(cfg, new.encode(), uid=None, gid=None, mode=None)

    def _install(self, host: Host, desired: Virtualenv, actual: VenvState,
                 install: list[Wanted], made: str) -> None:
        argv = [desired.bin_python, "-m", "pip", "install", "--disable-pip-version-check",
                "--no-input", "--progress-bar", "off", *desired.pip_options, *actual.options]
        # pip keeps an installed distribution of the same version even when it came from
        # another URL or ref: a direct reference installed otherwise must be reinstalled
        have = {} if made else actual.installed
        if any(w.url is not None and check(w, have)[1] is not None for w in install):
            argv.append("--force-reinstall")
        for w in install:
            argv += w.pip_args
        try:
            host.run(desired.wrap(argv), cwd="/", timeout=desired.timeout,
                     env={"PIP_NO_WARN_SCRIPT_LOCATION": "1"})
        except CommandError as exc:
            raise ResourceError(self._explain(host, desired, install, made, exc)) from None

    def _explain(self, host: Host, desired: Virtualenv, install: list[Wanted], made: str,
                 exc: CommandError) -> str:
        """What pip said, and what the environment holds now: nothing half-done unreported."""
        reasons = [line.removeprefix("ERROR: ") for line in exc.stderr.splitlines()
                   if line.startswith("ERROR: ")]
        lines = ["pip could not install the requirements"
                 + (f": {reasons[-1]}" if reasons else "")]
        try:
            after = self.probe(host, [desired])[desired.key]
        except Exception:  # the report is best effort; the pip error stands
            after = None
        if after is not None and after.python is not None:
            done = [w.text for w in install if check(w, after.installed)[0]]
            left = [w.text for w in install if not check(w, after.installed)[0]]
            lines.append("not installed: " + (", ".join(left) or "(none)"))
            lines.append("installed before the failure: " + (", ".join(done) or "nothing"))
        if made:
            lines.append(f"({made})")
        return "\n".join([*lines, str(exc)])


def _id_matches(desired: str, name: str, number: int) -> bool:
    return int(desired) == number if desired.isdigit() else desired == name


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"Virtualenv": [VenvProvider]}
