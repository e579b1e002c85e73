/*
 * node_int.h - struct node, for node/'s own files (node.c, node_snap.c,
 * rebuild.c) and its unit tests; every other layer uses node.h's
 * functions.
 */
#ifndef LEDGERFS_NODE_INT_H
#define LEDGERFS_NODE_INT_H

#include "node/node.h"

struct node {
	char *dir;
	struct config cfg;
	struct store *store;
	/*
	 * The node lock orders store changes: an event is journaled and
	 * applied under it, so journal order is apply order, except data
	 * writes, journaled under it and applied beside each other (the
	 * parallel writes below, node.h), which node_lock() waits for.  It also guards
	 * the fields marked below.  Readers of the journal alone (shippers,
	 * ACKs, trimming, status, hash-tree builds) do not take it: the
	 * journal has its own lock.
	 *
	 * Lock order, outermost first: node lock; a repl's peer lock
	 * (repl/repl_int.h); the file-digest cache's lock; the journal's lock
	 * (journal/journal.c), which is innermost and never held across a
	 * call out of the journal.
	 */
	pthread_mutex_t lock;
	/*
	 * Parallel writes (node.h): `writes` counts those journaled and not yet
	 * finished, `wseq` holds their seqs in order (sorted, as they are
	 * appended in seq order), `excl` counts node_lock() holders and
	 * waiters.  A node_lock() waits for writes == 0; node_write_lock()
	 * waits for excl == 0.  writes_cv is broadcast when either drops to 0.
	 * All guarded by lock.
	 */
	unsigned excl;
	uint64_t *wseq;
	size_t writes, wseq_cap;
	pthread_cond_t writes_cv;
	struct journal *journal; /* thread-safe: its own lock */
	/*
	 * Group commit: a syncer thread makes the journal durable while the
	 * fsync caller flushes its store file, so the two flushes overlap,
	 * and one journal sync serves every caller waiting at that moment.
	 */
	pthread_t syncer;
	int syncer_running;
	pthread_cond_t sync_wanted; /* signalled when want > synced or on stop */
	pthread_cond_t sync_done;   /* broadcast when synced advances */
	uint64_t committed;	    /* guarded by lock: local events committed */
	uint64_t want;		    /* guarded by lock: committed count callers wait for */
	uint64_t synced;	    /* guarded by lock: committed count known durable */
	uint64_t synced_seq;	    /* written under lock, read atomically: local seqs up to
				     * this are durable and committed (node_synced_seq()) */
	int sync_error;		    /* guarded by lock: last journal sync error */
	int stopping;		    /* guarded by lock */
	int primary;   /* written under lock, read atomically: this node accepts writes */
	uint64_t term; /* guarded by lock: highest term this node has seen */
	/*
	 * Called with lock held after every event journaled and applied
	 * (local or remote), with its origin, so the replication shippers of
	 * that origin can wake up.  Must not block.  NULL when nobody listens.
	 */
	void (*on_commit)(void *arg, uint64_t origin);
	void *on_commit_arg;
	/*
	 * Synchronous replication (DRBD protocol C): with cfg.sync_peers set,
	 * fsync returns only once that many peers confirmed this node's events
	 * up to it.  Peers' confirmations of our own origin, by peer id.
	 */
	uint64_t confirmed_peer[CONFIG_MAX_PEERS]; /* guarded by lock: peer ids, 0 = free */
	uint64_t confirmed_seq[CONFIG_MAX_PEERS];  /* guarded by lock */
	pthread_cond_t confirmed_cond;		   /* broadcast when a confirmation moves */
	unsigned sync_waiting; /* changed atomically under lock: fsyncs waiting for peers */
	int degraded;	       /* guarded by lock: sync_peers not met, running asynchronously */
	/* Failover (journal.h has the formats). */
	uint64_t role_origin; /* guarded by lock: primary of role_term, 0 unknown */
	uint64_t role_term;   /* guarded by lock */
	struct node_fence fences[NODE_MAX_FENCES]; /* guarded by lock */
	unsigned nfences;			   /* guarded by lock */
	struct node_tail tails[NODE_MAX_FENCES];   /* guarded by lock */
	unsigned ntails;			   /* guarded by lock */
	int rebuild_needed; /* guarded by lock: the store holds kept-aside events */
	/* Snapshot resync (node_snap.c). */
	int snap_state; /* guarded by lock: NODE_SNAP_* */
	/* Per origin, remote events up to seq may meet changes the snapshot already shows. */
	struct evid snap_until[NODE_MAX_FENCES]; /* guarded by lock */
	unsigned nsnap_until;			 /* guarded by lock */
	/*
	 * Store checkpoints (checkpoint.c).  ckpt_lock runs them one at a
	 * time and is held across the syncfs; stored_lock, innermost, guards
	 * the durable position only; ckpt_stop_lock and ckpt_cv wake and stop
	 * the checkpointer thread.
	 */
	pthread_mutex_t ckpt_lock;
	pthread_mutex_t stored_lock;
	struct evid *stored; /* guarded by stored_lock: malloc'd, nstored entries */
	size_t nstored;	     /* guarded by stored_lock */
	int stored_known;    /* guarded by stored_lock: JOURNAL_META_STORED exists */
	pthread_mutex_t ckpt_stop_lock;
	pthread_cond_t ckpt_cv;
	pthread_t ckpt_thread;
	int ckpt_stop, ckpt_soon; /* guarded by ckpt_stop_lock */
	int ckpt_running, ckpt_cv_init;
};

#endif
