"""GitCheckout: a git work tree cloned from ``source`` and kept at ``revision``.

``ensure="present"`` clones when the path is missing and then keeps what is there: a tag or
commit ``revision`` is still held exactly (it names one tree), a branch is checked out but
not followed. ``ensure="latest"`` also follows the branch's head upstream (the remote's
default branch when ``revision`` is unset), so a moved branch is drift that ``plan`` shows as
a commit range.

The probe reads the work tree (``git status``: HEAD, branch, modified files; the remote's
URL) and asks the remote what ``revision`` is now with ``git ls-remote``: read-only, one per
checkout. Apply clones, fetches and checks out. Local modifications are never discarded: a
checkout that must move over modified files, or away from commits that are on no remote
branch or tag, is a failure naming them; with ``force=True`` they are saved first (``git
stash``, a ``converge-saved/...`` branch) and the report says where.

Every git command runs as ``owner`` (and ``group``) when set, through ``runuser``, so what
git writes belongs to them and the remote is reached with their keys and credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from converge.errors import CommandError, ResourceError
from converge.plan import Change
from converge.resources.base import Provider, Resource
from converge.resources.file import AbsolutePath, resolve_id

if TYPE_CHECKING:
    from converge.host import FileState, Host

REMOTE = "origin"
HEX_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")
FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
MAX_FILES_SHOWN = 10
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}  # a missing credential is an error, never a prompt


class GitCheckout(Resource):
    """A git work tree at ``path``, cloned from ``source``."""

    kind = "GitCheckout"

    path: AbsolutePath = Field(description="Where the work tree is; the resource's name.")
    source: str = Field(
        description="The repository's URL (https://, ssh://, git@host:path, file://, or a "
        "path). Credentials belong in the owner's SSH keys or credential helper, not here.")
    revision: str | None = Field(
        default=None,
        description="A branch, a tag or a commit id. Unset: the remote's default branch.")
    ensure: Literal["present", "latest"] = Field(
        default="present",
        description="present: clone when missing, then keep what is there (a tag or commit "
        "is still held exactly; a branch is not followed). latest: also follow the branch's "
        "head upstream.")
    owner: str | None = Field(
        default=None,
        description="User that owns the work tree; git runs as this user (runuser).")
    group: str | None = Field(default=None, description="Group that owns the work tree.")
    depth: int | None = Field(
        default=None, ge=1, description="Clone (and fetch) only this many commits of history.")
    force: bool = Field(
        default=False,
        description="Move the checkout even over local modifications or local commits, after "
        "saving them (git stash; a converge-saved/<commit> branch). Nothing is discarded.")
    timeout: float = Field(
        default=600.0, gt=0, description="Seconds any one git command may take.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError(f"{v!r} is not a repository URL")
        if "://" in v and urlsplit(v).password is not None:
            raise ValueError(
                "the URL holds a password: it would be shown in plans, logs and the "
                "repository's config; use an SSH key or a credential helper for the owner")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if (not v or v.startswith(("-", "/")) or v.endswith(("/", ".lock", "."))
                or any(c.isspace() or c in "~^:?*[\\" for c in v) or ".." in v or "@{" in v):
            raise ValueError(f"{v!r} is not a branch, tag or commit name")
        return v

    @property
    def ident(self) -> str:
        return self.path

    def implied_requires(self) -> Iterable[str]:
        parent = self.path.rsplit("/", 1)[0] or "/"
        yield f"File[{parent}]"
        yield "Package[git]"
        if self.owner and not self.owner.isdigit():
            yield f"User[{self.owner}]"
        if self.group and not self.group.isdigit():
            yield f"Group[{self.group}]"


# -- state ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What ``revision`` names, as far as the probe could tell."""

    kind: Literal["branch", "tag", "commit"]
    name: str  # branch or tag name; a commit id as given
    commit: str | None  # full commit id; None for a commit not known yet (abbreviated)
    known: bool = False  # the commit is in the local repository
    new: int | None = None  # commits the move brings (HEAD..commit), when known
    dropped: int | None = None  # commits of HEAD that the target does not have


