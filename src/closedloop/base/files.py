"""Private files and folders: what closedloop creates in a project home is its owner's alone.

A home holds raw contexts (URLs, user ids), outcomes, the registry and datasets, so every data
file it creates is ``0600`` and every folder ``0700`` — by explicit modes at creation, not by a
process-wide ``umask`` (a library must not change its host's umask, and other threads create
files too). ``os.open(..., 0o600)`` and ``os.mkdir(..., 0o700)`` are masked by the umask, which
can only take bits away, so the result is never wider than asked; a ``chmod`` afterwards restores
the owner's bits a strange umask (say ``0o277``) took.

Files other libraries create (DuckDB's ``COPY … TO``, SQLite) are either pre-created here
(:func:`create_private`: a writer that opens an existing file keeps its mode — SQLite also gives
its ``-wal``/``-shm``/``-journal`` files the database file's mode) or tightened with
:func:`restrict_tree` while still under a temporary name in a private folder, before the rename
that publishes them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Any

from closedloop.errors import SpecError

__all__ = ["DIR_MODE", "FILE_MODE", "atomic_write", "create_private", "fsync_dir", "make_private_dirs", "open_private",
           "open_private_file", "restrict_tree"]

#: The mode of every data file closedloop creates in a home (owner read/write).
FILE_MODE = 0o600
#: The mode of every folder closedloop creates in a home (owner only).
DIR_MODE = 0o700


def make_private_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path``: each folder created here is ``0700``; folders that exist are left as
    they are (the home's parent, say, is not ours to change). Returns ``path`` as a Path.
    Raises ``FileExistsError`` when ``path`` exists and is not a folder (as ``Path.mkdir``)."""
    p = Path(path)
    if p.is_dir():
        return p
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    if not missing:  # p exists but is not a folder (or is a dangling link)
        raise FileExistsError(f"[Errno 17] File exists: '{p}'")
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another process (with its own mode)
        os.chmod(d, DIR_MODE)
    return p


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags | O_CREAT, 0o600)``: a file descriptor on a file that is ``0600``
    when created here (and tightened to ``0600`` when it exists with other bits and is ours —
    a home written by an older version)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o777 != FILE_MODE and st.st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private_file(path: str | os.PathLike[str], mode: str = "wb") -> IO[Any]:
    """A binary file object on ``path`` opened by :func:`open_private`: ``mode`` is ``"wb"``
    (truncate), ``"ab"`` (append) or ``"xb"`` (must not exist)."""
    flags = {"wb": os.O_WRONLY | os.O_TRUNC, "ab": os.O_WRONLY | os.O_APPEND,
             "xb": os.O_WRONLY | os.O_EXCL}.get(mode)
    if flags is None:
        raise SpecError(f"The 'mode' parameter of open_private_file must be 'wb', 'ab' or 'xb'. Got {mode!r} instead.")
    fd = open_private(path, flags)
    try:
        return os.fdopen(fd, mode.replace("x", "w"))
    except BaseException:
        os.close(fd)
        raise


def create_private(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists as a ``0600`` file (empty if new; contents kept if not), so a
    library that opens it afterwards (SQLite, a Parquet writer) writes into a private file."""
    os.close(open_private(path, os.O_RDONLY))
    return Path(path)


def restrict_tree(path: str | os.PathLike[str]) -> None:
    """``chmod`` ``path`` (a folder: itself ``0700``, every file under it ``0600``, every folder
    ``0700``; a file: ``0600``). For what another library wrote (DuckDB's ``COPY … TO``), while it
    is still under a temporary name in a private folder, before it is published. Symbolic links
    are neither followed nor changed."""
    p = Path(path)
    if p.is_symlink():
        return
    if not p.is_dir():
        os.chmod(p, FILE_MODE)
        return
    os.chmod(p, DIR_MODE)
    for root, dirs, files in os.walk(p):
        for name in dirs:
            d = os.path.join(root, name)
            if not os.path.islink(d):
                os.chmod(d, DIR_MODE)
        for name in files:
            f = os.path.join(root, name)
            if not os.path.islink(f):
                os.chmod(f, FILE_MODE)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the folder ``path``, so that a rename or a new name in it survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = FILE_MODE, *,
                 durable: bool = True) -> Path:
    """Replace the file ``path`` by ``data`` so that a reader sees the old content or the new,
    never a mix: ``data`` goes to a hidden temporary sibling (``.<name>.<random>.tmp``, created
    with ``mode``, ``0600`` by default), is fsynced, renamed over ``path``, and the folder is
    fsynced. ``durable=False`` leaves out both fsyncs (still atomic, not crash-proof: for files
    rewritten often whose last version a crash may lose). The temporary file is removed when
    anything fails. Returns ``path`` as a Path."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            if os.fstat(fd).st_mode & 0o777 != mode:  # the umask took bits ``mode`` asks for
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(p.parent)
    return p
