"""Both ``content`` and ``source``: a file's content comes from one place."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content="created\n",  # <- error
               source="files/static.conf")
