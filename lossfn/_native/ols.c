/* ols_record: the fit.ols record with several predictors, from the Gram
 * matrices of the centred [X y] that centred_gram (kernels.c) forms, one
 * dataset (row) at a time: the small algebra that torch runs as ~40 batched
 * operators (lossfn.fit._solve.solve_grams' one-pass branch, then
 * lossfn.fit._ols._record and _finish), each with its own set-up and its own
 * pass over the batch's (d+1)^2 numbers.
 *
 * Per dataset, with G the (k x k, k = d + 1) Gram matrix of the centred
 * [X b], `means` the k means the centring removed and n the present points:
 *   scales   s_j = 1/sqrt(G_jj) for the columns above their noise floor
 *            8 eps_data |mean_j| sqrt(n), 0 for the others (rank deficient);
 *            s_b = 1/sqrt(G_bb), or 1 for a constant response;
 *   factor   R^T R = S G_xx S (Cholesky, upper), F = R^-1, C = S F, so that
 *            (X^T X)^-1 = C C^T;
 *   solution gamma = C^T G_xb, beta = C gamma, SSR = G_bb - |gamma|^2 (>= 0);
 *   rank     full where the factorization succeeds, every column is live and
 *            1/|F|_F (a lower bound on the smallest singular value of X S)
 *            exceeds eps_data (max(n, d) sqrt(d) + 10 sqrt(sum_j 1 + (|mean_j|
 *            sqrt(n) s_j)^2)): the rule of solve_grams;
 *   record   the standard errors s |row j of C| from s^2 = SSR/(n - p), the
 *            intercept mean_b - mean_x . beta and its standard error
 *            s sqrt(1/n + |mean_x^T C|^2), sigma2 = SSR/n, r2 = 1 - SSR/G_bb;
 *            every field rounded once to the caller's dtype, the dataset not
 *            ok (all its fields nan) where _finish says so.
 * In double throughout: float32 data's Gram matrices are formed in double
 * (one pass is their whole solve), and so are float64 data's.
 *
 * For float64 data one pass keeps about 12 digits only where the design is
 * well conditioned and the response neither nearly an exact fit nor nearly
 * unrelated to it; `again` flags the other datasets, which the caller solves
 * by CholeskyQR2's second pass (lossfn.fit._solve). With the augmented
 * factor [[R, r], [0, rho]] of the scaled [X b] (r = s_b F^T S G_xb, rho^2 =
 * s_b^2 SSR) and beta_s = F r the scaled coefficients, one pass suffices where
 *   the factorization succeeds and rho^2 > 0,
 *   eps d |F|_F^2 <= E min(|beta_s|, 1)     (the coefficients' error, relative),
 *   eps (1 + |beta_s|^2) / rho^2 <= E       (SSR's cancellation),
 *   every G_jj >= n tiny/eps                (no subnormal squares in G),
 * E = lossfn.fit._solve.ONE_PASS_ERROR: the bounds of its docs there, read
 * off the unshifted factor (the shift of shifted CholeskyQR moves them by a
 * relative 1e-10, far inside E's margin). SSR's bound is multiplied by
 * sqrt(gram_run), the rounding of the Gram kernels' longest runs of
 * additions into one sum (gram.h): without it, r2 = 0.998 at d = 5 and 256
 * points gave sigma2 off by 2e-12. Datasets with fewer points than coefficients or
 * non-finite data are never flagged: no second pass makes them ok.
 *
 * Compiled on first use by lossfn._native._build (cc -O3 -march=native).
 */
#include <math.h>

#include "common.h"
#include "gram.h"


typedef struct {
    const double *gram, *means, *count;
    int64_t r0, r1, d;
    int intercept, is_double, test;
    double data_eps, tiny, bound;
    void *const *fields; /* intercept (rows), slope (rows x d), sigma2, r2, stderr (rows x p) */
    uint8_t *ok, *again;
} record_job;

