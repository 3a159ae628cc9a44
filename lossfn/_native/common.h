/* What the native kernels share: vectors of 8 doubles and fanning rows out
 * over threads. Included by kernels.c, and by huber.c and lad.c through
 * robust.h; compiled into one library by lossfn._native._build. */
#ifndef LOSSFN_COMMON_H
#define LOSSFN_COMMON_H

#include <float.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 256

/* Vectors of 8 doubles through GCC/Clang vector extensions: the compiler maps
 * them to AVX-512, AVX2 or SSE as the CPU has them. */
typedef double v8d __attribute__((vector_size(64), aligned(64)));
typedef int64_t v8di __attribute__((vector_size(64), aligned(64)));
typedef double v8du __attribute__((vector_size(64), aligned(8)));

/* 8 consecutive values as doubles (unaligned). */
static inline v8d load8_f64(const double *p) { return *(const v8du *)p; }
#ifdef __AVX512F__
#include <immintrin.h>
/* One vcvtps2pd: GCC lowers __builtin_convertvector(v8f -> v8d) to two
 * halves and an insert, which made this load the hot spot of float32 fits. */
static inline v8d load8_f32(const float *p) { return (v8d)_mm512_cvtps_pd(_mm256_loadu_ps(p)); }
#else
static inline v8d load8_f32(const float *p)
{
    v8d v; /* a loop the compiler vectorizes (no __builtin_convertvector: GCC >= 9 only) */
    for (int l = 0; l < 8; ++l) v[l] = p[l];
    return v;
}
#endif

/* All ones in the 8 lanes whose mask byte is set. */
static inline v8di kept_lanes(const uint8_t *mask)
{
    v8di k;
    for (int l = 0; l < 8; ++l) k[l] = mask[l] ? -1 : 0;
    return k;
}

/* v where the lanes' bits are all ones, +0.0 where they are 0. */
static inline v8d keep(v8d v, v8di lanes) { return (v8d)((v8di)v & lanes); }

/* The sum of the 8 lanes, as a tree: 3 additions deep, not a chain of 8. */
static inline double lane_sum(v8d v)
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/* v rounded to the caller's dtype (float32 unless is_double). */
static inline double in_dtype(int is_double, double v) { return is_double ? v : (double)(float)v; }

/* Threads for `rows` datasets: at most `threads`, MAX_THREADS and `rows`, at least 1. */
static int thread_count(int threads, int64_t rows)
{
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > rows) threads = (int)rows;
    return threads < 1 ? 1 : threads;
}

/* Rows [r0, r1) of `rows` for thread t of `threads`. */
static inline void thread_share(int64_t rows, int threads, int t, int64_t *r0, int64_t *r1)
{
    const int64_t share = (rows + threads - 1) / threads;
    *r0 = t * share < rows ? t * share : rows;
    *r1 = *r0 + share < rows ? *r0 + share : rows;
}

/* Runs worker(jobs + t * size) for t < count: count - 1 new threads and the
 * caller's (which also runs any job whose thread failed to start). Returns 1
 * if a worker returned non-NULL (failed), else 0. */
static int fan_out(void *(*worker)(void *), char *jobs, size_t size, int count)
{
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS], failed = 0;
    for (int t = 0; t < count; ++t)
        started[t] = t > 0 && pthread_create(&ids[t], NULL, worker, jobs + t * size) == 0;
    for (int t = 0; t < count; ++t)
        if (!started[t]) failed |= worker(jobs + t * size) != NULL;
    for (int t = 1; t < count; ++t) {
        void *status = NULL;
        if (started[t]) pthread_join(ids[t], &status);
        failed |= status != NULL;
    }
    return failed;
}


#endif
