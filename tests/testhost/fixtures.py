"""pytest plugin: throwaway systemd hosts.

Register it in the root conftest: ``pytest_plugins = ["tests.testhost.fixtures"]``.

Fixtures:
    testhost_image  (session) the cached image; skips if this machine cannot boot hosts
                    (not root, tools missing) -- but fails instead when CI=true.
    make_testhost   (function) factory: ``make_testhost("web", binds=[...]) -> TestHost``,
                    booted; every host it made is stopped after the test, pass or fail.
    testhost        (function) one booted host named "testhost".
    converge_host   (function) factory: ``converge_host("web") -> ConvergeHost``, a booted
                    host with converge installed (see converge.py); stopped after the test.

Tests using them get the ``testhost`` marker automatically (deselect with -m "not testhost").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from .converge import ConvergeHost, converge_binds
from .host import TestHost, cleanup_stale
from .image import Image, ensure_image

REQUIRED_TOOLS = (
    "debootstrap",
    "systemd-nspawn",
    "nsenter",
    "setpriv",
    "ip",
    "mount",
    "umount",
    "ssh",
    "ssh-keygen",
)
FIXTURES = frozenset({"testhost_image", "make_testhost", "testhost", "converge_host"})


class MakeTestHost(Protocol):
    def __call__(self, name: str = "testhost", **kwargs: Any) -> TestHost: ...


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def substrate_problems() -> list[str]:
    """Why this machine cannot boot test hosts (empty if it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(
            f"missing {', '.join(missing)} (apt-get install debootstrap systemd-container)"
        )
    if not os.path.exists("/proc/self/ns/pid"):
        problems.append("no /proc namespaces")
    return problems


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "testhost: boots throwaway systemd hosts (systemd-nspawn; needs root, debootstrap, "
        "systemd-container)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.testhost)


@pytest.fixture(scope="session")
def testhost_image() -> Iterator[Image]:
    problems = substrate_problems()
    if problems:
        reason = "throwaway systemd hosts unavailable: " + "; ".join(problems)
        if in_ci():
            pytest.fail(f"{reason} (CI=true, so this is an error, not a skip)", pytrace=False)
        pytest.skip(reason)
    cleanup_stale()  # leftovers of crashed runs
    image = ensure_image()
    try:
        yield image
    finally:
        image.release()


@pytest.fixture
def make_testhost(testhost_image: Image) -> Iterator[MakeTestHost]:
    hosts: list[TestHost] = []

    def make(name: str = "testhost", **kwargs: Any) -> TestHost:
        host = TestHost(name, image=testhost_image, **kwargs)
        hosts.append(host)
        host.boot()
        return host

    yield make
    errors: list[Exception] = []
    for host in reversed(hosts):
        try:
            host.stop()
        except Exception as exc:  # stop the others anyway
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def testhost(make_testhost: MakeTestHost) -> TestHost:
    return make_testhost("testhost")


class MakeConvergeHost(Protocol):
    def __call__(self, name: str = "testhost", **kwargs: Any) -> ConvergeHost: ...


@pytest.fixture
def converge_host(make_testhost: MakeTestHost, testhost_image: Image) -> MakeConvergeHost:
    def make(name: str = "testhost", **kwargs: Any) -> ConvergeHost:
        binds = [*converge_binds(testhost_image), *kwargs.pop("binds", ())]
        return ConvergeHost(make_testhost(name, binds=binds, **kwargs))

    return make
