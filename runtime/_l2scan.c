/* edgereid native search kernel: exact top-k by squared L2 distance over int8 codes.
 *
 * Plain C (no Python API), loaded with ctypes by edgereid/runtime/native_scan.py; built by
 * setup.py as an optional extension, so a machine without a compiler falls back to the
 * onnxruntime kernel. One job: for one query, scan n contiguous int8 rows of d bytes and keep
 * the k smallest (distance, row) pairs, ties going to the lower row.
 *
 * Distances are computed exactly in int32: (q - g)^2 <= 254^2 = 64516 per dimension, so d is
 * limited to 32768 (the caller checks). The differences are formed in int16 and squared-summed
 * with a multiply-add (pmaddwd), like faiss's SQ8 but with no float decode. x86-64 picks an
 * AVX-512BW or AVX2 body at run time; elsewhere (Jetson: aarch64) the portable loop is
 * vectorised by the compiler.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EDGEREID_L2SCAN_MAX_DIM 32768
#define CHUNK_ROWS 256

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* ---- distances of CHUNK_ROWS rows at a time into an int32 buffer ------------------------- */

static void dist_portable(const int8_t *codes, int64_t n, int64_t d, const int16_t *q16, int32_t *out) {
    for (int64_t i = 0; i < n; i++) {
        const int8_t *g = codes + i * d;
        int32_t acc = 0;
        for (int64_t j = 0; j < d; j++) {
            int16_t t = (int16_t)(q16[j] - g[j]); /* |t| <= 254: int16 lanes, widened products */
            acc += (int32_t)t * t;
        }
        out[i] = acc;
    }
}

#ifdef HAVE_X86
__attribute__((target("avx2")))
static void dist_avx2(const int8_t *codes, int64_t n, int64_t d, const int16_t *q16, int32_t *out) {
    const int64_t d16 = d & ~(int64_t)15;
    for (int64_t i = 0; i < n; i++) {
        const int8_t *g = codes + i * d;
        __m256i acc = _mm256_setzero_si256();
        int64_t j = 0;
        for (; j < d16; j += 16) {
            __m256i gv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(g + j)));
            __m256i df = _mm256_sub_epi16(_mm256_loadu_si256((const __m256i *)(q16 + j)), gv);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(df, df));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        int32_t tot = _mm_cvtsi128_si32(s);
        for (; j < d; j++) {
            int32_t t = (int32_t)q16[j] - (int32_t)g[j];
            tot += t * t;
        }
        out[i] = tot;
    }
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static void dist_avx512(const int8_t *codes, int64_t n, int64_t d, const int16_t *q16, int32_t *out) {
    const int64_t d32 = d & ~(int64_t)31;
    const int64_t rem = d - d32;
    const __mmask32 tail = rem ? (__mmask32)((1ull << rem) - 1) : 0;
    /* q16 is zero-padded to a multiple of 32, and masked-off code bytes load as 0: the padded
     * lanes of the tail contribute (0 - 0)^2 = 0 */
    for (int64_t i = 0; i < n; i++) {
        const int8_t *g = codes + i * d;
        __m512i acc = _mm512_setzero_si512();
        int64_t j = 0;
        for (; j < d32; j += 32) {
            __m512i gv = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(g + j)));
            __m512i df = _mm512_sub_epi16(_mm512_loadu_si512((const void *)(q16 + j)), gv);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(df, df));
        }
        if (rem) {
            __m512i gv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(tail, g + j));
            __m512i df = _mm512_sub_epi16(_mm512_loadu_si512((const void *)(q16 + j)), gv);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(df, df));
        }
        out[i] = _mm512_reduce_add_epi32(acc);
    }
}
#endif

typedef void (*dist_fn)(const int8_t *, int64_t, int64_t, const int16_t *, int32_t *);

static int pick_isa(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
#endif
    return 0;
}

/* 0 = portable C, 1 = AVX2, 2 = AVX-512BW: the body a scan will use on this CPU. */
int32_t edgereid_l2scan_isa(void) { return pick_isa(); }

