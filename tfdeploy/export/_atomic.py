"""Atomic publication of files and directories: write aside, then rename into place."""

import contextlib
import os
import shutil
import uuid


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception (including KeyboardInterrupt) the temporary file is removed
    and ``path`` is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path, overwrite=False):
    """Yield a temporary directory beside ``path``; on success rename it to ``path``.

    The temporary directory is named ``temp-<name>-<random>``: TF Serving (and
    tfdeploy's server) only load numeric version directories, so a half-written
    export is never visible. On failure it is removed.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"temp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(path)
            old = os.path.join(parent, f"temp-old-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
