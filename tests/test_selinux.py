"""SEBool, SELinuxMode and SEFcontext.

Live part: the real ``semanage``/``setsebool -P``/``restorecon`` against Debian's reference
policy store inside a throwaway systemd host. This machine's kernel has no SELinux, so the
host is an SELinux-*disabled* host: the persistent state is managed for real, and the runtime
part must be skipped with a note in plan and report.

Recorded part: what needs an SELinux-enabled kernel (running booleans, setenforce, labels)
replays the tools' output from tests/fixtures/selinux/ (see its README: recorded, not live).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from converge.errors import CommandError, ResourceError
from converge.facts import Facts
from converge.host import FileState, Result
from converge.resources.selinux import (
    SEBool,
    SEFcontext,
    SELinuxMode,
    SemanageFcontextProvider,
    SetenforceProvider,
    SetseboolProvider,
    covered_paths,
    edit_config,
    package_for,
    parse_config,
    parse_fcontexts,
    parse_getsebool,
    parse_restorecon,
    parse_semanage_booleans,
)
from tests.testhost import Image
from tests.testhost.converge import ConvergeHost, boot_converge_host, by_id, changed_attributes

FIXTURES = Path(__file__).parent / "fixtures" / "selinux"
SELINUX_PACKAGES = ("selinux-utils", "policycoreutils", "semanage-utils",
                    "selinux-policy-default", "policycoreutils-python-utils")


def _prefetch_without_recommends(image: Image, packages: Sequence[str]) -> None:
    """Like tests.testhost.prefetch, with --no-install-recommends: the recommends of these
    packages (setools' GUI stack, scipy, matplotlib) are 1.4 GB instead of ~110 MB."""
    from tests.testhost import CommandFailed, prefetch
    from tests.testhost._util import FileLock, cache_dir
    from tests.testhost.image import _nspawn_apt

    argv = ["apt-get", "-q", "-y", "install", "--download-only", "--no-install-recommends",
            *packages]
    prefetch([], image=image)  # the package lists, on first use
    try:
        with FileLock(cache_dir() / "apt.lock"):
            _nspawn_apt(image, argv, 900)
    except CommandFailed:  # the lists may be outdated: refresh them and try again
        prefetch([], image=image, refresh=True)
        with FileLock(cache_dir() / "apt.lock"):
            _nspawn_apt(image, argv, 900)


@pytest.fixture(scope="module")
def se_host(testhost_image: Image) -> Iterator[ConvergeHost]:
    host = boot_converge_host(testhost_image, "selinux")  # stops what it booted if it fails
    try:
        _prefetch_without_recommends(testhost_image, SELINUX_PACKAGES)
        host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                  *SELINUX_PACKAGES], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        assert host.run(["getenforce"]).stdout.strip() == "Disabled"
        yield host
    finally:
        host.host.stop()


def semanage_bool(host: ConvergeHost, name: str) -> str:
    """'(on , on)'-style columns of `semanage boolean -l` for one boolean."""
    out = host.run(["semanage", "boolean", "-l"]).stdout
    return next(line.split("(", 1)[1].split(")", 1)[0].replace(" ", "")
                for line in out.splitlines() if line.startswith(name + " "))


# == live, on an SELinux-disabled host =========================================================

BOOLS = """
from converge import SEBool

def desired(facts, settings):
    yield SEBool(name="httpd_can_network_connect", value="on")
    yield SEBool(name="httpd_can_network_connect_db", value=True)
    yield SEBool(name="httpd_enable_cgi", value="off", persistent=False)
"""


