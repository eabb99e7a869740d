/* The fidelity benchmark's test server: keeps a token schedule for thousands of streams.
 *
 * bench/bench_fidelity.py needs a server that answers every streamed chat request with its
 * first token `ttft` seconds after the request arrived, then one token every 1/tps seconds,
 * and that is never itself late: otherwise no client can measure it right. The Python server on
 * one asyncio loop (tests/fixtures/async_server.py) ran 522 ms late (p99) at 1,024 streams while
 * the clients shared its two cores; this one needs less CPU per token (11 against 17 us, both
 * mostly the send per token) and wakes on a nanosecond timer: one thread, epoll, non-blocking
 * sockets, one binary min-heap of due times for every stream, a timerfd armed at the earliest.
 *
 * It speaks only what the benchmark sends (HTTP/1.1, keep-alive):
 *   POST /v1/chat/completions  -> 200 text/event-stream, chunked: the model's token events on
 *                                 schedule, then its tail (finish, usage, [DONE], last chunk)
 *   GET  /v1/models            -> the listing
 *   GET  /__stats, /__reset    -> its own lateness (reset clears it first), as JSON:
 *                                 {"tokens", "late_p50_ms", "late_p99_ms", "late_max_ms",
 *                                  "requests"}, the keys of tests/fixtures/async_server.py
 * The bytes it sends are not built here: the Python helper (bench/fidelity_server.py) writes
 * them with tests/fixtures/async_server.py's own build_chunks into a script file, so both
 * servers put exactly the same bytes on the wire. The request's "model" picks a model of the
 * script (unknown names get the first).
 *
 * Lateness: for every token, (time it was written) - (time it was due), as the Python server
 * counts it. Token i of a reply is due at received + ttft + i / tps (no drift).
 *
 * Usage: fidelity_server --script FILE [--port 0] [--ttft 0.2] [--tps 50]
 * Prints "READY http://127.0.0.1:PORT" once it listens.
 *
 * Script file: "ATOMFID1\n", then per model "model NAME NTOKENS\n" followed by NTOKENS times
 * "LEN\n" + LEN bytes, then "tail LEN\n" + LEN bytes; finally "listing LEN\n" + LEN bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_MODELS 8
#define MAX_HEAD 65536

typedef struct {
    char name[64];
    int ntokens;
    char **tok;
    size_t *tok_len;
    char *tail;
    size_t tail_len;
} model_t;

typedef struct {
    int fd;
    uint32_t gen;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int want_out;   /* EPOLLOUT registered */
    int streaming;  /* a reply is on its schedule */
    int model;
    int sent;
    int64_t start_ns;
} conn_t;

typedef struct {
    int64_t due;
    int fd;
    uint32_t gen;
} entry_t;

static model_t models[MAX_MODELS];
static int nmodels;
static char *listing;
static size_t listing_len;
static int64_t ttft_ns = 200000000;
static double tps = 50.0;

static conn_t **conns;
static int nconns_cap;
static uint32_t gen_counter;
static int ep;

static entry_t *heap;
static size_t heap_len, heap_cap;

static int64_t *late;
static size_t late_len, late_cap;
static long requests;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) die("realloc");
    return q;
}

/* -- the schedule ------------------------------------------------------------------------- */

static void heap_push(int64_t due, int fd, uint32_t gen) {
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = xrealloc(heap, heap_cap * sizeof *heap);
    }
    size_t i = heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent].due <= due) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i].due = due;
    heap[i].fd = fd;
    heap[i].gen = gen;
}

static entry_t heap_pop(void) {
    entry_t top = heap[0];
    entry_t last = heap[--heap_len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_len) break;
        if (child + 1 < heap_len && heap[child + 1].due < heap[child].due) child++;
        if (last.due <= heap[child].due) break;
        heap[i] = heap[child];
        i = child;
    }
    if (heap_len) heap[i] = last;
    return top;
}

static void record_late(int64_t ns) {
    if (late_len == late_cap) {
        late_cap = late_cap ? late_cap * 2 : 65536;
        late = xrealloc(late, late_cap * sizeof *late);
    }
    late[late_len++] = ns;
}

static int64_t due_of(conn_t *c) {
    return c->start_ns + ttft_ns + (int64_t)((double)c->sent * 1e9 / tps);
}

/* -- connections -------------------------------------------------------------------------- */

static void conn_close(conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->in);
    free(c->out);
    free(c);
}

