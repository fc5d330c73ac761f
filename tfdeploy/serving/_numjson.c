/* Numeric JSON arrays to float64/float32 buffers, fast and exact (an optional extension;
 * tfdeploy.serving.json_fast has the pure-Python path and decides when this one is used).
 *
 *   spans(raw, min_span) -> [(start, end), ...]   the spans json_fast._SPAN's regex finds,
 *                                                 at least min_span bytes, brackets balanced
 *   shape(raw) -> tuple | None    the shape the brackets and commas of a rectangular array
 *                                 describe (read from them alone: a quick first look, so a
 *                                 wrong shape is refused before any number is decoded);
 *                                 None when they describe no rectangular array
 *   fill(raw, out) -> bool | None the numbers, in order, into ``out`` (a writable float64 or
 *                                 float32 buffer of as many items as shape() promised), the
 *                                 whole span checked against JSON's grammar and that shape:
 *                                 True; None when it is not exactly such an array (ragged,
 *                                 a misplaced or malformed number, an empty array); False
 *                                 when a token is an integer of 2**63 or more (the caller's
 *                                 Python path decides those)
 *
 * Every number is the correctly rounded double of its decimal text (as json.loads / float()
 * give it), cast to float32 when ``out`` is float32 (as numpy's astype does). Clinger's fast
 * path: a decimal mantissa w <= 2**53 and a power of ten |e| <= 22 are both exact doubles, so
 * one IEEE multiply or divide rounds w * 10**e correctly; anything else goes to glibc's
 * strtod_l in the "C" locale (correctly rounded), or, off glibc, fill() refuses.
 * An integer token (no fraction, no exponent) is converted from int64 ("-0" is +0, as json
 * gives the int 0). The interpreter lock is released while shape() and fill() scan.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__GLIBC__)
#include <locale.h>
#define HAVE_STRTOD_L 1
static locale_t c_locale;
#endif

#define MAX_DEPTH 32

/* json_fast._SPAN's class (0-9 e E . - , [ ] white space): 1, or 2 for '[', 3 for ']' */
static unsigned char SPAN_CHAR[256];

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
                                 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
                                 1e20, 1e21, 1e22};

static inline int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static const uint64_t POW10_U64[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
                                      100000000};

/* The run of digits at s (at most 8, fewer near e): its length, and its value in *value.
 * Branch-free within the 8 bytes (SWAR, as in simdjson / fast_float). */
