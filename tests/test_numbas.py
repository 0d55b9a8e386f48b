"""The flagship, desired/numbas.py: the RHEL 7 catalog against the guide, and the whole stack
converged on a throwaway Debian systemd host with drift made by hand and repaired.

The app is tests/fixtures/numbas_app (a small real Django project with the real app's moving
parts), served from a local bare repository; Python packages come from an offline wheelhouse.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.numbas_fixture import FixtureRepo, fixture_repo, wheelhouse
from tests.testhost import Bind, prefetch
from tests.testhost.converge import ConvergeHost, boot_converge_host, by_id

REPO = Path(__file__).resolve().parent.parent
DESIRED = REPO / "desired" / "numbas.py"
SECRETS = {"NUMBAS_DB_PASSWORD": "db-'pa\"ss\\word-1", "NUMBAS_ADMIN_PASSWORD": "admin-pw-2"}


# -- the catalog, without a host ----------------------------------------------------------------

def catalog(cli: Any, facts: str, *extra: str) -> dict[str, Any]:
    result = cli("plan", DESIRED, "--facts", facts, "--json", *extra)
    assert result.code == 0, result
    doc: dict[str, Any] = json.loads(result.out)
    return doc


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)


def test_rhel7_catalog_follows_the_guide(cli: Any, secrets_env: None) -> None:
    doc = catalog(cli, "rhel-7")
    res = {r["id"]: r["fields"] for r in doc["resources"]}
    ids = list(res)
    # repositories and packages
    assert res["YumRepo[nginx]"]["baseurl"] == "http://nginx.org/packages/rhel/7/$basearch/"
    assert "EL-7-x86_64/pgdg-redhat-repo-latest.noarch.rpm" in \
        res["Package[pgdg-redhat-repo]"]["source"]
    for pkg in ("postgresql96-server", "postgresql96-devel", "python36", "python36-pip",
                "python36-devel", "python3-virtualenv", "redis", "supervisor", "git",
                "@development", "nginx"):
        assert f"Package[{pkg}]" in res, pkg
    # the step the guide forgets, and pg_hba at its real path
    assert res["Command[postgresql-initdb]"]["argv"] == [
        "/usr/pgsql-9.6/bin/postgresql96-setup", "initdb"]
    hba = [r for r in ids if r.startswith("FileLine[/var/lib/pgsql/9.6/data/pg_hba.conf")]
    assert len(hba) == 2
    assert all(res[h]["line"].endswith(" md5") for h in hba)
    # services, with RHEL's names
    for svc in ("redis", "postgresql-9.6", "supervisord", "nginx", "numbas_lti:", "firewalld"):
        assert f"Service[{svc}]" in res, svc
    # users: nginx (not www-data) joins the app's group
    assert res["User[nginx]"]["groups"] == ["numbas_lti"]
    assert "User[www-data]" not in res
    # the v3 branch with the guide's pins, Python 3.6
    assert res["GitCheckout[/srv/numbas-lti-provider]"]["revision"] == "v3_STABLE"
    venv = res["Virtualenv[/opt/numbas_lti_python]"]
    assert venv["python"] == "/usr/bin/python3.6"
    assert venv["packages"] == ["channels_redis==3.3.0", "psycopg2==2.8.6", "redis==3.5.3"]
    # supervisor file in RHEL's place, programs as numbas_lti, daphne on 127.0.0.1
    assert "File[/etc/supervisord.d/numbas_lti.ini]" in res
    assert "File[/etc/nginx/conf.d/default.conf]" in res
    # firewall and SELinux (booleans and file contexts, not permissive mode)
    assert "Firewall[public:http]" in res and "Firewall[public:https]" in res
    assert res["SEBool[httpd_can_network_connect]"]["value"] in (True, "on")
    assert any(r.startswith("SEFcontext[") for r in ids)
    assert not any(r.startswith("SELinuxMode[") for r in ids)
    assert res["File[/etc/cron.daily/numbas-lti-clearsessions]"]["mode"] == "0755"
    # secrets stay secret even in a catalog listing
    text = json.dumps(doc)
    assert SECRETS["NUMBAS_DB_PASSWORD"] not in text
    assert SECRETS["NUMBAS_ADMIN_PASSWORD"] not in text


def test_debian_catalog_and_order(cli: Any, secrets_env: None) -> None:
    doc = catalog(cli, "debian-12")
    res = {r["id"]: r["fields"] for r in doc["resources"]}
    assert res["GitCheckout[/srv/numbas-lti-provider]"]["revision"] == "v4.4"
    assert "File[/etc/supervisor/conf.d/numbas_lti.conf]" in res
    assert "File[/etc/nginx/sites-available/default]" in res
    assert res["User[www-data]"]["groups"] == ["numbas_lti"]
    for svc in ("redis-server", "postgresql", "supervisor", "nginx"):
        assert f"Service[{svc}]" in res
    assert not any(r.startswith(("SEBool", "SEFcontext", "YumRepo")) for r in res)
    # the administrator exists before nginx exposes the site
    graph = cli("graph", DESIRED, "--facts", "debian-12")
    assert graph.code == 0
    assert '"Command[createsuperuser]" -> "File[/etc/nginx/sites-available/default]"' \
        in graph.out


def test_impossible_branch_is_refused_at_plan_time(cli: Any, secrets_env: None) -> None:
    """Refused when the desired state is loaded, before anything is probed."""
    r = cli("plan", DESIRED, "--facts", "rhel-7", "--set", "branch=v4_STABLE")
    assert r.code == 1
    assert "branch v4_STABLE (Django 6.0) needs Python 3.12+" in r.err
    assert "PostgreSQL 14+" in r.err and "numbas.py:" in r.err


def test_missing_secret_says_where_it_comes_from(cli: Any, secrets_env: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMBAS_ADMIN_PASSWORD")
    missing = cli("plan", DESIRED, "--facts", "debian-12")
    assert missing.code == 1
    assert "admin_password: Field required" in missing.err
    assert "NUMBAS_<NAME>" in missing.err


# -- the whole stack on a test host ---------------------------------------------------------------

DEBIAN_PACKAGES = ["git", "redis-server", "postgresql", "python3-venv", "supervisor", "nginx",
                   "cron", "openssl", "firewalld"]
DOMAIN = "numbas.test"


@pytest.fixture(scope="module")
def stack(testhost_image: Any, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[ConvergeHost, FixtureRepo, list[str]]]:
    work = tmp_path_factory.mktemp("numbas")
    repo = fixture_repo(work / "numbas.git")
    wheels = wheelhouse()
    prefetch(DEBIAN_PACKAGES, image=testhost_image)
    host = boot_converge_host(testhost_image, "numbas", binds=[
        Bind(repo.path, "/srv/git/numbas.git"), Bind(wheels, "/srv/wheels")])
    try:
        host.put_file("/etc/gitconfig", "[safe]\n\tdirectory = *\n")
        args = ["--set", f"domain={DOMAIN}", "--set", "source=file:///srv/git/numbas.git",
                "--set", 'pip_options=["--no-index", "--find-links", "/srv/wheels"]',
                "--set", 'extra_packages=["channels_redis==4.2.0", "redis==5.0.4"]',
                "--set", "build_packages=false"]
        yield host, repo, args
    finally:
        host.host.stop()


def run(host: ConvergeHost, verb: str, args: list[str], *extra: str) -> Any:
    return host.converge(verb, "/opt/converge-src/desired/numbas.py", *args, *extra,
                         env=SECRETS, timeout=1800)


def https(host: ConvergeHost, path: str) -> tuple[int, str]:
    script = (
        "import ssl, sys, urllib.request, urllib.error\n"
        "ctx = ssl._create_unverified_context()\n"
        f"req = urllib.request.Request('https://127.0.0.1{path}', "
        f"headers={{'Host': '{DOMAIN}'}})\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, context=ctx, timeout=20)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n")
    out = host.run(["python3", "-c", script], timeout=60).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # retried until the deadline
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return check()
        time.sleep(1)


def test_numbas_stack_converges_and_repairs_drift(
    stack: tuple[ConvergeHost, FixtureRepo, list[str]],
) -> None:
    host, repo, args = stack
    started = time.monotonic()
    first = run(host, "apply", args, "--json")
    took = time.monotonic() - started
    assert first.returncode == 2, f"{first.stdout[-6000:]}\n{first.stderr[-4000:]}"
    report = json.loads(first.stdout)
    assert report["summary"]["failed"] == 0
    second = run(host, "apply", args)
    assert second.returncode == 0, second.stdout[-4000:]
    assert run(host, "plan", args).returncode == 0
    print(f"fresh host to working site: {took:.0f} s")

    # the site, through nginx over HTTPS
    status, body = wait_for(lambda: https(host, "/login"))
    assert status == 200 and "Log in as an administrator" in body
    status, manifest = https(host, "/static/staticfiles.json")
    assert status == 200 and "paths" in json.loads(manifest)
    # four daphne processes and huey, on loopback
    programs = host.run(["supervisorctl", "status"], check=False).stdout
    assert programs.count("RUNNING") == 5, programs
    listening = host.run(["ss", "-ltnH"]).stdout
    for port in range(8700, 8704):
        assert f"127.0.0.1:{port}" in listening
    # the database with password authentication, redis, migrations, cron, firewall
    host.run(["psql", "-h", "127.0.0.1", "-U", "numbas_lti", "-d", "numbas_lti", "-c",
              "select 1"], env={"PGPASSWORD": SECRETS["NUMBAS_DB_PASSWORD"]})
    assert host.run(["redis-cli", "ping"]).stdout.strip() == "PONG"
    host.run(["runuser", "-u", "numbas_lti", "--", "/opt/numbas_lti_python/bin/python",
              "manage.py", "migrate", "--check"], cwd="/srv/numbas-lti-provider")
    info = json.loads(host.run(
        ["runuser", "-u", "numbas_lti", "--", "/opt/numbas_lti_python/bin/python",
         "manage.py", "fixture_info"], cwd="/srv/numbas-lti-provider").stdout)
    assert "RedisChannelLayer" in json.dumps(info) and info.get("admin_exists", True)
    assert host.run(["stat", "-c", "%a", "/etc/cron.daily/numbas-lti-clearsessions"]
                    ).stdout.strip() == "755"
    assert host.run(["firewall-cmd", "--permanent", "--zone=public",
                     "--query-service=https"]).stdout.strip() == "yes"
    host.run(["nginx", "-t"])
    settings_mode = host.run(["stat", "-c", "%a %G", "/srv/numbas-lti-provider/"
                              "numbasltiprovider/settings.py"]).stdout.strip()
    assert settings_mode == "640 numbas_lti"
    for secret in SECRETS.values():
        assert secret not in first.stdout + first.stderr

    # drift made by hand, several kinds at once: plan shows each, apply repairs all
    host.run(["systemctl", "stop", "nginx"])
    host.run(["sh", "-c", "echo '# edited by hand' >> /etc/nginx/sites-available/default"])
    host.run(["chmod", "0777", "/srv/numbas-lti-media"])
    host.run(["runuser", "-u", "postgres", "--", "psql", "-c",
              "ALTER ROLE numbas_lti NOCREATEDB PASSWORD 'changed-by-hand'"], cwd="/")
    host.run(["supervisorctl", "stop", "numbas_lti:numbas_lti_daphne_00"])
    host.run(["firewall-cmd", "--zone=public", "--remove-service=https"])
    host.run(["firewall-cmd", "--permanent", "--zone=public", "--remove-service=https"])
    host.run(["runuser", "-u", "numbas_lti", "--", "git", "-C", "/srv/numbas-lti-provider",
              "checkout", "-q", repo.update])
    code = run(host, "plan", args, "--json")
    assert code.returncode == 2, code.stderr[-3000:]
    plan = by_id(json.loads(code.stdout))
    expected = {
        "Service[nginx]": {"running"},
        "File[/etc/nginx/sites-available/default]": {"content"},
        "File[/srv/numbas-lti-media]": {"mode"},
        "PgRole[numbas_lti]": {"createdb", "password"},
        "Service[numbas_lti:]": {"running"},
        "Firewall[public:https]": None,
        "GitCheckout[/srv/numbas-lti-provider]": None,
    }
    for rid, attrs in expected.items():
        changed = {c["attribute"] for c in plan[rid]["changes"]}
        assert changed, f"{rid}: no drift seen"
        if attrs is not None:
            assert attrs <= changed, (rid, changed)
    repaired = run(host, "apply", args, "--json")
    assert repaired.returncode == 2, repaired.stdout[-6000:]
    again = run(host, "apply", args)
    assert again.returncode == 0, again.stdout[-4000:]

    status, body = wait_for(lambda: https(host, "/login"))
    assert status == 200 and "fixture revision 1" in body  # back on v4.4's commit
    assert host.run(["stat", "-c", "%a", "/srv/numbas-lti-media"]).stdout.strip() == "2770"
    host.run(["psql", "-h", "127.0.0.1", "-U", "numbas_lti", "-d", "numbas_lti", "-c",
              "select 1"], env={"PGPASSWORD": SECRETS["NUMBAS_DB_PASSWORD"]})
    assert host.run(["firewall-cmd", "--zone=public", "--query-service=https"]
                    ).stdout.strip() == "yes"
    assert host.run(["supervisorctl", "status"], check=False).stdout.count("RUNNING") == 5
    assert "edited by hand" not in host.get_file("/etc/nginx/sites-available/default").decode()
    if os.environ.get("CONVERGE_BENCH_OUT"):
        Path(os.environ["CONVERGE_BENCH_OUT"]).write_text(json.dumps({"fresh": took}))
