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
 *
 * Built with -ffp-contract=off so that no multiply-add is fused: every operation is the single
 * correctly rounded IEEE-754 operation Python performs. src/dst are contiguous float64 buffers;
 * offsets are int32 (Arrow string offsets), data is bytes.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
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

static PyMethodDef methods[] = {
    {"log1p_into", log1p_into, METH_VARARGS, "dst[i] = log1p(src[i]) as closedloop defines it."},
    {"exp_into", exp_into, METH_VARARGS, "dst[i] = exp(src[i]) (the C library's, as math.exp)."},
    {"sigmoid_into", sigmoid_into, METH_VARARGS, "dst[i] = sigmoid(src[i]) as closedloop defines it."},
    {"contains_into", contains_into, METH_VARARGS, "dst[i] = 1.0 if needle i is in haystack i."},
    {"count_into", count_into, METH_VARARGS, "dst[i] = non-overlapping count of needle in string i."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "closedloop._kernels",
    "Column loops that round exactly like the single-decision path.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
