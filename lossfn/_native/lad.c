/* lad: least absolute deviations, one dataset at a time while it is in cache.
 * The estimator and its vertex walk are those of lossfn/fit/_lad.py (see its
 * docstring): an IRLS start, the p independent present points of smallest
 * residual as the first basis, Barrodale-Roberts basis exchanges on the
 * perturbed response, and the optimality certificate on the response itself.
 * The same rules, step for step (the same 4 nearest crossings per line
 * search), with the torch route's lockstep replaced by per-dataset loops:
 * each dataset stops exchanging as soon as its certificate holds, where the
 * torch route runs every dataset of a batch for max_iter exchanges.
 *
 * Input and scratch: see robust.h; `walk` (rows, m) is the perturbed
 * response of the walk (1 at absent points), made by the caller.
 */
#include "robust.h"

#define IRLS_STEPS 16 /* lossfn.fit._lad._IRLS_STEPS */
#define NEAREST 4     /* crossings ranked per line search: lossfn.fit._lad._NEAREST */

/* LAD's vectors in the workspace (robust.h has the first four). */
#define WALK(w) ((w)->vector[4])   /* the perturbed response */
#define R(w) ((w)->vector[5])      /* residuals */
#define WALKED(w) ((w)->vector[6]) /* the walk's residuals at the last basis */
#define U(w) ((w)->vector[7])      /* IRLS weights; signs; the edge's x_i^T d */
#define ZERO(w) ((w)->vector[8])   /* zeros: X d as 0 - X (-d) */

typedef struct {
    const double *x, *y, *walk, *weight;
    int64_t r0, r1, m, p, max_iter;
    double eps, tiny;
    double *beta, *objective, *u_max;
    int64_t *iterations;
    uint8_t *rank_ok;
} lad_job;

/* inverse = X_J^-1 for the basis rows J (p of them), by Gauss-Jordan with
 * partial pivoting; the identity where X_J is singular (a pivot of exactly 0,
 * as LAPACK's getrf reports it), as lossfn.fit._lad._vertex. */
static void basis_inverse(const workspace *w, const int64_t *rows, double *inverse)
{
    const int64_t p = w->p;
    double a[PMAX * PMAX];
    for (int64_t i = 0; i < p; ++i)
        for (int64_t j = 0; j < p; ++j) {
            a[i * p + j] = w->xt[j * w->mp + rows[i]];
            inverse[i * p + j] = i == j;
        }
    for (int64_t col = 0; col < p; ++col) {
        int64_t pivot = col;
        for (int64_t i = col + 1; i < p; ++i)
            if (fabs(a[i * p + col]) > fabs(a[pivot * p + col])) pivot = i;
        if (!(a[pivot * p + col] != 0)) { /* singular (or nan) */
            for (int64_t i = 0; i < p * p; ++i) inverse[i] = i / p == i % p;
            return;
        }
        for (int64_t j = 0; j < p; ++j) { /* swap rows col and pivot */
            double t = a[col * p + j];
            a[col * p + j] = a[pivot * p + j], a[pivot * p + j] = t;
            t = inverse[col * p + j];
            inverse[col * p + j] = inverse[pivot * p + j], inverse[pivot * p + j] = t;
        }
        const double scale = 1 / a[col * p + col];
        for (int64_t j = 0; j < p; ++j) a[col * p + j] *= scale, inverse[col * p + j] *= scale;
        for (int64_t i = 0; i < p; ++i) {
            if (i == col) continue;
            const double f = a[i * p + col];
            if (f == 0) continue;
            for (int64_t j = 0; j < p; ++j) a[i * p + j] -= f * a[col * p + j], inverse[i * p + j] -= f * inverse[col * p + j];
        }
    }
}

/* The vertex of basis `rows` for response y: beta = X_J^-1 y_J, r = y - X beta
 * with r_J = 0 exactly; the inverse is returned too. */
static void vertex(workspace *w, const double *y, const int64_t *rows, double *inverse, double *beta,
                   double *r)
{
    const int64_t p = w->p;
    basis_inverse(w, rows, inverse);
    for (int64_t i = 0; i < p; ++i) {
        double v = 0;
        for (int64_t k = 0; k < p; ++k) v += inverse[i * p + k] * y[rows[k]];
        beta[i] = v;
    }
    residuals(w, y, beta, r);
    for (int64_t k = 0; k < p; ++k) r[rows[k]] = 0;
}

