"""An unknown field (``contents`` for ``content``): resources forbid extra fields."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", contents="created\n")  # <- error
