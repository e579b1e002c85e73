/*
 * repl_int.h - what the replication threads share (daemon/repl*.c, ship.c,
 * receive.c); not a public interface.
 *
 * Lock order: the node lock (node.h) before r->lock, never the other way,
 * because node_commit_locked() calls repl_on_commit() with the node lock
 * held.
 */
#ifndef LEDGERFS_REPL_INT_H
#define LEDGERFS_REPL_INT_H

#include <limits.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdint.h>

#include "repl/control.h"
#include "net/link.h"
#include "repl/repl.h"

#define REPL_DIAL_TIMEOUT_MS  5000
#define REPL_HELLO_TIMEOUT_MS 10000
#define REPL_SEND_TIMEOUT_MS  15000
#define REPL_PING_MS	      1000 /* a quiet link sends a PING this often */
#define REPL_SILENT_MS	      6000 /* a link that said nothing for this long is dead */
/* ... unless it is in a snapshot round: the peer may be hashing its own store. */
#define REPL_SNAP_SILENT_MS 120000
#define REPL_BACKOFF_MIN_MS 100
#define REPL_BACKOFF_MAX_MS 5000
#define REPL_WINDOW	    8 /* unacknowledged batches in flight on one link */
/*
 * EVENTS frames a receiver takes in a row before it asks for a journal
 * sync to ACK them: each sync stalls the journal writes behind it for a
 * disk flush, and half the sender's window keeps it busy meanwhile.
 */
#define REPL_SYNC_FRAMES (REPL_WINDOW / 2)

/* A link up for this long made progress: its next failure starts the backoff over. */
#define REPL_STABLE_MS 10000
/* After a heal that cannot make progress, the link waits this long, doubling, with jitter. */
#define REPL_HEAL_BACKOFF_MIN_MS 1000
#define REPL_HEAL_BACKOFF_MAX_MS 300000
/* Heals of one event, each of a subtree one level wider, before the heal stops. */
#define REPL_HEAL_TRIES 2

/* Healed subtrees remembered while the events they may already show stream in. */
#define REPL_MAX_HEALED 8

/* A subtree a heal replaced: events of origin up to until may already show in it. */
struct repl_healed {
	uint64_t origin, until;
	char scope[PATH_MAX];
};

/* One configured peer and our outbound (receiving) link to it. */
struct repl_peer {
	struct repl *r;
	struct config_peer cfg; /* guarded by r->lock */
	int gone;		/* guarded by r->lock: removed from the config, thread exits */
	struct repl_peer *retired_next; /* guarded by r->lock: list of removed peers */
	pthread_t thread;
	int thread_running;
	int wake_fd; /* eventfd: source choices changed, or stop */

	/* Guarded by r->lock. */
	enum repl_peer_state state;
	int64_t since_ms; /* wall clock */
	char why[REPL_WHY_MAX];
	int64_t retry_at; /* monotonic ms of the next attempt */
	int inbound;	  /* its links to us that are up */
	/* The peer's applied seq per origin (index into r->origins): from HELLO and ACKs. */
	uint64_t vec[REPL_MAX_ORIGINS];
	uint64_t events_sent, bytes_sent, events_received, bytes_received, connects;
};

/* One inbound link: a peer that subscribed to events we ship. */
struct repl_shipper {
	struct repl *r;
	struct repl_shipper *next; /* guarded by r->lock */
	struct link *link;
	pthread_t thread;
	int done;     /* guarded by r->lock: the thread has finished */
	int wake_fd;  /* eventfd: new events committed, or stop */
	int sleeping; /* atomic: the thread waits for wake_fd */
	uint64_t peer_id;
	char name[CONFIG_NAME_MAX];
	struct repl_peer *peer;	       /* guarded by r->lock: set once identified */
	uint8_t sub[REPL_MAX_ORIGINS]; /* guarded by r->lock: origins (by index) it ships */
};

struct repl {
	struct node *n;
	struct repl_hooks hooks;
	char conf_path[4096];
	SSL_CTX *client_ctx, *server_ctx;
	int listen_fd;
	pthread_t listener, supervisor;
	int listener_running, supervisor_running;
	int stop_fd; /* eventfd, readable once stopping */
	struct control *control;
	/* The journal's archiver ([archive] repository), NULL when off or failed to start. */
	struct archiver *archiver;
	int archive_failed; /* configured, but it could not start */