@dataclass(frozen=True, slots=True)
class CheckoutState:
    """A path as the probe found it."""

    type: Literal["absent", "empty", "other", "checkout"]
    uid: int = -1
    owner: str = ""
    gid: int = -1
    group: str = ""
    head: str | None = None
    branch: str | None = None  # None: detached HEAD
    remote_url: str | None = None
    changed: tuple[str, ...] = ()  # tracked files with local modifications
    unsaved: int = 0  # local commits that the move would leave on no branch, remote or tag
    shallow: bool = False
    target: Target | None = None  # None: the revision is not managed
    error: str | None = None  # the probe failed (the diff reports it)


def short(commit: str | None) -> str:
    return commit[:7] if commit else "(none)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _files(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:MAX_FILES_SHOWN])
    more = len(paths) - MAX_FILES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def describe_target(t: Target, head: str | None = None) -> str:
    """How the plan shows where the checkout goes: ``def5678 (main: abc1234..def5678, ...)``."""
    if t.kind == "tag":
        return f"{short(t.commit)} (tag {t.name})"
    if t.kind == "commit":
        if t.commit is None:
            return f"{t.name} (commit, not fetched yet)"
        return f"{short(t.commit)} (commit)"
    if head is None or t.commit is None or head == t.commit:
        return f"{short(t.commit)} ({t.name})" if t.commit else f"{t.name} (branch)"
    span = f"{short(head)}..{short(t.commit)}"
    if t.new is None:
        return f"{short(t.commit)} ({t.name}: {span}, not fetched yet)"
    text = f"{short(t.commit)} ({t.name}: {span}, {_plural(t.new, 'new commit')}"
    if t.dropped:
        text += f", {_plural(t.dropped, 'commit')} of HEAD not upstream"
    return text + ")"


def _id_matches(desired: str, name: str, number: int) -> bool:
    return int(desired) == number if desired.isdigit() else desired == name


# -- provider ------------------------------------------------------------------------------------


