/* huber: Huber M-estimation of a linear regression, one dataset at a time
 * while it is in cache. The estimator and its iteration are those of
 * lossfn/fit/_huber.py (see its docstring); this is the same algorithm with
 * the torch route's data-independent control flow replaced by per-dataset
 * loops, which is what makes it fast:
 *   - a dataset stops as soon as it has converged (torch runs every dataset
 *     for max_iter steps);
 *   - the median of |r| is a selection over the dataset's own n values at
 *     every step (torch tracks it between full selections over the batch);
 *   - the two candidate steps' Gram matrices share one pass: the Newton step
 *     weighs the inliers (|r| <= c) by 1, IRLS weighs them by 1 and the
 *     outliers by c/|r|, so G_newton = G_in and G_irls = G_in + G_out.
 * The fixed point is the same; the path differs from the torch route's only
 * by rounding (and by the scale never being held for an untracked median).
 *
 * Input and scratch: see robust.h.
 */
#include "robust.h"

#define MAD_TO_SIGMA 0.6744897501960817 /* Phi^-1(3/4), lossfn.location.MAD_TO_SIGMA */

/* Huber's vectors in the workspace (robust.h has the first four). */
#define R(w) ((w)->vector[4])      /* the residuals */
#define TRIAL(w) ((w)->vector[5])  /* the other candidate's residuals */
#define INLIER(w) ((w)->vector[6]) /* Newton's weights */
#define OUTLIER(w) ((w)->vector[7])
#define PSI(w) ((w)->vector[8])
#define SORTED(w) ((w)->vector[9]) /* the present |r|, split and permuted by the selection */
#define WINDOW(w) ((w)->vector[10])
#define SPARE(w) ((w)->vector[11])

/* sum_i rho_c(r_i) with rho_c(a) = min(a, c) * (a - min(a, c)/2): the Huber
 * objective at scale 1 and threshold c. nan in r gives nan (never the lower):
 * min picks c there, and c * (nan - c/2) is nan. */
static double objective(const workspace *w, const double *r, double c)
{
    const v8d cv = (v8d){0} + c;
    v8d acc0 = {0}, acc1 = {0};
    for (int64_t i = 0; i < w->mp; i += 16) {
        const v8d a0 = vabs(*(const v8d *)(r + i));
        const v8d in0 = blend(a0 < cv, a0, cv);
        acc0 += in0 * (a0 - 0.5 * in0);
        if (i + 8 < w->mp) {
            const v8d a1 = vabs(*(const v8d *)(r + i + 8));
            const v8d in1 = blend(a1 < cv, a1, cv);
            acc1 += in1 * (a1 - 0.5 * in1);
        }
    }
    return lane_sum(acc0 + acc1);
}

/* The k-th smallest of v[0..n), n > 0, no nan; v is permuted so that every
 * value after place k is >= it. Quickselect with the median of three as
 * pivot (Hoare's partition: ties split evenly), insertion sort below 16. */
static double select_kth(double *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi - lo >= 16) {
        const int64_t mid = lo + (hi - lo) / 2;
        double a = v[lo], b = v[mid], c = v[hi];
        const double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) { /* the pivot is in [lo, hi]: both scans stop inside */
            while (v[i] < pivot) ++i;
            while (v[j] > pivot) --j;
            if (i <= j) {
                const double t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k]; /* places j < k < i all hold the pivot */
    }
    for (int64_t i = lo + 1; i <= hi; ++i) {
        const double t = v[i];
        int64_t j = i - 1;
        for (; j >= lo && v[j] > t; --j) v[j + 1] = v[j];
        v[j + 1] = t;
    }
    return v[k];
}

/* Splits |values[i]| over the points i < count that are present (all if
 * present is NULL; n of them) around [lo, hi], without a branch on the
 * values: those below lo to the front of `out`, above hi to its back, the
 * rest to the front of `window` (which may be `values` itself: it is written
 * behind the reading). size = {below, inside, above}; the above ones start at
 * out + below + inside. Returns 0 if a value is nan. */
