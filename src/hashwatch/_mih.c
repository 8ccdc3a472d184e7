/*
 * hashwatch._mih: hot path of hashwatch.index (multi-index hashing over 256-bit codes).
 *
 * Plain CPython C API; buffers come in through the buffer protocol ("y*" / "w*") so numpy
 * arrays pass without copies and without the numpy C API. Every long loop runs with the GIL
 * released so a background merge does not stall queries.
 *
 * Bit order: a code is 32 bytes read as 4 little-endian uint64 words; bit k is bit (k % 64)
 * of word k / 64. A chunk is a run of `width` (<= 32) consecutive bits starting at `start`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define POPCNT64(x) ((int)__builtin_popcountll(x))
#define PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 1)
#define PREFETCH_W(p) __builtin_prefetch((const void *)(p), 1, 1)
#else
static inline int POPCNT64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}
#define PREFETCH(p) ((void)0)
#define PREFETCH_W(p) ((void)0)
#endif

#define MAX_CHUNKS 64
#define CODE_BYTES 32
#define BUILD_BLOCK 4096
#define PF_BUILD 16

static inline void load_code(const uint8_t *p, uint64_t w[4]) {
    uint64_t t[4];
    memcpy(t, p, CODE_BYTES);
#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    for (int i = 0; i < 4; i++) t[i] = __builtin_bswap64(t[i]);
#endif
    w[0] = t[0]; w[1] = t[1]; w[2] = t[2]; w[3] = t[3];
}

static inline uint32_t get_chunk(const uint64_t w[4], int start, int width) {
    int wi = start >> 6, off = start & 63;
    uint64_t v = w[wi] >> off;
    if (off + width > 64) v |= w[wi + 1] << (64 - off);
    return (uint32_t)(v & ((width >= 64) ? ~0ULL : ((1ULL << width) - 1ULL)));
}

static inline int dist4(const uint64_t a[4], const uint64_t b[4]) {
    return POPCNT64(a[0] ^ b[0]) + POPCNT64(a[1] ^ b[1]) + POPCNT64(a[2] ^ b[2]) +
           POPCNT64(a[3] ^ b[3]);
}

/* growable result triple (query index, position, distance) */
typedef struct {
    uint32_t *q;
    uint32_t *pos;
    uint16_t *dist;
    size_t len, cap;
    int failed;
} results_t;

static int res_push(results_t *r, uint32_t q, uint32_t pos, int d) {
    if (r->len == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 256;
        uint32_t *nq = (uint32_t *)realloc(r->q, nc * sizeof(uint32_t));
        if (!nq) { r->failed = 1; return -1; }
        r->q = nq;
        uint32_t *np = (uint32_t *)realloc(r->pos, nc * sizeof(uint32_t));
        if (!np) { r->failed = 1; return -1; }
        r->pos = np;
        uint16_t *nd = (uint16_t *)realloc(r->dist, nc * sizeof(uint16_t));
        if (!nd) { r->failed = 1; return -1; }
        r->dist = nd;
        r->cap = nc;
    }
    r->q[r->len] = q;
    r->pos[r->len] = pos;
    r->dist[r->len] = (uint16_t)d;
    r->len++;
    return 0;
}

static void res_free(results_t *r) {
    free(r->q); free(r->pos); free(r->dist);
    r->q = NULL; r->pos = NULL; r->dist = NULL;
}

static PyObject *res_to_python(results_t *r) {
    PyObject *a = PyBytes_FromStringAndSize((const char *)r->q, (Py_ssize_t)(r->len * sizeof(uint32_t)));
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->pos, (Py_ssize_t)(r->len * sizeof(uint32_t)));
    PyObject *c = PyBytes_FromStringAndSize((const char *)r->dist, (Py_ssize_t)(r->len * sizeof(uint16_t)));
    if (!a || !b || !c) { Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(c); return NULL; }
    return Py_BuildValue("(NNN)", a, b, c);
}

/* ------------------------------------------------------------------------------------------ */
/* build_chunk(codes, start, width, offsets_out, postings_out)
 * Counting sort of positions 0..n-1 by the chunk value. offsets_out: uint32[2^width + 1]
 * (zeroed by the caller), postings_out: uint32[n]. Stable: positions ascend within a bucket. */
