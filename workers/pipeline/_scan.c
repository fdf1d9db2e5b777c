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

static PyObject *colons(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "colons() takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(arg);
    const char *end = p + PyBytes_GET_SIZE(arg);
    Py_ssize_t n = 0;
    while (p < end && (p = memchr(p, ':', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return PyLong_FromSsize_t(n);
}

static PyObject *key_colons(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "key_colons() takes bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    const unsigned char *end = p + PyBytes_GET_SIZE(arg);
    Py_ssize_t n = 0;
    while (p < end) {
        unsigned char c = *p++;
        if (c == ':') {
            n++;
        } else if (c == '"') {  /* a string: skip to its closing quote, past backslash escapes */
            while (p < end) {
                c = *p++;
                if (c == '\\') {
                    p++;
                } else if (c == '"') {
                    break;
                }
            }
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
