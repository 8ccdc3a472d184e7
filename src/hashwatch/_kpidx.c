/*
 * hashwatch._kpidx: hot path of hashwatch.robust.keypoint_index (inverted file over visual
 * words with Hamming-embedding signatures).
 *
 * Same conventions as _mih.c: plain CPython C API, buffers through the buffer protocol so
 * numpy arrays (and read-only memory maps) pass without copies, GIL released in the loops.
 *
 * A posting list is the run offsets[w] .. offsets[w+1] of two parallel arrays: sigs (uint16,
 * the descriptor's signature bits) and ids (uint32, the keypoint set's slot). Signatures are
 * read first and ids only for the postings whose signature is within `ht` bits of the
 * query's: the scan streams 2 bytes per posting.
 *
 * The per-slot scratch is one array of 8-byte cells (uint32 stamp of the last query descriptor
 * that voted, uint32 place of the slot in this search's touched list); the votes themselves
 * sit in a compact array parallel to the touched list. A passing posting touches its slot's
 * cell at a random place (one cell, not two arrays); picking the best voted slots then reads
 * the compact votes in order instead of each voted slot's cell at a random place (~5*10^5
 * voted slots a search at 2*10^7 sets), and no cell is reset after a search: a cell whose
 * stamp is older than the search's first stamp is simply not voted for yet.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__SSE2__)
#include <emmintrin.h>
#define SCAN_SSE2 1 /* the signature test 8 postings at a time (SSE2 is in every x86-64) */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH_W(p) __builtin_prefetch((p), 1)
#define PREFETCH_R(p) __builtin_prefetch((p), 0)
#else
#define PREFETCH_W(p) ((void)0)
#define PREFETCH_R(p) ((void)0)
#endif

/* one slot's scratch cell (numpy dtype [("stamp", "<u4"), ("tidx", "<u4")]) */
typedef struct {
    uint32_t stamp; /* last query descriptor that voted for the slot */
    uint32_t tidx;  /* the slot's place in touched / votes, valid while the stamp is in the
                       current search's range */
} acc_t;

#define SCAN_CHUNK 256 /* postings tested per step (at most SCAN_CHUNK pass in a step) */
#define BATCH_CAP 512 /* passing postings voted together (vote_batch) */
#define OFF_AHEAD 8 /* probes ahead whose list offsets are prefetched (scan) */

#if defined(__GNUC__) || defined(__clang__)
#define POPCNT32(x) ((int)__builtin_popcount((unsigned)(x)))
#define POPCNT64(x) ((int)__builtin_popcountll(x))
#else
static inline int POPCNT32(uint32_t x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (int)((x * 0x01010101u) >> 24);
}
static inline int POPCNT64(uint64_t x) {
    return POPCNT32((uint32_t)x) + POPCNT32((uint32_t)(x >> 32));
}
#endif

/*
 * The votes of a batch of passing postings, in the order they were found (so votes, stamps
 * and the touched order are those of the posting-by-posting loop). A passing posting's slot
 * (ids, a parallel array the test does not stream) and then that slot's vote cell are both at
 * random places of large arrays (5 GB and 160 MB at 2*10^7 sets): fetching the whole batch's
 * lines first, then its cells, keeps many of those misses in flight at once instead of
 * waiting for each in turn. Returns 1 when a slot is outside the scratch (acc).
 *
 * A cell counts as voted in this search only when its stamp lies in this search's range
 * [first, first + span) and only then is its place read; a place is used only below cap.
 * So a caller that breaks the stamp contract (a stamp reused or lowered, a shorter touched
 * list within one search) gets wrong votes, never a write outside its buffers.
 */
