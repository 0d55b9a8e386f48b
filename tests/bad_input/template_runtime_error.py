"""A template that fails while rendering (a division by zero, not an undefined variable)."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/app.ini", template="templates/runtime.j2",
               vars={"memory_mb": 1024, "workers": 0})
