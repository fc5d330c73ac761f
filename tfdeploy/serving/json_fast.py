"""Numeric JSON arrays decoded straight to numpy, so a body's peak memory stays a small
multiple of its size, and fast: for a 32x32x1 image (9 KB of JSON) this takes ~0.1 ms where
``orjson.loads`` + ``np.array`` on the nested lists take ~0.3 ms.

``json.loads`` turns each number of a large tensor into a Python float (24 bytes) held
in a list (8 bytes) — 11-14x the body for typical image requests, kept by the allocator
afterwards. Before parsing, ``extract`` cuts every large array that holds only numbers,
commas, brackets and white space out of the raw body (outside strings, the outermost such
arrays: each span is exactly one JSON array value, wherever it sits) and puts a per-request
placeholder string in its place; the small rest is parsed by ``json``. A span is decoded into one
numpy array (``FastArray.array``) only when it is exactly a rectangular array of JSON
numbers; anything else (ragged lists, NaN tokens, a misplaced number, a placeholder in an
unexpected place) falls back to ``json`` on that span, so answers and error messages never
change.

Two implementations decode a span, with the same answers:

- ``_numjson``, a small C extension (``setup.py`` builds it when a C compiler is there): the
  span finder decodes each outermost array of a run of numeric bytes as it finds it (float32),
  in one pass that checks the grammar, reads the shape and writes the numbers, the
  interpreter lock released (another dtype decodes the span again, in its own pass). Each
  number is the correctly rounded double of its text (a loop-free path for short numbers;
  Clinger's fast path; Eisel-Lemire up to 19 digits; anything else glibc's ``strtod_l``),
  then cast to the tensor's dtype, as ``json.loads`` followed by ``np.asarray(..., dtype)``
  gives it. On a CPU with AVX-512 a span of short numbers ("123.0", "-0.5": up to 8 digits)
  is cut into number tokens 64 bytes at a time and parsed 8 at a time (``_numjson.fast()``;
  the same answers, anything else left to the scan): a 1 MB image body (MobileNet's
  224x224x3 of "123.0") takes ~1.4 ms where the scan takes ~2.4-2.5 ms on a machine at load 5-6
  (``benchmarks/bench_json_decode.py``), more than 10x the orjson path below.
- without it, the numbers' skeleton is checked in Python and orjson reads them a chunk at
  a time.
"""

import json
import os
import re

import numpy as np
import orjson

from tfdeploy.serving.status import invalid

try:
    import tfdeploy.serving._numjson as _numjson   # (C: imports nothing of ours)
except ImportError:   # (built by setup.py when a C compiler is there; optional)
    _numjson = None

MIN_BODY = 2 << 10     # smaller bodies take the plain json path
MIN_SPAN = 1 << 10
_CHUNK = 8 << 10       # bytes of numbers per orjson call (bounds the transient floats)

# rapidjson's wording (GetParseError_En) for the parse errors Python's decoder reports.
_RAPIDJSON = {"Expecting value": "Invalid value.",
              "Expecting property name enclosed in double quotes":
                  "Missing a name for object member.",
              "Expecting ':' delimiter": "Missing a colon after a name of object member.",
              "Unterminated string starting at": "Missing a closing quotation mark in string.",
              "Invalid \\escape": "Invalid escape character in string.",
              "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
              "Invalid control character at": "Invalid encoding in string."}


def rapidjson_wording(msg):
    """TF Serving's (rapidjson's) words for a ``json.JSONDecodeError`` message."""
    return next((v for k, v in _RAPIDJSON.items() if msg.startswith(k)), msg)


def stdlib_loads(text, offset=0, stop_when_done=False):
    """``json.loads(text)``; its errors as INVALID_ARGUMENT in TF Serving's (rapidjson's)
    words, positions counted from ``offset`` (where ``text`` starts in the body).
    ``stop_when_done``: content after the first JSON value is ignored, as TF Serving's
    parser does with a whole body (rapidjson's kParseStopWhenDoneFlag)."""
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if not stop_when_done or exc.msg != "Extra data":
                raise
            return json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))[0]
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise invalid("JSON Parse error: The document is empty") from None
        raise invalid(f"JSON Parse error: {rapidjson_wording(exc.msg)} at offset: "
                      f"{offset + exc.pos}") from None
    except RecursionError:
        raise invalid("JSON Parse error: the document is nested too deeply") from None
    except ValueError as exc:   # e.g. an integer past Python's digit limit
        raise invalid(f"JSON Parse error: {str(exc)[:200]}") from None


