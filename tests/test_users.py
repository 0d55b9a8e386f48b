"""User and Group on a throwaway systemd host (real useradd/usermod/groupadd, getent)."""

from __future__ import annotations

from typing import Any

from tests.testhost.converge import by_id, changed_attributes

DESIRED = """
from converge import Group, User

def desired(facts, settings):
    yield Group(name="numbas_lti", system=True)
    yield Group(name="webadmins", gid=2500)
    yield User(name="numbas_lti", group="numbas_lti", home="/srv/numbas", manage_home=True,
               shell="/bin/bash", system=True, comment="Numbas LTI")
    yield User(name="www-data", groups=["numbas_lti", "webadmins"])
"""


def passwd(host: Any, name: str) -> list[str]:
    return host.run(["getent", "passwd", name]).stdout.strip().split(":")


def groups_of(host: Any, name: str) -> set[str]:
    return set(host.run(["id", "-nG", name]).stdout.split())


def test_users_and_groups_lifecycle(converge_host: Any) -> None:
    host = converge_host("users")
    path = host.write_desired(DESIRED)
    report = host.converge_twice(path)
    res = by_id(report)
    assert res["User[numbas_lti]"]["action"] == "create"
    assert res["Group[webadmins]"]["action"] == "create"
    assert set(changed_attributes(report, "User[www-data]")) == {"groups"}
    entry = passwd(host, "numbas_lti")
    assert entry[4:] == ["Numbas LTI", "/srv/numbas", "/bin/bash"]
    assert host.run(["stat", "-c", "%U", "/srv/numbas"]).stdout.strip() == "numbas_lti"
    assert host.run(["getent", "group", "webadmins"]).stdout.split(":")[2] == "2500"
    assert {"www-data", "numbas_lti", "webadmins"} <= groups_of(host, "www-data")

    # drift by hand: a shell changed, a membership removed
    host.run(["usermod", "-s", "/bin/sh", "numbas_lti"])
    host.run(["gpasswd", "-d", "www-data", "numbas_lti"])
    code, plan = host.plan_json(path)
    assert code == 2
    assert changed_attributes(plan, "User[numbas_lti]") == ["shell"]
    change = by_id(plan)["User[www-data]"]["changes"][0]
    assert change["attribute"] == "groups" and "numbas_lti" not in change["before"]
    assert host.apply(path).returncode == 2
    assert passwd(host, "numbas_lti")[6] == "/bin/bash"
    assert "numbas_lti" in groups_of(host, "www-data")
    assert host.apply(path).returncode == 0


def test_minimum_membership_keeps_other_groups_exact_removes(converge_host: Any) -> None:
    host = converge_host("members")
    host.run(["groupadd", "extra"])
    host.run(["groupadd", "wanted"])
    host.run(["useradd", "-M", "-G", "extra", "alice"])
    minimum = host.write_desired("""
        from converge import User

        def desired(facts, settings):
            yield User(name="alice", groups=["wanted"])
    """)
    host.converge_twice(minimum)
    assert {"extra", "wanted"} <= groups_of(host, "alice")
    exact = host.write_desired("""
        from converge import User

        def desired(facts, settings):
            yield User(name="alice", groups=["wanted"], membership="exact")
    """)
    host.converge_twice(exact)
    assert "extra" not in groups_of(host, "alice")
    assert "wanted" in groups_of(host, "alice")


def test_password_hash_is_sensitive_and_absent_keeps_home(converge_host: Any) -> None:
    host = converge_host("passwd")
    hash1 = "$6$saltsalt$" + "a" * 86
    path = host.write_desired(f"""
        from converge import Secret, User

        def desired(facts, settings):
            yield User(name="bob", home="/home/bob", manage_home=True,
                       password_hash=Secret({hash1!r}))
    """)
    report = host.converge_twice(path)
    assert hash1 not in str(report)
    shadow = host.run(["getent", "shadow", "bob"]).stdout.split(":")
    assert shadow[1] == hash1
    host.run(["usermod", "-p", "$6$other$" + "b" * 86, "bob"])
    plan = host.plan(path)
    assert plan.returncode == 2 and "password_hash: (sensitive) will change" in plan.stdout
    assert "$6$" not in plan.stdout + plan.stderr
    assert host.apply(path).returncode == 2
    host.put_file("/home/bob/notes.txt", "keep me\n")
    gone = host.write_desired("""
        from converge import User

        def desired(facts, settings):
            yield User(name="bob", ensure="absent")
    """)
    host.converge_twice(gone)
    assert host.run(["getent", "passwd", "bob"], check=False).returncode == 2
    assert host.get_file("/home/bob/notes.txt") == b"keep me\n"  # home never removed silently


def test_file_owned_by_a_user_created_in_the_same_run(converge_host: Any) -> None:
    host = converge_host("owner")
    path = host.write_desired("""
        from converge import File, Group, User

        def desired(facts, settings):
            yield File(path="/srv/app", ensure="directory", owner="app", group="app",
                       mode="2770")
            yield User(name="app", group="app", system=True)
            yield Group(name="app", system=True)
    """)
    host.converge_twice(path)
    assert host.run(["stat", "-c", "%U:%G %a", "/srv/app"]).stdout.strip() == "app:app 2770"
