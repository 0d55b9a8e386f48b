"""``desired`` returns a string (a reference) instead of resources."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):  # <- error
    File(path=f"{T}/existing.conf", content="replaced\n")
    return f"File[{T}/existing.conf]"
