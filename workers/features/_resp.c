/* workers._resp: pipelined HMGET / HGETALL replies read straight from the socket buffer.
 *
 * The redis_fast reader (workers/features/redis_fast.py) sends one HMGET or HGETALL per entity. hiredis
 * would turn every cell into a Python bytes object; this frames the replies in one C pass over
 * the socket buffer and decodes each cell's serialized feast ValueProto into numbers as it goes:
 * no allocation, no Python object per cell, the GIL held for a few µs.
 *
 *   parse_hmget(buf, start, end, row, rows, kinds, lens, offs, status, numbers, ts_sec, ts_nanos, odd)
 *   parse_hgetall(buf, start, end, row, rows, names, ends, kinds, lens, offs, status, numbers, ts_sec,
 *                 ts_nanos, odd)
 *       -> (pos, row, odd_cells)
 *
 * Parses whole replies from buf[start:end] into rows row..rows-1 and returns where it stopped:
 * the byte after the last whole reply, the next row to fill, and how many cells of the rows
 * parsed were flagged odd. A reply cut off by the end of the data is left for the next call (more
 * bytes from the socket). kinds: one byte per field F (below). Per row r:
 *   status 0: an array of F bulk strings / nils (HMGET), or of field/value pairs (HGETALL: names
 *             holds the F field names one after the other, ends [F] int32 where each ends; pairs
 *             of other fields are skipped, fields absent read nil). lens[r, f] = the value's
 *             length (-1 for nil), offs[r, f] = where it starts in buf.
 *   status 1: an error reply ("-MOVED ..."): lens[r, 0]/offs[r, 0] locate its text; cells nil.
 *   status 2: any other shape (wrong count, nested, integers): every cell reads as nil.
 * Bytes that are not RESP2 raise ValueError (the caller drops the connection, as for hiredis's
 * ProtocolError).
 *
 * Decoding, by kind:
 *   'f' float_val (tag 0x35 + 4 bytes LE)   'd' double_val (0x29 + 8)   'l' int64_val (0x20 varint)
 *   'i' int32_val (0x18 varint, low 32 bits sign-extended)   'b' bool_val (0x38 varint, 0/1)
 *   'u' unix_timestamp_val (0x40 varint)   'x' any other numeric kind (always odd)
 *   's' a string cell (not decoded here: see Interner)   't' a google.protobuf.Timestamp
 * Numeric fields fill numbers [rows, #numeric] in order (NaN = no value), timestamps fill ts_sec /
 * ts_nanos [rows, #t] (0 = none). A cell read here is exactly one field of the expected type and
 * nothing else; any other bytes (another value type, extra fields) are flagged in odd [rows, F]
 * and left NaN / 0 for the caller to read through protobuf, as Feast does. workers/features/wire.py
 * decodes the same cells with numpy on the hiredis path; tests compare both with protobuf.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INCOMPLETE (-1)
#define BAD (-2)
#define MAX_DEPTH 16
#define MAX_FIELDS 256

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
static inline Py_ssize_t read_bulk(const unsigned char *b, Py_ssize_t j, Py_ssize_t n, Py_ssize_t *at,
                                   long long *v)
{
    Py_ssize_t k;
    if (j >= n)
        return INCOMPLETE;
    if (b[j] != '$')
        return 0;
    /* Feast's cells and field names are short: a one- or two-digit length, read directly. */
    if (j + 4 < n && b[j + 1] >= '0' && b[j + 1] <= '9' && b[j + 2] == '\r' && b[j + 3] == '\n') {
        *v = b[j + 1] - '0';
        k = j + 4;
    } else if (j + 5 < n && b[j + 1] >= '1' && b[j + 1] <= '9' && b[j + 2] >= '0' && b[j + 2] <= '9' &&
               b[j + 3] == '\r' && b[j + 4] == '\n') {
        *v = (b[j + 1] - '0') * 10 + (b[j + 2] - '0');
        k = j + 5;
    } else {
        k = int_line(b, j + 1, n, v);
        if (k < 0)
            return k;
        if (*v < 0) {
            *at = k;
            return *v == -1 ? k : BAD;
        }
        if (*v > INT32_MAX)
            return BAD;
    }
    *at = k;
    if (k + *v + 2 > n)
        return INCOMPLETE;
    if (b[k + *v] != '\r' || b[k + *v + 1] != '\n')
        return BAD;
    return k + *v + 2;
}

