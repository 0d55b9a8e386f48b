"""Package (dnf and apt providers) and YumRepo against the real package managers.

- apt: test hosts with flat apt repositories of .debs built here (dpkg-deb, tests/pkgrepo.py),
  and a real Debian package (tree) from the harness's offline cache.
- dnf: one test host (Debian, no internet) shared by the dnf tests, with Debian's dnf and rpm,
  the rpm database where RHEL keeps it, and yum repositories built here with rpmbuild +
  createrepo_c. The host is Debian, so its packages are forced to ``provider="dnf"``. It is set
  up in the background while the apt tests run (installing dnf takes ~12 s).

Repositories are built under one directory per module, bound read-only at /srv/repos.

Every scenario follows the pattern: first apply changes, second changes nothing, plan is then
empty, drift made by hand is seen by plan and repaired by apply.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from converge.facts import PRESETS, Facts
from converge.host import LocalHost
from converge.registry import choose_provider
from converge.resources.package import AptProvider, DnfProvider, Package
from tests.pkgrepo import PackageBuilder, make_deb_repo, make_rpm_repo
from tests.testhost.converge import ConvergeHost, by_id, changed_attributes, converge_binds
from tests.testhost.fixtures import in_ci
from tests.testhost.host import Bind, TestHost
from tests.testhost.image import Image, prefetch

REPOS = "/srv/repos"  # where the repositories built here appear inside test hosts


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        reason = f"missing {', '.join(missing)} (install.sh --dev installs them)"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def changes(doc: dict[str, Any], key: str) -> list[tuple[str, Any, Any]]:
    return [(c["attribute"], c["before"], c["after"]) for c in by_id(doc)[key]["changes"]]


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory) -> PackageBuilder:
    return PackageBuilder(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host-side directory bound at /srv/repos: one repository per test under it."""
    d = tmp_path_factory.mktemp("repos")
    d.chmod(0o755)
    return d


class Served:
    """A directory served over HTTP on one test host's network (address .1 of its /24)."""

    def __init__(self, directory: Path, address: str) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = ThreadingHTTPServer((address, 0), handler)
        self.url = f"http://{address}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- apt ---------------------------------------------------------------------------------------

APT_CONF = """\
// converge tests: only the test's own repository, lists in a writable place (the Debian lists
// under /var/lib/apt/lists are the harness's cache, bound read-only)
Dir::State::Lists "/var/lib/cvg-apt/lists/";
Dir::Etc::SourceList "/etc/apt/cvg/sources.list";
Dir::Etc::SourceParts "/etc/apt/cvg/sources.list.d/";
"""


@pytest.fixture
def apt_host(converge_host: Callable[..., ConvergeHost], repos: Path,
             request: pytest.FixtureRequest) -> tuple[ConvergeHost, Path]:
    """A host whose apt sees only the test's flat repository (built into the returned dir)."""
    need("dpkg-deb")
    start_rpm_host_early(request)
    name = request.node.name.replace("_", "-")[:40].rstrip("-")
    repo = repos / request.node.name
    host = converge_host(name, binds=[Bind(repos, REPOS)])
    host.put_file("/etc/apt/apt.conf.d/99cvg-tests", APT_CONF)
    host.put_file("/etc/apt/cvg/sources.list",
                  f"deb [trusted=yes] file:{REPOS}/{repo.name} ./\n")
    host.run(["mkdir", "-p", "/var/lib/cvg-apt/lists/partial", "/etc/apt/cvg/sources.list.d"])
    return host, repo


def apt_update(host: ConvergeHost) -> None:
    host.run(["apt-get", "-q", "update"])


def dpkg_version(host: ConvergeHost, name: str) -> str | None:
    r = host.run(["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", name], check=False)
    version, _, status = r.stdout.partition(" ")
    return version if r.returncode == 0 and status.startswith("ii") else None


def apt_desired(packages: str) -> str:
    return f"""
from converge import Package

def desired(facts, settings):
{packages}
"""


