/* Native kernels of lossfn: fused passes over the data that torch would make
 * one operator (and one memory round trip) at a time. Here the least-squares
 * ones: line_sums (one predictor), line_fit (the fit.ols record from its
 * sums) and centred_gram (several predictors); the robust fits' are in
 * huber.c and lad.c.
 *
 * line_sums: the centred moments of one predictor and the response, per
 * dataset (row), in one pass over memory. Each block of BLOCK points is read
 * twice while it is in cache:
 *   1. n = number of present points, c_x = sum(x)/n, c_y = sum(y)/n;
 *   2. with dx = x - c_x, dy = y - c_y over the present points: the shifted
 *      sums S_dx, S_dy, S_dxdx, S_dxdy, S_dydy;
 * which give the block's mean_x = c_x + S_dx/n, mean_y, and centred sums
 *   Sxx = S_dxdx - S_dx^2/n,  Sxy = S_dxdy - S_dx*S_dy/n,  Syy = S_dydy - S_dy^2/n;
 * the blocks' are merged one by one into the row's running sums (merge,
 * below). Everything
 * is accumulated in double: float32 data are exact there, and their squares
 * neither over- nor underflow. Rounding grows with BLOCK/lanes within a block
 * and linearly with the number of blocks across them. Absent points (mask 0) are
 * cleared by a bit mask, not multiplied by 0: nan or inf there is never added.
 *
 * Compiled on first use by lossfn._native._build (cc -O3 -march=native).
 */
#include <math.h>

#include "common.h"
#include "gram.h"

#define BLOCK 1024

/* The two passes over a block of a row: sums of the present values (and
 * their count), then of the products of the centred present values. Vectors
 * of 8 points, two at a time into two sets of sums (so the additions'
 * latency overlaps), then the last few, loaded without reading past the row.
 * Absent points and the lanes past the row are cleared by bit masks, so nan
 * or inf there is never added. */
#define FIRST_STEP(LOAD, J, S)                                                             \
    do {                                                                                   \
        v8d xv = LOAD(xr + (J)), yv = LOAD(yr + (J));                                      \
        if (mr) {                                                                          \
            const v8di k = kept_lanes(mr + (J));                                           \
            xv = keep(xv, k); yv = keep(yv, k); n##S += keep(one, k);                      \
        }                                                                                  \
        x##S += xv; y##S += yv;                                                            \
    } while (0)
#define SECOND_STEP(LOAD, J, S)                                                            \
    do {                                                                                   \
        v8d dx = LOAD(xr + (J)) - cxv, dy = LOAD(yr + (J)) - cyv;                          \
        if (mr) {                                                                          \
            const v8di k = kept_lanes(mr + (J));                                           \
            dx = keep(dx, k); dy = keep(dy, k);                                            \
        }                                                                                  \
        a##S += dx; b##S += dy; aa##S += dx * dx; ab##S += dx * dy; bb##S += dy * dy;      \
    } while (0)

/* If the present y of a row (at least one) are all one value: mean_y = that
 * value, Sxy = Syy = 0 (out as line_sums writes it). nan never compares equal. */
#define DEFINE_CONSTANT_RESPONSE(NAME, T)                                                  \
    static void NAME(const T *yr, const uint8_t *mr, int64_t m, double *o)                 \
    {                                                                                      \
        int64_t first = 0;                                                                 \
        while (first < m && mr && !mr[first]) ++first;                                     \
        if (first == m) return;                                                            \
        const T value = yr[first];                                                         \
        for (int64_t j = first; j < m; ++j)                                                \
            if ((!mr || mr[j]) && !(yr[j] == value)) return;                               \
        o[1] = (double)value;                                                              \
        o[3] = 0;                                                                          \
        o[4] = 0;                                                                          \
    }
DEFINE_CONSTANT_RESPONSE(constant_response_f32, float)
DEFINE_CONSTANT_RESPONSE(constant_response_f64, double)
#define constant_response(yr, mr, m, o)                                                    \
    _Generic((yr), const float *: constant_response_f32, const double *: constant_response_f64)(yr, mr, m, o)

/* The 16 values from p + j on into cache, for the next block's first pass
 * (a prefetch past the row's end is harmless: it never faults). */
#define PREFETCH_NEXT(p, j)                                                                \
    do {                                                                                   \
        __builtin_prefetch((p) + (j));                                                     \
        if (sizeof *(p) == 8) __builtin_prefetch((p) + (j) + 8);                           \
    } while (0)

/* Merges the centred sums of a block (n points about means c + e, as
 * first-pass mean c and correction e) into a row's running ones, about the
 * running mean C + E (Chan, Golub and LeVeque's pairwise update). The means'
 * difference is taken as (c - C) + (e - E): with data far from 0 the first
 * parts cancel exactly, so it keeps its digits whatever the offset. */
typedef struct {
    double n, cx, cy, ex, ey, sxx, sxy, syy;
} centred;

static inline void merge(centred *run, const centred *block)
{
    if (block->n == 0) return;
    if (run->n == 0) {
        *run = *block;
        return;
    }
    const double n = run->n + block->n, w = block->n / n, both = run->n * w;
    const double dx = (block->cx - run->cx) + (block->ex - run->ex);
    const double dy = (block->cy - run->cy) + (block->ey - run->ey);
    run->ex += dx * w;
    run->ey += dy * w;
    run->sxx += block->sxx + dx * dx * both;
    run->sxy += block->sxy + dx * dy * both;
    run->syy += block->syy + dy * dy * both;
    run->n = n;
}

