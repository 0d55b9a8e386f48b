"""Tiny test packages and repositories, built on this machine with the real tools.

- RPMs: noarch, one file each (``/usr/share/NAME/version``), built with ``rpmbuild -bb`` from a
  generated spec; a yum repository is ``createrepo_c`` over a directory of them, with an
  optional comps file for groups (``@cvg-tools``).
- debs: ``Architecture: all``, built with ``dpkg-deb --build``; a flat apt repository is a
  directory of them with a ``Packages`` index and a ``Release`` file written here (the fields
  ``dpkg-scanpackages`` would write), used as ``deb [trusted=yes] file:DIR ./``.

Packages are built once per session into a cache (:class:`PackageBuilder`); a test copies the
ones it wants into its own repository directory, so that it can add a newer version later.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

RPM_SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: converge test package {name}
License: MIT
BuildArch: noarch
{requires}
%description
A tiny package built by converge's tests.

%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo {version}-{release} > %{{buildroot}}/usr/share/{name}/version

%files
/usr/share/{name}/version
"""

COMPS_GROUP = """\
  <group>
    <id>{id}</id>
    <name>{name}</name>
    <description>converge test group {id}</description>
    <default>false</default>
    <uservisible>true</uservisible>
    <packagelist>
{packages}
    </packagelist>
  </group>
"""


def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n"
                           f"{proc.stderr}")
    return proc.stdout


def build_rpm(out_dir: Path, name: str, version: str, release: str = "1",
              requires: Iterable[str] = ()) -> Path:
    """Build NAME-VERSION-RELEASE.noarch.rpm into out_dir and return its path."""
    work = out_dir / f".build-{name}-{version}-{release}"
    if work.exists():
        shutil.rmtree(work)
    (work / "home").mkdir(parents=True)
    spec = work / f"{name}.spec"
    spec.write_text(RPM_SPEC.format(
        name=name, version=version, release=release,
        requires="\n".join(f"Requires: {r}" for r in requires)))
    # HOME of its own: no ~/.rpmmacros of this machine's user leaks into the build.
    env = {**os.environ, "HOME": str(work / "home")}
    # --nodeps: this machine has no rpm database, BuildRequires checks mean nothing here.
    _run(["rpmbuild", "-bb", "--nodeps", "--quiet",
          "--define", f"_topdir {work}", "--define", f"_rpmdir {work / 'rpms'}", str(spec)],
         env=env)
    built = next((work / "rpms" / "noarch").glob("*.rpm"))
    target = out_dir / built.name
    built.replace(target)
    shutil.rmtree(work)
    return target


def make_rpm_repo(repo: Path, rpms: Iterable[Path],
                  groups: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Copy rpms into repo and (re)index it with createrepo_c; groups: id -> package names."""
    repo.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy2(rpm, repo / rpm.name)
    argv = ["createrepo_c", "--quiet", "--simple-md-filenames"]
    if groups:
        comps = repo.parent / f".{repo.name}-comps.xml"
        body = "".join(
            COMPS_GROUP.format(id=escape(gid), name=escape(gid.replace("-", " ").title()),
                               packages="\n".join(
                                   f'      <packagereq type="mandatory">{escape(p)}'
                                   "</packagereq>" for p in pkgs))
            for gid, pkgs in groups.items())
        comps.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                         '<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" '
                         '"comps.dtd">\n<comps>\n' + body + "</comps>\n")
        argv += ["--groupfile", str(comps)]
    if (repo / "repodata").exists():
        shutil.rmtree(repo / "repodata")  # a fresh index; --update would keep stale groups
    _run([*argv, str(repo)])
    return repo


def build_deb(out_dir: Path, name: str, version: str, depends: Iterable[str] = ()) -> Path:
    """Build NAME_VERSION_all.deb into out_dir and return its path."""
    root = out_dir / f".build-{name}-{version}"
    if root.exists():
        shutil.rmtree(root)
    (root / "DEBIAN").mkdir(parents=True)
    share = root / "usr" / "share" / name
    share.mkdir(parents=True)
    (share / "version").write_text(f"{version}\n")
    control = [f"Package: {name}", f"Version: {version}", "Architecture: all",
               "Maintainer: converge tests <tests@example.invalid>", "Section: misc",
               "Priority: optional"]
    deps = list(depends)
    if deps:
        control.append(f"Depends: {', '.join(deps)}")
    control.append(f"Description: converge test package {name}\n tiny")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    target = out_dir / f"{name}_{version}_all.deb"
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(target)])
    shutil.rmtree(root)
    return target


def make_deb_repo(repo: Path, debs: Iterable[Path]) -> Path:
    """Copy debs into repo and write its flat index (Packages, Packages.gz, Release)."""
    repo.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, repo / deb.name)
    stanzas = []
    for deb in sorted(repo.glob("*.deb")):
        control = _run(["dpkg-deb", "--field", str(deb)]).rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(
            f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    packages = "\n".join(stanzas).encode()
    (repo / "Packages").write_bytes(packages)
    (repo / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    lines = ["Origin: converge-tests", "Label: converge-tests", "Suite: ./",
             f"Date: {email.utils.formatdate(usegmt=True)}", "SHA256:"]
    for index in ("Packages", "Packages.gz"):
        blob = (repo / index).read_bytes()
        lines.append(f" {hashlib.sha256(blob).hexdigest()} {len(blob)} {index}")
    (repo / "Release").write_text("\n".join(lines) + "\n")
    return repo


class PackageBuilder:
    """Builds each package once per session (into ``cache``) and hands out its path."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)
        self._built: dict[tuple[str, ...], Path] = {}

    def rpm(self, name: str, version: str, requires: Iterable[str] = ()) -> Path:
        reqs = tuple(requires)
        key = ("rpm", name, version, *reqs)
        if key not in self._built:
            self._built[key] = build_rpm(self.cache, name, version, requires=reqs)
        return self._built[key]

    def deb(self, name: str, version: str, depends: Iterable[str] = ()) -> Path:
        deps = tuple(depends)
        key = ("deb", name, version, *deps)
        if key not in self._built:
            self._built[key] = build_deb(self.cache, name, version, depends=deps)
        return self._built[key]