def test_sebool_persistent_store_on_a_disabled_host(se_host: ConvergeHost) -> None:
    host = se_host
    path = host.write_desired(BOOLS)
    code, report = host.apply_json(path)
    assert code == 2
    res = by_id(report)
    assert changed_attributes(report, "SEBool[httpd_can_network_connect]") == ["persistent"]
    assert res["SEBool[httpd_can_network_connect]"]["changes"][0]["after"] == "on"
    assert changed_attributes(report, "SEBool[httpd_enable_cgi]") == []
    # the runtime part is skipped, with a warning -- not a failure, not silent
    for rid in ("SEBool[httpd_can_network_connect]", "SEBool[httpd_can_network_connect_db]"):
        assert res[rid]["status"] == "changed"
        assert any("SELinux is disabled" in n and "runtime value is not managed" in n
                   for n in res[rid]["notes"])
    assert "nothing to manage" in res["SEBool[httpd_enable_cgi]"]["notes"][0]
    assert semanage_bool(host, "httpd_can_network_connect") == "on,on"
    local = host.get_file("/var/lib/selinux/default/active/booleans.local").decode()
    assert "httpd_can_network_connect=1" in local.splitlines()
    again = host.apply(path)  # converged: nothing to do...
    assert again.returncode == 0
    assert "# SELinux is disabled on this host" in again.stdout  # ...but the report says so

    # drift by hand, in the store
    host.run(["setsebool", "-P", "httpd_can_network_connect", "off"])
    code, plan = host.plan_json(path)
    assert code == 2
    assert [(c["attribute"], c["before"], c["after"])
            for c in by_id(plan)["SEBool[httpd_can_network_connect]"]["changes"]] == \
        [("persistent", "off", "on")]
    assert any("SELinux is disabled" in n
               for n in by_id(plan)["SEBool[httpd_can_network_connect]"]["notes"])
    plan_text = host.plan(path).stdout
    assert 'persistent: "off" -> "on"' in plan_text and "# SELinux is disabled" in plan_text
    assert host.apply(path).returncode == 2
    assert semanage_bool(host, "httpd_can_network_connect") == "on,on"
    assert host.plan(path).returncode == 0


def test_unknown_boolean_is_a_clear_error(se_host: ConvergeHost) -> None:
    result = se_host.plan("""
        from converge import SEBool

        def desired(facts, settings):
            yield SEBool(name="httpd_can_network_conect", value="on")
    """)
    assert result.returncode == 4
    assert "unknown SELinux boolean 'httpd_can_network_conect'" in result.stdout
    assert "did you mean httpd_can_network_connect" in result.stdout


def test_sefcontext_rules_and_selinux_mode(se_host: ConvergeHost) -> None:
    host = se_host
    path = host.write_desired("""
        from converge import File, SEFcontext, SELinuxMode

        def desired(facts, settings):
            yield SELinuxMode(mode="enforcing")
            for d in ("/srv/numbas", "/srv/numbas/static", "/srv/numbas/media"):
                yield File(path=d, ensure="directory")
            yield SEFcontext(target="/srv/numbas/static(/.*)?", setype="httpd_sys_content_t")
            yield SEFcontext(target="/srv/numbas/media(/.*)?", setype="httpd_sys_content_t")
    """)
    before = host.get_file("/etc/selinux/config").decode()
    assert parse_config(before) == "permissive"  # Debian's default
    report = host.converge_twice(path)
    res = by_id(report)
    static = "SEFcontext[/srv/numbas/static(/.*)?]"
    assert changed_attributes(report, static) == ["rule"]  # no labels: SELinux is disabled
    assert res[static]["changes"][0]["before"] == "absent"
    assert any("restorecon skipped" in n for n in res[static]["notes"])
    local = parse_fcontexts(host.run(["semanage", "fcontext", "-l", "-C"]).stdout)
    assert local[("/srv/numbas/static(/.*)?", "a")] == "httpd_sys_content_t"
    assert ("/var/www(/.*)?", "a") not in local
    # the compiled file contexts (what restorecon will use) have the rule
    label = host.run(["matchpathcon", "/srv/numbas/media/x.js"]).stdout.split()[-1]
    assert label.split(":")[2] == "httpd_sys_content_t"

    mode = res["SELinuxMode[selinux]"]
    assert [(c["attribute"], c["before"], c["after"]) for c in mode["changes"]] == \
        [("config", "permissive", "enforcing")]
    assert any(n.startswith("reboot needed") for n in mode["notes"])
    assert mode["backups"]
    after = host.get_file("/etc/selinux/config").decode()
    assert after == before.replace("SELINUX=permissive", "SELINUX=enforcing")

    # drift: a rule changed and the config edited by hand
    host.run(["semanage", "fcontext", "-m", "-t", "var_t", "/srv/numbas/static(/.*)?"])
    host.put_file("/etc/selinux/config", before.replace("SELINUX=permissive",
                                                        "SELINUX=disabled"))
    code, plan = host.plan_json(path)
    assert code == 2
    assert [(c["attribute"], c["before"], c["after"]) for c in by_id(plan)[static]["changes"]] \
        == [("rule", "var_t", "httpd_sys_content_t")]
    assert changed_attributes(plan, "SELinuxMode[selinux]") == ["config"]
    assert host.apply(path).returncode == 2
    assert host.plan(path).returncode == 0

    # a rule the policy itself has, with the same type: nothing to add
    assert host.plan("""
        from converge import SEFcontext

        def desired(facts, settings):
            yield SEFcontext(target="/var/www(/.*)?", setype="httpd_sys_content_t")
    """).returncode == 0

    # removal of the local rules; the policy's own rule cannot be removed and is left alone
    gone = host.write_desired("""
        from converge import SEFcontext, SELinuxMode

        def desired(facts, settings):
            yield SELinuxMode(mode="disabled")
            yield SEFcontext(target="/srv/numbas/static(/.*)?", ensure="absent")
            yield SEFcontext(target="/srv/numbas/media(/.*)?", ensure="absent")
    """)
    report = host.converge_twice(gone)
    assert by_id(report)["SELinuxMode[selinux]"]["notes"] == []  # disabled and staying so
    assert parse_fcontexts(host.run(["semanage", "fcontext", "-l", "-C"]).stdout) == {}
    assert parse_config(host.get_file("/etc/selinux/config").decode()) == "disabled"