def test_apt_lifecycle(apt_host: tuple[ConvergeHost, Path], builder: PackageBuilder) -> None:
    host, repo = apt_host
    make_deb_repo(repo, [builder.deb("cvg-hello", "1.0-1", depends=["cvg-dep"]),
                         builder.deb("cvg-dep", "1.0-1")])
    apt_update(host)

    def declare(hello: str) -> str:
        return host.write_desired(apt_desired(f"""
    yield Package(name="cvg-hello", ensure="{hello}")
    yield Package(name="cvg-dep")
"""))

    present = declare("present")
    report = host.converge_twice(present)
    assert by_id(report)["Package[cvg-hello]"]["action"] == "create"
    assert dpkg_version(host, "cvg-hello") == "1.0-1"
    # both in one apt-get run
    history = host.get_file("/var/log/apt/history.log").decode()
    assert history.count("Start-Date:") == 1, history
    command = next(line for line in history.splitlines() if line.startswith("Commandline"))
    assert command.split()[-3] == "install", history
    assert set(command.split()[-2:]) == {"cvg-hello", "cvg-dep"}, history

    # drift by hand
    host.run(["dpkg", "-r", "cvg-hello"])
    code, plan = host.plan_json(present)
    assert code == 2
    assert changes(plan, "Package[cvg-hello]") == [("ensure", "absent", "present")]
    assert host.apply(present).returncode == 2
    assert dpkg_version(host, "cvg-hello") == "1.0-1"
    assert host.apply(present).returncode == 0

    # latest: a newer version in the repository, seen once the lists are updated (converge
    # does not run apt-get update: apt-daily does, or the admin)
    latest = declare("latest")
    make_deb_repo(repo, [builder.deb("cvg-hello", "1.1-1", depends=["cvg-dep"])])
    assert host.apply(latest).returncode == 0
    apt_update(host)
    code, plan = host.plan_json(latest)
    assert code == 2
    assert changes(plan, "Package[cvg-hello]") == [("version", "1.0-1", "1.1-1")]
    assert host.apply(latest).returncode == 2
    assert host.apply(latest).returncode == 0
    assert dpkg_version(host, "cvg-hello") == "1.1-1"

    # a version without its Debian revision: a downgrade to 1.0-1
    pinned = declare("1.0")
    code, report = host.apply_json(pinned)
    assert code == 2
    assert changes(report, "Package[cvg-hello]") == [("version", "1.1-1", "1.0")]
    assert dpkg_version(host, "cvg-hello") == "1.0-1"
    assert host.apply(pinned).returncode == 0

    # absent
    gone = declare("absent")
    host.converge_twice(gone)
    assert dpkg_version(host, "cvg-hello") is None
    assert dpkg_version(host, "cvg-dep") == "1.0-1"


def test_apt_missing_package_and_sources(apt_host: tuple[ConvergeHost, Path],
                                         builder: PackageBuilder, repos: Path) -> None:
    host, repo = apt_host
    make_deb_repo(repo, [builder.deb("cvg-dep", "1.0-1")])
    apt_update(host)
    loose = repos / f"{repo.name}-loose"
    loose.mkdir()
    for name in ("cvg-local", "cvg-web"):
        shutil.copy2(builder.deb(name, "1.0"), loose)
    path = host.write_desired(apt_desired("""
    yield Package(name="cvg-dep")
    yield Package(name="cvg-nothere")
"""))
    code, report = host.apply_json(path)
    assert code == 6, json.dumps(report, indent=1)
    res = by_id(report)
    assert res["Package[cvg-dep]"]["status"] == "changed"
    assert res["Package[cvg-nothere]"]["error"].startswith(
        "cvg-nothere is not available from any enabled repository")
    assert "Unable to locate package cvg-nothere" in res["Package[cvg-nothere]"]["error"]
    assert dpkg_version(host, "cvg-dep") == "1.0-1"

    # source: a .deb file, and a URL (fetched by apt's own helper: no curl on the host)
    served = Served(repos, host.host_address)
    try:
        sources = host.write_desired(apt_desired(f"""
    yield Package(name="cvg-local", source="{REPOS}/{loose.name}/cvg-local_1.0_all.deb")
    yield Package(name="cvg-web", source="{served.url}/{loose.name}/cvg-web_1.0_all.deb")
"""))
        host.converge_twice(sources)
    finally:
        served.close()
    assert dpkg_version(host, "cvg-local") == "1.0"
    assert dpkg_version(host, "cvg-web") == "1.0"
    assert host.run("ls /tmp | grep converge-deb", check=False).stdout == ""


