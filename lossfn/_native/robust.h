/* What the robust fits' kernels (huber.c, lad.c) share: one dataset's
 * scratch, its design copied feature-major, and the passes and small algebra
 * over it. Included by both; compiled into one library by
 * lossfn._native._build. Input is the standardized problem of
 * lossfn.fit._prepare.standardize, in double: design (rows, m, p) with absent
 * points' rows and responses 0, response (rows, m), weight (rows, m) 1.0 for
 * present points and 0.0 for absent ones. Per dataset the design is copied
 * feature-major, padded to a multiple of 8 points with zeros (whose residual
 * is 0 at every beta, so they add nothing to any sum), and every pass runs
 * over vectors of 8 points.
 */
#ifndef LOSSFN_ROBUST_H
#define LOSSFN_ROBUST_H

#include <math.h>

#include "common.h"

#define PMAX 64 /* most coefficients: scratch sized for it */

static inline v8d vabs(v8d v)
{
    return (v8d)((v8di)v & ((v8di){0} + INT64_MAX));
}

/* Lanes of a where mask is all ones, of b where it is 0. */
static inline v8d blend(v8di mask, v8d a, v8d b)
{
    return (v8d)((mask & (v8di)a) | (~mask & (v8di)b));
}

/* One dataset's scratch: the feature-major design and the per-point vectors,
 * all `mp` (points rounded up to 8) doubles long and 64-byte aligned, and
 * p x p matrices. Each kernel names the vectors it uses. */
#define VECTORS 12
typedef struct {
    int64_t m, mp, p;
    double *xt; /* p x mp */
    double *vector[VECTORS];
    double gram[2][PMAX * PMAX], factor[PMAX * PMAX];
} workspace;

/* A workspace for datasets of m points and p coefficients, or NULL. */
static inline workspace *workspace_new(int64_t m, int64_t p)
{
    const int64_t mp = (m + 7) / 8 * 8;
    workspace *w = malloc(sizeof(workspace));
    double *data = aligned_alloc(64, sizeof(double) * (size_t)mp * (size_t)(p + VECTORS));
    if (w == NULL || data == NULL) {
        free(w);
        free(data);
        return NULL;
    }
    w->m = m, w->mp = mp, w->p = p;
    w->xt = data;
    for (int k = 0; k < VECTORS; ++k) w->vector[k] = data + (p + k) * mp;
    return w;
}

static inline void workspace_free(workspace *w)
{
    free(w->xt);
    free(w);
}

/* The vectors both kernels use, by name. */
#define Y(w) ((w)->vector[0])       /* the response */
#define PRESENT(w) ((w)->vector[1]) /* 1.0 for a present point, 0.0 else */
#define NORM2(w) ((w)->vector[2])   /* scratch of independent_rows */
#define PROJECTED(w) ((w)->vector[3])

/* Copies one dataset (x (m, p), y and weight (m)) into the workspace; 0 if a
 * present value is not finite. */
static inline int load(workspace *w, const double *x, const double *y, const double *weight, int64_t *n)
{
    const int64_t m = w->m, mp = w->mp, p = w->p;
    int64_t count = 0, bad = 0;
    for (int64_t i = 0; i < m; ++i) {
        const int64_t here = weight[i] > 0;
        count += here;
        PRESENT(w)[i] = (double)here;
        Y(w)[i] = y[i];
        bad |= here & !(fabs(y[i]) <= DBL_MAX); /* nan or inf, without a branch */
        for (int64_t j = 0; j < p; ++j) {
            const double v = x[i * p + j];
            w->xt[j * mp + i] = v;
            bad |= here & !(fabs(v) <= DBL_MAX);
        }
    }
    for (int64_t i = m; i < mp; ++i) { /* the padding: absent, all zero */
        PRESENT(w)[i] = Y(w)[i] = 0;
        for (int64_t j = 0; j < p; ++j) w->xt[j * mp + i] = 0;
    }
    *n = count;
    return !bad;
}

