/*
 * cmd_rescue.c - "ledgerctl rescue": ship the events a stopped node holds
 * and a live peer lacks, straight from the stopped node's disk.
 *
 * For the day a machine dies holding events nobody else has (a primary
 * whose replicas were down, say): its disk, mounted anywhere, still holds
 * the journal.  That disk may be failing, so rescue writes nothing to it:
 * LevelDB writes even to a database it only reads (log recovery, a new
 * log, compactions), so rescue reads a private copy of the journal taken
 * under $TMPDIR (journal_copy.h: tables hard-linked on the same
 * filesystem, copied across, the value log read where it is), and it
 * never opens the node itself, whose start would replay the unapplied
 * tail into the dead store and void what does not apply there.  The
 * events journaled beyond the applied marks (a crash between journal and
 * store) are shipped as they are: the peer applies them to its healthy
 * store, or refuses the first that does not apply there, which ends the
 * rescue.  It dials the peer over the normal authenticated protocol with a HELLO
 * that says it pushes (PROTO_HELLO_PUSH, net/proto.h), and from the
 * applied vector the peer answers with, ships exactly the events the peer
 * lacks, in EVENTS frames, until every one is acknowledged.  The peer vets
 * them as it vets any peer's events (repl/receive.c): one of a lower term
 * beyond a promotion is refused, which ends the rescue there; such events
 * stay in the stopped node's journal and are kept aside as a tail when
 * that node starts again.
 *
 * Events of several origins go out in the order a history is made in: by
 * term, then by time (hlc), each origin's in seq order, so a promotion
 * reaches the peer after the events before it and before those after it.
 * Events the stopped node keeps aside go out as voids, as its shipper
 * sends them (repl/ship.c).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "journal/journal.h"
#include "journal/journal_copy.h"
#include "journal_arg.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/config.h"
#include "lib/grow.h"
#include "lib/progress.h"
#include "net/hello.h"
#include "net/link.h"
#include "net/tls.h"
#include "node/node.h"

#define RESCUE_DIAL_TIMEOUT_MS	5000
#define RESCUE_HELLO_TIMEOUT_MS 10000
#define RESCUE_SEND_TIMEOUT_MS	60000
/* The peer ACKs after a journal sync; it may be applying a large frame meanwhile. */
#define RESCUE_SILENT_MS 30000
#define RESCUE_PING_MS	 1000
/* A frame holds this many events or bytes at most, as the shipper's defaults. */
#define RESCUE_BATCH_EVENTS 256
#define RESCUE_BATCH_BYTES  (1u << 20)
/* Unacknowledged events and bytes in flight: eight frames, as the shipper's window. */
#define RESCUE_WINDOW_EVENTS (8 * RESCUE_BATCH_EVENTS)
#define RESCUE_WINDOW_BYTES  (8 * RESCUE_BATCH_BYTES)
#define RESCUE_QUEUE	     (RESCUE_WINDOW_EVENTS + RESCUE_BATCH_EVENTS)
#define RESCUE_DRAW_MS	     200

/* What the peer lacks of one origin, and how shipping it goes. */
struct origin_plan {
	uint64_t origin;
	uint64_t have;	  /* the stopped node's applied seq */
	uint64_t peer;	  /* the peer's applied seq, from its HELLO */
	uint64_t trimmed; /* the stopped node no longer holds events up to this */
	uint64_t first;	  /* to ship: first..last; first > last: nothing */
	uint64_t last;
	uint64_t next;	   /* next seq to read */
	uint64_t acked;	   /* highest seq the peer acknowledged */
	struct event head; /* event next - 1, read and not sent yet, if has_head */
	int has_head;
};

/* An event sent and not acknowledged yet, in the order sent. */
struct sent {
	size_t k; /* index into plans */
	uint64_t seq, term;
	size_t bytes;
};

struct rescue {
	const char *dir; /* the stopped node */
	struct config cfg;
	struct journal_copy jc;			 /* the private copy of its journal */
	struct journal *j;			 /* jc's journal */
	uint64_t term;				 /* its term */
	struct node_tail tails[NODE_MAX_FENCES]; /* its kept-aside events */
	unsigned ntails;
	/* The peer. */
	const char *to_node; /* --to-node NODE_DIR, else NULL */
	struct config peer_cfg;
	char address[CONFIG_ADDR_MAX];
	char peer_name[CONFIG_NAME_MAX];
	uint64_t peer_id;
	uint64_t peer_term;
	SSL_CTX *ctx;
	struct link *l;
	/* What to ship. */
	struct origin_plan *plans;
	size_t nplans, plans_cap;
	uint64_t total, acked;
	/* Sent, not acknowledged: a ring of RESCUE_QUEUE entries. */
	struct sent queue[RESCUE_QUEUE];
	size_t qhead, qlen;
	uint64_t qbytes;
	/* How it ended, when the peer refused. */
	unsigned refused;
	char refused_msg[PROTO_MAX_ERROR_MSG + 1];
	/* Progress on a terminal. */
	int tty;
	int64_t started, last_draw;
};

