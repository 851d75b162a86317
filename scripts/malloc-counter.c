// Counts heap allocations of the process it is preloaded into, for scripts/bench.
//
//   gcc -O2 -shared -fPIC -o malloc-counter.so malloc-counter.c
//   HEADWAY_MALLOC_COUNTER=/dev/shm/counter LD_PRELOAD=./malloc-counter.so headway ...
//
// Every malloc, calloc, realloc and aligned allocation adds one to a 64-bit counter kept in the first eight
// bytes of the file named by HEADWAY_MALLOC_COUNTER (created, shared, so another process reads it while this
// one runs). The allocations themselves go to glibc's own functions.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Atomic uint64_t fallback;
static _Atomic uint64_t *counter = &fallback;

__attribute__((constructor)) static void open_counter(void) {
    const char *path = getenv("HEADWAY_MALLOC_COUNTER");
    if (path == NULL) return;
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, sizeof(uint64_t)) != 0) return;
    void *shared = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (shared != MAP_FAILED) counter = shared;
}

static inline void count(void) { atomic_fetch_add_explicit(counter, 1, memory_order_relaxed); }

void *malloc(size_t size) {
    count();
    return __libc_malloc(size);
}

void *calloc(size_t count_, size_t size) {
    count();
    return __libc_calloc(count_, size);
}

void *realloc(void *pointer, size_t size) {
    count();
    return __libc_realloc(pointer, size);
}

void *memalign(size_t alignment, size_t size) {
    count();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    count();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    count();
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return 12;  // ENOMEM
    *result = pointer;
    return 0;
}
