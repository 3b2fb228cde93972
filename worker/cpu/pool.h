/* pool.h - a small fixed pthread pool for the CPU backend's parallel loops.
 *
 * pool_run hands out task indices 0..n_tasks-1 to the pool's threads and the caller (which works
 * as thread 0) and returns when all are done. Tasks are claimed from an atomic counter, so which
 * thread runs which task varies, but each task computes its own rows the same way: results do
 * not depend on the thread count. Created and run from one thread (the engine thread). */
#ifndef MG_POOL_H
#define MG_POOL_H

#include "status.h"

typedef struct pool pool;
typedef void (*pool_fn)(void *ctx, int task, int thread);

/* n_threads counts the caller: 1 means no extra threads. */
mg_status pool_create(int n_threads, pool **out);
void pool_destroy(pool *p);
int pool_threads(const pool *p);
void pool_run(pool *p, pool_fn fn, void *ctx, int n_tasks);

#endif