static void rescue_usage(FILE *out)
{
	fputs("usage: ledgerctl rescue DEAD_NODE_DIR (--to HOST:PORT | --to-node NODE_DIR)\n"
	      "\n"
	      "Ship the events a stopped node holds and a running peer lacks, read from the\n"
	      "stopped node's own disk (for example a disk taken from a failed machine).\n"
	      "Nothing is written to DEAD_NODE_DIR: its journal is read from a private\n"
	      "copy under $TMPDIR (hard links on the same filesystem, else a copy of its\n"
	      "tables: TMPDIR needs that room), and events journaled but not applied\n"
	      "before the crash are shipped as they are.  The peer answers with its\n"
	      "applied vector, and exactly\n"
	      "the events it lacks go to it over the replication protocol, in order; it\n"
	      "vets, journals, applies and confirms them as it does any peer's.  Events\n"
	      "of a lower term than the peer's, beyond a promotion, are refused: they stay\n"
	      "in DEAD_NODE_DIR's journal and are kept aside as a tail when that node\n"
	      "starts again (ledgerctl tail-export).  Running it again ships what is\n"
	      "still missing.\n"
	      "\n"
	      "  --to HOST:PORT       the peer's listen address; rescue presents the\n"
	      "                       stopped node's own certificate (DEAD_NODE_DIR/node.crt)\n"
	      "  --to-node NODE_DIR   a peer running on this machine: its address from its\n"
	      "                       configuration, its own certificate to present\n"
	      "  -h, --help           this help\n"
	      "\n"
	      "It prints what it shipped per origin (count and seqs) and a summary line;\n"
	      "on a terminal, a progress bar with rate and time left goes to stderr.\n"
	      "\n"
	      "Exit status: 0 every missing event shipped (or none missing), 1 refused,\n"
	      "partial or failed, 2 usage error.\n",
	      out);
}

/* A node's name for the report: ours, a peer's, or its id. */
static const char *origin_name(const struct rescue *r, uint64_t id, char *buf, size_t len)
{
	unsigned i;

	if (id == r->cfg.node_id)
		return r->cfg.name;
	if (id == r->peer_id && r->peer_name[0])
		return r->peer_name;
	for (i = 0; i < r->cfg.npeers; i++)
		if (r->cfg.peers[i].id == id)
			return r->cfg.peers[i].name;
	snprintf(buf, len, "%016" PRIx64, id);
	return buf;
}

/* The process holding a node's journal, for the refusal: "process 123 (ledgerfs)". */
static void describe_pid(pid_t pid, char *buf, size_t len)
{
	char path[64], comm[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
	}
	if (comm[0])
		snprintf(buf, len, "process %d (%s)", (int)pid, comm);
	else
		snprintf(buf, len, "process %d", (int)pid);
}

/*
 * Is the node in dir running?  A running node holds its journal open, and
 * with it LevelDB's lock.  0 if it is not, 1 if it is (*pid the holder),
 * -1 with a message when that cannot be told.
 */
static int node_running(const char *dir, const char *name, pid_t *pid)
{
	char jdir[PATH_MAX];
	int r;

	if ((size_t)snprintf(jdir, sizeof(jdir), "%s/%s", dir, NODE_JOURNAL_DIR) >= sizeof(jdir)) {
		fprintf(stderr, "ledgerctl: rescue: %s: path too long\n", dir);
		return -1;
	}
	r = journal_lock_holder(jdir, pid);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: rescue: node %s: %s/LOCK: %s\n", name, jdir,
			strerror(-r));
		return -1;
	}
	return r;
}

/* Load NODE_DIR/ledgerfs.conf into cfg.  0, or -1 with a message. */
static int load_config(const char *dir, struct config *cfg)
{
	char path[PATH_MAX], err[1024];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, CONFIG_FILE) >= sizeof(path)) {
		fprintf(stderr, "ledgerctl: rescue: %s: path too long\n", dir);
		return -1;
	}
	if (config_load(path, cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: rescue: %s\n", err);
		return -1;
	}
	return 0;
}

/*
 * The address to dial a node on this machine listening on listen: its
 * host, or loopback for a wildcard.  0, or -1 with a message.
 */
