"""How pem-deploy writes anything: the one output mechanism of every command and API.

The rules (README, "What pem-deploy writes"):

1. **Never onto an input.** A target that is an input of the same run (the artifact, the
   checkpoint and its config, an input bag, video or image folder, a reference file, a candidate
   model), or lies inside an input folder, is refused whatever the flags: paths are compared
   resolved (symbolic links followed) and by inode and device (hard links, bind mounts).
2. **Never delete or replace what this tool did not write.** A folder this tool writes into
   records its files in a hidden manifest, ``.pem-deploy-outputs.json`` (name, size and
   modification time of each; an edited file is no longer ours). A folder target that holds
   anything else is refused unless ``exist_ok`` (``--exist-ok``), which then *adds* this run's
   files beside the foreign ones; a foreign file at one of this run's names is still refused
   unless ``overwrite`` (``--overwrite``). Our own files are replaced by a new run. An explicit
   file target (``--json out.json``) that exists is refused unless ``overwrite``.
3. **A failure or a kill leaves the target as it was.** Everything is written into a staging
   entry beside (or inside) the target, named ``.pem-deploy-staging-<pid>-<hex>-<name>.tmp``,
   and renamed into place only when complete: a new folder in one rename, files added to an
   existing folder one rename each (the manifest is updated first, so a kill between two
   renames leaves only files that are recorded as ours). Staging left by a killed run is
   removed by the next run that writes beside it (its process id is dead).

API:

- :func:`guard_inputs` (rule 1 alone);
- one explicit file: :func:`write_file`, :func:`staged_file` (context manager) or
  :class:`FileOutput` (open / commit / discard, for writers that cannot nest a ``with``);
- a folder: :func:`staged_folder` (a :class:`FolderOutput`: ``path`` / ``write`` / ``adopt`` /
  ``merge`` / ``register_tree``, installed on a clean exit); :func:`write_into` for a folder a
  long run fills file by file (a training run);
- :func:`check_file` / :func:`check_folder`: the entry checks alone, to refuse a bad target
  before minutes of work; :func:`owns`: whether a file is ours; :func:`clean_stale_staging`.

Refusals are :class:`contract.errors.OutputError` subclasses with one-line messages naming the
path; the CLI prints them as ``error: ...`` with exit status 2.

Test hook: with ``PEM_DEPLOY_TEST_PAUSE_BEFORE_COMMIT=<seconds>`` in the environment a commit
sleeps before its first rename, everything staged, so a test can SIGKILL the writer there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from contract.errors import (
    OutputError,
    OutputExistsError,
    OutputIsInputError,
    OutputWriteError,
    describe_os_error,
    one_line,
)
from contract.fs import (
    STAGING_PREFIX,
    atomic_write_bytes,
    install,
    pause_for_tests,
    remove_stale_staging,
    staging_name,
    staging_pid,
)

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; the annotations are never evaluated
    from typing_extensions import Unpack

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EXIST_OK_FLAG",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "OVERWRITE_FLAG",
    "STAGING_PREFIX",
    "FileOutput",
    "FolderOutput",
    "FolderRules",
    "check_file",
    "check_folder",
    "clean_stale_staging",
    "discard_folder",
    "guard_inputs",
    "is_internal",
    "owns",
    "staged_file",
    "staged_folder",
    "write_file",
    "write_into",
]

OVERWRITE_FLAG = "--overwrite"
EXIST_OK_FLAG = "--exist-ok"
MANIFEST_NAME = ".pem-deploy-outputs.json"
LOCK_NAME = ".pem-deploy.lock"  # the lock file of earlier versions (a folder flock now)
_MANIFEST_FORMAT = "pem-deploy-outputs"
_SCRATCH = ".scratch"

PathLike = str | os.PathLike[str]


def is_internal(name: str) -> bool:
    """Whether a file name is one of this mechanism's own (manifest, lock, staging)."""
    return name in (MANIFEST_NAME, LOCK_NAME) or staging_pid(name) is not None