static inline int vote_batch(const uint64_t *bpos, const uint32_t *bqid, const float *bwt,
                             uint32_t *bslot, int nb, const uint32_t *ids, acc_t *acc,
                             Py_ssize_t n_slots, uint32_t first, uint32_t span,
                             uint32_t *touched, float *votes, Py_ssize_t cap,
                             Py_ssize_t *n_touched) {
    for (int t = 0; t < nb; t++) PREFETCH_R(ids + bpos[t]);
    for (int t = 0; t < nb; t++) {
        uint32_t slot = ids[bpos[t]];
        if ((Py_ssize_t)slot >= n_slots) return 1;
        bslot[t] = slot;
        PREFETCH_W(acc + slot);
    }
    /* the compact votes of slots voted for before this batch: ~3 MB at 2*10^7 sets, out of
       the nearer caches, so they are fetched ahead too (a cell is in cache by now) */
    for (int t = 0; t < nb; t++) {
        const acc_t *c = acc + bslot[t];
        if (c->stamp - first < span && c->tidx < cap) PREFETCH_W(votes + c->tidx);
    }
    Py_ssize_t nt = *n_touched;
    for (int t = 0; t < nb; t++) {
        acc_t *c = acc + bslot[t];
        if (c->stamp == bqid[t]) continue;  /* one vote per (descriptor, slot) */
        if (c->stamp - first >= span) {  /* the slot's first vote in this search */
            c->tidx = nt < cap ? (uint32_t)nt : UINT32_MAX;
            if (nt < cap) {
                touched[nt] = bslot[t];
                votes[nt] = 0.0f;
            }
            nt++;
        }
        c->stamp = bqid[t];
        if (c->tidx < cap) votes[c->tidx] += bwt[t];
    }
    *n_touched = nt;
    return 0;
}

/*
 * scan(offsets, sigs, ids, qwords, qsigs, qweights, ht, stamp, acc, votes, touched, n_touched
 *      [, m])
 *      -> (n_touched, n_scanned, n_passed)
 *
 * offsets  uint64[n_words + 1]  run of each word in sigs/ids
 * sigs     uint16[n]            signature of each posting
 * ids      uint32[n]            slot of each posting
 * qwords   int64[nq * m]        the m words of each query descriptor (-1: none)
 * qsigs    uint16[nq]           signature of each query descriptor, or uint16[nq * m]: of each
 *                               (descriptor, word), when the signature bits depend on the
 *                               word (vocabulary scheme "word", see `signatures`)
 * qweights float32[nq * m]      vote weight of (descriptor, word); 0 skips the word
 * ht       int                  max signature distance
 * stamp    uint32               query descriptor i is stamp + i (for one vote per (i, slot));
 *                               every call of one search passes the same stamp, a new search
 *                               a larger one (cells stamped below it count as not voted for)
 * acc      acc_t[n_slots]       (written) per slot: last descriptor stamp, place in touched
 * votes    float32[>= cap]      (written) summed weights of touched[i]
 * touched  uint32[cap]          (written) slots in the order of their first vote
 * n_touched int                 how many `touched` already holds (several segments; each
 *                               segment holds its own range of slots)
 * m        int (optional)       words per descriptor; 0 or absent: nq = len(qsigs)
 *
 * Returns the new touched count (it may exceed cap: then the list and the votes are
 * incomplete and the caller scans again with larger ones and a new stamp), the postings
 * scanned and those within ht.
 *
 * Each list is read in chunks of SCAN_CHUNK postings: the signature test of the whole chunk
 * without a branch per posting (8 at a time with SSE2; with v1's global bits about a third
 * pass, and a branch per posting mispredicted often) appends the passing postings to a batch
 * that is voted (vote_batch) once it holds more than BATCH_CAP - SCAN_CHUNK, across lists and
 * descriptors; the next list's head is prefetched. Votes, stamps and the touched order are
 * exactly those of the posting-by-posting loop (same postings, same order). At 2*10^7 sets
 * each passing posting costs two misses (its slot, its vote cell), which dominated the search
 * before they were batched (BENCHMARKS.md, "Nomination measured at 2*10^7").
 */