static int local_address(const char *dir, const char *listen, char *out, size_t len)
{
	const char *port = strrchr(listen, ':');
	size_t hlen;

	if (!listen[0] || !port) {
		fprintf(stderr, "ledgerctl: rescue: %s/%s: the node has no listen address\n", dir,
			CONFIG_FILE);
		return -1;
	}
	hlen = (size_t)(port - listen);
	if (hlen == 0 || (hlen == 1 && listen[0] == '*') || !strncmp(listen, "0.0.0.0", hlen))
		snprintf(out, len, "127.0.0.1%s", port);
	else if (hlen == 4 && !strncmp(listen, "[::]", 4))
		snprintf(out, len, "[::1]%s", port);
	else
		snprintf(out, len, "%s", listen);
	return 0;
}

/* The peer given with --to-node: running, of our cluster, another node.  0 or -1. */
static int peer_from_node(struct rescue *r)
{
	pid_t pid = 0;
	int running;

	if (load_config(r->to_node, &r->peer_cfg) < 0)
		return -1;
	if (memcmp(r->peer_cfg.cluster_id, r->cfg.cluster_id, sizeof(r->cfg.cluster_id)) != 0) {
		fprintf(stderr, "ledgerctl: rescue: %s (node %s) is of another cluster than %s\n",
			r->to_node, r->peer_cfg.name, r->dir);
		return -1;
	}
	if (r->peer_cfg.node_id == r->cfg.node_id) {
		fprintf(stderr, "ledgerctl: rescue: %s is node %s itself, the node to rescue\n",
			r->to_node, r->cfg.name);
		return -1;
	}
	running = node_running(r->to_node, r->peer_cfg.name, &pid);
	if (running < 0)
		return -1;
	if (!running) {
		fprintf(stderr, "ledgerctl: rescue: node %s (%s) is not running: start it first\n",
			r->peer_cfg.name, r->to_node);
		return -1;
	}
	snprintf(r->peer_name, sizeof(r->peer_name), "%s", r->peer_cfg.name);
	return local_address(r->to_node, r->peer_cfg.listen, r->address, sizeof(r->address));
}

/* The kept-aside tails of the journal's failover state (node/node.c).  0 or a negative errno. */
static int load_tails(struct rescue *r)
{
	uint8_t *val = NULL;
	size_t len = 0, i;
	int rv;

	rv = journal_meta_get(r->j, JOURNAL_META_TAILS, (void **)&val, &len);
	if (rv == -ENOENT)
		return 0;
	if (rv < 0)
		return rv;
	for (i = 0; i + 32 <= len && r->ntails < NODE_MAX_FENCES; i += 32)
		r->tails[r->ntails++] =
		    (struct node_tail){get_le64(val + i), get_le64(val + i + 8),
				       get_le64(val + i + 16), get_le64(val + i + 24)};
	free(val);
	return 0;
}

/*
 * Open a private copy of the stopped node's journal, writing nothing in
 * its directory: its term and kept-aside tails with it.  0 or -1 with a
 * message.
 */
static int open_node(struct rescue *r)
{
	char path[PATH_MAX];
	pid_t pid = 0;
	int running, rv;

	running = node_running(r->dir, r->cfg.name, &pid);
	if (running < 0)
		return -1;
	if (running) {
		char who[128];

		describe_pid(pid, who, sizeof(who));
		fprintf(stderr,
			"ledgerctl: rescue: node %s (%s) is running: %s holds %s/%s/LOCK; rescue "
			"reads a stopped node's journal, and a running node ships its events "
			"itself\n",
			r->cfg.name, r->dir, who, r->dir, NODE_JOURNAL_DIR);
		return -1;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", r->dir, NODE_JOURNAL_DIR) >=
	    sizeof(path)) {
		fprintf(stderr, "ledgerctl: rescue: %s: path too long\n", r->dir);
		return -1;
	}
	if (journal_arg_open("rescue", r->dir, path, r->cfg.node_id, &r->jc) < 0)
		return -1;
	r->j = r->jc.journal;
	/* Nodes made before roles existed were single primaries of term 1. */
	if (journal_meta_get_u64(r->j, JOURNAL_META_TERM, &r->term) < 0 || r->term == 0)
		r->term = 1;
	rv = load_tails(r);
	if (rv < 0) {
		fprintf(stderr, "ledgerctl: rescue: %s: failover state unreadable: %s\n", path,
			strerror(-rv));
		return -1;
	}
	return 0;
}

/*
 * The highest seq of origin's events journaled in a run right above
 * applied: events a crash left unapplied, which the node's start would
 * replay.  applied when there are none.
 */
static uint64_t journaled_tail(struct journal *j, uint64_t origin, uint64_t applied)
{
	struct event ev;
	const char *why = NULL;
	uint64_t last = applied;

	while (last < UINT64_MAX && journal_get(j, origin, last + 1, 0, &ev, &why) == 0) {
		event_free(&ev);
		last++;
	}
	return last;
}