static void set_out_interest(conn_t *c, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.fd = c->fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Writes what is pending, then as much of buf as the socket takes; keeps the rest.
 * Returns -1 when the connection is gone (the caller must not use c afterwards). */
static int conn_write(conn_t *c, const char *buf, size_t len) {
    if (c->out_len > c->out_off) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(c);
            return -1;
        }
        if (n > 0) c->out_off += (size_t)n;
        if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    }
    size_t done = 0;
    if (c->out_len == 0 && len) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(c);
            return -1;
        }
        if (n > 0) done = (size_t)n;
    }
    if (done < len) {
        size_t rest = len - done;
        if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
        if (c->out_len + rest > c->out_cap) {
            c->out_cap = (c->out_len + rest) * 2;
            c->out = xrealloc(c->out, c->out_cap);
        }
        memcpy(c->out + c->out_len, buf + done, rest);
        c->out_len += rest;
    }
    set_out_interest(c, c->out_len > c->out_off);
    return 0;
}

static int reply(conn_t *c, const char *status, const char *ctype, const char *body,
                 size_t len) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n\r\n", status,
                     ctype, len);
    if (conn_write(c, head, (size_t)n) < 0) return -1;
    return len ? conn_write(c, body, len) : 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int stats_reply(conn_t *c, int reset) {
    char body[256];
    int n;
    if (reset) {
        late_len = 0;
        requests = 0;
    }
    if (late_len == 0) {
        n = snprintf(body, sizeof body, "{\"tokens\":0}");
    } else {
        qsort(late, late_len, sizeof *late, cmp_i64);
#define PICK(q) ((double)late[(size_t)((q) * late_len) < late_len ? (size_t)((q) * late_len) \
                                                                     : late_len - 1] / 1e6)
        n = snprintf(body, sizeof body,
                     "{\"tokens\":%zu,\"late_p50_ms\":%.2f,\"late_p99_ms\":%.2f,"
                     "\"late_max_ms\":%.2f,\"requests\":%ld}",
                     late_len, PICK(0.5), PICK(0.99), (double)late[late_len - 1] / 1e6,
                     requests);
#undef PICK
    }
    return reply(c, "200 OK", "application/json", body, (size_t)n);
}

static int pick_model(const char *body, size_t len) {
    /* the value of "model" in a JSON body the benchmark wrote: "model": "NAME" */
    const char *end = body + len;
    const char *p = memmem(body, len, "\"model\"", 7);
    if (!p) return 0;
    p += 7;
    while (p < end && (*p == ' ' || *p == ':' || *p == '\t')) p++;
    if (p >= end || *p != '"') return 0;
    const char *start = ++p;
    while (p < end && *p != '"') p++;
    size_t n = (size_t)(p - start);
    for (int i = 0; i < nmodels; i++)
        if (strlen(models[i].name) == n && memcmp(models[i].name, start, n) == 0) return i;
    return 0;
}

static const char SSE_HEAD[] =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    "transfer-encoding: chunked\r\n\r\n";

/* Handles every complete request in the input buffer while no reply is streaming.
 * Returns -1 when the connection is gone. */
static int serve_requests(conn_t *c) {
    while (!c->streaming) {
        char *head_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!head_end) {
            if (c->in_len > MAX_HEAD) {
                conn_close(c);
                return -1;
            }
            return 0;
        }
        size_t head_len = (size_t)(head_end - c->in) + 4;
        size_t content_length = 0;
        /* headers: find content-length, case-insensitively */
        for (char *line = memchr(c->in, '\n', head_len); line && line < head_end;
             line = memchr(line + 1, '\n', (size_t)(head_end - line))) {
            if (strncasecmp(line + 1, "content-length:", 15) == 0)
                content_length = strtoul(line + 16, NULL, 10);
        }
        if (c->in_len < head_len + content_length) return 0;
        char *body = c->in + head_len;
        int rc;
        int is_get = strncmp(c->in, "GET ", 4) == 0, is_post = strncmp(c->in, "POST ", 5) == 0;
        const char *path = c->in + (is_get ? 4 : is_post ? 5 : 0);
        if (strncmp(path, "/__stats", 8) == 0 || strncmp(path, "/__reset", 8) == 0) {
            rc = stats_reply(c, path[3] == 'r');
        } else if (is_get && strncmp(path, "/v1/models", 10) == 0) {
            rc = reply(c, "200 OK", "application/json", listing, listing_len);
        } else if (is_post && strncmp(path, "/v1/chat/completions", 20) == 0) {
            c->model = pick_model(body, content_length);
            c->start_ns = now_ns();
            c->sent = 0;
            c->streaming = 1;
            requests++;
            rc = conn_write(c, SSE_HEAD, sizeof SSE_HEAD - 1);
            if (rc == 0) heap_push(due_of(c), c->fd, c->gen);
        } else {
            rc = reply(c, "404 Not Found", "text/plain", "", 0);
        }
        if (rc < 0) return -1;
        size_t used = head_len + content_length;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
    return 0;
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 32768;
            c->in = xrealloc(c->in, c->in_cap);
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            conn_close(c);  /* the client left (maybe early): its schedule entry goes stale */
            return;
        }
        if (errno == EINTR) continue;
        break;
    }
    serve_requests(c);
}

