/* workers.pipeline._scan: byte scans decode runs once per message.
 *
 *   colons(payload: bytes) -> int      how many b':' the payload holds
 *   key_colons(payload: bytes) -> int  how many b':' outside JSON strings: in valid JSON, the keys
 *                                      of all its objects (decode_fast.py's duplicate/unknown guard)
 *
 * Decode compares it with the keys orjson returned (workers/pipeline/decode.py): a payload with
 * no more colons than keys has no room for a duplicate key. bytes.count costs ~10x this on a
 * 200-byte event (a byte-at-a-time loop behind a method call); memchr jumps between colons.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static Py_ssize_t count_colons(const char *p, const char *end)
{
    Py_ssize_t n = 0;
    while (p < end && (p = memchr(p, ':', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

static PyObject *colons(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "colons() takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(arg);
    return PyLong_FromSsize_t(count_colons(p, p + PyBytes_GET_SIZE(arg)));
}

static PyObject *key_colons(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "key_colons() takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(arg);
    const char *end = p + PyBytes_GET_SIZE(arg);
    Py_ssize_t n = 0;
    /* memchr from quote to quote: colons between strings count; a quote preceded by an odd
     * number of backslashes is escaped and does not end its string. */
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL) {
            n += count_colons(p, end);
            break;
        }
        n += count_colons(p, q);
        p = q + 1;
        for (;;) {  /* inside a string: find its closing quote */
            q = memchr(p, '"', (size_t)(end - p));
            if (q == NULL)
                return PyLong_FromSsize_t(n);  /* unterminated: not JSON; the decoder says so */
            const char *b = q;
            while (b > p && b[-1] == '\\')
                b--;
            p = q + 1;
            if (((q - b) & 1) == 0)
                break;
        }
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"colons", colons, METH_O, "colons(payload: bytes) -> int: how many b':' the payload holds"},
    {"key_colons", key_colons, METH_O, "key_colons(payload: bytes) -> int: how many b':' outside JSON strings"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "Byte scans decode runs once per message.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void)
{
    return PyModule_Create(&module);
}
