"""Where experiments live: a local or NFS folder, or an ``s3://`` / ``gs://`` bucket that every node of a
cluster reaches. All of it goes through pyarrow's file systems, the ones Ray Tune itself writes with, so
``--resume`` and the exported YAML work the same way on each kind of storage."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

# Object stores Ray Tune syncs to; anything else with "://" is refused rather than guessed at.
REMOTE_SCHEMES = ("s3", "gs", "gcs")
# cluster.yaml exports the bucket here on every node, so a search started on the head needs no flag.
STORAGE_ENV = "OSRTUNE_STORAGE_PATH"
DEFAULT_STORAGE = "results"


class StorageError(Exception):
    """The storage cannot be read or written (bad scheme, no credentials, no network): one line for the user."""


def default_storage() -> str:
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def is_remote(path: str) -> bool:
    return "://" in path


def normalize(path: str) -> str:
    """A local path made absolute (trials run in other folders), or a URI with a known scheme."""
    if not is_remote(path):
        return str(Path(path).expanduser().absolute())
    scheme = path.split("://", 1)[0].lower()
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"{path}: storage must be a local or NFS folder, or an "
                           f"{' / '.join(s + '://' for s in REMOTE_SCHEMES)} URI")
    return path.rstrip("/")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if not is_remote(path):  # pyarrow takes absolute local paths only
        path = str(Path(path).expanduser().absolute())
    try:
        return pafs.FileSystem.from_uri(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise StorageError(f"{path}: cannot open this storage ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def exists(path: str) -> bool:
    fs, inner = _fs(path)
    try:
        return fs.get_file_info(inner).type != pafs.FileType.NotFound
    except OSError as err:
        raise StorageError(f"{path}: cannot reach this storage ({_first_line(err)})") from None


def read_text(path: str) -> str:
    fs, inner = _fs(path)
    try:
        with fs.open_input_stream(inner) as stream:
            data = stream.read()
    except OSError as err:
        raise StorageError(f"{path}: cannot read it ({_first_line(err)})") from None
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise StorageError(f"{path}: not a text file (byte {data[err.start]:#04x} at offset {err.start} is not "
                           "UTF-8)") from None


def write_text(path: str, text: str) -> None:
    """Whole or not at all (``write_bytes``), as UTF-8."""
    write_bytes(path, text.encode())


def write_bytes(path: str, data: bytes) -> None:
    """Whole or not at all: a local file is written beside its target and renamed over it; an object
    store's single upload is already atomic."""
    if not is_remote(path):
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            partial.replace(target)
        except OSError as err:
            partial.unlink(missing_ok=True)
            # strerror alone: the full text names the partial file, which is gone
            raise StorageError(f"{path}: cannot write it ({err.strerror or _first_line(err)})") from None
        return
    fs, inner = _fs(path)
    try:
        with fs.open_output_stream(inner) as stream:
            stream.write(data)
    except OSError as err:
        raise StorageError(f"{path}: cannot write it ({_first_line(err)})") from None


def check_writable(path: str) -> None:
    """Raises StorageError unless the local folder ``path`` exists and this process may write in it, or
    could be created: its nearest existing ancestor is a folder it may write in. Creates nothing. An
    object store is not probed here (its credentials and network are Ray's to report). The message
    names the path that is in the way, not ``path``."""
    if is_remote(path):
        return
    target = Path(path).expanduser().absolute()
    existing = target
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "a file, not a folder" if existing.is_file() else "not a folder"
        raise StorageError(f"{existing} is {what}; give the path of a folder (it may not exist yet)")
    # os.access says yes to root everywhere but on read-only mounts; that is what mkdir would do too.
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"no permission to write in {existing}; give a folder you can write to")


def mirror(path: str, into: Path, skip: tuple[str, ...] = ("checkpoint_",)) -> Path:
    """A local copy of the folder ``path`` without the parts whose names start with ``skip`` (trial
    checkpoints can be large and the report never reads them); returns the copy's folder."""
    fs, inner = _fs(path)
    inner = inner.rstrip("/")
    target = into / inner.rsplit("/", 1)[-1]
    try:
        for info in fs.get_file_info(pafs.FileSelector(inner, recursive=True)):
            relative = info.path[len(inner) + 1:]
            if info.type != pafs.FileType.File or any(p.startswith(skip) for p in relative.split("/")):
                continue
            local = target / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as stream:
                local.write_bytes(stream.read())
    except OSError as err:
        raise StorageError(f"{path}: cannot copy it here ({_first_line(err)})") from None
    return target
