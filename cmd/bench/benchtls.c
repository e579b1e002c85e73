/*
 * ledgerfs-benchtls: the loopback ceiling of a peer link, for tools/bench resync.
 *
 *   ledgerfs-benchtls NODE_DIR [--mib N] [--frame BYTES] [--data BYTES] [--decode]
 *
 * Opens a TLS server and a client on 127.0.0.1 with NODE_DIR's node.crt,
 * node.key and ca.crt (a node made by `ledgerctl init --ca`), through the
 * daemon's own net/tls.c contexts and net/link.c links, and pushes N
 * MiB of EVENTS frames from the accepting side to the dialling side, the
 * direction events flow in the daemon (ship.c sends on the inbound link,
 * receive.c reads on the one it dialled).  Each frame is built as ship.c
 * builds a batch: records of write events (--data bytes of pseudo-random
 * payload each) copied into the link's buffer with proto_put_events_add(),
 * up to --frame bytes (batch_bytes, 1 MiB by default), then link_flush().
 * The receiver takes them with link_recv(), which parses the frame
 * structure; --decode also decodes every record (CRC32C and field checks,
 * as receive.c does before applying).  Nothing is acknowledged and
 * nothing is journaled or applied: what is left is the cost of moving
 * frames through TLS on this machine, which catch-up cannot beat.
 *
 * Prints one line, "result tls bytes=... secs=... mbps=... frames=...
 * records=...", timed on the receiver from the end of the handshake to the
 * last frame.  Errors go to stderr; exit 1 on failure, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "journal/event.h"
#include "net/link.h"
#include "lib/log.h"
#include "net/proto.h"
#include "net/tls.h"

#define MIB	     (1024u * 1024u)
#define TIMEOUT_MS   30000
#define HANDSHAKE_MS 10000
#define BENCH_PATH   "benchtls/file"

struct opts {
	const char *node_dir;
	uint64_t mib;  /* MiB of frames to push */
	size_t frame;  /* target frame size in bytes (batch_bytes) */
	uint32_t data; /* payload bytes per write event */
	int decode;    /* receiver decodes every record */
};

