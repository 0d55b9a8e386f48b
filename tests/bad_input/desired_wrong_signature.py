"""``desired`` that takes no arguments (converge passes facts and settings)."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired():  # <- error
    yield File(path=f"{T}/existing.conf", content="replaced\n")