/* Dial the peer and check who answered.  0 or -1 with a message. */
static int dial(struct rescue *r)
{
	const char *cert_dir = r->to_node ? r->to_node : r->dir;
	const char *reason = NULL;
	char why[LINK_WHY_MAX], name[CONFIG_NAME_MAX] = "";
	uint64_t id = 0;

	if (tls_ctx_new(cert_dir, 0, &r->ctx) < 0) {
		fprintf(stderr, "ledgerctl: rescue: %s: no usable node certificate (%s, %s, %s)\n",
			cert_dir, TLS_NODE_CERT, TLS_NODE_KEY, TLS_CA_CERT);
		return -1;
	}
	if (link_dial(r->address, r->ctx, RESCUE_DIAL_TIMEOUT_MS, &r->l, why, sizeof(why)) < 0) {
		fprintf(stderr, "ledgerctl: rescue: cannot reach %s: %s\n", r->address, why);
		return -1;
	}
	if (tls_peer_node_id(r->l->ssl, &id, &reason) < 0) {
		fprintf(stderr, "ledgerctl: rescue: %s: its certificate: %s\n", r->address, reason);
		return -1;
	}
	if (tls_peer_name(r->l->ssl, name, sizeof(name)) < 0)
		name[0] = '\0';
	if (id == r->cfg.node_id) {
		fprintf(stderr,
			"ledgerctl: rescue: %s answered as node %s itself, the node to "
			"rescue\n",
			r->address, r->cfg.name);
		return -1;
	}
	if (r->to_node && id != r->peer_cfg.node_id) {
		fprintf(stderr,
			"ledgerctl: rescue: %s answered as node %016" PRIx64
			" (%s), not as node %s "
			"of %s\n",
			r->address, id, name[0] ? name : "no name", r->peer_cfg.name, r->to_node);
		return -1;
	}
	r->peer_id = id;
	if (!r->peer_name[0])
		snprintf(r->peer_name, sizeof(r->peer_name), "%s", name[0] ? name : "the peer");
	return 0;
}

/* Add origin to the plan if it is not there.  0 or -ENOMEM. */
static int plan_origin(struct rescue *r, uint64_t origin)
{
	size_t i;
	int rv;

	for (i = 0; i < r->nplans; i++)
		if (r->plans[i].origin == origin)
			return 0;
	rv = grow_array(&r->plans, &r->plans_cap, r->nplans + 1);
	if (rv < 0)
		return rv;
	memset(&r->plans[r->nplans], 0, sizeof(r->plans[0]));
	r->plans[r->nplans++].origin = origin;
	return 0;
}

static int plan_cmp(const void *a, const void *b)
{
	const struct origin_plan *x = a, *y = b;

	return x->origin < y->origin ? -1 : x->origin > y->origin;
}

/*
 * The next origin at or above from that has an event in j, into *origin:
 * 1, 0 when there is none, or a negative errno.  One seek per origin.
 */
static int next_event_origin(struct journal *j, uint64_t from, uint64_t *origin)
{
	struct journal_iter *it = NULL;
	int rv;

	rv = journal_iter_new(j, JOURNAL_EVENTS, from, 0, &it);
	while (rv == 0) {
		rv = journal_iter_next(it, origin, NULL, NULL, NULL, NULL, NULL);
		if (rv != -EBADMSG)
			break;
		/* A malformed key, reported by the iterator and stepped over: fsck's to repair. */
		rv = 0;
	}
	journal_iter_free(it);
	return rv;
}

/*
 * Every origin the stopped node's journal knows - by its events, and by
 * its applied marks (which name origins whose events were all trimmed) -
 * with what it has applied.  0 or -1 with a message.
 */
static int list_origins(struct rescue *r)
{
	struct journal *j = r->j;
	struct journal_iter *it = NULL;
	uint64_t origin = 0;
	size_t i;
	int rv;

	rv = plan_origin(r, r->cfg.node_id);
	while (rv == 0 && (rv = next_event_origin(j, origin + 1, &origin)) > 0) {
		rv = plan_origin(r, origin);
		if (rv == 0 && origin == UINT64_MAX)
			break;
	}
	if (rv == 0)
		rv = journal_iter_new(j, JOURNAL_APPLIED, 0, 0, &it);
	while (rv == 0) {
		rv = journal_iter_next(it, &origin, NULL, NULL, NULL, NULL, NULL);
		if (rv == -EBADMSG)
			rv = 0;
		else if (rv > 0)
			rv = origin ? plan_origin(r, origin) : 0;
		else
			break;
	}
	journal_iter_free(it);
	if (rv < 0) {
		fprintf(stderr, "ledgerctl: rescue: %s/%s: cannot list its origins: %s\n", r->dir,
			NODE_JOURNAL_DIR, strerror(-rv));
		return -1;
	}
	qsort(r->plans, r->nplans, sizeof(r->plans[0]), plan_cmp);
	for (i = 0; i < r->nplans; i++) {
		struct origin_plan *o = &r->plans[i];

		o->have = journaled_tail(j, o->origin, journal_applied(j, o->origin));
		rv = journal_trimmed(j, o->origin, &o->trimmed);
		if (rv < 0) {
			fprintf(stderr, "ledgerctl: rescue: %s/%s: %s\n", r->dir, NODE_JOURNAL_DIR,
				strerror(-rv));
			return -1;
		}
	}
	return 0;
}