static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer off_b, sig_b, id_b, qw_b, qs_b, qwt_b, acc_b, vote_b, touch_b;
    int ht;
    unsigned long stamp;
    Py_ssize_t n_touched, m_arg = 0;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*ikw*w*w*n|n", &off_b, &sig_b, &id_b, &qw_b,
                          &qs_b, &qwt_b, &ht, &stamp, &acc_b, &vote_b, &touch_b, &n_touched,
                          &m_arg))
        return NULL;
    PyObject *ret = NULL;
    const uint64_t *off = (const uint64_t *)off_b.buf;
    const uint16_t *sig = (const uint16_t *)sig_b.buf;
    const uint32_t *ids = (const uint32_t *)id_b.buf;
    const int64_t *qw = (const int64_t *)qw_b.buf;
    const uint16_t *qs = (const uint16_t *)qs_b.buf;
    const float *qwt = (const float *)qwt_b.buf;
    acc_t *acc = (acc_t *)acc_b.buf;
    uint32_t *touched = (uint32_t *)touch_b.buf;
    float *votes = (float *)vote_b.buf;
    Py_ssize_t n_words = off_b.len / 8 - 1;
    Py_ssize_t n_post = sig_b.len / 2;
    Py_ssize_t nqs = qs_b.len / 2;
    Py_ssize_t nqm = qw_b.len / 8;
    Py_ssize_t nq = m_arg > 0 ? nqm / m_arg : nqs;
    Py_ssize_t n_slots = acc_b.len / (Py_ssize_t)sizeof(acc_t);
    Py_ssize_t cap = touch_b.len / 4;
    if (cap > (Py_ssize_t)UINT32_MAX - 1) cap = (Py_ssize_t)UINT32_MAX - 1;  /* places are uint32 */
    if (nq == 0 || nqm % nq != 0 || (m_arg > 0 && nq * m_arg != nqm) ||
        (nqs != nq && nqs != nqm) || qwt_b.len / 4 != nqm || id_b.len / 4 != n_post ||
        acc_b.len % (Py_ssize_t)sizeof(acc_t) != 0 || n_words < 0 || vote_b.len / 4 < cap ||
        n_touched < 0 || stamp == 0 || (unsigned long long)stamp + (unsigned long long)nq - 1 >
        UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "scan: inconsistent buffer sizes");
        goto done;
    }
    Py_ssize_t m = nqm / nq;
    int per_word = nqs == nqm && nqs != nq;  /* a signature per (descriptor, word) */
    if (ht < -1) ht = -1;  /* nothing passes */
    if (ht > 16) ht = 16;  /* everything passes */
#ifdef SCAN_SSE2
    const __m128i m1 = _mm_set1_epi16(0x5555), m2 = _mm_set1_epi16(0x3333);
    const __m128i m4 = _mm_set1_epi16(0x0F0F), m8 = _mm_set1_epi16(0x00FF);
    const __m128i lim = _mm_set1_epi16((short)(ht + 1));  /* pass: count < ht + 1 */
