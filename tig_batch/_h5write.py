"""Write HDF5 files so that a full disk is an error message, never a crash.

When a write fails (no space left, a quota), HDF5 keeps dirty metadata and chunks that it tries
to flush again when a dataset or the file is closed; h5py raises ``RuntimeError`` from
``close`` or prints it from a destructor, and HDF5 may then crash the process (a segmentation
fault at close or at exit). So HDF5 never sees the failure: it writes through a file object
(h5py's ``fileobj`` driver) that records the first failed write and from then on keeps what
HDF5 writes in memory, so that HDF5 sees a consistent file and closes cleanly. Writers call
:meth:`GuardedFile.check` after each block of work, which stops them there with a
:class:`~tig_batch.errors.DataError` naming the file; the file is then closed and deleted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from tig_batch.errors import DataError

_pwrite = os.pwrite  # the one place bytes reach the disk (tests inject failures here)


class GuardedFile:
    """A binary file for h5py's ``fileobj`` driver that turns write failures into a flag."""

    def __init__(self, path: Path, shown: Path | None = None) -> None:
        self.path, self.shown = path, shown or path
        self.error: OSError | None = None
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._position = 0
        self._held: list[tuple[int, bytes]] = []  # (offset, bytes) written after a failure

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size()}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def _size(self) -> int:
        ends = [offset + len(data) for offset, data in self._held]
        return max([os.fstat(self._fd).st_size, *ends])

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._position)
        view[: len(data)] = data
        count = len(data)
        for offset, held in self._held:  # later writes win
            lo = max(offset, self._position)
            hi = min(offset + len(held), self._position + len(view))
            if lo < hi:
                view[lo - self._position : hi - self._position] = held[lo - offset : hi - offset]
                count = max(count, hi - self._position)
        self._position += count
        return count

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(max(size, 0) if size >= 0 else self._size() - self._position)
        return bytes(buffer[: self.readinto(buffer)])

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self.error is None:
            try:
                done = 0
                while done < len(data):
                    done += _pwrite(self._fd, data[done:], self._position + done)
            except OSError as error:
                self.error = error
        if self.error is not None:
            self._held.append((self._position, data))
        self._position += len(data)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as error:
                self.error = error
        return size

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the file descriptor."""

    def sync(self) -> None:
        """Force the bytes to the device (before the file is renamed into place)."""
        if self.error is None:
            try:
                os.fsync(self._fd)
            except OSError as error:
                self.error = error

    def check(self) -> None:
        """Raise the recorded failure as a one-line :class:`DataError` naming the file."""
        if self.error is not None:
            reason = self.error.strerror or str(self.error)
            raise DataError(f"{self.shown}: write failed ({reason})")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._held.clear()


class HDF5Output:
    """A new HDF5 file at ``path``, written through a :class:`GuardedFile`.

    Use as a context manager (closed on success, discarded on an error) or call :meth:`close`
    and :meth:`discard` yourself. :meth:`check` raises a failed write as a :class:`DataError`;
    :meth:`close` checks, and deletes the file before raising. ``options`` go to
    :class:`h5py.File` (``track_order``, ...). Errors name ``shown`` (default ``path``): the
    final name of a file written under a temporary one.
    """

    def __init__(self, path: Path, shown: Path | None = None, **options: Any) -> None:
        self.path = path
        try:
            self._guard = GuardedFile(path, shown)
        except OSError as error:
            where = shown or path
            raise DataError(f"{where}: cannot create ({error.strerror or error})") from None
        try:
            self.file = h5py.File(self._guard, "w", **options)
        except BaseException as error:
            self._guard.close()
            path.unlink(missing_ok=True)
            if isinstance(error, OSError):
                reason = error.strerror or str(error)
                raise DataError(f"{shown or path}: write failed ({reason})") from None
            raise

    def check(self) -> None:
        self._guard.check()

    def close(self) -> None:
        """Close, sync to the device and check; a failed write deletes the file and raises."""
        self.file.close()
        self._guard.sync()
        try:
            self._guard.check()
        except DataError:
            self.discard()
            raise
        self._guard.close()

    def discard(self) -> None:
        """Close and delete the file, whatever state it is in."""
        self.file.close()
        self._guard.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> HDF5Output:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()
