"""GitCheckout with real git against local bare repositories over file://."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from converge.errors import DesiredStateError
from converge.resources.git import GitCheckout, _parse_status

IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "safe.directory=*"]


def git(*args: str | Path, cwd: Path | None = None) -> str:
    res = subprocess.run(["git", *IDENTITY, *map(str, args)], cwd=cwd, capture_output=True,
                         text=True, check=True)
    return res.stdout.strip()


class Upstream:
    """A bare repository and a work clone of it that pushes commits and tags."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.work = root / "upstream-work"
        git("init", "--quiet", "--bare", "--initial-branch=main", self.bare)
        git("clone", "--quiet", self.bare, self.work)
        self.url = f"file://{self.bare}"

    def commit(self, files: dict[str, str], message: str = "change",
               branch: str = "main") -> str:
        for name, text in files.items():
            (self.work / name).parent.mkdir(parents=True, exist_ok=True)
            (self.work / name).write_text(text)
        git("checkout", "--quiet", "-B", branch, cwd=self.work)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", branch, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def tag(self, name: str, commit: str = "HEAD", annotated: bool = True) -> None:
        git("tag", *(["-a", "-m", name] if annotated else []), name, commit, cwd=self.work)
        git("push", "--quiet", "origin", f"refs/tags/{name}", cwd=self.work)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    up = Upstream(tmp_path)
    up.commit({"README": "one\n", "app.py": "print(1)\n"}, "one")
    return up


@pytest.fixture
def checkout_desired(write_desired: Callable[[str], Path],
                     ) -> Callable[..., Path]:
    def make(**fields: object) -> Path:
        args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return write_desired(f"""
            from converge import GitCheckout

            def desired(facts, settings):
                yield GitCheckout({args})
        """)
    return make


def head(path: Path) -> str:
    return git("-C", path, "rev-parse", "HEAD")


def branch(path: Path) -> str:
    return git("-C", path, "rev-parse", "--abbrev-ref", "HEAD")


def test_clone_noop_and_follow_upstream(cli, checkout_desired, upstream: Upstream,
                                        tmp_path: Path) -> None:
    dest = tmp_path / "app"
    desired = checkout_desired(path=str(dest), source=upstream.url, revision="main",
                               ensure="latest")
    plan = cli("plan", desired, "--json")
    assert plan.code == 2, plan
    changes = {c["attribute"]: c for c in json.loads(plan.out)["resources"][0]["changes"]}
    first = head(upstream.work)
    assert changes["ensure"]["after"] == "present"
    assert changes["revision"]["after"] == f"{first[:7]} (main)"
    assert not dest.exists()  # plan only asked the remote (ls-remote)

    assert cli("apply", desired).code == 2
    assert head(dest) == first and branch(dest) == "main"
    assert git("-C", dest, "rev-parse", "--abbrev-ref", "main@{upstream}") == "origin/main"
    assert cli("apply", desired).code == 0
    assert cli("plan", desired).code == 0

    # upstream moves: drift that plan shows as a commit range, read-only
    upstream.commit({"app.py": "print(2)\n"}, "two")
    third = upstream.commit({"app.py": "print(3)\n"}, "three")
    plan = cli("plan", desired)
    assert plan.code == 2
    assert f"{first[:7]} (main)\" -> \"{third[:7]} (main: {first[:7]}..{third[:7]}, " \
           "not fetched yet)" in plan.out, plan.out
    assert head(dest) == first
    git("-C", dest, "fetch", "--quiet")  # once the commits are known here, they are counted
    plan = cli("plan", desired)
    assert f"{first[:7]}..{third[:7]}, 2 new commits)" in plan.out, plan.out

    assert cli("apply", desired).code == 2
    assert head(dest) == third and branch(dest) == "main"
    assert (dest / "app.py").read_text() == "print(3)\n"
    assert cli("apply", desired).code == 0


def test_present_keeps_what_is_there(cli, checkout_desired, upstream: Upstream,
                                     tmp_path: Path) -> None:
    dest = tmp_path / "app"
    desired = checkout_desired(path=str(dest), source=upstream.url)
    assert cli("apply", desired).code == 2
    first = head(dest)
    assert branch(dest) == "main"  # the remote's default branch
    upstream.commit({"app.py": "print(2)\n"})
    assert cli("plan", desired).code == 0
    assert cli("apply", desired).code == 0
    assert head(dest) == first

    # another branch: checked out, then not followed either
    stable = upstream.commit({"app.py": "print('stable')\n"}, branch="stable")
    desired = checkout_desired(path=str(dest), source=upstream.url, revision="stable")
    plan = cli("plan", desired)
    assert f'revision: "{first[:7]} (main)" -> "stable (branch)"' in plan.out, plan.out
    assert cli("apply", desired).code == 2
    assert head(dest) == stable and branch(dest) == "stable"
    upstream.commit({"app.py": "print('stable 2')\n"}, branch="stable")
    assert cli("apply", desired).code == 0
    assert head(dest) == stable


