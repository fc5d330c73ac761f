"""The C decoder's AVX-512 token path (``_numjson.fast``): on a CPU with AVX-512 it decodes the
numeric arrays of REST bodies, and every answer (numbers, shape, where the array stops, or
"not such an array") is the sequential scan's, which is ``json.loads`` + ``astype``.

Bodies are mostly short numbers ("123.0", "-0.5", up to 8 digits: the 8-at-a-time parse) with
the numbers at its edges mixed in (8 digits, 2**24 and 2**53 neighbours, float32 half-way
cases, -0, long mantissas, exponents, subnormals), and broken tokens or brackets placed after
many good rows (the path must give up exactly where the scan would)."""

import json
import random
import re

import numpy as np
import pytest

from tfdeploy.serving import json_fast

_numjson = json_fast._numjson
pytestmark = pytest.mark.skipif(_numjson is None, reason="needs the C decoder")


def _cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            flags = re.search(r"^flags\s*:(.*)$", f.read(), re.M).group(1).split()
    except (OSError, AttributeError):
        return None
    return all(f in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512cd", "avx512vl"))


@pytest.fixture
def both_paths():
    """run(fn, *args): fn (decode, spans) on the token path and on the sequential scan:
    (fast, scan); ``run.took``: how many arrays the token path decided itself (last call)."""
    was = _numjson.fast()

    def run(fn, *args):
        _numjson.fast(True)
        before = _numjson.fast_answers()
        fast = fn(*args)
        run.took = _numjson.fast_answers() - before
        _numjson.fast(False)
        scan = fn(*args)
        _numjson.fast(was)
        return fast, scan
    yield run
    _numjson.fast(was)


# Short numbers (the vector parse's form) and the numbers at and past its edges.
_SHORT_EDGES = ["0", "-0", "0.0", "-0.0", "1", "-1", "9", "12345678", "-12345678", "99999999",
                "10000000", "1234567.8", "0.1234567", "-0.0000001", "9.999999", "16777216",
                "16777217", "16777218", "16777219", "33554431", "33554433", "0.1", "0.2",
                "0.3", "0.7", "255.0", "127.5", "-127.5", "1.5", "2.5", "0.5", "0.25",
                "3.1415927", "1.0000001", "8388608.5", "8388609.5", "4194304.25", "1.1754944",
                "0.0000001", "1.0e-7"]
_PAST_EDGES = ["123456789", "-123456789", "0.12345678", "12345678.9", "9007199254740992",
               "9007199254740993", "9007199254740993.0", "9007199254740995", "-9007199254740993",
               "18446744073709551616", "9223372036854775807", "9223372036854775808",
               "1e5", "1E5", "1e+5", "-1e-5", "1.5e300", "1e400", "-1e400", "4.9e-324",
               "2.2250738585072011e-308", "1.401298464324817e-45", "7.006492321624085e-46",
               "1.1754942106924411e-38", "3.4028235677973366e38", "3.4028236e38",
               "0.30000000000000004", "0.1000000000000000055511151231257827",
               "123456789012345678901234567890", "1.00000005960464477539062500001",
               "1.000000059604644775390625", "16777217.000000000001", "0.000000000000001"]
_BROKEN = ["01", "-01", "00.5", "1.", ".5", "1..2", "1.2.3", "--1", "+1", "-", "1e", "1e+",
           "e5", "1-2", "0x1", "1 2", "NaN", "Infinity", "-Infinity", "1,,2", "[1]", "true",
           "\"1\"", "1]", "1[", "", "1.e5", "1.5.", "12345678."]


def _short(rng):
    """A number of the 8-at-a-time parse's form (now and then one past it)."""
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(256)) + ".0"
    if kind == 1:
        return str(rng.randrange(-10 ** rng.randrange(1, 9) + 1, 10 ** rng.randrange(1, 9)))
    if kind == 2:
        digits = rng.randrange(2, 8)
        point = rng.randrange(1, digits)
        text = str(rng.randrange(10 ** (digits - 1), 10 ** digits))
        return rng.choice(["", "-"]) + text[:point] + "." + text[point:]
    if kind == 3:
        return rng.choice(["", "-"]) + "0." + str(rng.randrange(10 ** 6)).zfill(rng.randrange(1, 7))
    return rng.choice(_SHORT_EDGES)