/* The F bulk strings of an HMGET reply whose "*F\r\n" ends at j; 0 = not that shape. */
static Py_ssize_t hmget_cells(const unsigned char *b, Py_ssize_t j, Py_ssize_t n, Py_ssize_t fields, int32_t *len,
                              int64_t *off)
{
    for (Py_ssize_t f = 0; f < fields; f++) {
        Py_ssize_t at;
        long long v;
        j = read_bulk(b, j, n, &at, &v);
        if (j <= 0)
            return j;
        len[f] = (int32_t)(v < 0 ? -1 : v);
        off[f] = at;
    }
    return j;
}

/* A reply of another shape at i (an error, a wrong count, nesting): skipped whole, all cells nil;
 * status 1 for an error (its text at off[0]/len[0]), else 2. */
static Py_ssize_t other_reply(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, Py_ssize_t fields, int32_t *len,
                              int64_t *off, int8_t *st)
{
    Py_ssize_t next = skip_value(b, i, end, 0);
    if (next <= 0)
        return next;
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
        PyErr_Format(PyExc_ValueError, "parse: %s needs %zd contiguous bytes, got %zd", name, need, buf->len);
        return 0;
    }
    return 1;
}

/* Releases the buffers of a NULL-terminated list (every buffer a function parsed). */
static void release(Py_buffer **bufs)
{
    for (; *bufs != NULL; bufs++)
        PyBuffer_Release(*bufs);
}

/* HGETALL only: the fields asked for, one after the other (names), where each ends (ends), and
 * the field each pair position matched last (hint). NULL for HMGET. */
typedef struct {
    const unsigned char *names;
    const int32_t *ends;
    int *hint;
} ByName;

/* The pairs of an HGETALL reply whose "*2K\r\n" ends at j, each value into its field's cell
 * (fields not asked for are skipped, fields absent stay nil); 0 = not that shape. */
static Py_ssize_t hgetall_cells(const unsigned char *b, Py_ssize_t j, Py_ssize_t n, long long pairs,
                                const ByName *by, Py_ssize_t fields, int32_t *len, int64_t *off)
{
    const unsigned char *names = by->names;
    const int32_t *ends = by->ends;
    int *hint = by->hint;
    for (Py_ssize_t f = 0; f < fields; f++) {
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
        if (c >= 0) {
            len[c] = (int32_t)(val_len < 0 ? -1 : val_len);
            off[c] = val_at;
        }
    }
    return j;
}

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


/* Where decoded values go: numbers [rows, nn], ts_sec / ts_nanos [rows, nt], odd [rows, F]. */
typedef struct {
    const char *kind;
    Py_ssize_t nn, nt;
    double *num;
    int64_t *sec, *nanos;
    unsigned char *odd;
    Py_ssize_t n_odd;
} Decode;

/* One framed row's cells into numbers and timestamps (status != 0: every cell nil). */
static void decode_row(const unsigned char *b, Py_ssize_t row, Py_ssize_t fields, int8_t st, const int32_t *len,
                       const int64_t *off, Decode *d)
{
    double *num = d->num + row * d->nn;
    int64_t *sec = d->sec + row * d->nt, *nanos = d->nanos + row * d->nt;
    unsigned char *bad = d->odd + row * fields;
    for (Py_ssize_t f = 0; f < fields; f++) {
        Py_ssize_t n = st == 0 ? len[f] : -1;
        char kind = d->kind[f];
        bad[f] = 0;
        if (kind == 's')
            continue;
        if (kind == 't') {
            *sec = *nanos = 0;
            if (n > 0 && !timestamp_cell(b + off[f], n, sec, nanos)) {
                *sec = *nanos = 0;
                bad[f] = 1;
                d->n_odd++;
            }
            sec++;
            nanos++;
            continue;
        }
        *num = Py_NAN;
        if (n > 0 && !number_cell(b + off[f], n, kind, num)) {
            *num = Py_NAN;
            bad[f] = 1;
            d->n_odd++;
        }
        num++;
    }
}

