/*
 * closedloop._trees: scoring with a forest of binary decision trees (LightGBM's numerical-split
 * semantics), one kernel for one row and for a batch, so the two paths are bitwise equal by
 * construction: both call score_rows() below (one with a single row of doubles).
 *
 *   Forest(roots, feature, threshold, flags, left, right, leaves, n_inputs,
 *          transform, scale, divisor, error)
 *       roots      int32[n_trees]   a tree's first node (>= 0) or ~leaf for a one-leaf tree
 *       feature    int32[n_nodes]   the input column a node reads, in [0, n_inputs)
 *       threshold  float64[n_nodes] go left when value <= threshold
 *       flags      uint8[n_nodes]   bit 0: missing values go left; bits 1-2: missing type
 *                                   (0 none, 1 zero, 2 NaN)
 *       left/right int32[n_nodes]   the next node (> this node, so every walk ends) or ~leaf
 *       leaves     float64[n_leaves]
 *       transform  0: the raw sum; 1: closedloop's sigmoid(scale * raw)
 *       divisor    > 0: raw /= divisor before the transform (LightGBM's average_output)
 *       error      the exception type raised for bad input (closedloop's IntelligenceError)
 *
 *   forest.one(x, context=None) -> (score,)   x: a tuple/list of n_inputs numbers
 *   forest.batch_into(X, out)                 X: 2-D float64 (n, n_inputs), any strides;
 *                                             out: contiguous float64[n]
 *
 * Per node (LightGBM's Tree::NumericalDecision, after its predictor turned |v| <= kZeroThreshold
 * into 0.0 when it read the row — done here once per row and column, clean_row):
 *     NaN:  missing type NaN -> the default direction; otherwise it is read as 0.0
 *     |v| <= kZeroThreshold (1e-35f as a double) -> 0.0
 *     missing type zero and v == 0.0 -> the default direction
 *     otherwise v <= threshold -> left, else right
 * The leaves reached are summed left to right over the trees starting from 0.0.
 *
 * Built with -ffp-contract=off: no fused multiply-add, every operation rounds as Python's does;
 * exp is the C library's, as math.exp (closedloop.base.numeric.sigmoid).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static const double kZeroThreshold = 1e-35f; /* LightGBM's meta.h: a float literal, as a double */

typedef struct {
    double threshold;
    int32_t feature;
    int32_t left;
    int32_t right;
    uint8_t flags;
} Node;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_trees, n_nodes, n_leaves, n_inputs, n_used;
    Node *nodes;
    double *leaves;
    int32_t *roots;
    Py_ssize_t *used; /* the input columns some node reads, ascending */
    int transform;
    double scale;
    double divisor;
    PyObject *error;
} Forest;

static double cl_sigmoid(double z) {
    /* closedloop.base.numeric.sigmoid */
    if (z >= 0.0) {
        return 1.0 / (1.0 + exp(-z));
    }
    double e = exp(z);
    return e / (1.0 + e);
}

/* A row's value of column j as every node reads it (LightGBM's predictor, when it reads the row):
 * NaN as 0.0 (with its NaN-ness kept apart, for nodes whose missing type is NaN), |v| <=
 * kZeroThreshold as 0.0, anything else as it is. Done once per row and column, not per node. */
static inline void clean_row(const Forest *F, const double *row, Py_ssize_t cs, double *v, uint8_t *nan) {
    for (Py_ssize_t k = 0; k < F->n_used; k++) {
        Py_ssize_t j = F->used[k];
        double x = row[j * cs];
        if (isnan(x)) {
            nan[j] = 1;
            x = 0.0;
        } else {
            nan[j] = 0;
            if (fabs(x) <= kZeroThreshold) x = 0.0;
        }
        v[j] = x;
    }
}

/* The leaf a cleaned row (v, nan: clean_row) reaches in the tree starting at `node`. */
static inline double leaf_of(const Forest *F, int32_t node, const double *v, const uint8_t *nan) {
    const Node *nodes = F->nodes;
    while (node >= 0) {
        const Node *nd = &nodes[node];
        int32_t j = nd->feature;
        double x = v[j];
        uint8_t fl = nd->flags;
        if (fl & 6) { /* a missing type: NaN (2) takes the default direction for NaN; zero (1) for 0.0 */
            int missing = (fl >> 1) & 3;
            if ((missing == 2 && nan[j]) || (missing == 1 && x == 0.0)) {
                node = (fl & 1) ? nd->left : nd->right;
                continue;
            }
        }
        node = (x <= nd->threshold) ? nd->left : nd->right;
    }
    return F->leaves[~node];
}

