/*
 * wsfan: an independent fan-out load generator, written apart from shardcast-bench to check its
 * figures (the harness was once 3x off on the same peer). One thread, epoll with large batches,
 * no WebSocket library: N subscribers join one Phoenix V2 topic, one publisher pushes
 * `broadcast` events carrying a CLOCK_MONOTONIC timestamp at a fixed rate, every subscriber
 * records publish-to-delivery latency. Prints p50/p90/p99/max over all deliveries and its own
 * CPU use.
 *
 *   cc -O2 -o wsfan tools/loadgen/wsfan.c
 *   wsfan HOST PORT SUBSCRIBERS PUBLISHES_PER_SEC SECONDS [TOPIC]
 */
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
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)
#define MAX_US 10000000 /* latency histogram: 1 us buckets up to 10 s */

struct conn {
    int fd;
    size_t len;
    unsigned char *buf;
};

static uint64_t *hist;
static uint64_t samples, overflow;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            die("write");
        }
        c += w;
        n -= (size_t)w;
    }
}

/* A masked (zero key) client text frame. */
static size_t frame(unsigned char *out, const char *text, size_t n) {
    size_t h = 0;
    out[h++] = 0x81;
    if (n < 126) {
        out[h++] = 0x80 | (unsigned char)n;
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (unsigned char)(n >> 8);
        out[h++] = (unsigned char)n;
    }
    memset(out + h, 0, 4);
    h += 4;
    memcpy(out + h, text, n);
    return h + n;
}

/* Blocking connect, upgrade and join; the socket is non-blocking afterwards. */
static int open_subscriber(struct sockaddr_in *addr, int i, const char *topic) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001 + (uint32_t)(i % 8)); /* 127.0.0.1-8: more ports */
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)addr, sizeof *addr) < 0) die("connect");
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n");
    write_all(fd, req, (size_t)n);
    char resp[4096];
    size_t got = 0;
    while (got < 4 || !memmem(resp, got, "\r\n\r\n", 4)) {
        ssize_t r = read(fd, resp + got, sizeof resp - got);
        if (r <= 0) die("upgrade");
        got += (size_t)r;
    }
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "upgrade refused\n");
        exit(1);
    }
    char join[256];
    unsigned char out[300];
    n = snprintf(join, sizeof join, "[\"1\",\"j\",\"%s\",\"phx_join\",{}]", topic);
    write_all(fd, out, frame(out, join, (size_t)n));
    /* Wait for the join reply (any frame mentioning phx_reply). */
    got = 0;
    while (!memmem(resp, got, "phx_reply", 9)) {
        ssize_t r = read(fd, resp + got, sizeof resp - got);
        if (r <= 0) die("join");
        got += (size_t)r;
    }
    /* Bytes after the reply head are frames for later; the join reply was the last of them. */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
    return fd;
}

/* Parses complete server frames; records the latency of every broadcast carrying "t":. */
static void consume(struct conn *c, uint64_t now) {
    size_t pos = 0;
    for (;;) {
        size_t avail = c->len - pos;
        if (avail < 2) break;
        unsigned char *f = c->buf + pos;
        size_t h = 2, n = f[1] & 0x7f;
        if (n == 126) {
            if (avail < 4) break;
            n = ((size_t)f[2] << 8) | f[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10) break;
            n = 0;
            for (int k = 2; k < 10; k++) n = (n << 8) | f[k];
            h = 10;
        }
        if (avail < h + n) break;
        unsigned char *payload = f + h;
        unsigned char *t = memmem(payload, n, "\"t\":", 4);
        if (t) {
            uint64_t sent = strtoull((char *)t + 4, NULL, 10);
            uint64_t us = now > sent ? (now - sent) / 1000 : 0;
            if (us >= MAX_US) overflow++;
            else hist[us]++;
            samples++;
        }
        pos += h + n;
    }
    memmove(c->buf, c->buf + pos, c->len - pos);
    c->len -= pos;
}

static uint64_t percentile(double q) {
    uint64_t want = (uint64_t)(q * (double)samples), seen = 0;
    for (uint64_t us = 0; us < MAX_US; us++) {
        seen += hist[us];
        if (seen > want) return us;
    }
    return MAX_US;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT SUBSCRIBERS PUBLISHES_PER_SEC SECONDS [TOPIC]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int subs = atoi(argv[3]);
    double rate = atof(argv[4]), secs = atof(argv[5]);
    const char *topic = argc > 6 ? argv[6] : "echo:wsfan";
    hist = calloc(MAX_US, sizeof *hist);
    struct conn *conns = calloc((size_t)subs + 1, sizeof *conns);
    int ep = epoll_create1(0);
    for (int i = 0; i <= subs; i++) {
        conns[i].fd = open_subscriber(&addr, i, topic);
        conns[i].buf = malloc(BUF);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    }
    /* conns[subs] publishes (and, joined too, receives its own broadcasts: not counted). */
    int pub = conns[subs].fd;
    struct epoll_event evs[1024];
    unsigned char out[64 * 1024];
    char text[256];
    uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), sent = 0;
    double cpu0 = cpu_seconds();
    uint64_t expected_until = end + 3000000000ull;
    for (;;) {
        uint64_t now = now_ns();
        if (now < end) {
            uint64_t due = (uint64_t)((double)(now - start) / 1e9 * rate);
            size_t o = 0;
            while (sent < due && o + 300 < sizeof out) {
                int n = snprintf(text, sizeof text,
                                 "[\"1\",\"p\",\"%s\",\"broadcast\",{\"t\":%llu,\"p\":\"xxxxxxxx\"}]", topic,
                                 (unsigned long long)now_ns());
                o += frame(out + o, text, (size_t)n);
                sent++;
            }
            if (o) write_all(pub, out, o); /* blocking-ish: the socket is non-blocking, retried */
        } else if (samples >= sent * (uint64_t)subs || now > expected_until) {
            break;
        }
        int n = epoll_wait(ep, evs, 1024, 1);
        now = now_ns();
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
                if (r > 0) {
                    c->len += (size_t)r;
                    if (c != &conns[subs]) consume(c, now);
                    else c->len = 0; /* the publisher's own copies and replies */
                    if (c->len == BUF) c->len = 0; /* an oversized frame: not ours */
                    continue;
                }
                if (r == 0) {
                    fprintf(stderr, "server closed a connection\n");
                    return 1;
                }
                break; /* EAGAIN */
            }
        }
    }
    double wall = (double)(now_ns() - start) / 1e9, cpu = cpu_seconds() - cpu0;
    printf("wsfan subs=%d rate=%.0f/s sent=%llu delivered=%llu expected=%llu p50=%lluus p90=%lluus "
           "p99=%lluus max=%lluus over10s=%llu cpu(wsfan)=%.1f%%\n",
           subs, rate, (unsigned long long)sent, (unsigned long long)samples,
           (unsigned long long)(sent * (uint64_t)subs), (unsigned long long)percentile(0.5),
           (unsigned long long)percentile(0.9), (unsigned long long)percentile(0.99),
           (unsigned long long)percentile(0.999999), (unsigned long long)overflow, cpu / wall * 100.0);
    return 0;
}
