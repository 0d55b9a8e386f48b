"""A relative path: converge manages absolute paths only."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path="etc/motd", content="hello\n")  # <- error
