"""A cycle through an implied edge: a directory that requires a file inside it."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/app", ensure="directory",  # <- error
               requires=f"File[{T}/app/app.conf]")
    yield File(path=f"{T}/app/app.conf", content="x\n")  # <- error
