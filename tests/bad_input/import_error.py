"""The file imports a module that does not exist."""

import os

import converge_site_helpers  # <- error

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content=converge_site_helpers.banner())