# -- rule 1: inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    given: Path
    resolved: Path
    stat: os.stat_result | None
    is_dir: bool


def _input(path: PathLike) -> _Input:
    given = Path(path)
    try:
        stat = os.stat(given)
    except OSError:
        stat = None
    return _Input(given, given.resolve(), stat, given.is_dir())


def guard_inputs(targets: Iterable[PathLike], inputs: Iterable[PathLike | None]) -> None:
    """Raise :class:`OutputIsInputError` when a target is an input or lies inside an input folder.

    ``targets`` are the files or folders a run will write (existing or not); ``inputs`` every
    file and folder it reads (``None`` entries are skipped). Compared resolved and by inode.
    """
    found = [_input(p) for p in inputs if p is not None]
    if not found:
        return
    parents: dict[Path, tuple[Path, list[os.stat_result]]] = {}  # one walk up per folder
    for target in targets:
        target = Path(target)
        if target.parent not in parents:
            chain = []
            for path in target.parents:
                with contextlib.suppress(OSError):
                    chain.append(os.stat(path))
            parents[target.parent] = (target.parent.resolve(), chain)
        resolved_parent, chain = parents[target.parent]
        try:
            own: os.stat_result | None = os.stat(target)
        except OSError:
            own = None
        resolved = (
            target.resolve()
            if target.is_symlink() or target.name in ("", ".", "..")
            else (resolved_parent / target.name)
        )
        _guard_one(target, resolved, own, chain, found)


def _guard_one(
    target: Path,
    resolved: Path,
    own: os.stat_result | None,
    chain: list[os.stat_result],
    inputs: list[_Input],
) -> None:
    # By inode too (the target, then each existing folder above it): a hard link or a bind
    # mount of an input is the input, whatever its path.
    for item in inputs:
        if resolved == item.resolved or (item.stat is not None and own is not None and _same(own, item.stat)):
            raise OutputIsInputError(
                f"{target}: is an input of this run ({item.given}); pem-deploy never writes onto "
                "its own inputs: choose another output path"
            )
        if not item.is_dir:
            continue
        inside = item.resolved in resolved.parents or (
            item.stat is not None and any(_same(st, item.stat) for st in chain)
        )
        if inside:
            raise OutputIsInputError(
                f"{target}: lies inside the input folder {item.given} of this run; pem-deploy never "
                "writes into its own inputs: choose a path outside it"
            )


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return os.path.samestat(a, b)


# -- helpers ----------------------------------------------------------------------------------


def _write_error(target: Path, exc: OSError) -> OutputWriteError:
    reason = exc.strerror or describe_os_error(exc)
    return OutputWriteError(one_line(f"{target}: cannot write ({reason}); it was left as it was"))


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created (deepest last)."""
    missing: list[Path] = []
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_created(missing[missing.index(path) + 1 :][::-1])
            raise _write_error(folder, exc) from None
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()  # only when still empty


def clean_stale_staging(folder: PathLike) -> list[Path]:
    """Remove staging left in ``folder`` by killed runs (see :func:`contract.fs.remove_stale_staging`)."""
    return remove_stale_staging(folder)


def discard_folder(folder: PathLike) -> None:
    """Remove the whole folder ``folder``, which the caller has established this tool wrote (a
    selection a new run replaces whole). It is first renamed to a staging name beside itself, so
    a kill during the removal leaves staging that the next run beside it removes, never a half
    folder at its own name. A missing ``folder`` is no error."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return
    retired = folder.parent / staging_name(folder.name)
    try:
        os.rename(folder, retired)
        shutil.rmtree(retired)
    except OSError as exc:
        raise _write_error(folder, exc) from None


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)


