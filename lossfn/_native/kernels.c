/* Native kernels of lossfn: fused passes over the data that torch would make
 * one operator (and one memory round trip) at a time.
 *
 * line_sums: the centred moments of one predictor and the response, per
 * dataset (row). For each row, two passes while the row is in cache:
 *   1. n = number of present points, c_x = sum(x)/n, c_y = sum(y)/n;
 *   2. with dx = x - c_x, dy = y - c_y over the present points: the shifted
 *      sums S_dx, S_dy, S_dxdx, S_dxdy, S_dydy;
 * and returns mean_x = c_x + S_dx/n, mean_y, and the centred sums
 *   Sxx = S_dxdx - S_dx^2/n,  Sxy = S_dxdy - S_dx*S_dy/n,  Syy = S_dydy - S_dy^2/n.
 * Everything is accumulated in double: float32 data are exact there, and
 * their squares neither over- nor underflow. Sums are two-level (vector
 * lanes within blocks of BLOCK points, then across blocks), so rounding grows
 * with BLOCK/lanes + m/BLOCK rather than m. Absent points (mask 0) are cleared
 * by a bit mask, not multiplied by 0: nan or inf there is never read.
 *
 * Compiled on first use by lossfn._native (cc -O3 -march=native -fopenmp-simd).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 1024
#define MAX_THREADS 256

/* v where the bit mask is all ones, +0.0 where it is 0. */
static inline double kept(double v, uint64_t bits)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    b &= bits;
    memcpy(&v, &b, sizeof v);
    return v;
}

#define DEFINE_LINE_SUMS(NAME, T)                                                          \
    static void NAME(const T *x, int64_t x_row, const T *y, int64_t y_row,                 \
                     const uint8_t *mask, int64_t mask_row, int64_t r0, int64_t r1,        \
                     int64_t m, double *out)                                               \
    {                                                                                      \
        uint64_t keep[BLOCK];                                                              \
        for (int64_t r = r0; r < r1; ++r) {                                                \
            const T *xr = x + r * x_row, *yr = y + r * y_row;                              \
            const uint8_t *mr = mask ? mask + r * mask_row : NULL;                         \
            double n = 0, sx = 0, sy = 0;                                                  \
            for (int64_t j0 = 0; j0 < m; j0 += BLOCK) {                                    \
                int64_t len = m - j0 < BLOCK ? m - j0 : BLOCK;                             \
                const T *xb = xr + j0, *yb = yr + j0;                                      \
                double bn = 0, bx = 0, by = 0;                                             \
                if (mr) {                                                                  \
                    for (int64_t j = 0; j < len; ++j)                                      \
                        keep[j] = (uint64_t)0 - (uint64_t)(mr[j0 + j] != 0);               \
                    _Pragma("omp simd reduction(+:bn,bx,by)")                              \
                    for (int64_t j = 0; j < len; ++j) {                                    \
                        bn += kept(1.0, keep[j]);                                          \
                        bx += kept((double)xb[j], keep[j]);                                \
                        by += kept((double)yb[j], keep[j]);                                \
                    }                                                                      \
                } else {                                                                   \
                    bn = (double)len;                                                      \
                    _Pragma("omp simd reduction(+:bx,by)")                                 \
                    for (int64_t j = 0; j < len; ++j) {                                    \
                        bx += (double)xb[j];                                               \
                        by += (double)yb[j];                                               \
                    }                                                                      \
                }                                                                          \
                n += bn; sx += bx; sy += by;                                               \
            }                                                                              \
            const double cx = sx / n, cy = sy / n;                                         \
            double dxs = 0, dys = 0, xx = 0, xy = 0, yy = 0;                               \
            for (int64_t j0 = 0; j0 < m; j0 += BLOCK) {                                    \
                int64_t len = m - j0 < BLOCK ? m - j0 : BLOCK;                             \
                const T *xb = xr + j0, *yb = yr + j0;                                      \
                double b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0;                             \
                if (mr) {                                                                  \
                    for (int64_t j = 0; j < len; ++j)                                      \
                        keep[j] = (uint64_t)0 - (uint64_t)(mr[j0 + j] != 0);               \
                    _Pragma("omp simd reduction(+:b1,b2,b3,b4,b5)")                        \
                    for (int64_t j = 0; j < len; ++j) {                                    \
                        double dx = kept((double)xb[j] - cx, keep[j]);                     \
                        double dy = kept((double)yb[j] - cy, keep[j]);                     \
                        b1 += dx; b2 += dy; b3 += dx * dx; b4 += dx * dy; b5 += dy * dy;   \
                    }                                                                      \
                } else {                                                                   \
                    _Pragma("omp simd reduction(+:b1,b2,b3,b4,b5)")                        \
                    for (int64_t j = 0; j < len; ++j) {                                    \
                        double dx = (double)xb[j] - cx, dy = (double)yb[j] - cy;           \
                        b1 += dx; b2 += dy; b3 += dx * dx; b4 += dx * dy; b5 += dy * dy;   \
                    }                                                                      \
                }                                                                          \
                dxs += b1; dys += b2; xx += b3; xy += b4; yy += b5;                        \
            }                                                                              \
            double *o = out + 5 * r;                                                       \
            o[0] = cx + dxs / n;                                                           \
            o[1] = cy + dys / n;                                                           \
            o[2] = xx - dxs * dxs / n;                                                     \
            o[3] = xy - dxs * dys / n;                                                     \
            o[4] = yy - dys * dys / n;                                                     \
        }                                                                                  \
    }

DEFINE_LINE_SUMS(line_sums_f32, float)
DEFINE_LINE_SUMS(line_sums_f64, double)

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

/* out: (rows, 5) doubles: mean_x, mean_y, Sxx, Sxy, Syy. Strides are in
 * elements; a row stride of 0 repeats one row (a broadcast input). Rows are
 * shared out over `threads` threads (the caller's thread is one of them). */
void lossfn_line_sums(int is_double, const void *x, int64_t x_row, const void *y, int64_t y_row,
                      const uint8_t *mask, int64_t mask_row, int64_t rows, int64_t m,
                      double *out, int threads)
{
    line_job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS];
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > rows) threads = rows > 0 ? (int)rows : 1;
    int64_t share = (rows + threads - 1) / threads;
    for (int t = 0; t < threads; ++t) {
        int64_t r0 = t * share, r1 = r0 + share < rows ? r0 + share : rows;
        jobs[t] = (line_job){is_double, x, y, mask, x_row, y_row, mask_row, r0, r1, m, out};
        started[t] = t > 0 && pthread_create(&ids[t], NULL, run_line_job, &jobs[t]) == 0;
    }
    for (int t = 0; t < threads; ++t)  /* the caller runs job 0 and any that failed to start */
        if (!started[t]) run_line_job(&jobs[t]);
    for (int t = 1; t < threads; ++t)
        if (started[t]) pthread_join(ids[t], NULL);
}
