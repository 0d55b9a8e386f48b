"""The cached Debian bookworm image, the test SSH key and the host-side apt package cache.

Layout under ``cache_dir()`` (default /var/tmp/converge-testhost, env CONVERGE_TESTHOST_CACHE)::

    build.lock                   serialises image builds and garbage collection
    images/bookworm-<hash>/      the image (read-only once built; hash of the recipe)
    images/bookworm-<hash>.lock  shared flock held by everyone using that image
    images/bookworm-<hash>.log   debootstrap output of the last build
    ssh/id_ed25519{,.pub}        root's key for every test host
    apt/archives/  apt/lists/    host-side apt cache, filled by prefetch(), bound into hosts
    apt.lock                     serialises prefetch()
    run/                         per-host state, see host.py

The image is never written to after it has been renamed into place: per-host changes go to an
overlayfs upper dir, and prefetch() runs apt in a volatile overlay with the cache bound in.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import logging
import os
import subprocess
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._util import (
    CommandFailed,
    FileLock,
    TestHostError,
    cache_dir,
    mounts,
    mounts_under,
    remove_tree,
    run,
    unmount_all_under,
)

log = logging.getLogger("tests.testhost")

SUITE = "bookworm"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "openssh-server",
    "python3",
    "python3-venv",
    "ca-certificates",
    "procps",
    "sudo",
    "git",
    "apt-utils",  # as on a standard Debian install; without it debconf warns on every install
)
#: Bump to force a rebuild when something outside this module changes what the image should be.
RECIPE_VERSION = "1"
MIRROR_ENV = "CONVERGE_TESTHOST_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
IMAGE_HOSTNAME = "converge-testhost"
BUILD_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Recipe:
    """What goes into the image. Any change (or a change of configure_rootfs) rebuilds it."""

    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR
    version: str = RECIPE_VERSION

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for step in (configure_rootfs, hosts_file):
            h.update(_code_fingerprint(step).encode())
        return h.hexdigest()[:12]

    @property
    def name(self) -> str:
        return f"{self.suite}-{self.digest()}"


def _code_fingerprint(function: Callable[..., object]) -> str:
    """The function's syntax tree: edits rebuild the image, comments and formatting do not."""
    return ast.dump(ast.parse(textwrap.dedent(inspect.getsource(function))))


def default_recipe() -> Recipe:
    return Recipe(mirror=os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR)


@dataclass
class Image:
    """A built image, held in use (shared lock) until release(): it is not garbage-collected."""

    recipe: Recipe
    root: Path
    _lock: FileLock = field(repr=False)

    @property
    def lock_path(self) -> Path:
        return self._lock.path

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def images_dir() -> Path:
    return cache_dir() / "images"


def apt_archives_dir() -> Path:
    return cache_dir() / "apt" / "archives"


def apt_lists_dir() -> Path:
    return cache_dir() / "apt" / "lists"


def hosts_file(hostname: str) -> str:
    # The hostname must resolve locally: hosts have no DNS, and getaddrinfo(hostname)
    # (sudo, git, python's socket.getfqdn) otherwise stalls for 10 s.
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\t\tip6-allnodes\n"
        "ff02::2\t\tip6-allrouters\n"
    )