def test_missing_tools_name_the_package(converge_host: Any) -> None:
    host = converge_host("noselinux")  # a plain Debian host: no SELinux tools at all
    result = host.plan("""
        from converge import SEBool, SEFcontext, SELinuxMode

        def desired(facts, settings):
            yield SEBool(name="httpd_can_network_connect", value="on")
            yield SELinuxMode(mode="permissive")
            yield SEFcontext(target="/srv/x(/.*)?", setype="httpd_sys_content_t")
    """)
    assert result.returncode == 4
    lines = [line for line in result.stdout.splitlines() if "error:" in line]
    assert len(lines) == 3
    assert "missing command semanage, setsebool, getsebool" in result.stdout
    assert "install policycoreutils, policycoreutils-python-utils, selinux-utils" \
        in result.stdout
    assert "install selinux-utils" in result.stdout  # getenforce/setenforce


# == recorded: an SELinux-enabled kernel =======================================================


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class ReplayHost:
    """A host whose commands answer with recorded output (see tests/fixtures/selinux/README).

    Only for what cannot run here: an SELinux-enabled kernel. Records every command run and
    every file written, so a test can check what apply did.
    """

    name = "recorded"
    state_dir = Path("/nonexistent")

    def __init__(self, answers: Mapping[tuple[str, ...], str | tuple[int, str, str]],
                 files: Mapping[str, bytes] | None = None) -> None:
        self.answers = dict(answers)
        self.files = dict(files or {})
        self.ran: list[tuple[str, ...]] = []
        self.inputs: list[str | bytes | None] = []

    def reset(self) -> None:
        self.ran.clear()
        self.inputs.clear()

    def run(self, argv: Sequence[str], *, input: str | bytes | None = None,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            timeout: float | None = None, check: bool = True) -> Result:
        key = tuple(argv)
        self.ran.append(key)
        self.inputs.append(input)
        answer = self.answers.get(key, (0, "", ""))
        rc, out, err = (0, answer, "") if isinstance(answer, str) else answer
        if check and rc:
            raise CommandError(argv, rc, out, err)
        return Result(key, rc, out, err)

    def which(self, command: str) -> str | None:
        return f"/usr/sbin/{command}"

    def read_bytes(self, path: str) -> bytes | None:
        return self.files.get(path)

    def file_states(self, paths: Sequence[str], *, content_for: frozenset[str] = frozenset()
                    ) -> dict[str, FileState | None]:
        return {p: FileState("directory", 0o755, 0, 0) if p in self.files else None
                for p in paths}

    def write_atomic(self, path: str, data: bytes, *, uid: int | None, gid: int | None,
                     mode: int | None) -> None:
        self.files[path] = data

    def backup(self, path: str) -> str | None:
        return f"/var/lib/converge/backup/x{path}" if path in self.files else None


