/* mono.h - condition variables on the monotonic clock, and deadlines for them.
 *
 * Waits with a timeout use CLOCK_MONOTONIC so that a wall-clock step (NTP) neither cuts a wait
 * short nor stretches it. Shared by the runtime's threads (etcd, discovery, bus). */
#ifndef MG_MONO_H
#define MG_MONO_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialise cv to time its waits on CLOCK_MONOTONIC. */
static inline void mono_cond_init(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* The monotonic time ms from now, for pthread_cond_timedwait on a mono_cond_init cv. */
static inline void mono_deadline(struct timespec *ts, int64_t ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

#endif
