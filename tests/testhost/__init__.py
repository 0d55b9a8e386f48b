"""Throwaway systemd test hosts: systemd-nspawn containers booted from a cached Debian image.

In tests (plugin ``tests.testhost.fixtures``)::

    def test_something(make_testhost):
        web = make_testhost("web")            # booted, own overlay, 10.250.N.2, sshd
        web.install("nginx")                  # prefetched on this machine, installed offline
        web.run(["systemctl", "is-active", "nginx"])
        subprocess.run(web.ssh_argv("hostname"), check=True)

By hand: ``python -m tests.testhost --help``. Needs root, debootstrap and systemd-container.
"""

from __future__ import annotations

from ._util import CommandFailed, TestHostError
from .host import Bind, TestHost, cleanup_stale, list_hosts
from .image import Image, Recipe, ensure_image, prefetch

__all__ = [
    "Bind",
    "CommandFailed",
    "Image",
    "Recipe",
    "TestHost",
    "TestHostError",
    "cleanup_stale",
    "ensure_image",
    "list_hosts",
    "prefetch",
]