/* Lane-wise helpers: each lane of a v8d is one dataset. */
static inline v8d where8(v8di m, v8d a, v8d b) { return (v8d)((m & (v8di)a) | (~m & (v8di)b)); }
static inline v8d abs8(v8d v) { return (v8d)((v8di)v & INT64_MAX); } /* sign bit cleared */
static inline v8d sqrt8(v8d v)
{
    for (int l = 0; l < 8; ++l) v[l] = sqrt(v[l]); /* one vsqrtpd with -fno-math-errno */
    return v;
}
/* v rounded to the caller's dtype, lane by lane */
static inline v8d dtype8(int is_double, v8d v)
{
    if (!is_double)
        for (int l = 0; l < 8; ++l) v[l] = (float)v[l];
    return v;
}

/* Field f (0 intercept, 1 slope, 2 sigma2, 3 r2, 4 stderr) at `at`, in the caller's dtype. */
static void put(const record_job *j, int f, int64_t at, double v)
{
    if (j->is_double)
        ((double *)j->fields[f])[at] = v;
    else
        ((float *)j->fields[f])[at] = (float)v;
}

/* Datasets first .. first + lanes - 1 (lanes <= 8), one to a lane of every
 * vector (the last one repeated in lanes past `lanes`, whose results are
 * dropped): everything below is the same arithmetic for each lane, so 8
 * datasets cost about what one would. Scratch: g (k x k), r and f (d x d). */