static int split(const double *values, const double *present, int64_t count, int64_t n, double lo,
                 double hi, double *out, double *window, int64_t size[3])
{
    int64_t below = 0, above = 0, inside = 0;
    for (int64_t i = 0; i < count; ++i) {
        const double a = fabs(values[i]);
        if (a != a) return 0;
        if (present && present[i] == 0) continue;
        /* Before this value below + above + inside < n: every place is in bounds. */
        const int low = a < lo, high = a > hi;
        out[below] = a;
        out[n - 1 - above] = a;
        window[inside] = a;
        below += low;
        above += high;
        inside += !(low | high);
    }
    size[0] = below, size[1] = inside, size[2] = above;
    return 1;
}

#define SAMPLE 31 /* values sampled to guess a bracket of a rank */

/* The k-th smallest of v[0..n) (n > 0, no nan), as select_kth, with the
 * parts of many values first narrowed around it (Floyd and Rivest's idea,
 * branch-free): ranks k' - 6 and k' + 6 of 31 evenly spaced values, where k'
 * is k scaled to the sample, bracket it; a split around them keeps its part,
 * a third of the values or fewer, in place or in `scratch` (the caller's
 * buffer of n values: the two swap as the parts shrink). Outside the bracket
 * with probability about 3%; the part then kept is still smaller. A round that
 * keeps more than 3/4 (ties, or an order built against the samples) ends in
 * a sort instead, so the worst case is O(n log n), not quadratic. */