def test_recorded_getsebool_parses() -> None:
    running = parse_getsebool(fixture("getsebool-a.enforcing.txt"))
    stored = parse_semanage_booleans(fixture("semanage-boolean-l.enforcing.txt"))
    assert len(running) == len(stored) == 291
    assert running["httpd_can_network_connect"] == "off"
    assert running["httpd_enable_cgi"] == "off"  # "off pending: on": the active value
    assert stored["httpd_can_network_connect"] == ("off", "on")  # (running, stored)


def bool_host(getenforce: str = "getenforce.enforcing.txt") -> ReplayHost:
    return ReplayHost({
        ("semanage", "boolean", "-l"): fixture("semanage-boolean-l.enforcing.txt"),
        ("getsebool", "-a"): fixture("getsebool-a.enforcing.txt"),
        ("getenforce",): fixture(getenforce),
    })


def plan_and_apply(provider: Any, host: ReplayHost, resources: Sequence[Any]
                   ) -> dict[str, list[Any]]:
    states = provider.probe(host, resources)
    items = [(r, states[r.key], provider.diff(r, states[r.key])) for r in resources]
    host.reset()
    outcome = provider.apply_batch(host, [i for i in items if i[2]])
    assert not any(isinstance(o, BaseException) for o in outcome.values()), outcome
    return {r.key: changes for r, _, changes in items}


def test_recorded_runtime_drift_sets_the_running_value_only() -> None:
    """httpd_can_network_connect is on in the store but off in the running kernel (someone
    ran setsebool without -P): the plan shows runtime drift alone, apply runs setsebool
    without -P (no policy rebuild)."""
    host = bool_host()
    provider = SetseboolProvider()
    wanted = [SEBool(name="httpd_can_network_connect", value="on"),
              SEBool(name="httpd_can_network_connect_db", value="on"),
              SEBool(name="httpd_enable_cgi", value="on", persistent=False)]
    changes = plan_and_apply(provider, host, wanted)
    assert [(c.attribute, c.before, c.after)
            for c in changes["SEBool[httpd_can_network_connect]"]] == [("runtime", "off", "on")]
    assert changes["SEBool[httpd_can_network_connect_db]"] == []
    assert [c.attribute for c in changes["SEBool[httpd_enable_cgi]"]] == ["runtime"]
    assert host.ran == [("setsebool", "httpd_can_network_connect=on", "httpd_enable_cgi=on")]
    states = provider.probe(host, wanted)
    assert all(provider.notes(r, states[r.key]) == [] for r in wanted)  # enabled: no warning


def test_recorded_persistent_change_uses_setsebool_p_once() -> None:
    host = bool_host()
    provider = SetseboolProvider()
    wanted = [SEBool(name="httpd_can_network_connect", value="off"),
              SEBool(name="httpd_can_sendmail", value="on")]
    changes = plan_and_apply(provider, host, wanted)
    assert [c.attribute for c in changes["SEBool[httpd_can_network_connect]"]] == \
        ["persistent"]  # running value is already off
    assert [c.attribute for c in changes["SEBool[httpd_can_sendmail]"]] == \
        ["persistent", "runtime"]
    assert host.ran == [("setsebool", "-P", "httpd_can_network_connect=off",
                         "httpd_can_sendmail=on")]


def test_recorded_failed_batch_is_attributed() -> None:
    host = bool_host()
    host.answers[("setsebool", "-P", "httpd_can_sendmail=on", "httpd_enable_cgi=on")] = \
        (255, "", "Could not change boolean httpd_enable_cgi")
    host.answers[("setsebool", "-P", "httpd_enable_cgi=on")] = (255, "", "no")
    provider = SetseboolProvider()
    wanted = [SEBool(name="httpd_can_sendmail", value="on"),
              SEBool(name="httpd_enable_cgi", value="on")]
    states = provider.probe(host, wanted)
    outcome = provider.apply_batch(host, [(r, states[r.key], provider.diff(r, states[r.key]))
                                          for r in wanted])
    assert outcome["SEBool[httpd_can_sendmail]"] == []
    assert isinstance(outcome["SEBool[httpd_enable_cgi]"], CommandError)


CONFIG = fixture("selinux-config.debian.txt")