static void record_group(const record_job *j, int64_t first, int lanes, v8d *g, v8d *r, v8d *f)
{
    const int64_t d = j->d, k = d + 1, p = d + (j->intercept ? 1 : 0);
    const int is_double = j->is_double;
    const double eps = DBL_EPSILON;
    const v8di all = (v8di){0} - 1;
    v8d mean[KMAX], scale[KMAX], gamma[KMAX], coef[KMAX], se[KMAX], n;
    int64_t at[8];
    for (int l = 0; l < 8; ++l) at[l] = first + (l < lanes ? l : lanes - 1);
    for (int l = 0; l < 8; ++l) {
        const double *gl = j->gram + at[l] * k * k, *ml = j->means + at[l] * k;
        for (int64_t i = 0; i < k; ++i) {
            mean[i][l] = ml[i];
            for (int64_t c = i; c < k; ++c) g[i * k + c][l] = gl[i * k + c];
        }
        n[l] = j->count[at[l]];
    }

    /* scales and liveness (lossfn.fit._solve._scales) */
    const v8d root_n = sqrt8(n);
    v8di live = all, exact = all;
    v8d noise = (v8d){0}; /* sum_j 1 + (|mean_j| sqrt(n) s_j)^2 over X's columns */
    for (int64_t i = 0; i < k; ++i) {
        const v8d square = g[i * k + i];
        const v8di positive = square > 0;
        const v8d norm = sqrt8(where8(positive, square, (v8d){0} + 1));
        const v8di column = i == d ? all : positive & (norm > 8 * j->data_eps * abs8(mean[i]) * root_n);
        scale[i] = where8(column, 1 / norm, (v8d){0});
        if (i < d) {
            live &= column;
            const v8d ratio = where8(column, abs8(mean[i]) * root_n * scale[i], (v8d){0});
            noise += 1 + ratio * ratio;
        }
        exact &= square >= n * (DBL_MIN / eps);
    }

    /* R^T R = S G_xx S, row by row: row i is its row of S G S less the rows
     * above it, each weighted by its entry in column i. A pivot that is not
     * positive (or nan) fails its lane, as LAPACK's potrf would. */
    v8di failed = (v8di){0};
    for (int64_t i = 0; i < d; ++i) {
        v8d *ri = r + i * d;
        for (int64_t c = i; c < d; ++c) ri[c] = scale[i] * g[i * k + c] * scale[c];
        for (int64_t l = 0; l < i; ++l) {
            const v8d w = r[l * d + i], *rl = r + l * d;
            for (int64_t c = i; c < d; ++c) ri[c] -= w * rl[c];
        }
        failed |= ~(ri[i] > 0);
        const v8d pivot = sqrt8(ri[i]), inverse = 1 / pivot;
        ri[i] = pivot;
        for (int64_t c = i + 1; c < d; ++c) ri[c] *= inverse;
    }
    /* F = R^-1 from the bottom row up: row i is -(sum over l > i of R_il F_l) / R_ii */
    v8d frobenius = (v8d){0};
    for (int64_t i = d - 1; i >= 0; --i) {
        v8d *fi = f + i * d;
        for (int64_t c = i; c < d; ++c) fi[c] = (v8d){0};
        for (int64_t l = i + 1; l < d; ++l) {
            const v8d w = r[i * d + l], *fl = f + l * d;
            for (int64_t c = l; c < d; ++c) fi[c] -= w * fl[c];
        }
        const v8d inverse = 1 / r[i * d + i];
        fi[i] = inverse;
        for (int64_t c = i + 1; c < d; ++c) fi[c] *= inverse;
        for (int64_t c = i; c < d; ++c) frobenius += fi[c] * fi[c];
    }
    /* C = S F in place of F from here on; gamma = C^T G_xb, beta = C gamma */
    for (int64_t i = 0; i < d; ++i)
        for (int64_t c = i; c < d; ++c) f[i * d + c] *= scale[i];
    for (int64_t c = 0; c < d; ++c) gamma[c] = (v8d){0};
    for (int64_t i = 0; i < d; ++i)
        for (int64_t c = i; c < d; ++c) gamma[c] += f[i * d + c] * g[i * k + d];
    v8d explained = (v8d){0};
    for (int64_t c = 0; c < d; ++c) explained += gamma[c] * gamma[c];
    for (int64_t i = 0; i < d; ++i) {
        v8d sum = (v8d){0};
        for (int64_t c = i; c < d; ++c) sum += f[i * d + c] * gamma[c];
        coef[i] = sum;
    }
    const v8d total = g[d * k + d], ssr_raw = total - explained;
    const v8d ssr = where8(ssr_raw < 0, (v8d){0}, ssr_raw); /* nan stays nan */

    if (j->test) {
        /* |beta_s|^2, beta_s = s_b S^-1 beta (S is nonzero where R exists) */
        v8d beta_norm2 = (v8d){0};
        for (int64_t i = 0; i < d; ++i) {
            const v8d b = coef[i] / scale[i] * scale[d];
            beta_norm2 += b * b;
        }
        const v8d rho2 = ssr_raw * scale[d] * scale[d], beta_norm = sqrt8(beta_norm2);
        /* G's entries carry the rounding of runs of additions (gram_run):
         * about sqrt(run) eps, which SSR's cancellation magnifies */
        v8d run;
        for (int l = 0; l < 8; ++l) run[l] = sqrt(gram_run(k, n[l]));
        const v8di once = ~failed & exact & (rho2 > 0)
                          & (eps * d * frobenius <= j->bound * where8(beta_norm < 1, beta_norm, (v8d){0} + 1))
                          & (eps * run * (1 + beta_norm2) / rho2 <= j->bound);
        /* a second pass cannot make a dataset with too few points or non-finite
         * data ok: spare it */
        v8di hopeless = n < (double)p;
        for (int64_t i = 0; i < k; ++i) hopeless |= ~(abs8(g[i * k + i]) <= DBL_MAX);
        for (int l = 0; l < lanes; ++l) j->again[first + l] = !once[l] && !hopeless[l];
    }

    /* rank (solve_grams' rule) */
    const v8d most = where8(n > (double)d, n, (v8d){0} + (double)d);
    const v8d tol = j->data_eps * (most * sqrt((double)d) + 10 * sqrt8(noise));
    const v8di full_rank = ~failed & live & (1 / sqrt8(frobenius) > tol);

    /* the record (lossfn.fit._ols._record): standard errors of the slopes from
     * the rows of C in units of their largest entry, whose squares could
     * overflow where the errors themselves are ordinary numbers */
    const v8d s2 = where8(n > (double)p, ssr / (n - (double)p), (v8d){0} + NAN), s = sqrt8(s2);
    for (int64_t i = 0; i < d; ++i) {
        v8d top = (v8d){0};
        for (int64_t c = i; c < d; ++c) {
            const v8d size = abs8(f[i * d + c]);
            top = where8(size > top, size, top);
        }
        top = where8(top < DBL_MIN, (v8d){0} + DBL_MIN, top);
        const v8d unit = 1 / top;
        v8d sum = (v8d){0};
        for (int64_t c = i; c < d; ++c) sum += (f[i * d + c] * unit) * (f[i * d + c] * unit);
        se[i] = s * top * sqrt8(sum);
    }
    v8d alpha = (v8d){0}, se_alpha = (v8d){0};
    if (j->intercept) {
        v8d lever2 = (v8d){0}, fitted = (v8d){0};
        for (int64_t c = 0; c < d; ++c) {
            v8d lever = (v8d){0};
            for (int64_t i = 0; i <= c; ++i) lever += mean[i] * f[i * d + c];
            lever2 += lever * lever;
            fitted += mean[c] * coef[c];
        }
        alpha = mean[d] - fitted;
        se_alpha = sqrt8(s2 * (1 / n + lever2));
    }
    /* _finish's rules on the values as the dtype holds them: a nonzero
     * coefficient lost below the dtype's normal range, or a non-finite
     * intercept, slope or residual norm, fail the dataset */
    v8di lost = (v8di){0};
    v8d slopes = (v8d){0};
    for (int64_t i = 0; i < d; ++i) {
        const v8d held = dtype8(is_double, coef[i]);
        lost |= (abs8(held) < j->tiny / 8) & (coef[i] != 0);
        slopes = dtype8(is_double, slopes + held);
        coef[i] = held;
    }
    const v8d intercept = dtype8(is_double, alpha), sigma2 = dtype8(is_double, ssr / n);
    const v8d r2 = dtype8(is_double, 1 - dtype8(is_double, ssr / total));
    const v8d check = dtype8(is_double, dtype8(is_double, intercept + slopes)
                                            + dtype8(is_double, sqrt8(ssr)));
    const v8di ok = full_rank & ~lost & (n >= (double)p) & (abs8(check) <= DBL_MAX);

    for (int l = 0; l < lanes; ++l) {
        const int64_t row = first + l;
        j->ok[row] = ok[l] != 0;
        const double poison = ok[l] ? 0 : NAN; /* nan in every field of a failed dataset */
        put(j, 0, row, intercept[l] + poison);
        put(j, 2, row, sigma2[l] + poison);
        put(j, 3, row, r2[l] + poison);
        if (j->intercept) put(j, 4, row * p, se_alpha[l] + poison);
        for (int64_t i = 0; i < d; ++i) {
            put(j, 1, row * d + i, coef[i][l] + poison);
            put(j, 4, row * p + (p - d) + i, se[i][l] + poison);
        }
    }
}