#endif
    long long scanned = 0, passed = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    /* the passing postings waiting for their votes, in scan order (see vote_batch) */
    uint64_t bpos[BATCH_CAP];
    uint32_t bqid[BATCH_CAP], bslot[BATCH_CAP];
    float bwt[BATCH_CAP];
    int nb = 0;
    for (Py_ssize_t i = 0; i < nq && !bad; i++) {
        uint32_t qid = (uint32_t)(stamp + (unsigned long)i);
        for (Py_ssize_t j = 0; j < m && !bad; j++) {
            uint32_t s = qs[per_word ? i * m + j : i];
#ifdef SCAN_SSE2
            const __m128i qv = _mm_set1_epi16((short)s);
#endif
            int64_t w = qw[i * m + j];
            float wt = qwt[i * m + j];
            /* the offsets of the list OFF_AHEAD probes on: a segment's offsets are 8 MB
               with 2^20 words, so each probe's pair is a cache miss; taken one at a time
               they were most of a small segment's cost (issue 10, "A 4th word") */
            Py_ssize_t fa = i * m + j + OFF_AHEAD;
            if (fa < nqm && qw[fa] >= 0 && qw[fa] < n_words)
                PREFETCH_R(off + qw[fa]);
            if (w < 0 || w >= n_words || !(wt > 0.0f)) continue;  /* NaN: no vote either */
            uint64_t a = off[w], b = off[w + 1];
            if (b > (uint64_t)n_post || a > b) { bad = 1; break; }
            /* the next probed list's head: its first lines are on their way while this
               one is tested (lists start at random places of a large array) */
            Py_ssize_t nx = i * m + j + 1;
            if (nx < nqm && qw[nx] >= 0 && qw[nx] < n_words) {
                uint64_t na = off[qw[nx]];
                if (na < (uint64_t)n_post) {
                    PREFETCH_R(sig + na);
                    PREFETCH_R(sig + na + 32);
                }
            }
            scanned += (long long)(b - a);
            for (uint64_t p0 = a; p0 < b && !bad; p0 += SCAN_CHUNK) {
                uint64_t e = b - p0 < SCAN_CHUNK ? b : p0 + SCAN_CHUNK;
                if (nb + SCAN_CHUNK > BATCH_CAP) {
                    bad = vote_batch(bpos, bqid, bwt, bslot, nb, ids, acc, n_slots,
                                     (uint32_t)stamp, (uint32_t)nq, touched, votes, cap,
                                     &n_touched);
                    nb = 0;
                    if (bad) break;
                }
                int k = nb;
                uint64_t p = p0;
#ifdef SCAN_SSE2
                /* 8 signatures per step: 16-bit popcount by the bit-slicing sums, then the
                   passing lanes' positions in order (2 mask bits per lane); with the
                   per-word signatures ~3% pass, so most steps write nothing */
                for (; p + 8 <= e; p += 8) {
                    __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(sig + p)), qv);
                    x = _mm_sub_epi16(x, _mm_and_si128(_mm_srli_epi16(x, 1), m1));
                    x = _mm_add_epi16(_mm_and_si128(x, m2), _mm_and_si128(_mm_srli_epi16(x, 2), m2));
                    x = _mm_and_si128(_mm_add_epi16(x, _mm_srli_epi16(x, 4)), m4);
                    x = _mm_and_si128(_mm_add_epi16(x, _mm_srli_epi16(x, 8)), m8);
                    int mask = _mm_movemask_epi8(_mm_cmplt_epi16(x, lim));
                    while (mask) {
                        bpos[k++] = p + ((uint32_t)__builtin_ctz(mask) >> 1);
                        mask &= mask - 1;
                        mask &= mask - 1;
                    }
                }
#endif
                for (; p < e; p++) {
                    bpos[k] = p;
                    k += POPCNT32((uint32_t)(sig[p] ^ s)) <= ht;
                }
                for (int t = nb; t < k; t++) {
                    bqid[t] = qid;
                    bwt[t] = wt;
                }
                passed += k - nb;
                nb = k;
            }
        }
    }
    if (!bad && nb)
        bad = vote_batch(bpos, bqid, bwt, bslot, nb, ids, acc, n_slots, (uint32_t)stamp,
                         (uint32_t)nq, touched, votes, cap, &n_touched);
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "scan: posting outside its arrays");
        goto done;
    }
    ret = Py_BuildValue("nLL", n_touched, scanned, passed);
done:
    PyBuffer_Release(&off_b); PyBuffer_Release(&sig_b); PyBuffer_Release(&id_b);
    PyBuffer_Release(&qw_b); PyBuffer_Release(&qs_b); PyBuffer_Release(&qwt_b);
    PyBuffer_Release(&acc_b); PyBuffer_Release(&vote_b); PyBuffer_Release(&touch_b);
    return ret;
}

static inline void load4(const uint8_t *p, uint64_t w[4]) { memcpy(w, p, 32); }

static inline int dist256(const uint64_t a[4], const uint8_t *b) {
    uint64_t w[4];
    memcpy(w, b, 32);
    return POPCNT64(a[0] ^ w[0]) + POPCNT64(a[1] ^ w[1]) + POPCNT64(a[2] ^ w[2]) +
           POPCNT64(a[3] ^ w[3]);
}

/* keep the k smallest (d, w) pairs sorted ascending (ties: smaller w first) */
static inline void top_insert(int *bd, int64_t *bw, int k, int d, int64_t w) {
    if (d > bd[k - 1] || (d == bd[k - 1] && w >= bw[k - 1])) return;
    int i = k - 1;
    while (i > 0 && (bd[i - 1] > d || (bd[i - 1] == d && bw[i - 1] > w))) {
        bd[i] = bd[i - 1];
        bw[i] = bw[i - 1];
        i--;
    }
    bd[i] = d;
    bw[i] = w;
}

/*
 * assign(coarse, fine, k2, desc, probe, m, words_out, dists_out)
 *
 * coarse uint8[k1 * 32], fine uint8[k1 * k2 * 32] (fine centres of coarse cell c are rows
 * c * k2 ...), desc uint8[n * 32]. For each descriptor: its `probe` nearest coarse cells, and
 * among their fine centres the m nearest; word id = c * k2 + j. Writes words_out int64[n * m]
 * and dists_out int32[n * m] (nearest first; -1 / 257 where fewer than m exist).
 */