/* u = -X_J^-T X^T s for signs s (m; 0 on the basis): the multipliers of the
 * optimality test |u_j| <= 1. Returns the index of the largest |u_j|. */
static int64_t multipliers(const workspace *w, const double *signs, const double *inverse, double *u)
{
    const int64_t p = w->p;
    double s[PMAX];
    project(w, signs, s);
    int64_t largest = 0;
    for (int64_t j = 0; j < p; ++j) {
        double v = 0;
        for (int64_t k = 0; k < p; ++k) v -= inverse[k * p + j] * s[k];
        u[j] = v;
        if (fabs(v) > fabs(u[largest]) || v != v) largest = j; /* nan fails the test */
    }
    return largest;
}

static inline double sign_of(double v) { return (v > 0) - (v < 0); }

/* One basis exchange on the walk's response (lossfn.fit._lad._exchange); 1 if
 * the basis moved, 0 if it is optimal (or no crossing lowers the objective).
 * Leaves the walk's residuals at the old basis in WALKED. */
static int exchange(workspace *w, int64_t *rows, double u_tol)
{
    const int64_t p = w->p, m = w->m;
    double inverse[PMAX * PMAX], beta[PMAX], u[PMAX], d[PMAX];
    double *r = WALKED(w), *signs = U(w);
    vertex(w, WALK(w), rows, inverse, beta, r);
    for (int64_t i = 0; i < w->mp; ++i) signs[i] = sign_of(r[i]);
    const int64_t j = multipliers(w, signs, inverse, u);
    const double size = fabs(u[j]);
    if (!(size > 1 + u_tol)) return 0;
    /* Release basis point j: X_J d = -sign(u_j) e_j. Along beta + t d the
     * objective's slope starts at 1 - |u_j| and grows by 2|a_i| as residual
     * r_i - t a_i crosses 0 at t = r_i/a_i > 0. */
    const double direction = -sign_of(u[j]);
    for (int64_t k = 0; k < p; ++k) d[k] = -direction * inverse[k * p + j]; /* X (-d) */
    double *a = signs; /* the signs are used: a = X d = 0 - X (-d) */
    residuals(w, ZERO(w), d, a);
    for (int64_t k = 0; k < p; ++k) a[rows[k]] = 0;
    /* The NEAREST crossings (largest rates a_i/r_i > 0), nearest first. */
    double rate[NEAREST];
    int64_t order[NEAREST], found = 0;
    for (int64_t i = 0; i < m; ++i) {
        /* The basis has a_i = r_i = 0: nan, never ranked (torch ranks its 0/1 = 0
         * last); another exact zero residual gives +-inf, as on the torch route. */
        const double v = a[i] / r[i];
        if (!(v > 0) || (found == NEAREST && v <= rate[NEAREST - 1])) continue;
        int64_t at = found < NEAREST ? found++ : NEAREST - 1;
        for (; at > 0 && rate[at - 1] < v; --at) rate[at] = rate[at - 1], order[at] = order[at - 1];
        rate[at] = v, order[at] = i;
    }
    if (found == 0) return 0;
    /* The minimizer: the first crossing where the slope turns >= 0; beyond
     * the ranked ones the step stops at the last (still a vertex, a descent). */
    double climbed = 0;
    int64_t first = 0;
    for (; first < found; ++first) {
        climbed += fabs(a[order[first]]);
        if (!(climbed < (size - 1) / 2)) break;
    }
    if (first == found) first = found - 1;
    rows[j] = order[first];
    return 1;
}