	/*
	 * The peer lock: guards the peers, the origins and the fields marked
	 * below.  Taken after the node lock when both are held, before the
	 * digest cache's and the journal's (lock order in node/node.h).
	 */
	pthread_mutex_t lock;
	int stopping;				   /* guarded by lock */
	struct config cfg;			   /* guarded by lock: membership as last loaded */
	struct repl_peer *peers[CONFIG_MAX_PEERS]; /* guarded by lock */
	unsigned npeers;			   /* guarded by lock */
	struct repl_shipper *shippers;		   /* guarded by lock */
	struct repl_peer *retired;		   /* guarded by lock: removed, freed at stop */
	/* Known origins, in the order first seen; applied[] mirrors the journal. */
	unsigned norigins;		    /* guarded by lock */
	uint64_t origins[REPL_MAX_ORIGINS]; /* guarded by lock */
	uint64_t applied[REPL_MAX_ORIGINS]; /* guarded by lock */
	uint64_t primary_id; /* guarded by lock: the primary as we know it, 0 if unknown */
	/* Catch-up after an outage: see receive.c. */
	int recovering;				/* guarded by lock */
	uint64_t rec_first[REPL_MAX_ORIGINS];	/* guarded by lock */
	uint64_t rec_target[REPL_MAX_ORIGINS];	/* guarded by lock */
	unsigned nnotes;			/* guarded by lock */
	struct repl_note notes[REPL_MAX_NOTES]; /* guarded by lock */
	uint64_t outages;			/* guarded by lock: OUTAGE events seen */
	/* Snapshot resync (snap_recv.c): needed, and which receiver runs it. */
	int snap_needed;		/* guarded by lock */
	struct repl_peer *snap_owner;	/* guarded by lock */
	struct repl_snap_progress snap; /* guarded by lock */
	/* The file digests that hash trees reuse; guarded by digests_lock. */
	struct merkle_cache *digests;
	pthread_mutex_t digests_lock; /* taken after the node lock, if both */
	/* Divergence and heal (receive.c). */
	struct repl_divergence div; /* guarded by lock */
	/*
	 * Guarded by lock, and whole (r->div has them cut for status): the
	 * diverged event's path and second path, and the subtree healed last.
	 * Each is malloc'd and owned by r (replaced by receive.c's diverged()
	 * and heal(), freed by repl_stop()); NULL when there is none, or when
	 * there was no memory for it, which widens the heal to the root.
	 */
	char *div_path, *div_path2;
	char *div_scope;
	int div_stop_noted;   /* guarded by lock: its STOPPED is journaled */
	unsigned div_stops;   /* guarded by lock: stops in a row, for the backoff */
	int64_t div_retry_at; /* guarded by lock: monotonic ms of the next try */
	int healing;	      /* guarded by lock: a heal runs, no events taken */
	struct repl_healed healed[REPL_MAX_HEALED]; /* guarded by lock: the latest heals */
	unsigned nhealed;			    /* guarded by lock */
	uint64_t divergences, heals, heal_failures, heal_entries, heal_bytes; /* guarded by lock */
	uint64_t journal_bound; /* guarded by lock: what trimming keeps the journal within */
	int bound_warned;	/* supervisor thread only: the statvfs failure was logged */
};

/* File digests kept between hash-tree builds, in NODE_DIR. */
#define REPL_DIGESTS_FILE "digests.cache"

struct merkle;

/*
 * Build the hash tree of our store, reusing the digests of files unchanged
 * since the last build (r->digests, loaded from and saved to
 * NODE_DIR/digests.cache; r->digests_lock taken).  The store may change
 * meanwhile unless the caller holds the node lock.  0 with *out (merkle_free()),
 * or a negative errno.
 */
int repl_build_tree(struct repl *r, struct merkle **out, uint64_t *entries);

/* qsort() order of struct evid by origin. */
int repl_evid_cmp(const void *a, const void *b);

/* Wall-clock ms since the epoch. */
int64_t repl_wall_ms(void);

/*
 * Index of origin in r->origins, adding it; -1 when the table is full.
 * Indexes never change, so threads keep per-origin arrays by them.
 * r->lock held.
 */