static dist_fn dist_for(int isa) {
#ifdef HAVE_X86
    if (isa == 2) return dist_avx512;
    if (isa == 1) return dist_avx2;
#endif
    (void)isa;
    return dist_portable;
}

/* ---- the k best, as a max-heap on (distance, row) ------------------------------------------ */

static int worse(int64_t da, int64_t ra, int64_t db, int64_t rb) { return da > db || (da == db && ra > rb); }

static void sift_down(int64_t *hd, int64_t *hr, int64_t m, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < m && worse(hd[l], hr[l], hd[w], hr[w])) w = l;
        if (r < m && worse(hd[r], hr[r], hd[w], hr[w])) w = r;
        if (w == i) return;
        int64_t td = hd[i], tr = hr[i];
        hd[i] = hd[w]; hr[i] = hr[w];
        hd[w] = td; hr[w] = tr;
        i = w;
    }
}

static void sift_up(int64_t *hd, int64_t *hr, int64_t i) {
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!worse(hd[i], hr[i], hd[p], hr[p])) return;
        int64_t td = hd[i], tr = hr[i];
        hd[i] = hd[p]; hr[i] = hr[p];
        hd[p] = td; hr[p] = tr;
        i = p;
    }
}

/* Scan n rows of d int8 bytes (contiguous, row-major) for query q (d int8).
 *
 * valid: NULL or n bytes, 0 = skip the row (a removed entry).
 * thr:   only rows with distance <= thr are reported (the caller's current k-th best from earlier
 *        rows, or INT64_MAX for none); rows here come after those, so ties at thr are the
 *        caller's to break (it merges by (distance, row)).
 * isa:   -1 = best for this CPU, else 0/1/2 (tests pin the portable body against the others).
 * out_dist/out_rows: k slots each; the first (return value) hold the k best rows (row index
 *        within this scan), unordered.
 * Returns the number of results, or -1 for invalid arguments (d out of 1..32768, k < 1,
 * n < 0, isa unavailable), -2 when memory for the padded query cannot be had. */
int64_t edgereid_l2_topk_i8(const int8_t *codes, int64_t n, int64_t d, const int8_t *q, const uint8_t *valid,
                            int64_t thr, int64_t k, int32_t isa, int64_t *out_dist, int64_t *out_rows) {
    if (d < 1 || d > EDGEREID_L2SCAN_MAX_DIM || k < 1 || n < 0) return -1;
    int best = pick_isa();
    if (isa < 0) isa = best;
    if (isa > best) return -1;
    dist_fn dist = dist_for(isa);

    int64_t dpad = (d + 31) & ~(int64_t)31;
    int16_t *q16 = (int16_t *)calloc((size_t)dpad, sizeof(int16_t));
    if (!q16) return -2;
    for (int64_t j = 0; j < d; j++) q16[j] = q[j];

    int32_t buf[CHUNK_ROWS];
    int64_t m = 0;         /* heap size */
    int64_t bound = thr;   /* accept a row when its distance <= bound */
    for (int64_t lo = 0; lo < n; lo += CHUNK_ROWS) {
        int64_t cnt = n - lo < CHUNK_ROWS ? n - lo : CHUNK_ROWS;
        dist(codes + lo * d, cnt, d, q16, buf);
        for (int64_t i = 0; i < cnt; i++) {
            int64_t dv = buf[i];
            if (dv > bound) continue;
            int64_t row = lo + i;
            if (valid && !valid[row]) continue;
            if (m < k) {
                out_dist[m] = dv;
                out_rows[m] = row;
                sift_up(out_dist, out_rows, m);
                m++;
            } else {
                /* full: dv <= bound = top - 1, strictly better than the worst (later row loses ties) */
                out_dist[0] = dv;
                out_rows[0] = row;
                sift_down(out_dist, out_rows, m, 0);
            }
            if (m == k) {
                int64_t b = out_dist[0] - 1;
                if (b < bound) bound = b;
            }
        }
    }
    free(q16);
    return m;
}
