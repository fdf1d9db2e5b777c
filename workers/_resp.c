/* workers._resp: RESP2 replies of pipelined HMGETs framed straight into a cell matrix.
 *
 * The redis_fast reader (workers/fastfeatures.py) sends one HMGET per entity and gets back one
 * array of F bulk strings per entity. hiredis turns every cell into a Python bytes object and
 * numpy then copies those into a byte matrix; both cost more than Redis itself takes to answer.
 * This does the framing in one C pass over the socket buffer, writing each cell zero-padded into
 * a uint8 matrix [rows, F, width] that workers/feastwire.py's numpy decoders read unchanged.
 *
 *   parse_hmget(buf, start, end, row, rows, fields, width, cells, lens, offs, status)
 *       -> (pos, row)
 *
 * Parses whole replies from buf[start:end] into rows row..rows-1 and returns where it stopped:
 * the byte after the last whole reply and the next row to fill. A reply cut off by the end of
 * the data is left for the next call (more bytes from the socket). Per row:
 *   status 0: an array of F bulk strings / nils. cells[r, f] = the value's bytes, zero-padded;
 *             a value of `width` bytes or more cannot be read from the matrix: its first byte is
 *             0xFF (no protobuf field starts with it) and the caller reads it from the buffer.
 *             lens[r, f] = its length (-1 for a nil), offs[r, f] = where it starts in buf.
 *   status 1: an error reply ("-MOVED ..."): lens[r, 0]/offs[r, 0] locate its text.
 *   status 2: any other shape (wrong count, nested, integers): every cell reads as nil.
 * Bytes that are not RESP2 raise ValueError (the caller drops the connection, as for hiredis's
 * ProtocolError). No allocation, no Python objects per cell; the GIL is held (a few µs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define INCOMPLETE (-1)
#define BAD (-2)
#define MAX_DEPTH 16

/* An integer line after a type byte at i: its value, and the index after "\r\n". */
static Py_ssize_t int_line(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, long long *v)
{
    int neg = 0, digits = 0;
    long long x = 0;
    if (i < n && b[i] == '-') {
        neg = 1;
        i++;
    }
    while (i < n && b[i] >= '0' && b[i] <= '9') {
        if (++digits > 18)
            return BAD;
        x = x * 10 + (b[i] - '0');
        i++;
    }
    if (i + 1 >= n)
        return INCOMPLETE;
    if (digits == 0 || b[i] != '\r' || b[i + 1] != '\n')
        return BAD;
    *v = neg ? -x : x;
    return i + 2;
}

/* One RESP2 value starting at i, whatever its type: the index after it. */
static Py_ssize_t skip_value(const unsigned char *b, Py_ssize_t i, Py_ssize_t n, int depth)
{
    long long v;
    Py_ssize_t j;
    if (i >= n)
        return INCOMPLETE;
    switch (b[i]) {
    case '+':
    case '-':
    case ':': {
        const unsigned char *cr = memchr(b + i + 1, '\r', (size_t)(n - i - 1));
        if (cr == NULL)
            return INCOMPLETE;
        j = cr - b;
        if (j + 1 >= n)
            return INCOMPLETE;
        return b[j + 1] == '\n' ? j + 2 : BAD;
    }
    case '$':
        j = int_line(b, i + 1, n, &v);
        if (j < 0 || v < 0)
            return j;
        if (j + v + 2 > n)
            return INCOMPLETE;
        return (b[j + v] == '\r' && b[j + v + 1] == '\n') ? j + v + 2 : BAD;
    case '*':
        j = int_line(b, i + 1, n, &v);
        if (j < 0 || v < 0)
            return j;
        if (depth >= MAX_DEPTH)
            return BAD;
        for (long long k = 0; k < v; k++) {
            j = skip_value(b, j, n, depth + 1);
            if (j < 0)
                return j;
        }
        return j;
    default:
        return BAD;
    }
}

/* A bulk string at j: where its bytes start and how many (-1: nil); the index after it, or 0
 * when j holds another type. */