/* Scratch for record_group with d predictors: g (k x k), r and f (d x d); free() it. */
static v8d *record_scratch(int64_t d)
{
    return aligned_alloc(64, sizeof(v8d) * ((d + 1) * (d + 1) + 2 * d * d));
}

static void record_rows(const record_job *j, int64_t a, int64_t b, v8d *scratch)
{
    const int64_t d = j->d, k = d + 1;
    for (int64_t r = a; r < b; r += 8)
        record_group(j, r, b - r < 8 ? (int)(b - r) : 8, scratch, scratch + k * k,
                     scratch + k * k + d * d);
}

static void *run_record_job(void *arg)
{
    const record_job *j = arg;
    v8d *scratch = record_scratch(j->d);
    if (!scratch) return (void *)1;
    record_rows(j, j->r0, j->r1, scratch);
    free(scratch);
    return NULL;
}

/* Whole groups of 8 rows to each of `threads` threads: [8 g0, 8 g1) clipped to rows. */
static int group_share(int64_t rows, int threads, int t, int64_t *r0, int64_t *r1)
{
    const int64_t groups = (rows + 7) / 8;
    int64_t g0, g1;
    threads = thread_count(threads, groups);
    thread_share(groups, threads, t, &g0, &g1);
    *r0 = 8 * g0 < rows ? 8 * g0 : rows;
    *r1 = 8 * g1 < rows ? 8 * g1 : rows;
    return threads;
}

/* The record for `rows` datasets: gram (rows, k, k) and means (rows, k) as
 * centred_gram gives them, count (rows) the present points, k = d + 1 <=
 * KMAX; intercept 0 for a fit through the origin (means then 0). is_double
 * selects the fields' dtype, whose tiny sets the rule on lost coefficients;
 * data_eps is the data's precision (rank decisions). With test, again (rows)
 * flags the datasets that one pass does not serve to `bound` (see the top).
 * Returns 0, or -1 if k is out of range or scratch memory ran out. */
