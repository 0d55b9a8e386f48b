"""A wrong type: ``backup`` is a boolean, not a word."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(  # <- error
        path=f"{T}/created.conf",
        content="created\n",
        backup="sometimes",
    )