static PyObject *py_build_chunk(PyObject *self, PyObject *args) {
    Py_buffer codes, off, post;
    int start, width;
    if (!PyArg_ParseTuple(args, "y*iiw*w*", &codes, &start, &width, &off, &post)) return NULL;
    PyObject *ret = NULL;
    size_t n = (size_t)codes.len / CODE_BYTES;
    size_t nb = (size_t)1 << width;
    if (width < 1 || width > 32 || start < 0 || start + width > 256 || codes.len % CODE_BYTES) {
        PyErr_SetString(PyExc_ValueError, "bad chunk or codes buffer");
        goto done;
    }
    if ((size_t)off.len < (nb + 1) * sizeof(uint32_t) || (size_t)post.len < n * sizeof(uint32_t) ||
        n > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "output buffers too small or too many codes");
        goto done;
    }
    {
        const uint8_t *c = (const uint8_t *)codes.buf;
        uint32_t *o = (uint32_t *)off.buf;
        uint32_t *p = (uint32_t *)post.buf;
        Py_BEGIN_ALLOW_THREADS
        /* Both passes hit the 2^width table (and the postings) at random: chunk values are
           computed a block ahead so the table lines can be prefetched (memory-level parallelism
           instead of one cache miss at a time). */
        uint32_t vals[BUILD_BLOCK];
        uint64_t w[4];
        memset(o, 0, (nb + 1) * sizeof(uint32_t));
        for (size_t b0 = 0; b0 < n; b0 += BUILD_BLOCK) {
            size_t len = n - b0 < BUILD_BLOCK ? n - b0 : BUILD_BLOCK;
            for (size_t j = 0; j < len; j++) {
                load_code(c + (b0 + j) * CODE_BYTES, w);
                vals[j] = get_chunk(w, start, width);
            }
            for (size_t j = 0; j < len; j++) {
                if (j + PF_BUILD < len) PREFETCH_W(o + vals[j + PF_BUILD] + 1);
                o[vals[j] + 1]++;
            }
        }
        for (size_t v = 1; v <= nb; v++) o[v] += o[v - 1];
        /* scatter using o[v] as the write cursor of bucket v; afterwards o[v] is the end of
           bucket v (= start of v+1), so shifting by one restores the start offsets */
        for (size_t b0 = 0; b0 < n; b0 += BUILD_BLOCK) {
            size_t len = n - b0 < BUILD_BLOCK ? n - b0 : BUILD_BLOCK;
            for (size_t j = 0; j < len; j++) {
                load_code(c + (b0 + j) * CODE_BYTES, w);
                vals[j] = get_chunk(w, start, width);
            }
            for (size_t j = 0; j < len; j++) {
                if (j + 2 * PF_BUILD < len) PREFETCH_W(o + vals[j + 2 * PF_BUILD]);
                if (j + PF_BUILD < len) PREFETCH_W(p + o[vals[j + PF_BUILD]]);
                p[o[vals[j]]++] = (uint32_t)(b0 + j);
            }
        }
        memmove(o + 1, o, nb * sizeof(uint32_t));
        o[0] = 0;
        Py_END_ALLOW_THREADS
    }
    Py_INCREF(Py_None);
    ret = Py_None;
done:
    PyBuffer_Release(&codes);
    PyBuffer_Release(&off);
    PyBuffer_Release(&post);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
static size_t n_probes(int width, int t) {
    size_t total = 0, c = 1;
    for (int k = 0; k <= t && k <= width; k++) {
        total += c;
        c = c * (size_t)(width - k) / (size_t)(k + 1);
    }
    return total;
}

#define PF_OFF 12
#define PF_POST 8
#define PF_CODE 16

/* search(codes, starts, widths, offsets, postings, thresholds, tomb, queries, radius, n_limit)
 *  starts/widths/thresholds: int32[m]; offsets / postings: sequences of m buffers, chunk i's
 *  uint32[2^w + 1] offset table and its uint32 posting list; tomb: uint8[n] (nonzero = removed)
 *  or empty; queries: q*32 bytes; positions >= n_limit are ignored (a segment whose tables
 *  are being rebuilt for appended codes). Returns (qidx u32, pos u32, dist u16) as bytes.
 *  Exact for any radius as long as sum(thresholds[i] + 1) >= radius + 1 (pigeonhole). */
