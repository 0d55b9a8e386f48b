"""``desired`` raises (a missing key in a mapping it builds)."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]

PORTS = {"http": 80, "https": 443}


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    port = PORTS["htps"]  # <- error
    yield File(path=f"{T}/created.conf", content=f"port = {port}\n")