#define DEFINE_LINE_SUMS(NAME, T, LOAD)                                                    \
    static void NAME(const T *x, int64_t x_row, const T *y, int64_t y_row,                 \
                     const uint8_t *mask, int64_t mask_row, int64_t r0, int64_t r1,        \
                     int64_t m, double *out)                                               \
    {                                                                                      \
        const v8d one = (v8d){0} + 1.0;                                                    \
        for (int64_t r = r0; r < r1; ++r) {                                                \
            const T *xr = x + r * x_row, *yr = y + r * y_row;                              \
            const uint8_t *mr = mask ? mask + r * mask_row : NULL;                         \
            centred run = {0};                                                             \
            for (int64_t j0 = 0; j0 < m; j0 += BLOCK) {                                    \
                const int64_t end = m - j0 < BLOCK ? m : j0 + BLOCK;                       \
                v8d n0 = {0}, x0 = {0}, y0 = {0}, n1 = {0}, x1 = {0}, y1 = {0};            \
                v8d n2 = {0}, x2 = {0}, y2 = {0}, n3 = {0}, x3 = {0}, y3 = {0};            \
                double sn = 0, sx = 0, sy = 0; /* the scalar tail's sums */                \
                int64_t j = j0;                                                            \
                for (; j + 32 <= end; j += 32) { /* 4 sets: only 2 sums per set */         \
                    FIRST_STEP(LOAD, j, 0);                                                \
                    FIRST_STEP(LOAD, j + 8, 1);                                            \
                    FIRST_STEP(LOAD, j + 16, 2);                                           \
                    FIRST_STEP(LOAD, j + 24, 3);                                           \
                }                                                                          \
                for (; j + 16 <= end; j += 16) {                                           \
                    FIRST_STEP(LOAD, j, 0);                                                \
                    FIRST_STEP(LOAD, j + 8, 1);                                            \
                }                                                                          \
                if (j + 8 <= end) { FIRST_STEP(LOAD, j, 0); j += 8; }                      \
                for (; j < end; ++j) /* the last few: scalar */                            \
                    if (!mr || mr[j]) { sn += 1; sx += (double)xr[j]; sy += (double)yr[j]; } \
                const double n = mr ? lane_sum((n0 + n1) + (n2 + n3)) + sn : (double)(end - j0); \
                if (n == 0) continue; /* an absent block */                                \
                const double cx = (lane_sum((x0 + x1) + (x2 + x3)) + sx) / n;              \
                const double cy = (lane_sum((y0 + y1) + (y2 + y3)) + sy) / n;              \
                const v8d cxv = (v8d){0} + cx, cyv = (v8d){0} + cy;                        \
                v8d a0 = {0}, b0 = {0}, aa0 = {0}, ab0 = {0}, bb0 = {0};                   \
                v8d a1 = {0}, b1 = {0}, aa1 = {0}, ab1 = {0}, bb1 = {0};                   \
                double s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0;                             \
                j = j0; /* the block again, from cache, while the next one is fetched */   \
                for (; j + 16 <= end; j += 16) {                                           \
                    PREFETCH_NEXT(xr, j + BLOCK);                                          \
                    PREFETCH_NEXT(yr, j + BLOCK);                                          \
                    SECOND_STEP(LOAD, j, 0);                                               \
                    SECOND_STEP(LOAD, j + 8, 1);                                           \
                }                                                                          \
                if (j + 8 <= end) { SECOND_STEP(LOAD, j, 0); j += 8; }                     \
                for (; j < end; ++j) /* the last few: scalar */                            \
                    if (!mr || mr[j]) {                                                    \
                        const double dx = (double)xr[j] - cx, dy = (double)yr[j] - cy;     \
                        s1 += dx; s2 += dy; s3 += dx * dx; s4 += dx * dy; s5 += dy * dy;   \
                    }                                                                      \
                const double dxs = lane_sum(a0 + a1) + s1, dys = lane_sum(b0 + b1) + s2;   \
                const centred block = {n, cx, cy, dxs / n, dys / n,                        \
                                       lane_sum(aa0 + aa1) + s3 - dxs * dxs / n,           \
                                       lane_sum(ab0 + ab1) + s4 - dxs * dys / n,           \
                                       lane_sum(bb0 + bb1) + s5 - dys * dys / n};          \
                merge(&run, &block);                                                       \
            }                                                                              \
            double *o = out + 6 * r;                                                       \
            o[5] = run.n;                                                                  \
            if (run.n == 0) { /* no point: nothing is defined */                           \
                for (int k = 0; k < 5; ++k) o[k] = NAN;                                    \
                continue;                                                                  \
            }                                                                              \
            o[0] = run.cx + run.ex;                                                        \
            o[1] = run.cy + run.ey;                                                        \
            o[2] = run.sxx;                                                                \
            o[3] = run.sxy;                                                                \
            o[4] = run.syy;                                                                \
            /* A response at rounding level around its mean may be constant: then   \
             * its mean is that value and Syy = Sxy = 0 exactly (slope 0, r2 nan),   \
             * not the rounding of its first-pass mean. Checked point by point, and  \
             * only for such rows, so it costs the others nothing. */               \
            if (!(o[4] > 16 * DBL_EPSILON * DBL_EPSILON * run.n * (o[1] * o[1] + 1e-300))) \
                constant_response(yr, mr, m, o);                                           \
        }                                                                                  \
    }

DEFINE_LINE_SUMS(line_sums_f32, float, load8_f32)
DEFINE_LINE_SUMS(line_sums_f64, double, load8_f64)

typedef struct {
    int is_double;
    const void *x, *y;
    const uint8_t *mask;
    int64_t x_row, y_row, mask_row, r0, r1, m;
    double *out;
} line_job;

static void *run_line_job(void *arg)
{
    const line_job *j = arg;
    if (j->is_double)
        line_sums_f64(j->x, j->x_row, j->y, j->y_row, j->mask, j->mask_row, j->r0, j->r1, j->m, j->out);
    else
        line_sums_f32(j->x, j->x_row, j->y, j->y_row, j->mask, j->mask_row, j->r0, j->r1, j->m, j->out);
    return NULL;
}

/* out: (rows, 6) doubles: mean_x, mean_y, Sxx, Sxy, Syy, n. Strides are in
 * elements; a row stride of 0 repeats one row (a broadcast input). Rows are
 * shared out over `threads` threads (the caller's thread is one of them). */
void lossfn_line_sums(int is_double, const void *x, int64_t x_row, const void *y, int64_t y_row,
                      const uint8_t *mask, int64_t mask_row, int64_t rows, int64_t m,
                      double *out, int threads)
{
    line_job jobs[MAX_THREADS];
    threads = thread_count(threads, rows);
    for (int t = 0; t < threads; ++t) {
        int64_t r0, r1;
        thread_share(rows, threads, t, &r0, &r1);
        jobs[t] = (line_job){is_double, x, y, mask, x_row, y_row, mask_row, r0, r1, m, out};
    }
    fan_out(run_line_job, (char *)jobs, sizeof jobs[0], threads);
}

/* The record of fit.ols for one predictor with an intercept, from line_sums'
 * sums: the arithmetic of lossfn.fit._design._native_moments and
 * lossfn.fit._ols._simple/_finish, in double, each field rounded once to the
 * caller's dtype at the end (the torch route rounds each step in float32).
 * eps and tiny are the dtype's. fields are 5 arrays in the dtype (float32
 * unless is_double): intercept, slope, sigma2, r2 (rows each) and the
 * standard errors (rows x 2, intercept first), all nan where the fit is not
 * ok; ok (rows) 1 or 0; count (rows) the
 * present points. Returns 0, or -1 if memory for line_sums' sums ran out. */
