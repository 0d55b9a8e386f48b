"""SELinux: booleans (SEBool), the mode (SELinuxMode) and file-context rules (SEFcontext).

SELinux state lives in two places: the *persistent* policy store (``/var/lib/selinux``,
changed with ``semanage``/``setsebool -P``; what the kernel loads at boot) and the *runtime*
of a kernel with SELinux enabled (``getsebool``, ``setenforce``, file labels). The store
works whatever the kernel, so on a host where SELinux is disabled converge still manages the
persistent state, and skips the runtime part with a note in plan and report (never a failure,
never silent). When the tools are missing, the resource fails with the package to install.

Probes, one call each for all resources of a kind: ``semanage boolean -l`` (stored values)
and ``getsebool -a`` (running values, when enabled); ``getenforce`` and
``/etc/selinux/config``; ``semanage fcontext -l -C`` (local rules; the full list only when
a rule is not local yet) and one ``restorecon -R -n -v`` over every covered path.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import BatchProvider, Provider, Resource
from converge.resources.file import AbsolutePath

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.host import Host

CONFIG = "/etc/selinux/config"

#: command -> package providing it: (Debian/Ubuntu, RHEL 8+/Fedora, RHEL/CentOS 7)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "semanage": ("policycoreutils-python-utils", "policycoreutils-python-utils",
                 "policycoreutils-python"),
    "setsebool": ("policycoreutils", "policycoreutils", "policycoreutils"),
    "restorecon": ("policycoreutils", "policycoreutils", "policycoreutils"),
    "getsebool": ("selinux-utils", "libselinux-utils", "libselinux-utils"),
    "getenforce": ("selinux-utils", "libselinux-utils", "libselinux-utils"),
    "setenforce": ("selinux-utils", "libselinux-utils", "libselinux-utils"),
}
POLICY_PACKAGES = "selinux-policy-targeted on RHEL, selinux-policy-default on Debian"

DISABLED_NOTE = "SELinux is disabled on this host"


def package_for(command: str, facts: Facts) -> str:
    debian, rhel, rhel7 = PACKAGES[command]
    if facts.is_debian:
        return debian
    if facts.is_redhat:
        return rhel7 if facts.os_major == 7 else rhel
    names = dict.fromkeys([debian, rhel, rhel7])
    return " or ".join(names)


def _missing_tools(commands: Sequence[str], host: Host, facts: Facts) -> str | None:
    missing = [c for c in commands if host.which(c) is None]
    if not missing:
        return None
    packages = sorted({package_for(c, facts) for c in missing})
    return (f"missing command {', '.join(missing)}: the SELinux tools are not installed "
            f"(install {', '.join(packages)})")


def _runtime_mode(host: Host) -> str:
    """``enforcing``, ``permissive`` or ``disabled``, as the SELinux tools see the kernel."""
    return host.run(["getenforce"], timeout=60).stdout.strip().lower() or "disabled"


def _on_off(value: Any) -> Any:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value in (0, 1):
        return "on" if value else "off"
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("on", "true", "1", "yes"):
            return "on"
        if v in ("off", "false", "0", "no"):
            return "off"
    return value  # let pydantic refuse it


OnOff = Annotated[Literal["on", "off"], BeforeValidator(_on_off)]
_BOOL_RE = re.compile(r"^[A-Za-z0-9_]+$")
_TYPE_RE = re.compile(r"^[A-Za-z0-9_]+$")


# == SEBool ===================================================================================


class SEBool(Resource):
    """An SELinux boolean, in the policy store (persistent) and the running kernel."""

    kind = "SEBool"

    name: str = Field(description="Boolean name (`semanage boolean -l`), e.g. "
                      "httpd_can_network_connect.")
    value: OnOff = Field(description="on or off (true/false are accepted).")
    persistent: bool = Field(
        default=True,
        description="Also set it in the policy store, so it survives a reboot (setsebool -P); "
        "false: the running kernel only.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _BOOL_RE.match(v):
            raise ValueError(f"{v!r} is not an SELinux boolean name")
        return v

    def implied_requires(self) -> Iterable[str]:
        yield from _tool_packages()


def _tool_packages() -> Iterable[str]:
    for name in ("policycoreutils", "policycoreutils-python-utils", "policycoreutils-python",
                 "selinux-utils", "libselinux-utils", "selinux-policy-targeted",
                 "selinux-policy-default"):
        yield f"Package[{name}]"


@dataclass(frozen=True, slots=True)
class BoolState:
    persistent: str | None  # "on"/"off" in the policy store; None: no such boolean
    runtime: str | None  # in the running kernel; None when SELinux is disabled
    enabled: bool  # SELinux is enabled in the running kernel
    suggestions: tuple[str, ...] = ()  # for an unknown name


def parse_semanage_booleans(text: str) -> dict[str, tuple[str, str]]:
    """``semanage boolean -l``: ``name (state , default) description`` -> name: (the running
    value, the stored value). With SELinux disabled, both are the stored value."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+\(\s*(on|off)\s*,\s*(on|off)\s*\)", line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3))
    return found


