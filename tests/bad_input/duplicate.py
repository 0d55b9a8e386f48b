"""The same resource declared twice (the second with a trailing slash): both places are named."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content="one\n")  # <- error
    yield File(path=f"{T}/created.conf/", content="two\n")  # <- error
