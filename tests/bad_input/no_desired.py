"""No ``desired`` function (it is misspelt)."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desire(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