def test_apt_real_debian_package(converge_host: Callable[..., ConvergeHost],
                                 testhost_image: Image, request: pytest.FixtureRequest) -> None:
    start_rpm_host_early(request)
    prefetch(["tree"], image=testhost_image)
    host = converge_host("tree")
    path = host.write_desired(apt_desired('    yield Package(name="tree")'))
    report = host.converge_twice(path)
    assert by_id(report)["Package[tree]"]["action"] == "create"
    assert host.run(["tree", "--version"]).returncode == 0
    host.run(["apt-get", "remove", "-y", "-q", "tree"], env={"DEBIAN_FRONTEND": "noninteractive"})
    code, plan = host.plan_json(path)
    assert code == 2
    assert changed_attributes(plan, "Package[tree]") == ["ensure"]
    assert host.apply(path).returncode == 2
    assert host.run(["tree", "--version"]).returncode == 0
    assert host.apply(path).returncode == 0


# -- dnf ---------------------------------------------------------------------------------------


def _setup_rpm_host(image: Image, repos: Path, booted: list[TestHost]) -> ConvergeHost:
    prefetch(["dnf", "rpm"], image=image)
    host = TestHost("rpmhost", image=image, binds=[*converge_binds(image), Bind(repos, REPOS)])
    booted.append(host)
    host.boot()
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "dnf", "rpm"],
             env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
    # RHEL's layout: Debian's rpm keeps its database in ~/.rpmdb
    host.put_file("/etc/rpm/macros.dbpath", "%_dbpath /var/lib/rpm\n")
    host.run(["rpm", "--initdb"])
    return ConvergeHost(host)


@pytest.fixture(scope="module")
def rpm_host_setup(testhost_image: Image, repos: Path) -> Iterator[Future[ConvergeHost]]:
    """The host for the dnf tests, set up in the background: installing dnf takes ~12 s,
    during which the apt tests run."""
    need("rpmbuild", "createrepo_c")
    booted: list[TestHost] = []
    with ThreadPoolExecutor(1, thread_name_prefix="rpmhost") as pool:
        future = pool.submit(_setup_rpm_host, testhost_image, repos, booted)
        try:
            yield future
        finally:
            with contextlib.suppress(Exception):
                future.result()  # never stop a host while it is being set up
            for host in booted:
                host.stop()


def start_rpm_host_early(request: pytest.FixtureRequest) -> None:
    """Start setting up the dnf tests' host now if any of them is to run."""
    wanted = any("rpm" in getattr(item, "fixturenames", ()) for item in request.session.items)
    if wanted and shutil.which("rpmbuild") and shutil.which("createrepo_c"):
        request.getfixturevalue("rpm_host_setup")


@pytest.fixture(scope="module")
def rpm_host(rpm_host_setup: Future[ConvergeHost]) -> ConvergeHost:
    """One host for every dnf test (each resets it)."""
    return rpm_host_setup.result()


@pytest.fixture
def rpm(rpm_host: ConvergeHost, repos: Path, request: pytest.FixtureRequest
        ) -> tuple[ConvergeHost, Path, str]:
    """rpm_host with no test package, repository or dnf history left (and, as Debian's dnf
    leaves it, no /etc/yum.repos.d); the test's repository directory (host side) and its URL
    inside the host."""
    rpm_host.run("rpm -qa 'cvg-*' | xargs -r rpm -e --nodeps 2>/dev/null; "
                 "rm -rf /etc/yum.repos.d /var/lib/dnf /var/cache/dnf")
    name = request.node.name.replace("[", "-").rstrip("]")
    return rpm_host, repos / name, f"file://{REPOS}/{name}"


def rpm_versions(host: ConvergeHost, name: str) -> list[str]:
    r = host.run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}\n", name], check=False)
    return r.stdout.split() if r.returncode == 0 else []