/* Our HELLO: it pushes; its vector is the stopped node's, for the peer's log only. */
static int put_hello(struct rescue *r)
{
	struct proto_hello h = {.flags = PROTO_HELLO_PUSH};
	struct evid *vec;
	size_t i, k = 0;
	int rv;

	if (r->nplans > PROTO_MAX_VECTOR)
		return -E2BIG;
	vec = calloc(r->nplans ? r->nplans : 1, sizeof(*vec));
	if (!vec)
		return -ENOMEM;
	for (i = 0; i < r->nplans; i++)
		if (r->plans[i].have)
			vec[k++] = (struct evid){r->plans[i].origin, r->plans[i].have};
	memcpy(h.cluster_id, r->cfg.cluster_id, sizeof(h.cluster_id));
	/* The id the certificate we present carries. */
	h.node_id = r->to_node ? r->peer_cfg.node_id : r->cfg.node_id;
	h.term = r->term;
	h.count = (uint32_t)k;
	h.applied = vec;
	rv = proto_put_hello(&r->l->out, &h);
	free(vec);
	return rv;
}

/*
 * Say we push, and take the peer's HELLO: its term, and per origin what
 * it has applied, which fixes what to ship.  0 or -1 with a message.
 */
static int handshake(struct rescue *r)
{
	struct proto_msg m;
	const char *why = NULL;
	size_t i, k;
	int rv, code;

	rv = put_hello(r);
	if (rv == 0)
		rv = link_flush(r->l, RESCUE_SEND_TIMEOUT_MS);
	if (rv < 0) {
		fprintf(stderr, "ledgerctl: rescue: %s (%s): cannot send HELLO: %s\n", r->peer_name,
			r->address, r->l->why[0] ? r->l->why : strerror(-rv));
		return -1;
	}
	rv = link_recv(r->l, RESCUE_HELLO_TIMEOUT_MS, &m);
	if (rv < 0) {
		/* TLS 1.3: the peer's verdict on our certificate arrives here. */
		fprintf(stderr, "ledgerctl: rescue: %s (%s): %s\n", r->peer_name, r->address,
			rv == -EAGAIN ? "no HELLO from the peer" : r->l->why);
		return -1;
	}
	if (m.type == PROTO_ERROR) {
		fprintf(stderr, "ledgerctl: rescue: %s (%s) refused the rescue: %s: %s\n",
			r->peer_name, r->address, proto_error_name(m.error.code), m.error.msg);
		proto_msg_free(&m);
		return -1;
	}
	code = hello_check(r->cfg.cluster_id, r->peer_id, &m, &why);
	if (code) {
		fprintf(stderr, "ledgerctl: rescue: %s (%s): bad HELLO: %s\n", r->peer_name,
			r->address, why);
		proto_msg_free(&m);
		return -1;
	}
	r->peer_term = m.hello.term;
	for (i = 0; i < r->nplans; i++) {
		struct origin_plan *o = &r->plans[i];

		for (k = 0; k < m.hello.count; k++)
			if (m.hello.applied[k].origin == o->origin)
				o->peer = m.hello.applied[k].seq;
		o->first = o->peer + 1;
		o->last = o->have;
		o->acked = o->peer;
		/* Events the peer lacks that this journal no longer holds: nothing of it goes. */
		if (o->have > o->peer && o->trimmed > o->peer)
			o->last = o->peer;
		o->next = o->first;
		if (o->last >= o->first)
			r->total += o->last - o->first + 1;
	}
	proto_msg_free(&m);
	return 0;
}

/*
 * Read o's next event into o->head, its payload inline; one kept aside
 * here becomes a void, as the shipper sends it.  0 (no head once o is
 * done), or -1 with a message.
 */