static inline int digits8(const unsigned char *s, const unsigned char *e, uint64_t *value) {
    uint64_t v = 0, nd, d;
    int k;
    if (e - s >= 8) memcpy(&v, s, 8);
    else memcpy(&v, s, (size_t)(e - s));   /* (zero bytes are not digits) */
    nd = ((v & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL) |
         (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL);
    k = nd ? __builtin_ctzll(nd) >> 3 : 8;     /* (little-endian: the first byte is lowest) */
    if (k == 0) {
        *value = 0;
        return 0;
    }
    /* the k digits as the last k of 8 (zeros before them), then fast_float's 8-digit sum */
    d = (v - 0x3030303030303030ULL) << (8 * (8 - k));
    d = (d * 10) + (d >> 8);
    d = (((d & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
         (((d >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
    *value = d;
    return k;
}

/* -- pass 1: the shape the brackets and commas describe ------------------------------------ */
typedef struct {
    int depth, leaf, done;
    Py_ssize_t counts[MAX_DEPTH];
    Py_ssize_t *dims;
} Skeleton;

static inline int skeleton_step(Skeleton *k, unsigned char c) {
    if (k->done) return -1;
    if (c == ',') {
        if (k->depth == 0) return -1;
        k->counts[k->depth - 1]++;
    } else if (c == '[') {
        if (k->depth >= MAX_DEPTH || (k->leaf >= 0 && k->depth >= k->leaf)) return -1;
        k->counts[k->depth++] = 0;
    } else {   /* ']' */
        Py_ssize_t length;
        if (k->depth == 0) return -1;
        if (k->leaf < 0) k->leaf = k->depth;     /* the first ']' closes an innermost array */
        length = k->counts[--k->depth] + 1;
        if (k->dims[k->depth] < 0) k->dims[k->depth] = length;
        else if (k->dims[k->depth] != length) return -1;
        if (k->depth == 0) k->done = 1;
    }
    return 0;
}

static int skeleton_shape(const unsigned char *s, Py_ssize_t n, Py_ssize_t *dims) {
    Skeleton k;
    Py_ssize_t p = 0, i;
    k.depth = 0;
    k.leaf = -1;
    k.done = 0;
    k.dims = dims;
    for (i = 0; i < MAX_DEPTH; i++) dims[i] = -1;
#if defined(__SSE2__)
    {
        const __m128i comma = _mm_set1_epi8(','), open = _mm_set1_epi8('['),
                      close = _mm_set1_epi8(']');
        for (; p + 16 <= n; p += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + p));
            unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, comma), _mm_cmpeq_epi8(v, open)),
                _mm_cmpeq_epi8(v, close)));
            while (m) {
                if (skeleton_step(&k, s[p + __builtin_ctz(m)])) return 0;
                m &= m - 1;
            }
        }
    }
#endif
    for (; p < n; p++) {
        unsigned char c = s[p];
        if ((c == ',' || c == '[' || c == ']') && skeleton_step(&k, c)) return 0;
    }
    return k.done ? k.leaf : 0;
}

/* -- pass 2: every byte against JSON's grammar, the numbers into out ----------------------- */
enum { OK = 0, BAIL = 1, NO_EXACT = 2, INVALID = 4 };

/* Parse the JSON number at s (strict grammar), ending before e, into *out: its end, or NULL
 * with *rc set (INVALID: not a JSON number; BAIL: an integer of 2**63 or more; NO_EXACT: a
 * number off the fast path where strtod_l is missing). */
static const unsigned char *parse_number(const unsigned char *s, const unsigned char *e,
                                         double *out, int *rc) {
    const unsigned char *start = s;
    int neg = 0, integer = 1, digits, overflow = 0, full = 0, k;
    uint64_t w, chunk;
    long exp10 = 0;
    if (*s == '-') {
        neg = 1;
        if (++s >= e) goto invalid;
    }
    k = digits8(s, e, &w);
    if (k == 0 || (*s == '0' && k > 1)) goto invalid;   /* ("01" is not JSON) */
    digits = *s == '0' ? 0 : k;
    s += k;
    while (k == 8 && s < e) {
        k = digits8(s, e, &chunk);
        if (digits + k <= 19) {
            w = w * POW10_U64[k] + chunk;
            digits += k;
        } else {
            overflow = 1;
        }
        s += k;
    }
    if (s < e && *s == '.') {
        integer = 0;
        s++;
        k = digits8(s, e, &chunk);
        if (k == 0) goto invalid;
        for (;;) {
            /* (a fraction of zeros only, as in "123.0", changes nothing: skipped) */
            if (!(chunk == 0 && k < 8)) {
                if (!full && digits + k <= 19) {
                    w = w * POW10_U64[k] + chunk;
                    digits += w ? k : 0;   /* (zeros before the first significant digit) */
                    exp10 -= k;
                } else {   /* past 19 digits: exact only if every digit left is 0 */
                    full = 1;
                    overflow |= chunk != 0;
                }
            }
            s += k;
            if (k < 8 || s >= e) break;
            k = digits8(s, e, &chunk);
            if (k == 0) break;
        }
    }
    if (s < e && (*s == 'e' || *s == 'E')) {
        long x = 0;
        int eneg = 0;
        integer = 0;
        if (++s < e && (*s == '+' || *s == '-')) eneg = *s++ == '-';
        if (s >= e || !is_digit(*s)) goto invalid;
        for (; s < e && is_digit(*s); s++) {
            if (x < 100000000) x = x * 10 + (*s - '0');
        }
        exp10 += eneg ? -x : x;
    }
    if (integer) {
        if (overflow || w >= ((uint64_t)1 << 63)) {
            *rc = BAIL;
            return NULL;
        }
        *out = w ? (neg ? -(double)(int64_t)w : (double)(int64_t)w) : 0.0;   /* "-0": +0 */
        return s;
    }
    if (!overflow && w <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
        double v = (double)w;   /* exact, and so is 10**|exp10|: one rounding */
        v = exp10 >= 0 ? v * POW10[exp10] : v / POW10[-exp10];
        *out = neg ? -v : v;
        return s;
    }
#ifdef HAVE_STRTOD_L
    {   /* correctly rounded; on a NUL-terminated copy (the token may end the buffer) */
        char small[128], *text = small;
        size_t len = (size_t)(s - start);
        if (len >= sizeof(small)) {
            text = PyMem_RawMalloc(len + 1);
            if (text == NULL) {
                *rc = NO_EXACT;
                return NULL;
            }
        }
        memcpy(text, start, len);
        text[len] = 0;
        *out = strtod_l(text, NULL, c_locale);
        if (text != small) PyMem_RawFree(text);
    }
    return s;
#else
    *rc = NO_EXACT;
    return NULL;
#endif
invalid:
    *rc = INVALID;
    return NULL;
}

/* The whole span: one rectangular array of ndim levels whose sizes are dims, of numbers
 * only, white space around; the numbers into out (count items of itemsize 8 or 4). */
static int fill_numbers(const unsigned char *s, Py_ssize_t n, const Py_ssize_t *dims,
                        int ndim, char *out, Py_ssize_t count, int itemsize) {
    const unsigned char *e = s + n;
    Py_ssize_t counts[MAX_DEPTH], i = 0;
    int depth = 0, rc = OK;
    while (s < e && is_ws(*s)) s++;
    if (s >= e || *s != '[') return INVALID;
    for (;;) {
        /* a value is expected here (after '[' or ',') */
        while (s < e && is_ws(*s)) s++;
        if (s >= e) return INVALID;
        if (*s == '[') {
            if (depth >= ndim) return INVALID;
            counts[depth++] = 0;
            s++;
            continue;
        }
        if (depth != ndim || i >= count) return INVALID;
        {
            double v;
            s = parse_number(s, e, &v, &rc);
            if (s == NULL) return rc;
            if (itemsize == 8) ((double *)out)[i] = v;
            else ((float *)out)[i] = (float)v;
            i++;
        }
        counts[depth - 1]++;
        /* after a value: ',' or ']' (closing as many arrays as follow) */
        for (;;) {
            while (s < e && is_ws(*s)) s++;
            if (s >= e) return INVALID;
            if (*s == ',') {
                s++;
                break;
            }
            if (*s != ']') return INVALID;
            s++;
            depth--;
            if (counts[depth] != dims[depth]) return INVALID;
            if (depth == 0) {
                while (s < e && is_ws(*s)) s++;
                return s == e && i == count ? OK : INVALID;
            }
            counts[depth - 1]++;
        }
    }
}

static PyObject *py_shape(PyObject *self, PyObject *arg) {
    Py_buffer view;
    Py_ssize_t dims[MAX_DEPTH];
    int ndim, k;
    PyObject *shape;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    ndim = skeleton_shape((const unsigned char *)view.buf, view.len, dims);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (ndim <= 0) Py_RETURN_NONE;
    shape = PyTuple_New(ndim);
    if (shape == NULL) return NULL;
    for (k = 0; k < ndim; k++) {
        PyObject *d = PyLong_FromSsize_t(dims[k]);
        if (d == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, k, d);
    }
    return shape;
}

static PyObject *py_fill(PyObject *self, PyObject *args) {
    Py_buffer raw, out;
    PyObject *shape;
    Py_ssize_t dims[MAX_DEPTH], count = 1;
    int rc, ndim, k;
    if (!PyArg_ParseTuple(args, "y*O!w*", &raw, &PyTuple_Type, &shape, &out)) return NULL;
    ndim = (int)PyTuple_GET_SIZE(shape);
    rc = (out.itemsize != 8 && out.itemsize != 4) || ndim < 1 || ndim > MAX_DEPTH;
    for (k = 0; !rc && k < ndim; k++) {
        dims[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, k));
        rc = dims[k] < 1;
        count *= rc ? 1 : dims[k];
    }
    if (rc || PyErr_Occurred() || out.len != count * out.itemsize) {
        PyBuffer_Release(&raw);
        PyBuffer_Release(&out);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "fill: out must be a float64 or float32 buffer of one item per "
                            "element of shape");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = fill_numbers((const unsigned char *)raw.buf, raw.len, dims, ndim, (char *)out.buf,
                      count, (int)out.itemsize);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&raw);
    PyBuffer_Release(&out);
    if (rc == INVALID) Py_RETURN_NONE;
    return PyBool_FromLong(rc == OK);
}

