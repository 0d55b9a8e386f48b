"""The file imports a helper module (next to it) that has a syntax error."""

import os

import _broken_helper  # <- error
from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content=_broken_helper.banner())