static PyObject *py_assign(PyObject *self, PyObject *args) {
    Py_buffer co_b, fi_b, de_b, wo_b, do_b;
    Py_ssize_t k2;
    int probe, m;
    if (!PyArg_ParseTuple(args, "y*y*ny*iiw*w*", &co_b, &fi_b, &k2, &de_b, &probe, &m, &wo_b,
                          &do_b))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t k1 = co_b.len / 32, n = de_b.len / 32;
    if (k1 <= 0 || k2 <= 0 || fi_b.len != k1 * k2 * 32 || probe < 1 || m < 1 || m > 64 ||
        probe > 64 || wo_b.len != n * m * 8 || do_b.len != n * m * 4) {
        PyErr_SetString(PyExc_ValueError, "assign: inconsistent buffer sizes");
        goto done;
    }
    if (probe > k1) probe = (int)k1;
    const uint8_t *co = (const uint8_t *)co_b.buf, *fi = (const uint8_t *)fi_b.buf;
    const uint8_t *de = (const uint8_t *)de_b.buf;
    int64_t *wo = (int64_t *)wo_b.buf;
    int32_t *dout = (int32_t *)do_b.buf;
    Py_BEGIN_ALLOW_THREADS
    int cd[64], bd[64];
    int64_t cw[64], bw[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t q[4];
        load4(de + i * 32, q);
        for (int j = 0; j < probe; j++) { cd[j] = 1 << 20; cw[j] = -1; }
        for (Py_ssize_t c = 0; c < k1; c++)
            top_insert(cd, cw, probe, dist256(q, co + c * 32), (int64_t)c);
        for (int j = 0; j < m; j++) { bd[j] = 257; bw[j] = -1; }
        for (int j = 0; j < probe; j++) {
            if (cw[j] < 0) continue;
            const uint8_t *f = fi + cw[j] * k2 * 32;
            for (Py_ssize_t t = 0; t < k2; t++)
                top_insert(bd, bw, m, dist256(q, f + t * 32), cw[j] * k2 + t);
        }
        for (int j = 0; j < m; j++) {
            wo[i * m + j] = bw[j];
            dout[i * m + j] = bw[j] < 0 ? 257 : bd[j];
        }
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&co_b); PyBuffer_Release(&fi_b); PyBuffer_Release(&de_b);
    PyBuffer_Release(&wo_b); PyBuffer_Release(&do_b);
    return ret;
}

/*
 * signatures(desc, table, rows, m, out)
 *
 * desc  uint8[n * 32]   descriptors
 * table int16[r * 16]   row r: the 16 descriptor bit positions (0 = MSB of byte 0, as
 *                       np.unpackbits numbers them) of the signature; bit i of the signature
 *                       is descriptor bit table[r][i] & 255 (not checked here: the table is
 *                       the vocabulary's, checked when it was made; ~4M entries per word
 *                       scheme, too many to check on every query)
 * rows  int64[n * m]    which row of `table` each (descriptor, word) uses (-1: signature 0)
 * out   uint16[n * m]   (written) the signatures
 *
 * One row for every descriptor is the "global" scheme (one choice of bits); one row per word of
 * the vocabulary, the bits most balanced among that word's members, is the "word" scheme
 * (Hamming embedding per word, Jegou, Douze, Schmid, ECCV 2008).
 */