static PyObject *py_spans(PyObject *self, PyObject *args) {
    Py_buffer raw;
    Py_ssize_t min_span, p = 0, n;
    const unsigned char *s;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "y*n", &raw, &min_span)) return NULL;
    list = PyList_New(0);
    if (list == NULL) {
        PyBuffer_Release(&raw);
        return NULL;
    }
    s = (const unsigned char *)raw.buf;
    n = raw.len;
    /* The regex \[[class]*\] (class includes both brackets), leftmost and greedy: in each
     * maximal run of class bytes it matches from the run's first '[' to its last ']'. */
    while (p < n) {
        Py_ssize_t run, first = -1, last = -1, opens = 0, closes = 0;
        Py_ssize_t opens_at_last = 0, closes_at_last = 0;
        if (!SPAN_CHAR[s[p]]) {
            p++;
            continue;
        }
        run = p;
#if defined(__SSE2__)
        for (; run + 16 <= n; run += 16) {   /* 16 bytes at a time while the run lasts */
            __m128i v = _mm_loadu_si128((const __m128i *)(s + run));
            __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                          _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
            __m128i open = _mm_cmpeq_epi8(v, _mm_set1_epi8('[')),
                    close = _mm_cmpeq_epi8(v, _mm_set1_epi8(']'));
            __m128i other = _mm_or_si128(
                _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(',')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8(' '))),
                             _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('.')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('-')))),
                _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('e')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('E'))),
                             _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\t')),
                                                       _mm_cmpeq_epi8(v, _mm_set1_epi8('\n'))),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\r')))));
            unsigned in_class = (unsigned)_mm_movemask_epi8(
                _mm_or_si128(_mm_or_si128(digit, other), _mm_or_si128(open, close)));
            unsigned valid = in_class == 0xFFFF ? 0xFFFF
                             : (1u << __builtin_ctz(~in_class & 0xFFFF)) - 1;
            unsigned m = ((unsigned)_mm_movemask_epi8(open) |
                          (unsigned)_mm_movemask_epi8(close)) & valid;
            while (m) {
                Py_ssize_t q = run + __builtin_ctz(m);
                m &= m - 1;
                if (s[q] == '[') {
                    if (first < 0) first = q;
                    opens++;
                } else if (first >= 0) {
                    last = q;
                    closes++;
                    opens_at_last = opens;
                    closes_at_last = closes;
                }
            }
            if (valid != 0xFFFF) {
                run += __builtin_popcount(valid);
                goto run_end;
            }
        }
