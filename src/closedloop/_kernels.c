/*
 * closedloop._kernels: column loops for the batch path that call the very C functions the
 * single-decision path reaches through Python's math module, so both paths round identically.
 *
 *   log1p_into(src, dst)      dst[i] = closedloop's log1p(src[i])      (libm log1p, as math.log1p)
 *   sigmoid_into(src, dst)    dst[i] = closedloop's sigmoid(src[i])    (libm exp, as math.exp)
 *   exp_into(src, dst)        dst[i] = exp(src[i])                     (libm exp, as math.exp)
 *   contains_into(h_off, h_data, n_off, n_data, dst)
 *                             dst[i] = 1.0 if needle i occurs in haystack i else 0.0
 *                             (UTF-8 byte search: a byte match is a code-point match)
 *   count_into(off, data, needle, dst)
 *                             dst[i] = non-overlapping occurrences of needle in string i,
 *                             scanning left to right as Python's str.count does
 *   gather_into(rows, member, kind, dst)
 *                             dst[i] = the field `member` (a member descriptor of the rows'
 *                             exact type, e.g. a msgspec Struct's) of rows[i], for kind 'f'
 *                             (float64: a float, or an int as float() converts it), 'i' (int64:
 *                             an int), 'b' (bool, one byte: True or False), 'F' (float64: a
 *                             float only — telemetry's typed contexts, which must give back the
 *                             very value the row holds); raises TypeError on anything else, so
 *                             the caller can take its general path
 *   gather_list(rows, member) -> list
 *                             the field of every row, as a list of the very objects (rows of
 *                             the member's exact type, as gather_into)
 *   gather_str(rows, member) -> (offsets, data)
 *                             the field's strings as an Arrow string column: int32 offsets
 *                             (n + 1) and UTF-8 data, as bytes
 *   rank_one(s, k, mode, a, b, c, u) -> (picks, slot propensities, propensity, explored) | None
 *                             one request's ranking drawn from its scores s (float64), as
 *                             experience/ranking_kernel.py's numpy draw does it, operation for
 *                             operation (see rank_row below); None when a score is not finite
 *                             (the caller's numpy path settles those)
 *   rank_rows(S, counts, k, mode, a, b, c, U, picks, slot_p, explored, props, done)
 *                             the same for every row of S (rows x N, row i's first counts[i]
 *                             scores); done[i] = 0 for a row with a non-finite score (untouched)
 *                             mode 0: greedy; 1: softmax, a = temperature; 2: epsilon-greedy,
 *                             a = epsilon, [b, c] = the band
 *   logger_is(S, R, N, j, draws, mode, a, b, c, counts, cols, U, out, done)
 *                             a logger's marginal P(cols[i] at slot j) of each row, importance-sampled
 *                             (evaluation/ranking_marginals.py's _drawn_marginal; done[i] = 0 when a
 *                             score is not finite)
 *   linear_rows(X, idx, w, b, logistic, dst)
 *                             dst[r] = (b + X[r,idx0]*w0) + X[r,idx1]*w1 + ..., left to right,
 *                             then closedloop's sigmoid when logistic (as the generated scalar form)
 *   uniform_hex(ids, salt, dst) -> bool
 *                             dst[i] = closedloop's uniform(ids[i], salt) for a list of str, or an
 *                             Arrow string column as (offsets, data); False (dst unfinished) when
 *                             an id is not 32 lower-case hex digits
 *   text_in_into(offsets, data, needles, dst)
 *                             dst[i] = 1.0 if string i equals one of the needles (a tuple of
 *                             UTF-8 bytes; byte equality is text equality), else 0.0
 *   list_in_into(items, needles, dst)
 *                             dst[i] = 1.0 if items[i] == one of the needles (a list and a tuple
 *                             of str; Python's ==, as `x == c` or `x in {...}`), else 0.0
 *   first_repeat_str(offsets, data, request_offsets) -> int
 *                             the flat position of the first string that repeats an earlier one
 *                             of its request (requests [request_offsets[r], request_offsets[r+1])),
 *                             in the first request that has one, or -1 (a hash table, compared
 *                             byte for byte)
 *
 * Built with -ffp-contract=off so that no multiply-add is fused: every operation is the single
 * correctly rounded IEEE-754 operation Python performs. src/dst are contiguous float64 buffers;
 * offsets are int32 (Arrow string offsets), data is bytes.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static double cl_log1p(double x) {
    /* closedloop.features._log1p: log1p above -1, -inf at -1, NaN below (and for NaN). */
    if (x > -1.0) {
        if (x == 0.0) return x; /* as CPython's m_log1p: keeps the sign of zero */
        return log1p(x);
    }
    if (x == -1.0) return -HUGE_VAL;
    return NAN;
}

static double cl_sigmoid(double z) {
    /* closedloop.intelligence.base.sigmoid */
    if (z >= 0.0) {
        return 1.0 / (1.0 + exp(-z));
    }
    double e = exp(z);
    return e / (1.0 + e);
}

