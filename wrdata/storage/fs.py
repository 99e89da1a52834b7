"""The one filesystem layer every storage write goes through.

Two halves:

- the **journal** is always local: plain ``os`` calls on file descriptors, because the
  journal needs ``O_APPEND`` writes, ``fsync``/``fdatasync``, ``ftruncate`` and ``flock``;
- **sealed files** go to a :mod:`pyarrow.fs` filesystem (local, S3, GCS, ...). On a local
  filesystem a file is written under a dot-prefixed temporary name, fsynced and renamed
  into place (atomic); elsewhere it is uploaded under a temporary key and moved to its
  final key, so a reader never sees a partial object under a final name either (what
  that costs on S3, and why the temporary key is needed there: :mod:`.remote`). The
  journal segment is removed only after that, so an upload that fails or is cut off
  by a crash is done again from the segment (by the retry loop, or at the next start).

Every operation first calls :attr:`StorageFS.fault` (if set) with the operation's name
and path, so tests can make any of them fail (``OSError(errno.ENOSPC, ...)``) exactly
where a real disk would. Operation names: ``journal.open``, ``journal.write``,
``journal.sync``, ``journal.truncate``, ``journal.remove``, ``seal.open``,
``seal.write``, ``seal.commit``, ``seal.remove``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import pyarrow as pa
import pyarrow.fs as pafs

from .remote import check_root, endpoint_of, is_uri, open_filesystem, redact, remote_journal_dir, root_identity

log = logging.getLogger("wrdata.storage")

FaultHook = Callable[[str, str], None]


def resolve_root(root: str | os.PathLike, filesystem: pafs.FileSystem | str | None = None) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, path within it, is_local)`` for a dataset root.

    ``root`` may be a local path or a URI (``s3://bucket/prefix``, ``file:///data``);
    ``filesystem`` may be a pyarrow filesystem (``root`` is then a path within it, or a
    URI of that filesystem: ``s3://bucket/prefix`` with an ``S3FileSystem``) or a URI
    naming one. Filesystems of URIs are built and checked once per process
    (:mod:`.remote`): a store that cannot be used raises a one-line ``OSError``.
    """
    root = os.fspath(root)
    if isinstance(filesystem, str):
        fs, base = open_filesystem(filesystem)
        path = f"{base.rstrip('/')}/{root.lstrip('/')}" if root not in ("", ".") else base
        return fs, path.rstrip("/"), isinstance(fs, pafs.LocalFileSystem)
    if filesystem is not None:
        if is_uri(root):
            # the URI's own scheme must be the filesystem's; the rest is the path in it
            scheme = root.split("://", 1)[0].lower()
            kind = {"gcs": "gs"}.get(filesystem.type_name, filesystem.type_name)
            if scheme != kind and not (scheme == "file" and kind == "local"):
                raise ValueError(f"root {redact(root)} is not on the given {filesystem.type_name} filesystem")
            rest = root.split("://", 1)[1]
            root = rest.split("?", 1)[0] if scheme != "file" else "/" + rest.split("?", 1)[0].lstrip("/")
        return filesystem, root.rstrip("/") or root, isinstance(filesystem, pafs.LocalFileSystem)
    if is_uri(root):
        fs, path = open_filesystem(root)
        return fs, path, isinstance(fs, pafs.LocalFileSystem)
    return pafs.LocalFileSystem(), os.path.abspath(root), True


def default_journal_dir(root: str | os.PathLike, filesystem: pafs.FileSystem | str | None = None) -> str:
    """The journal directory a writer uses unless told otherwise: ``<root>/_journal`` for
    a local root; for any other, a local directory derived from the root's identity
    (``scheme://bucket/prefix``, whatever endpoint reaches it) under
    :func:`.remote.journal_home` (``~/.local/state/wrdata/journal/s3-bucket_prefix-<hash>``).
    Readers on the capture host find the unsealed tail there; other hosts have none."""
    root = os.fspath(root)
    if filesystem is None and not is_uri(root):
        return os.path.join(os.path.abspath(root), "_journal")
    if isinstance(filesystem, pafs.LocalFileSystem) or (filesystem is None and root.lower().startswith("file://")):
        _, base, _ = resolve_root(root, filesystem)
        return os.path.join(base, "_journal")
    return remote_journal_dir(root_identity(root, filesystem))