static PyObject *py_search(PyObject *self, PyObject *args) {
    Py_buffer codes, starts_b, widths_b, thr_b, tomb_b, qs;
    PyObject *offs_seq, *posts_seq;
    Py_buffer offv[MAX_CHUNKS], postv[MAX_CHUNKS];
    const uint32_t *offp[MAX_CHUNKS];
    const uint32_t *postp[MAX_CHUNKS];
    int radius;
    Py_ssize_t n_limit_arg;
    if (!PyArg_ParseTuple(args, "y*y*y*OOy*y*y*in", &codes, &starts_b, &widths_b, &offs_seq,
                          &posts_seq, &thr_b, &tomb_b, &qs, &radius, &n_limit_arg))
        return NULL;
    PyObject *ret = NULL;
    results_t res = {0};
    uint64_t *probes = NULL;
    uint64_t *ranges = NULL; /* (start index into the chunk's postings << 8 | chunk) */
    uint32_t *rlen = NULL;
    uint64_t *cands = NULL;  /* pos | chunk << 32 */
    size_t n = (size_t)codes.len / CODE_BYTES;
    size_t m = (size_t)starts_b.len / sizeof(int32_t);
    size_t nq = (size_t)qs.len / CODE_BYTES;
    size_t got_off = 0, got_post = 0;
    const int32_t *starts = (const int32_t *)starts_b.buf;
    const int32_t *widths = (const int32_t *)widths_b.buf;
    const int32_t *thr = (const int32_t *)thr_b.buf;
    const uint8_t *tomb = tomb_b.len ? (const uint8_t *)tomb_b.buf : NULL;
    const uint8_t *cb = (const uint8_t *)codes.buf;
    const uint8_t *qb = (const uint8_t *)qs.buf;
    size_t total_probes = 0;
    uint32_t n_limit = (n_limit_arg < 0 || (size_t)n_limit_arg > n) ? (uint32_t)n
                                                                      : (uint32_t)n_limit_arg;

    if (m == 0 || m > MAX_CHUNKS || (size_t)widths_b.len != m * sizeof(int32_t) ||
        (size_t)thr_b.len != m * sizeof(int32_t) || (tomb && (size_t)tomb_b.len < n) ||
        codes.len % CODE_BYTES || qs.len % CODE_BYTES || n > 0xFFFFFFFFULL ||
        !PySequence_Check(offs_seq) || !PySequence_Check(posts_seq) ||
        PySequence_Size(offs_seq) != (Py_ssize_t)m || PySequence_Size(posts_seq) != (Py_ssize_t)m) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "inconsistent index buffers");
        goto done;
    }
    for (size_t i = 0; i < m; i++) {
        if (widths[i] < 1 || widths[i] > 32 || starts[i] < 0 || starts[i] + widths[i] > 256) {
            PyErr_SetString(PyExc_ValueError, "bad chunk layout");
            goto done;
        }
        PyObject *o = PySequence_GetItem(offs_seq, (Py_ssize_t)i);
        if (!o) goto done;
        int rc = PyObject_GetBuffer(o, &offv[i], PyBUF_SIMPLE);
        Py_DECREF(o);
        if (rc) goto done;
        got_off++;
        o = PySequence_GetItem(posts_seq, (Py_ssize_t)i);
        if (!o) goto done;
        rc = PyObject_GetBuffer(o, &postv[i], PyBUF_SIMPLE);
        Py_DECREF(o);
        if (rc) goto done;
        got_post++;
        size_t nb = (size_t)1 << widths[i];
        offp[i] = (const uint32_t *)offv[i].buf;
        postp[i] = (const uint32_t *)postv[i].buf;
        /* every position in a posting list must address a stored code */
        if ((size_t)offv[i].len < (nb + 1) * sizeof(uint32_t) ||
            (size_t)postv[i].len < (size_t)offp[i][nb] * sizeof(uint32_t) || offp[i][nb] > n) {
            PyErr_SetString(PyExc_ValueError, "chunk tables do not match the codes");
            goto done;
        }
        if (thr[i] >= 0) total_probes += n_probes(widths[i], thr[i]);
    }
    probes = (uint64_t *)malloc((total_probes + 1) * sizeof(uint64_t));
    ranges = (uint64_t *)malloc((total_probes + 1) * sizeof(uint64_t));
    rlen = (uint32_t *)malloc((total_probes + 1) * sizeof(uint32_t));
    if (!probes || !ranges || !rlen) { PyErr_NoMemory(); goto done; }

    {
        int nomem = 0;
        Py_BEGIN_ALLOW_THREADS
        size_t ccap = 0;
        for (size_t qi = 0; qi < nq && !nomem; qi++) {
            uint64_t qw[4];
            uint32_t qc[MAX_CHUNKS];
            load_code(qb + qi * CODE_BYTES, qw);
            /* phase A: enumerate bucket indices within each chunk's threshold (Gosper's hack) */
            size_t np_ = 0;
            for (size_t i = 0; i < m; i++) {
                qc[i] = get_chunk(qw, starts[i], widths[i]);
                if (thr[i] < 0) continue;
                int w = widths[i];
                uint64_t lim = (uint64_t)1 << w;
                probes[np_++] = ((uint64_t)qc[i] << 8) | i;
                for (int k = 1; k <= thr[i] && k <= w; k++) {
                    uint64_t mk = ((uint64_t)1 << k) - 1;
                    while (mk < lim) {
                        probes[np_++] = ((uint64_t)(qc[i] ^ mk) << 8) | i;
                        uint64_t c = mk & (~mk + 1);
                        uint64_t r = mk + c;
                        mk = (((r ^ mk) >> 2) / c) | r;
                    }
                }
            }
            /* phase B: bucket offsets (random reads, prefetched ahead) */
            size_t nr = 0, ncand = 0;
            for (size_t p = 0; p < np_; p++) {
                if (p + PF_OFF < np_) {
                    uint64_t pf = probes[p + PF_OFF];
                    PREFETCH(offp[pf & 0xFF] + (pf >> 8));
                }
                uint64_t idx = probes[p] >> 8, ch = probes[p] & 0xFF;
                uint32_t lo = offp[ch][idx], hi = offp[ch][idx + 1];
                if (hi > lo) {
                    ranges[nr] = ((uint64_t)lo << 8) | ch;
                    rlen[nr] = hi - lo;
                    nr++;
                    ncand += hi - lo;
                }
            }
            if (ncand > ccap) {
                size_t nc = ncand + ncand / 2 + 64;
                uint64_t *t = (uint64_t *)realloc(cands, nc * sizeof(uint64_t));
                if (!t) { nomem = 1; break; }
                cands = t;
                ccap = nc;
            }
            /* phase C: gather candidate positions from the posting lists */
            size_t cc = 0;
            for (size_t r = 0; r < nr; r++) {
                if (r + PF_POST < nr) {
                    uint64_t pf = ranges[r + PF_POST];
                    PREFETCH(postp[pf & 0xFF] + (pf >> 8));
                }
                const uint32_t *pl = postp[ranges[r] & 0xFF] + (ranges[r] >> 8);
                uint64_t ch = (ranges[r] & 0xFF) << 32;
                for (uint32_t j = 0; j < rlen[r]; j++) cands[cc++] = (uint64_t)pl[j] | ch;
            }
            /* phase D: verify with popcount; prefetch the codes ahead */
            for (size_t k = 0; k < cc; k++) {
                if (k + PF_CODE < cc) PREFETCH(cb + (size_t)(uint32_t)cands[k + PF_CODE] * CODE_BYTES);
                uint32_t pos = (uint32_t)cands[k];
                if (pos >= n_limit) continue;
                uint64_t cw[4];
                load_code(cb + (size_t)pos * CODE_BYTES, cw);
                int d = dist4(cw, qw);
                if (d > radius) continue;
                /* emit only from the first chunk that reaches this code: no hash set needed */
                size_t ci = (size_t)(cands[k] >> 32);
                int dup = 0;
                for (size_t j = 0; j < ci; j++) {
                    if (thr[j] < 0) continue;
                    if (POPCNT64((uint64_t)(get_chunk(cw, starts[j], widths[j]) ^ qc[j])) <= thr[j]) {
                        dup = 1;
                        break;
                    }
                }
                if (dup || (tomb && tomb[pos])) continue;
                if (res_push(&res, (uint32_t)qi, pos, d)) { nomem = 1; break; }
            }
        }
        Py_END_ALLOW_THREADS
        if (nomem) { PyErr_NoMemory(); goto done; }
    }
    ret = res_to_python(&res);