static int get_f64(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->itemsize != 8 || view->format == NULL || strcmp(view->format, "d") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous float64 buffer", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* get_f64 of exactly n float64 values (what: the shape named in the error). */
static int get_f64_n(PyObject *obj, Py_buffer *view, Py_ssize_t n, const char *name, const char *what) {
    if (get_f64(obj, view, 0, name) < 0) return -1;
    if (view->len != n * 8) {
        PyErr_Format(PyExc_ValueError, "%s must hold %s float64 values", name, what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_offsets(const int32_t *off, Py_ssize_t n, Py_ssize_t data_len) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (off[i] < 0 || off[i + 1] < off[i] || off[i + 1] > data_len) {
            PyErr_SetString(PyExc_ValueError, "string offsets out of range");
            return -1;
        }
    }
    return 0;
}

typedef double (*unary_fn)(double);

static PyObject *apply_unary(PyObject *args, unary_fn fn) {
    PyObject *src_obj, *dst_obj;
    Py_buffer src, dst;
    if (!PyArg_ParseTuple(args, "OO", &src_obj, &dst_obj)) return NULL;
    if (get_f64(src_obj, &src, 0, "src") < 0) return NULL;
    if (get_f64(dst_obj, &dst, 1, "dst") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (src.len != dst.len) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "src and dst must have the same length");
        return NULL;
    }
    Py_ssize_t n = src.len / 8;
    const double *a = (const double *)src.buf;
    double *out = (double *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) out[i] = fn(a[i]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static double cl_exp(double x) { return exp(x); }

static PyObject *exp_into(PyObject *self, PyObject *args) { return apply_unary(args, cl_exp); }
static PyObject *log1p_into(PyObject *self, PyObject *args) { return apply_unary(args, cl_log1p); }
static PyObject *sigmoid_into(PyObject *self, PyObject *args) { return apply_unary(args, cl_sigmoid); }

static PyObject *contains_into(PyObject *self, PyObject *args) {
    PyObject *ho, *hd, *no, *nd, *dsto;
    Py_buffer hoff, hdat, noff, ndat, dst;
    if (!PyArg_ParseTuple(args, "OOOOO", &ho, &hd, &no, &nd, &dsto)) return NULL;
    if (PyObject_GetBuffer(ho, &hoff, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(hd, &hdat, PyBUF_C_CONTIGUOUS) < 0) goto fail1;
    if (PyObject_GetBuffer(no, &noff, PyBUF_C_CONTIGUOUS) < 0) goto fail2;
    if (PyObject_GetBuffer(nd, &ndat, PyBUF_C_CONTIGUOUS) < 0) goto fail3;
    if (get_f64(dsto, &dst, 1, "dst") < 0) goto fail4;
    Py_ssize_t n = dst.len / 8;
    if (hoff.len != (n + 1) * 4 || noff.len != (n + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int32 values");
        goto fail5;
    }
    const int32_t *ha = (const int32_t *)hoff.buf, *na = (const int32_t *)noff.buf;
    const char *hb = (const char *)hdat.buf, *nb = (const char *)ndat.buf;
    double *out = (double *)dst.buf;
    if (check_offsets(ha, n, hdat.len) < 0 || check_offsets(na, n, ndat.len) < 0) goto fail5;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t hl = (size_t)(ha[i + 1] - ha[i]), nl = (size_t)(na[i + 1] - na[i]);
        out[i] = (nl == 0 || memmem(hb + ha[i], hl, nb + na[i], nl) != NULL) ? 1.0 : 0.0;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&dst);
    PyBuffer_Release(&ndat);
    PyBuffer_Release(&noff);
    PyBuffer_Release(&hdat);
    PyBuffer_Release(&hoff);
    Py_RETURN_NONE;
fail5:
    PyBuffer_Release(&dst);
fail4:
    PyBuffer_Release(&ndat);
fail3:
    PyBuffer_Release(&noff);
fail2:
    PyBuffer_Release(&hdat);
fail1:
    PyBuffer_Release(&hoff);
    return NULL;
}

static PyObject *count_into(PyObject *self, PyObject *args) {
    PyObject *oo, *dd, *nn, *dsto;
    Py_buffer off, dat, ndl, dst;
    if (!PyArg_ParseTuple(args, "OOOO", &oo, &dd, &nn, &dsto)) return NULL;
    if (PyObject_GetBuffer(oo, &off, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(dd, &dat, PyBUF_C_CONTIGUOUS) < 0) goto f1;
    if (PyObject_GetBuffer(nn, &ndl, PyBUF_C_CONTIGUOUS) < 0) goto f2;
    if (get_f64(dsto, &dst, 1, "dst") < 0) goto f3;
    Py_ssize_t n = dst.len / 8;
    if (off.len != (n + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int32 values");
        goto f4;
    }
    if (ndl.len == 0) {
        PyErr_SetString(PyExc_ValueError, "the needle must not be empty");
        goto f4;
    }
    const int32_t *o = (const int32_t *)off.buf;
    if (check_offsets(o, n, dat.len) < 0) goto f4;
    const char *b = (const char *)dat.buf, *needle = (const char *)ndl.buf;
    size_t nl = (size_t)ndl.len;
    double *out = (double *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *p = b + o[i], *end = b + o[i + 1];
        long count = 0;
        while ((size_t)(end - p) >= nl) {
            const char *hit = memmem(p, (size_t)(end - p), needle, nl);
            if (hit == NULL) break;
            count++;
            p = hit + nl;
        }
        out[i] = (double)count;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&dst);
    PyBuffer_Release(&ndl);
    PyBuffer_Release(&dat);
    PyBuffer_Release(&off);
    Py_RETURN_NONE;
f4:
    PyBuffer_Release(&dst);
f3:
    PyBuffer_Release(&ndl);
f2:
    PyBuffer_Release(&dat);
f1:
    PyBuffer_Release(&off);
    return NULL;
}

/* The field a member descriptor reads, checked: a slot holding an object, of type `owner`. */
static int member_slot(PyObject *member, PyTypeObject **owner, Py_ssize_t *offset) {
    if (!Py_IS_TYPE(member, &PyMemberDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "member must be a member descriptor");
        return -1;
    }
    PyMemberDef *d = ((PyMemberDescrObject *)member)->d_member;
    if (d->type != T_OBJECT_EX && d->type != T_OBJECT) {
        PyErr_SetString(PyExc_TypeError, "member must hold an object");
        return -1;
    }
    *owner = PyDescr_TYPE(member);
    *offset = d->offset;
    return 0;
}

/* rows[i]'s field, borrowed; NULL with TypeError when the row is not of the owner type or unset. */
static inline PyObject *field_of(PyObject *row, PyTypeObject *owner, Py_ssize_t offset) {
    if (Py_TYPE(row) != owner) {
        PyErr_SetString(PyExc_TypeError, "every row must be of the member's exact type");
        return NULL;
    }
    PyObject *v = *(PyObject **)((char *)row + offset);
    if (v == NULL) PyErr_SetString(PyExc_TypeError, "a row's field is unset");
    return v;
}

static PyObject *gather_into(PyObject *self, PyObject *args) {
    PyObject *rows, *member, *dsto;
    int kind;
    Py_buffer dst;
    if (!PyArg_ParseTuple(args, "O!OCO", &PyList_Type, &rows, &member, &kind, &dsto)) return NULL;
    PyTypeObject *owner;
    Py_ssize_t offset;
    if (member_slot(member, &owner, &offset) < 0) return NULL;
    Py_ssize_t size = kind == 'b' ? 1 : 8;
    if (kind != 'f' && kind != 'F' && kind != 'i' && kind != 'b') {
        PyErr_SetString(PyExc_ValueError, "kind must be 'f', 'F', 'i' or 'b'");
        return NULL;
    }
    if (PyObject_GetBuffer(dsto, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if (dst.len != n * size) {
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "dst must hold one value per row");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = field_of(PyList_GET_ITEM(rows, i), owner, offset);
        if (v == NULL) goto fail;
        if (kind == 'F') {
            if (!PyFloat_CheckExact(v)) {
                PyErr_SetString(PyExc_TypeError, "a float field holds something else than a float");
                goto fail;
            }
            ((double *)dst.buf)[i] = PyFloat_AS_DOUBLE(v);
        } else if (kind == 'f') {
            double x;
            if (PyFloat_CheckExact(v)) {
                x = PyFloat_AS_DOUBLE(v);
            } else if (PyLong_CheckExact(v)) {
                x = PyLong_AsDouble(v); /* float(int), as numpy converts one */
                if (x == -1.0 && PyErr_Occurred()) goto fail;
            } else {
                PyErr_SetString(PyExc_TypeError, "a float field holds something else");
                goto fail;
            }
            ((double *)dst.buf)[i] = x;
        } else if (kind == 'i') {
            if (!PyLong_CheckExact(v)) {
                PyErr_SetString(PyExc_TypeError, "an int field holds something else");
                goto fail;
            }
            long long x = PyLong_AsLongLong(v);
            if (x == -1 && PyErr_Occurred()) goto fail;
            ((int64_t *)dst.buf)[i] = (int64_t)x;
        } else {
            if (v != Py_True && v != Py_False) {
                PyErr_SetString(PyExc_TypeError, "a bool field holds something else");
                goto fail;
            }
            ((uint8_t *)dst.buf)[i] = v == Py_True;
        }
    }
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&dst);
    return NULL;
}

static PyObject *gather_str(PyObject *self, PyObject *args) {
    PyObject *rows, *member;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &rows, &member)) return NULL;
    PyTypeObject *owner;
    Py_ssize_t offset;
    if (member_slot(member, &owner, &offset) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows), total = 0;
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, (n + 1) * 4);
    if (offsets == NULL) return NULL;
    int32_t *off = (int32_t *)PyBytes_AS_STRING(offsets);
    off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* lengths (and each string's UTF-8, cached by CPython) */
        PyObject *v = field_of(PyList_GET_ITEM(rows, i), owner, offset);
        if (v == NULL) goto fail;
        if (!PyUnicode_CheckExact(v)) {
            PyErr_SetString(PyExc_TypeError, "a str field holds something else");
            goto fail;
        }
        Py_ssize_t len;
        if (PyUnicode_AsUTF8AndSize(v, &len) == NULL) goto fail;
        total += len;
        if (total > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "more than 2 GiB of strings in one column");
            goto fail;
        }
        off[i + 1] = (int32_t)total;
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, total);
    if (data == NULL) goto fail;
    char *out = PyBytes_AS_STRING(data);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = *(PyObject **)((char *)PyList_GET_ITEM(rows, i) + offset);
        Py_ssize_t len;
        const char *u = PyUnicode_AsUTF8AndSize(v, &len);
        memcpy(out + off[i], u, (size_t)len);
    }
    PyObject *res = PyTuple_Pack(2, offsets, data);
    Py_DECREF(offsets);
    Py_DECREF(data);
    return res;
fail:
    Py_DECREF(offsets);
    return NULL;
}

static PyObject *gather_list(PyObject *self, PyObject *args) {
    PyObject *rows, *member;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &rows, &member)) return NULL;
    PyTypeObject *owner;
    Py_ssize_t offset;
    if (member_slot(member, &owner, &offset) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = field_of(PyList_GET_ITEM(rows, i), owner, offset);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, Py_NewRef(v));
    }
    return out;
}

