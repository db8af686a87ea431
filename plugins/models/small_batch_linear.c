/* y = x @ w.T (+ b) for a few rows of x: see small_batch_linear.py for why this exists.
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
typedef int i8 __attribute__((vector_size(32)));
#define LOAD(p) (*(const v8u *)(p))

static inline float hsum(v8 v) {
    v8 s = v + __builtin_shuffle(v, (i8){4, 5, 6, 7, 0, 1, 2, 3});
    return (s[0] + s[2]) + (s[1] + s[3]);
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
