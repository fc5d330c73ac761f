"""Numeric JSON arrays decoded straight to numpy, so a body's peak memory stays a small
multiple of its size.

``json.loads`` turns each number of a large tensor into a Python float (24 bytes) held
in a list (8 bytes) — 11-14x the body for typical image requests, kept by the allocator
afterwards. Before parsing, ``extract`` cuts every large span that holds only numbers,
commas, brackets and white space out of the raw body and puts a per-request placeholder
string in its place; the small rest is parsed by ``json``. A span is decoded with numpy
(``FastArray.array``) only when its bracket skeleton is exactly that of a rectangular
array; anything else (ragged lists, NaN tokens, a placeholder in an unexpected place)
falls back to ``json`` on that span, so answers and error messages never change.
"""

import json
import os
import re
import warnings

import numpy as np

MIN_BODY = 16 << 10    # smaller bodies take the plain json path
MIN_SPAN = 4 << 10
_SPAN = re.compile(rb"\[[0-9eE.\-,\[\] \t\r\n]*\]")
_BAD_NUMBER = re.compile(rb"(?:^|,)-?0[0-9]|\.(?![0-9])|(?<![0-9])\.|-(?![0-9.])|,,|^,|,$")
_NUMBERS_ONLY = bytes.maketrans(b"", b"")


class FastArray:
    """A numeric JSON array kept as its raw bytes until a dtype asks for it."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    def load(self):
        """The value as ``json.loads`` would give it (the exact slow path)."""
        return json.loads(self.raw)

    def array(self):
        """float64 ndarray of a rectangular all-number array, or None (then use ``load``)."""
        raw = self.raw
        skeleton = raw.translate(_NUMBERS_ONLY, b"0123456789eE.- \t\r\n")
        shape = _shape(skeleton)
        if shape is None or _expected(shape) != skeleton:
            return None
        del skeleton
        numbers = raw.translate(_NUMBERS_ONLY, b"[] \t\r\n")
        count = int(np.prod(shape))
        if not numbers or _BAD_NUMBER.search(numbers):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error")     # a token numpy cannot read to its end
            try:
                flat = np.fromstring(numbers, dtype=np.float64, sep=",")
            except (ValueError, DeprecationWarning):
                return None
        if flat.size != count:
            return None
        return flat.reshape(shape)


def _shape(skeleton):
    """Dimensions read along the first element at each depth (checked by the caller)."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if depth == 0 or depth > 32:
        return None
    sk = np.frombuffer(skeleton, np.uint8)
    level = np.cumsum((sk == ord("[")).astype(np.int8) - (sk == ord("]")).astype(np.int8),
                      dtype=np.int16)
    comma = sk == ord(",")
    shape = []
    for k in range(depth):
        start = k                                   # the k-th leading '['
        closes = np.flatnonzero(level[start:] == k)
        if closes.size == 0:
            return None
        end = start + int(closes[0])
        if k == depth - 1 and end == start + 1:
            shape.append(1)   # "[]" in the skeleton: one number (empty arrays go to json)
            continue
        shape.append(int(np.count_nonzero(comma[start:end] & (level[start:end] == k + 1))) + 1)
    return tuple(shape)


def _expected(shape):
    inner = b"[" + b"," * (shape[-1] - 1) + b"]" if shape[-1] else b"[]"
    for n in reversed(shape[:-1]):
        inner = b"[" + b",".join([inner] * n) + b"]"
    return inner


def extract(raw):
    """``(text_without_big_arrays, {placeholder: FastArray})``; ``({}, raw)`` if not worth it."""
    if len(raw) < MIN_BODY:
        return raw, {}
    token = os.urandom(8).hex()
    spans, pieces, last = {}, [], 0
    for m in _SPAN.finditer(raw):
        span = raw[m.start():m.end()]
        if len(span) < MIN_SPAN or span.count(b"[") != span.count(b"]"):
            continue
        key = f"\x00tfdeploy:{token}:{len(spans)}"
        spans[key] = FastArray(span)
        pieces.append(raw[last:m.start()])
        pieces.append(json.dumps(key).encode())
        last = m.end()
    if not spans:
        return raw, {}
    pieces.append(raw[last:])
    return b"".join(pieces), spans


class Body(dict):
    """A parsed request body that holds FastArray values (``restore`` makes it); any other
    dict holds plain JSON values only, so nothing needs ``load_all``."""


def holds_fast_arrays(body):
    return isinstance(body, Body)


def restore(value, spans):
    """Swap placeholders in the parsed body for their FastArray (small structure walk)."""
    return Body(_restore(value, spans))


def _restore(value, spans):
    if isinstance(value, str):
        return spans.get(value, value) if value.startswith("\x00tfdeploy:") else value
    if isinstance(value, list):
        return [_restore(v, spans) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v, spans) for k, v in value.items()}
    return value


def load_all(value):
    """``value`` with every FastArray replaced by its plain JSON value."""
    if isinstance(value, FastArray):
        return value.load()
    if isinstance(value, list):
        return [load_all(v) for v in value]
    if isinstance(value, dict):
        return {k: load_all(v) for k, v in value.items()}
    return value