int repl_origin_index(struct repl *r, uint64_t origin);

/* Set a peer's link state and reason (why may be NULL), logging changes.  r->lock held. */
void repl_peer_set_state(struct repl_peer *p, enum repl_peer_state st, const char *why);

/* Wake every receiver so it reconsiders its subscriptions.  r->lock held. */
void repl_wake_receivers(struct repl *r);

/* Write one to an eventfd; errors only mean it is already pending. */
void repl_wake(int fd);

/* Drain an eventfd. */
void repl_drain(int fd);

/*
 * Identify the verified peer of link l: its id from the certificate,
 * matched against the membership; a configured peer whose id is not known
 * yet is learned from the CA-signed name and saved.  expect (NULL for
 * inbound links) is the peer we dialled.  0 with *out, or -EACCES with
 * why filled.  Takes r->lock.
 */
int repl_identify(struct repl *r, struct link *l, struct repl_peer *expect, struct repl_peer **out,
		  char *why, size_t whylen);

/* Our HELLO (applied vector) into l->out.  Takes the node lock, then r->lock. */
int repl_put_hello(struct repl *r, struct link *l);

/*
 * Check a peer's HELLO: cluster, node id equal to the certificate's,
 * vector entries.  Records the vector into p->vec.  0 or a proto error
 * code (PROTO_ERR_*) with *why.
 */
int repl_take_hello(struct repl *r, struct repl_peer *p, const struct proto_msg *m,
		    const char **why);

/* Record an OUTAGE/RECOVERED event seen in the journal or on the wire.  r->lock held. */
void repl_note(struct repl *r, const struct event *ev);

/* Send an ERROR frame (best effort) before dropping a link. */
void repl_send_error(struct link *l, unsigned code, const char *msg);

/* The commit hook (node.h on_commit): wakes the sleeping shippers of origin. */
void repl_on_commit(void *arg, uint64_t origin);

/* The sending side of a snapshot resync (snap_send.c), per inbound link. */
struct snap_send;

/*
 * Answer a SNAP_BEGIN, SNAP_LIST, SNAP_GET or SNAP_DONE from peer into
 * l->out (flushing as contents stream).  *ss is made by the first BEGIN
 * and freed with snap_send_free().  0 or a negative errno with l->why.
 */
int snap_send_frame(struct repl *r, struct link *l, struct snap_send **ss,
		    const struct proto_msg *m, const char *peer);
void snap_send_free(struct snap_send *ss);

/* Is a round running (begun, not done)?  NULL is fine. */
int snap_send_active(const struct snap_send *ss);

/*
 * Resync this node's store from peer over l, a link whose subscriptions
 * are all stopped, and install it (snap_recv.c).  0, or a negative errno
 * with l->why set; the store is then as it was.
 */
int snap_recv_run(struct repl *r, struct link *l, const char *peer);

/* What a heal did (snap_recv_heal()). */
struct snap_heal {
	char *scope;	      /* malloc'd: the subtree compared, the one asked for or above it */
	uint64_t position;    /* the peer's applied seq of the origin asked about, at its tree */
	uint64_t until;	      /* and at the end of the heal: files sent may show events up to it */
	uint64_t entries;     /* install steps carried out */
	uint64_t bytes;	      /* contents received */
	char *list;	      /* malloc'd: EV_HEALED's list of steps (event.h); the caller frees */
	size_t list_len;
};

/*
 * Heal the subtree at scope (a store path; "." the root) from peer over l,
 * a link whose subscriptions are all stopped: compare it by hash tree with
 * the peer's, receive what differs and install it, leaving the applied
 * vector as it is (snap_recv.c).  A scope that is not a directory on
 * either side is replaced by its nearest parent that is.  0 with *h
 * filled (the caller frees h->scope and h->list), or a negative errno with
 * l->why set and nothing in *h to free; the store is then as it was, or
 * partly healed if the install failed midway.
 */
int snap_recv_heal(struct repl *r, struct link *l, const char *peer, const char *scope,
		   uint64_t origin, struct snap_heal *h);

/*
 * fsck.ledgerfs --against (peer_check.h): a check drives snapshot rounds
 * without a daemon.  peer_check.c holds what is compared and reported;
 * snap_recv.c runs the rounds and calls the snap_check_*() functions at
 * each step.
 */
