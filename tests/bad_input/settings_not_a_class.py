"""``Settings`` is a dict, not a pydantic-settings class."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]

Settings = {"port": 8080}


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