static Py_ssize_t read_bulk(const unsigned char *b, Py_ssize_t j, Py_ssize_t n, Py_ssize_t *at, long long *v)
{
    Py_ssize_t k;
    if (j >= n)
        return INCOMPLETE;
    if (b[j] != '$')
        return 0;
    k = int_line(b, j + 1, n, v);
    if (k < 0)
        return k;
    *at = k;
    if (*v < 0)
        return *v == -1 ? k : BAD;
    if (*v > INT32_MAX)
        return BAD;
    if (k + *v + 2 > n)
        return INCOMPLETE;
    if (b[k + *v] != '\r' || b[k + *v + 1] != '\n')
        return BAD;
    return k + *v + 2;
}

static void put_cell(const unsigned char *b, Py_ssize_t at, long long v, Py_ssize_t width, unsigned char *cell,
                     int32_t *len, int64_t *off)
{
    if (v < 0) {
        memset(cell, 0, (size_t)width);
    } else if (v < width) {
        memcpy(cell, b + at, (size_t)v);
        memset(cell + v, 0, (size_t)(width - v));
    } else {
        memset(cell, 0, (size_t)width);
        cell[0] = 0xFF;
    }
    *len = (int32_t)(v < 0 ? -1 : v);
    *off = at;
}

/* The F bulk strings of an HMGET reply whose "*F\r\n" ends at j; 0 = not that shape. */
static Py_ssize_t hmget_cells(const unsigned char *b, Py_ssize_t j, Py_ssize_t n, Py_ssize_t fields,
                              Py_ssize_t width, unsigned char *cell, int32_t *len, int64_t *off)
{
    for (Py_ssize_t f = 0; f < fields; f++) {
        Py_ssize_t at;
        long long v;
        j = read_bulk(b, j, n, &at, &v);
        if (j <= 0)
            return j;
        put_cell(b, at, v, width, cell + f * width, len + f, off + f);
    }
    return j;
}

/* A reply of another shape at i (an error, a wrong count, nesting): skipped whole, all cells nil;
 * status 1 for an error (its text at off[0]/len[0]), else 2. */
static Py_ssize_t other_reply(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, Py_ssize_t fields,
                              Py_ssize_t width, unsigned char *cell, int32_t *len, int64_t *off, int8_t *st)
{
    Py_ssize_t next = skip_value(b, i, end, 0);
    if (next <= 0)
        return next;
    memset(cell, 0, (size_t)(fields * width));
    for (Py_ssize_t f = 0; f < fields; f++) {
        len[f] = -1;
        off[f] = i;
    }
    *st = b[i] == '-' ? 1 : 2;
    if (b[i] == '-') {
        off[0] = i + 1;
        len[0] = (int32_t)(next - 2 - (i + 1));
    }
    return next;
}

static int writable(Py_buffer *buf, Py_ssize_t need, const char *name)
{
    if (buf->len < need || !PyBuffer_IsContiguous(buf, 'C')) {
        PyErr_Format(PyExc_ValueError, "parse_hmget: %s needs %zd contiguous bytes, got %zd", name, need, buf->len);
        return 0;
    }
    return 1;
}

#define MAX_FIELDS 256

/* The pairs of an HGETALL reply whose "*2K\r\n" ends at j, each value into its field's cell
 * (fields not asked for are skipped, fields absent stay nil); 0 = not that shape. */
static Py_ssize_t hgetall_cells(const unsigned char *b, Py_ssize_t j, Py_ssize_t n, long long pairs,
                                const unsigned char *names, const int32_t *ends, Py_ssize_t fields,
                                Py_ssize_t width, unsigned char *cell, int32_t *len, int64_t *off, int *hint)
{
    for (Py_ssize_t f = 0; f < fields; f++) {
        memset(cell + f * width, 0, (size_t)width);
        len[f] = -1;
        off[f] = j;
    }
    for (long long p = 0; p < pairs; p++) {
        Py_ssize_t name_at, val_at, c = -1;
        long long name_len, val_len;
        j = read_bulk(b, j, n, &name_at, &name_len);
        if (j <= 0)
            return j;
        j = read_bulk(b, j, n, &val_at, &val_len);
        if (j <= 0)
            return j;
        if (name_len < 0)
            return 0;
        /* Hashes written the same way keep their fields in the same order: try last row's. */
        if (p < MAX_FIELDS && hint[p] >= 0) {
            Py_ssize_t h = hint[p], lo = h ? ends[h - 1] : 0;
            if (ends[h] - lo == name_len && memcmp(names + lo, b + name_at, (size_t)name_len) == 0)
                c = h;
        }
        if (c < 0) {
            for (Py_ssize_t f = 0; f < fields; f++) {
                Py_ssize_t lo = f ? ends[f - 1] : 0;
                if (ends[f] - lo == name_len && memcmp(names + lo, b + name_at, (size_t)name_len) == 0) {
                    c = f;
                    break;
                }
            }
            if (p < MAX_FIELDS)
                hint[p] = (int)c;
        }
        if (c >= 0)
            put_cell(b, val_at, val_len, width, cell + c * width, len + c, off + c);
    }
    return j;
}