/* ---- ranking draws ------------------------------------------------------------------------ */

typedef struct {
    int mode; /* 0 greedy, 1 softmax, 2 epsilon-greedy, 3 SquareCB (inverse-gap weighting) */
    double a, lo, hi; /* temperature, or epsilon and its band, or gamma */
} draw_policy;

/* The slot's pick: the first candidate whose cumulative probability (P_0, P_0 + P_1, ... added
 * left to right, as np.add.accumulate / np.cumsum) exceeds u, else the last with P above 0.
 * P_i = num[i] / den, or for epsilon-greedy `share` for a free one, `pbest` for the best. */
static Py_ssize_t pick_softmax(const double *W, Py_ssize_t n, double total, double u) {
    double c = 0.0;
    Py_ssize_t last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double p = W[i] / total;
        c = i == 0 ? p : c + p;
        if (p > 0.0) last = i;
        if (c > u) return i;
    }
    return last;
}

static Py_ssize_t pick_epsilon(const uint8_t *freeb, Py_ssize_t n, Py_ssize_t best, double share, double pbest, double u) {
    double c = 0.0;
    Py_ssize_t last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double p = i == best ? pbest : freeb[i] ? share : 0.0;
        c = i == 0 ? p : c + p;
        if (p > 0.0) last = i;
        if (c > u) return i;
    }
    return last;
}

/* One request's ranking, operation for operation as experience/ranking_kernel.py draws it for
 * finite scores: slot j's best is the highest free score (ties to the lower index); softmax
 * weights exp((s_i - best) / t) (libm exp, as exp_array), recomputed only when the best score
 * changes, 0 for taken candidates; the total adds the weights left to right; each probability
 * is weight / total; epsilon-greedy gives eps / r to each of the r free candidates and
 * (1 - eps) + eps / r to the best when the best is in the band, else the best with probability 1.
 * Returns 0 (nothing written) when a score is not finite. W and freeb: n scratch values each. */
static int rank_row(const double *s, Py_ssize_t n, Py_ssize_t m, const draw_policy *pol, const double *u,
                    int64_t *picks, double *slots, uint8_t *expl, double *prop, double *W, uint8_t *freeb) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!isfinite(s[i])) return 0;
        freeb[i] = 1;
    }
    double p = 1.0, top = NAN;
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_ssize_t best = -1;
        double sb = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (freeb[i] && (best < 0 || s[i] > sb)) {
                best = i;
                sb = s[i];
            }
        }
        Py_ssize_t pos = best;
        double q = 1.0;
        if (pol->mode == 1) {
            if (sb != top) {
                for (Py_ssize_t i = 0; i < n; i++) W[i] = freeb[i] ? exp((s[i] - sb) / pol->a) : 0.0;
                top = sb;
            }
            double total = W[0];
            for (Py_ssize_t i = 1; i < n; i++) total = total + W[i];
            pos = pick_softmax(W, n, total, u[j]);
            q = W[pos] / total;
            W[pos] = 0.0;
        } else if (pol->mode == 3) {
            /* 1 / (r + gamma * (best - s_i)) for each free candidate but the best, which takes
             * 1 - their sum (added left to right, as np.add.accumulate); the pick reads them as they are */
            double r = (double)(n - j);
            for (Py_ssize_t i = 0; i < n; i++) W[i] = freeb[i] && i != best ? 1.0 / (r + pol->a * (sb - s[i])) : 0.0;
            double total = W[0];
            for (Py_ssize_t i = 1; i < n; i++) total = total + W[i];
            W[best] = 1.0 - total;
            pos = pick_softmax(W, n, 1.0, u[j]);
            q = W[pos];
        } else if (pol->mode == 2 && pol->lo <= sb && sb <= pol->hi) {
            double share = pol->a / (double)(n - j);
            double pbest = (1.0 - pol->a) + share;
            pos = pick_epsilon(freeb, n, best, share, pbest, u[j]);
            q = pos == best ? pbest : share;
        }
        freeb[pos] = 0;
        picks[j] = pos;
        slots[j] = q;
        expl[j] = pos != best;
        p = p * q;
    }
    *prop = p;
    return 1;
}

