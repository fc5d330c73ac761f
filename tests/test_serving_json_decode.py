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

from test_serving_support import rest_outcome

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


def _array(rng, shape, number=_number):
    """A JSON array of ``shape`` with ``number(rng)`` numbers and random white space."""
    if len(shape) == 1:
        return "[" + _ws(rng) + ",".join(_ws(rng) + number(rng) + _ws(rng)
                                         for _ in range(shape[0])) + "]"
    return "[" + _ws(rng) + ("," + _ws(rng)).join(
        _array(rng, shape[1:], number) for _ in range(shape[0])) + _ws(rng) + "]"


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


def _reference_spans(raw, min_span=8):
    """The spans as json's tokens read the body, byte by byte: outside strings, in each run of
    number/comma/bracket/white-space bytes, the outermost arrays that open and close in it."""
    out, p, n, cls = [], 0, len(raw), set(b"0123456789eE.+-,[] \t\r\n")
    while p < n:
        if raw[p] == 0x22:   # a string: to its closing quote (not one escaped)
            p += 1
            while p < n and raw[p] != 0x22:
                p += 2 if raw[p] == 0x5C else 1
            p += 1
            continue
        if raw[p] not in cls:
            p += 1
            continue
        stack, run_spans = [], len(out)
        while p < n and raw[p] in cls:
            if raw[p] == 0x5B:
                stack.append(p)
            elif raw[p] == 0x5D and stack:
                start = stack.pop()
                if p + 1 - start >= max(min_span, 2):
                    while len(out) > run_spans and out[-1][0] > start:
                        out.pop()
                    out.append((start, p + 1))
            p += 1
    return out


def _check_spans(body, min_span=8):
    expected = _reference_spans(body, min_span)
    assert json_fast.python_spans(body, min_span) == expected, body
    if json_fast._numjson is None:
        return
    assert json_fast._numjson.spans(body, min_span) == expected, body
    found = json_fast._numjson.spans(body, min_span, True)
    assert [(a, b) for a, b, _ in found] == expected, body
    for a, b, decoded in found:   # (decoded as found: as decode gives the span alone)
        alone = json_fast._numjson.decode(body[a:b], 4)
        if decoded is not None:
            assert isinstance(alone, tuple) and decoded[1] == alone[1] and \
                bytes(decoded[0]) == bytes(alone[0]), body[a:b]


def test_spans_are_exactly_the_array_values():
    """Every span the finders cut out is one whole JSON array outside strings (C, Python and a
    byte-by-byte reference agree): arrays side by side in a list after an object, a string or
    a literal, arrays in strings, ragged and broken arrays, bytes next to the class's ranges."""
    rng = random.Random(7)
    for _ in range(400):
        text = _array(rng, tuple(rng.randrange(1, 4) for _ in range(rng.randrange(1, 4))))
        if rng.random() < 0.5:
            text = _mutate(rng, text)
        raw = ('{"a": ' + text + ', "b": [1, "x"], "c": ' + text + ', "d": "[1]]"}').encode()
        for body in (raw, ("[" + text + ", " + text + "]").encode(),
                     ('{"x": [{"y": 1}, ' + text + ", " + text + ', "z"]}').encode(),
                     ('{"x": ["s", ' + text + ", " + text + ", null, " + text + "]}").encode(),
                     ('{"x": [[true, ' + text + "], " + text + "], " + text + "]}").encode(),
                     ('{"s": "' + text + '", "t": "\\"' + text + '\\\\", "u": ' + text
                      + "}").encode()):
            _check_spans(body)
        # a request body's array is decoded as it is found, or decoded alone (same values)
        if json_fast._numjson is not None and \
                isinstance(json_fast._numjson.decode(text.encode(), 4), tuple) and \
                len(text.strip()) >= 8:
            body = ('{"instances": ' + text + "}" + " " * 16).encode()
            (a, b, decoded), = json_fast._numjson.spans(body, 8, True) or [(0, 0, None)]
            lead = len(text) - len(text.lstrip())
            assert decoded is not None and (a, b) == (14 + lead, 14 + len(text.rstrip())), body
        # a byte next to the class's ranges, inside the first array, ends the run there
        for byte in b"/*)(:;<>{}_YZ\x0b\x0c\x1f!#@\\^`|~\x7f\x80\xff\x8e\x8f\xab\xac\xc5\xe5\"":
            at = rng.randrange(6, 6 + len(text))
            _check_spans(raw[:at] + bytes([byte]) + raw[at:])