def _body(shape, numbers, sep=", ", close="], [", indent=None):
    """A rectangular array of the given number texts, as json.dumps writes one (or with other
    separators)."""
    if indent is not None:
        value = np.asarray([float(x) for x in numbers]).reshape(shape).tolist()
        return json.dumps(value, indent=indent)
    it = iter(numbers)

    def level(d):
        if d == len(shape) - 1:
            return "[" + sep.join(next(it) for _ in range(shape[d])) + "]"
        return "[" + close[1:-1].join(level(d + 1) for _ in range(shape[d])) + "]"
    return level(0)


def _expected(text, dtype=np.float32):
    return np.asarray(json.loads(text), np.float64).astype(dtype)


def _is_json(text):
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _check_decodes_as_json(both_paths, text, itemsize=4):
    raw = text.encode()
    fast, scan = both_paths(_numjson.decode, raw, itemsize)
    assert fast == scan, text[:200]
    if fast is None or fast is False:
        return fast
    buffer, shape = fast
    dtype = np.float32 if itemsize == 4 else np.float64
    with np.errstate(over="ignore"):
        expected = _expected(text, dtype)
    got = np.frombuffer(buffer, dtype).reshape(shape)
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes(), text[:200]
    return fast


def test_the_token_path_is_used_where_the_cpu_has_avx512():
    has = _cpu_has_avx512()
    if has is None:
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    was = _numjson.fast()
    try:
        assert was is has
        assert _numjson.fast(True) is has
        assert _numjson.fast() is has   # (never on where the CPU lacks it)
        _numjson.fast(False)
        assert _numjson.fast() is False
    finally:
        _numjson.fast(was)


@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("shape, sep, close", [
    ((1, 28, 28, 3), ", ", "], ["),     # json.dumps: an image
    ((4000,), ", ", "], ["),           # one row
    ((400, 7), ",", "],["),            # rows of 7 and 9: row ends across the groups of 8
    ((300, 9), ", ", "], ["),
    ((250, 8), ",  ", "] ,\t["),       # other white space, the same everywhere
    ((3, 5, 6, 20), ", ", "], ["),
    ((600, 1), ", ", "], ["),          # rows of one number
    ((2, 2, 2, 2, 2, 2, 2, 2, 2, 2), ",", "],["),
])
def test_short_numbers_decode_as_json(both_paths, shape, sep, close, itemsize):
    rng = random.Random(hash((shape, sep, itemsize)) & 0xFFFF)
    count = int(np.prod(shape))
    numbers = [_short(rng) for _ in range(count)]
    assert _check_decodes_as_json(both_paths, _body(shape, numbers, sep, close), itemsize)
    assert both_paths.took == (1 if _cpu_has_avx512() else 0)   # (the token path decided it)


@pytest.mark.parametrize("itemsize", [4, 8])
def test_every_edge_number_decodes_as_json_among_short_ones(both_paths, itemsize):
    rng = random.Random(21)
    for number in _SHORT_EDGES + _PAST_EDGES:
        for place in (0, 5, 7, 8, 9, 15, 16, 17, 400, 799):
            numbers = [_short(rng) for _ in range(800)]
            numbers[place] = number
            for shape in ((800,), (200, 4), (100, 8)):
                text = _body(shape, numbers)
                got = _check_decodes_as_json(both_paths, text, itemsize)
                if re.fullmatch(r"-?[0-9]+", number) and abs(int(number)) >= 2 ** 63:
                    assert got is False   # (integers of 2**63 and more: the Python path)
                else:   # (decided on the token path: a long one by the exact parser)
                    assert got, number
                    assert both_paths.took == (1 if _cpu_has_avx512() else 0), number