/* HGETALL only: the fields asked for, one after the other (names), where each ends (ends), and
 * the field each pair position matched last (hint). NULL for HMGET. */
typedef struct {
    const unsigned char *names;
    const int32_t *ends;
    int *hint;
} ByName;

/* Whole replies from b[i:end] into rows *row.. (see parse_hmget); BAD with *bad_at on junk. */
static Py_ssize_t frame_rows(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, Py_ssize_t *row_io,
                             Py_ssize_t rows, Py_ssize_t fields, Py_ssize_t width, unsigned char *cell0,
                             int32_t *len0, int64_t *off0, int8_t *st, const ByName *by_name, Py_ssize_t *bad_at)
{
    Py_ssize_t row = *row_io;
    for (; row < rows && i < end; row++) {
        unsigned char *cell = cell0 + row * fields * width;
        int32_t *len = len0 + row * fields;
        int64_t *off = off0 + row * fields;
        Py_ssize_t next = 0;
        if (b[i] == '*') {
            long long count;
            Py_ssize_t j = int_line(b, i + 1, end, &count);
            if (j < 0)
                next = j;
            else if (by_name == NULL && count == fields)
                next = hmget_cells(b, j, end, fields, width, cell, len, off);
            else if (by_name != NULL && count >= 0 && count % 2 == 0)
                next = hgetall_cells(b, j, end, count / 2, by_name->names, by_name->ends, fields, width, cell, len,
                                     off, by_name->hint);
            if (next > 0)
                st[row] = 0;
        }
        if (next == 0) /* not a reply of the asked shape: skip it whole */
            next = other_reply(b, i, end, fields, width, cell, len, off, st + row);
        if (next == INCOMPLETE)
            break;
        if (next == BAD) {
            *bad_at = i;
            return BAD;
        }
        i = next;
    }
    *row_io = row;
    return i;
}

static PyObject *framed(Py_ssize_t pos, Py_ssize_t bad_at, Py_ssize_t row)
{
    if (pos == BAD)
        return PyErr_Format(PyExc_ValueError, "Redis sent bytes that are not RESP2 at offset %zd", bad_at);
    return Py_BuildValue("nn", pos, row);
}

static int check_rows(Py_buffer *src, Py_ssize_t start, Py_ssize_t end, Py_ssize_t row, Py_ssize_t rows,
                      Py_ssize_t fields, Py_ssize_t width, Py_buffer *cells, Py_buffer *lens, Py_buffer *offs,
                      Py_buffer *status)
{
    if (start < 0 || end < start || end > src->len || row < 0 || rows < row || fields < 1 || width < 1) {
        PyErr_SetString(PyExc_ValueError, "parse: bad bounds");
        return 0;
    }
    return writable(cells, rows * fields * width, "cells") && writable(lens, rows * fields * 4, "lens") &&
           writable(offs, rows * fields * 8, "offs") && writable(status, rows, "status");
}

static PyObject *parse_hmget(PyObject *self, PyObject *args)
{
    Py_buffer src, cells, lens, offs, status;
    Py_ssize_t start, end, row, rows, fields, width, bad_at = 0;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnnnnw*w*w*w*", &src, &start, &end, &row, &rows, &fields, &width, &cells,
                          &lens, &offs, &status))
        return NULL;
    if (check_rows(&src, start, end, row, rows, fields, width, &cells, &lens, &offs, &status)) {
        Py_ssize_t pos = frame_rows((const unsigned char *)src.buf, start, end, &row, rows, fields, width,
                                    (unsigned char *)cells.buf, (int32_t *)lens.buf, (int64_t *)offs.buf,
                                    (int8_t *)status.buf, NULL, &bad_at);
        result = framed(pos, bad_at, row);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&cells);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&status);
    return result;
}

