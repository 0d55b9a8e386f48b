"""``ensure="absent"`` with a mode: an absent file has no mode."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/created.conf", content="created\n")
    yield File(path=f"{T}/existing.conf", ensure="absent", mode="0644")  # <- error