/* The one kernel, for one row and for a batch alike: out[i] = the score of row i (i < n), whose
 * column j is base[i * rs + j * cs]: 0.0 + leaf(tree 0) + leaf(tree 1) + ... in tree order, then
 * the average and the transform — the same operations whether the row came alone (one) or with
 * others (batch). v and nan are the caller's workspace of n_inputs entries. */
static void score_rows(const Forest *F, const double *base, Py_ssize_t rs, Py_ssize_t cs, Py_ssize_t n, double *out,
                       double *v, uint8_t *nan) {
    for (Py_ssize_t i = 0; i < n; i++) {
        clean_row(F, base + i * rs, cs, v, nan);
        double raw = 0.0;
        for (Py_ssize_t t = 0; t < F->n_trees; t++) raw += leaf_of(F, F->roots[t], v, nan);
        if (F->divisor > 0.0) raw = raw / F->divisor;
        out[i] = F->transform == 1 ? cl_sigmoid(F->scale * raw) : raw;
    }
}

static void Forest_dealloc(Forest *self) {
    PyMem_Free(self->nodes);
    PyMem_Free(self->leaves);
    PyMem_Free(self->roots);
    PyMem_Free(self->used);
    Py_XDECREF(self->error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int get_array(PyObject *obj, Py_buffer *view, const char *fmt, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = view->format ? view->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    if (view->itemsize != itemsize || strcmp(f, fmt) != 0 || view->ndim != 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a one-dimensional contiguous array of format '%s'", name, fmt);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *Forest_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *o_roots, *o_feat, *o_thr, *o_flags, *o_left, *o_right, *o_leaves, *error;
    Py_ssize_t n_inputs;
    int transform;
    double scale, divisor;
    static char *kwlist[] = {"roots", "feature", "threshold", "flags", "left", "right", "leaves",
                             "n_inputs", "transform", "scale", "divisor", "error", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOniddO", kwlist, &o_roots, &o_feat, &o_thr,
                                     &o_flags, &o_left, &o_right, &o_leaves, &n_inputs, &transform,
                                     &scale, &divisor, &error))
        return NULL;
    if (!PyType_Check(error) || !PyType_IsSubtype((PyTypeObject *)error, (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "error must be an exception type");
        return NULL;
    }
    Py_buffer b[7];
    const char *fmts[7] = {"i", "i", "d", "B", "i", "i", "d"};
    const Py_ssize_t sizes[7] = {4, 4, 8, 1, 4, 4, 8};
    const char *names[7] = {"roots", "feature", "threshold", "flags", "left", "right", "leaves"};
    PyObject *objs[7] = {o_roots, o_feat, o_thr, o_flags, o_left, o_right, o_leaves};
    int got = 0;
    Forest *self = NULL;
    unsigned char *seen = NULL;
    for (; got < 7; got++) {
        if (get_array(objs[got], &b[got], fmts[got], sizes[got], names[got]) < 0) goto fail;
    }
    Py_ssize_t n_trees = b[0].shape[0], n_nodes = b[1].shape[0], n_leaves = b[6].shape[0];
    if (b[2].shape[0] != n_nodes || b[3].shape[0] != n_nodes || b[4].shape[0] != n_nodes ||
        b[5].shape[0] != n_nodes) {
        PyErr_SetString(PyExc_ValueError, "feature, threshold, flags, left and right must have one entry per node");
        goto fail;
    }
    if (n_trees < 1 || n_leaves < 1 || n_inputs < 1 || n_nodes > INT32_MAX || n_leaves > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a forest needs at least one tree, one leaf and one input");
        goto fail;
    }
    if (transform != 0 && transform != 1) {
        PyErr_SetString(PyExc_ValueError, "transform must be 0 (raw) or 1 (sigmoid)");
        goto fail;
    }
    if (!isfinite(scale) || !(divisor >= 0.0) || !isfinite(divisor)) {
        PyErr_SetString(PyExc_ValueError, "scale must be finite and divisor finite and >= 0");
        goto fail;
    }
    const int32_t *roots = b[0].buf, *feat = b[1].buf, *left = b[4].buf, *right = b[5].buf;
    const double *thr = b[2].buf, *leaves = b[6].buf;
    const uint8_t *flags = b[3].buf;
    /* Memory safety: every reference in range, and children after their parent (walks end). */
    for (Py_ssize_t t = 0; t < n_trees; t++) {
        int32_t r = roots[t];
        if ((r >= 0 && r >= n_nodes) || (r < 0 && ~r >= n_leaves)) {
            PyErr_Format(PyExc_ValueError, "tree %zd: root %d out of range", t, (int)r);
            goto fail;
        }
    }
    seen = PyMem_Calloc((size_t)n_inputs, 1);
    if (seen == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t n_used = 0;
    for (Py_ssize_t i = 0; i < n_nodes; i++) {
        int32_t c[2] = {left[i], right[i]};
        for (int k = 0; k < 2; k++) {
            if ((c[k] >= 0 && (c[k] <= i || c[k] >= n_nodes)) || (c[k] < 0 && ~c[k] >= n_leaves)) {
                PyErr_Format(PyExc_ValueError, "node %zd: child %d out of range", i, (int)c[k]);
                goto fail;
            }
        }
        if (feat[i] < 0 || feat[i] >= n_inputs) {
            PyErr_Format(PyExc_ValueError, "node %zd: feature %d out of range", i, (int)feat[i]);
            goto fail;
        }
        if (((flags[i] >> 1) & 3) == 3 || (flags[i] & ~7u) != 0 || isnan(thr[i])) {
            PyErr_Format(PyExc_ValueError, "node %zd: bad flags or threshold", i);
            goto fail;
        }
        if (!seen[feat[i]]) {
            seen[feat[i]] = 1;
            n_used++;
        }
    }
    self = (Forest *)type->tp_alloc(type, 0);
    if (self == NULL) goto fail;
    self->n_trees = n_trees;
    self->n_nodes = n_nodes;
    self->n_leaves = n_leaves;
    self->n_inputs = n_inputs;
    self->n_used = n_used;
    self->transform = transform;
    self->scale = scale;
    self->divisor = divisor;
    self->nodes = PyMem_Malloc(sizeof(Node) * (size_t)(n_nodes ? n_nodes : 1));
    self->leaves = PyMem_Malloc(sizeof(double) * (size_t)n_leaves);
    self->roots = PyMem_Malloc(sizeof(int32_t) * (size_t)n_trees);
    self->used = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n_used ? n_used : 1));
    Py_INCREF(error);
    self->error = error;
    if (!self->nodes || !self->leaves || !self->roots || !self->used) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n_nodes; i++) {
        self->nodes[i].threshold = thr[i];
        self->nodes[i].feature = feat[i];
        self->nodes[i].left = left[i];
        self->nodes[i].right = right[i];
        self->nodes[i].flags = flags[i];
    }
    memcpy(self->leaves, leaves, sizeof(double) * (size_t)n_leaves);
    memcpy(self->roots, roots, sizeof(int32_t) * (size_t)n_trees);
    for (Py_ssize_t j = 0, k = 0; j < n_inputs; j++) {
        if (seen[j]) self->used[k++] = j;
    }
    PyMem_Free(seen);
    for (int i = 0; i < 7; i++) PyBuffer_Release(&b[i]);
    return (PyObject *)self;
fail:
    PyMem_Free(seen);
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    Py_XDECREF(self);
    return NULL;
}

#define STACK_INPUTS 128

static PyObject *Forest_one(Forest *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "one(x, context=None) takes one or two arguments");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "");
    if (seq == NULL) {
        PyErr_Clear();
        PyErr_Format(self->error, "The feature vector given to a tree model must be a tuple or list of %zd numbers. Got %.100s instead.",
                     self->n_inputs, Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != self->n_inputs) {
        PyErr_Format(self->error, "The feature vector given to a tree model must hold %zd numbers. Got %zd instead.",
                     self->n_inputs, n);
        Py_DECREF(seq);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    double stack[STACK_INPUTS];
    double *row = stack;
    if (n > STACK_INPUTS) {
        row = PyMem_Malloc(sizeof(double) * (size_t)n);
        if (row == NULL) {
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
    }
    for (Py_ssize_t k = 0; k < self->n_used; k++) {
        Py_ssize_t j = self->used[k];
        PyObject *o = items[j];
        double v;
        if (PyFloat_CheckExact(o)) {
            v = PyFloat_AS_DOUBLE(o);
        } else {
            v = PyFloat_AsDouble(o);
            if (v == -1.0 && PyErr_Occurred()) {
                PyErr_Clear();
                PyErr_Format(self->error, "Feature %zd given to a tree model must be a number. Got %.100s instead.",
                             j, Py_TYPE(o)->tp_name);
                if (row != stack) PyMem_Free(row);
                Py_DECREF(seq);
                return NULL;
            }
        }
        row[j] = v;
    }
    double s;
    double vstack[STACK_INPUTS];
    uint8_t nstack[STACK_INPUTS];
    double *v = vstack;
    uint8_t *nan = nstack;
    if (n > STACK_INPUTS) {
        v = PyMem_Malloc((sizeof(double) + 1) * (size_t)n);
        if (v == NULL) {
            if (row != stack) PyMem_Free(row);
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
        nan = (uint8_t *)(v + n);
    }
    score_rows(self, row, 0, 1, 1, &s, v, nan);
    if (v != vstack) PyMem_Free(v);
    if (row != stack) PyMem_Free(row);
    Py_DECREF(seq);
    PyObject *f = PyFloat_FromDouble(s);
    if (f == NULL) return NULL;
    PyObject *out = PyTuple_New(1);
    if (out == NULL) {
        Py_DECREF(f);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, f);
    return out;
}

static PyObject *Forest_batch_into(Forest *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_buffer X, out;
    if (!PyArg_ParseTuple(args, "OO", &xo, &oo)) return NULL;
    if (PyObject_GetBuffer(xo, &X, PyBUF_STRIDES | PyBUF_FORMAT) < 0) return NULL;
    const char *f = X.format ? X.format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    if (X.ndim != 2 || X.itemsize != 8 || strcmp(f, "d") != 0 || X.strides[0] % 8 != 0 ||
        X.strides[1] % 8 != 0 || ((uintptr_t)X.buf) % 8 != 0) {
        PyBuffer_Release(&X);
        PyErr_SetString(PyExc_TypeError, "X must be a 2-D aligned float64 array");
        return NULL;
    }
    if (X.shape[1] != self->n_inputs) {
        PyErr_Format(self->error, "The feature matrix given to a tree model must have %zd columns. Got %zd instead.",
                     self->n_inputs, X.shape[1]);
        PyBuffer_Release(&X);
        return NULL;
    }
    if (get_array(oo, &out, "d", 8, "out") < 0) {
        PyBuffer_Release(&X);
        return NULL;
    }
    Py_ssize_t n = X.shape[0];
    if (out.shape[0] != n) {
        PyBuffer_Release(&X);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "out must have one entry per row of X");
        return NULL;
    }
    const double *base = X.buf;
    Py_ssize_t rs = X.strides[0] / 8, cs = X.strides[1] / 8;
    double *o = out.buf;
    double *v = PyMem_Malloc((sizeof(double) + 1) * (size_t)(self->n_inputs ? self->n_inputs : 1));
    if (v == NULL) {
        PyBuffer_Release(&X);
        PyBuffer_Release(&out);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    score_rows(self, base, rs, cs, n, o, v, (uint8_t *)(v + self->n_inputs));
    Py_END_ALLOW_THREADS
    PyMem_Free(v);
    PyBuffer_Release(&X);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyObject *Forest_get_n_trees(Forest *self, void *closure) { return PyLong_FromSsize_t(self->n_trees); }
static PyObject *Forest_get_n_inputs(Forest *self, void *closure) { return PyLong_FromSsize_t(self->n_inputs); }

static PyGetSetDef Forest_getset[] = {
    {"n_trees", (getter)Forest_get_n_trees, NULL, "number of trees", NULL},
    {"n_inputs", (getter)Forest_get_n_inputs, NULL, "length of a feature vector", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Forest_methods[] = {
    {"one", (PyCFunction)(void (*)(void))Forest_one, METH_FASTCALL, "one(x, context=None) -> (score,)"},
    {"batch_into", (PyCFunction)Forest_batch_into, METH_VARARGS, "batch_into(X, out): out[i] = score of row i"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "closedloop._trees.Forest",
    .tp_basicsize = sizeof(Forest),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A validated forest of numerical decision trees (see the module docstring).",
    .tp_new = Forest_new,
    .tp_dealloc = (destructor)Forest_dealloc,
    .tp_methods = Forest_methods,
    .tp_getset = Forest_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "closedloop._trees",
    "Decision-tree forests scored by one kernel for a row and for a batch.", -1, NULL,
};

PyMODINIT_FUNC PyInit__trees(void) {
    if (PyType_Ready(&ForestType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&ForestType);
    if (PyModule_AddObject(m, "Forest", (PyObject *)&ForestType) < 0) {
        Py_DECREF(&ForestType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
