"""The REST server's numeric JSON decoder (``json_fast``): the same float32/float64 values as
``json.loads`` followed by ``np.asarray(..., dtype)``, on its C path (``_numjson``) and its
pure-Python path, for every kind of JSON number; anything else is left to ``json``."""

import json
import random
import re
import shutil
import struct
import sysconfig

import numpy as np
import pytest

from tfdeploy.serving import json_fast

IMPLEMENTATIONS = ["python"] + (["c"] if json_fast._numjson is not None else [])
_SPECIAL = ["-0", "-0.0", "0", "0.0", "0e0", "-0e-5", "1e-400", "-1e400", "1E400",
            "2.2250738585072011e-308", "4.9e-324", "2.4703282292062328e-324",
            "9007199254740993", "9007199254740993.0", "9007199254740992.5",
            "1.7976931348623157e308", "1.7976931348623159e308", "123456789012345678",
            "-9223372036854775807", "9223372036854775807", "0.1", "0.30000000000000004",
            "3.4028235e38", "3.4028236e38", "1.00000000000000000000000000000001",
            "7.038531e-26", "1e22", "1e23", "8.98846567431158e307"]


def _number(rng):
    kind = rng.randrange(12)
    sign = rng.choice(["", "-"])
    if kind == 0:
        return str(rng.randrange(-300, 300))
    if kind == 1:
        return repr(rng.uniform(-1, 1))             # 16-17 significant digits
    if kind == 2:                                   # any finite double
        v = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        return repr(v) if np.isfinite(v) else "1e999"
    if kind == 3:                                   # float32 values, as tolist() prints them
        return repr(float(np.float32(rng.uniform(-1e3, 1e3))))
    if kind == 4:                                   # long mantissas, long fractions
        return f"{sign}{rng.randrange(0, 10 ** rng.randrange(1, 25))}." \
               f"{rng.randrange(0, 10 ** rng.randrange(1, 30)):0{rng.randrange(1, 30)}d}"
    if kind == 5:                                   # exponents of every size and sign
        return f"{sign}{rng.randrange(1, 10 ** rng.randrange(1, 20))}{rng.choice('eE')}" \
               f"{rng.choice(['', '-', '+'])}{rng.randrange(0, 400)}"
    if kind == 6:
        return rng.choice(_SPECIAL)
    if kind == 7:                                   # zeros before the first digit
        return "0." + "0" * rng.randrange(0, 40) + str(rng.randrange(1, 10 ** rng.randrange(1, 20)))
    if kind == 8:                                   # image pixels
        return str(rng.randrange(0, 256)) + ".0"
    if kind == 9:                                   # integers up to 2**63
        return str(rng.randrange(0, 2 ** 63)) if rng.random() < 0.5 else \
            f"{sign}{rng.randrange(0, 10 ** rng.randrange(1, 19))}"
    if kind == 10:
        return f"{rng.random() * 10 ** rng.randrange(-30, 30):.{rng.randrange(0, 20)}e}"
    return f"{sign}{rng.randrange(1, 10 ** 8)}.{rng.randrange(0, 10 ** 8):08d}"


def _ws(rng):
    return rng.choice(["", "", "", " ", "\n", "\t ", "\r\n  "])


def _array(rng, shape):
    if len(shape) == 1:
        return "[" + _ws(rng) + ",".join(_ws(rng) + _number(rng) + _ws(rng)
                                         for _ in range(shape[0])) + "]"
    return "[" + _ws(rng) + ("," + _ws(rng)).join(
        _array(rng, shape[1:]) for _ in range(shape[0])) + _ws(rng) + "]"


def _mutate(rng, text):
    """One or two random edits: ragged, misplaced, truncated or malformed arrays."""
    chars = list(text)
    for _ in range(rng.randrange(1, 3)):
        i = rng.randrange(len(chars))
        op = rng.randrange(3)
        if op == 0:
            del chars[i]
        elif op == 1:
            chars.insert(i, rng.choice("[],-.eE0123456789 +"))
        else:
            j = rng.randrange(len(chars))
            chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _reference(text, dtype):
    """What json.loads + np.asarray give, or None when that is no numeric array."""
    try:
        value = json.loads(text)
        array = np.array(value, dtype=np.float64)   # (the correctly rounded doubles)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    if array.ndim == 0 or array.size == 0:
        return None
    with np.errstate(over="ignore"):
        return array.astype(dtype)


