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
 *   gather_str(rows, member) -> (offsets, data)
 *                             the field's strings as an Arrow string column: int32 offsets
 *                             (n + 1) and UTF-8 data, as bytes
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

static PyMethodDef methods[] = {
    {"log1p_into", log1p_into, METH_VARARGS, "dst[i] = log1p(src[i]) as closedloop defines it."},
    {"exp_into", exp_into, METH_VARARGS, "dst[i] = exp(src[i]) (the C library's, as math.exp)."},
    {"sigmoid_into", sigmoid_into, METH_VARARGS, "dst[i] = sigmoid(src[i]) as closedloop defines it."},
    {"contains_into", contains_into, METH_VARARGS, "dst[i] = 1.0 if needle i is in haystack i."},
    {"count_into", count_into, METH_VARARGS, "dst[i] = non-overlapping count of needle in string i."},
    {"gather_into", gather_into, METH_VARARGS, "dst[i] = field `member` of rows[i] (kind 'f', 'i' or 'b')."},
    {"gather_str", gather_str, METH_VARARGS, "field `member` of every row as Arrow string (offsets, data)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "closedloop._kernels",
    "Column loops that round exactly like the single-decision path.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