def repo_decl(url: str, *extra: str) -> str:
    return (f'YumRepo(name="cvg", descr="converge test packages", baseurl="{url}", '
            f'gpgcheck=False, enabled=True{"".join(", " + e for e in extra)})')


def dnf_desired(url: str, packages: str) -> str:
    # metadata_expire=0: dnf checks the repository's metadata on every run (it caches it for
    # 48 h by default), so that `latest` sees a version added during the test
    return f"""
from converge import Package, YumRepo

def desired(facts, settings):
    yield {repo_decl(url, 'options={"metadata_expire": "0"}')}
{packages}
"""


def test_dnf_lifecycle(rpm: tuple[ConvergeHost, Path, str], builder: PackageBuilder) -> None:
    host, repo, url = rpm
    make_rpm_repo(repo, [builder.rpm("cvg-hello", "1.0", requires=["cvg-dep"]),
                         builder.rpm("cvg-dep", "1.0"), builder.rpm("cvg-tool", "2.0")],
                  groups={"cvg-tools": ["cvg-tool"]})

    def declare(hello: str, tools: str = "present") -> str:
        return host.write_desired(dnf_desired(url, f"""
    yield Package(name="cvg-hello", ensure="{hello}", provider="dnf")
    yield Package(name="cvg-dep", provider="dnf")
    yield Package(name="@cvg-tools", ensure="{tools}", provider="dnf")
"""))

    present = declare("present")
    report = host.converge_twice(present)
    res = by_id(report)
    assert res["YumRepo[cvg]"]["action"] == "create"
    for key in ("Package[cvg-hello]", "Package[cvg-dep]", "Package[@cvg-tools]"):
        assert res[key]["action"] == "create", res[key]
    assert rpm_versions(host, "cvg-hello") == ["1.0-1"]
    assert rpm_versions(host, "cvg-tool") == ["2.0-1"]
    assert host.get_file("/etc/yum.repos.d/cvg.repo").decode() == (
        f"[cvg]\nname=converge test packages\nbaseurl={url}\nenabled=1\ngpgcheck=0\n"
        "metadata_expire=0\n")
    # the three packages went in as one dnf transaction
    history = host.run(["dnf", "-q", "history", "info", "last"]).stdout
    command = next(line for line in history.splitlines() if line.startswith("Command Line"))
    assert command.split()[-4:-3] == ["install"], history
    assert set(command.split()[-3:]) == {"cvg-hello", "cvg-dep", "@cvg-tools"}, history
    listed = host.run(["dnf", "-q", "history", "list"]).stdout.splitlines()
    assert sum(1 for line in listed if line.strip()[:1].isdigit()) == 1, listed

    # drift by hand: a package removed, the repository edited
    host.run(["rpm", "-e", "cvg-hello"])
    host.run(["sed", "-i", "s/^gpgcheck=0/gpgcheck=1/", "/etc/yum.repos.d/cvg.repo"])
    code, plan = host.plan_json(present)
    assert code == 2
    assert changes(plan, "Package[cvg-hello]") == [("ensure", "absent", "present")]
    assert changed_attributes(plan, "YumRepo[cvg]") == ["gpgcheck"]
    assert by_id(plan)["Package[cvg-dep]"]["status"] == "ok"
    assert host.apply(present).returncode == 2
    assert rpm_versions(host, "cvg-hello") == ["1.0-1"]
    assert "gpgcheck=0" in host.get_file("/etc/yum.repos.d/cvg.repo").decode()
    assert host.apply(present).returncode == 0

    # latest: a newer version published in the repository is picked up
    latest = declare("latest")
    assert host.apply(latest).returncode == 0  # nothing newer yet
    make_rpm_repo(repo, [builder.rpm("cvg-hello", "1.1", requires=["cvg-dep"])],
                  groups={"cvg-tools": ["cvg-tool"]})
    code, plan = host.plan_json(latest)
    assert code == 2
    assert changes(plan, "Package[cvg-hello]") == [("version", "1.0-1", "1.1-1")]
    assert host.apply(latest).returncode == 2
    assert host.apply(latest).returncode == 0
    assert rpm_versions(host, "cvg-hello") == ["1.1-1"]

    # a version: back to 1.0 (a downgrade), given without its release
    pinned = declare("1.0")
    code, report = host.apply_json(pinned)
    assert code == 2
    assert changes(report, "Package[cvg-hello]") == [("version", "1.1-1", "1.0")]
    assert rpm_versions(host, "cvg-hello") == ["1.0-1"]
    assert host.apply(pinned).returncode == 0

    # absent: removed, and only what was asked (cvg-dep, declared present, stays)
    gone = declare("absent", tools="absent")
    report = host.converge_twice(gone)
    assert by_id(report)["Package[cvg-hello]"]["action"] == "remove"
    assert rpm_versions(host, "cvg-hello") == []
    assert rpm_versions(host, "cvg-tool") == []
    assert rpm_versions(host, "cvg-dep") == ["1.0-1"]


