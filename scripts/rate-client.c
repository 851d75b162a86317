// A constant-rate HTTP/1.1 load generator for scripts/bench (wrk2's idea, which Debian does not package).
//
//   cc -O2 -o rate-client rate-client.c -lm
//   rate-client HOST PORT RATE SECONDS CONNECTIONS
//
// Request i is due at start + i / RATE, whatever happened to the ones before it; its latency runs from that
// moment to the end of its response, so a proxy that stalls is charged for every request that waited behind
// the stall (no coordinated omission). Each keep-alive connection carries one request at a time; requests
// that are due while every connection is busy wait in order. Prints one line:
//   sent=N errors=N rate=R p50=MS p90=MS p99=MS p999=MS max=MS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER_SIZE 16384

struct connection {
    int fd;
    int busy;
    int64_t due;  // when its current request was due, ns
    char buffer[BUFFER_SIZE];
    size_t length;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int open_connection(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &address.sin_addr);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

// Length of a complete response at the start of the buffer, 0 if it is not complete yet, -1 if malformed.
static long complete_response(const char *buffer, size_t length) {
    const char *end = memmem(buffer, length, "\r\n\r\n", 4);
    if (end == NULL) return 0;
    size_t head = (size_t)(end - buffer) + 4;
    long body = -1;
    const char *line = buffer;
    while (line < end) {
        if (strncasecmp(line, "content-length:", 15) == 0) body = strtol(line + 15, NULL, 10);
        const char *next = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (next == NULL) break;
        line = next + 2;
    }
    if (body < 0) return -1;
    return head + (size_t)body <= length ? (long)(head + (size_t)body) : 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT RATE SECONDS CONNECTIONS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    double rate = atof(argv[3]);
    double seconds = atof(argv[4]);
    int count = atoi(argv[5]);
    char request[256];
    int request_length = snprintf(request, sizeof request, "GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, port);

    int epoll = epoll_create1(0);
    struct connection *connections = calloc((size_t)count, sizeof *connections);
    int *idle = malloc(sizeof(int) * (size_t)count);
    int idle_count = 0;
    for (int i = 0; i < count; i++) {
        connections[i].fd = open_connection(host, port);
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(epoll, EPOLL_CTL_ADD, connections[i].fd, &event);
        idle[idle_count++] = i;
    }
    size_t total = (size_t)(rate * seconds);
    int64_t *latencies = malloc(sizeof(int64_t) * (total + 1));
    size_t sent = 0, answered = 0, errors = 0;
    int64_t start = now_ns();
    int64_t interval = (int64_t)(1e9 / rate);
    int64_t stop = start + (int64_t)(seconds * 1e9) + 5000000000LL;  // 5 s to finish the last ones
    struct epoll_event events[256];

    while (answered + errors < total && now_ns() < stop) {
        int64_t now = now_ns();
        // Send every request that is due, on idle connections, oldest first.
        while (sent < total && start + (int64_t)sent * interval <= now && idle_count > 0) {
            struct connection *c = &connections[idle[--idle_count]];
            c->busy = 1;
            c->due = start + (int64_t)sent * interval;
            c->length = 0;
            if (write(c->fd, request, (size_t)request_length) != request_length) {
                errors++;
                c->busy = 0;
            }
            sent++;
        }
        int64_t next = sent < total ? start + (int64_t)sent * interval - now_ns() : 1000000;
        if (idle_count == 0 || next < 0) next = 1000000;
        struct timespec timeout = {.tv_sec = 0, .tv_nsec = next > 0 ? next : 0};
        int ready = epoll_pwait2(epoll, events, 256, &timeout, NULL);
        for (int e = 0; e < ready; e++) {
            int index = (int)events[e].data.u32;
            struct connection *c = &connections[index];
            ssize_t got = read(c->fd, c->buffer + c->length, BUFFER_SIZE - c->length);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "connection %d closed by the server\n", index);
                return 1;
            }
            c->length += (size_t)got;
            long length = complete_response(c->buffer, c->length);
            if (length == 0) continue;
            if (length < 0 || strncmp(c->buffer, "HTTP/1.1 200", 12) != 0) {
                errors++;
            } else {
                latencies[answered++] = now_ns() - c->due;
            }
            c->busy = 0;
            idle[idle_count++] = index;
        }
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    qsort(latencies, answered, sizeof(int64_t), compare);
#define AT(q) (answered ? (double)latencies[(size_t)((double)(answered - 1) * (q))] / 1e6 : 0.0)
    printf("sent=%zu errors=%zu unanswered=%zu rate=%.0f p50=%.3f p90=%.3f p99=%.3f p999=%.3f max=%.3f\n", sent,
           errors, total - answered - errors, (double)answered / elapsed, AT(0.5),
           AT(0.9), AT(0.99), AT(0.999), AT(1.0));
    return 0;
}
