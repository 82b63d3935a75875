"""Atomic, deterministic file output and content hashing.

Every output of the pipeline is written to a temporary sibling first and renamed into place, so an
interrupted run never leaves a half-written table, image or cohort folder behind.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from src.utils.errors import DISK_FULL, DiskFullError, MissingInputError, UserInputError, disk_full_message


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps the target's suffixes so writers that dispatch on the extension
    (``.nii.gz``, ``.parquet``) behave as for the real name. On error the temporary file is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as err:
        if err.errno in DISK_FULL:  # name the file meant, not the temporary one (or none: a failed write())
            raise DiskFullError(disk_full_message(err, target)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target`` as a whole.

    An existing ``target`` is only removed once the new content is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    # the writer's pid in the name: a later run can tell a killed writer's debris from a live one's work
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    try:
        try:
            yield tmp
        except DiskFullError as err:  # name the folder's final path, not the temporary one
            raise DiskFullError(str(err).replace(str(tmp), str(target))) from err
        except OSError as err:
            if err.errno in DISK_FULL:
                name = str(err.filename).replace(str(tmp), str(target)) if err.filename else target
                raise DiskFullError(disk_full_message(err, name)) from err
            raise
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove temporary folders of ``target`` left by writers that no longer run (a killed run).

    Only ``.<name>.<pid>.<random>.tmp`` folders whose pid is not a live process are removed; a concurrent
    writer's folder is left alone."""
    target = Path(target)
    removed = []
    for folder in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        parts = folder.name[len(target.name) + 2 :].split(".")
        if len(parts) < 3 or not parts[0].isdigit() or _alive(int(parts[0])):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _umask() -> int:
    """The process umask (mkstemp/mkdtemp create private files; outputs get the usual permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, ``\\n`` line endings)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as sorted, indented JSON atomically (byte-identical for equal content)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_md5(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """MD5 of a file's bytes (the same digest DVC records for a tracked file)."""
    return _file_digest(path, hashlib.md5(), chunk_size)


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (what model files are verified against before loading)."""
    return _file_digest(path, hashlib.sha256(), chunk_size)


def _file_digest(path: str | os.PathLike, digest: Any, chunk_size: int) -> str:
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def shown_path(path: Path) -> str:
    """``path`` as a card or report may print it: relative to the working folder when inside it, else the
    file's name only (a card is shared; the machine's folders are not its reader's business). The md5
    beside it identifies the file."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return f".../{path.name}"


def shown_uri(uri: str | None) -> str:
    """A store URI as a report may print it: a ``sqlite:///`` path shown with :func:`shown_path`; other URIs
    (servers, databases) as they are."""
    if uri and uri.startswith("sqlite:///"):
        return "sqlite:///" + shown_path(Path(uri.removeprefix("sqlite:///")))
    return str(uri)


def check_writable(folder: str | os.PathLike) -> None:
    """``folder`` could be created and written: its nearest existing ancestor accepts a new file. Checked
    before the work, not after it, and without creating anything."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file stands where a folder is needed", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check."):
            pass
    except OSError as err:
        raise UserInputError(
            f"output folder {folder} is not writable ({err.strerror}: {existing}); set paths.output"
        ) from err


def file_record(folder: Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256}`` of the files ``names`` in ``folder`` that exist: what a results document records
    of the tables written beside it, so that a reader tells an edited or swapped table from the one
    written."""
    return {name: file_sha256(folder / name) for name in names if (folder / name).is_file()}


def check_file_record(folder: Path, record: dict[str, str] | None, what: str) -> None:
    """Refuse a file of ``folder`` whose sha256 is not the one ``record`` holds (:func:`file_record`), in one
    line naming the file and ``what`` recorded it. A missing record (written before records existed) is not
    checked."""
    for name, expected in (record or {}).items():
        path = folder / name
        if not path.is_file():
            raise MissingInputError(f"{path} not found, though {what} records it")
        if file_sha256(path) != expected:
            raise UserInputError(
                f"{path} is not the file {what} wrote (sha256 differs: edited or copied from another run); "
                "rerun the stage that writes it (or `dvc checkout` / `dvc repro`)"
            )
