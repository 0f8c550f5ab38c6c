/* What every guest tool shares: a monotonic clock in seconds and a fatal-error exit.
 * Included by the tools of this folder, each built alone with `gcc -static -O2`. */
#ifndef GHOST_GUEST_TOOL_H
#define GHOST_GUEST_TOOL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* perror(what) and exit status 1. */
static inline void die(const char *what) {
    perror(what);
    exit(1);
}

#endif