/* The sending side; run on its own thread, like a shipper. */
struct sender {
	const struct opts *o;
	SSL_CTX *ctx;
	int listen_fd;
	uint8_t *record; /* one encoded write event, copied into every batch */
	size_t record_len;
	int err;		/* 0 or the negative errno the thread failed with */
	char why[LINK_WHY_MAX]; /* what failed, for the message */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * One encoded write event with len bytes of pseudo-random payload, into
 * *out (malloc'd; the caller frees it) and *out_len.
 */
static int record_new(uint32_t len, uint8_t **out, size_t *out_len)
{
	struct event ev = {
	    .type = EV_WRITE,
	    .origin = 1,
	    .seq = 1,
	    .hlc = 1,
	    .term = 1,
	    .fid = {.origin = 1, .counter = 1},
	};
	uint64_t x = 0x9e3779b97f4a7c15u;
	uint8_t *data = malloc(len ? len : 1), *rec = NULL;
	size_t need, got;
	int r;

	if (!data)
		return -ENOMEM;
	/* xorshift64: incompressible bytes, as a user's data would be. */
	for (uint32_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		data[i] = (uint8_t)x;
	}
	ev.path = (char *)BENCH_PATH;
	ev.data = data;
	ev.data_len = len;
	need = event_encoded_len(&ev);
	rec = malloc(need);
	if (!rec) {
		r = -ENOMEM;
		goto out;
	}
	r = event_encode(&ev, rec, need, &got);
	if (r < 0)
		goto out;
	*out = rec;
	*out_len = got;
	rec = NULL;
out:
	free(rec);
	free(data);
	return r;
}

/* Append one EVENTS frame of about o->frame bytes to l->out, as ship.c batches. */
static int put_batch(struct sender *s, struct link *l)
{
	struct proto_batch b;
	size_t start = l->out.len;
	int r;

	r = proto_put_events_begin(&l->out, &b);
	if (r < 0)
		return r;
	do {
		r = proto_put_events_add(&l->out, &b, s->record, s->record_len);
		if (r < 0)
			return r;
	} while (l->out.len - start + 4 + s->record_len <= s->o->frame);
	return proto_put_events_end(&l->out, &b);
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct link *l = NULL;
	uint64_t total = s->o->mib * MIB, sent = 0;
	int fd, r;

	fd = accept(s->listen_fd, NULL, NULL);
	if (fd < 0) {
		r = -errno;
		snprintf(s->why, sizeof(s->why), "accept: %s", strerror(errno));
		goto out;
	}
	r = link_accept(fd, s->ctx, HANDSHAKE_MS, &l, s->why, sizeof(s->why));
	if (r < 0)
		goto out;
	while (sent < total) {
		r = put_batch(s, l);
		if (r < 0) {
			snprintf(s->why, sizeof(s->why), "cannot build a frame: %s", strerror(-r));
			goto out;
		}
		sent += l->out.len;
		r = link_flush(l, TIMEOUT_MS);
		if (r < 0) {
			snprintf(s->why, sizeof(s->why), "%s", l->why);
			goto out;
		}
	}
	r = 0;
out:
	link_close(l);
	s->err = r;
	return NULL;
}

/* Decode every record of an EVENTS frame, as receive.c does before applying. */
static int decode_all(const struct proto_events *events, uint64_t *records)
{
	struct proto_events_iter it;
	const uint8_t *rec;
	size_t len;

	proto_events_iter_init(&it, events);
	while (proto_events_next(&it, &rec, &len)) {
		struct event ev;
		const char *why = NULL;
		int r = proto_event_decode(rec, len, &ev, &why);

		if (r < 0) {
			fprintf(stderr, "ledgerfs-benchtls: record refused: %s\n", why);
			return r;
		}
		event_free(&ev);
		(*records)++;
	}
	return 0;
}

/* Receive every frame the sender pushes; print the rate. */
static int receive_all(const struct opts *o, const char *address, SSL_CTX *ctx)
{
	char why[LINK_WHY_MAX];
	struct link *l = NULL;
	uint64_t frames = 0, records = 0, before;
	double t0, secs = 0;
	int r;

	r = link_dial(address, ctx, HANDSHAKE_MS, &l, why, sizeof(why));
	if (r < 0) {
		fprintf(stderr, "ledgerfs-benchtls: dial %s: %s\n", address, why);
		return r;
	}
	before = l->bytes_in;
	t0 = now();
	for (;;) {
		struct proto_msg m;

		r = link_recv(l, TIMEOUT_MS, &m);
		if (r == -ECONNRESET) {
			r = 0; /* the sender closed after its last frame */
			break;
		}
		if (r < 0) {
			fprintf(stderr, "ledgerfs-benchtls: receive: %s\n",
				r == -EAGAIN ? "no frame within the timeout" : l->why);
			goto out;
		}
		if (m.type != PROTO_EVENTS) {
			fprintf(stderr, "ledgerfs-benchtls: unexpected %s frame\n",
				proto_type_name(m.type));
			proto_msg_free(&m);
			r = -EPROTO;
			goto out;
		}
		frames++;
		if (o->decode)
			r = decode_all(&m.events, &records);
		else
			records += m.events.count;
		proto_msg_free(&m);
		if (r < 0)
			goto out;
		secs = now() - t0;
	}
	if (frames == 0) {
		fprintf(stderr, "ledgerfs-benchtls: no frame received\n");
		r = -EIO;
		goto out;
	}
	printf("result tls bytes=%" PRIu64 " secs=%.3f mbps=%.1f frames=%" PRIu64
	       " records=%" PRIu64 " decode=%d\n",
	       l->bytes_in - before, secs, (double)(l->bytes_in - before) / secs / 1e6, frames,
	       records, o->decode);
out:
	link_close(l);
	return r;
}

/* A listening socket on 127.0.0.1, any free port, into *fd and address. */
static int listen_loopback(int *fd, char *address, size_t len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 1) < 0 ||
	    getsockname(s, (struct sockaddr *)&sa, &sl) < 0) {
		int r = -errno;

		close(s);
		return r;
	}
	snprintf(address, len, "127.0.0.1:%u", ntohs(sa.sin_port));
	*fd = s;
	return 0;
}