/* Whole replies from b[i:end] into rows *row.. (see the module doc); BAD with *bad_at on junk. */
static Py_ssize_t frame_rows(const unsigned char *b, Py_ssize_t i, Py_ssize_t end, Py_ssize_t *row_io,
                             Py_ssize_t rows, Py_ssize_t fields, int32_t *len0, int64_t *off0, int8_t *st,
                             const ByName *by_name, Decode *d, Py_ssize_t *bad_at)
{
    Py_ssize_t row = *row_io;
    for (; row < rows && i < end; row++) {
        int32_t *len = len0 + row * fields;
        int64_t *off = off0 + row * fields;
        Py_ssize_t next = 0;
        if (b[i] == '*') {
            long long count;
            Py_ssize_t j = int_line(b, i + 1, end, &count);
            if (j < 0)
                next = j;
            else if (by_name == NULL && count == fields)
                next = hmget_cells(b, j, end, fields, len, off);
            else if (by_name != NULL && count >= 0 && count % 2 == 0)
                next = hgetall_cells(b, j, end, count / 2, by_name, fields, len, off);
            if (next > 0)
                st[row] = 0;
        }
        if (next == 0) /* not a reply of the asked shape: skip it whole */
            next = other_reply(b, i, end, fields, len, off, st + row);
        if (next == INCOMPLETE)
            break;
        if (next == BAD) {
            *bad_at = i;
            return BAD;
        }
        decode_row(b, row, fields, st[row], len, off, d);
        i = next;
    }
    *row_io = row;
    return i;
}

/* Checks the arguments both parse functions share and runs frame_rows. */
static PyObject *parse(Py_buffer *src, Py_ssize_t start, Py_ssize_t end, Py_ssize_t row, Py_ssize_t rows,
                       Py_buffer *kinds, Py_buffer *lens, Py_buffer *offs, Py_buffer *status, Py_buffer *numbers,
                       Py_buffer *ts_sec, Py_buffer *ts_nanos, Py_buffer *odd, const ByName *by_name)
{
    Py_ssize_t fields = kinds->len, bad_at = 0, pos;
    Decode d = {(const char *)kinds->buf, 0, 0, NULL, NULL, NULL, NULL, 0};
    for (Py_ssize_t f = 0; f < fields; f++) {
        if (d.kind[f] == 't')
            d.nt++;
        else if (d.kind[f] != 's')
            d.nn++;
    }
    if (start < 0 || end < start || end > src->len || row < 0 || rows < row || fields < 1 || fields > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "parse: bad bounds");
        return NULL;
    }
    if (!writable(lens, rows * fields * 4, "lens") || !writable(offs, rows * fields * 8, "offs") ||
        !writable(status, rows, "status") || !writable(numbers, rows * d.nn * 8, "numbers") ||
        !writable(ts_sec, rows * d.nt * 8, "ts_sec") || !writable(ts_nanos, rows * d.nt * 8, "ts_nanos") ||
        !writable(odd, rows * fields, "odd"))
        return NULL;
    d.num = (double *)numbers->buf;
    d.sec = (int64_t *)ts_sec->buf;
    d.nanos = (int64_t *)ts_nanos->buf;
    d.odd = (unsigned char *)odd->buf;
    pos = frame_rows((const unsigned char *)src->buf, start, end, &row, rows, fields, (int32_t *)lens->buf,
                     (int64_t *)offs->buf, (int8_t *)status->buf, by_name, &d, &bad_at);
    if (pos == BAD)
        return PyErr_Format(PyExc_ValueError, "Redis sent bytes that are not RESP2 at offset %zd", bad_at);
    return Py_BuildValue("nnn", pos, row, d.n_odd);
}

static PyObject *parse_hmget(PyObject *self, PyObject *args)
{
    Py_buffer src, kinds, lens, offs, status, numbers, ts_sec, ts_nanos, odd;
    Py_ssize_t start, end, row, rows;
    PyObject *result;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnny*w*w*w*w*w*w*w*:parse_hmget", &src, &start, &end, &row, &rows, &kinds, &lens,
                          &offs, &status, &numbers, &ts_sec, &ts_nanos, &odd))
        return NULL;
    result = parse(&src, start, end, row, rows, &kinds, &lens, &offs, &status, &numbers, &ts_sec, &ts_nanos, &odd,
                   NULL);
    {
        Py_buffer *all[] = {&src, &kinds, &lens, &offs, &status, &numbers, &ts_sec, &ts_nanos, &odd, NULL};
        release(all);
    }
    return result;
}

