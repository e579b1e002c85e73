/*
 * node.h - one node: its configuration, journal and store, and the lock
 * that puts local events in seq order.
 *
 * NODE_DIR layout:
 *   ledgerfs.conf   configuration (config.h)
 *   journal/        LevelDB journal and value log (journal.h)
 *   store/          the backing directory (store.h)
 *
 * Committing a local event is: take the lock, journal it, apply it, and
 * either mark it applied or, when the apply failed, turn it into a void so
 * it never counts.  The lock makes journal order equal apply order.
 */
#ifndef LEDGERFS_NODE_H
#define LEDGERFS_NODE_H

#include <pthread.h>
#include <stdint.h>

#include "lib/config.h"
#include "journal/event.h"
#include "journal/journal.h"
#include "store/store.h"

#define NODE_JOURNAL_DIR "journal"
#define NODE_STORE_DIR	 "store"

#define NODE_MAX_FENCES 64

/* Events of origin with a term below term and a seq above seq are refused. */
struct node_fence {
	uint64_t origin, term, seq;
};

/* Events first..last of origin, held here beyond a fence of term: kept aside. */
struct node_tail {
	uint64_t origin, first, last, term;
};

/* One node; its fields are node.c's (node_int.h).  The accessors below. */
struct node;

/* The node's directory, configuration, store and journal: fixed while it is open. */
const char *node_dir(const struct node *n);
struct config *node_cfg(struct node *n);
struct store *node_store(const struct node *n);
struct journal *node_journal(const struct node *n);

/* Without the lock: whether this node accepts writes now. */
int node_is_primary(struct node *n);

/*
 * Called with the lock held after every event journaled and applied,
 * with its origin, so that shippers of that origin wake up; must not
 * block.  fn NULL stops the calls.  Takes the lock.
 */
void node_set_on_commit(struct node *n, void (*fn)(void *arg, uint64_t origin), void *arg);

/* With the lock held: whether the store holds kept-aside events. */
int node_rebuild_needed_locked(struct node *n);

/* What status shows of a node, copied under its lock. */
struct node_state {
	int primary;
	uint64_t term;
	uint64_t role_origin; /* primary of the current term, 0 unknown */
	int degraded;	      /* sync_peers not met, running asynchronously */
	int rebuild_needed;   /* the store holds kept-aside events */
	int snap_needed;      /* a snapshot resync is needed */
	unsigned ntails;
	struct node_tail tails[NODE_MAX_FENCES];
};
void node_state(struct node *n, struct node_state *st);


#define NODE_SNAP_NONE	     0
#define NODE_SNAP_NEEDED     1 /* this node lacks trimmed events: resync by snapshot */
#define NODE_SNAP_INSTALLING 2 /* staged entries are being moved into the store */
#define NODE_SNAP_REPAIRING  3 /* an fsck --against repair's plan is being installed */

/* Flags for node_open(). */
#define NODE_OPEN_REPLAY  0x1 /* replay the unapplied tail before returning */
#define NODE_OPEN_MOUNT	  0x2 /* record an unclean state until node_close(clean) */
#define NODE_OPEN_REBUILD 0x4 /* rebuild a store that holds kept-aside events (rebuild.h) */

/*
 * Open NODE_DIR: config, journal, store; check that the store is this
 * node's (refusing a missing, unstamped or foreign store when the journal
 * holds events); with NODE_OPEN_REPLAY replay the unapplied tail.
 * *out is the caller's: node_close().  On failure err (errlen bytes) says
 * why, naming the path.
 */
int node_open(const char *dir, int flags, struct node **out, char *err, size_t errlen);

/* Close; with clean set, record a clean shutdown.  NULL is allowed. */
void node_close(struct node *n, int clean);

/*
 * Take and let go of the node lock (lock order: node_int.h).  It orders
 * local commits with every other store change; node_commit_locked() and
 * the other *_locked calls need it held.  node_lock() also waits until no
 * parallel write (below) is between its journal append and the end of its
 * apply, and holds new ones off until node_unlock(): its holder sees and
 * changes the store alone.
 */
void node_lock(struct node *n);
void node_unlock(struct node *n);

