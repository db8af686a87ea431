/* Kernels for decoding on the CPU; why they exist, and how they are built: cpu_kernels.py. */
#include <math.h>
#include <stdlib.h>

/* small_linear: y = x @ w.T (+ b) for a few rows of x.
 *
 * x: [M, K], w: [N, K], y: [M, N], all float32 and contiguous; K a multiple of 8.
 * Each output is the dot product of one row of x with one row of w, summed in 8 lanes over K and then
 * across the lanes, the same way whatever M is: a row's result does not depend on the rows beside it.
 * A block holds 6 rows of w against 2 rows of x in 12 vector accumulators (with the two rows of x and
 * one row of w: 15 of AVX2's 16 registers), so each weight loaded from memory feeds two multiply-adds
 * and each row of x is read once per 6 rows of w. Threads split N (OpenMP: the runtime torch already
 * loaded, so its thread count applies). Measured on the 2-core AVX2 CPU: 4x2 and 4x3 blocks were
 * 5% slower.
 */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define LOAD(p) (*(const v8u *)(p))
/* Keeps a loaded vector in a register: without it GCC folds the load into each multiply-add that uses
 * the vector, so a block read every weight twice (6-11% slower at 24-48 rows here). */
#if defined(__x86_64__) || defined(__i386__)
#define IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define IN_REGISTER(v) ((void)0)
#endif

static inline float hsum(v8 v) {
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/* rows m0.. m0+MB-1 of x against rows n0 .. n0+NB-1 of w */
#define BLOCK(NB, MB)                                                                                      \
static void block_##NB##_##MB(const float *x, const float *w, const float *b, float *y, long m0, long n0,   \
                              long K, long N) {                                                            \
    const float *x0 = x + m0 * K, *x1 = x0 + (MB > 1 ? K : 0);                                             \
    v8 acc[NB][2] = {{{0}}};                                                                               \
    for (long k = 0; k < K; k += 8) {                                                                      \
        v8 c0 = LOAD(x0 + k), c1 = MB > 1 ? LOAD(x1 + k) : c0;                                             \
        for (int i = 0; i < NB; i++) {                                                                     \
            v8 v = LOAD(w + (n0 + i) * K + k);                                                             \
            IN_REGISTER(v);                                                                                \
            acc[i][0] += v * c0;                                                                           \
            if (MB > 1) acc[i][1] += v * c1;                                                               \
        }                                                                                                  \
    }                                                                                                      \
    for (int j = 0; j < MB; j++)                                                                           \
        for (int i = 0; i < NB; i++) y[(m0 + j) * N + n0 + i] = hsum(acc[i][j]) + (b ? b[n0 + i] : 0.0f);  \
}
BLOCK(6, 2)
BLOCK(6, 1)
BLOCK(1, 2)
BLOCK(1, 1)

void small_linear(const float *x, const float *w, const float *b, float *y, long M, long N, long K) {
    long wide = N / 6;  /* blocks of 6 rows of w, then N % 6 single rows */
    #pragma omp parallel for schedule(static)
    for (long block = 0; block < wide + N % 6; block++) {
        long m0 = 0, n0 = block < wide ? 6 * block : 6 * wide + (block - wide);
        if (block < wide) {
            for (; m0 + 2 <= M; m0 += 2) block_6_2(x, w, b, y, m0, n0, K, N);
            if (m0 < M) block_6_1(x, w, b, y, m0, n0, K, N);
        } else {
            for (; m0 + 2 <= M; m0 += 2) block_1_2(x, w, b, y, m0, n0, K, N);
            if (m0 < M) block_1_1(x, w, b, y, m0, n0, K, N);
        }
    }
}

/* Attention of one new position per sequence over its cached keys/values (decoding), for grouped heads.
 *
 * q: [B, G*R, D] contiguous (R query heads read each of the G key/value heads); k, v: [B, G, L, D] with
 * any row and head strides and contiguous positions; mask: [B, L] bytes, 0 = padding (skipped), or NULL;
 * out: [B, G*R, D]; D a multiple of 8, at most 256; R at most 8. Each (sequence, key/value head) reads
 * its keys and then its values once for its R query heads, where the stock kernel reads them once per
 * query head, and masked positions are not read. Scores go to a scratch row, then the usual softmax
 * with the maximum subtracted.
 */
#define MAX_R 8
#define MAX_D8 32
int decode_attention(const float *q, const float *k, const float *v, const unsigned char *mask, float *out,
                     long B, long G, long R, long L, long D, long k_row, long k_head, long v_row, long v_head,
                     float scale) {
    long D8 = D / 8;
    int failed = 0;
    if (D % 8 || D8 > MAX_D8 || R > MAX_R) return 1;
    #pragma omp parallel reduction(|| : failed)
    {
        float *scores = malloc(sizeof(float) * R * (L > 0 ? L : 1));
        long *kept = malloc(sizeof(long) * (L > 0 ? L : 1));
        if (!scores || !kept) failed = 1;
        #pragma omp for schedule(static)
        for (long bg = 0; bg < B * G; bg++) {
            if (!scores || !kept) continue;
            long b = bg / G, g = bg % G, n = 0;
            const float *keys = k + b * k_row + g * k_head, *values = v + b * v_row + g * v_head;
            const unsigned char *keep = mask ? mask + b * L : 0;
            v8 query[MAX_R][MAX_D8], acc[MAX_R][MAX_D8];
            float top[MAX_R], total[MAX_R];
            for (long r = 0; r < R; r++) {
                top[r] = -INFINITY;
                total[r] = 0.0f;
                for (long i = 0; i < D8; i++) {
                    query[r][i] = LOAD(q + ((b * G + g) * R + r) * D + 8 * i);
                    acc[r][i] = (v8){0};
                }
            }
            for (long j = 0; j < L; j++) {
                if (keep && !keep[j]) continue;
                const float *key = keys + j * D;
                for (long r = 0; r < R; r++) {
                    v8 dot = {0};
                    for (long i = 0; i < D8; i++) dot += query[r][i] * LOAD(key + 8 * i);
                    float s = hsum(dot) * scale;
                    scores[r * L + n] = s;
                    if (s > top[r]) top[r] = s;
                }
                kept[n++] = j;
            }
            for (long r = 0; r < R; r++)
                for (long t = 0; t < n; t++) {
                    float p = expf(scores[r * L + t] - top[r]);
                    scores[r * L + t] = p;
                    total[r] += p;
                }
            for (long t = 0; t < n; t++) {
                const float *value = values + kept[t] * D;
                for (long i = 0; i < D8; i++) {
                    v8 x = LOAD(value + 8 * i);
                    for (long r = 0; r < R; r++) acc[r][i] += scores[r * L + t] * x;
                }
            }
            for (long r = 0; r < R; r++)
                for (long i = 0; i < D8; i++) {
                    v8 o = n ? acc[r][i] / total[r] : (v8){0};
                    for (int l = 0; l < 8; l++) out[((b * G + g) * R + r) * D + 8 * i + l] = o[l];
                }
        }
        free(scores);
        free(kept);
    }
    return failed;
}