static PyObject *parse_hgetall(PyObject *self, PyObject *args)
{
    Py_buffer src, names, ends, kinds, lens, offs, status, numbers, ts_sec, ts_nanos, odd;
    Py_ssize_t start, end, row, rows;
    PyObject *result = NULL;
    int hint[MAX_FIELDS];
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnny*y*y*w*w*w*w*w*w*w*:parse_hgetall", &src, &start, &end, &row, &rows, &names,
                          &ends, &kinds, &lens, &offs, &status, &numbers, &ts_sec, &ts_nanos, &odd))
        return NULL;
    {
        const int32_t *end_of = (const int32_t *)ends.buf;
        Py_ssize_t fields = kinds.len;
        if (ends.len != fields * 4 || fields < 1 || end_of[fields - 1] > names.len) {
            PyErr_SetString(PyExc_ValueError, "parse_hgetall: names/ends do not describe one name per kind");
        } else {
            ByName by_name = {(const unsigned char *)names.buf, end_of, hint};
            for (int p = 0; p < MAX_FIELDS; p++)
                hint[p] = p < fields ? p : -1;
            result = parse(&src, start, end, row, rows, &kinds, &lens, &offs, &status, &numbers, &ts_sec, &ts_nanos,
                           &odd, &by_name);
        }
    }
    {
        Py_buffer *all[] = {&src, &names, &ends, &kinds, &lens, &offs, &status, &numbers, &ts_sec, &ts_nanos, &odd, NULL};
        release(all);
    }
    return result;
}

/* ---- gather_rows: one group's decoded rows into the batch's feature matrix -----------------
 *
 *   gather_rows(numbers, ts, has_string, num_view, str_view, ttl, now, drop_stale, defaults, codes,
 *               out, out_cols, missing, stale, str_ok)
 *
 * A group's rows, one per entity id (u): numbers f64 [u, nn] (NaN = no value), ts f64 [u, nv]
 * (0 = none), has_string bool [u, ns]; num_view / str_view int32: the view of each numeric /
 * string cell; ttl f64 [nv] (0 = never stale). For each event row i (codes intp [n]: its entity's
 * row), as the numpy path in fastfeatures.py computes it:
 *   missing[v, i] = no cell of view v has a value, or the view has no timestamp;
 *   stale[v, i]   = not missing and now - ts > ttl (ttl > 0)   (missing, stale: bool [nv, n]);
 *   out[i, out_cols[c]] = float32(numbers[r, c]) when it has a value (and, with drop_stale, its
 *                         view is not stale), else defaults[c]   (out: f32 [n, columns]);
 *   str_ok[i, s] = has_string[r, s], and not stale with drop_stale   (bool [n, ns]).
 */
static int sized(Py_buffer *buf, Py_ssize_t need, const char *name)
{
    if (buf->len != need || !PyBuffer_IsContiguous(buf, 'C')) {
        PyErr_Format(PyExc_ValueError, "gather_rows: %s needs %zd contiguous bytes, got %zd", name, need, buf->len);
        return 0;
    }
    return 1;
}

