"""Bad input gets a clear error, exit 1, and nothing is applied.

Every desired-state file in ``tests/bad_input/`` is broken in one way. Each runs through
``converge plan`` and ``converge apply`` (in-process through ``main(argv)``; three of them
through the installed command too). The error must name the file and line (``name.py:LINE:``)
or the resource (``File[/...]``) and say what is wrong; the exit code must be 1; nothing may be
printed on stdout; and the disk must be unchanged: the corpus copy and the target directory the
files' valid resources write into are snapshotted before and after, and the state directory
must hold no backup.

The line a message must name is marked in the corpus with ``# <- error`` (``{# <- error #}``
in templates) and looked up here, so the table below never hard-codes a line number.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pytest

if TYPE_CHECKING:
    import subprocess

    from tests.conftest import CliResult

CORPUS = Path(__file__).resolve().parent / "bad_input"
TARGET_ENV = "CONVERGE_TEST_TARGET"
MARKER = "<- error"


class Cli(Protocol):
    def __call__(self, *argv: str | Path) -> CliResult: ...


def line_of(name: str, nth: int = 1) -> int:
    """The line of the ``nth`` error marker in the corpus file called ``name``."""
    (path,) = CORPUS.rglob(name)
    lines = [i for i, text in enumerate(path.read_text().splitlines(), 1) if MARKER in text]
    if len(lines) < nth:
        raise LookupError(f"{path} has {len(lines)} '{MARKER}' markers, wanted #{nth}")
    return lines[nth - 1]


def at(name: str, nth: int = 1) -> str:
    """``name:LINE`` of the ``nth`` marked line of a corpus file."""
    return f"{name}:{line_of(name, nth)}"


@dataclass(frozen=True)
class Case:
    """One broken desired file, how it is run, and what the error must say.

    ``expect`` are substrings of stderr, where ``$T`` stands for the target directory.
    """

    file: str
    expect: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    nothing_applied: bool = True  # desired-state errors say so; command-line errors need not
    secret: str | None = None  # a value given to converge that must never be printed
    xfail: str | None = None  # a known converge bug (see the reason)
    id: str | None = None


CASES: list[Case] = [
    Case("syntax_error.py", (f"{at('syntax_error.py')}: syntax error", "expected ':'")),
    Case("unknown_field.py",
         (f"{at('unknown_field.py')}: File: contents: Extra inputs are not permitted",)),
    Case("wrong_type.py",
         (f"{at('wrong_type.py')}: File: backup: Input should be a valid boolean",)),
    Case("bad_mode.py", (f"{at('bad_mode.py')}: File: mode: mode '999' is not octal",)),
    Case("int_mode.py", (f"{at('int_mode.py')}: File: mode: ", "like '0644'", "644")),
    Case("relative_path.py",
         (f"{at('relative_path.py')}: File: path: path must be absolute, got 'etc/motd'",)),
    Case("dotdot_path.py", (f"{at('dotdot_path.py')}: File: path: path must not contain '..'",
                            "sub/../created.conf")),
    Case("duplicate.py", ("duplicate resource File[$T/created.conf]",
                          f"declared at $CORPUS/{at('duplicate.py', 1)} "
                          f"and at $CORPUS/{at('duplicate.py', 2)}")),
    Case("missing_require.py",
         (f"File[$T/created.conf] ($CORPUS/{at('missing_require.py')}) "
          "requires File[$T/not-declared.conf], which is not declared",)),
    Case("missing_notify.py",
         (f"File[$T/existing.conf] ($CORPUS/{at('missing_notify.py')}) "
          "notifies Command[reload-app], which is not declared",)),
    Case("bad_reference.py",
         (f"{at('bad_reference.py')}: File: requires: 'nginx' is not a resource reference",)),
    Case("cycle.py", ("dependency cycle",
                      f"File[$T/a.conf] ($CORPUS/{at('cycle.py', 1)})",
                      f"File[$T/b.conf] ($CORPUS/{at('cycle.py', 2)})",
                      f"File[$T/c.conf] ($CORPUS/{at('cycle.py', 3)})")),
    Case("cycle_implied.py", ("dependency cycle",
                              f"File[$T/app] ($CORPUS/{at('cycle_implied.py', 1)})",
                              f"File[$T/app/app.conf] ($CORPUS/{at('cycle_implied.py', 2)})",
                              "(implied)")),
    Case("template_undefined.py",
         (f"{at('undefined.j2')}: File[$T/site.conf]: template 'document_root' is undefined",)),
    Case("template_syntax.py", (f"{at('syntax.j2')}: File[$T/site.conf]: template syntax error",
                                "'endif'")),
    Case("template_missing.py",
         ("File[$T/site.conf]: template no-such-template.j2 not found",)),
    Case("template_runtime_error.py",
         (f"{at('runtime.j2')}: File[$T/app.ini]: template failed: ZeroDivisionError",)),
    Case("source_missing.py",
         ("File[$T/created.conf]: cannot read source $CORPUS/files/no-such-file.conf",)),
    Case("content_and_source.py",
         (f"{at('content_and_source.py')}: File: (model): give only one of content, template, "
          "source (got content, source)",)),
    Case("link_without_target.py",
         (f"{at('link_without_target.py')}: File: (model): ensure='link' needs a target",)),
    Case("absent_with_mode.py",
         (f"{at('absent_with_mode.py')}: File: (model): owner, group and mode make no sense "
          "with ensure='absent'",)),
    Case("fileline_bad_regex.py",
         (f"{at('fileline_bad_regex.py')}: FileLine: match: match is not a valid regular "
          "expression",)),
    Case("unknown_provider.py",
         ("File[$T/created.conf]: unknown provider 'rsync' (known: posix)",
          f"$CORPUS/{at('unknown_provider.py')}")),
    Case("no_desired.py",
         ("no_desired.py: defines no desired(facts, settings) function",)),
    Case("desired_returns_none.py",
         (f"{at('desired_returns_none.py')}: desired() returned None",)),
    Case("desired_returns_string.py",
         (f"{at('desired_returns_string.py')}: desired() returned str, not an iterable",)),
    Case("desired_wrong_signature.py",
         (f"{at('desired_wrong_signature.py')}: error in desired(): TypeError: desired() "
          "takes 0 positional arguments but 2 were given",)),
    Case("yields_non_resource.py",
         (f"{at('yields_non_resource.py')}: desired() produced",
          "(dict), not a resource")),
    Case("raises_in_desired.py",
         (f"{at('raises_in_desired.py')}: error in desired(): KeyError: 'htps'",)),
    Case("import_error.py",
         (f"{at('import_error.py')}: error while importing: ModuleNotFoundError: "
          "No module named 'converge_site_helpers'",)),
    Case("unknown_kind.py",
         (f"{at('unknown_kind.py')}: error while importing: ImportError: "
          "cannot import name 'Packages' from 'converge'",)),
    Case("helper_syntax_error.py",
         (f"{at('helper_syntax_error.py')}: error while importing: SyntaxError",
          f"(_broken_helper.py, line {line_of('_broken_helper.py')})")),
    Case("bad_settings.py", ("unknown setting(s) prot for $CORPUS/bad_settings.py",
                             "known: db_password, domain, port"),
         args=("--set", "prot=9090"), nothing_applied=False, id="bad_settings-unknown-key"),
    Case("bad_settings.py",
         ("$CORPUS/bad_settings.py: invalid settings: port: Input should be a valid integer",),
         args=("--set", "port=eighty"), id="bad_settings-bad-type"),
    Case("bad_settings.py",
         ("$CORPUS/bad_settings.py: invalid settings: port: Input should be a valid integer",),
         env=(("BAD_SETTINGS_PORT", "eighty"),), id="bad_settings-bad-env"),
    Case("bad_settings.py", ("$CORPUS/bad_settings.py: invalid settings: db_password:",),
         args=("--set", "db_password=hunter2"), secret="hunter2",
         id="bad_settings-short-secret"),
    Case("bad_settings.py",
         ("--set expects key=value, got an argument without '=' (starting 'por'...)",),
         args=("--set", "port"), nothing_applied=False, id="bad_settings-no-equals"),
    Case("settings_without_class.py",
         ("$CORPUS/settings_without_class.py declares no Settings; cannot --set domain",),
         args=("--set", "domain=example.com"), nothing_applied=False),
    Case("settings_not_a_class.py",
         ("$CORPUS/settings_not_a_class.py: Settings must be a pydantic BaseSettings",)),
    Case("secret_in_exception.py",
         (f"{at('secret_in_exception.py')}: error in desired(): ValueError",),
         args=("--set", "admin_pin=12a4-Zq8-pin"), secret="12a4-Zq8-pin"),
    Case("settings_required.py",
         ("$CORPUS/settings_required.py: invalid settings: db_password: Field required",)),
]


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id or case.file.removesuffix(".py"), marks=marks)


class Corpus(NamedTuple):
    dir: Path  # a copy of tests/bad_input
    target: Path  # where the files' valid resources would write


Snapshot = dict[str, tuple[Any, ...]]


def snapshot(root: Path) -> Snapshot:
    """Everything observable about a tree: type, mode, owner, times, content, link target."""
    seen: Snapshot = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            what: Any = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            what = os.readlink(path)
        else:
            what = None
        seen[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                              st.st_uid, st.st_gid, st.st_mtime_ns, what)
    return seen


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Corpus:
    """A private copy of the corpus and a target directory holding one existing file."""
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS, copy, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    target = tmp_path / "target"
    target.mkdir()
    (target / "existing.conf").write_text("original\n")
    os.chmod(target / "existing.conf", 0o640)
    monkeypatch.setenv(TARGET_ENV, str(target))
    return Corpus(copy, target)


def check_refused(case: Case, corpus: Corpus, code: int, out: str, err: str) -> None:
    """Exit 1, nothing on stdout, one clear error on stderr with everything it must name."""
    shown = f"exit {code}\n--- stdout\n{out}--- stderr\n{err}"
    assert code == 1, shown
    assert out == "", shown
    assert err.startswith("error: "), shown
    assert "Traceback" not in err, shown
    for text in case.expect:
        wanted = text.replace("$T", str(corpus.target)).replace("$CORPUS", str(corpus.dir))
        assert wanted in err, f"expected {wanted!r} in stderr\n{shown}"
    if case.nothing_applied:
        assert "Nothing was applied." in err, shown
    if case.secret is not None:
        assert case.secret not in out + err, shown


def check_untouched(corpus: Corpus, before: tuple[Snapshot, Snapshot], state_dir: Path) -> None:
    assert (snapshot(corpus.dir), snapshot(corpus.target)) == before
    assert (corpus.target / "existing.conf").read_text() == "original\n"
    assert not (state_dir / "backup").exists()
    if state_dir.exists():
        assert {p.name for p in state_dir.iterdir()} <= {"run.lock"}


@pytest.mark.parametrize("command", ["plan", "apply"])
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_refused_and_nothing_changes(
    case: Case, command: str, cli: Cli, corpus: Corpus, state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    before = snapshot(corpus.dir), snapshot(corpus.target)
    result = cli(command, corpus.dir / case.file, *case.args)
    check_refused(case, corpus, result.code, result.out, result.err)
    check_untouched(corpus, before, state_dir)


INSTALLED = ["syntax_error.py", "cycle.py", "template_undefined.py"]


@pytest.mark.parametrize("name", INSTALLED)
def test_bad_input_through_the_installed_command(
    name: str, converge_bin: Callable[..., subprocess.CompletedProcess[str]], corpus: Corpus,
    state_dir: Path,
) -> None:
    (case,) = [c for c in CASES if c.file == name and c.id is None]
    before = snapshot(corpus.dir), snapshot(corpus.target)
    proc = converge_bin("apply", corpus.dir / case.file, *case.args,
                        env={TARGET_ENV: str(corpus.target)})
    check_refused(case, corpus, proc.returncode, proc.stdout, proc.stderr)
    check_untouched(corpus, before, state_dir)


def test_every_corpus_file_has_a_case() -> None:
    files = {p.name for p in CORPUS.glob("*.py") if not p.name.startswith("_")}
    assert files == {c.file for c in CASES}
    assert len(files) >= 14
    ids = [c.id or c.file for c in CASES]
    assert len(ids) == len(set(ids)), "two cases share an id"
    for name in files:
        assert TARGET_ENV in (CORPUS / name).read_text(), f"{name} writes nowhere we snapshot"
    marked = {p.name for p in [*CORPUS.rglob("*.py"), *CORPUS.rglob("*.j2")]
              if MARKER in p.read_text()}
    named = {m for c in CASES for e in c.expect for m in re.findall(r"([\w.]+):\d+", e)}
    assert marked - {"_broken_helper.py"} <= named, "a marked line that no case checks"


@pytest.mark.parametrize("argv", [("graph",), ("plan", "--facts", "rhel-7")],
                         ids=["graph", "facts"])
def test_unknown_provider_is_refused_without_an_engine(
    argv: tuple[str, ...], cli: Cli, corpus: Corpus, state_dir: Path,
) -> None:
    (case,) = [c for c in CASES if c.file == "unknown_provider.py"]
    before = snapshot(corpus.dir), snapshot(corpus.target)
    result = cli(argv[0], corpus.dir / case.file, *argv[1:])
    check_refused(case, corpus, result.code, result.out, result.err)
    check_untouched(corpus, before, state_dir)