int lossfn_ols_record(const double *gram, const double *means, const double *count, int64_t rows,
                      int64_t d, int intercept, int is_double, double data_eps, double tiny,
                      int test, double bound, void *const *fields, uint8_t *ok, uint8_t *again,
                      int threads)
{
    record_job jobs[MAX_THREADS];
    if (d < 1 || d + 1 > KMAX) return -1;
    threads = group_share(rows, threads, 0, &jobs[0].r0, &jobs[0].r1);
    for (int t = 0; t < threads; ++t) {
        int64_t r0, r1;
        group_share(rows, threads, t, &r0, &r1);
        jobs[t] = (record_job){gram, means, count, r0, r1, d, intercept, is_double, test,
                               data_eps, tiny, bound, fields, ok, again};
    }
    return fan_out(run_record_job, (char *)jobs, sizeof jobs[0], threads) ? -1 : 0;
}

typedef struct {
    gram_job gram;
    record_job record;
    double *count;  /* the record's counts, made here */
    int64_t *n;     /* and the caller's */
} fit_job;

static void *run_fit_job(void *arg)
{
    const fit_job *j = arg;
    const gram_job *g = &j->gram;
    double *scratch = gram_scratch(g->d + 1);
    v8d *more = record_scratch(g->d);
    void *failed = NULL;
    if (scratch && more)
        for (int64_t r = g->r0; r < g->r1; r += 8) {
            const int64_t b = r + 8 < g->r1 ? r + 8 : g->r1;
            for (int64_t row = r; row < b; ++row) { /* the present points */
                int64_t n = g->m;
                if (g->mask) {
                    const uint8_t *mr = g->mask + row * g->mask_row;
                    n = 0;
                    for (int64_t t = 0; t < g->m; ++t) n += mr[t] != 0;
                }
                j->n[row] = n;
                j->count[row] = (double)n;
            }
            gram_rows(g, r, b, scratch);
            record_rows(&j->record, r, b, more);
        }
    else
        failed = (void *)1;
    free(scratch);
    free(more);
    return failed;
}

/* lossfn_centred_gram (means computed, or given as zeros: a fit through the
 * origin) and lossfn_ols_record in one: each group of 8 rows gets its record
 * right after its Gram matrices, which are still in cache then. The
 * arguments are theirs, but for the counts of present points, which are
 * made here and written to n (rows); means and gram (out) are written too,
 * for the rows that `again` sends to a second pass. Returns 0, or -1 (k out
 * of range, scratch memory ran out). */
int lossfn_ols_fit(int is_double, const void *x, int64_t x_row, const void *y, int64_t y_row,
                   const uint8_t *mask, int64_t mask_row, int64_t rows, int64_t m, int64_t d,
                   int means_given, double *means, double *out, int64_t *n, int intercept,
                   double data_eps, double tiny, int test, double bound, void *const *fields,
                   uint8_t *ok, uint8_t *again, int threads)
{
    fit_job jobs[MAX_THREADS];
    if (d < 1 || d + 1 > KMAX) return -1;
    double *count = malloc(sizeof(double) * (rows > 0 ? rows : 1));
    if (!count) return -1;
    threads = group_share(rows, threads, 0, &jobs[0].gram.r0, &jobs[0].gram.r1);
    for (int t = 0; t < threads; ++t) {
        int64_t r0, r1;
        group_share(rows, threads, t, &r0, &r1);
        jobs[t].gram = (gram_job){is_double, x, y, mask, x_row, y_row, mask_row, r0, r1, m, d,
                                  means_given, NULL, means, out};
        jobs[t].record = (record_job){out, means, count, r0, r1, d, intercept, is_double,
                                      test, data_eps, tiny, bound, fields, ok, again};
        jobs[t].count = count;
        jobs[t].n = n;
    }
    const int failed = fan_out(run_fit_job, (char *)jobs, sizeof jobs[0], threads);
    free(count);
    return failed ? -1 : 0;
}