int lossfn_line_fit(int is_double, const void *x, int64_t x_row, const void *y, int64_t y_row,
                    const uint8_t *mask, int64_t mask_row, int64_t rows, int64_t m, double eps,
                    double tiny, void *const *fields, uint8_t *ok, int64_t *count, int threads)
{
    double *sums = malloc(sizeof(double) * 6 * (rows > 0 ? rows : 1));
    if (!sums) return -1;
    lossfn_line_sums(is_double, x, x_row, y, y_row, mask, mask_row, rows, m, sums, threads);
    for (int64_t r = 0; r < rows; ++r) {
        const double *o = sums + 6 * r;
        const double n = o[5], mean_x = o[0], mean_y = o[1];
        /* Clamped at 0 as torch.clamp does, nan kept (inf - inf, from sums that
         * overflowed, must fail the fit, not pass as an exact one). */
        const double sxx = o[2] < 0 ? 0 : o[2], sxy = o[3], syy = o[4] < 0 ? 0 : o[4];
        const double slope = sxy / sxx;
        /* Syy - b*Sxy cancels as r2 -> 1: see lossfn.fit._design.moments. */
        const double ssr_raw = syy - slope * sxy, ssr = ssr_raw < 0 ? 0 : ssr_raw;
        const double norm_x = sqrt(sxx), corr = sxy / (norm_x * sqrt(syy));
        const double residual_norm = sqrt(ssr);
        /* s = sqrt(SSR/(n - 2)): nan where no degree of freedom is left */
        const double s = n > 2 ? residual_norm / sqrt(n - 2) : NAN;
        const double relative_x = mean_x / norm_x;
        double f[6];
        f[0] = in_dtype(is_double, mean_y - slope * mean_x);
        f[1] = in_dtype(is_double, slope);
        f[2] = in_dtype(is_double, ssr / n);
        f[3] = in_dtype(is_double, s * sqrt(1 / n + relative_x * relative_x));
        f[4] = in_dtype(is_double, s / norm_x);
        f[5] = in_dtype(is_double, 1 - ssr / syy);
        /* The rules of _simple and _finish, on the values as the dtype holds them:
         * x varies above the rounding noise of its mean (noise_floor), its norm
         * and the fit are finite there, and a nonzero slope is not lost below
         * the dtype's normal range. */
        const double kept_norm = in_dtype(is_double, norm_x);
        const int varies = kept_norm > 8 * eps * fabs(in_dtype(is_double, mean_x)) * sqrt(n)
                           && isfinite(kept_norm)
                           && !(fabs(f[1]) < tiny / 8 && fabs(corr) > 0);
        const double total = in_dtype(is_double, in_dtype(is_double, f[0] + f[1])
                                                     + in_dtype(is_double, residual_norm));
        ok[r] = varies && n >= 2 && isfinite(total);
        count[r] = (int64_t)n;
        /* fields[]: intercept, slope, sigma2, r2 (rows each), the standard errors (rows x 2) */
        const int field[6] = {0, 1, 2, 4, 4, 3};
        const int64_t place[6] = {r, r, r, 2 * r, 2 * r + 1, r};
        for (int k = 0; k < 6; ++k) {
            const double v = ok[r] ? f[k] : NAN;
            if (is_double)
                ((double *)fields[field[k]])[place[k]] = v;
            else
                ((float *)fields[field[k]])[place[k]] = (float)v;
        }
    }
    free(sums);
    return 0;
}

/* ---------------------------------------------------------------------------
 * centred_gram: the Gram matrix of the centred augmented data [X y], per
 * dataset, for least squares with several predictors (lossfn.fit._solve).
 * x is (rows, m, d) with contiguous points, y (rows, m); k = d + 1 <= KMAX.
 *   G = sum_t q_t q_t^T,  z_t = [x_t y_t] - means,  q_t = T^T z_t,
 * with means[k] over the present points computed (means_given == 0) or given
 * (zeros: no centring), and T (k x k, upper triangular) the identity where
 * transform == NULL, or given: the second pass of CholeskyQR2.
 * Absent points never count (the 8-wide loads of a present point may read
 * the next points' x, cleared by bit masks). Computed means are corrected by
 * the sums of the centred data (see the end of DEFINE_GRAM). Points go in chunks of CHUNK through a
 * scratch buffer of centred (and transformed) rows, padded to KP = 8*ceil(k/8)
 * doubles; a register-blocked product of 8 rows by up to 3 vectors of 8
 * columns sums each chunk, and chunks are summed into the total (two-level,
 * like line_sums). Only the upper block triangle is computed; G is mirrored,
 * so exactly symmetric. Vector code through GCC/Clang vector extensions: the
 * compiler maps v8d to AVX-512, AVX2 or SSE as the CPU has them.
 * ------------------------------------------------------------------------- */



/* The next row's x and y, to be fetched into the cache while the current
 * row's second pass runs on data that are there already: the hardware
 * prefetchers see only the current row's stream. `done` bytes are fetched.
 * Only rows of up to PREFETCH_ROW bytes, which fit in L1 beside the scratch:
 * 1000 rows of 500 points, d = 5, from a cold cache, 15-20% faster; rows of
 * d = 20 in float64 (84 KB) were 5-10% slower. */
#define PREFETCH_ROW (32 << 10)
#define PREFETCH_L2 (40 << 10) /* larger rows to L2 up to this (ONE_PASS_ROW); beyond, none */
typedef struct {
    const char *x, *y;
    int64_t x_bytes, y_bytes, done;
} upcoming;

/* Fetch the share of the upcoming row that `points` of this row's m points
 * stand for (a cache line at a time, x and then y). A fetch never faults. */
static inline void prefetch_share(upcoming *u, int64_t points, int64_t m)
{
    const int64_t total = u->x_bytes + u->y_bytes;
    const int64_t until = u->done + (total * points + m - 1) / m + 64;
    for (; u->done < until && u->done < total; u->done += 64) {
        const char *at = u->done < u->x_bytes ? u->x + u->done : u->y + (u->done - u->x_bytes);
        if (total <= PREFETCH_ROW)
            __builtin_prefetch(at); /* into L1, beside the scratch */
        else
            __builtin_prefetch(at, 0, 2); /* into L2 */
    }
}