def parse_getsebool(text: str) -> dict[str, str]:
    """``getsebool -a``: ``name --> on`` (``name --> off pending: on`` while a change is not
    committed: the first value is the active one)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) --> (on|off)\b", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def _disabled_bool_note(desired: SEBool) -> str:
    if desired.persistent:
        return (f"{DISABLED_NOTE}: the runtime value is not managed (skipped); the persistent "
                "value applies once SELinux is enabled")
    return f"{DISABLED_NOTE} and persistent=False: nothing to manage (skipped)"


class SetseboolProvider(BatchProvider[SEBool, BoolState]):
    """semanage boolean -l and getsebool -a for every boolean; setsebool [-P] name=value...
    in one call for all the booleans of a generation."""

    name = "setsebool"
    commands = ("semanage", "setsebool", "getsebool")
    exclusive = True  # one setsebool -P (one policy rebuild) for all

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        return _missing_tools(cls.commands, host, facts)

    def probe(self, host: Host, resources: Sequence[SEBool]) -> dict[str, BoolState | None]:
        stored = host.run(["semanage", "boolean", "-l"], check=False, timeout=300)
        if stored.returncode != 0:
            raise ResourceError(
                f"semanage boolean -l failed ({stored.stderr.strip() or stored.returncode}); "
                f"is an SELinux policy installed ({POLICY_PACKAGES})?")
        persistent = parse_semanage_booleans(stored.stdout)
        running = host.run(["getsebool", "-a"], check=False, timeout=120)
        enabled = running.returncode == 0
        if not enabled and "disabled" not in (running.stderr + running.stdout).lower():
            raise CommandError(running.argv, running.returncode, running.stdout,
                               running.stderr)
        runtime = parse_getsebool(running.stdout) if enabled else {}
        result: dict[str, BoolState | None] = {}
        for r in resources:
            if r.name in persistent:
                result[r.key] = BoolState(persistent=persistent[r.name][1],
                                          runtime=runtime.get(r.name), enabled=enabled)
            else:
                near = tuple(difflib.get_close_matches(r.name, sorted(persistent), n=3))
                result[r.key] = BoolState(None, None, enabled, near)
        return result

    def diff(self, desired: SEBool, actual: BoolState | None) -> list[Change]:
        if actual is None:
            raise ResourceError(f"{desired.key}: not probed")
        if actual.persistent is None:
            hint = f"; did you mean {', '.join(actual.suggestions)}?" if actual.suggestions \
                else ""
            raise ResourceError(f"unknown SELinux boolean {desired.name!r} (not in the policy: "
                                f"semanage boolean -l{hint})")
        changes: list[Change] = []
        if desired.persistent and actual.persistent != desired.value:
            changes.append(Change(attribute="persistent", before=actual.persistent,
                                  after=desired.value))
        if actual.enabled:
            if actual.runtime is None:
                raise ResourceError(f"SELinux boolean {desired.name!r} is in the policy store "
                                    "but not in the running policy (getsebool -a)")
            if actual.runtime != desired.value:
                changes.append(Change(attribute="runtime", before=actual.runtime,
                                      after=desired.value))
        return changes

    def notes(self, desired: SEBool, actual: BoolState | None) -> list[str]:
        if actual is None or actual.enabled or actual.persistent is None:
            return []
        return [_disabled_bool_note(desired)]


    def apply_batch(self, host: Host,
                    items: Sequence[tuple[SEBool, BoolState | None, list[Change]]]
                    ) -> dict[str, list[str] | BaseException]:
        """``setsebool -P a=on b=off`` for those whose stored value changes (it sets the
        running value too), ``setsebool c=on`` for those whose running value alone does."""
        stored: list[SEBool] = []
        running: list[SEBool] = []
        for desired, _, changes in items:
            attrs = {c.attribute for c in changes}
            if "persistent" in attrs:
                stored.append(desired)
            elif "runtime" in attrs:
                running.append(desired)
        outcome: dict[str, list[str] | BaseException] = {d.key: [] for d, _, _ in items}
        for flags, group in ((["-P"], stored), ([], running)):
            if not group:
                continue
            try:
                host.run(["setsebool", *flags, *(f"{d.name}={d.value}" for d in group)],
                         timeout=900)
            except CommandError as exc:
                if len(group) == 1:
                    outcome[group[0].key] = exc
                    continue
                for d in group:  # find out which one failed
                    try:
                        host.run(["setsebool", *flags, f"{d.name}={d.value}"], timeout=900)
                    except CommandError as one:
                        outcome[d.key] = one
        return outcome


# == SELinuxMode ==============================================================================


Mode = Literal["enforcing", "permissive", "disabled"]


class SELinuxMode(Resource):
    """The SELinux mode: enforcing, permissive or disabled, now and at boot."""

    kind = "SELinuxMode"

    mode: Mode = Field(
        description="enforcing, permissive or disabled: written to /etc/selinux/config (the "
        "mode at boot) and set in the running kernel (setenforce) when SELinux is enabled. "
        "To or from disabled takes a reboot.")

    @property
    def ident(self) -> str:
        return "selinux"

    def conflict(self, by_key: Mapping[str, Resource]) -> str | None:
        for r in by_key.values():
            if r.kind in ("File", "FileLine") and getattr(r, "path", None) == CONFIG:
                return f"{r.key} also edits {CONFIG}: declare the mode with SELinuxMode only"
        return None

    def implied_requires(self) -> Iterable[str]:
        yield from _tool_packages()


@dataclass(frozen=True, slots=True)
class ModeState:
    runtime: str  # enforcing, permissive or disabled (getenforce)
    config: str | None  # SELINUX= in /etc/selinux/config; None: not set
    config_text: str | None  # the file (None: missing)


def parse_config(text: str) -> str | None:
    """The value of ``SELINUX=`` (the last one wins, as libselinux reads it)."""
    value = None
    for line in text.splitlines():
        key, sep, v = line.strip().partition("=")
        if sep and key.strip() == "SELINUX":
            value = v.strip().strip("\"'").lower()
    return value


def edit_config(text: str, mode: str) -> str:
    """``text`` with every ``SELINUX=`` line set to ``mode`` (one appended if none);
    comments, SELINUXTYPE and everything else kept."""
    lines = text.splitlines(keepends=True)
    found = False
    for i, line in enumerate(lines):
        key, sep, _ = line.strip().partition("=")
        if sep and key.strip() == "SELINUX":
            ending = "\n" if line.endswith("\n") else ""
            lines[i] = f"SELINUX={mode}{ending}"
            found = True
    if not found:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"SELINUX={mode}\n")
    return "".join(lines)


def _reboot_note(desired: SELinuxMode, actual: ModeState) -> str | None:
    if actual.runtime == "disabled" and desired.mode != "disabled":
        return (f"reboot needed: SELinux is disabled in the running kernel, {desired.mode} "
                "takes effect at the next boot (runtime change skipped); files created "
                "meanwhile are unlabelled: relabel at that boot (touch /.autorelabel)")
    if actual.runtime != "disabled" and desired.mode == "disabled":
        return ("reboot needed: SELinux cannot be disabled in a running kernel; it is "
                "permissive until the next boot")
    return None


class SetenforceProvider(Provider[SELinuxMode, ModeState]):
    """getenforce and /etc/selinux/config; setenforce and an in-place edit of the file
    (other settings and comments kept, the old file backed up)."""

    name = "setenforce"
    commands = ("getenforce", "setenforce")

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        return _missing_tools(cls.commands, host, facts)

    def probe(self, host: Host, resources: Sequence[SELinuxMode]
              ) -> dict[str, ModeState | None]:
        runtime = _runtime_mode(host)
        raw = host.read_bytes(CONFIG)
        text = raw.decode("utf-8", "replace") if raw is not None else None
        state = ModeState(runtime=runtime, config=parse_config(text) if text else None,
                          config_text=text)
        return {r.key: state for r in resources}

    def diff(self, desired: SELinuxMode, actual: ModeState | None) -> list[Change]:
        if actual is None:
            raise ResourceError(f"{desired.key}: not probed")
        if actual.config_text is None:
            raise ResourceError(f"{CONFIG} does not exist: is an SELinux policy installed "
                                f"({POLICY_PACKAGES})?")
        changes: list[Change] = []
        if actual.config != desired.mode:
            changes.append(Change(attribute="config", before=actual.config,
                                  after=desired.mode))
        if actual.runtime != "disabled":
            # a running kernel can switch between enforcing and permissive, not to disabled
            want = "permissive" if desired.mode == "disabled" else desired.mode
            if actual.runtime != want:
                changes.append(Change(attribute="runtime", before=actual.runtime, after=want))
        return changes

    def notes(self, desired: SELinuxMode, actual: ModeState | None) -> list[str]:
        if actual is None:
            return []
        note = _reboot_note(desired, actual)
        return [note] if note else []

    def apply(self, host: Host, desired: SELinuxMode, actual: ModeState | None,
              changes: list[Change]) -> list[str]:
        assert actual is not None and actual.config_text is not None
        by = {c.attribute: c for c in changes}
        backups: list[str] = []
        if "config" in by:
            backup = host.backup(CONFIG)
            if backup:
                backups.append(backup)
            host.write_atomic(CONFIG, edit_config(actual.config_text, desired.mode).encode(),
                              uid=None, gid=None, mode=None)
        if "runtime" in by:
            host.run(["setenforce", "1" if by["runtime"].after == "enforcing" else "0"],
                     timeout=60)
        return backups


# == SEFcontext ===============================================================================


FTYPES: dict[str, str] = {
    "a": "all files",
    "f": "regular file",
    "d": "directory",
    "c": "character device",
    "b": "block device",
    "s": "socket",
    "l": "symbolic link",
    "p": "named pipe",
}
_FTYPE_BY_NAME = {v: k for k, v in FTYPES.items()}
_FCONTEXT_RE = re.compile(
    r"^(?P<target>\S.*?)\s+(?P<ftype>" + "|".join(FTYPES.values()) + r")\s+(?P<context>\S+)\s*$")
_REGEX_CHARS = set(".^$*+?()[]{}|\\")


def covered_paths(target: str) -> tuple[str, ...]:
    """The directory a file-context regex covers, for ``restorecon -R``: its fixed leading
    part (``/srv/app/static(/.*)?`` -> ``/srv/app/static``; ``/srv/www/[^/]+/htdocs`` ->
    ``/srv/www``)."""
    prefix: list[str] = []
    i = 0
    rest = ""
    while i < len(target):
        c = target[i]
        if c == "\\" and i + 1 < len(target) and target[i + 1] not in "dwsDWS":
            prefix.append(target[i + 1])
            i += 2
            continue
        if c in _REGEX_CHARS:
            rest = target[i:]
            break
        prefix.append(c)
        i += 1
    fixed = "".join(prefix)
    if rest and not rest.startswith(("(/", "/")) and not fixed.endswith("/"):
        fixed = fixed.rsplit("/", 1)[0]  # the regex goes on inside the last name
    fixed = fixed.rstrip("/") or "/"
    return (fixed,)


class SEFcontext(Resource):
    """An SELinux file-context rule (semanage fcontext) and the labels of the paths it
    covers (restorecon)."""

    kind = "SEFcontext"

    target: str = Field(description="Path regular expression, e.g. '/srv/app/static(/.*)?'.")
    setype: str | None = Field(
        default=None,
        description="SELinux type for the files, e.g. httpd_sys_content_t (required unless "
        "ensure='absent').")
    ftype: Literal["a", "f", "d", "c", "b", "s", "l", "p"] = Field(
        default="a",
        description="File type the rule applies to: a (all files), f (regular files), "
        "d (directories), c, b, s, l, p (as `semanage fcontext -f`).")
    ensure: Literal["present", "absent"] = Field(
        default="present",
        description="absent removes the local rule (rules of the policy itself cannot be "
        "removed).")
    restorecon: bool = Field(
        default=True,
        description="Relabel the covered paths (restorecon -R) when they are not labelled "
        "as the rules say (needs SELinux enabled).")
    paths: list[AbsolutePath] | None = Field(
        default=None,
        description="Paths restorecon relabels; default: the fixed leading part of target "
        "('/srv/app/static(/.*)?' -> /srv/app/static).")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"target must be an absolute path regex, got {v!r}")
        if any(c.isspace() for c in v) or "'" in v or '"' in v:
            raise ValueError(f"target must not contain whitespace or quotes: {v!r}")
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"target {v!r} is not a regular expression: {exc}") from None
        return v

    @field_validator("setype")
    @classmethod
    def _setype(cls, v: str | None) -> str | None:
        if v is not None and not _TYPE_RE.match(v):
            raise ValueError(f"{v!r} is not an SELinux type")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SEFcontext:
        if self.ensure == "present" and self.setype is None:
            raise ValueError("setype is required (unless ensure='absent')")
        return self

    @property
    def ident(self) -> str:
        return self.target if self.ftype == "a" else f"{self.target} ({FTYPES[self.ftype]})"

    @property
    def relabel_paths(self) -> tuple[str, ...]:
        return tuple(self.paths) if self.paths is not None else covered_paths(self.target)

    def implied_requires(self) -> Iterable[str]:
        yield from _tool_packages()
        for p in self.relabel_paths:  # label what exists, once it exists
            yield f"File[{p}]"


@dataclass(frozen=True, slots=True)
class FcontextState:
    local: str | None  # type of the local rule for (target, ftype); None: no local rule
    policy: str | None  # type the policy itself gives it (looked up only without local rule)
    runtime: str  # enforcing, permissive or disabled
    existing: tuple[str, ...] = ()  # covered paths that exist
    mislabelled: tuple[tuple[str, str, str], ...] = ()  # (path, current, wanted) restorecon -n


def parse_fcontexts(text: str) -> dict[tuple[str, str], str]:
    """``semanage fcontext -l [-C]`` -> ``{(target, ftype letter): type}``; equivalence
    sections are skipped."""
    rules: dict[tuple[str, str], str] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("SELinux "):
            section = line
            continue
        if "Equivalence" in section:
            continue
        m = _FCONTEXT_RE.match(line)
        if not m:
            continue
        rules[(m.group("target"), _FTYPE_BY_NAME[m.group("ftype")])] = \
            _type_of(m.group("context"))
    return rules


def _type_of(context: str) -> str:
    parts = context.split(":")
    return parts[2] if len(parts) >= 3 else context


def parse_restorecon(text: str) -> list[tuple[str, str, str]]:
    """``restorecon -n -v``: ``Would relabel PATH from OLD to NEW`` -> (path, old, new)."""
    found = []
    for line in text.splitlines():
        m = re.match(r"^(?:Would relabel|Relabeled) (.+) from (\S+) to (\S+)\s*$", line)
        if m:
            found.append((m.group(1), m.group(2), m.group(3)))
    return found


def _covers(base: str, path: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _disabled_fcontext_note() -> str:
    return (f"{DISABLED_NOTE}: file labels are not checked or restored (restorecon "
            "skipped); the rule applies once SELinux is enabled and the files are relabelled")


class SemanageFcontextProvider(BatchProvider[SEFcontext, FcontextState]):
    """semanage fcontext (all changes of a generation in one ``semanage import``
    transaction), then restorecon -R of the covered paths."""

    name = "semanage"
    commands = ("semanage", "restorecon", "getenforce")
    exclusive = True  # one semanage transaction (one policy rebuild) for all

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        return _missing_tools(cls.commands, host, facts)

    def _list(self, host: Host, *flags: str) -> dict[tuple[str, str], str]:
        res = host.run(["semanage", "fcontext", "-l", *flags], check=False, timeout=300)
        if res.returncode != 0:
            raise ResourceError(
                f"semanage fcontext -l {' '.join(flags)} failed "
                f"({res.stderr.strip() or res.returncode}); is an SELinux policy installed "
                f"({POLICY_PACKAGES})?")
        return parse_fcontexts(res.stdout)

    def probe(self, host: Host, resources: Sequence[SEFcontext]
              ) -> dict[str, FcontextState | None]:
        local = self._list(host, "-C")
        policy: dict[tuple[str, str], str] = {}
        rule = {r.key: (r.target, r.ftype) for r in resources}
        if any(r.ensure == "present" and rule[r.key] not in local for r in resources):
            policy = self._list(host)  # effective rules: the policy's, where none is local
        runtime = _runtime_mode(host)
        existing: dict[str, tuple[str, ...]] = {}
        wrong: list[tuple[str, str, str]] = []
        if runtime != "disabled":
            wanted = {r.key: r.relabel_paths for r in resources if r.restorecon}
            states = host.file_states(sorted({p for ps in wanted.values() for p in ps}))
            for key, paths in wanted.items():
                existing[key] = tuple(p for p in paths if states.get(p) is not None)
            roots = sorted({p for ps in existing.values() for p in ps})
            if roots:
                res = host.run(["restorecon", "-R", "-n", "-v", "--", *roots], timeout=900)
                wrong = parse_restorecon(f"{res.stdout}\n{res.stderr}")  # -v may log to either
        result: dict[str, FcontextState | None] = {}
        for r in resources:
            mine = existing.get(r.key, ())
            result[r.key] = FcontextState(
                local=local.get(rule[r.key]),
                policy=policy.get(rule[r.key]) if rule[r.key] not in local else None,
                runtime=runtime,
                existing=mine,
                mislabelled=tuple(w for w in wrong if any(_covers(p, w[0]) for p in mine)),
            )
        return result

    def diff(self, desired: SEFcontext, actual: FcontextState | None) -> list[Change]:
        if actual is None:
            raise ResourceError(f"{desired.key}: not probed")
        changes: list[Change] = []
        if desired.ensure == "present":
            effective = actual.local or actual.policy
            if effective != desired.setype:
                before = effective if actual.local else \
                    f"{effective} (policy)" if effective else "absent"
                changes.append(Change(attribute="rule", before=before, after=desired.setype))
        elif actual.local is not None:
            changes.append(Change(attribute="rule", before=actual.local, after="absent"))
        if desired.restorecon and actual.runtime != "disabled" and actual.existing:
            paths = " ".join(actual.existing)
            if changes:
                changes.append(Change(attribute="labels", before="as the old rule says",
                                      after=f"restored: restorecon -R {paths}"))
            elif actual.mislabelled:
                n = len(actual.mislabelled)
                path, old, new = actual.mislabelled[0]
                example = f"{path}: {_type_of(old)}, not {_type_of(new)}"
                more = f" and {n - 1} more" if n > 1 else ""
                changes.append(Change(attribute="labels", before=f"{example}{more}",
                                      after=f"restored: restorecon -R {paths}"))
        return changes

    def notes(self, desired: SEFcontext, actual: FcontextState | None) -> list[str]:
        if actual is None or actual.runtime != "disabled" or not desired.restorecon:
            return []
        return [_disabled_fcontext_note()]


    def _command(self, desired: SEFcontext, actual: FcontextState) -> list[str]:
        if desired.ensure == "absent":
            return ["fcontext", "-d", "-f", desired.ftype, desired.target]
        verb = "-m" if actual.local is not None or actual.policy is not None else "-a"
        return ["fcontext", verb, "-f", desired.ftype, "-t", str(desired.setype),
                desired.target]

    def apply_batch(self, host: Host,
                    items: Sequence[tuple[SEFcontext, FcontextState | None, list[Change]]]
                    ) -> dict[str, list[str] | BaseException]:
        """All rule changes in one ``semanage import`` (one transaction, one policy
        rebuild), then one ``restorecon -R`` over the paths of every changed resource."""
        outcome: dict[str, list[str] | BaseException] = {d.key: [] for d, _, _ in items}
        rules: list[tuple[SEFcontext, list[str]]] = []
        for desired, actual, changes in items:
            if actual is None:
                outcome[desired.key] = ResourceError(f"{desired.key}: not probed")
            elif any(c.attribute == "rule" for c in changes):
                rules.append((desired, self._command(desired, actual)))
        if rules:
            script = "".join(" ".join(argv) + "\n" for _, argv in rules)
            try:
                host.run(["semanage", "import"], input=script, timeout=900)
            except CommandError as exc:
                if len(rules) == 1:
                    outcome[rules[0][0].key] = exc
                else:
                    for desired, argv in rules:  # one by one, to know which one failed
                        try:
                            host.run(["semanage", *argv], timeout=900)
                        except CommandError as one:
                            outcome[desired.key] = one
        relabel = sorted({p for desired, actual, changes in items
                          if actual is not None and not isinstance(outcome[desired.key],
                                                                   BaseException)
                          and any(c.attribute == "labels" for c in changes)
                          for p in actual.existing})
        if relabel:
            try:
                host.run(["restorecon", "-R", "--", *relabel], timeout=3600)
            except CommandError as exc:
                for desired, _, changes in items:
                    if any(c.attribute == "labels" for c in changes):
                        outcome[desired.key] = exc
        return outcome


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    "SEBool": [SetseboolProvider],
    "SELinuxMode": [SetenforceProvider],
    "SEFcontext": [SemanageFcontextProvider],
}