static PyObject *gather_rows(PyObject *self, PyObject *args)
{
    Py_buffer numbers, ts, has_string, num_view, str_view, ttl, defaults, codes, out, out_cols, missing, stale, str_ok;
    double now;
    int drop_stale;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*dpy*y*w*y*w*w*w*:gather_rows", &numbers, &ts, &has_string, &num_view,
                          &str_view, &ttl, &now, &drop_stale, &defaults, &codes, &out, &out_cols, &missing, &stale,
                          &str_ok))
        return NULL;
    {
        Py_ssize_t nn = num_view.len / 4, ns = str_view.len / 4, nv = ttl.len / 8, n = codes.len / 8;
        Py_ssize_t u = nv ? ts.len / 8 / nv : 0, columns = n ? out.len / 4 / n : 0;
        const int32_t *nview = (const int32_t *)num_view.buf, *sview = (const int32_t *)str_view.buf;
        const int32_t *ocol = (const int32_t *)out_cols.buf;
        const int64_t *code = (const int64_t *)codes.buf;
        if (nv < 1 || nv > MAX_FIELDS || !sized(&numbers, u * nn * 8, "numbers") || !sized(&ts, u * nv * 8, "ts") ||
            !sized(&has_string, u * ns, "has_string") || !sized(&defaults, nn * 4, "defaults") ||
            !sized(&out_cols, nn * 4, "out_cols") || !sized(&out, n * columns * 4, "out") ||
            !sized(&missing, nv * n, "missing") || !sized(&stale, nv * n, "stale") || !sized(&str_ok, n * ns, "str_ok"))
            goto done;
        for (Py_ssize_t c = 0; c < nn; c++)
            if (nview[c] < 0 || nview[c] >= nv || ocol[c] < 0 || ocol[c] >= columns) {
                PyErr_SetString(PyExc_ValueError, "gather_rows: num_view/out_cols out of range");
                goto done;
            }
        for (Py_ssize_t s = 0; s < ns; s++)
            if (sview[s] < 0 || sview[s] >= nv) {
                PyErr_SetString(PyExc_ValueError, "gather_rows: str_view out of range");
                goto done;
            }
        for (Py_ssize_t i = 0; i < n; i++)
            if (code[i] < 0 || code[i] >= u) {
                PyErr_SetString(PyExc_ValueError, "gather_rows: a code is not a row");
                goto done;
            }
        const double *num = (const double *)numbers.buf, *t = (const double *)ts.buf, *ttl_s = (const double *)ttl.buf;
        const unsigned char *has = (const unsigned char *)has_string.buf;
        const float *dflt = (const float *)defaults.buf;
        float *o = (float *)out.buf;
        unsigned char *miss = (unsigned char *)missing.buf, *old = (unsigned char *)stale.buf;
        unsigned char *sok = (unsigned char *)str_ok.buf;
        unsigned char any[MAX_FIELDS], gone[MAX_FIELDS];
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t r = (Py_ssize_t)code[i];
            const double *row = num + r * nn, *rts = t + r * nv;
            memset(any, 0, (size_t)nv);
            for (Py_ssize_t c = 0; c < nn; c++)
                if (!isnan(row[c]))
                    any[nview[c]] = 1;
            for (Py_ssize_t s = 0; s < ns; s++)
                if (has[r * ns + s])
                    any[sview[s]] = 1;
            for (Py_ssize_t v = 0; v < nv; v++) {
                unsigned char m = !any[v] || !(rts[v] > 0.0);
                unsigned char st = !m && ttl_s[v] > 0.0 && now - rts[v] > ttl_s[v];
                miss[v * n + i] = m;
                old[v * n + i] = st;
                gone[v] = drop_stale && st;
            }
            for (Py_ssize_t c = 0; c < nn; c++)
                o[i * columns + ocol[c]] = (!isnan(row[c]) && !gone[nview[c]]) ? (float)row[c] : dflt[c];
            for (Py_ssize_t s = 0; s < ns; s++)
                sok[i * ns + s] = has[r * ns + s] && !gone[sview[s]];
        }
        result = Py_NewRef(Py_None);
    }
done:
    {
        Py_buffer *all[] = {&numbers, &ts, &has_string, &num_view, &str_view, &ttl, &defaults, &codes, &out, &out_cols, &missing, &stale, &str_ok, NULL};
        release(all);
    }
    return result;
}

/* ---- Interner: string cells -> codes without a Python object per cell ---------------------
 *
 * String features are categorical or per entity, so the same cell bytes come back batch after
 * batch. An Interner maps a cell's exact bytes (its serialized ValueProto) to a code the caller
 * chose; the caller keeps code -> str. Open addressing on a 64-bit FNV-1a hash, keys compared
 * byte for byte (a hash collision never returns another cell's code); keys live in one arena.
 *
 *   Interner()
 *   .lookup(buf, offs, lens, fields, col, codes) -> misses
 *       for each row r: the cell at buf[offs[r, col] : + lens[r, col]] (offs int64 / lens int32,
 *       [rows, fields]); codes[r] (int64, rows = len(codes)) = its code, 0 when lens < 1 (nil
 *       or empty: no string), -1 when not interned yet (counted in misses).
 *   .add(cell: bytes, code: int)   (a cell added again keeps its first code)
 *   len(interner), .clear()
 */