class GitProvider(Provider[GitCheckout, CheckoutState]):
    """The git command line, as the checkout's owner."""

    name = "git"
    commands = ("git",)

    # -- running git --------------------------------------------------------------------------

    @staticmethod
    def _as_owner(desired: GitCheckout, argv: list[str]) -> list[str]:
        if desired.owner is None and desired.group is None:
            return argv
        user = ["-u", desired.owner or "root"]
        group = ["-g", desired.group] if desired.group else []
        return ["runuser", *user, *group, "--", *argv]

    @staticmethod
    def _base(desired: GitCheckout) -> list[str]:
        if desired.owner is None:
            # root keeps git's own guard: a tree owned by another user is refused (its
            # config could run commands), and the error says so
            return ["git"]
        # as the owner, the tree may still be someone else's until the chown that fixes it:
        # trusted on the command line, for this path only (the user's config is not ours)
        return ["git", "-c", f"safe.directory={desired.path}"]

    def _git(self, host: Host, desired: GitCheckout, *args: str, in_tree: bool = True,
             check: bool = True, read_only: bool = False) -> str:
        argv = self._base(desired)
        if read_only:
            argv.append("--no-optional-locks")
        if in_tree:
            argv += ["-C", desired.path]
        res = host.run(self._as_owner(desired, [*argv, *args]), env=GIT_ENV, cwd="/",
                       timeout=desired.timeout, check=check)
        return res.stdout if res.ok else ""

    def _ok(self, host: Host, desired: GitCheckout, *args: str) -> tuple[bool, str]:
        argv = [*self._base(desired), "--no-optional-locks", "-C", desired.path, *args]
        res = host.run(self._as_owner(desired, argv), env=GIT_ENV, cwd="/",
                       timeout=desired.timeout, check=False)
        return res.ok, res.stdout.strip()

    # -- probe --------------------------------------------------------------------------------

    def probe(self, host: Host, resources: Sequence[GitCheckout]
              ) -> dict[str, CheckoutState | None]:
        paths = [p for r in resources for p in (r.path, f"{r.path}/.git", f"{r.path}/.git/shallow")]
        states = host.file_states(paths)
        result: dict[str, CheckoutState | None] = {}
        for r in resources:
            try:
                result[r.key] = self._probe_one(host, r, states)
            except ResourceError as exc:  # one checkout's trouble is not the others'
                result[r.key] = CheckoutState(type="checkout", error=str(exc))
        return result

    def _probe_one(self, host: Host, r: GitCheckout,
                   states: dict[str, FileState | None]) -> CheckoutState:
        st = states[r.path]
        if st is None:
            return CheckoutState(type="absent", target=self._remote_target(host, r))
        base = CheckoutState(type="other", uid=st.uid, owner=host.user_name(st.uid),
                             gid=st.gid, group=host.group_name(st.gid))
        if st.type != "directory":
            return base
        if states[f"{r.path}/.git"] is None:
            if host.run(["ls", "-A", r.path], timeout=r.timeout).stdout.strip():
                return base
            return replace(base, type="empty", target=self._remote_target(host, r))

        try:
            status = self._git(host, r, "status", "--porcelain=v2", "--branch", "-z",
                               "--untracked-files=no", read_only=True)
        except CommandError as exc:
            if "dubious ownership" in exc.stderr:
                raise ResourceError(
                    f"{r.path} belongs to {base.owner}: set owner={base.owner!r} (git then "
                    "runs as that user); converge does not run git as root in a tree that "
                    f"another user controls\n{exc}") from None
            raise
        head, branch, changed = _parse_status(status)
        _, url = self._ok(host, r, "config", "--get", f"remote.{REMOTE}.url")
        target = self._target(host, r)
        unsaved = 0
        if target is not None and head is not None:
            target = self._measure(host, r, target, head)
            if self._moves(r, target, head, branch):
                unsaved = self._unsaved(host, r, target, branch)
        return replace(
            base, type="checkout", head=head, branch=branch, remote_url=url or None,
            changed=tuple(changed), unsaved=unsaved,
            shallow=states[f"{r.path}/.git/shallow"] is not None, target=target)

    def _remote_target(self, host: Host, r: GitCheckout) -> Target:
        """Resolve ``revision`` on the remote (``git ls-remote``): the clone needs to know."""
        if r.revision is not None and FULL_SHA_RE.match(r.revision.lower()):
            return Target("commit", r.revision, r.revision.lower())
        return self._ls_remote(host, r)

    def _ls_remote(self, host: Host, r: GitCheckout) -> Target:
        try:
            return self._ask_remote(host, r)
        except CommandError as exc:
            what = f"for {r.revision!r}" if r.revision else "for its default branch"
            raise ResourceError(f"cannot reach {r.source} to ask {what}:\n{exc}") from None

    def _ask_remote(self, host: Host, r: GitCheckout) -> Target:
        rev = r.revision
        if rev is None:
            out = self._git(host, r, "ls-remote", "--symref", "--", r.source, "HEAD",
                            in_tree=False)
            branch = commit = None
            for line in out.splitlines():
                left, _, right = line.partition("\t")
                if left.startswith("ref: refs/heads/") and right == "HEAD":
                    branch = left.removeprefix("ref: refs/heads/")
                elif right == "HEAD":
                    commit = left
            if branch is None or commit is None:
                raise ResourceError(f"{r.source} has no default branch (an empty repository?)")
            return Target("branch", branch, commit)
        out = self._git(host, r, "ls-remote", "--", r.source, f"refs/heads/{rev}",
                        f"refs/tags/{rev}", f"refs/tags/{rev}^{{}}", in_tree=False)
        refs = {}
        for line in out.splitlines():
            commit, _, ref = line.partition("\t")
            refs[ref] = commit
        if f"refs/heads/{rev}" in refs:
            return Target("branch", rev, refs[f"refs/heads/{rev}"])
        if f"refs/tags/{rev}" in refs:
            peeled = refs.get(f"refs/tags/{rev}^{{}}", refs[f"refs/tags/{rev}"])
            return Target("tag", rev, peeled)
        if HEX_RE.match(rev):
            return Target("commit", rev, None)
        raise ResourceError(f"{r.source} has no branch or tag named {rev!r}")

    def _target(self, host: Host, r: GitCheckout) -> Target | None:
        """What ``revision`` names for an existing checkout (None: not managed)."""
        rev = r.revision
        if rev is None and r.ensure == "present":
            return None
        if r.ensure == "present" and rev is not None:
            # present never follows anything: what the local repository knows is enough
            # (a tag it does not have yet, say after the pin changed, is asked of the remote).
            local = self._local_ref(host, r, rev)
            if local is not None:
                return local
        if rev is not None and HEX_RE.match(rev):
            # an abbreviated or full commit id that is no ref name upstream
            found = self._local_commit(host, r, rev)
            if found is not None and (FULL_SHA_RE.match(rev.lower()) or r.ensure == "present"):
                return Target("commit", rev, found, known=True)
        target = self._remote_target(host, r)
        if target.kind == "commit" and target.commit is None:
            found = self._local_commit(host, r, rev or "")
            if found is not None:
                return Target("commit", target.name, found, known=True)
        return target

    def _local_ref(self, host: Host, r: GitCheckout, rev: str) -> Target | None:
        _, out = self._ok(
            host, r, "for-each-ref", "--format=%(refname)%09%(objectname)%09%(*objectname)",
            f"refs/tags/{rev}", f"refs/remotes/{REMOTE}/{rev}", f"refs/heads/{rev}")
        refs = {}
        for line in out.splitlines():
            name, obj, peeled = [*line.split("\t"), "", ""][:3]
            refs[name] = peeled or obj
        for prefix, kind in ((f"refs/heads/{rev}", "branch"),
                             (f"refs/remotes/{REMOTE}/{rev}", "branch"),
                             (f"refs/tags/{rev}", "tag")):
            if prefix in refs:
                return Target(kind, rev, refs[prefix], known=True)  # type: ignore[arg-type]
        return None

    def _local_commit(self, host: Host, r: GitCheckout, rev: str) -> str | None:
        ok, out = self._ok(host, r, "rev-parse", "--verify", "--quiet",
                           "--end-of-options", f"{rev}^{{commit}}")
        return out if ok and out else None

    def _measure(self, host: Host, r: GitCheckout, t: Target, head: str) -> Target:
        """Whether the target commit is here already, and how far HEAD is from it."""
        if t.commit is None or t.commit == head:
            return Target(t.kind, t.name, t.commit, known=t.commit is not None, new=0,
                          dropped=0)
        # fails when the commit is not here yet (not fetched): then it cannot be counted
        ok, out = self._ok(host, r, "rev-list", "--left-right", "--count",
                           f"{head}...{t.commit}")
        parts = out.split()
        if ok and len(parts) == 2:
            return Target(t.kind, t.name, t.commit, known=True, new=int(parts[1]),
                          dropped=int(parts[0]))
        return t

    @staticmethod
    def _moves(r: GitCheckout, t: Target, head: str | None, branch: str | None) -> bool:
        """Whether HEAD must move (or switch branch) to be where ``r`` wants it."""
        if t.kind == "branch":
            if branch != t.name:
                return True
            return r.ensure == "latest" and head != t.commit
        if t.commit is None:
            return not (head or "").startswith(t.name.lower())
        return head != t.commit

    def _unsaved(self, host: Host, r: GitCheckout, t: Target, branch: str | None) -> int:
        """Commits that moving would leave on no branch, remote-tracking branch or tag."""
        keep = ["--remotes", "--tags"]
        if t.commit is not None and t.known:
            keep.append(t.commit)
        count = 0
        if branch is None:  # detached: HEAD's own commits are on nothing else
            ok, out = self._ok(host, r, "rev-list", "--count", "HEAD", "--not", "--branches",
                               *keep)
            count += int(out) if ok and out.isdigit() else 0
        if t.kind == "branch" and r.ensure == "latest":
            # the local branch is reset to the remote's: its own commits would be orphaned
            ok, out = self._ok(host, r, "rev-list", "--count", f"refs/heads/{t.name}",
                               "--not", *keep)
            count += int(out) if ok and out.isdigit() else 0
        return count

    # -- diff ---------------------------------------------------------------------------------

    def diff(self, desired: GitCheckout, actual: CheckoutState | None) -> list[Change]:
        if actual is not None and actual.error:
            raise ResourceError(actual.error)
        if actual is None or actual.type in ("absent", "empty"):
            changes = [Change(attribute="ensure", before="absent", after="present"),
                       Change(attribute="source", after=desired.source)]
            target = actual.target if actual is not None else None
            if target is not None:
                changes.append(Change(attribute="revision", after=describe_target(target)))
            if desired.owner is not None:
                changes.append(Change(attribute="owner", after=desired.owner))
            if desired.group is not None:
                changes.append(Change(attribute="group", after=desired.group))
            return changes
        if actual.type == "other":
            raise ResourceError(f"{desired.path} exists and is not a git checkout (no .git "
                                "in it); refusing to clone over it")
        if actual.head is None:
            raise ResourceError(f"{desired.path} is a git repository without any commit")

        changes = []
        if actual.remote_url != desired.source:
            changes.append(Change(attribute="source", before=actual.remote_url,
                                  after=desired.source))
        t = actual.target
        if t is not None and self._moves(desired, t, actual.head, actual.branch):
            after = describe_target(t, actual.head)
            if desired.ensure == "present" and t.kind == "branch":
                after = f"{t.name} (branch)"
            if actual.changed:
                if not desired.force:
                    raise ResourceError(
                        f"{desired.path} has local modifications ({_files(actual.changed)}); "
                        f"refusing to check out {after} over them: commit, push or revert "
                        "them, or set force=True to stash them (git stash) and go on")
                changes.append(Change(attribute="local changes",
                                      before=_files(actual.changed),
                                      after="saved with git stash"))
            if actual.unsaved:
                where = actual.branch or "a detached HEAD"
                if not desired.force:
                    raise ResourceError(
                        f"{desired.path} has {_plural(actual.unsaved, 'local commit')} on "
                        f"{where} that no remote branch or tag has; refusing to check out "
                        f"{after} and leave them behind: push them, or set force=True to "
                        f"keep them on a branch converge-saved/{short(actual.head)}")
                changes.append(Change(attribute="local commits",
                                      before=f"{_plural(actual.unsaved, 'commit')} on {where}",
                                      after=f"kept on branch converge-saved/{short(actual.head)}"))
            before = f"{short(actual.head)} ({actual.branch or 'detached'})"
            changes.append(Change(attribute="revision", before=before, after=after))
        if desired.owner is not None and not _id_matches(desired.owner, actual.owner,
                                                         actual.uid):
            changes.append(Change(attribute="owner", before=actual.owner, after=desired.owner))
        if desired.group is not None and not _id_matches(desired.group, actual.group,
                                                         actual.gid):
            changes.append(Change(attribute="group", before=actual.group, after=desired.group))
        return changes

    # -- apply --------------------------------------------------------------------------------

    def apply(self, host: Host, desired: GitCheckout, actual: CheckoutState | None,
              changes: list[Change]) -> list[str]:
        by = {c.attribute: c for c in changes}
        if "ensure" in by:
            self._clone(host, desired, actual.target if actual is not None else None)
            return []
        assert actual is not None and actual.head is not None
        saved: list[str] = []
        if "owner" in by or "group" in by:
            spec = (desired.owner or "") + (f":{desired.group}" if desired.group else "")
            host.run(["chown", "-R", "-P", "-h", "--", spec, desired.path], timeout=desired.timeout)
        if "source" in by:
            verb = "set-url" if actual.remote_url is not None else "add"
            self._git(host, desired, "remote", verb, REMOTE, desired.source)
        if "revision" in by:
            assert actual.target is not None
            commit = self._fetch(host, desired, actual.target, actual.shallow)
            if "local changes" in by:
                saved.append(self._stash(host, desired, actual))
            if "local commits" in by:
                saved.append(self._keep_commits(host, desired, actual))
            self._checkout(host, desired, actual.target, commit)
        return saved

    def _clone(self, host: Host, desired: GitCheckout, target: Target | None) -> None:
        if desired.owner is not None or desired.group is not None:
            # made (or given) to the owner first, so that git running as the owner can
            # clone into it whoever owns the parent directory
            uid = resolve_id(host.user_id, desired.owner, "user")
            gid = resolve_id(host.group_id, desired.group, "group")
            if host.file_states([desired.path])[desired.path] is None:
                host.make_directory(desired.path, uid=uid, gid=gid, mode=0o755)
            else:  # an empty directory
                host.set_owner(desired.path, uid, gid)
        args = ["clone", "--quiet"]
        if desired.depth is not None:
            args += ["--depth", str(desired.depth)]
        if target is not None and target.kind in ("branch", "tag"):
            args += ["--branch", target.name]
        if target is not None and target.kind == "commit":
            args.append("--no-checkout")
        self._git(host, desired, *args, "--", desired.source, desired.path, in_tree=False)
        if target is not None and target.kind == "commit":
            commit = self._fetch(host, desired, target, desired.depth is not None)
            self._checkout(host, desired, target, commit)

    def _fetch(self, host: Host, desired: GitCheckout, t: Target, shallow: bool) -> str:
        """Bring the target's commits; return the commit to check out."""
        depth = ["--depth", str(desired.depth or 1)] if shallow else []
        if t.kind == "branch":
            if desired.ensure == "latest" or not t.known:
                self._git(host, desired, "fetch", "--quiet", *depth, REMOTE,
                          f"+refs/heads/{t.name}:refs/remotes/{REMOTE}/{t.name}")
            return f"refs/remotes/{REMOTE}/{t.name}"
        if t.kind == "tag":
            if not t.known or desired.ensure == "latest":
                self._git(host, desired, "fetch", "--quiet", *depth, REMOTE,
                          f"+refs/tags/{t.name}:refs/tags/{t.name}")
            return f"refs/tags/{t.name}^{{commit}}"
        found = self._local_commit(host, desired, t.commit or t.name)
        if found is None:
            self._git(host, desired, "fetch", "--quiet", "--tags", *depth, REMOTE)
            found = self._local_commit(host, desired, t.commit or t.name)
        if found is None and t.commit is not None:
            # not on any branch or tag: ask for it by id (servers allow it for reachable ones)
            self._git(host, desired, "fetch", "--quiet", *depth, REMOTE, t.commit, check=False)
            found = self._local_commit(host, desired, t.commit)
        if found is None:
            raise ResourceError(f"commit {t.name} is not in {desired.source}"
                                + (" (within the fetched depth)" if shallow else ""))
        return found

    def _stash(self, host: Host, desired: GitCheckout, actual: CheckoutState) -> str:
        message = f"converge: local changes saved before moving from {short(actual.head)}"
        # a stash is a commit: it needs an author, which the owner may not have configured
        self._git(host, desired, "-c", "user.name=converge", "-c", "user.email=converge@localhost",
                  "stash", "push", "--quiet", "--message", message)
        return (f"{desired.path}: local changes to {_files(actual.changed)} saved in "
                f"git stash (\"{message}\"; git -C {desired.path} stash list)")

    def _keep_commits(self, host: Host, desired: GitCheckout, actual: CheckoutState) -> str:
        """A branch on the commits that moving would orphan (HEAD's, or the followed local
        branch's when it is not checked out)."""
        assert actual.head is not None and actual.target is not None
        name = f"converge-saved/{short(actual.head)}"
        tips = [("HEAD", name)]
        if actual.target.kind == "branch" and desired.ensure == "latest" \
                and actual.branch != actual.target.name:
            tips.append((f"refs/heads/{actual.target.name}", f"{name}-{actual.target.name}"))
        kept = []
        for tip, base in tips:
            commit = self._local_commit(host, desired, tip)
            if commit is None:
                continue
            for n in range(100):  # never move a branch an earlier run saved commits on
                branch = base if n == 0 else f"{base}.{n}"
                existing = self._local_commit(host, desired, f"refs/heads/{branch}")
                if existing is None:
                    self._git(host, desired, "branch", "--no-track", branch, commit)
                if existing in (None, commit):
                    kept.append(branch)
                    break
        return f"{desired.path}: local commits kept on branch {', '.join(kept)}"

    def _checkout(self, host: Host, desired: GitCheckout, t: Target, commit: str) -> None:
        # Never --force or reset --hard: git itself refuses to overwrite local changes.
        if t.kind != "branch":
            self._git(host, desired, "checkout", "--quiet", "--detach", commit)
            return
        if desired.ensure == "latest":
            self._git(host, desired, "checkout", "--quiet", "--no-guess", "-B", t.name, commit)
        elif self._local_commit(host, desired, f"refs/heads/{t.name}") is not None:
            self._git(host, desired, "checkout", "--quiet", "--no-guess", t.name)
        else:
            self._git(host, desired, "checkout", "--quiet", "--no-guess", "-b", t.name, commit)
        self._git(host, desired, "branch", "--quiet", f"--set-upstream-to={REMOTE}/{t.name}",
                  t.name)


def _parse_status(out: str) -> tuple[str | None, str | None, list[str]]:
    """HEAD, branch and modified tracked files from ``git status --porcelain=v2 -z``."""
    head = branch = None
    changed: list[str] = []
    fields = out.split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            head = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            name = entry.removeprefix("# branch.head ")
            branch = None if name == "(detached)" else name
        elif entry.startswith("1 "):
            changed.append(entry.split(" ", 8)[8])
        elif entry.startswith("2 "):
            changed.append(entry.split(" ", 9)[9])
            i += 1  # the original path of a rename or copy
        elif entry.startswith("u "):
            changed.append(entry.split(" ", 10)[10])
    return head, branch, changed


PROVIDERS: dict[str, list[type[Provider[Any, Any]]]] = {"GitCheckout": [GitProvider]}