/* One dataset: beta (p), objective, u_max, iterations, rank_ok. */
static void fit_one(workspace *w, const lad_job *job, int64_t row)
{
    const int64_t p = w->p, m = w->m, mp = w->mp;
    double *beta = job->beta + row * p, rhs[PMAX], step[PMAX];
    int64_t n, rows[PMAX];
    job->iterations[row] = 0;
    if (!load(w, job->x + row * m * p, job->y + row * m, job->weight + row * m, &n)) {
        /* nan or inf in a present point: no fit */
        job->rank_ok[row] = 0;
        for (int64_t j = 0; j < p; ++j) beta[j] = NAN;
        job->objective[row] = job->u_max[row] = NAN;
        return;
    }
    const double *walk = job->walk + row * m;
    for (int64_t i = 0; i < mp; ++i) WALK(w)[i] = i < m ? walk[i] : 0, ZERO(w)[i] = 0;

    /* Start: least squares, then IRLS steps with weights 1/max(|r|, sqrt(eps)). */
    const double floor = sqrt(job->eps);
    weighted_gram(w, PRESENT(w), w->gram[0]);
    project(w, Y(w), rhs);
    solve_spd(w->gram[0], rhs, p, w->factor, beta);
    for (int step_number = 0; step_number < IRLS_STEPS; ++step_number) {
        residuals(w, Y(w), beta, R(w));
        for (int64_t i = 0; i < mp; ++i) {
            const double a = fabs(R(w)[i]);
            U(w)[i] = PRESENT(w)[i] / (a > floor ? a : floor);
        }
        weighted_gram(w, U(w), w->gram[0]);
        for (int64_t i = 0; i < mp; ++i) U(w)[i] *= R(w)[i];
        project(w, U(w), rhs);
        solve_spd(w->gram[0], rhs, p, w->factor, step);
        for (int64_t j = 0; j < p; ++j) beta[j] += step[j];
    }
    residuals(w, Y(w), beta, R(w));
    for (int64_t i = 0; i < mp; ++i) R(w)[i] = fabs(R(w)[i]);
    job->rank_ok[row] = (uint8_t)independent_rows(w, job->eps, job->tiny, R(w), rows);

    const double u_tol = pow(job->eps, 0.75);
    int64_t moves = 0;
    while (moves < job->max_iter && exchange(w, rows, u_tol)) ++moves;
    job->iterations[row] = moves;

    /* The certificate, on the response itself. Residuals within zero_tol of 0
     * take the sign of the walk's (any value in [-1, 1] is a subgradient
     * there, and those are the ones the walk used). */
    const double zero_tol = pow(job->eps, 0.75);
    double inverse[PMAX * PMAX], u[PMAX];
    if (moves == job->max_iter) { /* the walk's residuals at the last basis */
        double walk_beta[PMAX];
        vertex(w, WALK(w), rows, inverse, walk_beta, WALKED(w));
    }
    vertex(w, Y(w), rows, inverse, beta, R(w));
    double objective = 0;
    for (int64_t i = 0; i < mp; ++i) {
        const double r = R(w)[i], walked = WALKED(w)[i] * PRESENT(w)[i];
        U(w)[i] = fabs(r) <= zero_tol ? sign_of(walked) : sign_of(r);
        objective += PRESENT(w)[i] * fabs(r);
    }
    for (int64_t k = 0; k < p; ++k) U(w)[rows[k]] = 0;
    const int64_t j = multipliers(w, U(w), inverse, u);
    job->u_max[row] = fabs(u[j]);
    job->objective[row] = objective;
}

static void *run_lad_job(void *arg)
{
    const lad_job *job = arg;
    workspace *w = workspace_new(job->m, job->p);
    if (w == NULL) return (void *)1;
    for (int64_t row = job->r0; row < job->r1; ++row) fit_one(w, job, row);
    workspace_free(w);
    return NULL;
}

/* LAD regression of `rows` standardized datasets (see the top of the file);
 * eps and tiny are those of the caller's dtype (its tolerances: the IRLS
 * floor sqrt(eps), zero and certificate tolerances eps^0.75, the rank rule).
 * Outputs: beta (rows, p) at the final basis, objective (rows) sum |r| over
 * the present points, u_max (rows) the certificate's largest |u_j| (optimal
 * iff <= 1 + eps^0.75), iterations (rows) exchanges made, rank_ok (rows).
 * Returns -1 if scratch memory ran out or p > PMAX, else 0. */
int lossfn_lad(const double *x, const double *y, const double *walk, const double *weight,
               int64_t rows, int64_t m, int64_t p, int64_t max_iter, double eps, double tiny,
               double *beta, double *objective, double *u_max, int64_t *iterations,
               uint8_t *rank_ok, int threads)
{
    if (p < 1 || p > PMAX || m < 1) return -1;
    lad_job jobs[MAX_THREADS];
    threads = thread_count(threads, rows);
    for (int t = 0; t < threads; ++t) {
        int64_t r0, r1;
        thread_share(rows, threads, t, &r0, &r1);
        jobs[t] = (lad_job){x, y, walk, weight, r0, r1, m, p, max_iter, eps, tiny,
                            beta, objective, u_max, iterations, rank_ok};
    }
    return fan_out(run_lad_job, (char *)jobs, sizeof jobs[0], threads) ? -1 : 0;
}