/*
 * Parallel writes.  A data write (EV_WRITE) to one open regular file is
 * journaled under the node lock but applied outside it, so writers of
 * different files apply at the same time while the journal keeps one order:
 *
 *   node_write_lock(n);              the lock, once no node_lock() holder
 *                                    or waiter is in the way
 *   ... read the object's version into ev (the lock is held) ...
 *   r = node_write_begin_locked(n, ev);   journal ev (it gets its seq)
 *   node_write_unlock(n);
 *   if (r == 0)
 *           r = node_write_finish(n, ev, ctx);   apply, then void or mark applied
 *
 * The caller keeps every other change of that object out from before
 * node_write_lock() to after node_write_finish() (fuse/ holds the inode's
 * write lock), so one object's events are applied in journal order.  Only
 * changes that commute with any change of another object may go this way.
 * An event journaled by node_write_begin_locked() counts as committed (for
 * the applied mark, the journal's syncs and the shippers) once it and every
 * local event before it are finished.  Returns as node_commit_locked().
 */
void node_write_lock(struct node *n);
void node_write_unlock(struct node *n);
int node_write_begin_locked(struct node *n, struct event *ev);
int node_write_finish(struct node *n, struct event *ev, struct apply_ctx *ctx);

/* The highest term this node has seen.  Takes the lock. */
uint64_t node_term(struct node *n);

/*
 * Commit a local event with n->lock held: journal, apply (ctx->fresh is
 * set), then mark applied or void it.  Returns 0 or the apply's negative
 * errno, which the caller hands to the application.
 */
int node_commit_locked(struct node *n, struct event *ev, struct apply_ctx *ctx);

/* Origins one node_apply_remote() run may hold: more end the run. */
#define NODE_RUN_ORIGINS 16

/*
 * Journal and apply a run of events received from a peer, taking the lock
 * once: every event of the run is journaled in one write before the first
 * is applied, then they are applied in order.  Events of one origin are
 * taken strictly in seq order: res[i] is 1 (nothing done) for a seq
 * already applied here, 0 when applied.  A run ends early after a
 * promotion (EV_ROLE), whose apply changes which events are let through,
 * or at the NODE_RUN_ORIGINS+1st origin: *done says how many were taken,
 * and the caller passes the rest again.  Returns 0, or the negative errno
 * of evs[*done] with *why set: -EPROTO for one beyond the next expected
 * (a gap), -EPERM/-EAGAIN for a term or fence refusal (nothing of it
 * journaled), or an apply failure, which leaves the event journaled but
 * unapplied, so a retry (or the replay at the next start) takes it up
 * again: a remote event is never voided here, since its origin applied
 * it.  Payloads must be inline.  cache (may be NULL) keeps descriptors
 * from one event to the next (store.h) and is flushed before the node
 * lock is let go; a failed flush is reported on the last event taken,
 * which stays applied.  The caller releases the cache.
 */
int node_apply_remote(struct node *n, const struct event *evs, size_t count,
		      struct apply_cache *cache, int *res, size_t *done, const char **why);

/*
 * Make this node the primary of a new term (the highest term seen plus
 * one), journaling an EV_ROLE event whose data is the applied vector
 * (n x u64 origin, u64 seq): every node that applies it fences each origin
 * there, so a returning old primary's later events of a lower term are
 * refused everywhere.  *term receives the new term.
 */
int node_promote(struct node *n, uint64_t *term);

/* Make this node a replica, journaling an EV_ROLE event; why goes to the log. */
int node_demote(struct node *n, const char *why);

/*
 * A peer says it has seen term, with primary (0 if it does not know): a
 * higher term than ours is adopted, and a primary of a lower term demotes
 * itself.  Returns -EPERM if primary claims our own term while we are its
 * primary (two primaries: refuse the link), else 0.
 */
int node_see_term(struct node *n, uint64_t term, uint64_t primary);

/* 1 and *term if (origin, seq) is in a kept-aside tail, else 0.  Lock held. */
int node_in_tail_locked(struct node *n, uint64_t origin, uint64_t seq, uint64_t *term);

/* Peer (by id) confirmed our own events up to seq: durable and applied there. */
void node_peer_confirmed(struct node *n, uint64_t peer, uint64_t seq);

/* Forget a peer's confirmations (it was removed from the membership). */
void node_peer_forget(struct node *n, uint64_t peer);

/*
 * With cfg.sync_peers = N > 0: wait until N peers confirmed every local
 * event committed so far.  After cfg.sync_timeout_ms without that, either
 * fail with -EIO or, with cfg.sync_degrade, log once, mark the node
 * degraded and return 0 (and keep returning at once until N peers catch
 * up again).  0 at once when sync_peers is 0.
 */