static PyObject *py_signatures(PyObject *self, PyObject *args) {
    Py_buffer de_b, tb_b, rw_b, out_b;
    Py_ssize_t m;
    if (!PyArg_ParseTuple(args, "y*y*y*nw*", &de_b, &tb_b, &rw_b, &m, &out_b))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t n = de_b.len / 32, n_rows = tb_b.len / 32;
    if (m < 1 || de_b.len % 32 != 0 || tb_b.len % 32 != 0 || rw_b.len != n * m * 8 ||
        out_b.len != n * m * 2) {
        PyErr_SetString(PyExc_ValueError, "signatures: inconsistent buffer sizes");
        goto done;
    }
    const uint8_t *de = (const uint8_t *)de_b.buf;
    const int16_t *tb = (const int16_t *)tb_b.buf;
    const int64_t *rw = (const int64_t *)rw_b.buf;
    uint16_t *out = (uint16_t *)out_b.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        const uint8_t *d = de + i * 32;
        for (Py_ssize_t j = 0; j < m; j++) {
            int64_t r = rw[i * m + j];
            if (r < 0) { out[i * m + j] = 0; continue; }
            if (r >= n_rows) { bad = 1; break; }
            const int16_t *t = tb + r * 16;
            uint32_t s = 0;
            for (int b = 0; b < 16; b++) {
                int k = t[b] & 255;  /* positions are 0-255 (Vocabulary checks); stay inside */
                s |= (uint32_t)((d[k >> 3] >> (7 - (k & 7))) & 1u) << b;
            }
            out[i * m + j] = (uint16_t)s;
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "signatures: row outside the table");
        goto done;
    }
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&de_b); PyBuffer_Release(&tb_b); PyBuffer_Release(&rw_b);
    PyBuffer_Release(&out_b);
    return ret;
}

/*
 * collect(votes, touched, n_touched, dead, k, out_slots, out_votes) -> count
 *
 * After scan(): the k best of the touched slots touched[0:n_touched] with votes
 * votes[0:n_touched] that exist in `dead` (uint8[n], nonzero: removed) and are alive:
 * out_slots int64[k], out_votes float32[k], vote descending, ties in touched order (the slot
 * voted for first comes first). Returns how many were kept (<= k). The caller uses it only
 * when n_touched <= len(touched) (the list is complete). Reads the two arrays in order; a
 * slot's tombstone only when its vote would enter the k best.
 */
static PyObject *py_collect(PyObject *self, PyObject *args) {
    Py_buffer vote_b, touch_b, dead_b, os_b, ov_b;
    Py_ssize_t nt;
    int k;
    if (!PyArg_ParseTuple(args, "y*y*ny*iw*w*", &vote_b, &touch_b, &nt, &dead_b, &k, &os_b,
                          &ov_b))
        return NULL;
    PyObject *ret = NULL;
    const float *votes = (const float *)vote_b.buf;
    const uint32_t *touched = (const uint32_t *)touch_b.buf;
    const uint8_t *dead = (const uint8_t *)dead_b.buf;
    int64_t *os = (int64_t *)os_b.buf;
    float *ov = (float *)ov_b.buf;
    Py_ssize_t n_dead = dead_b.len;
    if (k < 1 || nt < 0 || nt > touch_b.len / 4 || nt > vote_b.len / 4 ||
        os_b.len < (Py_ssize_t)k * 8 || ov_b.len < (Py_ssize_t)k * 4) {
        PyErr_SetString(PyExc_ValueError, "collect: inconsistent buffer sizes");
        goto done;
    }
    int cnt = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nt; i++) {
        float v = votes[i];
        if (v <= 0.0f || (cnt == k && v <= ov[k - 1])) continue;
        uint32_t s = touched[i];
        if ((Py_ssize_t)s >= n_dead || dead[s]) continue;
        int j = cnt < k ? cnt++ : k - 1;
        while (j > 0 && ov[j - 1] < v) {  /* ties keep the touched order (first voted first) */
            ov[j] = ov[j - 1];
            os[j] = os[j - 1];
            j--;
        }
        ov[j] = v;
        os[j] = (int64_t)s;
    }
    Py_END_ALLOW_THREADS
    ret = PyLong_FromLong(cnt);
done:
    PyBuffer_Release(&vote_b); PyBuffer_Release(&touch_b); PyBuffer_Release(&dead_b);
    PyBuffer_Release(&os_b); PyBuffer_Release(&ov_b);
    return ret;
}

/*
 * hamming(a, b, out, row_min) -> None
 *
 * a        uint8[na * 32]   descriptors (ORB, 256 bits)
 * b        uint8[nb * 32]   descriptors
 * out      int32[na * nb]   (written) Hamming distance of a[i] and b[j] at i * nb + j
 * row_min  int32[na]        (written) min over j of out[i, j] (257 when nb is 0)
 *
 * The tentative pairs of a verification (hashwatch.robust.verify.candidate_pairs) compare
 * every query descriptor of a stage (~500) with a nominee's 128 stored ones; numpy's
 * popcount of a (na, nb) array per 64-bit word took ~0.3 ms of a nominee's ~2 ms. The row
 * minima tell the caller which query descriptors have any stored one within its radius
 * (about 1 in 10), the only rows it needs to order.
 */
