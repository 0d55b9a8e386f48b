"""``desired`` yields a plain dict instead of a resource."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield {"path": f"{T}/created.conf", "content": "created\n"}  # <- error