def test_dnf_package_in_no_repository_fails_alone(rpm: tuple[ConvergeHost, Path, str],
                                                  builder: PackageBuilder) -> None:
    host, repo, url = rpm
    make_rpm_repo(repo, [builder.rpm("cvg-dep", "1.0"), builder.rpm("cvg-tool", "2.0")])
    path = host.write_desired(dnf_desired(url, """
    yield Package(name="cvg-dep", provider="dnf")
    yield Package(name="cvg-nothere", provider="dnf")
    yield Package(name="cvg-tool", ensure="3.0", provider="dnf")
    yield Package(name="@cvg-nogroup", provider="dnf")
"""))
    code, report = host.apply_json(path)
    assert code == 6, json.dumps(report, indent=1)  # changes and failures
    res = by_id(report)
    assert res["Package[cvg-dep]"]["status"] == "changed"
    missing = res["Package[cvg-nothere]"]
    assert missing["status"] == "failed"
    assert missing["error"].startswith(
        "cvg-nothere is not available from any enabled repository")
    assert "Unable to find a match: cvg-nothere" in missing["error"]
    assert res["Package[cvg-tool]"]["error"].startswith(
        "cvg-tool 3.0 is not available from any enabled repository")
    assert res["Package[@cvg-nogroup]"]["error"].startswith(
        "@cvg-nogroup is not available from any enabled repository")
    assert rpm_versions(host, "cvg-dep") == ["1.0-1"]  # the batch fell back to one by one
    assert rpm_versions(host, "cvg-tool") == []
    assert host.apply(path).returncode == 4  # still failing, nothing else to do


def test_dnf_broken_repository_is_not_skipped(rpm: tuple[ConvergeHost, Path, str],
                                              builder: PackageBuilder) -> None:
    host, repo, url = rpm
    make_rpm_repo(repo, [builder.rpm("cvg-dep", "1.0")])
    # Debian's dnf.conf says skip_if_unavailable=True: dnf alone would skip this repository
    path = host.write_desired(dnf_desired(url, f"""
    yield YumRepo(name="cvg-gone", baseurl="file://{REPOS}/no-such-repo", gpgcheck=False)
    yield Package(name="cvg-dep", provider="dnf")
"""))
    code, report = host.apply_json(path)
    assert code == 6, json.dumps(report, indent=1)
    res = by_id(report)
    assert res["YumRepo[cvg-gone]"]["status"] == "changed", json.dumps(report, indent=1)
    assert res["Package[cvg-dep]"]["status"] == "failed", json.dumps(report, indent=1)
    assert "Failed to download metadata for repo 'cvg-gone'" in res["Package[cvg-dep]"]["error"]
    assert rpm_versions(host, "cvg-dep") == []
    # ... and `latest` cannot be decided without it: the plan fails rather than say "no change"
    host.run(["rpm", "-i", f"{REPOS}/{repo.name}/cvg-dep-1.0-1.noarch.rpm"])
    latest = host.write_desired(dnf_desired(url, f"""
    yield YumRepo(name="cvg-gone", baseurl="file://{REPOS}/no-such-repo", gpgcheck=False)
    yield Package(name="cvg-dep", ensure="latest", provider="dnf")
"""))
    code, plan = host.plan_json(latest)
    assert code == 4
    error = by_id(plan)["Package[cvg-dep]"]["error"]
    assert "check-update" in error and "cvg-gone" in error