struct snap_check;
struct snap_meta;
struct snap_plan;
struct snap_stage;
struct merkle_entry;

/*
 * Compare the store at root_fd with the peer's over l, a link whose HELLOs
 * were exchanged, in rounds until one finds the peer's tree steady, then
 * let c report and, if it repairs, install what it accepts (staged under
 * node_dir/snap/, removed afterwards).  0, or a negative errno with l->why.
 */
int snap_recv_check(struct link *l, const char *peer, const char *node_dir, int root_fd,
		    struct snap_check *c);

/* Does c repair (stage what arrives)? */
int snap_check_repairs(const struct snap_check *c);

/* Our tree, built on the first call and kept by c (the caller must not free it). */
int snap_check_tree(struct snap_check *c, struct merkle **out, uint64_t *entries);

/* A round begins: what the last one found is forgotten. */
void snap_check_round(struct snap_check *c);

/*
 * Plan step `step` at path: theirs is the peer's entry (NULL: a DELETE,
 * the path is ours only); mode_here and size_here ours (mode 0: absent).
 * *probe is set when the entry must be asked for to be compared even
 * though nothing of it is staged.  0 or -ENOMEM.
 */
int snap_check_step(struct snap_check *c, uint32_t step, const char *path, uint32_t mode_here,
		    uint64_t size_here, const struct merkle_entry *theirs, int *probe);

/* The peer's metadata of step's entry arrived.  0 or a negative errno with why. */
int snap_check_entry(struct snap_check *c, uint32_t step, const struct snap_meta *m,
		     const char **why);

/* Contents of step's regular file at off arrived. */
int snap_check_data(struct snap_check *c, uint32_t step, uint64_t off, const uint8_t *data,
		    size_t len);

/*
 * The round's files would need `need` bytes staged and only `room` are free
 * (a check's rounds stage nothing past that): snap_check_end() then says
 * so and repairs nothing.
 */
void snap_check_no_room(struct snap_check *c, uint64_t need, uint64_t room);

/*
 * The round was steady: report each difference (vec: the peer's position,
 * SNAP_INFO's) and, when repairing, put into *accepted the plan's steps
 * of the differences found() accepted, after keep() put aside what they
 * replace.  A LINK step to a name whose difference is not repaired is
 * left out (with a note), and its difference reported as not fixed.
 * 0 or -ENOMEM.
 */
int snap_check_end(struct snap_check *c, const struct evid *vec, uint32_t count,
		   const struct snap_plan *plan, struct snap_plan *accepted);

/*
 * Install *accepted (staged in stage) durably: what keep() put aside is
 * synced, the plan saved and the install recorded in the journal
 * (node_snap_repair_begin()) before the store changes, the record cleared
 * once it is done.  Reports through fixed() whether each accepted
 * difference was repaired, and through note() where a failed install
 * stopped.  1 when an install was begun and not finished (the staging
 * area and its plan must stay for the node's next start), else 0.
 */
int snap_check_install(struct snap_check *c, struct snap_stage *stage,
		       const struct snap_plan *accepted);

/* Progress of the rounds: listings compared, contents received. */
void snap_check_progress(struct snap_check *c, uint64_t listed, uint64_t bytes, uint64_t round);

/*
 * Take the events `ledgerctl rescue` pushes over inbound link l, whose
 * HELLO (PROTO_HELLO_PUSH) was answered: vet, journal, apply and ACK them
 * as a receiver does (receive.c), until the pusher ends with ERROR
 * SHUTDOWN.  p is the member whose certificate the pusher presented, NULL
 * for this node's own (a rescue run beside it with its node directory);
 * from names the pusher in logs; wake_fd (the link's eventfd) ends the
 * wait when the node stops.  *applied gets the events applied.  0, or a
 * negative errno with l->why set; an ERROR saying why went to the pusher,
 * after the ACKs of everything applied before it.
 */
int repl_push_receive(struct repl *r, struct repl_peer *p, struct link *l, int wake_fd,
		      const char *from, uint64_t *applied);

/* Thread bodies. */
void *repl_receiver_main(void *arg);
void *repl_shipper_main(void *arg);

#endif