/* acc(R rows x W vectors) += sum over the chunk's points of z[r0 + r] * z[8 c0 + 8 c ...]. */
#define DEFINE_TILE(NAME, W, R)                                                            \
    static void NAME(const double *z, int64_t points, int64_t kp, int64_t r0, int64_t c0,  \
                     double *gram)                                                         \
    {                                                                                      \
        v8d acc[R][W];                                                                     \
        for (int r = 0; r < R; ++r)                                                        \
            for (int c = 0; c < W; ++c) acc[r][c] = (v8d){0};                              \
        for (int64_t t = 0; t < points; ++t) {                                             \
            const double *zt = z + t * kp;                                                 \
            v8d col[W];                                                                    \
            for (int c = 0; c < W; ++c) col[c] = *(const v8d *)(zt + 8 * (c0 + c));        \
            for (int r = 0; r < R; ++r) {                                                  \
                const double s = zt[r0 + r];                                               \
                for (int c = 0; c < W; ++c) acc[r][c] += s * col[c];                       \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < R; ++r)                                                        \
            for (int c = 0; c < W; ++c) {                                                  \
                double *g = gram + (r0 + r) * kp + 8 * (c0 + c);                           \
                for (int l = 0; l < 8; ++l) g[l] += acc[r][c][l];                          \
            }                                                                              \
    }

DEFINE_TILE(tile2, 2, 8)
DEFINE_TILE(tile3, 3, 8)
/* The last row block is the diagonal's, one vector wide; its rows past k are
 * the zero padding, whose products are not worth making (2 of 8 at k = 6). */
DEFINE_TILE(tile1_1, 1, 1)
DEFINE_TILE(tile1_2, 1, 2)
DEFINE_TILE(tile1_3, 1, 3)
DEFINE_TILE(tile1_4, 1, 4)
DEFINE_TILE(tile1_5, 1, 5)
DEFINE_TILE(tile1_6, 1, 6)
DEFINE_TILE(tile1_7, 1, 7)
DEFINE_TILE(tile1_8, 1, 8)
typedef void (*tile_fn)(const double *, int64_t, int64_t, int64_t, int64_t, double *);
static const tile_fn TILE1[8] = {tile1_1, tile1_2, tile1_3, tile1_4,
                                 tile1_5, tile1_6, tile1_7, tile1_8};

/* gram (kp x kp, upper block triangle; rows past k stay 0) += the chunk's product z^T z. */
static void chunk_gram(const double *z, int64_t points, int64_t kp, int64_t k, double *gram)
{
    const int64_t vectors = kp / 8;
    for (int64_t rb = 0; rb < vectors; ++rb)
        for (int64_t c0 = rb; c0 < vectors; c0 += 3) {
            int64_t w = vectors - c0 < 3 ? vectors - c0 : 3;
            const int64_t rows = k - 8 * rb < 8 ? k - 8 * rb : 8;
            if (w == 3) tile3(z, points, kp, 8 * rb, c0, gram);
            else if (w == 2) tile2(z, points, kp, 8 * rb, c0, gram);
            else TILE1[rows - 1](z, points, kp, 8 * rb, c0, gram);
        }
}

/* q (points x kp) = z (points x kp) T, T (kp x kp, rows of tpad) upper
 * triangular: the columns of vector c need rows < 8c + 8 of T only. Tiles of
 * 8 points by one vector: 8 independent sums, T's row vector loaded once per
 * tile. Rows of z past `points` (up to a multiple of 8) are read, not used. */
static void chunk_transform(const double *z, int64_t points, int64_t kp, int64_t k,
                            const double *tpad, double *q)
{
    for (int64_t p0 = 0; p0 < points; p0 += 8)
        for (int64_t c = 0; c < kp / 8; ++c) {
            v8d acc[8];
            for (int r = 0; r < 8; ++r) acc[r] = (v8d){0};
            const int64_t rows = k < 8 * c + 8 ? k : 8 * c + 8;
            for (int64_t i = 0; i < rows; ++i) {
                const v8d tv = *(const v8d *)(tpad + i * kp + 8 * c);
                for (int r = 0; r < 8; ++r) acc[r] += z[(p0 + r) * kp + i] * tv;
            }
            for (int r = 0; r < 8; ++r) *(v8d *)(q + (p0 + r) * kp + 8 * c) = acc[r];
        }
}


/* Vector c (8 lanes) of point t's row [x_t y_t 0 ...]: lanes < d from x (one
 * 8-wide load where it stays inside the dataset's m*d values, t < safe;
 * copied value by value near its end), lane d from y, the rest 0, by bit
 * masks built in registers (a vector load of scalar stores would stall store
 * forwarding). */
#define DEFINE_POINT(NAME, T, LOAD)                                                        \
    static inline v8d NAME(const T *xr, int64_t t, int64_t d, int c, int64_t safe,        \
                           v8di xlane, v8di ybits, v8di ylane)                             \
    {                                                                                      \
        v8d v;                                                                             \
        if (t < safe) {                                                                    \
            v = LOAD(xr + t * d + 8 * c);                                                  \
        } else {                                                                           \
            for (int l = 0; l < 8; ++l) v[l] = 8 * c + l < d ? (double)xr[t * d + 8 * c + l] : 0; \
        }                                                                                  \
        return (v8d)(((v8di)v & xlane) | (ybits & ylane));                                 \
    }
DEFINE_POINT(point_f32, float, load8_f32)
DEFINE_POINT(point_f64, double, load8_f64)

/* The bit masks that make a point's loads [x_t y_t 0 ...] (see DEFINE_POINT):
 * lanes < d take x, lane d takes y, the rest 0. */
static inline void point_lanes(int64_t d, int nv, v8di *xlanes, v8di *ylane)
{
    for (int c = 0; c < nv; ++c)
        for (int l = 0; l < 8; ++l) {
            xlanes[c][l] = 8 * c + l < d ? -1 : 0;
            ylane[c][l] = 8 * c + l == d ? -1 : 0;
        }
}

/* The present points among `points` mask bytes. */
static inline int64_t count_present(const uint8_t *mr, int64_t points)
{
    int64_t count = 0;
    for (int64_t p = 0; p < points; ++p) count += mr[p] != 0;
    return count;
}

#define PROVISIONAL 31 /* points averaged into the provisional centre: not a power of two (below) */
#define ONE_PASS_ROW (40 << 10) /* larger rows take the means' pass (measured: slower in one) */
#define OFF_CENTRE 0.5 /* most r_i = s_i^2 / (n G_ii) that one pass keeps (DEFINE_GRAM) */

/* True if the sums about a provisional centre (total, rows ld apart, and
 * shift, of n points) lose more than OFF_CENTRE of G's accuracy in some
 * column, or are not finite: then the row is passed again (DEFINE_GRAM). */
static int off_centre(const double *total, int64_t ld, const double *shift, int64_t k, double n)
{
    if (n == 0) return 0; /* nothing to centre */
    for (int64_t i = 0; i < k; ++i) {
        const double away = shift[i] * shift[i] / n, spread = total[i * ld + i] - away;
        if (!(away <= OFF_CENTRE * spread) && shift[i] != 0) return 1;
    }
    return 0;
}

/* g (k x k) from the upper triangle of the chunks' total (rows ld apart).
 * Computed means (correct) are off by the rounding of their sums (15-30 eps
 * of a constant column: more than the rank test's noise floor): with the
 * sums s (k) of z = v - mean, the mean is mean + s/n and the Gram matrix
 * G - s s^T/n, as for shifted sums (line_sums). Given means stay as given.
 * Either way G is mirrored from its upper triangle: exactly symmetric. */
static void finish_gram(const double *total, int64_t ld, const double *shift, int64_t k, double n,
                        int correct, double *g, double *mean)
{
    for (int64_t i = 0; i < k; ++i) {
        const double si = correct ? shift[i] : 0;
        for (int64_t j = i; j < k; ++j) {
            const double sj = correct ? shift[j] : 0;
            g[i * k + j] = g[j * k + i] = total[i * ld + j] - (correct ? si * sj / n : 0);
        }
        if (correct) mean[i] += si / n;
    }
}

/* The Gram matrix of a row in one pass over its data where that keeps the
 * two passes' accuracy. Rows of up to ONE_PASS_ROW bytes are centred about
 * a provisional centre c, the mean of their first PROVISIONAL present points;
 * the sums s of z = v - c and S = sum z z^T give mean = c + s/n and G = S -
 * s s^T / n (shifted sums, as line_sums). S's rounding grows with S_ii =
 * G_ii (1 + r_i), r_i = s_i^2 / (n G_ii): at most 1 + OFF_CENTRE times the
 * two passes' where every r_i is at most OFF_CENTRE (c within 0.7 standard
 * deviations of the mean: all but about 1 in 10^4 columns in random order,
 * c being the mean of 31 points). 31, not 32: a sum divided by a power of
 * two keeps the few significant bits of data such as float64 integers or
 * float32 values, every z then ends in the same bits, and every product
 * rounds the same way (15-35 eps of G, against 1-4 for two passes; a
 * review's check in exact arithmetic). Divided by 31, c has a full mantissa,
 * as the two passes' mean has: 1-4 eps for float64 integers; float32 data
 * keep a tail to about 30 eps (6e-15), far below their own resolution.
 * Otherwise (trends, level shifts, outliers
 * first) the row is passed again about mean = c + s/n, from the cache, as
 * the centred pass of the two-pass method: one pass for most rows instead of
 * two. 1000 rows of 500 points, one core, cold cache: 20-25% faster at d =
 * 5-12 in float32 and d = 5 in float64, 1.3-1.8x at d = 1-4 (the column
 * kernels below); rows over 40 KB (d >= 10 in float64, d >= 20 in float32)
 * were slower in one pass and keep the means' pass. */

/* The means of [x_t y_t] over the present points of a row, into mean[k];
 * returns their count n (mean is nan where n = 0). Chunks of CHUNK points
 * are summed apart and then together (two-level, like line_sums). */
#define DEFINE_MEANS(NAME, T, NV, POINT)                                                    \
    static double NAME(const T *xr, const T *yr, const uint8_t *mr, int64_t m, int64_t d,  \
                       double *mean)                                                       \
    {                                                                                      \
        enum { KP = 8 * NV };                                                              \
        const int64_t k = d + 1;                                                           \
        const int64_t safe = m * d >= KP ? (m * d - KP) / d + 1 : 0;                       \
        v8di xlanes[NV], ylane[NV];                                                        \
        point_lanes(d, NV, xlanes, ylane);                                                 \
        double n = 0;                                                                      \
        v8d sum[NV];                                                                       \
        for (int c = 0; c < NV; ++c) sum[c] = (v8d){0};                                    \
        for (int64_t t0 = 0; t0 < m; t0 += CHUNK) {                                        \
            v8d part[NV];                                                                  \
            for (int c = 0; c < NV; ++c) part[c] = (v8d){0};                               \
            int64_t t1 = t0 + CHUNK < m ? t0 + CHUNK : m;                                  \
            for (int64_t t = t0; t < t1; ++t) {                                            \
                if (mr && !mr[t]) continue;                                                \
                n += 1;                                                                    \
                const v8di ybits = (v8di)((v8d){0} + (double)yr[t]);                       \
                for (int c = 0; c < NV; ++c)                                               \
                    part[c] += POINT(xr, t, d, c, safe, xlanes[c], ybits, ylane[c]);       \
            }                                                                              \
            for (int c = 0; c < NV; ++c) sum[c] += part[c];                                \
        }                                                                                  \
        for (int64_t i = 0; i < k; ++i) mean[i] = sum[i / 8][i % 8] / n;                   \
        return n;                                                                          \
    }

/* One pass over a row: the sums of z = [x_t y_t] - centre (shift, NV
 * vectors) and of their products (total, KP x KP), by chunks of CHUNK points
 * through the scratch z (transformed into q by T where tr is given; trv holds
 * T's rows as vectors); returns the count of present points. */
#define DEFINE_GRAM_PASS(NAME, T, NV, POINT)                                                \
    static int64_t NAME(const T *xr, const T *yr, const uint8_t *mr, int64_t m, int64_t d, \
                        int64_t safe, const v8di *xlanes, const v8di *ylane, const double *centre, \
                        const double *trv, double *z, double *q, double *block, double *total, \
                        v8d *shift, upcoming *next)                                        \
    {                                                                                      \
        enum { KP = 8 * NV };                                                              \
        const int64_t k = d + 1;                                                           \
        v8d meanv[NV];                                                                     \
        for (int c = 0; c < NV; ++c)                                                       \
            for (int l = 0; l < 8; ++l) meanv[c][l] = 8 * c + l < k ? centre[8 * c + l] : 0; \
        for (int64_t i = 0; i < KP * KP; ++i) total[i] = 0;                                \
        for (int c = 0; c < NV; ++c) shift[c] = (v8d){0};                                  \
        int64_t count = 0;                                                                 \
        for (int64_t t0 = 0; t0 < m; t0 += CHUNK) {                                        \
            const int64_t points = (t0 + CHUNK < m ? t0 + CHUNK : m) - t0;                 \
            v8d part[NV];                                                                  \
            for (int c = 0; c < NV; ++c) part[c] = (v8d){0};                               \
            for (int64_t p = 0; p < points; ++p) {                                         \
                const int64_t t = t0 + p;                                                  \
                v8d *zp = (v8d *)(z + p * KP);                                             \
                if (mr && !mr[t]) {                                                        \
                    for (int c = 0; c < NV; ++c) zp[c] = (v8d){0};                         \
                    continue;                                                              \
                }                                                                          \
                const v8di ybits = (v8di)((v8d){0} + (double)yr[t]);                       \
                v8d zv[NV]; /* [x_t y_t 0 ...] - centre */                                 \
                for (int c = 0; c < NV; ++c)                                               \
                    zv[c] = POINT(xr, t, d, c, safe, xlanes[c], ybits, ylane[c]) - meanv[c]; \
                for (int c = 0; c < NV; ++c) {                                             \
                    zp[c] = zv[c];                                                         \
                    part[c] += zv[c];                                                      \
                }                                                                          \
            }                                                                              \
            count += mr ? count_present(mr + t0, points) : points;                         \
            for (int c = 0; c < NV; ++c) shift[c] += part[c];                              \
            if (trv) chunk_transform(z, points, KP, k, trv, q);                            \
            for (int64_t i = 0; i < KP * KP; ++i) block[i] = 0;                            \
            chunk_gram(trv ? q : z, points, KP, k, block);                                 \
            prefetch_share(next, points, m);                                               \
            for (int64_t i = 0; i < KP * KP; ++i) total[i] += block[i];                    \
        }                                                                                  \
        return count;                                                                      \
    }

#define DEFINE_GRAM(NAME, T, NV, POINT, MEANS)                                              \
    DEFINE_GRAM_PASS(NAME##_pass, T, NV, POINT)                                            \
    static void NAME(const T *xr, const T *yr, const uint8_t *mr, int64_t m, int64_t d,    \
                     int given, const double *tr, double *mean, double *g, double *z,      \
                     double *q, double *block, double *total, upcoming *next)              \
    {                                                                                      \
        enum { KP = 8 * NV };                                                              \
        const int64_t k = d + 1;                                                           \
        /* points whose 8*NV-wide load stays inside the dataset's m*d values */            \
        const int64_t safe = m * d >= KP ? (m * d - KP) / d + 1 : 0;                       \
        v8d trv[KMAX][NV];                                                                 \
        v8di xlanes[NV], ylane[NV];                                                        \
        point_lanes(d, NV, xlanes, ylane);                                                 \
        if (!given && m * k * (int64_t)sizeof(T) > ONE_PASS_ROW) {                         \
            MEANS(xr, yr, mr, m, d, mean); /* the centre: the means, a pass of their own */ \
        } else if (!given) { /* the provisional centre; nan where no point is present */  \
            v8d sum[NV];                                                                   \
            for (int c = 0; c < NV; ++c) sum[c] = (v8d){0};                                \
            int found = 0;                                                                 \
            for (int64_t t = 0; t < m && found < PROVISIONAL; ++t) {                       \
                if (mr && !mr[t]) continue;                                                \
                ++found;                                                                   \
                const v8di ybits = (v8di)((v8d){0} + (double)yr[t]);                       \
                for (int c = 0; c < NV; ++c)                                               \
                    sum[c] += POINT(xr, t, d, c, safe, xlanes[c], ybits, ylane[c]);        \
            }                                                                              \
            for (int64_t i = 0; i < k; ++i) mean[i] = sum[i / 8][i % 8] / found;           \
        }                                                                                  \
        if (tr)                                                                            \
            for (int64_t i = 0; i < k; ++i)                                                \
                for (int c = 0; c < NV; ++c)                                               \
                    for (int l = 0; l < 8; ++l) {                                          \
                        int64_t j = 8 * c + l;                                             \
                        trv[i][c][l] = j >= i && j < k ? tr[i * k + j] : 0;                \
                    }                                                                      \
        v8d shift[NV]; /* sum of z: the centre's distance from the mean, times n */       \
        const double *trp = tr ? (const double *)trv : NULL;                               \
        double n = (double)NAME##_pass(xr, yr, mr, m, d, safe, xlanes, ylane, mean, trp, z, q, \
                                       block, total, shift, next);                         \
        if (!given && off_centre(total, KP, (const double *)shift, k, n)) {                \
            /* again, about the mean the first pass found */                              \
            for (int64_t i = 0; i < k; ++i) mean[i] += shift[i / 8][i % 8] / n;            \
            NAME##_pass(xr, yr, mr, m, d, safe, xlanes, ylane, mean, trp, z, q, block, total, \
                        shift, next);                                                      \
        }                                                                                  \
        finish_gram(total, KP, (const double *)shift, k, n, !given && n > 0, g, mean);    \
    }