def _inside_staging(exc: BaseException, staging: Path) -> bool:
    """Whether ``exc`` is a failure to write the staging (then reported as the target's)."""
    if not isinstance(exc, OSError):
        return False
    if exc.filename is None and exc.errno in _WRITE_ERRNOS:
        return True  # a failed write() names no file
    return any(name is not None and str(staging) in str(name) for name in (exc.filename, exc.filename2))


# -- one file ---------------------------------------------------------------------------------


def _check_file(target: Path, overwrite: bool, inputs: list[PathLike | None]) -> None:
    if target.is_dir() and not target.is_symlink():
        raise OutputExistsError(f"{target}: is a folder; give a file name")
    guard_inputs([target], inputs)
    if os.path.lexists(target) and not overwrite:
        raise OutputExistsError(f"{target}: exists; pass {OVERWRITE_FLAG} to replace it")
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{target}: {target.parent} is not a folder")


class FileOutput:
    """One explicit file target being written: :meth:`open` checks the rules and returns the
    path to write (in a private staging folder beside the target, free for scratch files too),
    :meth:`commit` renames it onto the target, :meth:`discard` (always safe to call, a no-op
    after a commit) removes the staging. :func:`staged_file` is the context-manager form."""

    def __init__(self, target: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()):
        self.target = Path(target)
        self.overwrite = overwrite
        self._inputs = list(inputs)
        self._staging: Path | None = None
        self._created: list[Path] = []
        self._committed = False

    @property
    def staged(self) -> Path:
        """The path to write; renamed onto the target by :meth:`commit`."""
        if self._staging is None:
            raise RuntimeError("FileOutput used before open() or after commit()")
        return self._staging / self.target.name

    def open(self) -> Path:
        """Refuse before anything is written: the target is an input (:class:`OutputIsInputError`)
        or exists and ``overwrite`` is off (:class:`OutputExistsError`); returns :attr:`staged`."""
        target = self.target
        _check_file(target, self.overwrite, self._inputs)
        self._created = _make_parents(target.parent)
        clean_stale_staging(target.parent)
        staging = target.parent / staging_name(target.name)
        try:
            staging.mkdir()
        except OSError as exc:
            _remove_created(self._created)
            raise _write_error(target, exc) from None
        self._staging = staging
        return self.staged

    def commit(self) -> Path:
        """Rename the staged file onto the target (checked again: it may have appeared meanwhile)."""
        target, staged = self.target, self.staged
        if not staged.is_file():
            raise OutputError(f"{target}: the run wrote nothing to install")
        _check_file(target, self.overwrite, self._inputs)
        pause_for_tests()
        try:
            install(staged, target, replace=self.overwrite)
        except FileExistsError:
            raise OutputExistsError(
                f"{target}: appeared while this run was writing; pass {OVERWRITE_FLAG} to replace it"
            ) from None
        except OSError as exc:
            raise _write_error(target, exc) from None
        self._committed = True
        self.discard()
        return target

    def discard(self) -> None:
        """Remove the staging (and the folders :meth:`open` created, unless committed)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if not self._committed:
            _remove_created(self._created)
            self._created = []

    def write_error(self, exc: BaseException) -> BaseException:
        """``exc`` as this target's :class:`OutputWriteError` when it is a failure to write the
        staging (full disk, read-only), else ``exc`` itself."""
        if self._staging is not None and _inside_staging(exc, self._staging):
            return _write_error(self.target, exc)  # type: ignore[arg-type]
        return exc


@contextlib.contextmanager
def staged_file(
    target: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Iterator[Path]:
    """Write one file at ``target``: yields the path to write, renamed onto ``target`` on a clean
    exit (see :class:`FileOutput`). A failure inside the block or in the rename leaves ``target``
    as it was (:class:`OutputWriteError` for a file-system error)."""
    output = FileOutput(target, overwrite=overwrite, inputs=inputs)
    staged = output.open()
    try:
        try:
            yield staged
        except BaseException as exc:
            converted = output.write_error(exc)
            if converted is not exc:
                raise converted from None
            raise
        output.commit()
    finally:
        output.discard()


def check_file(target: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()) -> None:
    """The checks of :func:`staged_file` alone, to refuse a bad target before long work."""
    _check_file(Path(target), overwrite, list(inputs))


def write_file(
    target: PathLike,
    data: bytes | str,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Write ``data`` (text as UTF-8) at the explicit file ``target`` by the rules of
    :func:`staged_file`; returns ``target``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with staged_file(target, overwrite=overwrite, inputs=inputs) as path, open(path, "wb") as f:
        f.write(payload)
    return Path(target)


# -- ownership manifest -----------------------------------------------------------------------


def _fingerprint(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_manifest(folder: Path) -> dict[str, list[list[int]]]:
    """``{relative name: [fingerprint, ...]}`` of ``folder``'s manifest ({} when absent or not ours)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT:
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    out: dict[str, list[list[int]]] = {}
    for rel, prints in files.items():
        if isinstance(rel, str) and isinstance(prints, list):
            out[rel] = [p for p in prints if isinstance(p, list) and len(p) == 2]
    return out


