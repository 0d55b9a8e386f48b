"""Package: installed, at the latest version, at an exact version, or absent.

Providers: ``apt`` (dpkg inventory), ``dnf`` and ``yum`` (rpm inventory), chosen by the
commands the host has, in that order: a Debian host with dnf installed (to build RPMs, say) still
manages its packages with apt unless ``provider="dnf"`` says otherwise, and RHEL 8+ (which has
both dnf and a yum alias) uses dnf. One inventory query per probe (``rpm -qa``/``dpkg-query
-W``), one repository query for the packages that follow ``latest``, one transaction per kind of
operation. The package manager holds a lock, so its provider is exclusive: package operations
never overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import BatchProvider, Provider, Resource

if TYPE_CHECKING:
    from converge.facts import Facts
    from converge.host import Host

_NAME = re.compile(r"^@?[A-Za-z0-9][A-Za-z0-9._+:-]*$")


class Package(Resource):
    """A system package (or a dnf/yum group, ``@development``)."""

    kind = "Package"

    name: str = Field(description="Package name, or @group for a dnf/yum group.")
    ensure: str = Field(
        default="present",
        description="present, latest, absent, or a version (e.g. '1.2' or '1.2-3.el7').",
    )
    source: str | None = Field(
        default=None,
        description="Install from this package file or URL (e.g. the PGDG repo RPM); the "
        "package is still probed by `name`.",
    )
    install_options: list[str] = Field(
        default_factory=list, description="Extra arguments for the install command.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a package name")
        return v

    @field_validator("ensure")
    @classmethod
    def _ensure(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("ensure must be present, latest, absent or a version")
        return v

    @model_validator(mode="after")
    def _group(self) -> Package:
        if self.is_group and self.version is not None:
            raise ValueError("a package group (@name) has no version: use present, latest "
                             "or absent")
        if self.is_group and self.source is not None:
            raise ValueError("a package group (@name) cannot be installed from a source")
        return self

    @property
    def is_group(self) -> bool:
        return self.name.startswith("@")

    @property
    def version(self) -> str | None:
        return None if self.ensure in ("present", "installed", "latest", "absent") else \
            self.ensure

    def requires_kinds(self) -> Iterable[str]:
        # Repositories must be configured before any package is installed (apt has none).
        return () if self.provider == "apt" else ("YumRepo",)


@dataclass(frozen=True, slots=True)
class Installed:
    """A package as found: installed versions, and the best version the repositories offer."""

    versions: tuple[str, ...]  # [epoch:]version-release, as the package manager prints them
    candidate: str | None = None  # only probed for ensure=latest


def version_matches(wanted: str, installed: str) -> bool:
    """'1.2' matches '1.2-3.el7' and '0:1.2-3.el7'; '1.2-3.el7' matches exactly."""
    bare = installed.split(":", 1)[1] if ":" in installed else installed
    return wanted in (installed, bare) or bare.startswith(wanted + "-") or \
        bare.startswith(wanted + "+")


def rpmvercmp(a: str, b: str) -> int:
    """rpm's version comparison (epoch:version-release); -1, 0 or 1."""

    def split_evr(s: str) -> tuple[int, str, str]:
        epoch, _, rest = s.rpartition(":") if ":" in s else ("0", "", s)
        version, _, release = rest.partition("-")
        return int(epoch or 0), version, release

    def cmp(x: str, y: str) -> int:
        if x == y:
            return 0
        xs = re.findall(r"~|\^|\d+|[A-Za-z]+", x)
        ys = re.findall(r"~|\^|\d+|[A-Za-z]+", y)
        while xs or ys:
            p = xs.pop(0) if xs else None
            q = ys.pop(0) if ys else None
            if p == "~" or q == "~":
                if p != q:
                    return -1 if p == "~" else 1
                continue
            if p == "^" or q == "^":
                if p is None:
                    return -1
                if q is None:
                    return 1
                if p != q:  # '^' sorts after the end of a version, before anything else
                    return -1 if p == "^" else 1
                continue
            if p is None:
                return -1
            if q is None:
                return 1
            if p.isdigit() != q.isdigit():
                return 1 if p.isdigit() else -1
            if p.isdigit():
                pi, qi = int(p), int(q)
                if pi != qi:
                    return 1 if pi > qi else -1
            elif p != q:
                return 1 if p > q else -1
        return 0

    ea, va, ra = split_evr(a)
    eb, vb, rb = split_evr(b)
    if ea != eb:
        return 1 if ea > eb else -1
    by_version = cmp(va, vb)
    if by_version:
        return by_version
    if ra and rb:
        return cmp(ra, rb)
    # As rpm orders them: a missing release sorts before any release.
    return 1 if ra else -1 if rb else 0