@pytest.mark.parametrize("running, want, changes, note", [
    ("getenforce.enforcing.txt", "permissive",
     [("config", "enforcing", "permissive"), ("runtime", "enforcing", "permissive")], None),
    ("getenforce.permissive.txt", "enforcing",
     [("runtime", "permissive", "enforcing")], None),
    ("getenforce.enforcing.txt", "disabled",
     [("config", "enforcing", "disabled"), ("runtime", "enforcing", "permissive")],
     "reboot needed: SELinux cannot be disabled in a running kernel"),
])
def test_recorded_selinux_mode(running: str, want: str, changes: list[tuple[str, str, str]],
                               note: str | None) -> None:
    config = edit_config(CONFIG, "enforcing")
    host = ReplayHost({("getenforce",): fixture(running)},
                      {"/etc/selinux/config": config.encode()})
    provider = SetenforceProvider()
    desired = SELinuxMode(mode=want)
    state = provider.probe(host, [desired])[desired.key]
    planned = provider.diff(desired, state)
    assert [(c.attribute, c.before, c.after) for c in planned] == changes
    notes = provider.notes(desired, state)
    assert (notes[0].startswith(note) if note else notes == [])
    host.reset()
    backups = provider.apply(host, desired, state, planned)
    runtime = [c.after for c in planned if c.attribute == "runtime"]
    assert host.ran == ([("setenforce", "1" if runtime[0] == "enforcing" else "0")]
                        if runtime else [])
    written = host.files["/etc/selinux/config"].decode()
    assert parse_config(written) == want
    assert ("SELINUXTYPE=default" in written) and written.count("\n") == config.count("\n")
    assert backups == (["/var/lib/converge/backup/x/etc/selinux/config"]
                       if any(c.attribute == "config" for c in planned) else [])


def test_recorded_labels_are_restored() -> None:
    static = SEFcontext(target="/srv/numbas/static(/.*)?", setype="httpd_sys_content_t")
    media = SEFcontext(target="/srv/numbas/media(/.*)?", setype="httpd_sys_rw_content_t")
    host = ReplayHost({
        ("semanage", "fcontext", "-l", "-C"): fixture("semanage-fcontext-l-C.debian.txt"),
        ("getenforce",): fixture("getenforce.enforcing.txt"),
        ("restorecon", "-R", "-n", "-v", "--", "/srv/numbas/media", "/srv/numbas/static"):
            fixture("restorecon-Rnv.enforcing.txt"),
    }, {"/srv/numbas/static": b"", "/srv/numbas/media": b""})
    provider = SemanageFcontextProvider()
    states = provider.probe(host, [static, media])
    assert len(states[static.key].mislabelled) == 4  # type: ignore[union-attr]
    assert states[media.key].mislabelled == ()  # type: ignore[union-attr]
    changes = provider.diff(static, states[static.key])
    assert [(c.attribute, c.before) for c in changes] == \
        [("labels", "/srv/numbas/static: var_t, not httpd_sys_content_t and 3 more")]
    assert provider.diff(media, states[media.key]) == []
    assert provider.notes(static, states[static.key]) == []
    host.reset()
    provider.apply_batch(host, [(static, states[static.key], changes)])
    assert host.ran == [("restorecon", "-R", "--", "/srv/numbas/static")]  # no rule change


def test_recorded_new_rule_then_relabel_in_one_transaction() -> None:
    rules = [SEFcontext(target="/srv/app/static(/.*)?", setype="httpd_sys_content_t"),
             SEFcontext(target="/srv/numbas/media(/.*)?", setype="httpd_sys_content_t"),
             SEFcontext(target="/srv/numbas/static(/.*)?", ensure="absent")]
    host = ReplayHost({
        ("semanage", "fcontext", "-l", "-C"): fixture("semanage-fcontext-l-C.debian.txt"),
        ("semanage", "fcontext", "-l"): fixture("semanage-fcontext-l-C.debian.txt"),
        ("getenforce",): fixture("getenforce.enforcing.txt"),
    }, {"/srv/app/static": b""})
    provider = SemanageFcontextProvider()
    states = provider.probe(host, rules)
    planned = {r.key: provider.diff(r, states[r.key]) for r in rules}
    assert [(c.attribute, c.before, c.after) for c in planned[rules[0].key]] == [
        ("rule", "absent", "httpd_sys_content_t"),
        ("labels", "as the old rule says", "restored: restorecon -R /srv/app/static")]
    assert [(c.attribute, c.before) for c in planned[rules[1].key]] == \
        [("rule", "httpd_sys_rw_content_t")]  # /srv/numbas/media does not exist: no labels
    assert [c.after for c in planned[rules[2].key]] == ["absent"]
    host.reset()
    provider.apply_batch(host, [(r, states[r.key], planned[r.key]) for r in rules])
    assert host.ran == [("semanage", "import"), ("restorecon", "-R", "--", "/srv/app/static")]
    assert host.inputs[0] == (
        "fcontext -a -f a -t httpd_sys_content_t /srv/app/static(/.*)?\n"
        "fcontext -m -f a -t httpd_sys_content_t /srv/numbas/media(/.*)?\n"
        "fcontext -d -f a /srv/numbas/static(/.*)?\n")


