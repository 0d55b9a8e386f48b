"""Virtualenv with real venvs and pip, offline: a wheelhouse of tiny projects made here."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from converge.resources.virtualenv import (
    Installed,
    Virtualenv,
    check,
    parse_requirement,
    parse_requirements,
)

SYSTEM_PYTHON = "/usr/bin/python3"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel, written directly (no build backend, no network)."""
    module = name.lower().replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 .encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: converge-tests\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture(scope="session")
def wheelhouse() -> Iterator[Path]:
    """tiny-one 1.0 and 2.0, tiny-two 1.0, tiny-three 1.0; readable by every user."""
    d = Path(tempfile.mkdtemp(prefix="converge-wheels-", dir="/tmp"))
    os.chmod(d, 0o755)
    for name, version in [("Tiny_One", "1.0"), ("Tiny_One", "2.0"), ("tiny-two", "1.0"),
                          ("tiny-three", "1.0")]:
        os.chmod(make_wheel(d, name, version), 0o644)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that other users can reach (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="converge-venv-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def installed(venv: Path) -> dict[str, str]:
    out = subprocess.run([venv / "bin/python", "-m", "pip", "list", "--format=json",
                          "--disable-pip-version-check"], capture_output=True, text=True,
                         check=True).stdout
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(out)
            if d["name"] not in ("pip", "setuptools")}


def owners(top: Path) -> set[str]:
    """Who owns the tree (links themselves, not what they point to)."""
    import pwd

    return {pwd.getpwuid(os.lstat(p).st_uid).pw_name for p in [top, *top.rglob("*")]}


def venv_desired(write_desired: Callable[[str], Path], **fields: object) -> Path:
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return write_desired(f"""
        from converge import Command, Virtualenv

        def desired(facts, settings):
            yield Virtualenv({args}, notify=["Command[restart]"])
            yield Command(name="restart", argv=["sh", "-c", "echo restarted >> {{}}"
                          .format(__file__ + ".log")], refreshonly=True)
    """)


def restarts(desired: Path) -> int:
    log = Path(f"{desired}.log")
    return len(log.read_text().splitlines()) if log.exists() else 0


def changes_of(plan_json: str) -> dict[str, dict[str, object]]:
    resource = next(r for r in json.loads(plan_json)["resources"]
                    if r["id"].startswith("Virtualenv"))
    return {c["attribute"]: c for c in resource["changes"]}


def test_lifecycle_pins_repairs_and_unsatisfiable(cli, write_desired, wheelhouse: Path,
                                                  tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "wheels").symlink_to(wheelhouse)
    (checkout / "requirements.txt").write_text(
        "# the application's requirements\n"
        "--no-index\n"
        "--find-links ./wheels\n"
        "-r base.txt\n"
        "Tiny_One>=1.0,<3  # any of them\n"
        'never-installed==1.0 ; python_version < "3"\n'
    )
    (checkout / "base.txt").write_text("tiny-two == \\\n  1.0\n")
    venv = tmp_path / "venv"
    fields = dict(path=str(venv), requirements=str(checkout / "requirements.txt"))
    desired = venv_desired(write_desired, **fields, packages=["tiny-one==1.0"])

    plan = cli("plan", desired, "--json")
    assert plan.code == 2, plan
    changes = changes_of(plan.out)
    assert set(changes) == {"ensure", "python", "package tiny-one", "package tiny-two"}
    assert changes["package tiny-one"]["after"] == "tiny-one==1.0"  # the pin wins
    assert changes["package tiny-two"]["after"] == "tiny-two == 1.0"
    assert not venv.exists()

    r = cli("apply", desired)
    assert r.code == 2, r
    assert installed(venv) == {"tiny-one": "1.0", "tiny-two": "1.0"}
    assert restarts(desired) == 1
    assert cli("apply", desired).code == 0
    assert cli("plan", desired).code == 0
    assert restarts(desired) == 1

    # a pin changes
    desired = venv_desired(write_desired, **fields, packages=["tiny-one==2.0"])
    plan = cli("plan", desired)
    assert plan.code == 2 and 'package tiny-one: "1.0" -> "tiny-one==2.0"' in plan.out, plan.out
    assert cli("apply", desired).code == 2
    assert installed(venv) == {"tiny-one": "2.0", "tiny-two": "1.0"}
    assert restarts(desired) == 1  # (a new desired file: its own log)

    # a package removed by hand
    subprocess.run([venv / "bin/python", "-m", "pip", "uninstall", "-q", "-y", "tiny-two"],
                   check=True)
    plan = cli("plan", desired, "--json")
    assert changes_of(plan.out) == {"package tiny-two": {
        "attribute": "package tiny-two", "before": None, "after": "tiny-two == 1.0",
        "sensitive": False, "diff": None}}
    assert cli("apply", desired).code == 2
    assert installed(venv) == {"tiny-one": "2.0", "tiny-two": "1.0"}
    assert cli("apply", desired).code == 0

    # the requirements file changes (as when the checkout moves): the plan lists the new one
    (checkout / "base.txt").write_text("tiny-two==1.0\ntiny-three\n")
    plan = cli("plan", desired)
    assert plan.code == 2 and 'package tiny-three: (none) -> "tiny-three"' in plan.out, plan.out

    # a requirement that cannot be satisfied: a clear error, nothing installed half-way
    desired = venv_desired(write_desired, **fields, packages=["tiny-one==9.9"])
    r = cli("apply", desired)
    assert r.code == 4, r
    assert "pip could not install the requirements: No matching distribution found for " \
           "tiny-one==9.9" in r.out, r.out
    assert "not installed: tiny-three, tiny-one==9.9" in r.out
    assert "installed before the failure: nothing" in r.out
    assert installed(venv) == {"tiny-one": "2.0", "tiny-two": "1.0"}
    assert restarts(desired) == 0  # a failed resource refreshes nothing