def _random_value(rng, depth):
    """Any JSON value: big numeric arrays (rows of them side by side), objects, strings with
    array-like text and escaped quotes, literals, small arrays."""
    roll = rng.random()
    if depth > 3 or roll < 0.2:
        return rng.choice([None, True, False, rng.randrange(-9, 9), rng.random(),
                           "[1, 2]", 'a "[3, 4.5]" b', "\\", "x]\\\"[", "[" + "7, " * 300 + "7]",
                           "", "é[1]"])
    if roll < 0.55:   # a big numeric array (1-3 dimensions)
        shape = tuple(rng.randrange(1, 4) for _ in range(rng.randrange(0, 3))) + \
            (rng.randrange(100, 400),)
        numbers = np.asarray([float(_number(rng)) if rng.random() < 0.3 else rng.randrange(256)
                             for _ in range(int(np.prod(shape)))])
        if rng.random() < 0.9:   # (an Infinity token, json's and TF Serving's, ends a span)
            numbers[~np.isfinite(numbers)] = 0.5
        return numbers.reshape(shape).tolist()
    if roll < 0.85:   # (rows side by side: the same big array repeated)
        items = [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
        return [v for v in items for _ in range(rng.choice([1, 1, 2, 3]))]
    return {rng.choice(["a", "b[1,2]", "c\"", "data"]) + str(k): _random_value(rng, depth + 1)
            for k in range(rng.randrange(0, 4))}


def _random_body(rng):
    value = _random_value(rng, 1)
    while not isinstance(value, list):
        value = _random_value(rng, 1)
    kind = rng.randrange(5)
    if kind == 0:
        body = {"instances": value}
    elif kind == 1:
        body = {"inputs": value}
    elif kind == 2:
        body = {"inputs": {"x": value, "y": _random_value(rng, 2)}}
    elif kind == 3:
        body = {"instances": [{"x": value}, {"x": _random_value(rng, 2)}]}
    else:   # the V2 protocol
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": value},
                           {"name": "y", "shape": [1], "datatype": "FP32",
                            "data": _random_value(rng, 2)}]}
    text = json.dumps(body, indent=rng.choice([None, None, 1]),
                      separators=rng.choice([None, (",", ":")]), ensure_ascii=rng.random() < .5)
    return text + " " * max(0, json_fast.MIN_BODY + 1 - len(text.encode()))


def _fast_path_value(raw):
    """The body as the fast path reads it: spans cut out, the rest parsed, placeholders put
    back and every FastArray loaded (its array() checked against json on the way)."""
    text, spans = json_fast.extract(raw)
    for fast in spans.values():
        value = json.loads(fast.raw)
        assert isinstance(value, list), fast.raw[:80]   # (one whole array value)
        for dtype in (np.float32, np.float64):
            array = json_fast.FastArray(fast.raw, fast.offset).array(None, dtype)
            if array is not None:
                with np.errstate(over="ignore"):
                    np.testing.assert_array_equal(
                        array, np.asarray(value, np.float64).astype(dtype))
    return json_fast.load_all(json_fast.restore(json.loads(text), spans))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_random_valid_bodies_decode_as_json_loads_and_answer_as_the_plain_path(
        impl, monkeypatch):
    """Valid bodies of every shape (numeric arrays side by side after objects, strings and
    literals, at any depth, in instances, inputs and V2 data): the fast path gives json.loads's
    value, and the REST handler gives the plain json path's answer (tensors or error)."""
    import tensorflow as tf

    rng = random.Random(1418)
    if impl == "python":
        monkeypatch.setattr(json_fast, "_numjson", None)
    cut = 0
    for trial in range(300 if impl == "c" else 120):
        text = _random_body(rng)
        raw = text.encode()
        assert _fast_path_value(raw) == json.loads(text), text[:300]
        cut += len(json_fast.extract(raw)[1])
        dtypes = {"x": tf.float32} if trial % 2 else {"x": tf.float64, "y": tf.float32}
        got = rest_outcome(text, dtypes)
        with monkeypatch.context() as m:
            m.setattr(json_fast, "MIN_BODY", 1 << 62)
            plain = rest_outcome(text, dtypes)
        assert got == plain, (text[:300], got if got[0] != "row" else "tensors", plain)
    assert cut > trial, cut   # (the fast path did cut arrays out)