int node_wait_peers(struct node *n);

/* Make every journaled event durable now (a group commit); 0 or negative errno. */
int node_sync(struct node *n);

/*
 * Ask for every event committed so far to be made durable; returns a
 * ticket for node_sync_wait().  Between the two the caller can flush its
 * own store file while the journal is synced.
 */
uint64_t node_sync_start(struct node *n);

/* Wait until the journal is durable up to ticket.  0 or a negative errno. */
int node_sync_wait(struct node *n, uint64_t ticket);

/* Is the journal durable up to ticket?  1, 0 (not yet) or a negative errno. */
int node_sync_poll(struct node *n, uint64_t ticket);

/*
 * Replay events of every origin above the applied seq, in order, through
 * the apply engine.  Events whose apply fails are voided (and logged).
 * *replayed and *skipped count applied and already-present events.
 */
int node_replay(struct node *n, uint64_t *replayed, uint64_t *skipped);

/*
 * Snapshot resync state (node_snap.c).  node_snap_request() records,
 * durably, that this node must be resynced by snapshot (it lacks events
 * that were trimmed, or it is new).  node_snap_install_begin() records the
 * snapshot's position from[] and the sender's vector at its end until[]
 * (count origins each, sorted) before the install starts, so that a crash
 * mid-install is finished at the next node_open().  node_snap_finish(),
 * with the lock held, after the install: for every origin but this node's
 * own, the applied seq becomes from, the journal's older events are
 * trimmed (this node's store no longer matches them), and remote events up
 * to until are taken leniently: an apply that finds the change already
 * made (the snapshot was read while the sender went on) counts as applied.
 */
int node_snap_request(struct node *n);
int node_snap_install_begin(struct node *n, const struct evid *from, const struct evid *until,
			    uint32_t count);
int node_snap_finish_locked(struct node *n);

/*
 * The repair of a stopped node by fsck.ledgerfs --against goes through the
 * same durable plan (snap/plan) with its own state: node_snap_repair_begin()
 * records, synced, that the saved plan is being installed into the store
 * of the stopped node whose journal is j; node_snap_repair_end(), synced,
 * that it is done.  Such an install touches no applied seq and no lenient
 * window.  node_snap_pending() reads the state (NODE_SNAP_*) of journal j
 * into *state, NODE_SNAP_NONE when none was ever recorded.  0 or a
 * negative errno.
 */
int node_snap_repair_begin(struct journal *j);
int node_snap_repair_end(struct journal *j);
int node_snap_pending(struct journal *j, int *state);

/*
 * Finish an install a crash interrupted: run the saved plan again, then
 * node_snap_finish_locked() (a resync's) or node_snap_repair_end() (an
 * fsck repair's).  Called by node_open(); 0 if none was pending.
 */
int node_snap_recover(struct node *n, char *err, size_t errlen);

/*
 * 1 if an apply failing with r may be an event whose change a store copied
 * while it changed already shows (the name gone, the fid elsewhere, the
 * version newer): the failures a snapshot install, and a restore from a
 * backup replaying the events its copy overlapped, count as applied.
 */
int node_snap_lenient_err(int r);

/* 1 if the failure r of remote event ev is a change a snapshot already made.  Lock held. */
int node_snap_lenient_locked(struct node *n, const struct event *ev, int r);

/* Load the snapshot state from the journal at open. */
int node_snap_load(struct node *n);

/*
 * Create NODE_DIR (must be absent or empty) with a fresh journal and store,
 * and write cfg as its configuration.  cfg->name and the replication
 * settings come from the caller; a new node id is drawn into cfg->node_id,
 * and a cluster id into cfg->cluster_id unless one is given (all zero
 * means none, as for a node that joins no CA's cluster).  primary sets the
 * starting role (term 1); otherwise the node is a replica.
 */
int node_create(const char *dir, struct config *cfg, int primary, char *err, size_t errlen);

/*
 * Without the lock: the highest local seq that is both committed (journaled
 * and applied, or voided) and durable, the most a shipper may send.
 */
uint64_t node_synced_seq(struct node *n);

/*
 * Takes the lock: bound lowered below the first event of every kept-aside
 * tail of origin, so that trimming keeps tails.
 */
uint64_t node_tail_floor(struct node *n, uint64_t origin, uint64_t bound);

/* Without the lock: whether an fsync waits for peers' confirmations (ship now). */
int node_sync_waiting(struct node *n);

#endif