/* parse_hgetall(buf, start, end, row, rows, names, ends, width, cells, lens, offs, status)
 * -> (pos, row): parse_hmget's contract for HGETALL replies. names: the fields asked for, one
 * after the other; ends: int32 [F], where each ends in names. */
static PyObject *parse_hgetall(PyObject *self, PyObject *args)
{
    Py_buffer src, names, ends, cells, lens, offs, status;
    Py_ssize_t start, end, row, rows, width, fields, bad_at = 0;
    PyObject *result = NULL;
    int hint[MAX_FIELDS];
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnny*y*nw*w*w*w*", &src, &start, &end, &row, &rows, &names, &ends, &width,
                          &cells, &lens, &offs, &status))
        return NULL;
    fields = ends.len / 4;
    if (check_rows(&src, start, end, row, rows, fields, width, &cells, &lens, &offs, &status)) {
        const int32_t *end_of = (const int32_t *)ends.buf;
        if (end_of[fields - 1] > names.len) {
            PyErr_SetString(PyExc_ValueError, "parse_hgetall: names shorter than ends say");
        } else {
            ByName by_name = {(const unsigned char *)names.buf, end_of, hint};
            for (int p = 0; p < MAX_FIELDS; p++)
                hint[p] = p < fields ? p : -1;
            Py_ssize_t pos = frame_rows((const unsigned char *)src.buf, start, end, &row, rows, fields, width,
                                        (unsigned char *)cells.buf, (int32_t *)lens.buf, (int64_t *)offs.buf,
                                        (int8_t *)status.buf, &by_name, &bad_at);
            result = framed(pos, bad_at, row);
        }
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&names);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&cells);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&status);
    return result;
}

/* ---- decode_cells: protobuf cells of the matrix into numbers, in one pass ------------------
 *
 *   decode_cells(cells, lens, kinds, numbers, ts_sec, ts_nanos, odd) -> odd cell count
 *
 * cells [u, F, width] and lens [u, F] as parse_hmget wrote them; kinds: one byte per field:
 *   'f' float_val (tag 0x35 + 4 bytes LE)   'd' double_val (0x29 + 8)   'l' int64_val (0x20 varint)
 *   'i' int32_val (0x18 varint, low 32 bits sign-extended)   'b' bool_val (0x38 varint, 0/1)
 *   'u' unix_timestamp_val (0x40 varint)   'x' any other numeric kind (always odd)
 *   's' a string cell (skipped)   't' a google.protobuf.Timestamp (0x08 seconds, 0x10 nanos)
 * Numeric fields fill numbers [u, #numeric] in order (NaN = no value), timestamps fill ts_sec /
 * ts_nanos [u, #t] (0 = none). A cell read here is exactly one field of the expected type and
 * nothing else; any other bytes (other value type, extra fields, longer than the matrix) are
 * flagged in odd [u, F] and left NaN / 0 for the caller to read through protobuf, as Feast does.
 * workers/feastwire.py decodes the same matrix with numpy (the hiredis path); tests compare them.
 */
static int varint(const unsigned char *p, Py_ssize_t n, uint64_t *v)
{
    uint64_t x = 0;
    for (Py_ssize_t i = 0; i < n && i < 10; i++) {
        if (i == 9 && p[i] > 1)
            return 0;
        x |= (uint64_t)(p[i] & 0x7F) << (7 * i);
        if (p[i] < 0x80) {
            *v = x;
            return (int)(i + 1);
        }
    }
    return 0;
}

static int number_cell(const unsigned char *c, Py_ssize_t len, char kind, double *out)
{
    uint64_t v;
    int k;
    switch (kind) {
    case 'f': {
        float f;
        if (len != 5 || c[0] != 0x35)
            return 0;
        memcpy(&f, c + 1, 4);
        *out = (double)f;
        return 1;
    }
    case 'd':
        if (len != 9 || c[0] != 0x29)
            return 0;
        memcpy(out, c + 1, 8);
        return 1;
    case 'l':
    case 'u':
        if (len < 2 || c[0] != (kind == 'l' ? 0x20 : 0x40) || (k = varint(c + 1, len - 1, &v)) != len - 1)
            return 0;
        *out = (double)(int64_t)v;
        return 1;
    case 'i':
        if (len < 2 || c[0] != 0x18 || (k = varint(c + 1, len - 1, &v)) != len - 1)
            return 0;
        *out = (double)(int32_t)(uint32_t)(v & 0xFFFFFFFFu);
        return 1;
    case 'b':
        if (len < 2 || c[0] != 0x38 || (k = varint(c + 1, len - 1, &v)) != len - 1)
            return 0;
        *out = v != 0 ? 1.0 : 0.0;
        return 1;
    default:
        return 0;
    }
}