def test_float32_halfway_and_subnormal_short_numbers(both_paths):
    # float32 ties at 2**24 and up, and decimals that fall next to one after the double
    values = [2 ** 24 + k for k in range(-4, 9)] + [2 ** 25 + k for k in range(-6, 7)]
    values += [2 ** 23 + k + 0.5 for k in range(-4, 5)] + [2 ** 22 + k + 0.25 for k in range(5)]
    numbers = [repr(float(v)) if not float(v).is_integer() else str(int(v)) for v in values]
    numbers += [f"{float(np.float32(x)):.7g}" for x in np.linspace(-1, 1, 64)]
    numbers += ["0.0000001", "-0.0000001", "0.0000014", "0.0000015"]
    numbers = (numbers * 40)[:2000]
    text = _body((len(numbers),), numbers)
    assert _check_decodes_as_json(both_paths, text)


@pytest.mark.parametrize("broken", _BROKEN)
def test_a_broken_token_after_many_good_rows_is_refused_as_the_scan_refuses_it(both_paths,
                                                                              broken):
    rng = random.Random(7)
    for place in (3, 8, 600, 1799):
        numbers = [_short(rng) for _ in range(1800)]
        numbers[place] = broken
        text = _body((600, 3), numbers)
        got = _check_decodes_as_json(both_paths, text)
        if not _is_json(text):   # (NaN, true, [1]: json reads them; the Python path decides those)
            assert got is None, (broken, place)


