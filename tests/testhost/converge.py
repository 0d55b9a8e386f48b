"""converge installed inside test hosts, run there as a user would run it.

The host's own Python (the image's /usr/bin/python3) gets a virtualenv with converge's
dependencies, built once per image and dependency set into the cache (wheels downloaded on this
machine, installed offline in a volatile nspawn of the image), and bound read-only into hosts at
/opt/converge-venv. The repository is bound read-only at /opt/converge-src and found through a
.pth file, so a host always runs the code under test.

    def test_x(converge_host):
        host = converge_host("web")
        result = host.apply('''
            from converge import File
            def desired(facts, settings):
                yield File(path="/etc/motd", content="hi\\n")
        ''')
        assert result.returncode == 2
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._util import FileLock, cache_dir, remove_tree, run
from .host import Bind, TestHost
from .image import Image

REPO = Path(__file__).resolve().parents[2]
VENV = "/opt/converge-venv"
SRC = "/opt/converge-src"


def _dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return sorted(project["dependencies"])


def venv_dir(image: Image) -> Path:
    """The cached virtualenv for ``image`` (built on first use)."""
    deps = _dependencies()
    digest = hashlib.sha256(json.dumps([image.root.name, deps]).encode()).hexdigest()[:12]
    target = cache_dir() / "venvs" / f"converge-{digest}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f"{target.name}.lock"):
        if (target / ".complete").exists():
            return target
        _build_venv(image, deps, target)
    return target


def _build_venv(image: Image, deps: list[str], target: Path) -> None:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # The image's Python is Debian's 3.11, like this machine's: binary wheels match.
    run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels),
         "--only-binary=:all:", "--python-version", "3.11", "--platform",
         "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", *deps], timeout=600)
    building = target.with_name(target.name + ".building")
    if building.exists():
        remove_tree(building)
    building.mkdir()
    script = (f"python3 -m venv {VENV} && {VENV}/bin/pip install -q --no-index "
              f"--find-links /wheels {' '.join(repr(d) for d in deps)} && "
              f"echo {SRC} > $({VENV}/bin/python -c "
              "'import sysconfig; print(sysconfig.get_path(\"purelib\"))')/converge-src.pth")
    run(["systemd-nspawn", "--quiet", "--directory", str(image.root),
         "--machine", f"cvg-venv-{os.getpid()}", "--register=no", "--keep-unit",
         "--volatile=overlay", "--link-journal=no", f"--bind={building}:{VENV}",
         f"--bind-ro={wheels}:/wheels", "--", "sh", "-c", script], timeout=600)
    (building / ".complete").touch()
    if target.exists():
        shutil.rmtree(target)
    building.rename(target)


def converge_binds(image: Image) -> list[Bind]:
    return [Bind(venv_dir(image), VENV), Bind(REPO, SRC)]


class ConvergeHost:
    """A booted test host with converge installed; runs ``converge`` inside it."""

    def __init__(self, host: TestHost) -> None:
        self.host = host
        self._n = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)

    def write_desired(self, source: str, name: str | None = None) -> str:
        """Put a desired-state file (dedented) into the host; returns its path there."""
        self._n += 1
        path = f"/root/desired/{name or f'desired{self._n}.py'}"
        self.host.put_file(path, textwrap.dedent(source).lstrip("\n"), mode=0o600)
        return path

    def converge(self, *argv: str, env: dict[str, str] | None = None,
                 timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
        """``converge ARGV...`` inside the host (never raises on a non-zero exit)."""
        return self.host.run([f"{VENV}/bin/python", "-m", "converge", *argv], check=False,
                             env=env, timeout=timeout)

    def _file(self, desired: str) -> str:
        return desired if desired.startswith("/") and "\n" not in desired else \
            self.write_desired(desired)

    def apply(self, desired: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Apply a desired-state file (a path in the host, or source text to write first)."""
        return self.converge("apply", self._file(desired), *args, **kw)

    def plan(self, desired: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.converge("plan", self._file(desired), *args, **kw)

    def apply_json(self, desired: str, *args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        r = self.apply(desired, "--json", *args, **kw)
        if not r.stdout.strip():
            raise AssertionError(f"no report (exit {r.returncode}):\n{r.stderr}")
        return r.returncode, json.loads(r.stdout)

    def plan_json(self, desired: str, *args: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        r = self.plan(desired, "--json", *args, **kw)
        if not r.stdout.strip():
            raise AssertionError(f"no plan (exit {r.returncode}):\n{r.stderr}")
        return r.returncode, json.loads(r.stdout)

    def converge_twice(self, desired: str, *args: str) -> dict[str, Any]:
        """The standard pattern: first apply changes (2), second changes nothing (0), plan
        is then empty (0). Returns the first report."""
        path = self._file(desired)
        code, report = self.apply_json(path, *args)
        assert code == 2, f"first apply exited {code}: {json.dumps(report, indent=1)}"
        second = self.apply(path, *args)
        assert second.returncode == 0, f"second apply exited {second.returncode}:\n" \
            f"{second.stdout}\n{second.stderr}"
        plan = self.plan(path, *args)
        assert plan.returncode == 0, f"plan after apply exited {plan.returncode}:\n{plan.stdout}"
        return report


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["resources"]}


def changed_attributes(doc: dict[str, Any], rid: str) -> list[str]:
    return [c["attribute"] for c in by_id(doc)[rid]["changes"]]


def boot_converge_host(image: Image, name: str, binds: Sequence[Bind] = (),
                       **kwargs: Any) -> ConvergeHost:
    host = TestHost(name, image=image, binds=[*converge_binds(image), *binds], **kwargs)
    host.boot()
    return ConvergeHost(host)
