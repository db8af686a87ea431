/* y = x @ w.T (+ b) for a few rows of x: see small_batch_linear.py for why this exists.
 *
 * x: [M, K], w: [N, K], y: [M, N], all float32 and contiguous; K a multiple of 8, N a multiple of 4.
 * Each output is the dot product of one row of x with one row of w, summed in 8 lanes over K and then
 * across the lanes, the same way whatever M is: a row's result does not depend on the rows beside it.
 * A block holds 4 rows of w against 1-3 rows of x in 12 vector accumulators (16 registers on AVX2), so
 * each weight loaded from memory feeds up to 3 multiply-adds. Threads split N (OpenMP: the runtime
 * torch already loaded, so its thread count applies).
 */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int i8 __attribute__((vector_size(32)));
#define LOAD(p) (*(const v8u *)(p))

static inline float hsum(v8 v) {
    v8 s = v + __builtin_shuffle(v, (i8){4, 5, 6, 7, 0, 1, 2, 3});
    return (s[0] + s[2]) + (s[1] + s[3]);
}

#define BLOCK(MB)                                                                                          \
static void block##MB(const float *x, const float *w, const float *b, float *y, long m0, long n0, long K,  \
                      long N) {                                                                            \
    const float *w0 = w + n0 * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;                                \
    const float *x0 = x + m0 * K, *x1 = x0 + (MB > 1 ? K : 0), *x2 = x0 + (MB > 2 ? 2 * K : 0);             \
    v8 a00 = {0}, a01 = {0}, a02 = {0}, a10 = {0}, a11 = {0}, a12 = {0};                                     \
    v8 a20 = {0}, a21 = {0}, a22 = {0}, a30 = {0}, a31 = {0}, a32 = {0};                                     \
    for (long k = 0; k < K; k += 8) {                                                                       \
        v8 c0 = LOAD(x0 + k), c1 = MB > 1 ? LOAD(x1 + k) : c0, c2 = MB > 2 ? LOAD(x2 + k) : c0;             \
        v8 v = LOAD(w0 + k);                                                                                \
        a00 += v * c0; if (MB > 1) a01 += v * c1; if (MB > 2) a02 += v * c2;                                \
        v = LOAD(w1 + k);                                                                                   \
        a10 += v * c0; if (MB > 1) a11 += v * c1; if (MB > 2) a12 += v * c2;                                \
        v = LOAD(w2 + k);                                                                                   \
        a20 += v * c0; if (MB > 1) a21 += v * c1; if (MB > 2) a22 += v * c2;                                \
        v = LOAD(w3 + k);                                                                                   \
        a30 += v * c0; if (MB > 1) a31 += v * c1; if (MB > 2) a32 += v * c2;                                \
    }                                                                                                       \
    v8 acc[3][4] = {{a00, a10, a20, a30}, {a01, a11, a21, a31}, {a02, a12, a22, a32}};                     \
    for (int j = 0; j < MB; j++)                                                                            \
        for (int i = 0; i < 4; i++) y[(m0 + j) * N + n0 + i] = hsum(acc[j][i]) + (b ? b[n0 + i] : 0.0f);   \
}
BLOCK(1)
BLOCK(2)
BLOCK(3)

void small_linear(const float *x, const float *w, const float *b, float *y, long M, long N, long K) {
    #pragma omp parallel for schedule(static)
    for (long n0 = 0; n0 < N; n0 += 4) {
        long m0 = 0;
        for (; m0 + 3 <= M; m0 += 3) block3(x, w, b, y, m0, n0, K, N);
        if (M - m0 == 2) block2(x, w, b, y, m0, n0, K, N);
        else if (M - m0 == 1) block1(x, w, b, y, m0, n0, K, N);
    }
}
