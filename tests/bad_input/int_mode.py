"""A mode given as an int (644, which is not 0o644): modes are strings like "0644"."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content="created\n", mode=644)  # <- error