#endif
        for (; run < n; run++) {
            unsigned char kind = SPAN_CHAR[s[run]];
            if (!kind) break;
            if (kind == 2) {
                if (first < 0) first = run;
                opens++;
            } else if (kind == 3 && first >= 0) {
                last = run;
                closes++;
                opens_at_last = opens;
                closes_at_last = closes;
            }
        }
#if defined(__SSE2__)
    run_end:
#endif
        if (first >= 0 && last > first && last + 1 - first >= min_span &&
                opens_at_last == closes_at_last) {
            PyObject *item = Py_BuildValue("(nn)", first, last + 1);
            if (item == NULL || PyList_Append(list, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(list);
                PyBuffer_Release(&raw);
                return NULL;
            }
            Py_DECREF(item);
        }
        p = run;
    }
    PyBuffer_Release(&raw);
    return list;
}

static PyMethodDef methods[] = {
    {"shape", py_shape, METH_O,
     "shape(raw) -> tuple or None: the shape of a rectangular array of JSON numbers."},
    {"fill", py_fill, METH_VARARGS,
     "fill(raw, shape, out) -> True, None (not such an array) or False (the Python path)."},
    {"spans", py_spans, METH_VARARGS,
     "spans(raw, min_span) -> [(start, end)]: the numeric array spans json_fast cuts out."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_numjson", NULL, -1, methods,
                                     NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__numjson(void) {
    const char *chars = "0123456789eE.-,[] \t\r\n";
    for (; *chars; chars++) SPAN_CHAR[(unsigned char)*chars] = 1;
    SPAN_CHAR['['] = 2;
    SPAN_CHAR[']'] = 3;
#ifdef HAVE_STRTOD_L
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) {
        PyErr_SetString(PyExc_ImportError, "_numjson: cannot create the C locale");
        return NULL;
    }
#endif
    return PyModule_Create(&module);
}
