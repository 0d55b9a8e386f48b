"""Platform facts a desired-state file branches on.

Gathered without spawning a process (``/etc/os-release``, ``/proc/1/comm``, ``PATH`` look-ups,
``/sys/fs/selinux``), or taken from a named preset (``--facts rhel-7``) to render another
platform's catalog without probing it.
"""

from __future__ import annotations

import platform
import socket
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from converge.errors import UsageError

if TYPE_CHECKING:
    from converge.host import Host

_REDHAT = {"rhel", "centos", "rocky", "almalinux", "fedora", "ol"}
_DEBIAN = {"debian", "ubuntu", "raspbian"}


@dataclass(frozen=True, slots=True)
class Facts:
    """What converge knows about the target platform."""

    os_id: str = "unknown"  # debian, ubuntu, rhel, centos, rocky, ...
    os_family: str = "unknown"  # debian or redhat
    os_version: str = ""  # "12", "22.04", "7"
    init: str = "unknown"  # systemd or something else (PID 1's name)
    pkg_manager: str | None = None  # apt, dnf, yum
    selinux: str = "absent"  # enforcing, permissive, disabled, absent
    hostname: str = "localhost"
    python_version: str = ""
    preset: str | None = None  # set when these facts are a preset, not a probe

    @property
    def os_major(self) -> int:
        head = self.os_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def is_redhat(self) -> bool:
        return self.os_family == "redhat"

    @property
    def is_debian(self) -> bool:
        return self.os_family == "debian"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def gather(cls, host: Host) -> Facts:
        release = _parse_os_release((host.read_bytes("/etc/os-release") or b"").decode())
        os_id = release.get("ID", "unknown")
        like = set(release.get("ID_LIKE", "").split()) | {os_id}
        family = "redhat" if like & _REDHAT else "debian" if like & _DEBIAN else "unknown"
        init = (host.read_bytes("/proc/1/comm") or b"unknown").decode().strip()
        order = ("apt-get", "dnf", "yum") if family == "debian" else ("dnf", "yum", "apt-get")
        pkg = next((p for p in order if host.which(p)), None)
        return cls(
            os_id=os_id,
            os_family=family,
            os_version=release.get("VERSION_ID", ""),
            init="systemd" if init == "systemd" else init,
            pkg_manager="apt" if pkg == "apt-get" else pkg,
            selinux=_selinux_state(host),
            hostname=(host.read_bytes("/proc/sys/kernel/hostname") or b"").decode().strip()
            or socket.gethostname(),
            python_version=platform.python_version(),
        )


def _parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


def _selinux_state(host: Host) -> str:
    enforce = host.read_bytes("/sys/fs/selinux/enforce")
    if enforce is not None:
        return "enforcing" if enforce.strip() == b"1" else "permissive"
    if host.which("getenforce") or host.read_bytes("/etc/selinux/config") is not None:
        return "disabled"
    return "absent"


_RH = Facts(os_family="redhat", init="systemd", selinux="enforcing", hostname="rhel")
_DEB = Facts(os_family="debian", init="systemd", selinux="absent", pkg_manager="apt")

PRESETS: dict[str, Facts] = {
    "rhel-7": replace(_RH, os_id="rhel", os_version="7", pkg_manager="yum", python_version="3.6.8"),
    "rhel-8": replace(_RH, os_id="rhel", os_version="8", pkg_manager="dnf", python_version="3.6.8"),
    "rhel-9": replace(_RH, os_id="rhel", os_version="9", pkg_manager="dnf",
                      python_version="3.9.18"),
    "centos-7": replace(_RH, os_id="centos", os_version="7", pkg_manager="yum",
                        python_version="3.6.8"),
    "rocky-9": replace(_RH, os_id="rocky", os_version="9", pkg_manager="dnf",
                       python_version="3.9.18"),
    "debian-12": replace(_DEB, os_id="debian", os_version="12", hostname="debian",
                         python_version="3.11.2"),
    "debian-13": replace(_DEB, os_id="debian", os_version="13", hostname="debian",
                         python_version="3.13.5"),
    "ubuntu-22.04": replace(_DEB, os_id="ubuntu", os_version="22.04", hostname="ubuntu",
                            python_version="3.10.12"),
    "ubuntu-24.04": replace(_DEB, os_id="ubuntu", os_version="24.04", hostname="ubuntu",
                            python_version="3.12.3"),
}


def preset(name: str) -> Facts:
    """The facts of a named platform, for rendering its catalog without probing it."""
    try:
        return replace(PRESETS[name], preset=name)
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise UsageError(f"unknown facts preset {name!r}; known presets: {known}") from None