def test_tag_and_commit_pins(cli, checkout_desired, upstream: Upstream,
                             tmp_path: Path) -> None:
    dest = tmp_path / "app"
    v1 = head(upstream.work)
    upstream.tag("v1.0")
    v2 = upstream.commit({"app.py": "print(2)\n"}, "two")
    upstream.tag("v2.0", annotated=False)
    later = upstream.commit({"app.py": "print(3)\n"}, "three")

    desired = checkout_desired(path=str(dest), source=upstream.url, revision="v1.0")
    plan = cli("plan", desired)
    assert f'revision: "{v1[:7]} (tag v1.0)"' in plan.out, plan.out
    assert cli("apply", desired).code == 2
    assert head(dest) == v1  # the annotated tag's commit, not the tag object
    assert cli("apply", desired).code == 0
    upstream.commit({"app.py": "print(4)\n"})  # a pin does not follow anything
    assert cli("plan", desired).code == 0

    desired = checkout_desired(path=str(dest), source=upstream.url, revision="v2.0")
    plan = cli("plan", desired)
    assert plan.code == 2 and f'-> "{v2[:7]} (tag v2.0)"' in plan.out, plan.out
    assert cli("apply", desired).code == 2
    assert head(dest) == v2 and branch(dest) == "HEAD"  # detached at the tag
    assert cli("apply", desired).code == 0

    for revision in (later, later[:9]):  # a full and an abbreviated commit id
        desired = checkout_desired(path=str(dest), source=upstream.url, revision=revision,
                                   ensure="latest")
        r = cli("apply", desired)
        assert r.code == (2 if revision == later else 0), r
        assert head(dest) == later
        assert cli("plan", desired).code == 0

    # a commit pin on a fresh clone
    fresh = tmp_path / "fresh"
    desired = checkout_desired(path=str(fresh), source=upstream.url, revision=v2)
    assert cli("apply", desired).code == 2
    assert head(fresh) == v2
    assert cli("plan", desired).code == 0


def test_dirty_tree_refused_then_stashed_with_force(cli, checkout_desired,
                                                    upstream: Upstream,
                                                    tmp_path: Path) -> None:
    dest = tmp_path / "app"
    desired = checkout_desired(path=str(dest), source=upstream.url, revision="main",
                               ensure="latest")
    assert cli("apply", desired).code == 2
    first = head(dest)
    (dest / "app.py").write_text("print('hotfix')\n")
    (dest / "notes.txt").write_text("untracked: not a modification git would lose\n")
    # nothing to move: local changes are left alone
    assert cli("plan", desired).code == 0

    newer = upstream.commit({"app.py": "print(2)\n", "README": "two\n"})
    for command in ("plan", "apply"):
        r = cli(command, desired)
        assert r.code in (4, 6), r
        assert "local modifications (app.py)" in r.out, r.out
        assert "force=True" in r.out
    assert head(dest) == first
    assert (dest / "app.py").read_text() == "print('hotfix')\n"

    forced = checkout_desired(path=str(dest), source=upstream.url, revision="main",
                              ensure="latest", force=True)
    plan = cli("plan", forced)
    assert plan.code == 2 and '"app.py" -> "saved with git stash"' in plan.out, plan.out
    r = cli("apply", forced)
    assert r.code == 2, r
    assert "saved in git stash" in r.out
    assert head(dest) == newer and (dest / "app.py").read_text() == "print(2)\n"
    assert (dest / "notes.txt").exists()
    # the local change is recoverable
    assert "print('hotfix')" in git("-C", dest, "stash", "show", "-p")
    assert "converge: local changes saved" in git("-C", dest, "stash", "list")
    assert cli("apply", forced).code == 0


def test_local_commits_are_never_left_behind(cli, checkout_desired, upstream: Upstream,
                                             tmp_path: Path) -> None:
    dest = tmp_path / "app"
    desired = checkout_desired(path=str(dest), source=upstream.url, revision="main",
                               ensure="latest")
    assert cli("apply", desired).code == 2
    (dest / "local.txt").write_text("mine\n")
    git("-C", dest, "add", "local.txt")
    git("-C", dest, "commit", "--quiet", "-m", "local work")
    mine = head(dest)
    newer = upstream.commit({"app.py": "print(2)\n"})

    r = cli("apply", desired)
    assert r.code in (4, 6) and "1 local commit on main" in r.out, r.out
    assert head(dest) == mine

    forced = checkout_desired(path=str(dest), source=upstream.url, revision="main",
                              ensure="latest", force=True)
    r = cli("apply", forced)
    assert r.code == 2, r
    assert head(dest) == newer
    assert git("-C", dest, "rev-parse", f"converge-saved/{mine[:7]}") == mine
    assert cli("apply", forced).code == 0


