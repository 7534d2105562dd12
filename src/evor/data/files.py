"""Writing files atomically, holding files locked, and where datasets live.

Every file evor writes goes to a temporary name in the destination directory and is renamed into
place, so an interrupted write (Ctrl-C, a full disk, a killed process) never leaves a half-written
file under the final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from evor.errors import EvorError

DATA_DIR_ENV = "OGBENCH_DATA_DIR"


def default_data_dir() -> Path:
    """`$OGBENCH_DATA_DIR` if set, else OGBench's own default `~/.ogbench/data`."""
    return Path(os.environ.get(DATA_DIR_ENV, "~/.ogbench/data")).expanduser()


def data_dir_path(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory a caller named, or the default one when it named none."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


class DatasetFiles(NamedTuple):
    """The three files of a dataset NAME, the same names OGBench's own downloads use (plus the sidecar)."""

    train: Path  # NAME.npz
    val: Path  # NAME-val.npz
    sidecar: Path  # NAME.json: how evor generated it (absent for an imported or downloaded file)


VALIDATION_SUFFIX = "-val.npz"


def dataset_files(dataset_name: str, data_dir: str | os.PathLike | None = None) -> DatasetFiles:
    """Where dataset `dataset_name` lives in `data_dir` (default: `default_data_dir()`). The one place
    that spells the file names: the generator writes them, the loader, the sidecar reader and the
    listing read them."""
    directory = data_dir_path(data_dir)
    return DatasetFiles(train=directory / f"{dataset_name}.npz", val=directory / f"{dataset_name}{VALIDATION_SUFFIX}",
                        sidecar=directory / f"{dataset_name}.json")


def is_validation_file(path: str | os.PathLike) -> bool:
    """Whether `path` is some dataset's validation file (the inverse question to `dataset_files`, asked
    when listing a directory)."""
    return Path(path).name.endswith(VALIDATION_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise EvorError(f"Cannot write '{path}': {exc.strerror or exc}.") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise EvorError(f"Writing '{path}' failed ({exc.strerror or exc}); nothing was written there.") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def try_lock(path: str | os.PathLike):
    """An open handle on `path` (created if absent, never truncated) that holds its exclusive lock, or
    None when another process holds it. Closing the handle releases the lock. The lock is the kernel's
    (flock), so it dies with its process: a crash never leaves a file locked."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = True):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
