/* The Gram matrices of centred [X y] (kernels.c), row by row, for callers in
 * other files: ols.c makes the fit.ols record of each group of 8 rows right
 * after their Gram matrices, while they are in cache. */
#ifndef LOSSFN_GRAM_H
#define LOSSFN_GRAM_H

#include <math.h>
#include <stdint.h>

#define KMAX 64         /* most columns of [X y] */
#define CHUNK 256       /* points centred into the scratch at a time */
#define COLUMNS_MAX 5   /* most columns of the column kernels (points in the lanes) */

/* The longest run of additions into one sum (one lane of one accumulator)
 * in the Gram matrix of n points and k columns: a chunk's points, or an
 * eighth of them where a vector holds 8 points of a column. Its rounding,
 * about sqrt(run) eps relative, bounds what one pass can keep (ols.c). */
static inline double gram_run(int64_t k, double n)
{
    const double run = n < CHUNK ? n : CHUNK;
    return k <= COLUMNS_MAX ? (run + 7) / 8 : run;
}

/* Rows r0 .. r1 - 1 of a batch: x (rows, m, d) with rows x_row values apart,
 * y (rows, m), mask (rows, m) or NULL; means (rows, k) computed, or given
 * (means_given) with an optional transform (rows, k, k); out (rows, k, k).
 * See lossfn_centred_gram. */
typedef struct {
    int is_double;
    const void *x, *y;
    const uint8_t *mask;
    int64_t x_row, y_row, mask_row, r0, r1, m, d;
    int means_given;
    const double *transform;
    double *means, *out;
} gram_job;

/* Zeroed scratch for gram_rows with k = d + 1 columns, or NULL (out of memory); free() it. */
__attribute__((visibility("hidden"))) double *gram_scratch(int64_t k);

/* The Gram matrices (and computed means) of rows a .. b - 1 of the job; rows
 * past b up to the job's r1 may be fetched into the cache meanwhile. */
__attribute__((visibility("hidden"))) void gram_rows(const gram_job *j, int64_t a, int64_t b,
                                                     double *scratch);

#endif