def test_dnf_install_from_source_path_and_url(rpm: tuple[ConvergeHost, Path, str],
                                              builder: PackageBuilder, repos: Path) -> None:
    """Like the PGDG repository RPM: installed from a file or URL, probed by its name."""
    host, repo, url = rpm
    make_rpm_repo(repo, [builder.rpm("cvg-dep", "1.0")])
    loose = repos / f"{repo.name}-loose"
    loose.mkdir()
    for name in ("cvg-release", "cvg-web"):
        shutil.copy2(builder.rpm(name, "1.0"), loose)
    served = Served(repos, host.host_address)
    try:
        path = host.write_desired(dnf_desired(url, f"""
    yield Package(name="cvg-release", provider="dnf",
                  source="{REPOS}/{loose.name}/cvg-release-1.0-1.noarch.rpm")
    yield Package(name="cvg-web", provider="dnf",
                  source="{served.url}/{loose.name}/cvg-web-1.0-1.noarch.rpm")
"""))
        host.converge_twice(path)
    finally:
        served.close()
    assert rpm_versions(host, "cvg-release") == ["1.0-1"]
    assert rpm_versions(host, "cvg-web") == ["1.0-1"]


# -- choosing a provider -----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("dnf") is None,
                    reason="needs a Debian machine with dnf installed")
def test_debian_with_dnf_installed_keeps_apt_unless_told() -> None:
    host = LocalHost()
    facts = Facts.gather(host)
    assert facts.os_family == "debian"
    assert choose_provider(Package(name="tree"), host, facts) is AptProvider
    assert choose_provider(Package(name="tree", provider="dnf"), host, facts) is DnfProvider
    # a redhat-family host with apt-get around never picks apt
    rhel = PRESETS["rhel-9"]
    assert choose_provider(Package(name="tree"), host, rhel) is DnfProvider


def test_group_validation() -> None:
    with pytest.raises(ValueError, match="no version"):
        Package(name="@development", ensure="1.0")
    assert Package(name="@development", ensure="latest").is_group
    assert list(Package(name="tree", provider="apt").requires_kinds()) == []
    assert list(Package(name="tree").requires_kinds()) == ["YumRepo"]


def test_yumrepo_continued_values_and_file_names(cli: Callable[..., Any],
                                                 write_desired: Callable[[str], Path],
                                                 tmp_path: Path) -> None:
    from converge.resources.yumrepo import YumRepo

    repo = tmp_path / "mirrors.repo"
    repo.write_text("[base]\nname=Base\nbaseurl=http://a.example/os/\n"
                    "        http://b.example/os/\n# a comment\ngpgcheck=1\n\n[other]\nx=1\n")
    desired = write_desired(f"""
        from converge import YumRepo

        def desired(facts, settings):
            yield YumRepo(name="base", file="{repo}", baseurl="http://c.example/os/")
    """)
    plan = json.loads(cli("plan", desired, "--json").out)
    assert [(c["attribute"], c["before"], c["after"]) for c in plan["resources"][0]["changes"]] \
        == [("baseurl", "http://a.example/os/\nhttp://b.example/os/", "http://c.example/os/")]
    assert cli("apply", desired).code == 2
    assert repo.read_text() == ("[base]\nname=Base\nbaseurl=http://c.example/os/\n# a comment\n"
                                "gpgcheck=1\n\n[other]\nx=1\n")
    assert cli("apply", desired).code == 0
    with pytest.raises(ValueError, match="one line"):
        YumRepo(name="x", baseurl="http://a/\nhttp://b/")
    with pytest.raises(ValueError, match=r"NAME\.repo"):
        YumRepo(name="x", baseurl="http://a/", file="x.conf")
    assert YumRepo(name="x", baseurl="http://a/", file="pgdg-redhat-all.repo").path == \
        "/etc/yum.repos.d/pgdg-redhat-all.repo"
