"""A template using a variable it was not given: undefined variables are errors."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/site.conf", template="templates/undefined.j2",
               vars={"domain": "example.org"})