/* Writes every token that is due; returns nothing, closes what fails. */
static void run_due(void) {
    int64_t now = now_ns();
    while (heap_len && heap[0].due <= now) {
        entry_t e = heap_pop();
        conn_t *c = e.fd < nconns_cap ? conns[e.fd] : NULL;
        if (!c || c->gen != e.gen || !c->streaming) continue;  /* closed or reused */
        now = now_ns();
        record_late(now - e.due);
        model_t *m = &models[c->model];
        if (conn_write(c, m->tok[c->sent], m->tok_len[c->sent]) < 0) continue;
        c->sent++;
        if (c->sent < m->ntokens) {
            heap_push(due_of(c), c->fd, c->gen);
            continue;
        }
        if (conn_write(c, m->tail, m->tail_len) < 0) continue;
        c->streaming = 0;
        serve_requests(c);  /* a request that came while this one streamed */
    }
}

static void arm_timer(int tfd) {
    struct itimerspec its = {0};
    if (heap_len) {
        int64_t due = heap[0].due;
        if (due <= 0) due = 1;
        its.it_value.tv_sec = due / 1000000000LL;
        its.it_value.tv_nsec = due % 1000000000LL;
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

/* -- the script --------------------------------------------------------------------------- */

static char *read_bytes(FILE *f, size_t len) {
    char *buf = malloc(len + 1);
    if (!buf || fread(buf, 1, len, f) != len) die("script: short read");
    buf[len] = 0;
    return buf;
}

static void load_script(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    char magic[16];
    if (!fgets(magic, sizeof magic, f) || strcmp(magic, "ATOMFID1\n") != 0) {
        fprintf(stderr, "%s: not a fidelity script\n", path);
        exit(1);
    }
    char word[16];
    while (fscanf(f, "%15s", word) == 1) {
        if (strcmp(word, "model") == 0) {
            if (nmodels == MAX_MODELS) die("script: too many models");
            model_t *m = &models[nmodels++];
            if (fscanf(f, "%63s %d", m->name, &m->ntokens) != 2 || m->ntokens < 1)
                die("script: model line");
            m->tok = calloc((size_t)m->ntokens, sizeof *m->tok);
            m->tok_len = calloc((size_t)m->ntokens, sizeof *m->tok_len);
            for (int i = 0; i < m->ntokens; i++) {
                if (fscanf(f, "%zu", &m->tok_len[i]) != 1 || fgetc(f) != '\n')
                    die("script: token length");
                m->tok[i] = read_bytes(f, m->tok_len[i]);
            }
            if (fscanf(f, " tail %zu", &m->tail_len) != 1 || fgetc(f) != '\n')
                die("script: tail");
            m->tail = read_bytes(f, m->tail_len);
        } else if (strcmp(word, "listing") == 0) {
            if (fscanf(f, "%zu", &listing_len) != 1 || fgetc(f) != '\n') die("script: listing");
            listing = read_bytes(f, listing_len);
        } else {
            fprintf(stderr, "script: unknown section %s\n", word);
            exit(1);
        }
    }
    fclose(f);
    if (!nmodels || !listing) {
        fprintf(stderr, "script: needs models and a listing\n");
        exit(1);
    }
}

/* -- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    const char *script = NULL;
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--script") == 0) script = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--ttft") == 0) ttft_ns = (int64_t)(atof(argv[i + 1]) * 1e9);
        else if (strcmp(argv[i], "--tps") == 0) tps = atof(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!script || tps <= 0) {
        fprintf(stderr, "usage: %s --script FILE [--port P] [--ttft S] [--tps R]\n", argv[0]);
        return 2;
    }
    load_script(script);
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    nconns_cap = (int)(rl.rlim_cur > 1 << 20 ? 1 << 20 : rl.rlim_cur);
    conns = calloc((size_t)nconns_cap, sizeof *conns);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);

    ep = epoll_create1(0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (ep < 0 || tfd < 0) die("epoll/timerfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    printf("READY http://127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[1024];
    for (;;) {
        int n = epoll_wait(ep, events, 1024, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        /* tokens first: a burst of new connections must not make due tokens late */
        run_due();
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    if (cfd >= nconns_cap) {
                        close(cfd);
                        continue;
                    }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *c = calloc(1, sizeof *c);
                    c->fd = cfd;
                    c->gen = ++gen_counter;
                    conns[cfd] = c;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
            } else if (fd == tfd) {
                uint64_t expirations;
                ssize_t r = read(tfd, &expirations, sizeof expirations);
                (void)r;
            } else {
                conn_t *c = fd < nconns_cap ? conns[fd] : NULL;
                if (!c) continue;
                if (events[i].events & EPOLLOUT) {
                    if (conn_write(c, NULL, 0) < 0) continue;
                }
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
            }
        }
        run_due();
        arm_timer(tfd);
    }
}