# A JSON string (skipped: its bytes are never a span) or a maximal run of the bytes a
# numeric array is made of (with "+": json.dumps writes 1e16 and up as "1e+16").
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[0-9eE.+\-,\[\] \t\r\n]++', re.S)
_BRACKET = re.compile(rb"[\[\]]")
_COLON_NEXT = re.compile(rb"[ \t\r\n]*:")
_NUMBERS_ONLY = bytes.maketrans(b"", b"")
# Number bytes as "x", for the check that no number touches the outside of a bracket.
_TOKENS_AS_X = bytes.maketrans(b"0123456789eE.-+", b"x" * 15)
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


class FastArray:
    """A numeric JSON array kept as its raw bytes until a dtype asks for it."""

    __slots__ = ("_data", "offset", "decoded")

    def __init__(self, raw, offset=0, decoded=None):
        # raw: bytes, or a memoryview of the body's span (no copy of a large span: bytes are
        # made only when a slow path reads them)
        self._data, self.offset = raw, offset   # offset: where the span starts in the body
        # (float32 bytearray, shape): the C span finder's decode of ``raw``, used once
        self.decoded = decoded

    @property
    def raw(self):
        """The span's bytes."""
        data = self._data
        if type(data) is memoryview:
            data = self._data = data.tobytes()
        return data

    def load(self):
        """The value as ``json.loads`` would give it (the exact slow path); a span ``json``
        refuses is INVALID_ARGUMENT, worded as the plain path words it for the whole body."""
        return stdlib_loads(self.raw, self.offset)

    def array(self, check_shape=None, dtype=np.float64):
        """ndarray (``dtype``: a float dtype) of a rectangular all-number array, or None
        (then use ``load``).

        ``check_shape(shape)`` is called with the array's shape before it is returned (and
        with the shape its brackets describe before it is handed to ``json``), so a wrong
        shape is refused with the signature's words either way.
        """
        dtype = np.dtype(dtype)
        decoded, self.decoded = self.decoded, None
        if _numjson is not None:
            target = dtype if dtype in _FLOATS else _FLOATS[0]
            # one pass: shape and numbers (done already, in float32, by the span finder)
            got = decoded if decoded is not None and dtype == _FLOATS[1] else \
                _numjson.decode(self._data, target.itemsize)
            if got is not None and got is not False:
                buffer, shape = got
                if check_shape is not None:
                    check_shape(shape)
                return np.frombuffer(buffer, target).reshape(shape).astype(dtype, copy=False)
            # Not such an array (None), or an integer of 2**63 or more (False): a wrong
            # shape the brackets describe is still refused first, as it is on success.
            shape = _numjson.shape(self._data)
            if shape is None:
                return None
            if check_shape is not None:
                check_shape(shape)
            if got is None:
                return None
            # (the Python path decides those integers, as without the extension)
        array = self._python_array(check_shape)
        if array is None:
            return None
        with np.errstate(over="ignore"):   # past float32's range is +-inf, as in TF Serving
            return array.astype(dtype, copy=False)

    def _python_array(self, check_shape):
        raw = self.raw
        skeleton = raw.translate(_NUMBERS_ONLY, b"0123456789eE.-+ \t\r\n")
        shape = _shape(skeleton)
        if shape is None or _expected(shape) != skeleton:
            return None
        del skeleton
        # The skeleton is right; a number must also sit inside its innermost brackets
        # ("[[1,2]3,[4,5]]" and "[[1,]2,[3,4]]" have the skeleton of [[1,2],[3,4]]).
        marks = raw.translate(_TOKENS_AS_X, b" \t\r\n")
        if b"]x" in marks or b"x[" in marks:
            return None
        del marks
        if check_shape is not None:
            check_shape(shape)
        # The numbers, white space kept ("1 2" stays invalid): orjson reads them a chunk at
        # a time (strict JSON numbers: "01", "1.", ".5", "-" and empty items are refused,
        # as json refuses them), so the transient Python floats stay a bounded size.
        numbers = raw.translate(_NUMBERS_ONLY, b"[]")
        count, size = int(np.prod(shape)), len(numbers)
        out = np.empty(count, np.float64)
        filled = pos = 0
        while pos < size:
            end = numbers.find(b",", pos + _CHUNK)
            end = size if end < 0 else end
            try:
                part = orjson.loads(b"[%b]" % numbers[pos:end])
            except orjson.JSONDecodeError:
                return None
            if filled + len(part) > count:
                return None
            try:
                out[filled:filled + len(part)] = part
            except (TypeError, ValueError, OverflowError):
                return None
            filled += len(part)
            pos = end + 1
        if filled != count:
            return None
        return out.reshape(shape)