#define DEFINE_GRAMS(NV)                                                                   \
    DEFINE_MEANS(means_f32_##NV, float, NV, point_f32)                                     \
    DEFINE_MEANS(means_f64_##NV, double, NV, point_f64)                                    \
    DEFINE_GRAM(gram_f32_##NV, float, NV, point_f32, means_f32_##NV)                       \
    DEFINE_GRAM(gram_f64_##NV, double, NV, point_f64, means_f64_##NV)
DEFINE_GRAMS(1)
DEFINE_GRAMS(2)
DEFINE_GRAMS(3)
DEFINE_GRAMS(4)
DEFINE_GRAMS(5)
DEFINE_GRAMS(6)
DEFINE_GRAMS(7)
DEFINE_GRAMS(8)

/* Small designs, k = d + 1 <= COLUMNS_MAX: points in the lanes. The tiles
 * above give each point a vector of its k <= 8 columns, so a point costs 8
 * vector multiply-adds however small k is (64 lane products where k(k+1)/2
 * are needed: 3 at k = 2). Here 8 points are read at a time and transposed
 * in registers, the centred chunk is laid out column by column
 * (z[i * CHUNK + p]), and a vector holds one column of 8 points: k(k+1)/2
 * vector multiply-adds per 8 points. The transposes cost about a cycle a
 * value, twice (the means' pass and the Gram's), which outweighs the saving
 * from k = 6 on (measured, 1000 rows of 500 points, one core of an AMD EPYC
 * with AVX-512: 2.2-2.8x faster than the tiles at k = 2-3, 1.5x at k = 4,
 * 1.2x at k = 5, none at 6, slower beyond). The rest is DEFINE_GRAM's: means from
 * chunks summed apart and then together, the same correction of the computed
 * means, G mirrored from its upper triangle. Functions of constant k, always
 * inlined: the loops unroll and the accumulators stay in registers. */

/* The chunk's upper triangle, its columns `vectors` vectors of 8 points long,
 * added to total (k x k). */
static inline __attribute__((always_inline)) void column_gram(const double *z, int64_t vectors,
                                                                int k, double *total)
{
    v8d acc[COLUMNS_MAX][COLUMNS_MAX];
    for (int i = 0; i < k; ++i)
        for (int j = i; j < k; ++j) acc[i][j] = (v8d){0};
    for (int64_t v = 0; v < vectors; ++v) {
        v8d col[COLUMNS_MAX];
        for (int i = 0; i < k; ++i) col[i] = *(const v8d *)(z + i * CHUNK + 8 * v);
        for (int i = 0; i < k; ++i)
            for (int j = i; j < k; ++j) acc[i][j] += col[i] * col[j];
    }
    for (int i = 0; i < k; ++i)
        for (int j = i; j < k; ++j) total[i * k + j] += lane_sum(acc[i][j]);
}

/* The columns of the chunk replaced by those of q = T^T z (T upper triangular, k x k). */
static inline __attribute__((always_inline)) void column_transform(double *z, int64_t vectors,
                                                                     int k, const double *tr)
{
    for (int64_t v = 0; v < vectors; ++v) {
        v8d col[COLUMNS_MAX], out[COLUMNS_MAX];
        for (int i = 0; i < k; ++i) col[i] = *(const v8d *)(z + i * CHUNK + 8 * v);
        for (int j = 0; j < k; ++j) {
            out[j] = (v8d){0};
            for (int i = 0; i <= j; ++i) out[j] += tr[i * k + j] * col[i];
        }
        for (int j = 0; j < k; ++j) *(v8d *)(z + j * CHUNK + 8 * v) = out[j];
    }
}

/* Points t .. t + 7 of a row as k column vectors (8 points each, a transpose
 * in registers), lanes past `avail` points 0; returns the bit mask of the
 * lanes that hold present points. */
#define DEFINE_COLUMN_LOAD(NAME, T)                                                        \
    static inline __attribute__((always_inline)) v8di NAME(                               \
        const T *xr, const T *yr, const uint8_t *mr, int64_t t, int64_t avail, int d,      \
        v8d *col)                                                                          \
    {                                                                                      \
        if (avail >= 8) {                                                                  \
            for (int i = 0; i < d; ++i)                                                    \
                for (int l = 0; l < 8; ++l) col[i][l] = (double)xr[(t + l) * d + i];       \
            for (int l = 0; l < 8; ++l) col[d][l] = (double)yr[t + l];                     \
        } else { /* a row's last points, then zeros */                                    \
            for (int l = 0; l < 8; ++l) {                                                  \
                const int in = l < avail;                                                  \
                for (int i = 0; i < d; ++i) col[i][l] = in ? (double)xr[(t + l) * d + i] : 0; \
                col[d][l] = in ? (double)yr[t + l] : 0;                                    \
            }                                                                              \
        }                                                                                  \
        v8di lanes;                                                                        \
        for (int l = 0; l < 8; ++l) lanes[l] = l < avail && (!mr || mr[t + l]) ? -1 : 0;   \
        return lanes;                                                                      \
    }
DEFINE_COLUMN_LOAD(column_load_f32, float)
DEFINE_COLUMN_LOAD(column_load_f64, double)

#define DEFINE_COLUMNS(NAME, T, D, LOAD)                                                    \
    /* One pass about `centre`, as DEFINE_GRAM_PASS: returns the present points. */      \
    static int64_t NAME##_pass(const T *xr, const T *yr, const uint8_t *mr, int64_t m,     \
                               const double *tr, const double *centre, double *z,          \
                               double *total, double *shift, upcoming *next)               \
    {                                                                                      \
        enum { K = D + 1 };                                                                \
        v8d col[K] = {{0}};                                                                \
        int64_t count = 0;                                                                 \
        for (int i = 0; i < K; ++i) shift[i] = 0;                                          \
        for (int i = 0; i < K * K; ++i) total[i] = 0;                                      \
        for (int64_t t0 = 0; t0 < m; t0 += CHUNK) {                                        \
            const int64_t points = (t0 + CHUNK < m ? t0 + CHUNK : m) - t0;                 \
            const int64_t vectors = (points + 7) / 8;                                      \
            /* centred columns; absent points cleared by bit masks (nan there is never   \
             * added) */                                                                   \
            for (int64_t p = 0; p < 8 * vectors; p += 8) {                                 \
                const v8di lanes = LOAD(xr, yr, mr, t0 + p, points - p, D, col);           \
                for (int l = 0; l < 8; ++l) count -= lanes[l];                             \
                for (int i = 0; i < K; ++i)                                                \
                    *(v8d *)(z + i * CHUNK + p) = keep(col[i] - centre[i], lanes);         \
            }                                                                              \
            if (tr) {                                                                      \
                column_transform(z, vectors, K, tr);                                       \
            } else {                                                                       \
                for (int i = 0; i < K; ++i) {                                              \
                    v8d part = (v8d){0};                                                   \
                    for (int64_t v = 0; v < vectors; ++v) part += *(const v8d *)(z + i * CHUNK + 8 * v); \
                    shift[i] += lane_sum(part);                                            \
                }                                                                          \
            }                                                                              \
            column_gram(z, vectors, K, total);                                             \
            prefetch_share(next, points, m);                                               \
        }                                                                                  \
        return count;                                                                      \
    }                                                                                      \
                                                                                           \
    static void NAME(const T *xr, const T *yr, const uint8_t *mr, int64_t m, int64_t d,    \
                     int given, const double *tr, double *mean, double *g, double *z,      \
                     double *q, double *block, double *total, upcoming *next)              \
    {                                                                                      \
        enum { K = D + 1 };                                                                \
        (void)d, (void)q, (void)block;                                                     \
        double shift[K];                                                                   \
        if (!given && m * K * (int64_t)sizeof(T) > ONE_PASS_ROW) {                         \
            /* the centre: the means, column sums of the present points by chunks */     \
            v8d sum[K], col[K] = {{0}};                                                    \
            int64_t count = 0;                                                             \
            for (int i = 0; i < K; ++i) sum[i] = (v8d){0};                                 \
            for (int64_t t0 = 0; t0 < m; t0 += CHUNK) {                                    \
                const int64_t t1 = t0 + CHUNK < m ? t0 + CHUNK : m;                        \
                v8d part[K];                                                               \
                for (int i = 0; i < K; ++i) part[i] = (v8d){0};                            \
                for (int64_t t = t0; t < t1; t += 8) {                                     \
                    const v8di lanes = LOAD(xr, yr, mr, t, t1 - t, D, col);                \
                    for (int l = 0; l < 8; ++l) count -= lanes[l];                         \
                    for (int i = 0; i < K; ++i) part[i] += keep(col[i], lanes);            \
                }                                                                          \
                for (int i = 0; i < K; ++i) sum[i] += part[i];                             \
            }                                                                              \
            for (int i = 0; i < K; ++i) mean[i] = lane_sum(sum[i]) / count;               \
        } else if (!given) { /* the provisional centre (DEFINE_GRAM); nan with no point */ \
            double sum[K];                                                                 \
            int found = 0;                                                                 \
            for (int i = 0; i < K; ++i) sum[i] = 0;                                        \
            for (int64_t t = 0; t < m && found < PROVISIONAL; ++t) {                       \
                if (mr && !mr[t]) continue;                                                \
                ++found;                                                                   \
                for (int i = 0; i < D; ++i) sum[i] += (double)xr[t * D + i];               \
                sum[D] += (double)yr[t];                                                   \
            }                                                                              \
            for (int i = 0; i < K; ++i) mean[i] = sum[i] / found;                          \
        }                                                                                  \
        const double n = (double)NAME##_pass(xr, yr, mr, m, tr, mean, z, total, shift, next); \
        if (!given && off_centre(total, K, shift, K, n)) {                                 \
            for (int i = 0; i < K; ++i) mean[i] += shift[i] / n; /* again, about the mean */ \
            NAME##_pass(xr, yr, mr, m, tr, mean, z, total, shift, next);                   \
        }                                                                                  \
        finish_gram(total, K, shift, K, n, !given && n > 0, g, mean);                     \
    }

#define DEFINE_COLUMNS_OF(D)                                                                \
    DEFINE_COLUMNS(columns_f32_##D, float, D, column_load_f32)                             \
    DEFINE_COLUMNS(columns_f64_##D, double, D, column_load_f64)
DEFINE_COLUMNS_OF(1)
DEFINE_COLUMNS_OF(2)
DEFINE_COLUMNS_OF(3)
DEFINE_COLUMNS_OF(4)

typedef void (*gram_fn)(const void *, const void *, const uint8_t *, int64_t, int64_t, int,
                        const double *, double *, double *, double *, double *, double *,
                        double *, upcoming *);
static const gram_fn GRAMS[2][8] = { /* by KP / 8 - 1 */
    {(gram_fn)gram_f32_1, (gram_fn)gram_f32_2, (gram_fn)gram_f32_3, (gram_fn)gram_f32_4,
     (gram_fn)gram_f32_5, (gram_fn)gram_f32_6, (gram_fn)gram_f32_7, (gram_fn)gram_f32_8},
    {(gram_fn)gram_f64_1, (gram_fn)gram_f64_2, (gram_fn)gram_f64_3, (gram_fn)gram_f64_4,
     (gram_fn)gram_f64_5, (gram_fn)gram_f64_6, (gram_fn)gram_f64_7, (gram_fn)gram_f64_8},
};
static const gram_fn COLUMNS[2][COLUMNS_MAX - 1] = { /* by k - 2: k <= COLUMNS_MAX */
    {(gram_fn)columns_f32_1, (gram_fn)columns_f32_2, (gram_fn)columns_f32_3, (gram_fn)columns_f32_4},
    {(gram_fn)columns_f64_1, (gram_fn)columns_f64_2, (gram_fn)columns_f64_3, (gram_fn)columns_f64_4},
};

double *gram_scratch(int64_t k)
{
    const int64_t kp = (k + 7) / 8 * 8;
    /* 64-byte aligned, zeroed: the chunk's rows (and 8 more, read by
     * chunk_transform's last tile), their transform, a Gram block, the total;
     * the column kernels use the first CHUNK * 8 doubles and the total. */
    const size_t rows = CHUNK + 8, doubles = 2 * rows * kp + 2 * kp * kp;
    double *z = aligned_alloc(64, sizeof(double) * doubles);
    if (z) memset(z, 0, sizeof(double) * doubles);
    return z;
}

void gram_rows(const gram_job *j, int64_t a, int64_t b, double *scratch)
{
    const int64_t k = j->d + 1, kp = (k + 7) / 8 * 8;
    const size_t size = j->is_double ? sizeof(double) : sizeof(float);
    double *z = scratch, *q = z + (CHUNK + 8) * kp, *block = q + (CHUNK + 8) * kp;
    double *total = block + kp * kp;
    gram_fn gram = k <= COLUMNS_MAX ? COLUMNS[j->is_double][k - 2] : GRAMS[j->is_double][kp / 8 - 1];
    for (int64_t r = a; r < b; ++r) {
        /* the next row's data, fetched while this one's Gram pass runs on cached data */
        upcoming next = {NULL, NULL, 0, 0, 0}; /* nothing (pointers past the batch are not formed) */
        if (r + 1 < j->r1 && j->m * k * (int64_t)size <= PREFETCH_L2)
            next = (upcoming){(const char *)j->x + (r + 1) * j->x_row * size,
                              (const char *)j->y + (r + 1) * j->y_row * size,
                              j->m * j->d * (int64_t)size, j->m * (int64_t)size, 0};
        gram((const char *)j->x + r * j->x_row * size, (const char *)j->y + r * j->y_row * size,
             j->mask ? j->mask + r * j->mask_row : NULL, j->m, j->d, j->means_given,
             j->transform ? j->transform + r * k * k : NULL, j->means + r * k, j->out + r * k * k,
             z, q, block, total, &next);
    }
}

static void *run_gram_job(void *arg)
{
    const gram_job *j = arg;
    double *scratch = gram_scratch(j->d + 1);
    if (!scratch) return (void *)1;
    gram_rows(j, j->r0, j->r1, scratch);
    free(scratch);
    return NULL;
}

/* Returns 0; -1 if k = d + 1 > KMAX, a transform comes without given means
 * (the correction of computed means is made in the untransformed space), or
 * scratch memory ran out (the caller then takes its torch route). */
int lossfn_centred_gram(int is_double, const void *x, int64_t x_row, const void *y, int64_t y_row,
                        const uint8_t *mask, int64_t mask_row, int64_t rows, int64_t m, int64_t d,
                        int means_given, const double *transform, double *means, double *out,
                        int threads)
{
    gram_job jobs[MAX_THREADS];
    if (d < 1 || d + 1 > KMAX || (transform && !means_given)) return -1;
    threads = thread_count(threads, rows);
    for (int t = 0; t < threads; ++t) {
        int64_t r0, r1;
        thread_share(rows, threads, t, &r0, &r1);
        jobs[t] = (gram_job){is_double, x, y, mask, x_row, y_row, mask_row, r0, r1, m, d,
                             means_given, transform, means, out};
    }
    return fan_out(run_gram_job, (char *)jobs, sizeof jobs[0], threads) ? -1 : 0;
}