static int run(const struct opts *o)
{
	struct sender s = {.o = o, .listen_fd = -1};
	SSL_CTX *cctx = NULL;
	char address[64];
	pthread_t thread;
	int r, started = 0;

	if ((r = tls_ctx_new(o->node_dir, 1, &s.ctx)) < 0 ||
	    (r = tls_ctx_new(o->node_dir, 0, &cctx)) < 0) {
		fprintf(stderr, "ledgerfs-benchtls: %s: cannot make TLS contexts: %s\n",
			o->node_dir, strerror(-r));
		goto out;
	}
	r = record_new(o->data, &s.record, &s.record_len);
	if (r < 0) {
		fprintf(stderr, "ledgerfs-benchtls: cannot encode a %u-byte write event: %s\n",
			o->data, strerror(-r));
		goto out;
	}
	if (s.record_len + 4 + PROTO_HEADER_LEN + 4 > o->frame) {
		fprintf(stderr, "ledgerfs-benchtls: --frame %zu is smaller than one record (%zu)\n",
			o->frame, s.record_len);
		r = -EINVAL;
		goto out;
	}
	r = listen_loopback(&s.listen_fd, address, sizeof(address));
	if (r < 0) {
		fprintf(stderr, "ledgerfs-benchtls: listen on 127.0.0.1: %s\n", strerror(-r));
		goto out;
	}
	r = -pthread_create(&thread, NULL, sender_main, &s);
	if (r < 0) {
		fprintf(stderr, "ledgerfs-benchtls: cannot start the sender: %s\n", strerror(-r));
		goto out;
	}
	started = 1;
	r = receive_all(o, address, cctx);
	if (r < 0)
		/* Unblock a sender still in accept() or waiting on a reader that left. */
		shutdown(s.listen_fd, SHUT_RDWR);
out:
	if (started) {
		pthread_join(thread, NULL);
		if (s.err < 0 && r == 0) {
			fprintf(stderr, "ledgerfs-benchtls: sender: %s\n", s.why);
			r = s.err;
		}
	}
	if (s.listen_fd >= 0)
		close(s.listen_fd);
	free(s.record);
	SSL_CTX_free(cctx);
	SSL_CTX_free(s.ctx);
	return r;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ledgerfs-benchtls NODE_DIR [options]\n"
		"\n"
		"Pushes EVENTS frames over a loopback TLS link made with NODE_DIR's node.crt,\n"
		"node.key and ca.crt (ledgerctl init --ca) and prints\n"
		"  result tls bytes=... secs=... mbps=... frames=... records=... decode=0|1\n"
		"\n"
		"options:\n"
		"  --mib N        MiB to push (default 1024)\n"
		"  --frame BYTES  frame size, like [replication] batch_bytes (default 1048576)\n"
		"  --data BYTES   payload of each write event in a frame (default 4096)\n"
		"  --decode       decode every record on the receiving side, as a replica does\n");
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"mib", required_argument, NULL, 'm'},  {"frame", required_argument, NULL, 'f'},
	    {"data", required_argument, NULL, 'd'}, {"decode", no_argument, NULL, 'D'},
	    {"help", no_argument, NULL, 'h'},	    {NULL, 0, NULL, 0},
	};
	struct opts o = {.mib = 1024, .frame = MIB, .data = 4096};
	uint64_t v;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (parse_u64(optarg, 1, 1u << 20, &o.mib) < 0)
				goto bad;
			break;
		case 'f':
			if (parse_u64(optarg, 4096, PROTO_MAX_FRAME, &v) < 0)
				goto bad;
			o.frame = (size_t)v;
			break;
		case 'd':
			if (parse_u64(optarg, 0, 1u << 20, &v) < 0)
				goto bad;
			o.data = (uint32_t)v;
			break;
		case 'D':
			o.decode = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 1) {
		usage(stderr);
		return 2;
	}
	o.node_dir = argv[optind];
	log_init("ledgerfs-benchtls", NULL);
	return run(&o) < 0 ? 1 : (fflush(stdout) == 0 ? 0 : 1);
bad:
	fprintf(stderr, "ledgerfs-benchtls: bad value '%s' for --%s\n", optarg,
		longopts[c == 'm'   ? 0
			 : c == 'f' ? 1
				    : 2]
		    .name);
	return 2;
}