# == the models and parsers (no host) ==========================================================


def test_models() -> None:
    assert SEBool(name="x_y", value=True).value == "on"
    assert SEBool(name="x_y", value="OFF").value == "off"
    assert SEBool(name="x_y", value=0).value == "off"
    with pytest.raises(ValidationError):
        SEBool(name="x_y", value="maybe")
    with pytest.raises(ValidationError, match="not an SELinux boolean name"):
        SEBool(name="x y", value="on")
    with pytest.raises(ValidationError, match="setype is required"):
        SEFcontext(target="/srv(/.*)?")
    with pytest.raises(ValidationError, match="absolute"):
        SEFcontext(target="srv(/.*)?", setype="var_t")
    with pytest.raises(ValidationError, match="not a regular expression"):
        SEFcontext(target="/srv/(x", setype="var_t")
    assert SEFcontext(target="/srv/x", setype="var_t", ftype="d").key == \
        "SEFcontext[/srv/x (directory)]"
    assert SELinuxMode(mode="enforcing").key == "SELinuxMode[selinux]"


@pytest.mark.parametrize("target, paths", [
    ("/srv/numbas/static(/.*)?", ("/srv/numbas/static",)),
    ("/srv/numbas/media", ("/srv/numbas/media",)),
    ("/var/www/[^/]*/cgi-bin(/.*)?", ("/var/www",)),
    ("/srv/app-[0-9]+/data(/.*)?", ("/srv",)),
    (r"/opt/app/lib\.d(/.*)?", ("/opt/app/lib.d",)),
    ("/.*", ("/",)),
])
def test_covered_paths(target: str, paths: tuple[str, ...]) -> None:
    assert covered_paths(target) == paths


def test_parsers_and_packages() -> None:
    rules = parse_fcontexts(fixture("semanage-fcontext-l-C.debian.txt"))
    assert rules == {("/srv/numbas/media(/.*)?", "a"): "httpd_sys_rw_content_t",
                     ("/srv/numbas/static(/.*)?", "a"): "httpd_sys_content_t"}
    assert parse_restorecon(fixture("restorecon-Rnv.enforcing.txt"))[3] == (
        "/srv/numbas/static/my logo.png", "unconfined_u:object_r:user_tmp_t:s0",
        "unconfined_u:object_r:httpd_sys_content_t:s0")
    assert parse_config(CONFIG) == "permissive"
    assert edit_config("SELINUXTYPE=targeted", "enforcing") == \
        "SELINUXTYPE=targeted\nSELINUX=enforcing\n"
    rhel7 = Facts(os_family="redhat", os_version="7")
    assert package_for("semanage", rhel7) == "policycoreutils-python"
    assert package_for("semanage", Facts(os_family="redhat", os_version="9")) == \
        "policycoreutils-python-utils"
    assert package_for("getenforce", Facts(os_family="debian")) == "selinux-utils"
    assert package_for("getenforce", rhel7) == "libselinux-utils"


def test_unknown_boolean_and_policy_less_host_messages() -> None:
    provider = SetseboolProvider()
    state = provider.probe(bool_host(), [SEBool(name="httpd_can_network_conect", value=1)])
    with pytest.raises(ResourceError, match="did you mean httpd_can_network_connect"):
        provider.diff(SEBool(name="httpd_can_network_conect", value=1),
                      state["SEBool[httpd_can_network_conect]"])
    no_store = ReplayHost({("semanage", "boolean", "-l"): (
        1, "", "ValueError: SELinux policy is not managed or store cannot be accessed.")})
    with pytest.raises(ResourceError, match="selinux-policy-default on Debian"):
        provider.probe(no_store, [SEBool(name="x", value=1)])