def test_a_span_in_a_names_place_is_left_to_json():
    """``{[1, ...]: 1}`` is no JSON: the array is not cut out (a placeholder string there
    would make a valid name), so json's error is the answer."""
    row = "[" + ", ".join(["1.5"] * 1000) + "]"
    text = '{"instances": [1], "a": 2, ' + row + ': 1}'
    with pytest.raises(Exception, match="Missing a name for object member"):
        json_fast.stdlib_loads(text)
    from tfdeploy.serving.rest import RestApi
    from tfdeploy.serving.status import ServingError

    with pytest.raises(ServingError, match="Missing a name for object member. at offset: 27"):
        RestApi._parse_body(text.encode())


def test_the_c_decoder_is_built_where_a_compiler_is():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler):
        assert json_fast._numjson is not None, (
            f"{compiler} is installed but tfdeploy.serving._numjson is not built: run "
            "`pip install -e .` or `python setup.py build_ext --inplace` (the REST server "
            "decodes large numeric bodies ~7x slower without it).")


# -- whole request bodies, the C decoder against json -------------------------------------
_EDGE_VALID = ["-0.0", "-0", "0", "0.0", "1e308", "-1e308", "5e-324", "-5e-324", "1e-400",
               "4.9406564584124654e-324", "2.2250738585072014e-308", "1.7976931348623157e308",
               "0.30000000000000004", "0.1", "0.2", "123.456e-7", "1e+5", "1E-5", "2.5E+3",
               "9007199254740993.0", "9007199254740993e0", "12345678901234567890123.5",
               "0.000000000000000000000001", "1" * 25 + ".5", "9" * 19 + "e-19",
               "0." + "9" * 30, "-" + "1" * 21 + "e-300", "100000000000000000000000",
               "3.4028235677973366e38", "1.401298464324817e-45", "0.0000001", "1.0e-7",
               "123.0", "255.0", "-128.0", "0.5", "-0.5", "1e22", "1e23", "8.5e-8"]
# Not JSON numbers (json refuses them, or reads them as something else: NaN and Infinity
# are Python's extensions): the fast path must leave the span to json.
_EDGE_INVALID = ["01", "-01", "00.5", "1.", "-1.", ".5", "-.5", "1e", "1e+", "1E-", "-",
                 "+1", "--1", "1.e5", "0x10", "1.5.5", "NaN", "Infinity", "-Infinity",
                 "1_0", "1,", "", "1 2", "1e5.5", "tru", "\"1\""]


def _body_number(rng):
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(_EDGE_VALID)
    if roll < 0.10:   # 20+ digit mantissas, anywhere in the range
        return f"{rng.choice(['', '-'])}{rng.randrange(10 ** 19, 10 ** rng.randrange(20, 40))}" \
               f"e{rng.randrange(-340, 300)}"
    return _number(rng)


def _request(rng, kind, shape):
    """A ``{"instances": ...}`` body of ``shape``, its numbers of ``kind``."""
    if kind == "pixels":   # np.float32 pixels' tolist(), as clients send them
        value = np.asarray([rng.randrange(256) for _ in range(int(np.prod(shape)))],
                           np.float32).reshape(shape)
        return json.dumps({"instances": value.tolist()})
    if kind == "ints":
        value = [rng.randrange(-300, 300) for _ in range(int(np.prod(shape)))]
        return json.dumps({"instances": np.asarray(value).reshape(shape).tolist()})
    if kind in ("unit64", "unit32"):   # (x / 255).tolist(): 16-17 significant digits
        value = np.asarray([rng.randrange(256) for _ in range(int(np.prod(shape)))]) / 255
        value = value.astype(np.float32) if kind == "unit32" else value
        return json.dumps({"instances": value.reshape(shape).tolist()})
    # "mixed": every kind of number, arbitrary white space
    return '{"instances": ' + _ws(rng) + _array(rng, shape, _body_number) + _ws(rng) + "}"


