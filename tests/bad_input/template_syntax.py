"""A template with a syntax error (an ``if`` without ``endif``)."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/site.conf", template="templates/syntax.j2", vars={"tls": True})