/* r = y - X beta for all mp points. */
static inline void residuals(const workspace *w, const double *y, const double *beta, double *r)
{
    for (int64_t i = 0; i < w->mp; i += 8) {
        v8d acc = *(const v8d *)(y + i);
        for (int64_t j = 0; j < w->p; ++j) acc -= beta[j] * *(const v8d *)(w->xt + j * w->mp + i);
        *(v8d *)(r + i) = acc;
    }
}

/* sum_i u_i x_ij x_ik into g (p x p, both triangles). */
static inline void weighted_gram(const workspace *w, const double *u, double *g)
{
    const int64_t p = w->p, mp = w->mp;
    for (int64_t j = 0; j < p; ++j)
        for (int64_t k = j; k < p; ++k) {
            const double *xj = w->xt + j * mp, *xk = w->xt + k * mp;
            v8d s0 = {0}, s1 = {0};
            int64_t i = 0;
            for (; i + 16 <= mp; i += 16) {
                s0 += *(const v8d *)(u + i) * *(const v8d *)(xj + i) * *(const v8d *)(xk + i);
                s1 += *(const v8d *)(u + i + 8) * *(const v8d *)(xj + i + 8) * *(const v8d *)(xk + i + 8);
            }
            if (i < mp) s0 += *(const v8d *)(u + i) * *(const v8d *)(xj + i) * *(const v8d *)(xk + i);
            g[j * p + k] = g[k * p + j] = lane_sum(s0 + s1);
        }
}

/* sum_i u_i x_ij x_ik and sum_i v_i x_ij x_ik into gu and gv (p x p, both
 * triangles), for two weight vectors u, v in one pass over each pair. */
static inline void weighted_grams(const workspace *w, const double *u, const double *v, double *gu, double *gv)
{
    const int64_t p = w->p, mp = w->mp;
    for (int64_t j = 0; j < p; ++j)
        for (int64_t k = j; k < p; ++k) {
            const double *xj = w->xt + j * mp, *xk = w->xt + k * mp;
            v8d su = {0}, sv = {0};
            for (int64_t i = 0; i < mp; i += 8) {
                const v8d product = *(const v8d *)(xj + i) * *(const v8d *)(xk + i);
                su += *(const v8d *)(u + i) * product;
                sv += *(const v8d *)(v + i) * product;
            }
            gu[j * p + k] = gu[k * p + j] = lane_sum(su);
            gv[j * p + k] = gv[k * p + j] = lane_sum(sv);
        }
}

/* sum_i u_i x_ij into b (p). */
static inline void project(const workspace *w, const double *u, double *b)
{
    for (int64_t j = 0; j < w->p; ++j) {
        const double *xj = w->xt + j * w->mp;
        v8d acc = {0};
        for (int64_t i = 0; i < w->mp; i += 8) acc += *(const v8d *)(u + i) * *(const v8d *)(xj + i);
        b[j] = lane_sum(acc);
    }
}

/* Solve G z = b for symmetric positive definite G (p x p) by Cholesky; z = 0
 * where a pivot is not positive (or nan), as lossfn.fit._wls.solve_spd (and
 * LAPACK's potrf test). L is scratch. */
static inline void solve_spd(const double *g, const double *b, int64_t p, double *L, double *z)
{
    for (int64_t j = 0; j < p; ++j) {
        double d = g[j * p + j];
        for (int64_t k = 0; k < j; ++k) d -= L[j * p + k] * L[j * p + k];
        if (!(d > 0)) {
            for (int64_t k = 0; k < p; ++k) z[k] = 0;
            return;
        }
        L[j * p + j] = sqrt(d);
        for (int64_t i = j + 1; i < p; ++i) {
            double v = g[i * p + j];
            for (int64_t k = 0; k < j; ++k) v -= L[i * p + k] * L[j * p + k];
            L[i * p + j] = v / L[j * p + j];
        }
    }
    for (int64_t i = 0; i < p; ++i) { /* L v = b */
        double v = b[i];
        for (int64_t k = 0; k < i; ++k) v -= L[i * p + k] * z[k];
        z[i] = v / L[i * p + i];
    }
    for (int64_t i = p - 1; i >= 0; --i) { /* L^T z = v */
        double v = z[i];
        for (int64_t k = i + 1; k < p; ++k) v -= L[k * p + i] * z[k];
        z[i] = v / L[i * p + i];
    }
}