done:
    free(probes); free(ranges); free(rlen); free(cands);
    res_free(&res);
    for (size_t i = 0; i < got_off; i++) PyBuffer_Release(&offv[i]);
    for (size_t i = 0; i < got_post; i++) PyBuffer_Release(&postv[i]);
    PyBuffer_Release(&codes); PyBuffer_Release(&starts_b); PyBuffer_Release(&widths_b);
    PyBuffer_Release(&thr_b); PyBuffer_Release(&tomb_b); PyBuffer_Release(&qs);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* scan(codes, tomb, queries, radius): exact linear scan, tiled so a block of codes stays in
 * cache while every query passes over it. Same output as search(). */
#define SCAN_BLOCK 2048
static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer codes, tomb_b, qs;
    int radius;
    if (!PyArg_ParseTuple(args, "y*y*y*i", &codes, &tomb_b, &qs, &radius)) return NULL;
    PyObject *ret = NULL;
    results_t res = {0};
    uint64_t *qw = NULL;
    size_t n = (size_t)codes.len / CODE_BYTES;
    size_t nq = (size_t)qs.len / CODE_BYTES;
    const uint8_t *tomb = tomb_b.len ? (const uint8_t *)tomb_b.buf : NULL;
    if (codes.len % CODE_BYTES || qs.len % CODE_BYTES || (tomb && (size_t)tomb_b.len < n) ||
        n > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "bad buffers");
        goto done;
    }
    qw = (uint64_t *)malloc((nq + 1) * 4 * sizeof(uint64_t));
    if (!qw) { PyErr_NoMemory(); goto done; }
    {
        int nomem = 0;
        const uint8_t *cb = (const uint8_t *)codes.buf;
        const uint8_t *qb = (const uint8_t *)qs.buf;
        Py_BEGIN_ALLOW_THREADS
        for (size_t q = 0; q < nq; q++) load_code(qb + q * CODE_BYTES, qw + 4 * q);
        for (size_t b0 = 0; b0 < n && !nomem; b0 += SCAN_BLOCK) {
            size_t b1 = b0 + SCAN_BLOCK < n ? b0 + SCAN_BLOCK : n;
            for (size_t q = 0; q < nq && !nomem; q++) {
                const uint64_t *qq = qw + 4 * q;
                for (size_t i = b0; i < b1; i++) {
                    uint64_t cw[4];
                    load_code(cb + i * CODE_BYTES, cw);
                    int d = dist4(cw, qq);
                    if (d <= radius && !(tomb && tomb[i])) {
                        if (res_push(&res, (uint32_t)q, (uint32_t)i, d)) { nomem = 1; break; }
                    }
                }
            }
        }
        Py_END_ALLOW_THREADS
        if (nomem) { PyErr_NoMemory(); goto done; }
    }
    ret = res_to_python(&res);
done:
    free(qw);
    res_free(&res);
    PyBuffer_Release(&codes); PyBuffer_Release(&tomb_b); PyBuffer_Release(&qs);
    return ret;
}

static PyMethodDef methods[] = {
    {"build_chunk", py_build_chunk, METH_VARARGS,
     "build_chunk(codes, start, width, offsets_out, postings_out): counting sort of one chunk"},
    {"search", py_search, METH_VARARGS,
     "search(codes, starts, widths, offsets, postings, thresholds, tomb, queries, radius, n_limit)"
     " -> (qidx, pos, dist) bytes"},
    {"scan", py_scan, METH_VARARGS, "scan(codes, tomb, queries, radius) -> (qidx, pos, dist) bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_mih", "Multi-index hashing kernels for hashwatch.index", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mih(void) { return PyModule_Create(&moduledef); }
