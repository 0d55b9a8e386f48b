from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from converge.cli import main

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.testhost.fixtures"]


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own state directory (backups, lock)."""
    d = tmp_path / "state"
    monkeypatch.setenv("CONVERGE_STATE_DIR", str(d))
    yield d


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """Run ``converge`` in-process through ``main(argv)``."""
    import io

    def run(*argv: str | Path) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main([str(a) for a in argv], stdout=out, stderr=err)
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def converge_bin() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``converge`` command as a user would."""
    exe = Path(sys.executable).parent / "converge"

    def run(*argv: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *map(str, argv)], capture_output=True, text=True,
                              env={**os.environ, **kw.pop("env", {})}, **kw)

    return run


@pytest.fixture
def write_desired(tmp_path: Path) -> Callable[[str], Path]:
    """Write a desired-state file (dedented) into the test's temp dir and return its path."""
    import textwrap

    counter = iter(range(1000))

    def write(source: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"desired{next(counter)}.py")
        path.write_text(textwrap.dedent(source).lstrip("\n"))
        return path

    return write