static int read_head(struct rescue *r, struct origin_plan *o)
{
	const char *why = NULL;
	uint64_t tail_term = 0;
	unsigned i;
	int rv, aside = 0;

	if (o->has_head || o->next > o->last)
		return 0;
	for (i = 0; i < r->ntails && !aside; i++) {
		aside = r->tails[i].origin == o->origin && o->next >= r->tails[i].first &&
			o->next <= r->tails[i].last;
		tail_term = r->tails[i].term;
	}
	if (aside) {
		o->head = (struct event){
		    .type = EV_VOID, .origin = o->origin, .seq = o->next, .term = tail_term};
	} else {
		rv = journal_get(r->j, o->origin, o->next, 1, &o->head, &why);
		if (rv < 0) {
			fprintf(stderr,
				"ledgerctl: rescue: %s/%s: event %016" PRIx64 ":%" PRIu64
				" unreadable: %s; run fsck.ledgerfs -n %s\n",
				r->dir, NODE_JOURNAL_DIR, o->origin, o->next,
				why ? why : strerror(-rv), r->dir);
			return -1;
		}
		/* journal_get() read a value-log payload into data: it travels inline. */
		if (o->head.flags & EVENT_F_VREF) {
			o->head.flags &= (uint16_t)~EVENT_F_VREF;
			o->head.vref = (struct vref){0};
		}
	}
	o->has_head = 1;
	o->next++;
	return 0;
}

/* The plan whose head goes next: lowest term, then hlc, then origin.  NULL when done. */
static struct origin_plan *next_plan(struct rescue *r)
{
	struct origin_plan *best = NULL;
	size_t i;

	for (i = 0; i < r->nplans; i++) {
		struct origin_plan *o = &r->plans[i];

		if (!o->has_head)
			continue;
		if (!best || o->head.term < best->head.term ||
		    (o->head.term == best->head.term && o->head.hlc < best->head.hlc))
			best = o;
	}
	return best;
}

static int window_open(const struct rescue *r)
{
	return r->qlen < RESCUE_WINDOW_EVENTS && r->qbytes < RESCUE_WINDOW_BYTES;
}

/*
 * Build one EVENTS frame from the heads, in order, and send it.  1 if one
 * was sent, 0 if nothing is left to send, -1 with a message.
 */
static int send_frame(struct rescue *r)
{
	struct proto_batch b;
	struct origin_plan *o;
	uint64_t bytes = 0;
	int rv;

	if (!next_plan(r))
		return 0;
	rv = proto_put_events_begin(&r->l->out, &b);
	while (rv == 0 && b.count < RESCUE_BATCH_EVENTS && bytes < RESCUE_BATCH_BYTES &&
	       r->qlen < RESCUE_QUEUE && (o = next_plan(r))) {
		size_t len = event_encoded_len(&o->head);

		rv = proto_put_events_add_event(&r->l->out, &b, &o->head);
		if (rv == -EMSGSIZE && b.count > 0) {
			rv = 0;
			break;
		}
		if (rv < 0) {
			fprintf(stderr,
				"ledgerctl: rescue: event %016" PRIx64 ":%" PRIu64
				" cannot be sent: %s\n",
				o->origin, o->head.seq, strerror(-rv));
			return -1;
		}
		r->queue[(r->qhead + r->qlen++) % RESCUE_QUEUE] =
		    (struct sent){.k = (size_t)(o - r->plans),
				  .seq = o->head.seq,
				  .term = o->head.term,
				  .bytes = len};
		r->qbytes += len;
		bytes += len;
		event_free(&o->head);
		o->has_head = 0;
		if (read_head(r, o) < 0)
			return -1;
	}
	if (rv == 0)
		rv = proto_put_events_end(&r->l->out, &b);
	if (rv == 0)
		rv = link_flush(r->l, RESCUE_SEND_TIMEOUT_MS);
	if (rv < 0) {
		fprintf(stderr, "ledgerctl: rescue: sending to %s (%s): %s\n", r->peer_name,
			r->address, r->l->why[0] ? r->l->why : strerror(-rv));
		return -1;
	}
	return 1;
}

/* An ACK: the peer holds origin's events up to seq. */
static void take_ack(struct rescue *r, const struct proto_ack *ack)
{
	size_t i;

	for (i = 0; i < r->nplans; i++)
		if (r->plans[i].origin == ack->origin && ack->seq > r->plans[i].acked)
			r->plans[i].acked = ack->seq;
	/* The peer acks every origin at once after a sync: what it covers is a prefix. */
	while (r->qlen) {
		struct sent *s = &r->queue[r->qhead];

		if (r->plans[s->k].acked < s->seq)
			break;
		r->qbytes -= s->bytes;
		r->acked++;
		r->qhead = (r->qhead + 1) % RESCUE_QUEUE;
		r->qlen--;
	}
}

/* The progress bar on stderr (lib/progress.h), on a terminal only; done clears it. */
static void progress(struct rescue *r, int done)
{
	int64_t now = clock_mono_ms();
	char line[256];

	if (!r->tty)
		return;
	if (done) {
		fputs("\r\033[K", stderr);
		return;
	}
	if (now - r->last_draw < RESCUE_DRAW_MS)
		return;
	r->last_draw = now;
	progress_format(line, sizeof(line), r->acked, r->total, (double)(now - r->started) / 1000.0,
			0);
	fprintf(stderr, "\r\033[Krescue: events %s", line);
	fflush(stderr);
}

