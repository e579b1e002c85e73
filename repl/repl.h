/*
 * repl.h - the replication daemon of one node: peer links, shipping,
 * receiving, catch-up, and the figures `ledgerctl status` shows.
 *
 * Every node dials every configured peer and subscribes, over that link,
 * to the origins the peer should feed it (the origin itself while it is
 * reachable, otherwise any peer that holds the events: relay).  The
 * dialled side ships the events of each subscribed origin from the seq the
 * subscriber asked for, in batches, and persists the checkpoints the
 * subscriber acknowledges.  So a pair of nodes has two TLS connections, each
 * carrying events one way and acknowledgements the other.
 *
 * Threads: one per outbound link (receiver), one per inbound link
 * (shipper), one listener and one supervisor that re-reads the
 * configuration.  The node lock (node.h) serialises every journal access.
 */
#ifndef LEDGERFS_REPL_H
#define LEDGERFS_REPL_H

#include <stdint.h>

#include "backup/archive.h"
#include "journal/event.h"
#include "lib/config.h"
#include "node/node.h"

struct repl;

/*
 * Called by a receiver thread for each remote event it applies, without
 * the node lock.  A frame's events are applied together, so `before` runs
 * for each of them ahead of the frame, and once more after it (a reader
 * may have looked up what an event made while the frame was applied);
 * `after` then runs with each of the two cookies and the apply's result,
 * so a mount can note which kernel inodes and entries the event touches
 * and invalidate them once it is applied.  Either may be NULL.
 */
struct repl_hooks {
	void *arg;
	void (*before)(void *arg, const struct event *ev, void **cookie);
	void (*after)(void *arg, const struct event *ev, int result, void *cookie);
};

/*
 * Start replication for an open node (NODE_DIR is node_dir(n)): listen on the
 * configured address, dial every peer, serve the control socket
 * NODE_DIR/control.sock.  *out is the caller's: repl_stop().  A node with
 * no listen address and no peers still gets a control socket.
 */
int repl_start(struct node *n, const struct repl_hooks *hooks, struct repl **out);

/* Stop every thread, close every link.  NULL is allowed. */
void repl_stop(struct repl *r);

/* ---- status ---------------------------------------------------------- */

enum repl_peer_state {
	REPL_PEER_CONNECTING = 0, /* first attempt not finished yet */
	REPL_PEER_CONNECTED = 1,  /* the outbound link is up (handshake done) */
	REPL_PEER_RETRYING = 2,	  /* the last attempt failed; why says how */
	REPL_PEER_REFUSED = 3,	  /* the peer refused us or we refused it; why says why */
};

#define REPL_MAX_ORIGINS (CONFIG_MAX_PEERS + 1)
#define REPL_MAX_NOTES	 16
#define REPL_WHY_MAX	 256

struct repl_peer_status {
	char name[CONFIG_NAME_MAX];
	char address[CONFIG_ADDR_MAX];
	uint64_t id;		    /* 0 until first seen */
	enum repl_peer_state state; /* of our outbound link to it */
	int64_t since_ms;	    /* wall clock (ms since epoch) of the last state change */
	char why[REPL_WHY_MAX];	    /* reason for RETRYING or REFUSED, else empty */
	uint64_t retry_in_ms;	    /* RETRYING: until the next attempt */
	int inbound;		    /* the peer's link to us is up */
	uint64_t lag_events;	    /* events we hold that it has not confirmed */
	uint64_t lag_bytes;	    /* their encoded size, payloads included */
	double lag_seconds;	    /* age of the oldest of them, 0 when none */
	unsigned ncheckpoints;	    /* entries in checkpoints[] */
	struct evid checkpoints[REPL_MAX_ORIGINS]; /* per origin: highest seq it confirmed */
	uint64_t events_sent, bytes_sent;	   /* to it, since start */
	uint64_t events_received, bytes_received;  /* from it, since start */
	uint64_t connects;			   /* outbound links made since start */
	int synchronous; /* it confirmed every event of ours: counts for sync_peers */
};

/* An OUTAGE or RECOVERED event found in the journal (any origin). */
struct repl_note {
	uint8_t type; /* EV_OUTAGE or EV_RECOVERED */
	uint64_t origin, seq;
	int64_t time_ms;   /* physical part of the event's hlc */
	struct evid first; /* RECOVERED: origin and first seq fetched */
	uint64_t last_seq; /* RECOVERED: last seq fetched */
};