def _manifest_format_ok(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == _MANIFEST_FORMAT


def _write_manifest(folder: Path, files: dict[str, list[list[int]]]) -> None:
    payload = {"format": _MANIFEST_FORMAT, "version": 1, "files": dict(sorted(files.items()))}
    atomic_write_bytes(folder / MANIFEST_NAME, (json.dumps(payload, indent=1) + "\n").encode())


def owns(folder: PathLike, rel: str, manifests: dict[Path, dict[str, list[list[int]]]] | None = None) -> bool:
    """Whether ``folder/rel`` is a file this tool wrote and nobody changed since.

    Looks in the manifest of ``folder`` and of each folder between it and the file (an output
    folder written inside another one keeps its own manifest). ``manifests`` caches the parsed
    manifests across calls (one walk of a large folder reads each once).
    """
    folder = Path(folder)
    path = folder / rel
    if path.name == MANIFEST_NAME:
        return _manifest_format_ok(path)
    fingerprint = _fingerprint(path)
    if fingerprint is None:
        return False
    cache = manifests if manifests is not None else {}
    parts = Path(rel).parts
    for i in range(len(parts)):
        base = folder.joinpath(*parts[:i])
        if base not in cache:
            cache[base] = _read_manifest(base)
        if fingerprint in cache[base].get("/".join(parts[i:]), []):
            return True
    return False


def _is_empty_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return not any(True for _ in entries)


def _foreign(folder: Path, limit: int) -> list[str]:
    """Up to ``limit`` entries of ``folder`` (relative) that this tool did not write."""
    found: list[str] = []
    manifests: dict[Path, dict[str, list[list[int]]]] = {}
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        rel_base = base.relative_to(folder)
        dirs.sort()
        for name in list(dirs):
            if is_internal(name):
                dirs.remove(name)
            elif (base / name).is_symlink() or _is_empty_dir(base / name):
                found.append((rel_base / name).as_posix())
                dirs.remove(name)
        for name in sorted(files):
            if is_internal(name) and (name != MANIFEST_NAME or _manifest_format_ok(base / name)):
                continue
            if not owns(folder, (rel_base / name).as_posix(), manifests):
                found.append((rel_base / name).as_posix())
        if len(found) >= limit:
            return found[:limit]
    return found


# -- a folder ---------------------------------------------------------------------------------


class _Lock:
    """An exclusive ``flock`` on the target folder itself: one writer per folder at a time,
    released by the kernel if the process dies, and no lock file left behind by a kill."""

    def __init__(self, folder: Path):
        self.fd: int | None = None
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise _write_error(folder, exc) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(
                        f"{folder}: another pem-deploy run is writing into this folder right now; "
                        "wait for it or choose another folder"
                    ) from None
                raise _write_error(folder, exc) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class FolderRules(TypedDict, total=False):
    """The keywords of a folder target's entry rules (:class:`FolderOutput`, :func:`staged_folder`,
    :func:`check_folder`): ``exist_ok`` and ``overwrite`` (rule 2), ``inputs`` (rule 1), the
    expected ``names`` and the ``flag`` that messages name (``--out`` when not given)."""

    exist_ok: bool
    overwrite: bool
    inputs: Iterable[PathLike | None]
    names: Iterable[str]
    flag: str


class FolderOutput:
    """A folder target being written: register each file with :meth:`path` (or :meth:`write`,
    :meth:`adopt`, :meth:`register_tree`), then :meth:`commit` (done on a clean exit of
    :func:`staged_folder`). Files are installed in registration order."""

    def __init__(
        self,
        target: PathLike,
        *,
        exist_ok: bool = False,
        overwrite: bool = False,
        inputs: Iterable[PathLike | None] = (),
        names: Iterable[str] = (),
        flag: str = "--out",
    ):
        self.target = Path(target)
        self.exist_ok = exist_ok
        self.overwrite = overwrite
        self.flag = flag
        self._inputs = list(inputs)
        self._names = list(names)
        self._order: dict[str, None] = {}  # registration order, O(1) membership
        self._made: set[Path] = set()
        self._merges: dict[str, Callable[[Path | None], bytes | str]] = {}
        self._staging: Path | None = None
        self._new = False
        self._created: list[Path] = []
        self._lock: _Lock | None = None
        self._committed: list[Path] | None = None

    # -- lifecycle --

    def open(self) -> FolderOutput:
        """Check the rules, then create the staging folder (see :func:`staged_folder`)."""
        try:
            return self._open()
        except BaseException:
            self._release(failed=True)
            raise

    def _open(self) -> FolderOutput:
        target = self.target
        guard_inputs([target], self._inputs)
        if target.is_symlink() and not target.exists():
            raise OutputError(f"{target}: {self.flag} is a broken symbolic link")
        if target.exists() and not target.is_dir():
            raise OutputExistsError(f"{target}: {self.flag} exists and is not a folder")
        if self._names:
            guard_inputs([target / n for n in self._names], self._inputs)
        self._new = not target.exists()
        if self._new:
            self._created = _make_parents(target.parent)
            clean_stale_staging(target.parent)
            staging = target.parent / staging_name(target.name)
        else:
            self._lock = _Lock(target)
            clean_stale_staging(target)
            clean_stale_staging(target.parent)
            self._refuse_foreign()
            for name in self._names:
                self._check_collision(name)
            staging = target / staging_name("out")
        try:
            staging.mkdir()
        except OSError as exc:
            raise _write_error(target, exc) from None
        self._staging = staging
        return self

    def _refuse_foreign(self) -> None:
        if self.exist_ok:
            return
        foreign = _foreign(self.target, 4)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise OutputExistsError(
                f"{self.target}: holds files pem-deploy did not write ({shown}); pass "
                f"{EXIST_OK_FLAG} to add this run's files beside them, or choose a new folder"
            )

    def __enter__(self) -> FolderOutput:
        return self.open()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None and self._committed is None:
            try:
                self.commit()
            except BaseException:
                self.close()
                raise
        converted = self.close(exc)
        if converted is not exc:
            raise converted from None

    @property
    def inputs(self) -> list[PathLike | None]:
        """The run's inputs this output never writes."""
        return list(self._inputs)

    def close(self, exc: BaseException | None = None) -> BaseException | None:
        """Remove the staging and release the folder without installing anything more (the
        target stays as it was unless :meth:`commit` ran). Returns ``exc``, or the target's
        :class:`OutputWriteError` when ``exc`` is a failure to write the staging (full disk)."""
        staging = self._staging
        self._release(failed=self._committed is None)
        if exc is not None and staging is not None and _inside_staging(exc, staging):
            return _write_error(self.target, exc)  # type: ignore[arg-type]
        return exc

    def _release(self, failed: bool) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if failed:
            _remove_created(self._created)

    # -- staging --

    @property
    def staging(self) -> Path:
        """The staging folder (the future content of the target)."""
        if self._staging is None:
            raise RuntimeError("FolderOutput used outside its context")
        return self._staging

    @property
    def scratch(self) -> Path:
        """A scratch folder inside the staging, never installed."""
        path = self.staging / _SCRATCH
        path.mkdir(exist_ok=True)
        return path

    def path(self, rel: str) -> Path:
        """The staging path of the output file ``rel`` (relative, ``/``-separated), registered for
        installation; its parent folders are created."""
        parts = Path(rel).parts
        bad = not parts or Path(rel).is_absolute() or ".." in parts
        if bad or is_internal(parts[0]) or parts[0] == _SCRATCH:
            raise OutputError(f"{self.target / rel}: not a valid output name")
        rel = Path(*parts).as_posix()
        self._order.setdefault(rel, None)
        path = self.staging / rel
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        return path

    def write(self, rel: str, data: bytes | str) -> Path:
        """Stage ``data`` (text as UTF-8) as the output file ``rel``; returns its staging path."""
        path = self.path(rel)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def adopt(self, rel: str, source: PathLike) -> Path:
        """Move the finished file ``source`` (on the same file system) into staging as ``rel``."""
        path = self.path(rel)
        os.replace(source, path)
        return path

    def merge(self, rel: str, content: Callable[[Path | None], bytes | str]) -> None:
        """Write the output file ``rel`` at commit time, under the folder's lock, as
        ``content(previous)``: ``previous`` is the target's existing ``rel`` when this tool wrote
        it (else None). For an index that several runs into one folder extend (no lost update)."""
        self.path(rel)
        self._merges[rel] = content

    def _run_merges(self, existing: bool) -> None:
        for rel, content in self._merges.items():
            previous = self.target / rel if existing and owns(self.target, rel) else None
            data = content(previous)
            atomic_write_bytes(self.staging / rel, data.encode("utf-8") if isinstance(data, str) else data)

    def register_tree(self, rel: str = "") -> list[str]:
        """Register every file already in staging under ``rel`` (written there by another writer,
        e.g. an output folder created inside this one); returns the names registered."""
        base = self.staging / rel if rel else self.staging
        names = []
        for root, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not (Path(root) == self.staging and d == _SCRATCH))
            for name in sorted(files):
                full = Path(root) / name
                relname = full.relative_to(self.staging).as_posix()
                if relname in (MANIFEST_NAME, LOCK_NAME) or staging_pid(name) is not None:
                    continue
                self._order.setdefault(relname, None)
                names.append(relname)
        return names

    def owns(self, rel: str) -> bool:
        """Whether the target's existing ``rel`` is ours (see :func:`owns`)."""
        return owns(self.target, rel)

    def _check_collision(
        self, rel: str, manifests: dict[Path, dict[str, list[list[int]]]] | None = None
    ) -> None:
        dest = self.target / rel
        for parent in list(Path(rel).parents)[::-1][1:]:
            folder = self.target / parent
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise OutputExistsError(
                    f"{folder}: is in the way of {dest} (a file or link pem-deploy did not write there)"
                )
        if os.path.lexists(dest):
            if dest.is_dir() and not dest.is_symlink():
                raise OutputExistsError(f"{dest}: is a folder where this run writes a file")
            if not self.overwrite and not owns(self.target, rel, manifests):
                raise OutputExistsError(
                    f"{dest}: exists and was not written by pem-deploy (or was changed since); "
                    f"refusing to replace it: move it away or pass {OVERWRITE_FLAG}"
                )

    # -- install --

    def commit(self) -> list[Path]:
        """Install the registered files (rules 1-3); returns their final paths."""
        if self._committed is not None:
            return self._committed
        staging = self.staging
        order = [rel for rel in self._order if (staging / rel).is_file() or rel in self._merges]
        guard_inputs([self.target / rel for rel in order], self._inputs)
        scratch = staging / _SCRATCH
        try:
            if scratch.exists():
                shutil.rmtree(scratch)
            if self._new:
                self._run_merges(existing=False)
            if not (self._new and self._commit_new(staging, order)):
                if self._lock is None:  # created by a concurrent run meanwhile: add to it
                    self._lock = _Lock(self.target)
                    self._refuse_foreign()
                self._run_merges(existing=True)
                self._commit_merge(staging, order)
        except OSError as exc:
            raise _write_error(self.target, exc) from None
        self._committed = [self.target / rel for rel in order]
        return self._committed

    def _commit_new(self, staging: Path, order: list[str]) -> bool:
        """Rename the whole staging onto the missing target; False if the target appeared."""
        keep = set(order)
        for root, _dirs, files in os.walk(staging):
            for name in files:
                rel = (Path(root) / name).relative_to(staging).as_posix()
                if rel not in keep and not (name == MANIFEST_NAME and _manifest_format_ok(Path(root) / name)):
                    (Path(root) / name).unlink()
        prints = {rel: [fp] for rel in order if (fp := _fingerprint(staging / rel)) is not None}
        _write_manifest(staging, prints)
        pause_for_tests()
        if os.path.lexists(self.target):
            return False
        try:
            os.rename(staging, self.target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        self._staging = None  # it is the target now
        return True

    def _commit_merge(self, staging: Path, order: list[str]) -> None:
        target = self.target
        manifests: dict[Path, dict[str, list[list[int]]]] = {}
        for rel in order:
            self._check_collision(rel, manifests)
        old = _read_manifest(target)
        files = {rel: prints for rel, prints in old.items() if os.path.lexists(target / rel)}
        new = {rel: _fingerprint(staging / rel) for rel in order}
        for rel, fp in new.items():
            before = _fingerprint(target / rel)
            files[rel] = [fp] + ([before] if before is not None and before in old.get(rel, []) else [])
        pause_for_tests()
        # Recorded before the renames: a kill between two renames leaves only recorded files.
        _write_manifest(target, files)
        for rel in order:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, dest)
        for rel, fp in new.items():
            files[rel] = [fp]
        _write_manifest(target, files)