/* One frame from the peer while shipping.  0, 1 when the peer refused, -1 with a message. */
static int take_frame(struct rescue *r, const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_ACK:
		take_ack(r, &m->ack);
		return 0;
	case PROTO_PING:
		return proto_put_pong(&r->l->out, m->nonce) < 0 ? -1 : 0;
	case PROTO_PONG:
		return 0;
	case PROTO_ERROR:
		r->refused = m->error.code ? m->error.code : PROTO_ERR_EVENT;
		snprintf(r->refused_msg, sizeof(r->refused_msg), "%s", m->error.msg);
		return 1;
	default:
		fprintf(stderr, "ledgerctl: rescue: %s (%s) sent an unexpected %s frame\n",
			r->peer_name, r->address, proto_type_name(m->type));
		return -1;
	}
}

/*
 * Ship every planned event and wait for the ACKs.  0 when all are
 * acknowledged, 1 when the peer refused (r->refused), -1 on a failure
 * with a message.
 */
static int ship(struct rescue *r)
{
	int64_t last_in = clock_mono_ms(), last_out = last_in;
	size_t i;
	int rv;

	for (i = 0; i < r->nplans; i++)
		if (read_head(r, &r->plans[i]) < 0)
			return -1;
	for (;;) {
		struct proto_msg m;
		int64_t now;

		while (window_open(r) && (rv = send_frame(r)) != 0) {
			if (rv < 0)
				return -1;
			last_out = clock_mono_ms();
		}
		if (!r->qlen && !next_plan(r))
			return 0;
		rv = link_recv(r->l, RESCUE_PING_MS, &m);
		now = clock_mono_ms();
		if (rv == 0) {
			last_in = now;
			rv = take_frame(r, &m);
			proto_msg_free(&m);
			if (rv != 0)
				return rv;
		} else if (rv != -EAGAIN) {
			fprintf(stderr, "ledgerctl: rescue: %s (%s): %s\n", r->peer_name,
				r->address, r->l->why);
			return -1;
		} else if (now - last_in > RESCUE_SILENT_MS) {
			fprintf(stderr, "ledgerctl: rescue: %s (%s) silent for %d s\n",
				r->peer_name, r->address, RESCUE_SILENT_MS / 1000);
			return -1;
		}
		if (!r->l->out.len && now - last_out >= RESCUE_PING_MS &&
		    proto_put_ping(&r->l->out, (uint64_t)now) < 0)
			return -1;
		if (r->l->out.len) {
			if (link_flush(r->l, RESCUE_SEND_TIMEOUT_MS) < 0) {
				fprintf(stderr, "ledgerctl: rescue: %s (%s): %s\n", r->peer_name,
					r->address, r->l->why);
				return -1;
			}
			last_out = now;
		}
		progress(r, 0);
	}
}

/* Tell the peer we are done, so its log says so instead of a dropped link. */
static void say_done(struct rescue *r)
{
	buf_reset(&r->l->out);
	if (proto_put_error(&r->l->out, PROTO_ERR_SHUTDOWN, "rescue done") == 0)
		link_flush(r->l, 1000);
}

/* Why the peer ended the rescue (r->refused), and what that leaves behind, on stderr. */
static void report_refusal(const struct rescue *r)
{
	const struct sent *front = r->qlen ? &r->queue[r->qhead] : NULL;
	const struct origin_plan *o = front ? &r->plans[front->k] : NULL;
	char nb[32];
	const char *name = o ? origin_name(r, o->origin, nb, sizeof(nb)) : NULL;

	if (!o) {
		fprintf(stderr, "ledgerctl: rescue: %s ended the rescue: %s: %s\n", r->peer_name,
			proto_error_name(r->refused), r->refused_msg);
		return;
	}
	if (r->refused != PROTO_ERR_TERM) {
		fprintf(stderr, "ledgerctl: rescue: %s refused event %s:%" PRIu64 ": %s: %s\n",
			r->peer_name, name, front->seq, proto_error_name(r->refused),
			r->refused_msg);
		return;
	}
	fprintf(stderr,
		"ledgerctl: rescue: %s refused event %s:%" PRIu64 " of term %" PRIu64
		": its term is %" PRIu64 ", and a promotion fenced %s before this event: %s\n"
		"ledgerctl: rescue: events %s:%" PRIu64 "..%" PRIu64 " stay in %s's journal (%s);"
		" when that node starts again it keeps them aside as a tail (ledgerctl status,"
		" ledgerctl tail-export)\n",
		r->peer_name, name, front->seq, front->term, r->peer_term, name, r->refused_msg,
		name, front->seq, o->last, r->cfg.name, r->dir);
}