BACKEND = """\
\"\"\"A build backend in the source tree: no build requirements, so pip needs no index.\"\"\"
import base64, hashlib, pathlib, zipfile


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    version = pathlib.Path(__file__).with_name("VERSION").read_text().split()[0]
    info = f"tiny_vcs-{version}.dist-info"
    files = {
        "tiny_vcs/__init__.py": f"VERSION = {version!r}\\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\\nName: tiny-vcs\\nVersion: {version}\\n"
                            .encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record += f"{path},sha256={digest.decode()},{len(data)}\\n"
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\\n").encode()
    name = f"tiny_vcs-{version}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / name, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name
"""


def vcs_project(root: Path) -> Path:
    """A git repository of a project with tags v2 (2.0) and v2b (2.0 again)."""
    repo = root / "tiny-vcs"
    repo.mkdir()
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n')
    (repo / "backend.py").write_text(BACKEND)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    for tag, version in [("v2", "2.0"), ("v2b", "2.0")]:
        (repo / "VERSION").write_text(f"{version}\n# {tag}\n")
        subprocess.run(["git", "-C", repo, "add", "."], check=True)
        subprocess.run(["git", *ident, "-C", repo, "commit", "-qm", tag], check=True)
        subprocess.run(["git", "-C", repo, "tag", tag], check=True)
    return repo


