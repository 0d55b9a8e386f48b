"""The Numbas LTI provider, installed and kept as its RHEL 7 guide does by hand (corrected),
and on Debian/Ubuntu too.

    converge plan desired/numbas.py --set domain=lti.example.org
    NUMBAS_DB_PASSWORD=... NUMBAS_ADMIN_PASSWORD=... converge apply desired/numbas.py \
        --set domain=lti.example.org --set admin_email=you@example.org

docs/numbas.md has the guide-step table, the settings and how each step is verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from converge import (
    Command,
    Facts,
    File,
    FileLine,
    Firewall,
    GitCheckout,
    Group,
    Package,
    PgDatabase,
    PgRole,
    SEBool,
    SEFcontext,
    SELinuxMode,
    Service,
    User,
    Virtualenv,
    YumRepo,
)

HERE = Path(__file__).parent
TEMPLATES = "templates/numbas"

APP_USER = "numbas_lti"
APP_DIR = "/srv/numbas-lti-provider"
VENV = "/opt/numbas_lti_python"
MEDIA = "/srv/numbas-lti-media"
STATIC = "/srv/numbas-lti-static"
ERROR_ROOT = "/srv/www/server-error"
SECRETS_DIR = "/etc/numbas-lti"
SECRET_KEY_FILE = f"{SECRETS_DIR}/secret_key"
DB = "numbas_lti"


# -- what each branch needs, and what each platform offers -----------------------------------

@dataclass(frozen=True)
class Branch:
    django: str
    min_python: tuple[int, int]
    min_postgres: int
    extra_packages: tuple[str, ...]


V3_PINS = ("channels_redis==3.3.0", "psycopg2==2.8.6", "redis==3.5.3")
V4_PINS = ("channels_redis==4.2.0", "psycopg2==2.9.9", "redis==5.0.4")


def branch_needs(branch: str) -> Branch:
    if branch.startswith("v3"):
        return Branch("3.2", (3, 6), 9, V3_PINS)
    if branch in ("v4.2", "v4.3", "v4.4"):
        return Branch("5.1", (3, 10), 13, V4_PINS)
    return Branch("6.0", (3, 12), 14, V4_PINS)  # v4_STABLE and later


@dataclass(frozen=True)
class Platform:
    """What a platform offers: the interpreter the venv uses and the PostgreSQL it runs."""

    python: str  # interpreter path
    python_version: tuple[int, int]
    postgres: str  # major version, as in paths ("9.6", "15")
    default_branch: str
    web_user: str

    @property
    def pg_major(self) -> int:
        return int(self.postgres.split(".")[0])


def platform_of(facts: Facts) -> Platform:
    if facts.is_redhat:
        if facts.os_major <= 7:
            return Platform("/usr/bin/python3.6", (3, 6), "9.6", "v3_STABLE", "nginx")
        return Platform("/usr/bin/python3.12", (3, 12), "16", "v4_STABLE", "nginx")
    table = {
        ("debian", 12): ((3, 11), "15"), ("debian", 13): ((3, 13), "17"),
        ("ubuntu", 22): ((3, 10), "14"), ("ubuntu", 24): ((3, 12), "16"),
    }
    version, pg = table.get((facts.os_id, facts.os_major), ((3, 11), "15"))
    branch = "v4_STABLE" if version >= (3, 12) else "v4.4"
    return Platform("/usr/bin/python3", version, pg, branch, "www-data")


# -- settings ---------------------------------------------------------------------------------

class Settings(BaseSettings):
    """Parameters of this desired state: `--set key=value`, NUMBAS_<KEY> environment
    variables, or files named after the key in the secrets directory (db_password...)."""

    model_config = SettingsConfigDict(env_prefix="NUMBAS_")

    domain: str = Field(default="localhost", min_length=1, pattern=r"^[A-Za-z0-9.-]+$",
                        description="Public host name of the site.")
    branch: str | None = Field(
        default=None, description="Git branch or tag (default: the newest the platform's "
        "Python and PostgreSQL can run: v3_STABLE on RHEL 7, v4.4 on Debian 12...).")
    source: str = Field(default="https://github.com/numbas/numbas-lti-provider.git",
                        description="Git URL of the application.")
    db_password: SecretStr = Field(description="Password of the numbas_lti database role.")
    admin_user: str = Field(default="admin", description="First administrator's user name.")
    admin_email: str = Field(default="admin@localhost", description="Administrator's email.")
    admin_password: SecretStr = Field(description="First administrator's password.")
    tls_cert: str = Field(default="/etc/ssl/numbas-lti/cert.pem",
                          description="TLS certificate for nginx.")
    tls_key: str = Field(default="/etc/ssl/numbas-lti/key.pem", description="Its private key.")
    self_signed: bool = Field(
        default=True, description="Generate a self-signed certificate when none exists "
        "(replace it with a real one, or use certbot).")
    pip_options: list[str] = Field(
        default_factory=list, description="Extra pip options, e.g. an index URL or "
        "['--no-index', '--find-links', '/srv/wheels'] for offline hosts.")
    extra_packages: list[str] | None = Field(
        default=None, description="Pins installed besides requirements.txt (default: the "
        "guide's pins for the branch).")
    build_packages: bool = Field(
        default=True, description="Install compilers and headers to build psycopg2/lxml.")
    listen: str = Field(default="127.0.0.1", description="Address daphne binds to.")
    base_port: int = Field(default=8700, description="First daphne port (a multiple of 100).")
    processes: int = Field(default=4, ge=1, le=99, description="daphne processes.")
    firewall: bool = Field(default=True, description="Open http/https in firewalld.")
    selinux_permissive: bool = Field(
        default=False, description="Opt-in: make SELinux permissive (the guide does; not "
        "needed: booleans and file contexts are managed instead).")
    rhel_subscription_repos: bool = Field(
        default=False, description="RHEL only: enable the optional and RHSCL repositories "
        "with subscription-manager.")
    epel: bool = Field(default=True, description="RHEL/CentOS: install epel-release "
                       "(redis and supervisor come from EPEL).")
    certbot: bool = Field(default=False, description="Install certbot and renew daily "
                          "(obtaining the first certificate is documented, not automated).")
    http_proxy: str | None = Field(default=None, description="Proxy for the app's outgoing "
                                   "HTTP(S) (HTTP_PROXY/HTTPS_PROXY in supervisor).")

    @model_validator(mode="after")
    def _ports(self) -> Settings:
        if self.base_port % 100 or not 1000 <= self.base_port <= 65400:
            raise ValueError("base_port must be a multiple of 100 between 1000 and 65400")
        return self


def check_branch(branch: str, platform: Platform) -> Branch:
    needs = branch_needs(branch)
    problems = []
    if platform.python_version < needs.min_python:
        have = ".".join(map(str, platform.python_version))
        want = ".".join(map(str, needs.min_python))
        problems.append(f"Python {want}+ (this platform's is {have})")
    if platform.pg_major < needs.min_postgres:
        problems.append(f"PostgreSQL {needs.min_postgres}+ (this platform's is "
                        f"{platform.postgres})")
    if problems:
        raise ValueError(f"branch {branch} (Django {needs.django}) needs "
                         f"{' and '.join(problems)}; choose another branch with "
                         f"--set branch=... (e.g. {platform.default_branch})")
    return needs


# -- the desired state ------------------------------------------------------------------------

def desired(facts: Facts, settings: Settings):  # type: ignore[no-untyped-def]
    platform = platform_of(facts)
    branch = settings.branch or platform.default_branch
    needs = check_branch(branch, platform)
    redhat = facts.is_redhat
    web = platform.web_user
    pg = platform.postgres
    pg_nodot = pg.replace(".", "")

    # packages and repositories
    if redhat:
        if settings.rhel_subscription_repos and facts.os_id == "rhel":
            yield Command(
                name="rhel-repos",
                argv=["subscription-manager", "repos", "--enable", "rhel-7-server-optional-rpms",
                      "--enable", "rhel-server-rhscl-7-rpms"],
                unless=["sh", "-c", "subscription-manager repos --list-enabled | "
                        "grep -q rhel-7-server-optional-rpms"])
        if settings.epel:
            yield Package(name="epel-release")
        yield YumRepo(name="nginx", descr="nginx stable repo",
                      baseurl=f"http://nginx.org/packages/rhel/{facts.os_major}/$basearch/",
                      gpgcheck=True, gpgkey="https://nginx.org/keys/nginx_signing.key",
                      enabled=True, options={"module_hotfixes": "true"})
        yield Package(name="pgdg-redhat-repo",
                      source=f"https://download.postgresql.org/pub/repos/yum/reporpms/"
                             f"EL-{facts.os_major}-x86_64/pgdg-redhat-repo-latest.noarch.rpm")
        if facts.os_major >= 8:
            yield Command(name="disable-postgresql-module",
                          argv=["dnf", "-qy", "module", "disable", "postgresql"],
                          unless=["sh", "-c", "dnf -q module list --disabled postgresql "
                                  "2>/dev/null | grep -q postgresql"],
                          requires=["Package[pgdg-redhat-repo]"])
        python_pkgs = (["python36", "python36-pip", "python36-devel", "python3-virtualenv"]
                       if facts.os_major <= 7 else ["python3.12", "python3.12-pip",
                                                    "python3.12-devel"])
        names = [*python_pkgs, "redis", "supervisor", "git", "nginx", "cronie", "openssl",
                 f"postgresql{pg_nodot}-server"]
        if settings.build_packages:
            names += [f"postgresql{pg_nodot}-devel", "@development"]
        if settings.firewall:
            names.append("firewalld")
        if facts.selinux != "absent":
            names += ["policycoreutils-python" if facts.os_major <= 7
                      else "policycoreutils-python-utils"]
        pg_requires = ["Package[pgdg-redhat-repo]"] + (
            ["Command[disable-postgresql-module]"] if facts.os_major >= 8 else [])
        for name in names:
            yield Package(name=name, requires=pg_requires if "postgresql" in name else [])
    else:
        names = ["git", "redis-server", "postgresql", "python3-venv", "supervisor", "nginx",
                 "cron", "openssl"]
        if settings.build_packages:
            names += ["postgresql-server-dev-all", "python3-dev", "libxml2-dev",
                      "libxslt1-dev", "build-essential"]
        if settings.firewall:
            names.append("firewalld")
        for name in names:
            yield Package(name=name)
    if settings.certbot:
        yield Package(name="certbot")
        yield File(path="/etc/cron.daily/certbot-renew", mode="0755",
                   content="#!/bin/sh\n# Generated by converge: renew certificates, reload "
                           "nginx when one changed.\nexec certbot renew --quiet "
                           "--deploy-hook 'systemctl reload nginx'\n")

    # services that only need their packages
    redis = "redis" if redhat else "redis-server"
    supervisor = "supervisord" if redhat else "supervisor"
    postgres_unit = f"postgresql-{pg}" if redhat else "postgresql"
    yield Service(name=redis, running=True, enabled=True, requires=[f"Package[{redis}]"])
    yield Service(name=supervisor, running=True, enabled=True,
                  requires=["Package[supervisor]"])

    # PostgreSQL: initialise (the guide forgets), password authentication on localhost
    if redhat:
        setup = (f"/usr/pgsql-{pg}/bin/postgresql{pg_nodot}-setup" if pg == "9.6"
                 else f"/usr/pgsql-{pg}/bin/postgresql-{pg}-setup")
        data = f"/var/lib/pgsql/{pg}/data"
        yield Command(name="postgresql-initdb", argv=[setup, "initdb"],
                      creates=f"{data}/PG_VERSION",
                      requires=[f"Package[postgresql{pg_nodot}-server]"])
        hba = f"{data}/pg_hba.conf"
        hba_requires = ["Command[postgresql-initdb]"]
    else:
        hba = f"/etc/postgresql/{pg}/main/pg_hba.conf"
        hba_requires = ["Package[postgresql]"]
    method = "md5" if platform.pg_major < 14 else "scram-sha-256"
    for address, pattern in (("127.0.0.1/32", r"127\.0\.0\.1/32"), ("::1/128", r"::1/128")):
        yield FileLine(path=hba, match=rf"^host\s+all\s+all\s+{pattern}\s",
                       line=f"host    all             all             {address:<23} {method}",
                       requires=hba_requires, notify=[f"Service[{postgres_unit}]"])
    yield Service(name=postgres_unit, running=True, enabled=True, requires=hba_requires)
    yield PgRole(name=DB, login=True, createdb=True, password=settings.db_password,
                 requires=[f"Service[{postgres_unit}]"])
    yield PgDatabase(name=DB, owner=DB, encoding="UTF8", template="template0",
                     requires=[f"Service[{postgres_unit}]"])

    # the application's user; the web server reads its files through the group
    yield Group(name=APP_USER, system=True)
    yield User(name=APP_USER, group=APP_USER, system=True, home=APP_DIR, shell="/sbin/nologin"
               if redhat else "/usr/sbin/nologin")
    yield User(name=web, groups=[APP_USER], requires=["Package[nginx]"])

    # directories
    yield File(path=MEDIA, ensure="directory", owner=APP_USER, group=APP_USER, mode="2770")
    yield File(path=STATIC, ensure="directory", owner=APP_USER, group=APP_USER, mode="2775")
    yield File(path="/srv/www", ensure="directory", mode="0755")
    yield File(path=ERROR_ROOT, ensure="directory", mode="0755")
    yield File(path=f"{ERROR_ROOT}/502.html", source=f"{TEMPLATES}/502.html", mode="0644")

    # the code, its settings and its virtualenv
    restart_app = ["Service[numbas_lti:]"]
    yield GitCheckout(path=APP_DIR, source=settings.source, revision=branch, ensure="latest",
                      owner=APP_USER, group=APP_USER, requires=["Package[git]"],
                      notify=[*restart_app, "Command[collectstatic-update]"])
    yield File(path=SECRETS_DIR, ensure="directory", owner="root", group=APP_USER,
               mode="0750")
    yield Command(name="secret-key",
                  argv=[platform.python, "-c",
                        "import os, secrets; os.umask(0o027); "
                        f"open({SECRET_KEY_FILE!r}, 'x').write(secrets.token_urlsafe(50))"],
                  creates=SECRET_KEY_FILE, requires=[f"File[{SECRETS_DIR}]"])
    yield File(path=SECRET_KEY_FILE, owner="root", group=APP_USER, mode="0640",
               requires=["Command[secret-key]"])
    settings_py = f"{APP_DIR}/numbasltiprovider/settings.py"
    yield File(path=settings_py, template=f"{TEMPLATES}/settings.py.j2", owner="root",
               group=APP_USER, mode="0640", requires=[f"GitCheckout[{APP_DIR}]"],
               notify=restart_app,
               vars={"domain": settings.domain, "db_name": DB, "db_user": DB,
                     "db_password": settings.db_password, "secret_key_file": SECRET_KEY_FILE,
                     "static_root": STATIC + "/", "media_root": MEDIA + "/"})
    pins = settings.extra_packages if settings.extra_packages is not None \
        else list(needs.extra_packages)
    yield Virtualenv(path=VENV, python=platform.python,
                     requirements=f"{APP_DIR}/requirements.txt", packages=pins,
                     pip_options=settings.pip_options,
                     requires=[f"GitCheckout[{APP_DIR}]", "Package[git]"],
                     notify=[*restart_app, "Command[collectstatic-update]"])

    # Django: migrate, static files, the first administrator (first_setup.py is not driven)
    manage = [f"{VENV}/bin/python", "manage.py"]
    django = {"requires": [f"File[{settings_py}]", f"Virtualenv[{VENV}]",
                           f"PgDatabase[{DB}]", f"PgRole[{DB}]", f"Service[{redis}]",
                           f"File[{SECRET_KEY_FILE}]"],
              "cwd": APP_DIR, "user": APP_USER}
    yield Command(name="migrate", argv=[*manage, "migrate", "--noinput"],
                  unless=[*manage, "migrate", "--check"], **django)  # type: ignore[arg-type]
    collect = {**django, "requires": [*django["requires"], f"File[{STATIC}]"]}
    yield Command(name="collectstatic", argv=[*manage, "collectstatic", "--noinput"],
                  creates=f"{STATIC}/staticfiles.json", **collect)  # type: ignore[arg-type]
    yield Command(name="collectstatic-update", argv=[*manage, "collectstatic", "--noinput"],
                  refreshonly=True, **collect)  # type: ignore[arg-type]
    yield Command(
        name="createsuperuser", argv=[*manage, "createsuperuser", "--noinput"],
        unless=[*manage, "shell", "-c",
                "import sys; from django.contrib.auth import get_user_model; "
                "sys.exit(0 if get_user_model().objects.filter(is_superuser=True).exists() "
                "else 1)"],
        env={"DJANGO_SUPERUSER_USERNAME": settings.admin_user,
             "DJANGO_SUPERUSER_EMAIL": settings.admin_email,
             "DJANGO_SUPERUSER_PASSWORD": settings.admin_password},
        **{**django, "requires": [*django["requires"], "Command[migrate]"]})  # type: ignore[arg-type]

    # the programs under supervisord
    conf = ("/etc/supervisord.d/numbas_lti.ini" if redhat
            else "/etc/supervisor/conf.d/numbas_lti.conf")
    environment = 'DJANGO_SETTINGS_MODULE="numbasltiprovider.settings"'
    if settings.http_proxy:
        environment += (f',HTTP_PROXY="{settings.http_proxy}",'
                        f'HTTPS_PROXY="{settings.http_proxy}"')
    yield File(path=conf, template=f"{TEMPLATES}/supervisor.conf.j2", mode="0644",
               requires=["Package[supervisor]", f"Service[{supervisor}]"],
               notify=restart_app,
               vars={"venv": VENV, "listen": settings.listen, "app_dir": APP_DIR,
                     "user": APP_USER, "processes": settings.processes,
                     "port_prefix": settings.base_port // 100, "environment": environment})
    yield Service(name="numbas_lti:", running=True,
                  requires=[f"File[{conf}]", "Command[migrate]", "Command[collectstatic]",
                            f"Service[{supervisor}]"])

    # cron
    yield File(path="/etc/cron.daily/numbas-lti-clearsessions", mode="0755",
               template=f"{TEMPLATES}/clearsessions.cron.j2",
               vars={"app_dir": APP_DIR, "user": APP_USER, "venv": VENV},
               requires=["Package[cronie]" if redhat else "Package[cron]"])

    # TLS and nginx: exposed only once an administrator exists
    if settings.self_signed:
        cert_dir = str(Path(settings.tls_cert).parent)
        yield File(path=cert_dir, ensure="directory", mode="0755")
        yield Command(
            name="self-signed-certificate",
            argv=["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "825",
                  "-subj", f"/CN={settings.domain}", "-keyout", settings.tls_key,
                  "-out", settings.tls_cert],
            creates=settings.tls_cert, requires=[f"File[{cert_dir}]", "Package[openssl]"])
        yield File(path=settings.tls_key, mode="0600", owner="root",
                   requires=["Command[self-signed-certificate]"])
    site = ("/etc/nginx/conf.d/default.conf" if redhat
            else "/etc/nginx/sites-available/default")
    yield File(path=site, template=f"{TEMPLATES}/nginx.conf.j2", mode="0644",
               requires=["Package[nginx]", "Command[createsuperuser]",
                         f"File[{ERROR_ROOT}/502.html]"]
               + (["Command[self-signed-certificate]"] if settings.self_signed else []),
               notify=["Service[nginx]"],
               vars={"domain": settings.domain, "tls_cert": settings.tls_cert,
                     "tls_key": settings.tls_key, "static_root": STATIC + "/",
                     "media_root": MEDIA + "/", "error_root": ERROR_ROOT,
                     "ports": [settings.base_port + i for i in range(settings.processes)]})
    yield Service(name="nginx", running=True, enabled=True, reload=True,
                  check=["nginx", "-t"], requires=[f"File[{site}]", "Service[numbas_lti:]"])

    # firewall and SELinux
    if settings.firewall:
        yield Service(name="firewalld", running=True, enabled=True,
                      requires=["Package[firewalld]"])
        for service in ("http", "https"):
            yield Firewall(zone="public", service=service, requires=["Service[firewalld]"])
    if facts.selinux != "absent":
        yield SEBool(name="httpd_can_network_connect", value=True, persistent=True)
        for path in (STATIC, MEDIA, "/srv/www"):
            yield SEFcontext(target=f"{path}(/.*)?", setype="httpd_sys_content_t",
                             requires=[f"File[{path}]"])
        if settings.selinux_permissive:
            yield SELinuxMode(mode="permissive")
