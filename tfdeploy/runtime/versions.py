"""Numeric version directories, named exactly as TF Serving accepts them.

TF Serving's file-system source (``file_system_storage_path_source.cc``) turns a
child of a model's base path into a version with ``strings::safe_strto64``:
optional ASCII white space, an optional ``-``, one or more ASCII digits, optional
ASCII white space, within int64. So ``7``, ``007`` and ``-3`` are versions;
``²``, ``١``, ``1.0``, ``+1`` and ``temp-1`` are not. Several names of one
version (``1`` and ``01``): the name that sorts last wins, as in TF Serving's
``IndexChildrenByVersion``. A version is always loaded from the directory as
it is named on disk.

This is the one place tfdeploy reads version directory names (export, runtime
and serving all use it).
"""

import os

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_SPACE = " \t\n\v\f\r"           # C isspace() in the "C" locale
_DIGITS = frozenset("0123456789")  # C isdigit(): ASCII only (str.isdigit() accepts '²', '١')


def parse_version(name):
    """The int64 version a directory ``name`` stands for, or None when it is not one."""
    if not isinstance(name, str):
        return None
    text = name.strip(_SPACE)
    digits = text[1:] if text.startswith("-") else text
    if not digits or not set(digits) <= _DIGITS:
        return None
    if len(digits.lstrip("0")) > 19:  # int64 has 19 digits; never int() a huge string
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def version_dirs(base_path):
    """``{version: directory path}`` of the version directories under ``base_path``.

    Raises:
        OSError: the base path does not exist or cannot be listed. Callers that poll
            must treat this as "nothing known", never as "no versions".
    """
    names = sorted(os.listdir(base_path))  # raises FileNotFoundError / PermissionError
    found = {}
    for name in names:
        version = parse_version(name)
        if version is None:
            continue
        path = os.path.join(base_path, name)
        if os.path.isdir(path):
            found[version] = path  # sorted names: the last spelling wins (as TF Serving)
    return dict(sorted(found.items()))


def list_versions(base_path):
    """Sorted version numbers under ``base_path``; [] when it is missing or unreadable."""
    try:
        return list(version_dirs(base_path))
    except OSError:
        return []


def latest_version_dir(base_path, has_file=None):
    """``(version, path)`` of the highest version (holding ``has_file`` if given), or None."""
    try:
        found = version_dirs(base_path)
    except OSError:
        return None
    for version in sorted(found, reverse=True):
        path = found[version]
        if has_file is None or os.path.exists(os.path.join(path, has_file)):
            return version, path
    return None
