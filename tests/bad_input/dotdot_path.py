"""A path with '..' in it: the File validator means to refuse it."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/sub/../created.conf", content="created\n")  # <- error
