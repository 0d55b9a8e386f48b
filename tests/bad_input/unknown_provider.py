"""A provider name that no provider of the kind has."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content="created\n", provider="rsync")  # <- error