static PyObject *py_hamming(PyObject *self, PyObject *args) {
    Py_buffer a_b, b_b, out_b, mn_b;
    if (!PyArg_ParseTuple(args, "y*y*w*w*", &a_b, &b_b, &out_b, &mn_b)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t na = a_b.len / 32, nb = b_b.len / 32;
    if (a_b.len % 32 != 0 || b_b.len % 32 != 0 || out_b.len != na * nb * 4 ||
        mn_b.len != na * 4) {
        PyErr_SetString(PyExc_ValueError, "hamming: inconsistent buffer sizes");
        goto done;
    }
    const uint8_t *a = (const uint8_t *)a_b.buf, *b = (const uint8_t *)b_b.buf;
    int32_t *out = (int32_t *)out_b.buf, *mn = (int32_t *)mn_b.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < na; i++) {
        uint64_t x[4];
        memcpy(x, a + i * 32, 32);
        int32_t best = 257;
        int32_t *row = out + i * nb;
        for (Py_ssize_t j = 0; j < nb; j++) {
            uint64_t y[4];
            memcpy(y, b + j * 32, 32);
            int32_t d = POPCNT64(x[0] ^ y[0]) + POPCNT64(x[1] ^ y[1]) +
                        POPCNT64(x[2] ^ y[2]) + POPCNT64(x[3] ^ y[3]);
            row[j] = d;
            if (d < best) best = d;
        }
        mn[i] = best;
    }
    Py_END_ALLOW_THREADS
    ret = Py_None;
    Py_INCREF(ret);
done:
    PyBuffer_Release(&a_b); PyBuffer_Release(&b_b); PyBuffer_Release(&out_b);
    PyBuffer_Release(&mn_b);
    return ret;
}

/*
 * knn_pairs(d, j, rows, kk, radius, nq, nk, out) -> count
 *
 * d      int32[r * nk]  distances of r query rows (rows[i] is row i's query descriptor) to
 *                       the nk stored descriptors
 * j      int64[r * kk]  the kk picks of each row (numpy's argpartition, in its order)
 * rows   int64[r]       ascending query rows, each < nq
 * out    int64[2 * r * kk]  (written) the pairs (query row, stored row)
 *
 * The tentative pairs of hashwatch.robust.verify.candidate_pairs from the picks: every pick
 * within `radius`, in row order and then pick order, stably sorted by distance (a counting
 * sort), then kept when it is both the first pair of its stored row and the first of its
 * query row in that order (verify.greedy_pairs, whose numpy calls on ~100 pairs cost more
 * than the pairs' Hamming distances). Returns how many pairs were written, closest first;
 * -1 (ValueError) on a pick or row out of range.
 */
