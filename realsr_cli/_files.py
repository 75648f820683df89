"""Small file facts every layer needs: the one atomic write (and the one pattern of its temporary files), the one
checked append, the one SHA-256 of a file, and the one way an exception becomes a one-line reason. No torch here."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from realsr_cli.errors import InputError

# atomic_write's temporary files: ".<name>.<writer's pid>-<8 hex>.tmp" beside the file they become
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}\.tmp")
# a temporary file touched this recently is left alone even when its pid is not alive here: the folder may be
# shared with another machine, whose processes this one cannot see
_STALE_AFTER_S = 60.0
# errors that mean "no room": the message then says the disk may be full
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_BUFFER = 1 << 20

_swept: set[str] = set()  # folders this process has cleared of stale temporary files
_swept_lock = threading.Lock()


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file for `path`'s new content; when the block ends, the content is flushed, synced to disk
    and renamed onto `path` (atomic on one file system), so `path` holds the old content or the whole new one, even
    after a crash. On any exception (Ctrl-C included) the temporary file is removed and `path` is untouched.

    Every write is checked: a short or failed write, sync or rename raises an InputError naming `path` (and saying
    the disk may be full when it is out of room). The file has no `fileno`, so encoders write through these checks
    instead of around them; its `name` is the temporary path, readable once flushed. The temporary file gets the
    user's umask permissions. Stale temporary files of dead writers in the folder are removed first
    (`remove_stale_temps`). Raises InputError when the folder cannot be written.
    """
    path = Path(path)
    remove_stale_temps(path.parent)
    temp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        # os.open with 0o666, not mkstemp: the umask applies instead of mkstemp's private 0600
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise InputError(f"{path.parent}: cannot write to the output folder ({err.strerror or err})") from err
    fh = io.BufferedWriter(_CheckedFile(fd, temp, path), _BUFFER)
    try:
        yield fh
        fh.flush()
        with _writing(path):
            os.fsync(fd)  # before the rename: a crash must not leave an empty file under the final name
            os.replace(temp, path)
    finally:
        with contextlib.suppress(OSError, InputError):  # after a failed write, closing retries it and fails again
            fh.close()
        temp.unlink(missing_ok=True)


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Append `data` to `path` (created if missing) whole or not at all: after a short or failed write the file is
    cut back to its old length and an InputError names it."""
    path = Path(path)
    with _writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, data, path)
        except InputError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Remove the temporary files `atomic_write` left in `folder` when its writer was killed (SIGKILL, a crash, a
    power cut): only names of its own pattern, whose writer's pid is not alive and which nothing touched for a
    minute. Each folder is swept once per process; a folder that cannot be listed is left alone. POSIX only: it
    asks the kernel whether a pid is alive."""
    folder = os.path.abspath(folder)
    with _swept_lock:
        if os.name != "posix" or folder in _swept:
            return
        _swept.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and not _alive(int(match["pid"])) and _untouched(entry):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _untouched(entry: os.DirEntry) -> bool:
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > _STALE_AFTER_S
    except OSError:
        return False


class _CheckedFile(io.RawIOBase):
    """The raw file under `atomic_write`'s buffer: writes land whole or raise an InputError naming the destination.
    No `fileno`: Pillow's encoders write to a descriptor directly when they get one, and ignore short writes."""

    def __init__(self, fd: int, temp: Path, dest: Path) -> None:
        super().__init__()
        self._fd = fd
        self._dest = dest
        self.name = str(temp)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        return _write_all(self._fd, data, self._dest)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        with _writing(self._dest):
            return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return self.seek(0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _write_all(fd: int, data, dest: Path) -> int:
    """Write all of `data` to `fd`, retrying short writes; an InputError naming `dest` when a write fails or
    writes nothing. Returns the bytes written."""
    view = memoryview(data).cast("B")
    done = 0
    with _writing(dest):
        while done < len(view):
            written = os.write(fd, view[done:])
            if written == 0:
                raise OSError(errno.ENOSPC, "a write was cut short")
            done += written
    return done


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError in the block becomes a one-line InputError naming `path`."""
    try:
        yield
    except OSError as err:
        hint = ": the disk may be full" if err.errno in _NO_ROOM else ""
        raise InputError(f"{path}: cannot write ({err.strerror or err}){hint}") from err


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type name when it has none:
    what a one-line error message quotes of a library's multi-line error."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