def dpkg_vercmp(a: str, b: str) -> int:
    """dpkg's version comparison (epoch:upstream-revision); -1, 0 or 1."""

    def order(c: str) -> int:
        if c == "~":
            return -1
        if c == "" or c.isdigit():
            return 0
        if c.isalpha():
            return ord(c)
        return ord(c) + 256

    def verrevcmp(x: str, y: str) -> int:
        i = j = 0
        while i < len(x) or j < len(y):
            while (i < len(x) and not x[i].isdigit()) or (j < len(y) and not y[j].isdigit()):
                ac = order(x[i] if i < len(x) else "")
                bc = order(y[j] if j < len(y) else "")
                if ac != bc:
                    return ac - bc
                i, j = i + 1, j + 1
            while i < len(x) and x[i] == "0":
                i += 1
            while j < len(y) and y[j] == "0":
                j += 1
            first_diff = 0
            while i < len(x) and x[i].isdigit() and j < len(y) and y[j].isdigit():
                if not first_diff:
                    first_diff = ord(x[i]) - ord(y[j])
                i, j = i + 1, j + 1
            if i < len(x) and x[i].isdigit():
                return 1
            if j < len(y) and y[j].isdigit():
                return -1
            if first_diff:
                return first_diff
        return 0

    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return 1 if ea > eb else -1
    result = verrevcmp(ua, ub) or verrevcmp(ra, rb)
    return (result > 0) - (result < 0)


class _PackageProvider(BatchProvider[Package, Installed]):
    exclusive = True
    #: Markers of "no repository offers this package" in the package manager's output.
    not_found: ClassVar[tuple[str, ...]] = ()

    # -- diff (shared) --------------------------------------------------------------------------

    def diff(self, desired: Package, actual: Installed | None) -> list[Change]:
        ensure = desired.ensure
        if ensure == "absent":
            if actual is None:
                return []
            return [Change(attribute="ensure", before=", ".join(actual.versions) or "present",
                           after="absent")]
        if actual is None:
            after = desired.version or ("latest" if ensure == "latest" else "present")
            return [Change(attribute="ensure", before="absent", after=after)]
        if desired.version is not None:
            if any(version_matches(desired.version, v) for v in actual.versions):
                return []
            return [Change(attribute="version", before=", ".join(actual.versions),
                           after=desired.version)]
        if ensure == "latest" and actual.candidate is not None and not any(
            self.same_version(actual.candidate, v) for v in actual.versions
        ) and all(self.compare(actual.candidate, v) > 0 for v in actual.versions):
            return [Change(attribute="version", before=", ".join(actual.versions),
                           after=actual.candidate)]
        return []

    def same_version(self, a: str, b: str) -> bool:
        return self.compare(a, b) == 0

    def compare(self, a: str, b: str) -> int:
        raise NotImplementedError

    # -- apply: one transaction per operation ---------------------------------------------------


    def apply_batch(
        self, host: Host, items: Sequence[tuple[Package, Installed | None, list[Change]]]
    ) -> dict[str, list[str] | BaseException]:
        """One command per operation (install, upgrade, remove...); a failed batch is retried
        one package at a time so that one bad package fails alone."""
        ops: dict[str, list[Package]] = {}
        for desired, actual, _changes in items:
            ops.setdefault(self.operation(desired, actual), []).append(desired)
        outcome: dict[str, list[str] | BaseException] = {}
        for op, group in ops.items():
            try:
                self.run_operation(host, op, group)
                outcome.update({d.key: [] for d in group})
            except CommandError as exc:
                if len(group) == 1:
                    outcome[group[0].key] = self.explain(exc, group[0])
                    continue
                for d in group:
                    try:
                        self.run_operation(host, op, [d])
                        outcome[d.key] = []
                    except CommandError as one:
                        outcome[d.key] = self.explain(one, d)
        return outcome

    def explain(self, exc: CommandError, package: Package) -> ResourceError:
        """A clearer error when no repository offers the package (the command's output kept)."""
        text = f"{exc.stdout}\n{exc.stderr}"
        needle = package.name.lstrip("@")
        for line in text.splitlines():
            if needle in line and any(m in line for m in self.not_found):
                what = f"{package.name} {package.version}" if package.version else package.name
                return ResourceError(
                    f"{what} is not available from any enabled repository\n{exc}")
        return exc

    def operation(self, desired: Package, actual: Installed | None) -> str:
        if desired.ensure == "absent":
            return "remove"
        if desired.source is not None and actual is None:
            return "install-source"
        if actual is None:
            return "install"
        if desired.version is not None:
            lower = any(self.compare(desired.version, v) < 0 for v in actual.versions)
            return "downgrade" if lower else "upgrade-to"
        return "upgrade"

    def run_operation(self, host: Host, op: str, packages: list[Package]) -> None:
        raise NotImplementedError