/*
 * What went, per origin, and the summary line, after ship() returned
 * outcome; the refusal and what it left behind on stderr.  Returns the
 * exit status.
 */
static int report(const struct rescue *r, int outcome, double secs)
{
	uint64_t wanted = 0, shipped = 0, origins = 0;
	char nb[32];
	size_t i;

	for (i = 0; i < r->nplans; i++) {
		const struct origin_plan *o = &r->plans[i];
		const char *name = origin_name(r, o->origin, nb, sizeof(nb));
		uint64_t upto = o->acked < o->last ? o->acked : o->last;

		if (o->have <= o->peer)
			continue;
		wanted += o->have - o->peer;
		if (o->last < o->first) {
			fprintf(stderr,
				"ledgerctl: rescue: %s lacks %s:%" PRIu64 "..%" PRIu64
				", but %s no longer holds %s:%" PRIu64 "..%" PRIu64
				" (trimmed): nothing of %s shipped; %s must get them from another "
				"member first\n",
				r->peer_name, name, o->peer + 1, o->have, r->cfg.name, name,
				o->peer + 1, o->trimmed, name, r->peer_name);
			continue;
		}
		if (upto >= o->first) {
			printf("  %s (%016" PRIx64 "): %" PRIu64 " events, seqs %" PRIu64
			       "..%" PRIu64 "\n",
			       name, o->origin, upto - o->first + 1, o->first, upto);
			shipped += upto - o->first + 1;
			origins++;
		}
		if (upto < o->last)
			printf("  %s (%016" PRIx64 "): %" PRIu64
			       " events not shipped, seqs %" PRIu64 "..%" PRIu64 "\n",
			       name, o->origin, o->last - upto, upto + 1, o->last);
	}
	if (outcome == 1)
		report_refusal(r);
	if (wanted == 0) {
		printf("nothing to rescue: %s (%s) holds every event %s has\n", r->peer_name,
		       r->address, r->cfg.name);
		return 0;
	}
	printf("rescued %" PRIu64 " of %" PRIu64 " missing events", shipped, wanted);
	if (origins)
		printf(" (%" PRIu64 " origin%s)", origins, origins == 1 ? "" : "s");
	printf(" from %s to %s (%s, term %" PRIu64 ") in %.1f s", r->cfg.name, r->peer_name,
	       r->address, r->peer_term, secs);
	if (shipped < wanted)
		printf("; %" PRIu64 " %s\n", wanted - shipped,
		       outcome == 1 ? "refused or not shipped" : "not shipped");
	else
		printf("\n");
	return shipped < wanted || outcome != 0 ? 1 : 0;
}

static void rescue_free(struct rescue *r)
{
	size_t i;

	for (i = 0; i < r->nplans; i++)
		if (r->plans[i].has_head)
			event_free(&r->plans[i].head);
	free(r->plans);
	link_close(r->l);
	SSL_CTX_free(r->ctx);
	journal_copy_close(&r->jc);
}

int cmd_rescue(int argc, char **argv)
{
	static const struct option longopts[] = {{"to", required_argument, NULL, 't'},
						 {"to-node", required_argument, NULL, 'n'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	struct rescue *r;
	const char *to = NULL;
	int c, rv, rc = 1;

	r = calloc(1, sizeof(*r));
	if (!r) {
		fprintf(stderr, "ledgerctl: rescue: out of memory\n");
		return 1;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 't') {
			to = optarg;
		} else if (c == 'n') {
			r->to_node = optarg;
		} else if (c == 'h') {
			rescue_usage(stdout);
			free(r);
			return 0;
		} else {
			rescue_usage(stderr);
			free(r);
			return 2;
		}
	}
	if (optind != argc - 1 || !to == !r->to_node) {
		rescue_usage(stderr);
		free(r);
		return 2;
	}
	r->dir = argv[optind];
	if (to &&
	    (size_t)snprintf(r->address, sizeof(r->address), "%s", to) >= sizeof(r->address)) {
		fprintf(stderr, "ledgerctl: rescue: --to %s: address too long\n", to);
		free(r);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	r->tty = isatty(STDERR_FILENO);
	if (load_config(r->dir, &r->cfg) < 0 || (r->to_node && peer_from_node(r) < 0) ||
	    open_node(r) < 0 || list_origins(r) < 0 || dial(r) < 0 || handshake(r) < 0)
		goto out;
	r->started = clock_mono_ms();
	rv = r->total ? ship(r) : 0;
	progress(r, 1);
	if (rv == 0)
		say_done(r);
	rc = report(r, rv, (double)(clock_mono_ms() - r->started) / 1000.0);
out:
	rescue_free(r);
	free(r);
	return rc;
}
