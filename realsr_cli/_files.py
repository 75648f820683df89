"""Small file facts every layer needs: the one atomic write, the one SHA-256 of a file, and the one way an
exception becomes a one-line reason. No torch here."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path` for the caller to write; on success it is renamed onto `path`
    (atomic on one file system), on any exception (Ctrl-C included) it is removed. The temporary name is new
    each time, and the file the caller creates there gets the user's umask permissions."""
    path = Path(path)
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type name when it has none:
    what a one-line error message quotes of a library's multi-line error."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
