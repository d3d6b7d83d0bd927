"""Atomic file output: a reader (or a process killed mid-write) sees the old file or the new one, never half."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable


def fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write_body) -> None:
    """Write via a temporary file in the same directory + fsync + os.replace, so readers see the old file or the new:
    write_body(binary file)."""

    def write_to(temp_path: str) -> None:
        # os.open rather than tempfile.mkstemp: mode 0o666 under the umask, like any new file (mkstemp makes 0o600)
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as file:
            write_body(file)

    atomic_write_by_name(path, write_to)


def atomic_write_by_name(path: str, write_to: Callable[[str], None]) -> None:
    """The atomic write for a writer that takes a file name (a library's save_model(path)): write_to(a temp name in
    the same directory), then fsync + os.replace; the temp file is removed on failure."""
    directory = os.path.dirname(os.path.abspath(path))
    temp_path = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        write_to(temp_path)
        fd = os.open(temp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    fsync_directory(directory)


def save_png(figure, path: str, **savefig_options) -> None:
    """A matplotlib figure written atomically as PNG (dpi 110 unless given; its folder made), then closed."""
    import matplotlib.pyplot as plt  # the callers draw with it already; kept out of this module's import

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    options = {"dpi": 110, **savefig_options}
    atomic_write(path, lambda file: figure.savefig(file, format="png", **options))
    plt.close(figure)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(os.fspath(path), lambda file: file.write(text.encode("utf-8")))