def check_folder(target: PathLike, **rules: Unpack[FolderRules]) -> None:
    """The entry checks of :func:`staged_folder` alone (nothing is left behind), to refuse a bad
    target before long work; the commit checks again."""
    output = FolderOutput(target, **rules)
    output.open()
    output._release(failed=True)


def write_into(
    folder: PathLike,
    rel: str,
    data: bytes | str,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Write one file into an output folder that a long run fills over time (a training run's
    checkpoints and logs): staged, renamed, recorded as ours. The folder's other files are left
    alone (its entry check is :func:`check_folder`, once, at the start of the run); a file at
    ``rel`` that pem-deploy did not write is replaced only with ``overwrite``."""
    with staged_folder(folder, exist_ok=True, overwrite=overwrite, inputs=inputs) as out:
        out.write(rel, data)
    return Path(folder) / rel


@contextlib.contextmanager
def staged_folder(target: PathLike, **rules: Unpack[FolderRules]) -> Iterator[FolderOutput]:
    """Write files into the folder ``target`` by the module's rules; yields a :class:`FolderOutput`.

    Checked before anything is written: ``target`` is not a file, not an input or inside an
    input folder (``inputs``), holds nothing foreign unless ``exist_ok``, and none of the
    expected ``names`` collides with a foreign file unless ``overwrite``. On a clean exit the
    registered files are installed (a new folder appears in one rename); on an exception the
    staging is removed and ``target`` is as it was (not even created). ``flag`` names the
    option in messages (the keywords are :class:`FolderRules`).
    """
    with FolderOutput(target, **rules) as output:
        yield output