def _break(rng, text):
    """One defect: an invalid token, a ragged row, a stray or missing character."""
    roll = rng.randrange(4)
    numbers = [m for m in re.finditer(r"-?[0-9][0-9.eE+-]*", text)]
    if roll == 0 and numbers:
        m = rng.choice(numbers)
        return text[:m.start()] + rng.choice(_EDGE_INVALID) + text[m.end():]
    if roll == 1:   # a ragged innermost row
        at = text.find("]", len(text) // 2)
        return text[:at] + ", 1.0" + text[at:] if at > 0 else text
    return _mutate(rng, text)


@pytest.mark.skipif(json_fast._numjson is None, reason="needs the C decoder (see the test below)")
def test_request_bodies_decode_as_json_then_astype_and_fail_as_json(monkeypatch):
    """Thousands of MobileNet-like request bodies (every kind of number clients send, and
    broken ones): the C decoder gives json.loads + np.asarray(float64).astype's bytes, and
    a body it cannot take answers what the plain json path answers (same code and text), and
    what the pure-Python decoder answers (broken bodies too: the code and text of before)."""
    import tensorflow as tf

    rng = random.Random(21)
    dtypes = {tf.float32: {"x": tf.float32}, tf.float64: {"x": tf.float64}}
    checked = {"values": 0, "errors": 0}
    for trial in range(2400):
        kind = ("pixels", "ints", "unit64", "unit32", "mixed", "mixed")[trial % 6]
        shape = (rng.randrange(1, 3), rng.randrange(4, 12), rng.randrange(4, 12), 3)
        text = _request(rng, kind, shape)
        broken = rng.random() < 0.3
        if broken:
            text = _break(rng, text)
        if len(text) <= json_fast.MIN_BODY:
            text += " " * (json_fast.MIN_BODY + 1 - len(text))   # (the fast path's minimum)
        for tf_dtype in (tf.float32, tf.float64) if trial % 4 == 0 else (tf.float32,):
            got = rest_outcome(text, dtypes[tf_dtype])
            try:
                value = json.loads(text)["instances"]
                reference = np.asarray(value, np.float64)
            except (ValueError, TypeError, KeyError, OverflowError):
                reference = None
            # (the handler refuses some arrays numpy reads, e.g. integers past 2**63: the
            # plain path below decides those)
            if reference is not None and got[0] == "row":
                with np.errstate(over="ignore"):
                    expected = reference.astype(tf_dtype.as_numpy_dtype)
                (dtype, shape_got, data), = got[1].values()
                assert (dtype, shape_got) == (expected.dtype, expected.shape), text[:200]
                assert data == expected.tobytes(), text[:200]
                checked["values"] += 1
            if reference is not None:   # valid JSON: the plain json path's answer
                with monkeypatch.context() as m:
                    m.setattr(json_fast, "MIN_BODY", 1 << 62)
                    plain = rest_outcome(text, dtypes[tf_dtype])
                assert got == plain, (text[:200], got if got[0] != "row" else "tensors", plain)
            with monkeypatch.context() as m:   # any body: the pure-Python decoder's answer
                m.setattr(json_fast, "_numjson", None)
                python = rest_outcome(text, dtypes[tf_dtype])
            assert got == python, (text[:200], got if got[0] != "row" else "tensors", python)
            checked["errors"] += got[0] != "row"
    assert checked["values"] > 1500 and checked["errors"] > 300, checked


def _pow10_table():
    """10**e's 128-bit mantissa rounded down, e in [-348, 347], as _numjson.c's POW10_128."""
    rows = []
    for e in range(-348, 348):
        if e >= 0:
            m = 10 ** e
            m = m >> (m.bit_length() - 128) if m.bit_length() > 128 else m << (128 - m.bit_length())
        else:
            k = (10 ** -e).bit_length() + 127
            m = (1 << k) // 10 ** -e
            m = m if m.bit_length() == 128 else (1 << (k + 1)) // 10 ** -e
        rows.append((m >> 64, m & (2 ** 64 - 1)))
    return rows


def test_the_c_decoders_power_of_ten_table_is_exact():
    import pathlib

    source = (pathlib.Path(json_fast.__file__).parent / "_numjson.c").read_text()
    table = source[source.index("POW10_128[696][2] = {"):]
    table = table[:table.index("};")]
    found = [(int(h, 16), int(lo, 16)) for h, lo in
             re.findall(r"\{0x([0-9A-F]{16})ULL, 0x([0-9A-F]{16})ULL\}", table)]
    assert found == _pow10_table()


@pytest.mark.skipif(json_fast._numjson is None, reason="needs the C decoder")
def test_hard_numbers_round_as_float_does():
    """Long mantissas and near half-way decimals (where a 128-bit product cannot decide and
    the decoder must fall back), next to random doubles and floats: the correctly rounded
    double of each, then float32, as json.loads + astype."""
    from decimal import Decimal, getcontext

    getcontext().prec = 800
    rng = random.Random(5)
    texts = []
    for _ in range(6000):
        bits = rng.getrandbits(64) & ~(1 << 63)
        x = struct.unpack("d", struct.pack("Q", bits))[0]
        if not np.isfinite(x) or x == 0:
            continue
        up = float(np.nextafter(x, np.inf))
        if not np.isfinite(up):
            continue
        mid = (Decimal(x) + Decimal(up)) / 2   # the exact half-way point between two doubles
        digits = rng.randrange(16, 26)
        exact = format(mid, f".{digits}e")     # rounded to 17-26 significant digits
        mantissa, exponent = exact.split("e")
        last = int(mantissa.replace(".", "")[-1])
        nudged = mantissa[:-1] + str((last + rng.choice([1, 9])) % 10)
        with np.errstate(over="ignore"):
            single = float(np.float32(x))
        texts += [repr(x), exact, nudged + "e" + exponent,
                  repr(single) if np.isfinite(single) else "1.5",
                  f"{rng.randrange(10 ** 18, 10 ** 19)}e{rng.randrange(-330, 300)}",
                  f"0.{rng.randrange(10 ** 16, 10 ** 17)}",
                  repr(rng.randrange(256) / 255), repr(float(np.float32(rng.random())))]
    texts = [t.replace("e+", "e") if rng.random() < 0.5 else t for t in texts]
    raw = ("[" + ", ".join(texts) + "]").encode()
    expected = np.asarray(json.loads(raw), np.float64)
    for dtype, same_bits in ((np.float64, np.uint64), (np.float32, np.uint32)):
        with np.errstate(over="ignore"):
            want = expected.astype(dtype)
        got = json_fast.FastArray(raw).array(None, dtype)
        wrong = np.flatnonzero(got.view(same_bits) != want.view(same_bits))
        assert not len(wrong), [(texts[i], got[i], want[i]) for i in wrong[:5]]


def test_arrays_side_by_side_after_an_object_are_two_values():
    """The body that once answered 400 'Extra data at offset: 1418': a list holding an object,
    two 1 KiB+ numeric rows and a string (the span covered "[..], [..]")."""
    from tfdeploy.serving.rest import RestApi

    row = json.dumps([i * 0.25 for i in range(300)])
    for text in ('{"inputs": {"x": [{"a": 1}, ' + row + ", " + row + ', "z"]}}',
                 '{"instances": ["s", ' + row + ", " + row + ", null, " + row + "]}",
                 '{"inputs": [{"name": "x", "data": [true, [' + row + ", " + row + "]]}]}"):
        body = RestApi._parse_body(text.encode())
        assert json_fast.holds_fast_arrays(body)   # (the fast path took it)
        assert json_fast.load_all(body) == json.loads(text)