def _interpreters() -> tuple[str, str]:
    """Two different interpreters of this machine: Debian's and the one running the tests."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON}")
    ours = os.path.realpath(sys._base_executable)  # type: ignore[attr-defined]
    system = os.path.realpath(SYSTEM_PYTHON)
    if ours == system:
        pytest.skip("only one interpreter here")
    return system, ours


def _version(python: str) -> str:
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_interpreter_mismatch_recreates(cli, write_desired, wheelhouse: Path,
                                        tmp_path: Path) -> None:
    system, ours = _interpreters()
    venv = tmp_path / "venv"
    # someone made it with the system's interpreter (and without pip: quicker)
    subprocess.run([system, "-m", "venv", "--without-pip", venv], check=True)
    opts = ["--no-index", "--find-links", str(wheelhouse)]
    repo = vcs_project(tmp_path)
    vcs = f"git+file://{repo}@{{}}#egg=tiny-vcs"
    desired = venv_desired(write_desired, path=str(venv), python=ours,
                           packages=["tiny-two", vcs.format("v2")], pip_options=opts)
    plan = cli("plan", desired, "--json")
    assert plan.code == 2, plan
    change = changes_of(plan.out)["python"]
    assert change["before"] == f"{_version(system)} ({system})"
    assert change["after"] == (f"{_version(ours)} ({ours}): the virtualenv is recreated and "
                               "every requirement installed again")
    r = cli("apply", desired)
    assert r.code == 2, r.out
    assert os.path.realpath(venv / "bin/python") == ours
    assert installed(venv) == {"tiny-two": "1.0", "tiny-vcs": "2.0"}
    assert cli("apply", desired).code == 0

    # VCS requirements are compared by ref, even when the version stays the same
    desired = venv_desired(write_desired, path=str(venv), python=ours,
                           packages=["tiny-two", vcs.format("v2b")], pip_options=opts)
    plan = cli("plan", desired)
    assert plan.code == 2, plan
    assert f'package tiny-vcs: "2.0 (file://{repo}@v2)" -> "{vcs.format("v2b")}"' in plan.out
    assert cli("apply", desired).code == 2
    out = subprocess.run([venv / "bin/python", "-c", "import tiny_vcs; print(tiny_vcs.__file__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    direct_url = next(Path(out).parent.parent.glob("tiny_vcs-*.dist-info")) / "direct_url.json"
    assert json.loads(direct_url.read_text())["vcs_info"]["requested_revision"] == "v2b"
    assert cli("plan", desired).code == 0

    # versions: a prefix of the running one matches; another is looked for on PATH
    major_minor = ".".join(_version(ours).split(".")[:2])
    same = venv_desired(write_desired, path=str(venv), python=major_minor,
                        packages=["tiny-two"], pip_options=opts)
    assert cli("plan", same).code == 0
    if _version(system) != _version(ours):
        other = venv_desired(write_desired, path=str(venv), python=_version(system),
                             packages=["tiny-two"], pip_options=opts)
        plan = cli("plan", other, "--json")
        assert plan.code == 2, plan
        assert changes_of(plan.out)["python"]["after"].startswith(
            f"{_version(system)} ({system}): the virtualenv is recreated")
    missing = venv_desired(write_desired, path=str(venv), python="2.7")
    r = cli("plan", missing)
    assert r.code == 4 and "no Python 2.7 on the host" in r.out, r


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_owner_creates_and_installs_as_that_user(cli, write_desired, wheelhouse: Path,
                                                 shared_dir: Path) -> None:
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON}")
    venv = shared_dir / "venv"
    desired = venv_desired(write_desired, path=str(venv), python=SYSTEM_PYTHON,
                           owner="nobody", packages=["tiny-one<2"],
                           pip_options=["--no-index", "--find-links", str(wheelhouse)])
    r = cli("apply", desired)
    assert r.code == 2, r
    assert installed(venv) == {"tiny-one": "1.0"}
    assert owners(venv) == {"nobody"}
    assert cli("apply", desired).code == 0

    subprocess.run(["chown", "-R", "root", venv], check=True)  # drift
    plan = cli("plan", desired)
    assert plan.code == 2 and 'owner: "root" -> "nobody"' in plan.out, plan.out
    assert cli("apply", desired).code == 2
    assert owners(venv) == {"nobody"}


def test_refusals(cli, write_desired, tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "data").write_text("keep me\n")
    r = cli("apply", venv_desired(write_desired, path=str(occupied)))
    assert r.code == 4 and "is not a virtualenv" in r.out, r
    assert (occupied / "data").exists()

    r = cli("plan", venv_desired(write_desired, path=str(tmp_path / "v"),
                                 requirements=str(tmp_path / "missing.txt")))
    assert r.code == 4 and f"requirements file {tmp_path}/missing.txt does not exist" in r.out

    bad = tmp_path / "bad.txt"
    bad.write_text("ok==1\nnot a requirement!\n")
    r = cli("plan", venv_desired(write_desired, path=str(tmp_path / "v"), requirements=str(bad)))
    assert r.code == 4 and "bad.txt:2: 'not a requirement!' is not a requirement" in r.out, r

    r = cli("plan", venv_desired(write_desired, path=str(tmp_path / "v"), packages=["=="]))
    assert r.code == 1 and "is not a requirement" in r.err, r


def test_broken_environment_is_recreated(cli, write_desired, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    link = venv / "bin/python"
    while not os.path.isabs(os.readlink(link)):  # the last link: to the interpreter
        link = link.parent / os.readlink(link)
    link.unlink()
    link.symlink_to("/nonexistent/python3")  # its interpreter was removed
    plan = cli("plan", venv_desired(write_desired, path=str(venv)), "--json")
    assert plan.code == 2, plan
    change = changes_of(plan.out)["python"]
    assert change["before"] == f"broken: {venv}/bin/python is missing or its interpreter is gone"
    assert change["after"].endswith("the virtualenv is recreated and every requirement "
                                    "installed again")


def test_requirements_file_pending_behind_a_checkout(cli, write_desired,
                                                     tmp_path: Path) -> None:
    """The requirements file comes with a checkout made in the same run: plan says so."""
    upstream = tmp_path / "up.git"
    work = tmp_path / "work"
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", upstream], check=True)
    subprocess.run(["git", "clone", "-q", upstream, work], check=True, capture_output=True)
    (work / "requirements.txt").write_text("tiny-two==1.0\n")
    subprocess.run(["git", "-C", work, "add", "."], check=True)
    subprocess.run(["git", *ident, "-C", work, "commit", "-qm", "one"], check=True)
    subprocess.run(["git", "-C", work, "push", "-q", "origin", "main"], check=True)
    app = tmp_path / "app"
    desired = write_desired(f"""
        from converge import GitCheckout, Virtualenv

        def desired(facts, settings):
            yield GitCheckout(path="{app}", source="file://{upstream}")
            yield Virtualenv(path="{tmp_path}/venv", requirements="{app}/requirements.txt")
    """)
    r = cli("plan", desired)
    assert r.code == 2, r
    assert "cannot be planned before GitCheckout" in r.out and "does not exist" in r.out, r.out


# -- requirement parsing and comparison (pure) ------------------------------------------------


def test_parse_requirements_file() -> None:
    text = (
        "# comment\n"
        "--index-url https://pypi.example/simple  # mirror\n"
        "-f wheels\n"
        "-r other.txt\n"
        "-rmore.txt\n"
        "Django>=3.2,<4 ; python_version >= '3.8'\n"
        "channels_redis==3.3.0\n"
        "-e git+https://github.com/numbas/lti.git@v1.2#egg=numbas_lti\n"
        "git+https://host/x/y.git@main#egg=Y-Pkg\n"
        "pkg @ git+ssh://git@host/z.git@abc1234\n"
        "./local/project\n"
        "long-name \\\n"
        "   ==1.0\n"
    )
    items = parse_requirements(text, "/srv/app/requirements.txt")
    options = [i[1] for i in items if isinstance(i, tuple) and i[0] == "option"]
    assert options == [["--index-url", "https://pypi.example/simple"],
                       ["--find-links", "/srv/app/wheels"]]
    assert [i[1] for i in items if isinstance(i, tuple) and i[0] == "include"] == [
        "/srv/app/other.txt", "/srv/app/more.txt"]
    wanted = [i for i in items if not isinstance(i, tuple)]
    by = {w.key: w for w in wanted}
    assert list(by) == ["django", "channels-redis", "numbas-lti", "y-pkg", "pkg",
                        "/srv/app/local/project", "long-name"]
    assert str(by["django"].specifier) == "<4,>=3.2" and by["django"].marker is not None
    assert by["django"].origin == "requirements.txt:6"
    lti = by["numbas-lti"]
    assert lti.editable and lti.url == "https://github.com/numbas/lti.git"
    assert lti.vcs_ref == "v1.2" and lti.pip_args == [
        "-e", "git+https://github.com/numbas/lti.git@v1.2#egg=numbas_lti"]
    assert by["pkg"].url == "ssh://host/z.git" and by["pkg"].vcs_ref == "abc1234"
    assert by["long-name"].origin == "requirements.txt:12"
    with pytest.raises(ValueError, match="per-requirement options"):
        parse_requirements("x==1 --hash=sha256:abc\n", "/r.txt")


def test_check_compares_versions_markers_and_vcs_refs() -> None:
    inst = {
        "tiny-one": Installed("Tiny_One", "2.0rc1"),
        "numbas-lti": Installed("numbas_lti", "1.2", "https://github.com/numbas/lti.git",
                                "v1.2", "0123456789abcdef"),
    }
    assert check(parse_requirement("tiny_one>=1.0", "p"), inst) == (True, "2.0rc1")
    assert check(parse_requirement("tiny-one<2", "p"), inst) == (False, "2.0rc1")
    assert check(parse_requirement("other", "p"), inst) == (False, None)
    vcs = "git+https://github.com/numbas/lti.git@{}#egg=numbas-lti"
    assert check(parse_requirement(vcs.format("v1.2"), "p"), inst)[0]
    assert check(parse_requirement(vcs.format("0123456"), "p"), inst)[0]  # by commit
    assert check(parse_requirement(vcs.format("v1.3"), "p"), inst) == (
        False, "1.2 (https://github.com/numbas/lti.git@v1.2)")
    assert check(parse_requirement("numbas-lti==1.2", "p"), inst)[0]  # any source will do
    moved = "numbas-lti @ git+https://gitlab.example/lti.git@v1.2"
    assert check(parse_requirement(moved, "p"), inst) == (
        False, "1.2 (from https://github.com/numbas/lti.git)")


def test_validation() -> None:
    with pytest.raises(ValueError, match="is not a requirement"):
        Virtualenv(path="/srv/venv", packages=["bad name!"])
    with pytest.raises(ValueError, match="neither an interpreter nor a version"):
        Virtualenv(path="/srv/venv", python="-c")
    assert "GitCheckout[/srv/app]" in set(
        Virtualenv(path="/srv/venv", requirements="/srv/app/req.txt").implied_requires())
