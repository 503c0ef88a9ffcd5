/* memcpy of the C library it is linked with, per call, by size and by
 * relative alignment of source and destination (scripts/memcpy-bench.sh
 * builds it against glibc and against musl). Not part of the product. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    static const size_t sizes[] = {16, 64, 256, 1024, 4096, 16384, 65536};
    char *src = malloc(1 << 20), *dst = malloc(1 << 20);
    if (!src || !dst) return 1;
    memset(src, 1, 1 << 20);
    memset(dst, 2, 1 << 20);
    /* Through a volatile pointer, so the compiler cannot inline the copy. */
    void *(*volatile cp)(void *, const void *, size_t) = memcpy;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        long iters = (long)(1e9 / (double)(n + 64));
        for (int mis = 0; mis < 2; mis++) {
            /* Aligned: both at multiples of 8. Misaligned: destination 3 bytes
             * past, source 1 byte past (as bytes at any offset of a buffer). */
            double t0 = now();
            for (long k = 0; k < iters; k++)
                cp(dst + mis * 3 + (k & 7) * 8, src + mis + (k & 15) * 8, n);
            double t = now() - t0;
            printf("%zu\t%s\t%.2f\t%.2f\n", n, mis ? "misaligned" : "aligned", t / iters * 1e9,
                   (double)n * iters / t / 1e9);
        }
    }
    return dst[5] == 1 ? 0 : 1;
}
