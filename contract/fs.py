"""The file-system primitives every writer of pem-deploy builds on (the policy is contract/output.py).

- :func:`atomic_write_bytes`: a reader sees the old file or the whole new one, never a part.
- Staging names: every temporary file or folder this tool creates is named
  ``.pem-deploy-staging-<pid>-<8 hex>-<name>.tmp`` beside (or inside) its target, so a later run
  can prove a leftover is ours and that its writer is dead (:func:`remove_stale_staging`).
- :func:`install`: move a finished staged file onto its target, optionally never replacing an
  existing file (a hard link is the atomic "create if absent" of POSIX file systems).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path

STAGING_PREFIX = ".pem-deploy-staging-"
_STAGING_RE = re.compile(r"^\.pem-deploy-staging-(\d+)-[0-9a-f]{8}(?:-.*)?\.tmp$", re.DOTALL)
# Staging of earlier versions that also carried the writer's pid: export's folders and infer's.
_LEGACY_RE = re.compile(r"^(?:\.pem-export-(\d+)-[a-z0-9_]{8}|\.pem-deploy-staging-(\d+)-[0-9a-f]{8})$")
# The bag writer's staging of earlier versions: ``.<name>.<8 random>`` holding ``bag/`` only.
_LEGACY_BAG_RE = re.compile(r"^\..+\.(?:mcap|db3)\.[a-z0-9_]{8}$")
_LEGACY_BAG_FILES = {"bag.mcap", "bag.db3", "bag.db3-shm", "bag.db3-wal", "metadata.yaml"}
_LEGACY_BAG_AGE_S = 3600.0
# Test hook (documented in contract/output.py): pause this many seconds before the first rename
# of a commit, so a test can SIGKILL the writer with everything staged and nothing installed.
PAUSE_ENV = "PEM_DEPLOY_TEST_PAUSE_BEFORE_COMMIT"


def staging_name(name: str) -> str:
    """A fresh staging name for ``name`` (a file or folder), unique and provably this process's."""
    return f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name[:120]}.tmp"


def staging_pid(name: str) -> int | None:
    """The writer's process id in a staging name, or None when ``name`` is not one of ours."""
    match = _STAGING_RE.match(name)
    return int(match.group(1)) if match else None


def _legacy_pid(name: str) -> int | None:
    match = _LEGACY_RE.match(name)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def _legacy_bag_staging(path: Path) -> bool:
    """An earlier bag writer's staging: ``.<out>.<8 chars>/bag/`` holding rosbag2 files only, and
    untouched for an hour (no pid in its name: its age shows the writer is gone)."""
    if not _LEGACY_BAG_RE.match(path.name) or path.is_symlink() or not path.is_dir():
        return False
    try:
        inside = list(path.iterdir())
        if [p.name for p in inside] not in ([], ["bag"]):
            return False
        files = list((path / "bag").iterdir()) if inside else []
        if any(f.is_dir() or f.name not in _LEGACY_BAG_FILES for f in files):
            return False
        newest = max([path.stat().st_mtime, *(f.stat().st_mtime for f in files)])
    except OSError:
        return False
    return time.time() - newest > _LEGACY_BAG_AGE_S


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's) or not a pid: not provably dead
    return True


def remove_stale_staging(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the staging files and folders in ``folder`` whose writing process is gone (killed).

    Only entries named by :func:`staging_name` are considered, and only when their process id is
    no longer running; a concurrent run's staging is left alone. Staging folders of earlier
    versions are removed too when provably ours and dead: export's ``.pem-export-<pid>-*`` and
    infer's ``.pem-deploy-staging-<pid>-<hex>`` (dead pid), the bag writer's ``.<out>.<random>``
    holding only ``bag/`` rosbag2 files untouched for an hour. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        pid = staging_pid(entry.name)
        if pid is None:
            pid = _legacy_pid(entry.name) if entry.is_dir(follow_symlinks=False) else None
        if pid is None and not _legacy_bag_staging(path):
            continue
        if pid is not None and _alive(pid):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # read-only folder: leave it for a run that can write here
        removed.append(path)
    return removed


def pause_for_tests() -> None:
    """Sleep ``$PEM_DEPLOY_TEST_PAUSE_BEFORE_COMMIT`` seconds (unset: no-op); see :data:`PAUSE_ENV`."""
    value = os.environ.get(PAUSE_ENV)
    if value:
        time.sleep(float(value))


def install(staged: Path, target: Path, *, replace: bool) -> None:
    """Rename ``staged`` onto ``target`` (same file system). ``replace=False`` never replaces an
    existing ``target``: :class:`FileExistsError` instead, atomically (no check-then-rename race)."""
    if replace:
        os.replace(staged, target)
        return
    try:
        os.link(staged, target, follow_symlinks=False)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # No hard links here (vfat, some FUSE mounts): the best a rename can do.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(staged, target)
        return
    os.unlink(staged)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` through a staging file in the same folder and a rename.

    A reader sees the old file or the whole new one, never a part; a failure (full disk,
    permission) leaves no staging file behind, and one left by a kill is removed by the next
    output run into that folder. ``replace=False`` refuses an existing ``path`` (FileExistsError).
    The error of a failed write names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        install(Path(tmp), path, replace=replace)
    except OSError as exc:  # name the file (a failed write() does not): "PATH: No space left on device"
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new staging file beside ``path``, created with the umask's permissions (mkstemp's
    0600 would make engines and caches unreadable to the other users of a shared device)."""
    for _ in range(100):
        tmp = path.parent / staging_name(path.name)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: cannot create a temporary file")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (read in chunks: model files are large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