/* A snapshot resync this node receives: the one running, or the last one. */
struct repl_snap_progress {
	int active; /* running now */
	int done;   /* the last one finished and was installed */
	char peer[CONFIG_NAME_MAX];
	uint64_t round;	  /* rounds so far (another starts when files changed under one) */
	uint64_t entries; /* entries in the peer's tree */
	uint64_t listed;  /* directory listings compared */
	uint64_t fetched; /* entries received */
	uint64_t bytes;	  /* contents received */
	uint64_t reused;  /* entries already staged by an earlier attempt */
	uint64_t deleted; /* entries here only, to delete */
};

enum repl_div_state {
	REPL_DIV_NONE = 0,     /* no divergence since start */
	REPL_DIV_HEALING = 1,  /* a heal from the peer runs */
	REPL_DIV_HEALED = 2,   /* healed; the event is taken again */
	REPL_DIV_STOPPED = 3,  /* the heal cannot make progress: stopped, tried again later */
	REPL_DIV_RESOLVED = 4, /* the event applied since: the last divergence is over */
};

/*
 * The last divergence (DESIGN invariant 9): an event from a peer that did
 * not apply here because its base version or fids do not match, and its
 * heal, a resync of the affected subtree from that peer (receive.c).
 */
struct repl_divergence {
	enum repl_div_state state;
	struct evid event;	    /* the event that did not apply */
	uint8_t type;		    /* its type */
	char path[REPL_WHY_MAX];    /* its path, cut; empty if it has none */
	char why[REPL_WHY_MAX];	    /* why it did not apply */
	char stopped[REPL_WHY_MAX]; /* STOPPED: why the heal cannot make progress */
	char peer[CONFIG_NAME_MAX]; /* where it came from: the heal's source */
	char scope[REPL_WHY_MAX];   /* the subtree healed (or to heal), cut */
	int64_t since_ms;	    /* wall clock when it diverged */
	unsigned heals;		    /* heals tried for this event */
	uint64_t entries, bytes;    /* what the last heal replaced, and its contents received */
	int64_t retry_in_ms;	    /* STOPPED: until the next try */
};

struct repl_status {
	char name[CONFIG_NAME_MAX];
	uint64_t node_id;
	int primary; /* 1 primary, 0 replica */
	uint64_t term;
	int64_t now_ms;
	char listen[CONFIG_ADDR_MAX]; /* empty when not listening */
	unsigned norigins;
	struct evid applied[REPL_MAX_ORIGINS]; /* applied vector, by origin */
	unsigned npeers;
	struct repl_peer_status peers[CONFIG_MAX_PEERS];
	unsigned nnotes;
	struct repl_note notes[REPL_MAX_NOTES]; /* most recent last */
	uint64_t outages;			/* OUTAGE events in the journal, all of them */
	uint32_t sync_peers;			/* peers an fsync waits for (0: asynchronous) */
	int degraded;				/* fewer than sync_peers confirm: running async */
	unsigned ntails;			/* kept-aside event ranges (after a promotion) */
	struct node_tail tails[NODE_MAX_FENCES];
	int rebuild_needed;	/* the store still holds kept-aside events: restart rebuilds it */
	uint64_t journal_bytes; /* LevelDB and value log on disk */
	uint64_t journal_bound; /* what trimming keeps it within (config_retain_bound()) */
	struct evid oldest[REPL_MAX_ORIGINS]; /* per origin (as applied[]): oldest seq held */
	int in_sync;	 /* every peer connected both ways and confirmed all we hold, and we lack
			    nothing it advertised */
	int snap_needed; /* this node lacks trimmed events: it resyncs by snapshot */
	struct repl_snap_progress snap;
	struct repl_divergence div;
	/* Since start: divergences met, heals done and failed, entries and bytes they replaced. */
	uint64_t divergences, heals, heal_failures, heal_entries, heal_bytes;
	/* Continuous archiving ([archive] repository): on, lag, last failure. */
	struct archive_status archive;
};

/* "none", "healing", "healed", "stopped", "resolved" (repl/status_fmt.c). */
const char *repl_div_state_name(enum repl_div_state state);

/* 1 while a divergence is not over: healing, healed but not applied yet, or stopped. */
static inline int repl_diverged(const struct repl_divergence *d)
{
	return d->state == REPL_DIV_HEALING || d->state == REPL_DIV_HEALED ||
	       d->state == REPL_DIV_STOPPED;
}

/* "connecting", "connected", "retrying", "refused" (repl/status_fmt.c). */
const char *repl_peer_state_name(enum repl_peer_state state);

/* Fill *st with a consistent snapshot.  0 or a negative errno. */
int repl_status(struct repl *r, struct repl_status *st);

#endif