static int ascending(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double select_kth_sampled(double *v, int64_t n, int64_t k, double *scratch)
{
    while (n >= 4 * SAMPLE) {
        const int64_t before = n;
        double sample[SAMPLE];
        for (int i = 0; i < SAMPLE; ++i) sample[i] = v[i * n / SAMPLE];
        const int64_t centre = k * SAMPLE / n;
        const double low = select_kth(sample, SAMPLE, centre < 6 ? 0 : centre - 6);
        const double high = select_kth(sample, SAMPLE, centre > SAMPLE - 7 ? SAMPLE - 1 : centre + 6);
        int64_t size[3];
        split(v, NULL, n, n, low, high, scratch, v, size);
        if (k < size[0]) { /* below the bracket: in scratch, whose buffer v becomes */
            double *t = v;
            v = scratch, scratch = t, n = size[0];
        } else if (k < size[0] + size[1]) { /* inside: in place */
            if (low == high) return low; /* all ties of one value */
            k -= size[0], n = size[1];
        } else {
            double *t = v;
            v = scratch + size[0] + size[1], scratch = t, k -= size[0] + size[1], n = size[2];
        }
        if (4 * n > 3 * before) { /* an adversarial order defeats the samples: sort, O(n log n) */
            qsort(v, (size_t)n, sizeof *v, ascending);
            return v[k];
        }
    }
    return select_kth(v, n, k);
}

/* The middle pair of |r| over the n > 0 present points, given a guess
 * [lo, hi] of where it lies (lo > hi or nan: none). A split around it
 * (:c:func:`split`) is a step of quickselect, so the pair is exact whatever
 * the guess, and the lower middle rank is selected in its part only: a good
 * guess (late in the iteration, where the median moves little) leaves a few
 * values there and skips most of the selection's unpredictable branches.
 * The upper one is the lower one or the next value up: one more count.
 * Returns 0 if an r is nan. */
static int middle_pair(workspace *w, const double *r, int64_t n, double lo, double hi,
                       double *lower, double *upper)
{
    int64_t size[3];
    const int guessed = lo <= hi;
    if (!split(r, PRESENT(w), w->m, n, guessed ? lo : -INFINITY, guessed ? hi : INFINITY,
               SORTED(w), WINDOW(w), size))
        return 0;
    double *part[3] = {SORTED(w), WINDOW(w), SORTED(w) + size[0] + size[1]};
    int64_t k = (n - 1) / 2, which = 0;
    while (k >= size[which]) k -= size[which++];
    const double value = select_kth_sampled(part[which], size[which], k, SPARE(w));
    *lower = *upper = value;
    if (n % 2 == 0) { /* the (n/2)-th smallest: value if it has company, else the next one up */
        const v8d at = (v8d){0} + value;
        v8d next = (v8d){0} + INFINITY;
        v8di through = {0};
        for (int64_t i = 0; i < w->mp; i += 8) { /* the padding is absent */
            const v8d a = vabs(*(const v8d *)(r + i));
            const v8di here = *(const v8d *)(PRESENT(w) + i) != 0;
            through -= here & (a <= at); /* true lanes are -1 */
            next = blend(here & (a > at) & (a < next), a, next);
        }
        double least = INFINITY;
        int64_t count = 0;
        for (int l = 0; l < 8; ++l) least = next[l] < least ? next[l] : least, count += through[l];
        *upper = count > n / 2 ? value : least;
    }
    return 1;
}

/* Where the next middle pair is sought: the last one widened by twice its
 * last move (the scale iteration's steps shrink), or everywhere before
 * there is a move to go by. */
typedef struct {
    double lower, upper, reach;
} middle;

/* median|r| / Phi^-1(3/4) over the n present points (numpy's median: the
 * mean of the middle pair for even n); nan if n = 0 or an r is nan. `last`
 * is updated for the next call. */
static double mad_scale(workspace *w, const double *r, int64_t n, middle *last)
{
    double lower, upper;
    /* nan (no guess yet) fails lo <= hi */
    const double lo = last->lower - last->reach, hi = last->upper + last->reach;
    if (n == 0 || !middle_pair(w, r, n, lo, hi, &lower, &upper)) return NAN;
    const double moved = fmax(fabs(lower - last->lower), fabs(upper - last->upper));
    /* The first call (lower = nan) leaves reach nan: the next is a plain selection. */
    last->reach = 2 * moved + 1e-12 * upper;
    last->lower = lower;
    last->upper = upper;
    return (0.5 * lower + 0.5 * upper) / MAD_TO_SIGMA;
}

typedef struct {
    const double *x, *y, *weight, *delta, *scale; /* scale NULL: estimate it */
    int64_t r0, r1, m, p, max_iter;
    double tol, eps, tiny;
    double *beta, *s;
    int64_t *iterations;
    uint8_t *converged, *rank_ok;
} huber_job;

/* Aitken's jump of the scale iteration on a straight stretch: the rule of
 * lossfn.fit._huber._extrapolate, for one dataset. */
static double extrapolate(double d, double *rho, double *safe, int64_t *run, double plain)
{
    const int moved = d != 0;
    const double ratio = d / *safe, size = fabs(ratio);
    const int straight = *run >= 2 && size <= 0.95 && fabs(ratio - *rho) <= 1e-3 * size;
    const double next = straight ? plain + d * ratio / (1 - ratio) : plain;
    *run = straight || !moved ? 0 : *run + 1;
    *rho = ratio;
    *safe = moved ? d : 1.0;
    return next;
}

/* One dataset: beta (p), s, iterations, converged, rank_ok. */
static void fit_one(workspace *w, const huber_job *job, int64_t row)
{
    const int64_t p = w->p, mp = w->mp;
    double *beta = job->beta + row * p, *out_s = job->s + row;
    double step[2][PMAX], candidate[2][PMAX], rhs[PMAX];
    int64_t n;
    job->converged[row] = 0;
    job->iterations[row] = job->max_iter;
    const int64_t m = w->m;
    if (!load(w, job->x + row * m * p, job->y + row * m, job->weight + row * m, &n)) {
        /* nan or inf in a present point: no fit */
        job->rank_ok[row] = 0;
        for (int64_t j = 0; j < p; ++j) beta[j] = NAN;
        *out_s = NAN;
        return;
    }
    job->rank_ok[row] = (uint8_t)independent_rows(w, job->eps, job->tiny, NULL, NULL);

    /* Start: least squares (present rows only: absent ones are zero). */
    for (int64_t i = 0; i < mp; ++i) INLIER(w)[i] = 1, OUTLIER(w)[i] = 0;
    weighted_grams(w, INLIER(w), OUTLIER(w), w->gram[0], w->gram[1]);
    project(w, Y(w), rhs);
    solve_spd(w->gram[0], rhs, p, w->factor, beta);
    residuals(w, Y(w), beta, R(w));
    const int estimate = job->scale == NULL;
    middle last = {NAN, NAN, NAN};
    double s = estimate ? mad_scale(w, R(w), n, &last) : job->scale[row];
    const double delta = job->delta[row], tol = job->tol;
    double rho = 0, safe = 1;
    int64_t run = 0;
    for (int64_t step_number = 0; step_number < job->max_iter; ++step_number) {
        const double product = delta * s;
        const double c = product < job->tiny ? job->tiny : product; /* nan stays nan */
        const v8d cv = (v8d){0} + c;
        /* Newton weights 1 on |r| <= c; IRLS adds c/|r| on the rest; psi = clip(r, -c, c). */
        for (int64_t i = 0; i < mp; i += 8) {
            const v8d r = *(const v8d *)(R(w) + i), a = vabs(r);
            const v8di in = a <= cv;
            *(v8d *)(INLIER(w) + i) = blend(in, (v8d){0} + 1.0, (v8d){0});
            *(v8d *)(OUTLIER(w) + i) = blend(in, (v8d){0}, cv / a);
            *(v8d *)(PSI(w) + i) = blend(r > cv, cv, blend(r < -cv, -cv, r));
        }
        weighted_grams(w, INLIER(w), OUTLIER(w), w->gram[0], w->gram[1]);
        for (int64_t k = 0; k < p * p; ++k) w->gram[1][k] += w->gram[0][k];
        project(w, PSI(w), rhs);
        solve_spd(w->gram[0], rhs, p, w->factor, step[0]); /* Newton */
        solve_spd(w->gram[1], rhs, p, w->factor, step[1]); /* IRLS */
        /* The better (lower objective) of the two, with residuals from the data. */
        double value[2];
        for (int t = 0; t < 2; ++t) {
            for (int64_t j = 0; j < p; ++j) candidate[t][j] = beta[j] + step[t][j];
            residuals(w, Y(w), candidate[t], t == 0 ? TRIAL(w) : R(w));
            value[t] = objective(w, t == 0 ? TRIAL(w) : R(w), c);
        }
        const int newton = value[0] <= value[1];
        if (newton) {
            double *swap = R(w);
            R(w) = TRIAL(w);
            TRIAL(w) = swap;
        }
        const double *chosen = candidate[newton ? 0 : 1];
        double change = 0, size = 0;
        for (int64_t j = 0; j < p; ++j) {
            const double dj = fabs(chosen[j] - beta[j]), bj = fabs(beta[j]);
            change = dj > change || dj != dj ? dj : change; /* nan propagates */
            size = bj > size || bj != bj ? bj : size;
            beta[j] = chosen[j];
        }
        size = size < 1 ? 1 : size;
        double new_s = s;
        if (estimate) {
            const double plain = mad_scale(w, R(w), n, &last);
            new_s = extrapolate(plain - s, &rho, &safe, &run, plain);
        }
        const int settled = fabs(new_s - s) <= tol * s;
        s = new_s;
        if (change <= tol * size && settled) {
            job->converged[row] = 1;
            job->iterations[row] = step_number + 1;
            break;
        }
    }
    *out_s = s;
}

static void *run_huber_job(void *arg)
{
    const huber_job *job = arg;
    workspace *w = workspace_new(job->m, job->p);
    if (w == NULL) return (void *)1;
    for (int64_t row = job->r0; row < job->r1; ++row) fit_one(w, job, row);
    workspace_free(w);
    return NULL;
}

/* Huber regression of `rows` standardized datasets (see the top of the file).
 * delta (rows); scale (rows), or NULL to estimate it by the MAD rule; eps and
 * tiny are those of the caller's dtype (the rank rule's and c's floor).
 * Outputs: beta (rows, p), s (rows), iterations (rows; max_iter if not
 * converged), converged and rank_ok (rows). Returns -1 if scratch memory ran
 * out or p > PMAX (the outputs are then incomplete), else 0. */
int lossfn_huber(const double *x, const double *y, const double *weight, const double *delta,
                 const double *scale, int64_t rows, int64_t m, int64_t p, int64_t max_iter, double tol,
                 double eps, double tiny, double *beta, double *s, int64_t *iterations,
                 uint8_t *converged, uint8_t *rank_ok, int threads)
{
    if (p < 1 || p > PMAX || m < 1) return -1;
    huber_job jobs[MAX_THREADS];
    threads = thread_count(threads, rows);
    for (int t = 0; t < threads; ++t) {
        int64_t r0, r1;
        thread_share(rows, threads, t, &r0, &r1);
        jobs[t] = (huber_job){x, y, weight, delta, scale, r0, r1, m, p, max_iter, tol, eps, tiny,
                              beta, s, iterations, converged, rank_ok};
    }
    return fan_out(run_huber_job, (char *)jobs, sizeof jobs[0], threads) ? -1 : 0;
}