static int parse_policy(int mode, double a, double b, double c, draw_policy *pol) {
    if (mode < 0 || mode > 3) {
        PyErr_SetString(PyExc_ValueError, "mode must be 0 (greedy), 1 (softmax), 2 (epsilon-greedy) or 3 (SquareCB)");
        return -1;
    }
    pol->mode = mode;
    pol->a = a;
    pol->lo = b;
    pol->hi = c;
    return 0;
}

static PyObject *rank_one(PyObject *self, PyObject *args) {
    PyObject *so, *uo;
    Py_ssize_t k;
    int mode;
    double a, b, c;
    draw_policy pol;
    Py_buffer sv;
    if (!PyArg_ParseTuple(args, "OnidddO!", &so, &k, &mode, &a, &b, &c, &PyList_Type, &uo)) return NULL;
    if (parse_policy(mode, a, b, c, &pol) < 0) return NULL;
    if (get_f64(so, &sv, 0, "s") < 0) return NULL;
    Py_ssize_t n = sv.len / 8, m = k < n ? k : n;
    if (m < 0) m = 0;
    if (mode != 0 && PyList_GET_SIZE(uo) < m) {
        PyBuffer_Release(&sv);
        PyErr_SetString(PyExc_ValueError, "u must hold one number per slot");
        return NULL;
    }
    /* scratch: W (n), u (m), slots (m), picks (m), then freeb (n) and expl (m) bytes */
    char *mem = PyMem_Malloc((size_t)(n + 2 * m) * 8 + (size_t)m * 8 + (size_t)(n + m) + 16);
    if (mem == NULL) {
        PyBuffer_Release(&sv);
        return PyErr_NoMemory();
    }
    double *W = (double *)mem, *u = W + n, *slots = u + m;
    int64_t *picks = (int64_t *)(slots + m);
    uint8_t *freeb = (uint8_t *)(picks + m), *expl = freeb + n;
    PyObject *res = NULL;
    for (Py_ssize_t j = 0; mode != 0 && j < m; j++) {
        u[j] = PyFloat_AsDouble(PyList_GET_ITEM(uo, j));
        if (u[j] == -1.0 && PyErr_Occurred()) goto done;
    }
    double p = 1.0;
    if (!rank_row((const double *)sv.buf, n, m, &pol, u, picks, slots, expl, &p, W, freeb)) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *pl = PyList_New(m), *sl = PyList_New(m), *el = PyList_New(0);
    if (pl == NULL || sl == NULL || el == NULL) goto fail;
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *iv = PyLong_FromSsize_t((Py_ssize_t)picks[j]), *fv = PyFloat_FromDouble(slots[j]);
        if (iv == NULL || fv == NULL) {
            Py_XDECREF(iv);
            Py_XDECREF(fv);
            goto fail;
        }
        PyList_SET_ITEM(pl, j, iv);
        PyList_SET_ITEM(sl, j, fv);
        if (expl[j]) {
            PyObject *jv = PyLong_FromSsize_t(j);
            if (jv == NULL || PyList_Append(el, jv) < 0) {
                Py_XDECREF(jv);
                goto fail;
            }
            Py_DECREF(jv);
        }
    }
    res = Py_BuildValue("NNdN", pl, sl, p, el);
    goto done;
fail:
    Py_XDECREF(pl);
    Py_XDECREF(sl);
    Py_XDECREF(el);
done:
    PyMem_Free(mem);
    PyBuffer_Release(&sv);
    return res;
}