typedef struct {
    PyObject_HEAD
    uint64_t *hash;    /* per slot, 0 = empty */
    int64_t *code;
    int64_t *key_at;   /* per slot: where its bytes start in arena */
    int32_t *key_len;
    Py_ssize_t cap, n;
    unsigned char *arena;
    Py_ssize_t arena_len, arena_cap;
} Interner;

static uint64_t fnv1a(const unsigned char *p, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h | 1; /* never 0: 0 marks an empty slot */
}

static void interner_free(Interner *t)
{
    PyMem_Free(t->hash);
    PyMem_Free(t->code);
    PyMem_Free(t->key_at);
    PyMem_Free(t->key_len);
    PyMem_Free(t->arena);
    t->hash = NULL;
    t->code = t->key_at = NULL;
    t->key_len = NULL;
    t->arena = NULL;
    t->cap = t->n = t->arena_len = t->arena_cap = 0;
}

static int interner_alloc(Interner *t, Py_ssize_t cap)
{
    t->hash = PyMem_Calloc((size_t)cap, sizeof(uint64_t));
    t->code = PyMem_Malloc((size_t)cap * sizeof(int64_t));
    t->key_at = PyMem_Malloc((size_t)cap * sizeof(int64_t));
    t->key_len = PyMem_Malloc((size_t)cap * sizeof(int32_t));
    if (!t->hash || !t->code || !t->key_at || !t->key_len) {
        PyErr_NoMemory();
        return 0;
    }
    t->cap = cap;
    return 1;
}

/* The slot holding these bytes, or the empty slot where they would go. */
static Py_ssize_t interner_slot(const Interner *t, uint64_t h, const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t mask = t->cap - 1, s = (Py_ssize_t)(h & (uint64_t)mask);
    while (t->hash[s] != 0) {
        if (t->hash[s] == h && t->key_len[s] == n && memcmp(t->arena + t->key_at[s], p, (size_t)n) == 0)
            return s;
        s = (s + 1) & mask;
    }
    return s;
}