def _decode(impl, raw, dtype, monkeypatch):
    with monkeypatch.context() as m:
        if impl == "python":
            m.setattr(json_fast, "_numjson", None)
        return json_fast.FastArray(raw).array(None, dtype)


_BIG_INT = re.compile(r"(?<![\d.eE+-])-?\d{19,}(?![\d.eE])")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_numeric_arrays_decode_to_the_values_json_gives(impl, monkeypatch):
    rng = random.Random(2126)
    checked = refused = 0
    for _ in range(1500):
        shape = tuple(rng.randrange(1, 5) for _ in range(rng.randrange(1, 4)))
        text = _ws(rng) + _array(rng, shape) + _ws(rng)
        if rng.random() < 0.4:
            text = _mutate(rng, text)
        for dtype in (np.float32, np.float64):
            expected = _reference(text, dtype)
            got = _decode(impl, text.encode(), dtype, monkeypatch)
            if got is None:
                # None hands the span to json (same answer, slower): never for a plain
                # numeric array on the C path, unless an integer needs more than 63 bits
                assert expected is None or impl == "python" or _BIG_INT.search(text), text
                refused += expected is None
                continue
            assert expected is not None, f"accepted what json refuses: {text!r}"
            assert got.dtype == dtype and got.shape == expected.shape, text
            assert got.tobytes() == expected.tobytes(), (text, got, expected)
            checked += 1
    assert checked > 1000 and refused > 100, (checked, refused)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("text", [
    "[[1,2]3,[4,5]]",      # a number after an inner array's ']'
    "[[1,]2,[3,4]]",       # an empty item, and a number outside the brackets
    "[[1,2],3[4,5]]",      # a number before an inner array's '['
    "[[1,2],[3,4]]5",      # a number after the array
    "[[1 2],[3,4]]", "[[1,2],[3,4],]", "[[1,2],[3,4]", "[[01,2],[3,4]]", "[[1.,2],[3,4]]",
    "[[.5,2],[3,4]]", "[[1,2],[-,4]]", "[[1e,2],[3,4]]", "[[1,2],[3]]", "[[1,2],[[3],4]]",
    "[[],[]]", "[]", "[[1,2],[3,4]][1]",
])
def test_malformed_arrays_are_left_to_json(impl, text, monkeypatch):
    assert _reference(text, np.float32) is None   # (not JSON, or not a rectangular array)
    assert _decode(impl, text.encode(), np.float32, monkeypatch) is None


def test_pixels_and_float32_values_take_the_exact_fast_path():
    # 0..255 as "N.0", and float32 values printed as Python floats, whatever the spacing
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 16, 16, 3)).astype(np.float32)
    values = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    for array in (pixels, values, values / 7, values * 1e-30):
        for text in (json.dumps(array.tolist()), json.dumps(array.tolist(), indent=1)):
            got = json_fast.FastArray(text.encode()).array(None, np.float32)
            np.testing.assert_array_equal(got, np.asarray(json.loads(text), np.float32))


def test_span_finder_is_the_regex():
    rng = random.Random(7)
    for _ in range(400):
        text = _array(rng, tuple(rng.randrange(1, 4) for _ in range(rng.randrange(1, 4))))
        if rng.random() < 0.5:
            text = _mutate(rng, text)
        raw = ('{"a": ' + text + ', "b": [1, "x"], "c": ' + text + ', "d": "[1]]"}').encode()
        regex = [(m.start(), m.end()) for m in json_fast._SPAN.finditer(raw)
                 if m.end() - m.start() >= 8 and
                 raw[m.start():m.end()].count(b"[") == raw[m.start():m.end()].count(b"]")]
        if json_fast._numjson is not None:
            assert json_fast._numjson.spans(raw, 8) == regex, raw


def test_the_c_decoder_is_built_where_a_compiler_is():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler):
        assert json_fast._numjson is not None, (
            f"{compiler} is installed but tfdeploy.serving._numjson is not built: run "
            "`pip install -e .` or `python setup.py build_ext --inplace` (the REST server "
            "decodes large numeric bodies ~7x slower without it).")
