"""A three-resource dependency cycle: the error prints the whole cycle."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/a.conf", content="a\n", requires=f"File[{T}/c.conf]")  # <- error
    yield File(path=f"{T}/b.conf", content="b\n", requires=f"File[{T}/a.conf]")  # <- error
    yield File(path=f"{T}/c.conf", content="c\n", requires=f"File[{T}/b.conf]")  # <- error
