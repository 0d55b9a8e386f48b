"""``requires`` given a bare name instead of a resource or a ``Kind[name]`` reference."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content="created\n", requires="nginx")  # <- error
