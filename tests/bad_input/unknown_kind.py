"""The file imports a resource kind converge does not have (``Packages`` for ``Package``)."""

import os

from converge import File, Packages  # <- error

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield Packages(names=["nginx"])