/* lossfn.fit._prepare.independent_rows for one dataset: p passes of greedy
 * Gram-Schmidt over the rows, each taking the present row of least priority
 * (the first, without priorities) among those that keep more than 1% of their
 * squared norm outside the span of the rows taken (else the row that keeps
 * most). The design has full rank iff every pick keeps more than 1000 p eps of
 * it; returns that. priority (m) may be NULL; picks (p) receives the rows
 * taken, if not NULL. */
static inline int independent_rows(workspace *w, double eps, double tiny, const double *priority,
                                   int64_t *picks)
{
    const int64_t p = w->p, mp = w->mp;
    double *norm2 = NORM2(w), *projected = PROJECTED(w);
    double *basis = w->factor, q[PMAX]; /* the factor is free until the fit starts */
    for (int64_t i = 0; i < mp; i += 8) {
        v8d s = {0};
        for (int64_t j = 0; j < p; ++j) s += *(const v8d *)(w->xt + j * mp + i) * *(const v8d *)(w->xt + j * mp + i);
        /* rows that cannot be picked: absent, all zero, or picked already */
        *(v8d *)(norm2 + i) = blend((*(const v8d *)(PRESENT(w) + i) != 0) & (s > 0), s, (v8d){0} - 1.0);
        *(v8d *)(projected + i) = (v8d){0};
    }
    int ok = 1;
    for (int64_t pass = 0; pass < p; ++pass) {
        int64_t pick = -1, best = -1;
        double best_kept = -INFINITY;
        for (int64_t i = 0; i < w->m; ++i) {
            const double kept = norm2[i] > 0 ? 1 - projected[i] / norm2[i] : -1;
            if (kept > 1e-2 && (pick < 0 || (priority && priority[i] < priority[pick]))) {
                pick = i;
                if (!priority) break; /* the first one */
            }
            if (kept > best_kept || best < 0) best_kept = kept, best = i;
        }
        if (pick < 0) pick = best;
        if (picks) picks[pass] = pick;
        const double kept = norm2[pick] > 0 ? 1 - projected[pick] / norm2[pick] : -1;
        ok &= kept > 1000 * (double)p * eps;
        norm2[pick] = -1;
        for (int64_t j = 0; j < p; ++j) q[j] = w->xt[j * mp + pick];
        for (int sweep = 0; sweep < 2; ++sweep) /* one sweep loses orthogonality; two suffice */
            for (int64_t b = 0; b < pass; ++b) {
                double dot = 0;
                for (int64_t j = 0; j < p; ++j) dot += q[j] * basis[b * p + j];
                for (int64_t j = 0; j < p; ++j) q[j] -= dot * basis[b * p + j];
            }
        double norm = 0;
        for (int64_t j = 0; j < p; ++j) norm += q[j] * q[j];
        norm = sqrt(norm);
        norm = norm > tiny ? norm : tiny;
        for (int64_t j = 0; j < p; ++j) basis[pass * p + j] = q[j] / norm;
        for (int64_t i = 0; i < mp; i += 8) {
            v8d c = {0};
            for (int64_t j = 0; j < p; ++j) c += basis[pass * p + j] * *(const v8d *)(w->xt + j * mp + i);
            *(v8d *)(projected + i) += c * c;
        }
    }
    return ok;
}

#endif
