"""Files and folders that hold personal data (the warehouse file, landing Parquet,
dry-run requests, call lists, platform upload files) are created readable by their
owner only: 0600 files in 0700 folders, unless `permissions:` in the configuration
says otherwise (e.g. 0640/0750 for a group of workers under one gid)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
FOLDER_MODE = 0o700
_modes = {"file": FILE_MODE, "folder": FOLDER_MODE}


def configure(file_mode: int, folder_mode: int) -> None:
    """Set the modes for this process (load_config calls it with `permissions:`)."""
    _modes.update(file=file_mode, folder=folder_mode)


def file_mode() -> int:
    return _modes["file"]


def folder_mode() -> int:
    return _modes["folder"]


def private_dir(path: Path) -> Path:
    """`path` and its missing parents, each one created here with the folder mode
    (folders that already exist are the operator's and keep theirs)."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # another task made it meanwhile
            continue
        os.chmod(folder, folder_mode())  # exact, whatever the umask
    return path


def restrict(path: Path) -> Path:
    """Give a file another library wrote (DuckDB, pyarrow) the file mode."""
    os.chmod(path, file_mode())
    return path


def open_private(path: Path, mode: str = "w", **kwargs) -> IO:
    """open() for a file holding personal data: created with the file mode, and an
    existing one brought to it before anything is written."""
    path = Path(path)
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    descriptor = os.open(path, flags, file_mode())
    os.fchmod(descriptor, file_mode())
    return os.fdopen(descriptor, mode, **kwargs)


def write_private(path: Path, data: str | bytes) -> Path:
    """Write a whole file holding personal data."""
    binary = isinstance(data, bytes)
    with open_private(path, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
        handle.write(data)
    return path