def _spec(p: Package, sep: str) -> str:
    return f"{p.name}{sep}{p.version}" if p.version else p.name


class DnfProvider(_PackageProvider):
    """dnf (RHEL 8+, Fedora); also drives yum on RHEL 7 through :class:`YumProvider`."""

    name = "dnf"
    tool: ClassVar[str] = "dnf"
    commands = ("dnf", "rpm")
    not_found = ("Unable to find a match", "No match for argument", "No package ",
                 "is not available")  # the last: "Module or Group 'x' is not available."

    def base(self) -> list[str]:
        # A broken repository must fail the run, not be skipped silently (as it is when
        # dnf.conf says skip_if_unavailable=True, like Debian's). A repository may still opt
        # in with its own skip_if_unavailable=1.
        return [self.tool, "-y", "-q", "--setopt=skip_if_unavailable=False"]

    def compare(self, a: str, b: str) -> int:
        return rpmvercmp(a, b)

    def probe(self, host: Host, resources: Sequence[Package]) -> dict[str, Installed | None]:
        out = host.run(["rpm", "-qa", "--qf", r"%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n"])
        inventory: dict[str, list[str]] = {}
        for line in out.stdout.splitlines():
            name, _, evr = line.partition("\t")
            if evr.startswith("0:"):
                evr = evr[2:]
            inventory.setdefault(name, []).append(evr)
        groups = self._installed_groups(host) if any(r.is_group for r in resources) else set()
        latest = [r.name for r in resources if r.ensure == "latest" and not r.is_group
                  and r.name in inventory]
        candidates = self._updates(host, latest) if latest else {}
        result: dict[str, Installed | None] = {}
        for r in resources:
            if r.is_group:
                result[r.key] = Installed(("group",)) if r.name[1:].lower() in groups else None
                continue
            versions = inventory.get(r.name)
            result[r.key] = Installed(tuple(sorted(versions)), candidates.get(r.name)) \
                if versions else None
        return result

    def _updates(self, host: Host, names: list[str]) -> dict[str, str]:
        """The newer versions the repositories offer (``check-update`` exits 100 when any).

        The repositories' metadata is what the package manager has cached, refreshed when it
        is older than the repository's ``metadata_expire``, as for any dnf command."""
        res = host.run([*self.base(), "check-update", *names], check=False, timeout=1800)
        if res.returncode not in (0, 100):
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
        updates: dict[str, str] = {}
        lines = res.stdout.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line[0].isspace():
                continue  # blank, or an obsoleted package under "Obsoleting Packages"
            parts = line.split()
            # a long name is printed alone, its version and repository on the next line
            if len(parts) == 1 and i < len(lines) and lines[i][:1].isspace() \
                    and len(lines[i].split()) == 2:
                parts += lines[i].split()
                i += 1
            if len(parts) != 3 or "." not in parts[0]:
                continue
            name = parts[0].rsplit(".", 1)[0]
            if name in names and name not in updates:
                updates[name] = parts[1][2:] if parts[1].startswith("0:") else parts[1]
        return updates

    def _installed_groups(self, host: Host) -> set[str]:
        """Ids and names (lower case) of the installed groups, from ``group list -v``: the
        indented lines under an ``Installed ... Groups:`` heading (works with yum and dnf)."""
        res = host.run([self.tool, "group", "list", "-v"], check=False, timeout=1800)
        found: set[str] = set()
        if res.returncode != 0:
            if "No group data available" in res.stderr:
                return found  # no repository has groups: none can be installed
            raise CommandError(res.argv, res.returncode, res.stdout, res.stderr)
        installed = False
        for line in res.stdout.splitlines():
            if not line.strip():
                continue
            if not line[0].isspace():
                installed = line.rstrip().endswith(":") and line.startswith("Installed")
                continue
            if installed:
                entry = line.strip()
                m = re.match(r"^(.*?)\s*\(([^()]+)\)$", entry)
                if m:
                    found.update({m.group(1).lower(), m.group(2).lower()})
                else:
                    found.add(entry.lower())
        return found

    def run_operation(self, host: Host, op: str, packages: list[Package]) -> None:
        extra = [o for p in packages for o in p.install_options]
        if op == "remove":
            # only what was asked (and what needs it), not the dependencies it pulled in:
            # one of them may be declared on its own
            host.run([*self.base(), "--setopt=clean_requirements_on_remove=False", "remove",
                      *[p.name for p in packages]], timeout=1800)
        elif op == "install-source":
            host.run([*self.base(), "install", *extra, *[str(p.source) for p in packages]],
                     timeout=1800)
        elif op == "install":
            host.run([*self.base(), "install", *extra, *[_spec(p, "-") for p in packages]],
                     timeout=1800)
        elif op == "downgrade":
            host.run([*self.base(), "downgrade", *extra, *[_spec(p, "-") for p in packages]],
                     timeout=1800)
        elif op in ("upgrade", "upgrade-to"):
            host.run([*self.base(), "upgrade", *extra, *[_spec(p, "-") for p in packages]],
                     timeout=1800)
        else:  # pragma: no cover
            raise ResourceError(f"unknown package operation {op}")