@pytest.mark.parametrize("edit", [
    lambda t: t.replace("], [", "], [[", 1),                     # a deeper row
    lambda t: t[:-1],                                            # not closed
    lambda t: t + "]",                                           # closed twice
    lambda t: t + " 1",                                          # something after it
    lambda t: t.replace("], [", "], ", 1),                       # a number outside a row
    lambda t: t.replace("], [", ", ", 1),                        # two rows as one
    lambda t: t.replace(", ", "], [", 1),                        # a row cut in two
    lambda t: t.replace("], [", "] [", 1),                       # no comma
    lambda t: t.replace(", ", " ", 1),                           # no comma between numbers
    lambda t: t.replace(", ", ",, ", 1),
    lambda t: t.replace("], [", "],, [", 1),
    lambda t: t.replace("], [", "], [], [", 1),                  # an empty row
])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_broken_structure_is_refused_as_the_scan_refuses_it(both_paths, edit, where):
    rng = random.Random(11)
    numbers = [_short(rng) for _ in range(3000)]
    text = _body((1000, 3), numbers)
    # the edit's first match after the cut (the start: the first rows, before any template)
    cut = {"start": 0, "middle": len(text) // 2, "end": len(text) - 40}[where]
    edited = text[:cut] + edit(text[cut:])
    got = _check_decodes_as_json(both_paths, edited)
    if not _is_json(edited):   # (a ragged body is valid JSON: the scan decides it)
        assert got is None


def test_ragged_rows_anywhere_are_refused(both_paths):
    rng = random.Random(5)
    for row in (0, 1, 2, 50, 499):
        for extra in (-1, 1):
            rows = [[_short(rng) for _ in range(6)] for _ in range(500)]
            rows[row] = rows[row][:6 + extra] if extra < 0 else rows[row] + ["1.0"]
            text = "[" + ", ".join("[" + ", ".join(r) + "]" for r in rows) + "]"
            assert _check_decodes_as_json(both_paths, text) is None


def test_indented_and_mixed_white_space_bodies_decode_as_json(both_paths):
    rng = random.Random(3)
    numbers = [_short(rng) for _ in range(600)]
    assert _check_decodes_as_json(both_paths, _body((2, 30, 4), numbers[:240], indent=1))
    text = _body((120, 5), numbers[:600])
    # the separators change after a while (the 8-at-a-time check learnt the first ones)
    half = len(text) // 2
    for old, new in ((", ", ",\n "), ("], [", "],\n  ["), (", ", ","), ("], [", "],[")):
        assert _check_decodes_as_json(both_paths, text[:half] + text[half:].replace(old, new))


def test_spans_in_a_body_stop_where_the_array_stops(both_paths):
    """The span finder decodes an array from its '[' to its own ']' (the rest of the body is
    not its own): the same spans, numbers and stops on both paths."""
    rng = random.Random(9)
    for rows in (1, 3, 90, 800):
        numbers = [_short(rng) for _ in range(rows * 3)]
        array = _body((rows, 3), numbers)
        for after in ("", ", \"x\": 1.5e3-2, \"e\": [1, 2]", "]]]] 12345 -", ", 1, 2, 3, 4",
                      ", \"s\": \"1, 2, 3]\"", " , [[1.0, 2.0, 3.0]]"):
            body = ('{"instances": ' + array + after + "}").encode()
            fast, scan = both_paths(_numjson.spans, body, 16, True)
            assert fast == scan, (rows, after)
            start, end, decoded = fast[0]
            assert body[start:end].decode() == array
            buffer, shape = decoded
            assert np.frombuffer(buffer, np.float32).tobytes() == _expected(array).tobytes()


def test_random_edits_of_short_number_arrays_answer_as_the_scan(both_paths):
    """Bytes of the class a span is made of, written anywhere: both paths give the same
    answer, and a decoded one is json's."""
    rng = random.Random(2026)
    alphabet = "0123456789.-+eE,[] \n"
    base = [_body((rng.randrange(30, 200), rng.choice([1, 2, 3, 8, 9])),
                  [_short(rng) for _ in range(2000)]) for _ in range(6)]
    for trial in range(1500):
        text = list(rng.choice(base))
        for _ in range(rng.randrange(1, 4)):
            text[rng.randrange(len(text))] = rng.choice(alphabet)
        text = "".join(text)
        for itemsize in (4, 8):
            got = _check_decodes_as_json(both_paths, text, itemsize)
            if got is not None and got is not False:
                continue
            if got is None:   # not a rectangular array of numbers: json says so too, or
                try:          # it is one json reads but not rectangular / all numbers
                    value = json.loads(text)
                except json.JSONDecodeError:
                    continue
                with pytest.raises(ValueError):
                    np.asarray(value, np.float64)


def test_the_rest_step_gives_json_floats_on_the_token_path():
    """What the REST handler does with a body (extract, FastArray.array) on this CPU's path."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(1, 224, 224, 3))
    for value in (pixels.astype(np.float32).tolist(), pixels.tolist(),
                  ((pixels - 127.5) / 127.5).astype(np.float32).tolist()):
        body = json.dumps({"instances": value}).encode()
        _, spans = json_fast.extract(body)
        (fast,) = spans.values()
        got = fast.array(None, np.float32)
        assert got.tobytes() == _expected(json.dumps(value)).tobytes()


def test_many_small_arrays_of_a_body_are_left_to_the_scan(both_paths):
    """An array that fits the span finder's first try (2048 numbers) is scanned: the token
    path's start (a chunk classified, a first group parsed) costs more than such an array;
    one past it is decoded on the token path."""
    rng = random.Random(4)
    small = [{"a": _body((3,), [_short(rng) for _ in range(3)])} for _ in range(300)]
    body = json.dumps({"instances": small}).replace('"[', "[").replace(']"', "]").encode()
    fast, scan = both_paths(_numjson.spans, body, 16, True)
    assert fast == scan and both_paths.took == 0
    assert len(json.loads(body)["instances"]) == 300
    big = _body((700, 3), [_short(rng) for _ in range(2100)])
    body = ('{"instances": [{"a": ' + big + '}]}').encode()
    fast, scan = both_paths(_numjson.spans, body, 16, True)
    assert fast == scan and both_paths.took == (1 if _cpu_has_avx512() else 0)
    assert np.frombuffer(fast[0][2][0], np.float32).tobytes() == _expected(big).tobytes()
