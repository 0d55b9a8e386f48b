"""``desired`` builds a list and forgets to return it."""

import os

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


def desired(facts, settings):  # <- error
    resources = [File(path=f"{T}/existing.conf", content="replaced\n")]
    resources.append(File(path=f"{T}/created.conf", content="created\n"))