def find_journal(root: str | os.PathLike, filesystem: pafs.FileSystem | str | None = None) -> str | None:
    """:func:`default_journal_dir` if it exists on this machine, else ``None``."""
    j = default_journal_dir(root, filesystem)
    return j if os.path.isdir(j) else None


class _FaultyOutput:
    """A file-like object over a pyarrow/OS output stream that consults the fault hook on
    every write (Parquet writers call ``write`` once per page or so: cheap)."""

    def __init__(self, inner, path: str, fs: StorageFS) -> None:
        self._inner = inner
        self._path = path
        self._fs = fs
        self.closed = False

    def write(self, data) -> int:
        self._fs._check("seal.write", self._path)
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def tell(self) -> int:
        return self._inner.tell()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._inner.close()


def _size_if_exists(fs: pafs.FileSystem, path: str) -> int | None:
    # opening costs one HEAD on S3 (get_file_info adds a listing to tell a missing file
    # from a directory)
    try:
        with fs.open_input_file(path) as f:
            return f.size()
    except FileNotFoundError:
        return None


class StorageFS:
    """Journal (local) and sealed-file (any pyarrow filesystem) operations."""

    def __init__(
        self,
        root: str | os.PathLike,
        journal_dir: str | os.PathLike | None = None,
        filesystem: pafs.FileSystem | str | None = None,
        *,
        fsync: bool = True,
    ) -> None:
        self.uri = os.fspath(root)
        self.fs, self.root, self.local = resolve_root(root, filesystem)
        if journal_dir is None:
            # remote roots: a local directory derived from the root, the same for every
            # process of this host, so a restarted daemon finds (and uploads) what its
            # predecessor left
            journal_dir = default_journal_dir(root, filesystem)
        self.journal_dir = os.path.abspath(os.fspath(journal_dir))
        self.fsync = fsync
        #: test hook: called as fault(op, path) before every operation; may raise
        self.fault: FaultHook | None = None

    def check_writable(self) -> None:
        """For a remote root: fail with one clear line (``FileNotFoundError``,
        ``PermissionError``, ``ConnectionError``) unless its store can be listed and
        written now. Local roots: nothing (the journal's own writes tell)."""
        if not self.local:
            check_root(self.fs, self.root, what=redact(self.uri), endpoint=endpoint_of(self.fs), write=True)

    def _check(self, op: str, path: str) -> None:
        f = self.fault
        if f is not None:
            f(op, path)

    # -- journal (local) ------------------------------------------------------------------
    def journal_open(self, path: str) -> int:
        self._check("journal.open", path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)

    def journal_write(self, fd: int, data: bytes | memoryview, path: str) -> None:
        """Write all of ``data`` or raise (a short write is retried until it errors)."""
        self._check("journal.write", path)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:  # pragma: no cover - os.write raises instead
                raise OSError(errno.EIO, "short write", path)
            view = view[n:]

    def journal_sync(self, fd: int, path: str) -> None:
        self._check("journal.sync", path)
        if hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:  # pragma: no cover - macOS
            os.fsync(fd)

    def journal_truncate(self, fd: int, size: int, path: str) -> None:
        self._check("journal.truncate", path)
        os.ftruncate(fd, size)

    def journal_close(self, fd: int) -> None:
        try:
            os.close(fd)
        except OSError as e:  # closing must not raise into the writer loop
            log.warning("closing journal fd %d failed: %s", fd, e)

    def journal_remove(self, path: str) -> None:
        self._check("journal.remove", path)
        os.remove(path)
        self._remove_empty_dirs(os.path.dirname(path), self.journal_dir)

    @staticmethod
    def _remove_empty_dirs(d: str, stop: str) -> None:
        # keep the journal tree tidy: date=/provider= directories of sealed segments go away
        while os.path.abspath(d) != os.path.abspath(stop) and d.startswith(stop):
            try:
                os.rmdir(d)
            except OSError:
                return
            d = os.path.dirname(d)

    def sync_dir(self, d: str) -> None:
        if not self.fsync:
            return
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- sealed files ---------------------------------------------------------------------
    def seal_tmp_path(self, final: str) -> str:
        d, name = final.rsplit("/", 1)
        # dot prefix: pyarrow.dataset, DuckDB globs (*.parquet) and Spark all skip it
        return f"{d}/.{name}.tmp-{os.getpid()}"

    def remove_stale_tmps(self, final: str) -> int:
        """Remove the temporary files of ``final`` that other processes left: they died
        writing it (a SIGKILL mid-seal). The caller seals the segment behind ``final``, which
        only the segment's owner or a recoverer holding its writer's lock does, so no live
        process is writing them. Returns how many were removed."""
        d, name = final.rsplit("/", 1)
        prefix, mine = f".{name}.tmp-", self.seal_tmp_path(final).rsplit("/", 1)[1]
        if self.local:
            try:
                stale = [f"{d}/{n}" for n in os.listdir(d) if n.startswith(prefix) and n != mine]
            except FileNotFoundError:
                return 0
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(d, allow_not_found=True))
            stale = [i.path for i in infos if i.base_name.startswith(prefix) and i.base_name != mine]
        for path in stale:
            try:
                os.remove(path) if self.local else self.fs.delete_file(path)
            except FileNotFoundError:
                pass
        if stale:
            log.info("storage: removed %d temporary file(s) of an interrupted seal of %s", len(stale), final)
        return len(stale)

    def seal_open(self, final: str):
        """``(file-like, tmp_path)`` to write a sealed file that will become ``final``."""
        tmp = self.seal_tmp_path(final)
        self._check("seal.open", tmp)
        if self.local:
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            inner = open(tmp, "wb")
        else:
            if self.fs.type_name != "s3":  # S3 has no directories: creating one is a request for a marker object
                self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
            inner = self.fs.open_output_stream(tmp)
        return _FaultyOutput(inner, tmp, self), tmp

    def seal_commit(self, out: _FaultyOutput, tmp: str, final: str, *, replace: bool = True) -> int:
        """Flush, fsync and close ``out``, then move ``tmp`` to ``final`` atomically.
        Returns the size of the file now under ``final``.

        ``replace=False`` (sealing a journal segment on an object store) keeps a file that
        already has the final name and drops the new one: the name derives from the
        segment's content, so that file holds these rows (an earlier upload of the same
        segment, or a compaction's output that took its name and holds more). Compaction
        on another host cannot see this host's journal, so overwriting could replace a
        compacted superset with a subset.
        """
        self._check("seal.commit", final)
        size = out.tell()
        if self.local:
            f = out._inner
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
            out.close()
            os.replace(tmp, final)
            self.sync_dir(os.path.dirname(final))
            return size
        # close() completes the upload: only now does the temporary object exist
        out.close()
        if not replace:
            existing = _size_if_exists(self.fs, final)
            if existing is not None:
                log.info("storage: %s is already in place (uploaded before a restart, or compacted): keeping it", final)
                self.fs.delete_file(tmp)
                return existing
        # S3: CopyObject (server side) + DeleteObject; the final key appears complete
        self.fs.move(tmp, final)
        return size

    def seal_abort(self, out: _FaultyOutput | None, tmp: str, writer=None) -> None:
        """Give up a file opened with :meth:`seal_open`: close ``writer`` (the Parquet
        writer over ``out``, if any) and ``out``, and remove ``tmp``. Never raises: the
        error that made the caller give up is the one to report."""
        for closable in (writer, out):
            try:
                if closable is not None:
                    closable.close()
            except Exception:  # noqa: BLE001 - the original error is what matters
                pass
        try:
            if self.local:
                os.remove(tmp)
            else:
                self.fs.delete_file(tmp)
        except (OSError, pa.ArrowException):
            pass

    def seal_remove(self, path: str) -> None:
        self._check("seal.remove", path)
        if self.local:
            os.remove(path)
        else:
            self.fs.delete_file(path)

    def file_size(self, path: str) -> int:
        info = self.fs.get_file_info(path)
        return info.size or 0