static PyObject *py_knn_pairs(PyObject *self, PyObject *args) {
    Py_buffer d_b, j_b, r_b, out_b;
    Py_ssize_t kk, nq, nk;
    int radius;
    if (!PyArg_ParseTuple(args, "y*y*y*ninnw*", &d_b, &j_b, &r_b, &kk, &radius, &nq, &nk,
                          &out_b))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t r = r_b.len / 8;
    if (kk < 0 || nk < 0 || nq < 0 || r_b.len % 8 != 0 || d_b.len != r * nk * 4 ||
        j_b.len != r * kk * 8 || out_b.len != 2 * r * kk * 8) {
        PyErr_SetString(PyExc_ValueError, "knn_pairs: inconsistent buffer sizes");
        goto done;
    }
    const int32_t *d = (const int32_t *)d_b.buf;
    const int64_t *j = (const int64_t *)j_b.buf, *rows = (const int64_t *)r_b.buf;
    int64_t *out = (int64_t *)out_b.buf;
    Py_ssize_t n = r * kk, cnt = 0;
    int bad = 0;
    int64_t *tq = NULL, *tk = NULL;
    int32_t *td = NULL;
    uint8_t *seen_q = NULL, *seen_k = NULL;
    Py_ssize_t counts[258];
    if (radius > 256) radius = 256;  /* no distance of 256-bit descriptors is larger */
    if (radius < 0 || n == 0) {
        ret = PyLong_FromSsize_t(0);
        goto done;
    }
    tq = (int64_t *)PyMem_Malloc((size_t)n * 8);
    tk = (int64_t *)PyMem_Malloc((size_t)n * 8);
    td = (int32_t *)PyMem_Malloc((size_t)n * 4);
    seen_q = (uint8_t *)PyMem_Calloc((size_t)nq + 1, 1);
    seen_k = (uint8_t *)PyMem_Calloc((size_t)nk + 1, 1);
    if (!tq || !tk || !td || !seen_q || !seen_k) {
        PyErr_NoMemory();
        goto free;
    }
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t m = 0;
    memset(counts, 0, sizeof(counts));
    for (Py_ssize_t i = 0; i < r && !bad; i++) {
        if (rows[i] < 0 || rows[i] >= nq) { bad = 1; break; }
        for (Py_ssize_t t = 0; t < kk; t++) {
            int64_t c = j[i * kk + t];
            if (c < 0 || c >= nk) { bad = 1; break; }
            int32_t dist = d[i * nk + c];
            if (dist > radius) continue;
            if (dist < 0) { bad = 1; break; }
            tq[m] = rows[i];
            tk[m] = c;
            td[m] = dist;
            counts[dist + 1]++;
            m++;
        }
    }
    if (!bad) {
        /* stable counting sort by distance into out (as scratch pairs), then the greedy */
        for (int v = 1; v < 258; v++) counts[v] += counts[v - 1];
        int64_t *sq = out, *sk = out + n;  /* sorted query rows / stored rows */
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_ssize_t at = counts[td[i]]++;
            sq[at] = tq[i];
            sk[at] = tk[i];
        }
        for (Py_ssize_t i = 0; i < m; i++) {
            int64_t qi = sq[i], ki = sk[i];
            int first_k = !seen_k[ki], first_q = !seen_q[qi];
            seen_k[ki] = 1;
            seen_q[qi] = 1;
            if (first_k && first_q) {  /* cnt <= i: writing behind the read position */
                tq[cnt] = qi;
                tk[cnt] = ki;
                cnt++;
            }
        }
        for (Py_ssize_t i = 0; i < cnt; i++) {
            out[2 * i] = tq[i];
            out[2 * i + 1] = tk[i];
        }
    }
    Py_END_ALLOW_THREADS
    if (bad)
        PyErr_SetString(PyExc_ValueError, "knn_pairs: a pick or row out of range");
    else
        ret = PyLong_FromSsize_t(cnt);
free:
    PyMem_Free(tq); PyMem_Free(tk); PyMem_Free(td); PyMem_Free(seen_q); PyMem_Free(seen_k);
done:
    PyBuffer_Release(&d_b); PyBuffer_Release(&j_b); PyBuffer_Release(&r_b);
    PyBuffer_Release(&out_b);
    return ret;
}

static PyMethodDef methods[] = {
    {"assign", py_assign, METH_VARARGS,
     "assign(coarse, fine, k2, desc, probe, m, words_out, dists_out): nearest visual words"},
    {"scan", py_scan, METH_VARARGS,
     "scan(offsets, sigs, ids, qwords, qsigs, qweights, ht, stamp, acc, votes, touched, "
     "n_touched[, m]) -> (n_touched, scanned, passed): vote over posting lists"},
    {"signatures", py_signatures, METH_VARARGS,
     "signatures(desc, table, rows, m, out): Hamming-embedding signature of each "
     "(descriptor, word)"},
    {"collect", py_collect, METH_VARARGS,
     "collect(votes, touched, n_touched, dead, k, out_slots, out_votes) -> count: the k best "
     "live voted slots"},
    {"hamming", py_hamming, METH_VARARGS,
     "hamming(a, b, out, row_min): pairwise Hamming distances of 32-byte descriptors and "
     "each row's minimum"},
    {"knn_pairs", py_knn_pairs, METH_VARARGS,
     "knn_pairs(d, j, rows, kk, radius, nq, nk, out) -> count: tentative pairs of the picks "
     "within the radius, closest first, one per query and per stored row"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_kpidx",
                                    "hot path of hashwatch.robust.keypoint_index", -1, methods};

PyMODINIT_FUNC PyInit__kpidx(void) { return PyModule_Create(&moddef); }
