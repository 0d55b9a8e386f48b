"""YumRepo edits real .repo files; dnf itself reads the result (no mocks)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

EXISTING = """\
# managed partly by hand
[nginx]
name=nginx repo
baseurl=http://old.example/rhel/7/$basearch/
gpgcheck=1
sslverify=0

[other]
name=Other
baseurl=file:///srv/other
"""


def test_per_key_diff_keeps_undeclared_keys_and_sections(cli, write_desired,
                                                         tmp_path: Path) -> None:
    repo = tmp_path / "nginx.repo"
    repo.write_text(EXISTING)
    desired = write_desired(f"""
        from converge import YumRepo

        def desired(facts, settings):
            yield YumRepo(name="nginx", file="{repo}", descr="nginx repo",
                          baseurl="http://nginx.org/packages/rhel/7/$basearch/",
                          gpgcheck=False, enabled=True, options={{"module_hotfixes": "1"}})
    """)
    plan = json.loads(cli("plan", desired, "--json").out)
    changes = {c["attribute"]: (c["before"], c["after"])
               for c in plan["resources"][0]["changes"]}
    assert changes == {
        "baseurl": ("http://old.example/rhel/7/$basearch/",
                    "http://nginx.org/packages/rhel/7/$basearch/"),
        "enabled": (None, "1"),
        "gpgcheck": ("1", "0"),
        "module_hotfixes": (None, "1"),
    }
    assert cli("apply", desired).code == 2
    text = repo.read_text()
    assert "sslverify=0" in text and "[other]" in text and "baseurl=file:///srv/other" in text
    assert "# managed partly by hand" in text
    assert "gpgcheck=0" in text and "gpgcheck=1" not in text
    assert cli("apply", desired).code == 0 and cli("plan", desired).code == 0
    # drift by hand
    repo.write_text(text.replace("enabled=1", "enabled=0"))
    out = cli("plan", desired).out
    assert '~ enabled: "0" -> "1"' in out
    assert cli("apply", desired).code == 2 and "enabled=1" in repo.read_text()


def test_new_file_and_absent(cli, write_desired, tmp_path: Path) -> None:
    repo = tmp_path / "pgdg.repo"
    desired = write_desired(f"""
        from converge import YumRepo

        def desired(facts, settings):
            yield YumRepo(name="pgdg96", file="{repo}", baseurl="file:///srv/pgdg",
                          gpgcheck=False)
    """)
    assert cli("apply", desired).code == 2
    assert repo.read_text() == "[pgdg96]\nbaseurl=file:///srv/pgdg\ngpgcheck=0\n"
    assert cli("apply", desired).code == 0
    gone = write_desired(f"""
        from converge import YumRepo

        def desired(facts, settings):
            yield YumRepo(name="pgdg96", file="{repo}", ensure="absent")
    """)
    assert cli("apply", gone).code == 2 and not repo.exists()
    assert cli("apply", gone).code == 0


@pytest.mark.skipif(shutil.which("dnf") is None, reason="dnf not installed")
def test_dnf_reads_the_written_repo(cli, write_desired, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/yum.repos.d").mkdir(parents=True)
    repo = root / "etc/yum.repos.d/local.repo"
    (tmp_path / "emptyrepo").mkdir()
    subprocess.run(["createrepo_c", "-q", str(tmp_path / "emptyrepo")], check=True)
    desired = write_desired(f"""
        from converge import YumRepo

        def desired(facts, settings):
            yield YumRepo(name="local", file="{repo}", descr="Local test repo",
                          baseurl="file://{tmp_path}/emptyrepo", gpgcheck=False, enabled=True)
    """)
    assert cli("apply", desired).code == 2
    out = subprocess.run(
        ["dnf", "-q", f"--installroot={root}", "--releasever=7", "--setopt=reposdir="
         f"{root}/etc/yum.repos.d", "repolist", "--enabled"],
        capture_output=True, text=True, check=True).stdout
    assert "local" in out and "Local test repo" in out