def test_wrong_remote_url_is_corrected(cli, checkout_desired, upstream: Upstream,
                                       tmp_path: Path) -> None:
    dest = tmp_path / "app"
    desired = checkout_desired(path=str(dest), source=upstream.url)
    assert cli("apply", desired).code == 2
    git("-C", dest, "remote", "set-url", "origin", "file:///elsewhere/repo.git")
    plan = cli("plan", desired, "--json")
    assert plan.code == 2
    change = json.loads(plan.out)["resources"][0]["changes"]
    assert change == [{"attribute": "source", "before": "file:///elsewhere/repo.git",
                       "after": upstream.url, "sensitive": False, "diff": None}]
    assert cli("apply", desired).code == 2
    assert git("-C", dest, "remote", "get-url", "origin") == upstream.url
    assert cli("apply", desired).code == 0


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that other users can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="converge-git-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_owner_clones_as_that_user_and_ownership_is_repaired(
        cli, checkout_desired, shared_dir: Path) -> None:
    up = Upstream(shared_dir)
    up.commit({"app.py": "print(1)\n"})
    # the owner reaches the repository as itself: it must own it (git's safe.directory)
    subprocess.run(["chown", "-R", "nobody:nogroup", up.bare], check=True)
    dest = shared_dir / "app"
    desired = checkout_desired(path=str(dest), source=up.url, revision="main",
                               ensure="latest", owner="nobody", group="nogroup", depth=1)
    assert cli("apply", desired).code == 2
    owners = {(p.owner(), p.group()) for p in [dest, *dest.rglob("*")]}
    assert owners == {("nobody", "nogroup")}
    assert git("-C", dest, "rev-parse", "--is-shallow-repository") == "true"
    assert cli("apply", desired).code == 0

    subprocess.run(["chown", "-R", "root:root", dest], check=True)  # drift
    plan = cli("plan", desired)
    assert plan.code == 2
    assert 'owner: "root" -> "nobody"' in plan.out and 'group: "root" -> "nogroup"' in plan.out
    # the upstream moves too: fetched and checked out as the owner, after the chown
    subprocess.run(["chown", "-R", "root:root", up.bare], check=True)
    newer = up.commit({"app.py": "print(2)\n"})
    subprocess.run(["chown", "-R", "nobody:nogroup", up.bare], check=True)
    assert cli("apply", desired).code == 2
    assert head(dest) == newer
    assert {(p.owner(), p.group()) for p in [dest, *dest.rglob("*")]} == {("nobody", "nogroup")}
    assert git("-C", dest, "rev-parse", "--is-shallow-repository") == "true"
    assert cli("apply", desired).code == 0


def test_refusals_and_errors(cli, checkout_desired, upstream: Upstream,
                             tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "data").write_text("keep me\n")
    r = cli("apply", checkout_desired(path=str(occupied), source=upstream.url))
    assert r.code == 4 and "is not a git checkout" in r.out, r
    assert (occupied / "data").read_text() == "keep me\n"

    empty = tmp_path / "empty"
    empty.mkdir()  # an empty directory is cloned into
    assert cli("apply", checkout_desired(path=str(empty), source=upstream.url)).code == 2
    assert (empty / "app.py").exists()

    if os.geteuid() == 0:  # root does not run git in a tree that another user controls
        subprocess.run(["chown", "-R", "nobody", empty], check=True)
        r = cli("plan", checkout_desired(path=str(empty), source=upstream.url))
        assert r.code == 4 and "belongs to nobody: set owner='nobody'" in r.out, r

    r = cli("plan", checkout_desired(path=str(tmp_path / "x"), source=upstream.url,
                                     revision="nope"))
    assert r.code == 4 and "has no branch or tag named 'nope'" in r.out, r

    r = cli("plan", checkout_desired(path=str(tmp_path / "y"),
                                     source=f"file://{tmp_path}/missing.git"))
    assert r.code == 4 and f"cannot reach file://{tmp_path}/missing.git" in r.out, r
    assert "does not appear to be a git repository" in r.out


@pytest.mark.parametrize("fields, message", [
    ({"source": "https://user:secret@example.com/r.git"}, "holds a password"),
    ({"source": "--upload-pack=evil"}, "is not a repository URL"),
    ({"source": "https://example.com/r.git", "revision": "-f"}, "not a branch, tag or commit"),
    ({"source": "https://example.com/r.git", "revision": "a..b"}, "not a branch, tag"),
    ({"source": "https://example.com/r.git", "depth": 0}, "greater than or equal to 1"),
])
def test_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, DesiredStateError), match=message):
        GitCheckout(path="/srv/app", **fields)  # type: ignore[arg-type]


def test_parse_status() -> None:
    out = "\0".join([
        "# branch.oid 0123456789012345678901234567890123456789", "# branch.head (detached)",
        "1 .M N... 100644 100644 100644 aaa bbb a file.txt",
        "2 R. N... 100644 100644 100644 aaa bbb R100 new name.txt", "old name.txt",
        "u UU N... 100644 100644 100644 100644 aaa bbb ccc both.txt", "",
    ])
    assert _parse_status(out) == ("0123456789012345678901234567890123456789", None,
                                  ["a file.txt", "new name.txt", "both.txt"])
