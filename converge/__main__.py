from __future__ import annotations

from converge.cli import entry

entry()