static int timestamp_cell(const unsigned char *c, Py_ssize_t len, int64_t *sec, int64_t *nanos)
{
    uint64_t s = 0, ns = 0;
    Py_ssize_t i = 0;
    int k;
    if (i < len && c[i] == 0x08) {
        if ((k = varint(c + 1, len - 1, &s)) == 0)
            return 0;
        i = 1 + k;
    }
    if (i < len && c[i] == 0x10) {
        if ((k = varint(c + i + 1, len - i - 1, &ns)) == 0)
            return 0;
        i += 1 + k;
    }
    if (i != len || i == 0)
        return 0;
    *sec = (int64_t)s;
    *nanos = (int64_t)(int32_t)(uint32_t)(ns & 0xFFFFFFFFu);
    return 1;
}

static PyObject *decode_cells(PyObject *self, PyObject *args)
{
    Py_buffer cells, lens, kinds, numbers, ts_sec, ts_nanos, odd;
    Py_ssize_t u, width, n_odd = 0;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*w*w*nn", &cells, &lens, &kinds, &numbers, &ts_sec, &ts_nanos, &odd, &u,
                          &width))
        return NULL;
    {
        Py_ssize_t f_count = kinds.len, nn = 0, nt = 0;
        const char *kind = (const char *)kinds.buf;
        for (Py_ssize_t f = 0; f < f_count; f++) {
            if (kind[f] == 't')
                nt++;
            else if (kind[f] != 's')
                nn++;
        }
        if (u < 0 || width < 1 || !writable(&cells, u * f_count * width, "cells") ||
            !writable(&lens, u * f_count * 4, "lens") || !writable(&numbers, u * nn * 8, "numbers") ||
            !writable(&ts_sec, u * nt * 8, "ts_sec") || !writable(&ts_nanos, u * nt * 8, "ts_nanos") ||
            !writable(&odd, u * f_count, "odd"))
            goto done;
        const unsigned char *cell = (const unsigned char *)cells.buf;
        const int32_t *len = (const int32_t *)lens.buf;
        double *num = (double *)numbers.buf;
        int64_t *sec = (int64_t *)ts_sec.buf, *nanos = (int64_t *)ts_nanos.buf;
        unsigned char *bad = (unsigned char *)odd.buf;
        for (Py_ssize_t r = 0; r < u; r++) {
            for (Py_ssize_t f = 0; f < f_count; f++, cell += width, len++, bad++) {
                Py_ssize_t n = *len;
                *bad = 0;
                if (kind[f] == 's')
                    continue;
                if (kind[f] == 't') {
                    *sec = *nanos = 0;
                    if (n > 0 && (n >= width || !timestamp_cell(cell, n, sec, nanos))) {
                        *bad = 1;
                        n_odd++;
                    }
                    sec++;
                    nanos++;
                    continue;
                }
                *num = Py_NAN;
                if (n > 0 && (n >= width || !number_cell(cell, n, kind[f], num))) {
                    *num = Py_NAN;
                    *bad = 1;
                    n_odd++;
                }
                num++;
            }
        }
        result = PyLong_FromSsize_t(n_odd);
    }
done:
    PyBuffer_Release(&cells);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&kinds);
    PyBuffer_Release(&numbers);
    PyBuffer_Release(&ts_sec);
    PyBuffer_Release(&ts_nanos);
    PyBuffer_Release(&odd);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_hmget", parse_hmget, METH_VARARGS, "Frame pipelined HMGET replies into a cell matrix (see module doc)."},
    {"parse_hgetall", parse_hgetall, METH_VARARGS, "The same for HGETALL replies (see parse_hgetall's comment)."},
    {"decode_cells", decode_cells, METH_VARARGS, "Protobuf cells of the matrix into numbers (see module doc)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_resp", "RESP2 HMGET/HGETALL replies into a cell matrix.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__resp(void)
{
    return PyModule_Create(&module);
}
