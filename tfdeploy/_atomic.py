"""Atomic publication of files and directories: write aside, then rename into place.

Every temporary name carries the writer's process id (``temp-<name>-<pid>-<rand>``
for directories, ``.<name>.tmp-<pid>-<rand>`` for files), so the next export into
the same place can tell the leftovers of a killed writer (its process is gone) from
the work of one still running, and remove them (`clean_stale`).

Replacing an existing version directory (``overwrite=True``) swaps the new
directory and the old one in one ``renameat2(RENAME_EXCHANGE)`` call (Linux): the
version path always holds a complete version, old or new, and the old one is only
deleted once the new one is in place. Where the exchange is not available the old
directory is first renamed to ``temp-old-<name>-<pid>-<rand>``; if the writer is
killed before the new one is in place, the next export (or `clean_stale`) puts the
old one back instead of deleting it, so a version is never lost.
"""

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
import time
import uuid

_TEMP_DIR = re.compile(r"^temp-(?P<old>old-)?(?P<name>.+)-(?P<pid>\d+)-[0-9a-f]{8}(?:\.\w+)?$")
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
# Names written before the pid was part of them: version directories and hidden files only.
_LEGACY = re.compile(r"^(temp-(old-)?-?\d+-[0-9a-f]{8}|\..+\.tmp-[0-9a-f]{8})$")
_LEGACY_SCRATCH = re.compile(r"^tfdeploy-(labels|onnx)-\w{8}$")  # old scratch dirs in $TMPDIR
LEGACY_AGE_S = 3600.0
_RENAME_EXCHANGE = 2


def _tag():
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temp_dir_name(parent, name, suffix=""):
    """A fresh temporary directory path ``parent/temp-<name>-<pid>-<rand><suffix>``."""
    return os.path.join(parent, f"temp-{name}-{_tag()}{suffix}")


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def clean_stale(directory):
    """Remove what killed writers left in ``directory``; restore versions they moved aside.

    A temporary entry is stale when the process named in it is gone (entries from
    before process ids were in the names: when older than `LEGACY_AGE_S`; so are
    the ``tfdeploy-labels-*`` / ``tfdeploy-onnx-*`` scratch directories earlier
    versions left in ``$TMPDIR``). A stale
    ``temp-old-<name>-...`` directory is an old version moved aside by a writer that
    died before putting the new one in place: it is renamed back to ``<name>`` when
    that is free, else removed.

    Returns:
        ``{"removed": [names], "restored": [names]}``.
    """
    done = {"removed": [], "restored": []}
    try:
        names = os.listdir(directory)
    except OSError:
        return done
    now = time.time()
    legacy = _LEGACY_SCRATCH if os.path.abspath(directory) == os.path.abspath(
        tempfile.gettempdir()) else _LEGACY
    for entry in sorted(names):
        path = os.path.join(directory, entry)
        match = _TEMP_DIR.match(entry) or _TEMP_FILE.match(entry)
        if match is None or legacy is _LEGACY_SCRATCH:
            if legacy.match(entry):
                with contextlib.suppress(OSError):
                    if now - os.path.getmtime(path) > LEGACY_AGE_S:
                        _remove(path)
                        done["removed"].append(entry)
            continue
        if _alive(int(match.group("pid"))):
            continue
        if match.groupdict().get("old"):
            target = os.path.join(directory, match.group("name"))
            if not os.path.exists(target):
                with contextlib.suppress(OSError):
                    os.rename(path, target)
                    done["restored"].append(match.group("name"))
                    continue
        _remove(path)
        done["removed"].append(entry)
    return done


@contextlib.contextmanager
def atomic_file(path, overwrite=True):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception (including KeyboardInterrupt) the temporary file is removed
    and ``path`` is left as it was. Stale temporary files of killed writers in the
    same directory are removed first.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked
            before and after writing).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    clean_stale(directory)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{_tag()}")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile; never replaces it
            os.remove(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _exchange(a, b):
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    libc = _libc()
    func = getattr(libc, "renameat2", None) if libc is not None else None
    if func is None:
        return False
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), b)


_LIBC = []


def _libc():
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def replace_directory(tmp, path):
    """Put the complete directory ``tmp`` at the existing ``path``; delete the old one after.

    ``path`` never stops holding a complete directory when the exchange is available;
    otherwise the old one waits as ``temp-old-...`` (restored by `clean_stale` if the
    writer dies before the new one is in place).
    """
    parent, name = os.path.split(os.path.abspath(path))
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old version
        return
    old = os.path.join(parent, f"temp-old-{name}-{_tag()}")
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path, overwrite=False):
    """Yield a temporary directory beside ``path``; on success rename it to ``path``.

    The temporary directory is named ``temp-<name>-<pid>-<random>``: TF Serving (and
    tfdeploy's server) only load numeric version directories, so a half-written
    export is never visible. On failure it is removed; leftovers of killed writers in
    the same parent are removed (or restored, see `clean_stale`) first.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    clean_stale(parent)
    tmp = temp_dir_name(parent, os.path.basename(path))
    try:
        yield tmp
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(path)
            replace_directory(tmp, path)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