static PyObject *interner_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Interner *t;
    if (!PyArg_ParseTuple(args, ":Interner") || (kwds && PyDict_Size(kwds))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "Interner() takes no arguments");
        return NULL;
    }
    t = (Interner *)type->tp_alloc(type, 0);
    if (t != NULL && !interner_alloc(t, 1024)) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void interner_dealloc(Interner *t)
{
    interner_free(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int interner_grow(Interner *t)
{
    Interner old = *t;
    Py_ssize_t cap = t->cap * 2;
    t->hash = NULL;
    t->code = t->key_at = NULL;
    t->key_len = NULL;
    if (!interner_alloc(t, cap)) {
        PyMem_Free(t->hash);
        PyMem_Free(t->code);
        PyMem_Free(t->key_at);
        PyMem_Free(t->key_len);
        t->hash = old.hash;
        t->code = old.code;
        t->key_at = old.key_at;
        t->key_len = old.key_len;
        t->cap = old.cap;
        return 0;
    }
    for (Py_ssize_t s = 0; s < old.cap; s++) {
        if (old.hash[s] == 0)
            continue;
        Py_ssize_t d = (Py_ssize_t)(old.hash[s] & (uint64_t)(cap - 1));
        while (t->hash[d] != 0)
            d = (d + 1) & (cap - 1);
        t->hash[d] = old.hash[s];
        t->code[d] = old.code[s];
        t->key_at[d] = old.key_at[s];
        t->key_len[d] = old.key_len[s];
    }
    PyMem_Free(old.hash);
    PyMem_Free(old.code);
    PyMem_Free(old.key_at);
    PyMem_Free(old.key_len);
    return 1;
}

static PyObject *interner_add(Interner *t, PyObject *args)
{
    Py_buffer key;
    long long code;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*L:add", &key, &code))
        return NULL;
    if (key.len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "Interner.add: cell too long");
        goto done;
    }
    if (2 * (t->n + 1) > t->cap && !interner_grow(t))
        goto done;
    {
        const unsigned char *p = (const unsigned char *)key.buf;
        uint64_t h = fnv1a(p, key.len);
        Py_ssize_t s = interner_slot(t, h, p, key.len);
        if (t->hash[s] == 0) {
            if (t->arena_len + key.len > t->arena_cap) {
                Py_ssize_t cap = t->arena_cap ? t->arena_cap : 4096;
                while (cap < t->arena_len + key.len)
                    cap *= 2;
                unsigned char *grown = PyMem_Realloc(t->arena, (size_t)cap);
                if (grown == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
                t->arena = grown;
                t->arena_cap = cap;
            }
            memcpy(t->arena + t->arena_len, p, (size_t)key.len);
            t->hash[s] = h;
            t->code[s] = code;
            t->key_at[s] = t->arena_len;
            t->key_len[s] = (int32_t)key.len;
            t->arena_len += key.len;
            t->n++;
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&key);
    return result;
}

static PyObject *interner_lookup(Interner *t, PyObject *args)
{
    Py_buffer src, offs, lens, codes;
    Py_ssize_t fields, col, misses = 0;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*nnw*:lookup", &src, &offs, &lens, &fields, &col, &codes))
        return NULL;
    {
        Py_ssize_t rows = codes.len / 8;
        if (fields < 1 || col < 0 || col >= fields || !writable(&codes, rows * 8, "codes") ||
            offs.len < rows * fields * 8 || lens.len < rows * fields * 4) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Interner.lookup: offs/lens smaller than [rows, fields]");
            goto done;
        }
        const unsigned char *b = (const unsigned char *)src.buf;
        const int64_t *off = (const int64_t *)offs.buf;
        const int32_t *len = (const int32_t *)lens.buf;
        int64_t *out = (int64_t *)codes.buf;
        for (Py_ssize_t r = 0; r < rows; r++) {
            int64_t at = off[r * fields + col];
            int32_t n = len[r * fields + col];
            if (n < 1) {
                out[r] = 0;
                continue;
            }
            if (at < 0 || at + n > src.len) {
                PyErr_SetString(PyExc_ValueError, "Interner.lookup: a cell lies outside the buffer");
                goto done;
            }
            Py_ssize_t s = interner_slot(t, fnv1a(b + at, n), b + at, n);
            if (t->hash[s] != 0) {
                out[r] = t->code[s];
            } else {
                out[r] = -1;
                misses++;
            }
        }
        result = PyLong_FromSsize_t(misses);
    }
done:
    {
        Py_buffer *all[] = {&src, &offs, &lens, &codes, NULL};
        release(all);
    }
    return result;
}

static PyObject *interner_clear(Interner *t, PyObject *Py_UNUSED(ignored))
{
    interner_free(t);
    if (!interner_alloc(t, 1024))
        return NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t interner_len(Interner *t)
{
    return t->n;
}

static PyMethodDef interner_methods[] = {
    {"lookup", (PyCFunction)interner_lookup, METH_VARARGS, "Codes of the cells at offs/lens (see module doc)."},
    {"add", (PyCFunction)interner_add, METH_VARARGS, "Remember a cell's code."},
    {"clear", (PyCFunction)interner_clear, METH_NOARGS, "Forget every cell."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods interner_as_sequence = {.sq_length = (lenfunc)interner_len};

static PyTypeObject InternerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "workers._resp.Interner",
    .tp_basicsize = sizeof(Interner),
    .tp_dealloc = (destructor)interner_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "String cells (exact bytes) -> caller-chosen codes.",
    .tp_methods = interner_methods,
    .tp_as_sequence = &interner_as_sequence,
    .tp_new = interner_new,
};

static PyMethodDef methods[] = {
    {"parse_hmget", parse_hmget, METH_VARARGS, "Frame and decode pipelined HMGET replies (see module doc)."},
    {"parse_hgetall", parse_hgetall, METH_VARARGS, "Frame and decode pipelined HGETALL replies (see module doc)."},
    {"gather_rows", gather_rows, METH_VARARGS, "A group's rows into the batch's feature matrix (see its comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_resp", "Pipelined HMGET/HGETALL replies read from the socket buffer.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__resp(void)
{
    PyObject *m;
    if (PyType_Ready(&InternerType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Interner", (PyObject *)&InternerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