class YumProvider(DnfProvider):
    """yum (RHEL/CentOS 7): the same command line as dnf for what converge uses."""

    name = "yum"
    tool = "yum"
    commands = ("yum", "rpm")


#: dpkg's status letters (second letter of ``db:Status-Abbrev``) of an installed package:
#: installed, triggers awaited, triggers pending.
_DPKG_INSTALLED = frozenset("iWt")


class AptProvider(_PackageProvider):
    """apt-get with dpkg's inventory; never prompts (DEBIAN_FRONTEND=noninteractive)."""

    name = "apt"
    commands = ("apt-get", "dpkg-query", "apt-cache")
    env: ClassVar[dict[str, str]] = {"DEBIAN_FRONTEND": "noninteractive"}
    not_found = ("Unable to locate package", "has no installation candidate", "was not found")
    #: apt's own helper, present wherever apt is: downloads a URL source without curl/wget
    helper: ClassVar[str] = "/usr/lib/apt/apt-helper"

    @classmethod
    def unusable(cls, host: Host, facts: Facts) -> str | None:
        why = super().unusable(host, facts)
        if why is None and facts.os_family == "redhat":
            return "the host is redhat-family (apt is tried first: it must not win there)"
        return why

    def compare(self, a: str, b: str) -> int:
        return dpkg_vercmp(a, b)

    def diff(self, desired: Package, actual: Installed | None) -> list[Change]:
        if desired.is_group:
            raise ResourceError(f"{desired.name}: package groups are a dnf/yum feature, apt "
                                "has none (a metapackage is a plain package)")
        return super().diff(desired, actual)

    def probe(self, host: Host, resources: Sequence[Package]) -> dict[str, Installed | None]:
        out = host.run(["dpkg-query", "-W", "-f", r"${Package}\t${Version}\t${db:Status-Abbrev}\n"])
        inventory: dict[str, str] = {}
        for line in out.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[2][1:2] in _DPKG_INSTALLED:
                inventory[parts[0]] = parts[1]
        latest = [r.name for r in resources if r.ensure == "latest" and r.name in inventory]
        candidates = {n: p[0] for n, p in self._policy(host, latest).items() if p[0]} \
            if latest else {}
        result: dict[str, Installed | None] = {}
        for r in resources:
            v = inventory.get(r.name)
            result[r.key] = Installed((v,), candidates.get(r.name)) if v else None
        return result

    def _policy(self, host: Host, names: list[str]) -> dict[str, tuple[str | None, list[str]]]:
        """``apt-cache policy``: per package, the candidate and every version the package
        lists offer (as of the last ``apt-get update``)."""
        res = host.run(["apt-cache", "policy", *names])
        found: dict[str, tuple[str | None, list[str]]] = {}
        current: str | None = None
        for line in res.stdout.splitlines():
            if line and not line[0].isspace() and line.endswith(":"):
                current = line[:-1]
                found[current] = (None, [])
                continue
            if current is None:
                continue
            stripped = line.strip()
            if stripped.startswith("Candidate:"):
                cand = stripped.split(":", 1)[1].strip()
                found[current] = (None if cand == "(none)" else cand, found[current][1])
            elif line.startswith(("     ", " *** ")) and not line.startswith("        "):
                parts = line.replace("***", "").split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    found[current][1].append(parts[0])
        return found

    def _versioned_specs(self, host: Host, packages: list[Package]) -> list[str]:
        """name=VERSION with the exact version the lists offer that ``ensure`` means ('1.2'
        is '1.2-3'); an unknown version is passed as given, for apt to say it is not found."""
        wanted = [p.name for p in packages if p.version]
        offered = self._policy(host, wanted) if wanted else {}
        specs = []
        for p in packages:
            if p.version is None:
                specs.append(p.name)
                continue
            matching = [v for v in offered.get(p.name, (None, []))[1]
                        if version_matches(p.version, v)]
            best = max(matching, key=cmp_to_key(dpkg_vercmp)) if matching else p.version
            specs.append(f"{p.name}={best}")
        return specs

    def run_operation(self, host: Host, op: str, packages: list[Package]) -> None:
        base = ["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confdef",
                "-o", "Dpkg::Options::=--force-confold",
                # wait for a running apt (apt-daily, unattended-upgrades) rather than fail
                "-o", "DPkg::Lock::Timeout=300"]
        extra = [o for p in packages for o in p.install_options]
        if op == "remove":
            host.run([*base, "remove", *[p.name for p in packages]], env=self.env, timeout=1800)
            return
        if op == "install-source":
            self._install_sources(host, base, extra, packages)
            return
        flags = ["--allow-downgrades"] if op == "downgrade" else []
        if op == "upgrade":
            flags.append("--only-upgrade")
        host.run([*base, "install", *flags, *extra, *self._versioned_specs(host, packages)],
                 env=self.env, timeout=1800)

    def _install_sources(self, host: Host, base: list[str], extra: list[str],
                         packages: list[Package]) -> None:
        specs: list[str] = []
        tmp: str | None = None
        try:
            for p in packages:
                src = str(p.source)
                if "://" in src:
                    if tmp is None:
                        tmp = host.run(["mktemp", "-d", "/tmp/converge-deb.XXXXXXXX"]
                                       ).stdout.strip()
                    name = src.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
                    target = f"{tmp}/{len(specs)}-{name if name.endswith('.deb') else 'p.deb'}"
                    host.run([self.helper, "download-file", src, target], timeout=1800)
                    specs.append(target)
                else:
                    specs.append(src if src.startswith(("/", "./")) else f"./{src}")
            host.run([*base, "install", *extra, *specs], env=self.env, timeout=1800)
        finally:
            if tmp is not None:
                host.remove(tmp, recursive=True)


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {
    # apt first: a Debian host with dnf installed keeps apt (see the module docstring)
    "Package": [AptProvider, DnfProvider, YumProvider],
}