static int get_buf(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return -1;
    if (view->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd values of %zd bytes", name, count, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *rank_rows(PyObject *self, PyObject *args) {
    PyObject *So, *co, *Uo, *po, *spo, *eo, *pro, *dno;
    Py_ssize_t k, R, N;
    int mode;
    double a, b, c;
    draw_policy pol;
    if (!PyArg_ParseTuple(args, "OnnnidddOOOOOOO", &So, &R, &N, &k, &mode, &a, &b, &c, &co, &Uo, &po, &spo, &eo, &pro,
                          &dno))
        return NULL;
    if (parse_policy(mode, a, b, c, &pol) < 0) return NULL;
    Py_ssize_t m = k < N ? k : N;
    if (R < 0 || N < 0 || m < 0) {
        PyErr_SetString(PyExc_ValueError, "R, N and k must be >= 0");
        return NULL;
    }
    Py_buffer S, cnt, U = {0}, pk, sp, ex, pr, dn;
    Py_ssize_t ucols = 0;
    int got = 0;
    if (get_f64(So, &S, 0, "S") < 0) return NULL;
    got++;
    if (S.len != R * N * 8) {
        PyErr_SetString(PyExc_ValueError, "S must hold R x N float64 values");
        goto out;
    }
    if (get_buf(co, &cnt, 8, R, "counts") < 0) goto out;
    got++;
    if (get_buf(po, &pk, 8, R * m, "picks") < 0) goto out;
    got++;
    if (get_buf(spo, &sp, 8, R * m, "slot_p") < 0) goto out;
    got++;
    if (get_buf(eo, &ex, 1, R * m, "explored") < 0) goto out;
    got++;
    if (get_buf(pro, &pr, 8, R, "props") < 0) goto out;
    got++;
    if (get_buf(dno, &dn, 1, R, "done") < 0) goto out;
    got++;
    if (mode != 0) {
        if (get_f64(Uo, &U, 0, "U") < 0) goto out;
        got++;
        ucols = R ? U.len / 8 / R : 0;
        if (U.len != R * ucols * 8) {
            PyErr_SetString(PyExc_ValueError, "U must hold R rows");
            goto out;
        }
    }
    const int64_t *counts = (const int64_t *)cnt.buf;
    for (Py_ssize_t i = 0; i < R; i++) {
        Py_ssize_t mi = counts[i] < k ? (Py_ssize_t)counts[i] : k;
        if (counts[i] < 0 || counts[i] > N || (mode != 0 && mi > ucols)) {
            PyErr_SetString(PyExc_ValueError, "counts must be in [0, N], and U must hold a number per slot");
            goto out;
        }
    }
    char *mem = PyMem_Malloc((size_t)N * 9 + 16);
    if (mem == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < R; i++) {
        Py_ssize_t n = (Py_ssize_t)counts[i], mi = n < k ? n : k;
        ((uint8_t *)dn.buf)[i] = (uint8_t)rank_row(
            (const double *)S.buf + i * N, n, mi, &pol, mode != 0 ? (const double *)U.buf + i * ucols : NULL,
            (int64_t *)pk.buf + i * m, (double *)sp.buf + i * m, (uint8_t *)ex.buf + i * m, (double *)pr.buf + i,
            (double *)mem, (uint8_t *)mem + (size_t)N * 8);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(mem);
    got = -got; /* success */
out:;
    int ok = got < 0, n_got = ok ? -got : got;
    Py_buffer *views[] = {&S, &cnt, &pk, &sp, &ex, &pr, &dn, &U};
    for (int i = 0; i < n_got; i++) PyBuffer_Release(views[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* ---- a logger's marginal at a logged slot ------------------------------------------------ */

/* P[i]: the probability that the next slot shows free candidate i, as rank_row draws it (0 for
 * the taken ones); r: how many are free. */
static void slot_probs(const double *s, Py_ssize_t n, const uint8_t *freeb, Py_ssize_t r, const draw_policy *pol, double *P) {
    Py_ssize_t best = -1;
    double sb = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (freeb[i] && (best < 0 || s[i] > sb)) {
            best = i;
            sb = s[i];
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) P[i] = 0.0;
    if (best < 0) return;
    if (pol->mode == 1) {
        double total = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            P[i] = freeb[i] ? exp((s[i] - sb) / pol->a) : 0.0;
            total = i == 0 ? P[i] : total + P[i];
        }
        for (Py_ssize_t i = 0; i < n; i++) P[i] = P[i] / total;
    } else if (pol->mode == 3) {
        double total = 0.0;
        for (Py_ssize_t i = 0; i < n; i++) {
            P[i] = freeb[i] && i != best ? 1.0 / ((double)r + pol->a * (sb - s[i])) : 0.0;
            total = i == 0 ? P[i] : total + P[i];
        }
        P[best] = 1.0 - total;
    } else if (pol->mode == 2 && pol->lo <= sb && sb <= pol->hi) {
        double share = pol->a / (double)r;
        for (Py_ssize_t i = 0; i < n; i++) P[i] = freeb[i] ? share : 0.0;
        P[best] = (1.0 - pol->a) + share;
    } else {
        P[best] = 1.0;
    }
}

/* One logged slot's marginal under its logger, by importance sampling (ranking_marginals.py's
 * _drawn_marginal, operation for operation): `draws` sets of the j earlier slots drawn from the
 * logger's conditionals with candidate `a` taken out and the rest renormalized, each weighted by
 * the mass taken out at each slot, times the logger's probability of `a` after them; the mean.
 * u: draws x j uniforms. Returns 0 when a score is not finite. P, freeb: n scratch values each. */
static int logger_is_row(const double *s, Py_ssize_t n, Py_ssize_t a, Py_ssize_t j, const draw_policy *pol, const double *u,
                         Py_ssize_t draws, double *out, double *P, uint8_t *freeb) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!isfinite(s[i])) return 0;
    if (a < 0 || a >= n || j >= n) {
        *out = NAN;
        return 1;
    }
    double acc = 0.0;
    for (Py_ssize_t d = 0; d < draws; d++) {
        for (Py_ssize_t i = 0; i < n; i++) freeb[i] = 1;
        double w = 1.0;
        for (Py_ssize_t step = 0; step < j; step++) {
            slot_probs(s, n, freeb, n - step, pol, P);
            P[a] = 0.0;
            double rest = 0.0;
            for (Py_ssize_t i = 0; i < n; i++) rest = i == 0 ? P[i] : rest + P[i];
            w = w * rest;
            double target = u[d * j + step] * rest, c = 0.0;
            Py_ssize_t pick = -1, last = -1;
            for (Py_ssize_t i = 0; i < n; i++) {
                c = i == 0 ? P[i] : c + P[i];
                if (P[i] > 0.0) last = i;
                if (c > target && P[i] > 0.0) {
                    pick = i;
                    break;
                }
            }
            if (pick < 0) pick = last;
            if (pick < 0) { /* nothing but `a` left to draw: no set leaves it free */
                w = 0.0;
                break;
            }
            freeb[pick] = 0;
        }
        if (w > 0.0) {
            slot_probs(s, n, freeb, n - j, pol, P);
            acc = acc + w * P[a];
        }
    }
    *out = acc / (double)draws;
    return 1;
}


/* P(candidate `a` at slot `left` + `taken` | the free ones): the sum over every ordered choice of
 * the next `left` slots that leaves `a` free of its probability times the logger's probability of
 * `a` after them. P: (left + 1) x n scratch values, one row per depth. */
static double logger_exact_rec(const double *s, Py_ssize_t n, Py_ssize_t a, Py_ssize_t left, Py_ssize_t taken,
                               const draw_policy *pol, uint8_t *freeb, double *P) {
    slot_probs(s, n, freeb, n - taken, pol, P);
    if (left == 0) return P[a];
    double acc = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == a || !freeb[i] || P[i] <= 0.0) continue;
        freeb[i] = 0;
        acc = acc + P[i] * logger_exact_rec(s, n, a, left - 1, taken + 1, pol, freeb, P + n);
        freeb[i] = 1;
    }
    return acc;
}

/* One logged slot's exact marginal under its logger (ope_policy.py's _enumerated, for one
 * candidate): 0 returned when a score is not finite (numpy's form takes the row). */
static int logger_exact_row(const double *s, Py_ssize_t n, Py_ssize_t a, Py_ssize_t j, const draw_policy *pol, double *out,
                            double *P, uint8_t *freeb) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (!isfinite(s[i])) return 0;
    if (a < 0 || a >= n || j >= n) {
        *out = NAN;
        return 1;
    }
    for (Py_ssize_t i = 0; i < n; i++) freeb[i] = 1;
    *out = logger_exact_rec(s, n, a, j, 0, pol, freeb, P);
    return 1;
}

/* logger_is and logger_exact: each row i's logger marginal of candidate cols[i] at slot j, into
 * out[i] (done[i] = 0: a non-finite score, numpy's form takes the row); U: R x draws x j uniforms
 * when sampled. */
