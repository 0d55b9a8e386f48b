"""``notify`` names a resource that is not declared."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n",  # <- error
               notify="Command[reload-app]")
    yield File(path=f"{T}/created.conf", content="created\n")