def configure_rootfs(root: Path, recipe: Recipe) -> None:
    """Setup steps after debootstrap (part of the recipe hash: editing this rebuilds)."""
    etc = root / "etc"
    (etc / "apt" / "sources.list").unlink(missing_ok=True)
    (etc / "apt" / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        f"URIs: {recipe.mirror}\n"
        f"Suites: {recipe.suite} {recipe.suite}-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        f"URIs: {recipe.security_mirror}\n"
        f"Suites: {recipe.suite}-security\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (etc / "hostname").write_text(f"{IMAGE_HOSTNAME}\n")
    (etc / "hosts").write_text(hosts_file(IMAGE_HOSTNAME))
    # No DNS inside (no route out): an empty resolv.conf makes lookups fail fast, not time out.
    resolv = etc / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# converge test host: no DNS\n")
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    (etc / "ssh" / "sshd_config.d" / "converge-testhost.conf").write_text(
        "UseDNS no\nPermitRootLogin prohibit-password\n"
    )
    # apt lists and .debs live in the host-side cache and are bound in at boot (see prefetch).
    for pattern in ("var/lib/apt/lists/*_*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for path in root.glob(pattern):
            path.unlink()
    (etc / "converge-testhost.json").write_text(
        json.dumps({"name": recipe.name, **asdict(recipe)}, indent=2) + "\n"
    )


def ensure_image(recipe: Recipe | None = None, *, rebuild: bool = False) -> Image:
    """Return the image for recipe, building it first if needed (once per machine).

    The returned Image holds a shared lock: call release() when done with it.
    """
    recipe = recipe or default_recipe()
    images = images_dir()
    images.mkdir(parents=True, exist_ok=True)
    root = images / recipe.name
    build_lock = FileLock(cache_dir() / "build.lock")
    if not build_lock.acquire(blocking=False):
        log.info("waiting for another process to finish building the test image")
        build_lock.acquire()
    try:
        user = FileLock(images / f"{recipe.name}.lock", shared=True)
        if rebuild and root.exists():
            exclusive = FileLock(user.path)
            if not exclusive.acquire(blocking=False) or root in _overlay_lowers():
                exclusive.release()
                raise TestHostError(
                    f"cannot rebuild {root}: it is in use (or left mounted: run cleanup)"
                )
            try:
                _remove_image(root)
            finally:
                exclusive.release()
        if not root.is_dir():
            _build(recipe, root)
        user.acquire()
        _collect_garbage(keep=recipe.name)
    finally:
        build_lock.release()
    return Image(recipe=recipe, root=root, _lock=user)


def _build(recipe: Recipe, root: Path) -> None:
    images = root.parent
    for stale in images.glob(".build-*"):  # we hold the build lock: these are from crashed builds
        log.info("removing stale build directory %s", stale)
        remove_tree(stale)
    tmp = images / f".build-{recipe.name}-{os.getpid()}"
    tmp.mkdir(mode=0o755)
    build_log = images / f"{recipe.name}.log"
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        "--components=main",
        recipe.suite,
        str(tmp),
        recipe.mirror,
    ]
    log.info("building test image %s (debootstrap, about a minute)", root)
    try:
        with build_log.open("wb") as out:
            proc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        if proc.returncode != 0:
            tail = build_log.read_text(errors="replace")[-3000:]
            raise CommandFailed(argv, proc.returncode, tail, f"full log: {build_log}")
        unmount_all_under(tmp)  # debootstrap mounts proc/sys while it works
        configure_rootfs(tmp, recipe)
        os.rename(tmp, root)
    except BaseException:
        remove_tree(tmp)
        raise
    log.info("test image ready: %s", root)


def _remove_image(root: Path) -> None:
    remove_tree(root)
    root.with_name(root.name + ".log").unlink(missing_ok=True)


def _overlay_lowers() -> set[Path]:
    lowers: set[Path] = set()
    for m in mounts():
        if m.fstype != "overlay":
            continue
        for opt in m.options.split(","):
            if opt.startswith("lowerdir="):
                lowers.update(Path(p) for p in opt[len("lowerdir=") :].split(":"))
    return lowers


def _collect_garbage(*, keep: str) -> None:
    """Remove images of other recipes nobody uses (caller holds the build lock)."""
    in_overlays = _overlay_lowers()
    for path in images_dir().iterdir():
        if path.name == keep or path.name.startswith(".") or not path.is_dir():
            continue
        users = FileLock(path.with_name(path.name + ".lock"))
        if not users.acquire(blocking=False):
            continue
        try:
            if path in in_overlays or mounts_under(path):
                continue
            log.info("removing outdated test image %s", path)
            _remove_image(path)
        finally:
            users.release()


# --- SSH --------------------------------------------------------------------------------------


def ssh_key() -> Path:
    """Root's private key for all test hosts (generated once per cache dir)."""
    ssh_dir = cache_dir() / "ssh"
    key = ssh_dir / "id_ed25519"
    pub = ssh_dir / "id_ed25519.pub"
    if key.exists() and pub.exists():
        return key
    with FileLock(cache_dir() / "ssh.lock"):
        if key.exists() and pub.exists():
            return key
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = ssh_dir / f".tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".pub").unlink(missing_ok=True)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "converge-testhost"]
        run([*keygen, "-f", str(tmp)])
        os.rename(tmp.with_suffix(".pub"), pub)
        os.rename(tmp, key)
    return key


def ssh_public_key() -> str:
    return ssh_key().with_suffix(".pub").read_text()


# --- host-side apt cache ----------------------------------------------------------------------


def _nspawn_apt(image: Image, argv: Sequence[str], timeout: float) -> None:
    """Run apt in a non-booted, volatile nspawn of the image, on the host's network.

    --volatile=overlay puts a tmpfs overlay over the image, so nothing is written to it; only
    the bound apt cache dirs persist.
    """
    run(
        [
            "systemd-nspawn",
            "--quiet",
            "--directory",
            str(image.root),
            "--machine",
            f"cvg-apt-{os.getpid()}",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--link-journal=no",
            "--resolv-conf=replace-host",
            f"--bind={apt_archives_dir()}:/var/cache/apt/archives",
            f"--bind={apt_lists_dir()}:/var/lib/apt/lists",
            "--setenv=DEBIAN_FRONTEND=noninteractive",
            "--",
            *argv,
        ],
        timeout=timeout,
    )


def prepare_apt_cache() -> None:
    for d in (apt_archives_dir(), apt_lists_dir()):
        (d / "partial").mkdir(parents=True, exist_ok=True)
    # mount points for per-host binds (see host.py): each host locks its own archive lock
    # file, and apt insists on chmod'ing lists/auxfiles, which is read-only in hosts
    (apt_archives_dir() / "lock").touch()
    (apt_lists_dir() / "auxfiles").mkdir(exist_ok=True)


def _prefetched_path(image: Image) -> Path:
    # what was downloaded depends on what the image already has, hence one record per image
    return cache_dir() / "apt" / f"prefetched-{image.root.name}"


def _update_lists(image: Image, timeout: float) -> None:
    for record in (cache_dir() / "apt").glob("prefetched-*"):
        record.unlink()  # new lists may want other versions
    _nspawn_apt(image, ["apt-get", "-q", "-o", "Acquire::Languages=none", "update"], timeout)


def prefetch(
    packages: Iterable[str],
    *,
    image: Image | None = None,
    refresh: bool = False,
    timeout: float = 900.0,
) -> None:
    """Download packages (and dependencies) into the host-side apt cache for offline installs.

    Runs ``apt-get install --download-only`` with the host's network. Package lists are fetched
    on first use, when refresh is true, or when the download fails (lists outdated). Packages
    already fetched against the current lists are not asked for again.
    """
    pkgs = sorted(set(packages))
    own_image = image is None
    img = image or ensure_image()
    try:
        prepare_apt_cache()
        with FileLock(cache_dir() / "apt.lock"):
            record = _prefetched_path(img)
            updated = False
            if refresh or not any(apt_lists_dir().glob("*_Packages*")):
                _update_lists(img, timeout)
                updated = True
            done = set(record.read_text().split()) if record.exists() else set()
            if not pkgs or done.issuperset(pkgs):
                return
            install = ["apt-get", "-q", "-y", "install", "--download-only", *pkgs]
            try:
                _nspawn_apt(img, install, timeout)
            except CommandFailed:
                if updated:
                    raise
                log.info("download failed; refreshing apt lists and retrying")
                _update_lists(img, timeout)
                done = set()
                _nspawn_apt(img, install, timeout)
            record.write_text("".join(f"{p}\n" for p in sorted(done | set(pkgs))))
    finally:
        if own_image:
            img.release()
