"""A FileLine whose ``match`` is not a valid regular expression."""

import os

from converge import FileLine

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield FileLine(path=f"{T}/existing.conf", line="max_connections = 100")
    yield FileLine(path=f"{T}/existing.conf", line="port = 5432",  # <- error
                   match="^(port\\s*=")
