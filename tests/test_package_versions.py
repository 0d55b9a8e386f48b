"""Version ordering checked against the real tools: `dpkg --compare-versions` and rpm's own
vercmp (through rpm's Lua interpreter)."""

from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest

from converge.resources.package import dpkg_vercmp, rpmvercmp, version_matches

VERSIONS = [
    "1.0", "1.0-1", "1.0-2", "1.0~rc1", "1.0~rc1-1", "1:0.9", "1.0a", "1.0.1", "1.00",
    "1.10", "1.9", "2.0+deb12u1-1", "2.0-1+deb12u1", "2.0-1+deb12u2", "0:1.0", "1.0^git1",
    "7.74.0-1.3+deb11u7", "7.88.1-10+deb12u5", "3.4.15-1.el7", "3.4.15-2.el7_9",
]


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg not installed")
def test_dpkg_order_matches_dpkg() -> None:
    pairs = [(a, b) for a, b in itertools.combinations(VERSIONS, 2) if "^" not in a + b]
    for a, b in pairs:
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
        expected = 0 if eq else (-1 if lt else 1)
        assert dpkg_vercmp(a, b) == expected, (a, b)


@pytest.mark.skipif(shutil.which("rpm") is None, reason="rpm not installed")
def test_rpm_order_matches_rpm() -> None:
    pairs = list(itertools.combinations(VERSIONS, 2))
    table = ",".join(f"{{'{a}','{b}'}}" for a, b in pairs)
    lua = (f"for _,p in ipairs({{{table}}}) do local a,b=rpm.ver(p[1]),rpm.ver(p[2]); "
           "print((a==b and 0 or (a<b and -1 or 1))..' ') end")
    out = subprocess.run(["rpm", "--eval", f"%{{lua:{lua}}}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert len(out) == len(pairs)
    for (a, b), got in zip(pairs, out, strict=True):
        assert rpmvercmp(a, b) == sign(int(got)), (a, b, got)


def test_version_matches() -> None:
    assert version_matches("1.2", "1.2-3.el7")
    assert version_matches("1.2-3.el7", "1.2-3.el7")
    assert version_matches("1.2", "1:1.2-3.el7")
    assert version_matches("1:1.2-3.el7", "1:1.2-3.el7")
    assert not version_matches("1.2", "1.20-1")
    assert not version_matches("1.2-4", "1.2-3")