def _shape(skeleton):
    """Dimensions of the array whose bracket-and-comma skeleton this is, read from the
    first element at each depth (the caller compares the whole skeleton with them)."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if depth == 0 or depth > 32:
        return None
    shape, child = [], 0          # child: length of one element of the level below
    for j in range(depth):        # innermost level first; its first element starts at index
        level = depth - 1 - j     # `level` and ends at the first run of j + 1 "]"
        end = skeleton.find(b"]" * (j + 1))
        if end < 0:
            return None
        length = end + j + 1 - level           # = n * (child + 1) + 1
        n, rest = divmod(length - 1, child + 1)
        if rest or n < 1:
            return None
        shape.append(n)    # ("[]" innermost reads as one number: the count check decides)
        child = length
    return tuple(reversed(shape))


def _expected(shape):
    inner = b"[" + b"," * (shape[-1] - 1) + b"]" if shape[-1] else b"[]"
    for n in reversed(shape[:-1]):
        inner = b"[" + b",".join([inner] * n) + b"]"
    return inner


def _spans(raw):
    """``(start, end, decoded)`` of every span of at least ``MIN_SPAN`` bytes: an array, outside
    strings, that holds only numbers, commas, brackets and white space, outermost in its run
    of such bytes (so each is exactly one JSON array value as ``json`` tokenizes the body);
    ``decoded``: the C finder's ``(float32 bytearray, shape)`` of a span that is a rectangular
    array of numbers (it decodes the arrays a run holds as it finds them, which spares a second
    pass over them), else None."""
    if _numjson is not None:
        return _numjson.spans(raw, MIN_SPAN, True)
    return [(start, end, None) for start, end in python_spans(raw, MIN_SPAN)]


def python_spans(raw, min_span):
    """``_numjson.spans(raw, min_span)`` in Python (the same spans)."""
    out = []
    for m in _TOKEN.finditer(raw):
        if raw[m.start()] == 0x22:   # '"'
            continue
        first = raw.find(b"[", m.start(), m.end())
        last = raw.rfind(b"]", m.start(), m.end())
        if first < 0 or last + 1 - first < max(min_span, 2):
            continue
        # the usual case: the run's first '[' and last ']' are one array (numpy's depths)
        view = np.frombuffer(raw, np.uint8, last + 1 - first, first)
        brackets = view[(view == 0x5B) | (view == 0x5D)]
        depth = np.cumsum((brackets == 0x5B).view(np.int8) * 2 - 1, dtype=np.int32)
        if depth[-1] == 0 and depth[:-1].min(initial=1) >= 1:
            out.append((first, last + 1))
            continue
        stack, run_spans = [], len(out)
        for b in _BRACKET.finditer(raw, first, last + 1):
            q = b.start()
            if raw[q] == 0x5B:
                stack.append(q)
            elif stack:
                start = stack.pop()
                if q + 1 - start >= min_span:
                    while len(out) > run_spans and out[-1][0] > start:
                        out.pop()
                    out.append((start, q + 1))
    return out


def extract(raw):
    """``(text_without_big_arrays, {placeholder: FastArray})``; ``({}, raw)`` if not worth it."""
    if len(raw) < MIN_BODY:
        return raw, {}
    token = os.urandom(8).hex()
    spans, pieces, last, view = {}, [], 0, memoryview(raw)
    for start, end, decoded in _spans(raw):
        if _COLON_NEXT.match(raw, end):   # (a name's place: json refuses it, let it word that)
            continue
        key = f"\x00tfdeploy:{token}:{len(spans)}"
        spans[key] = FastArray(view[start:end], start, decoded)   # (a view: no copy)
        pieces.append(raw[last:start])
        pieces.append(json.dumps(key).encode())
        last = end
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
