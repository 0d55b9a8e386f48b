"""A first desired state: a directory, a file in it, and a link to that file.

    converge plan examples/hello.py
    converge apply examples/hello.py
"""

from converge import File


def desired(facts, settings):
    yield File(path="/srv/converge-demo", ensure="directory", mode="0755")
    yield File(
        path="/srv/converge-demo/motd",
        content=f"Hello from converge on {facts.os_id} {facts.os_version}.\n",
        mode="0644",
        owner="root",
        group="root",
    )
    yield File(path="/srv/converge-demo/motd.link", target="/srv/converge-demo/motd")