static PyObject *logger_rows(PyObject *args, int sampled) {
    PyObject *So, *co, *ao, *Uo = NULL, *oo, *dno;
    Py_ssize_t R, N, j, draws = 1;
    int mode;
    double a, b, c;
    draw_policy pol;
    if (sampled ? !PyArg_ParseTuple(args, "OnnnnidddOOOOO", &So, &R, &N, &j, &draws, &mode, &a, &b, &c, &co, &ao, &Uo, &oo, &dno)
                : !PyArg_ParseTuple(args, "OnnnidddOOOO", &So, &R, &N, &j, &mode, &a, &b, &c, &co, &ao, &oo, &dno))
        return NULL;
    if (parse_policy(mode, a, b, c, &pol) < 0) return NULL;
    if (R < 0 || N < 0 || draws < 1 || (sampled ? j < 1 : (j < 0 || j > 8))) {
        PyErr_SetString(PyExc_ValueError, sampled ? "R and N must be >= 0, j and draws >= 1" : "R and N must be >= 0 and j in [0, 8]");
        return NULL;
    }
    Py_buffer S, cnt, col, U, out, dn;
    Py_buffer *views[6];
    int got = 0;
    if (get_f64_n(So, &S, R * N, "S", "R x N") < 0) return NULL;
    views[got++] = &S;
    if (get_buf(co, &cnt, 8, R, "counts") < 0) goto out;
    views[got++] = &cnt;
    if (get_buf(ao, &col, 8, R, "cols") < 0) goto out;
    views[got++] = &col;
    if (sampled) {
        if (get_f64_n(Uo, &U, R * draws * j, "U", "R x draws x j") < 0) goto out;
        views[got++] = &U;
    }
    if (get_buf(oo, &out, 8, R, "out") < 0) goto out;
    views[got++] = &out;
    if (get_buf(dno, &dn, 1, R, "done") < 0) goto out;
    views[got++] = &dn;
    const int64_t *counts = (const int64_t *)cnt.buf;
    for (Py_ssize_t i = 0; i < R; i++) {
        if (counts[i] < 0 || counts[i] > N) {
            PyErr_SetString(PyExc_ValueError, "counts must be in [0, N]");
            goto out;
        }
    }
    size_t levels = sampled ? 1 : (size_t)(j + 1); /* the exact enumeration: one row of P per depth */
    char *mem = PyMem_Malloc((size_t)N * (8 * levels + 1) + 16);
    if (mem == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < R; i++) {
        const double *s = (const double *)S.buf + i * N;
        Py_ssize_t n = (Py_ssize_t)counts[i], cand = (Py_ssize_t)((const int64_t *)col.buf)[i];
        double *o = (double *)out.buf + i, *P = (double *)mem;
        uint8_t *freeb = (uint8_t *)mem + (size_t)N * 8 * levels;
        ((uint8_t *)dn.buf)[i] = (uint8_t)(sampled ? logger_is_row(s, n, cand, j, &pol, (const double *)U.buf + i * draws * j, draws, o, P, freeb)
                                                   : logger_exact_row(s, n, cand, j, &pol, o, P, freeb));
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(mem);
    for (int i = 0; i < got; i++) PyBuffer_Release(views[i]);
    Py_RETURN_NONE;
out:
    for (int i = 0; i < got; i++) PyBuffer_Release(views[i]);
    return NULL;
}

static PyObject *logger_is(PyObject *self, PyObject *args) { return logger_rows(args, 1); }
static PyObject *logger_exact(PyObject *self, PyObject *args) { return logger_rows(args, 0); }

/* ---- linear scores ------------------------------------------------------------------------ */

static PyObject *linear_rows(PyObject *self, PyObject *args) {
    PyObject *Xo, *io, *wo, *dsto;
    double b;
    int logistic;
    Py_buffer X, iv, wv, dst;
    if (!PyArg_ParseTuple(args, "OOOdpO", &Xo, &io, &wo, &b, &logistic, &dsto)) return NULL;
    if (PyObject_GetBuffer(Xo, &X, PyBUF_STRIDES | PyBUF_FORMAT) < 0) return NULL;
    PyObject *res = NULL;
    if (X.ndim != 2 || X.itemsize != 8 || X.format == NULL || strcmp(X.format, "d") != 0) {
        PyErr_SetString(PyExc_TypeError, "X must be a 2-d float64 array");
        PyBuffer_Release(&X);
        return NULL;
    }
    if (PyObject_GetBuffer(io, &iv, PyBUF_C_CONTIGUOUS) < 0) goto f1;
    if (get_f64(wo, &wv, 0, "w") < 0) goto f2;
    if (get_f64(dsto, &dst, 1, "dst") < 0) goto f3;
    Py_ssize_t rows = X.shape[0], cols = X.shape[1], nw = wv.len / 8;
    const int64_t *idx = (const int64_t *)iv.buf;
    if (iv.itemsize != 8 || iv.len != nw * 8 || dst.len != rows * 8) {
        PyErr_SetString(PyExc_ValueError, "idx must match w (int64), dst must hold one value per row");
        goto f4;
    }
    for (Py_ssize_t j = 0; j < nw; j++) {
        if (idx[j] < 0 || idx[j] >= cols) {
            PyErr_SetString(PyExc_ValueError, "idx out of range");
            goto f4;
        }
    }
    const char *base = (const char *)X.buf;
    Py_ssize_t rs = X.strides[0], cs = X.strides[1];
    const double *w = (const double *)wv.buf;
    double *out = (double *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    if (rs == 8) { /* column-major (the feature matrix): a column at a time, each row's terms still in order */
        for (Py_ssize_t r = 0; r < rows; r++) out[r] = b;
        for (Py_ssize_t j = 0; j < nw; j++) {
            const double *col = (const double *)(base + idx[j] * cs), wj = w[j];
            for (Py_ssize_t r = 0; r < rows; r++) out[r] = out[r] + col[r] * wj;
        }
        if (logistic) {
            for (Py_ssize_t r = 0; r < rows; r++) out[r] = cl_sigmoid(out[r]);
        }
    } else {
        for (Py_ssize_t r = 0; r < rows; r++) {
            const char *row = base + r * rs;
            double z = b;
            for (Py_ssize_t j = 0; j < nw; j++) z = z + *(const double *)(row + idx[j] * cs) * w[j];
            out[r] = logistic ? cl_sigmoid(z) : z;
        }
    }
    Py_END_ALLOW_THREADS
    res = Py_NewRef(Py_None);
f4:
    PyBuffer_Release(&dst);
f3:
    PyBuffer_Release(&wv);
f2:
    PyBuffer_Release(&iv);
f1:
    PyBuffer_Release(&X);
    return res;
}

/* ---- uniform numbers from decision ids ------------------------------------------------------ */

static int hex_word(const unsigned char *p, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        unsigned char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9') d = ch - '0';
        else if (ch >= 'a' && ch <= 'f') d = ch - 'a' + 10;
        else return 0;
        v = (v << 4) | d;
    }
    *out = v;
    return 1;
}

/* closedloop's uniform(id, salt) for a 32-hex-digit id: splitmix64 of hi ^ lo ^ saltmix, 53 bits. */
static int uniform_of(const unsigned char *p, uint64_t saltmix, double *out) {
    uint64_t hi, lo;
    if (!hex_word(p, &hi) || !hex_word(p + 16, &lo)) return 0;
    uint64_t x = (hi ^ lo ^ saltmix) + 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    x = x ^ (x >> 31);
    *out = (double)(x >> 11) / 9007199254740992.0;
    return 1;
}

static PyObject *uniform_hex(PyObject *self, PyObject *args) {
    PyObject *ids, *dsto, *saltso;
    Py_buffer dst, salts;
    if (!PyArg_ParseTuple(args, "OOO", &ids, &saltso, &dsto)) return NULL;
    if (PyObject_GetBuffer(saltso, &salts, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (get_f64(dsto, &dst, 1, "dst") < 0) {
        PyBuffer_Release(&salts);
        return NULL;
    }
    if (salts.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "salts must be 64-bit");
        PyBuffer_Release(&dst);
        PyBuffer_Release(&salts);
        return NULL;
    }
    /* dst: n rows x len(salts) columns, row i's salt j at i * ns + j */
    Py_ssize_t ns = salts.len / 8, total = dst.len / 8, n = ns ? total / ns : 0;
    const uint64_t *sm = (const uint64_t *)salts.buf;
    double *out = (double *)dst.buf;
    int ok = 1;
    PyObject *res = NULL;
    if (ns == 0 || n * ns != total) {
        PyErr_SetString(PyExc_ValueError, "dst must hold n x len(salts) values");
        goto done;
    }
    if (PyList_Check(ids)) {
        if (PyList_GET_SIZE(ids) != n) {
            PyErr_SetString(PyExc_ValueError, "dst must hold a row per id");
            goto done;
        }
        for (Py_ssize_t i = 0; i < n && ok; i++) {
            PyObject *v = PyList_GET_ITEM(ids, i);
            if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_COMPACT_ASCII(v) || PyUnicode_GET_LENGTH(v) != 32) {
                ok = 0;
                break;
            }
            const unsigned char *p = (const unsigned char *)PyUnicode_DATA(v);
            for (Py_ssize_t j = 0; j < ns && ok; j++) ok = uniform_of(p, sm[j], out + i * ns + j);
        }
    } else {
        PyObject *oo, *dd;
        Py_buffer off, dat;
        if (!PyArg_ParseTuple(ids, "OO", &oo, &dd)) goto done;
        if (PyObject_GetBuffer(oo, &off, PyBUF_C_CONTIGUOUS) < 0) goto done;
        if (PyObject_GetBuffer(dd, &dat, PyBUF_C_CONTIGUOUS) < 0) {
            PyBuffer_Release(&off);
            goto done;
        }
        const int32_t *o = (const int32_t *)off.buf;
        if (off.len != (n + 1) * 4 || check_offsets(o, n, dat.len) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int32 values");
            PyBuffer_Release(&dat);
            PyBuffer_Release(&off);
            goto done;
        }
        for (Py_ssize_t i = 0; i < n && ok; i++) {
            if (o[i + 1] - o[i] != 32) {
                ok = 0;
                break;
            }
            const unsigned char *p = (const unsigned char *)dat.buf + o[i];
            for (Py_ssize_t j = 0; j < ns && ok; j++) ok = uniform_of(p, sm[j], out + i * ns + j);
        }
        PyBuffer_Release(&dat);
        PyBuffer_Release(&off);
    }
    res = PyBool_FromLong(ok);
done:
    PyBuffer_Release(&dst);
    PyBuffer_Release(&salts);
    return res;
}

/* ---- text: membership, repeated ids ---------------------------------------------------------- */

/* The first (up to) 8 bytes of p[0..len) as a word, the rest zero; `room`: readable bytes from p. */
static inline uint64_t head_word(const char *p, size_t len, size_t room) {
    static const unsigned char ones[16] = {255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0};
    uint64_t w = 0, mask;
    if (room >= 8) {
        memcpy(&w, p, 8); /* one load; the bytes past len are masked off (memcpy: any endianness) */
    } else {
        memcpy(&w, p, room);
    }
    memcpy(&mask, ones + 8 - (len < 8 ? len : 8), 8);
    return w & mask;
}

static PyObject *text_in_into(PyObject *self, PyObject *args) {
    PyObject *oo, *dd, *needles, *dsto;
    Py_buffer off, dat, dst;
    if (!PyArg_ParseTuple(args, "OOO!O", &oo, &dd, &PyTuple_Type, &needles, &dsto)) return NULL;
    Py_ssize_t nn = PyTuple_GET_SIZE(needles);
    if (nn > 64) {
        PyErr_SetString(PyExc_ValueError, "at most 64 needles");
        return NULL;
    }
    size_t nlen[64];
    uint64_t nword[64];
    const char *nptr[64];
    for (Py_ssize_t k = 0; k < nn; k++) {
        PyObject *nd = PyTuple_GET_ITEM(needles, k);
        if (!PyBytes_Check(nd)) {
            PyErr_SetString(PyExc_TypeError, "needles must be a tuple of bytes");
            return NULL;
        }
        nptr[k] = PyBytes_AS_STRING(nd);
        nlen[k] = (size_t)PyBytes_GET_SIZE(nd);
        nword[k] = head_word(nptr[k], nlen[k], nlen[k] + 1); /* bytes objects end with a NUL */
    }
    if (PyObject_GetBuffer(oo, &off, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(dd, &dat, PyBUF_C_CONTIGUOUS) < 0) goto f1;
    if (get_f64(dsto, &dst, 1, "dst") < 0) goto f2;
    Py_ssize_t n = dst.len / 8;
    const int32_t *o = (const int32_t *)off.buf;
    if (off.len != (n + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int32 values");
        goto f3;
    }
    if (check_offsets(o, n, dat.len) < 0) goto f3;
    const char *b = (const char *)dat.buf;
    size_t total = (size_t)dat.len;
    double *out = (double *)dst.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = (size_t)(o[i + 1] - o[i]), at = (size_t)o[i];
        uint64_t w = head_word(b + at, len, total - at);
        int hit = 0;
        if (len <= 8) { /* equal length and bytes: no branch on the data */
            for (Py_ssize_t k = 0; k < nn; k++) hit |= (len == nlen[k]) & (w == nword[k]);
        } else { /* equal length and first 8 bytes, then the rest */
            for (Py_ssize_t k = 0; k < nn && !hit; k++)
                hit = len == nlen[k] && w == nword[k] && memcmp(b + at + 8, nptr[k] + 8, len - 8) == 0;
        }
        out[i] = (double)hit;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&dst);
    PyBuffer_Release(&dat);
    PyBuffer_Release(&off);
    Py_RETURN_NONE;
f3:
    PyBuffer_Release(&dst);
f2:
    PyBuffer_Release(&dat);
f1:
    PyBuffer_Release(&off);
    return NULL;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n, size_t room) {
    /* 8 bytes at a time (multiply and fold), the tail through head_word (one load when there is
     * room); only a bucket choice: equality is checked byte for byte */
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
    }
    h ^= head_word((const char *)p + i, n - i, room - i);
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL; /* splitmix64's finalizer: every bit reaches the bucket */
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    return h ^ (h >> 31);
}

static PyObject *first_repeat_str(PyObject *self, PyObject *args) {
    PyObject *oo, *dd, *ro;
    Py_buffer off, dat, req;
    if (!PyArg_ParseTuple(args, "OOO", &oo, &dd, &ro)) return NULL;
    if (PyObject_GetBuffer(oo, &off, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    PyObject *res = NULL;
    if (PyObject_GetBuffer(dd, &dat, PyBUF_C_CONTIGUOUS) < 0) goto f1;
    if (PyObject_GetBuffer(ro, &req, PyBUF_C_CONTIGUOUS) < 0) goto f2;
    Py_ssize_t n = off.len / 4 - 1, R = req.len / 8 - 1, width = 0;
    const int32_t *o = (const int32_t *)off.buf;
    const int64_t *ro_ = (const int64_t *)req.buf;
    if (n < 0 || R < 0 || check_offsets(o, n, dat.len) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "offsets must hold n + 1 int32 values");
        goto f3;
    }
    for (Py_ssize_t r = 0; r < R; r++) {
        if (ro_[r] < 0 || ro_[r + 1] < ro_[r] || ro_[r + 1] > n) {
            PyErr_SetString(PyExc_ValueError, "request offsets out of range");
            goto f3;
        }
        if (ro_[r + 1] - ro_[r] > width) width = (Py_ssize_t)(ro_[r + 1] - ro_[r]);
    }
    size_t cap = 16;
    while (cap < (size_t)width * 2) cap <<= 1;
    int64_t *slot = PyMem_Malloc(cap * sizeof(int64_t));
    int64_t *stamp = PyMem_Calloc(cap, sizeof(int64_t));
    if (slot == NULL || stamp == NULL) {
        PyMem_Free(slot);
        PyMem_Free(stamp);
        PyErr_NoMemory();
        goto f3;
    }
    const unsigned char *b = (const unsigned char *)dat.buf;
    int64_t found = -1;
    for (Py_ssize_t r = 0; r < R && found < 0; r++) {
        int64_t gen = r + 1;
        for (int64_t j = ro_[r]; j < ro_[r + 1]; j++) {
            size_t len = (size_t)(o[j + 1] - o[j]);
            size_t s = (size_t)hash_bytes(b + o[j], len, (size_t)dat.len - (size_t)o[j]) & (cap - 1);
            int dup = 0;
            while (stamp[s] == gen) {
                int64_t e = slot[s];
                if ((size_t)(o[e + 1] - o[e]) == len && memcmp(b + o[e], b + o[j], len) == 0) {
                    dup = 1;
                    break;
                }
                s = (s + 1) & (cap - 1);
            }
            if (dup) {
                found = j;
                break;
            }
            stamp[s] = gen;
            slot[s] = j;
        }
    }
    PyMem_Free(slot);
    PyMem_Free(stamp);
    res = PyLong_FromLongLong(found);
f3:
    PyBuffer_Release(&req);
f2:
    PyBuffer_Release(&dat);
f1:
    PyBuffer_Release(&off);
    return res;
}

static PyObject *list_in_into(PyObject *self, PyObject *args) {
    PyObject *items, *needles, *dsto;
    Py_buffer dst;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &items, &PyTuple_Type, &needles, &dsto)) return NULL;
    if (get_f64(dsto, &dst, 1, "dst") < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), nn = PyTuple_GET_SIZE(needles);
    if (dst.len != n * 8) {
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "dst must hold one value per item");
        return NULL;
    }
    double *out = (double *)dst.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyList_GET_ITEM(items, i);
        double hit = 0.0;
        for (Py_ssize_t k = 0; k < nn; k++) {
            int eq = PyObject_RichCompareBool(x, PyTuple_GET_ITEM(needles, k), Py_EQ);
            if (eq < 0) {
                PyBuffer_Release(&dst);
                return NULL;
            }
            if (eq) {
                hit = 1.0;
                break;
            }
        }
        out[i] = hit;
    }
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"log1p_into", log1p_into, METH_VARARGS, "dst[i] = log1p(src[i]) as closedloop defines it."},
    {"exp_into", exp_into, METH_VARARGS, "dst[i] = exp(src[i]) (the C library's, as math.exp)."},
    {"sigmoid_into", sigmoid_into, METH_VARARGS, "dst[i] = sigmoid(src[i]) as closedloop defines it."},
    {"contains_into", contains_into, METH_VARARGS, "dst[i] = 1.0 if needle i is in haystack i."},
    {"count_into", count_into, METH_VARARGS, "dst[i] = non-overlapping count of needle in string i."},
    {"gather_into", gather_into, METH_VARARGS, "dst[i] = field `member` of rows[i] (kind 'f', 'i' or 'b')."},
    {"gather_str", gather_str, METH_VARARGS, "field `member` of every row as Arrow string (offsets, data)."},
    {"gather_list", gather_list, METH_VARARGS, "[row.member for row in rows] (rows of the member's exact type)."},
    {"rank_one", rank_one, METH_VARARGS, "One request's ranking drawn from its finite scores, or None."},
    {"rank_rows", rank_rows, METH_VARARGS, "Every row's ranking drawn from its finite scores (done[i] = 0 otherwise)."},
    {"logger_is", logger_is, METH_VARARGS, "out[i] = a logger's marginal P(cols[i] at slot j) of row i, importance-sampled."},
    {"logger_exact", logger_exact, METH_VARARGS, "out[i] = a logger's exact marginal P(cols[i] at slot j) of row i."},
    {"linear_rows", linear_rows, METH_VARARGS, "dst[r] = b + X[r, idx] . w left to right, sigmoid when logistic."},
    {"uniform_hex", uniform_hex, METH_VARARGS, "dst[i, j] = uniform(ids[i], salt j) for hex ids; False if one is not."},
    {"text_in_into", text_in_into, METH_VARARGS, "dst[i] = 1.0 if string i equals one of the needles (bytes)."},
    {"first_repeat_str", first_repeat_str, METH_VARARGS, "The flat position of the first id repeating one of its request, or -1."},
    {"list_in_into", list_in_into, METH_VARARGS, "dst[i] = 1.0 if items[i] == one of the needles (Python ==)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "closedloop._kernels",
    "Column loops that round exactly like the single-decision path.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
