/*
 * journal.h - the node's LevelDB journal and its value log.
 *
 * Keys (DESIGN section 5; numbers big-endian so byte order is seq order):
 *   e/<origin:8><seq:8>   -> encoded event (payload may sit in the value log)
 *   a/<origin:8>          -> applied seq for that origin, u64 LE
 *   c/<peer:8>/<origin:8> -> checkpoint: highest seq the peer confirmed, u64 LE
 *   m/<name>              -> node metadata, and two kinds the journal keeps itself:
 *   m/trimmed/<origin:16 hex> -> highest trimmed seq of origin, u64 LE (see Trimming)
 *   m/vseg/<segment:08u>  -> per value-log segment, the (origin, highest seq) of the
 *                            events whose payloads it holds: u64 LE pairs
 *
 * Large write payloads go to an append-only value log (journal/vlog/) and
 * the event keeps a reference, so LevelDB compactions never rewrite them
 * (WiscKey, FAST '16).  Small payloads stay inline.
 *
 * Applied marks are cheap: journal_mark_applied() only records the mark in
 * memory and it rides on the next LevelDB write (append, sync or close).  A
 * crash can therefore leave the applied seq one event behind per origin;
 * the apply engine recognises such an event as already applied.
 *
 * Trimming.  journal_trim() deletes an origin's events up to a seq once
 * the caller (the daemon) decided every member confirmed them and the
 * retention window let them go (journal_trim_point()).  The trimmed mark
 * only rises, so a trimmed event is told apart from one that never
 * existed: journal_get() returns -ESTALE for it, not -ENOENT.  A
 * value-log segment is deleted once, for each (origin, seq) listed under
 * its m/vseg/ key, the origin's trimmed mark is >= seq: then every event
 * that could reference it is gone.  The segment appends go to is never
 * deleted.  The list is written in the same batch as each event whose
 * payload goes to the segment, so it always covers every journaled
 * reference.  Segments written before this list existed have none and are
 * kept.  A segment file is deleted only after a synced write made the trim
 * durable, and its key only after the deletion is (directory fsync), so a
 * crash in between leaves a key that the next journal_trim() acts on again.
 *
 * Thread safety: none, journal_sync_log(), journal_compact_events() and
 * the iterators apart (a LevelDB iterator reads a consistent view beside
 * writers).  The caller serialises the rest (node/node.c holds the node's
 * apply lock around every call).
 */
#ifndef LEDGERFS_JOURNAL_H
#define LEDGERFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "journal/event.h"
#include "journal/vlog.h"

/*
 * Payloads larger than this go to the value log.  In a batch of at least
 * JOURNAL_BULK_RUN received events, a backlog such as a catch-up's, the
 * bound is JOURNAL_BULK_INLINE_MAX, so that a page-sized write goes there
 * too: kept inline, 4 KiB payloads kept LevelDB's compaction busy a
 * quarter of a core while a replica caught up, and cost 20% more CPU per
 * event.  Elsewhere an fsync may be waiting for the event, here or on the
 * primary (sync_peers), and a payload in the value log is one more file to
 * flush: 4 KiB write+fsync with sync_peers = 1 fell from 0.54 to 0.45 of
 * its rate with sync_peers = 0 when every received page went there.
 */
#define JOURNAL_INLINE_MAX	8192
#define JOURNAL_BULK_INLINE_MAX 2048
#define JOURNAL_BULK_RUN	64

/* Metadata names under m/. */
#define JOURNAL_META_NODE_ID	"node_id"    /* u64 */
#define JOURNAL_META_CLUSTER_ID "cluster_id" /* 16 bytes */
#define JOURNAL_META_FORMAT	"format"     /* u64 */
#define JOURNAL_META_NEXT_SEQ	"next_seq"   /* u64: seq the next local event gets */
#define JOURNAL_META_TERM	"term"	     /* u64 */
#define JOURNAL_META_CLEAN	"clean"	     /* u64: 1 after a clean unmount */
#define JOURNAL_META_ROLE	"role"	     /* u64: 1 primary, 0 replica */
/*
 * Failover state (node/node.c):
 *   fences:  n x (u64 origin, u64 term, u64 seq) LE: events of origin with a
 *            term below term and a seq above seq are refused (a promotion
 *            at term cut that origin's history there)
 *   tails:   n x (u64 origin, u64 first, u64 last, u64 term) LE: events of
 *            origin first..last this node holds beyond a fence: kept aside,
 *            never applied again, shipped to peers as voids
 *   rebuild: u64 1: the store still holds kept-aside events; the next open
 *            moves it aside and rebuilds it from the journal without them
 */
#define JOURNAL_META_FENCES  "fences"
#define JOURNAL_META_TAILS   "tails"
#define JOURNAL_META_REBUILD "rebuild"
/*
 * Snapshot resync (node_snap.c): "snap" is u8 state (1 needed, 2 installing),
 * u32 count, count x (u64 origin, u64 from, u64 until): from = the
 * snapshot's position, until = the sender's vector when it ended.
 * "snapuntil" is u32 count, count x (u64 origin, u64 seq): remote events up
 * to seq may find changes that the snapshot already shows.
 */
#define JOURNAL_META_SNAP      "snap"
#define JOURNAL_META_SNAPUNTIL "snapuntil"
/*
 * Store checkpoint (node/checkpoint.c): n x (u64 origin, u64 seq) LE, the
 * applied marks of the last checkpoint: the store held every event up to
 * them durably (a syncfs() of the store came after them).  Absent on a
 * node that never checkpointed: its store counts as durable up to the
 * applied marks.
 */
#define JOURNAL_META_STORED "stored"
#define JOURNAL_FORMAT	       1

struct journal;

/*
 * Open the journal in dir (NODE_DIR/journal).  With create set, the
 * directory is made and must not hold a journal yet; node_id is recorded.
 * Without it, the journal must exist and node_id is ignored.
 * On success *out is owned by the caller: journal_close().
 * Errors: negative errno; *why (may be NULL) names the problem.
 */
int journal_open(const char *dir, int create, uint64_t node_id, struct journal **out,
		 const char **why);

/*
 * Does another process hold the journal in dir open?  LevelDB keeps a
 * POSIX record lock on dir/LOCK while a database is open, and a running
 * node holds its journal open for as long as it runs; a node killed with
 * kill -9 holds nothing.  1 with *pid (may be NULL) the holder's process
 * id, 0 when nobody holds it (or there is no LOCK file), or a negative
 * errno.  Only tests the lock (F_GETLK): nothing in dir is written.
 */
int journal_lock_holder(const char *dir, pid_t *pid);

/* Writes pending applied marks and closes.  NULL is allowed. */
void journal_close(struct journal *j);

uint64_t journal_node_id(const struct journal *j);

/* Seq the next local event will get (first event is seq 1). */
uint64_t journal_next_seq(const struct journal *j);

/*
 * Metadata as raw bytes.  *val is malloc'd, freed by the caller. -ENOENT if
 * absent.  Names under trimmed/ and vseg/ belong to the journal: put
 * refuses them with -EPERM.
 */
int journal_meta_get(struct journal *j, const char *name, void **val, size_t *len);
int journal_meta_put(struct journal *j, const char *name, const void *val, size_t len, int sync);
int journal_meta_get_u64(struct journal *j, const char *name, uint64_t *val);
int journal_meta_put_u64(struct journal *j, const char *name, uint64_t val, int sync);

/*
 * Journal a new local event: sets ev->origin (this node), ev->seq (next),
 * ev->hlc and ev->term, moves a large payload to the value log (setting
 * EVENT_F_VREF and ev->vref; ev->data stays as it was), and writes the event
 * together with the new next seq and pending applied marks in one batch.
 * Not synced: journal_sync() makes it durable.
 */
int journal_append(struct journal *j, struct event *ev);

/*
 * Journal an event made elsewhere (origin != this node), keeping its
 * origin, seq, hlc and term.  Same value-log rule as journal_append().
 * -EEXIST if (origin, seq) is already journaled or was trimmed.
 */
int journal_put_remote(struct journal *j, struct event *ev);

/*
 * Journal evs[0..n-1], events made elsewhere, in one LevelDB write, as
 * journal_put_remote() would one by one but for the value-log bound
 * (JOURNAL_BULK_RUN); evs stay as they are.  Events
 * already journaled or trimmed are left out, and so is evs[i] when skip
 * (may be NULL) has skip[i] nonzero.  On an error nothing of the batch is
 * journaled.
 */
int journal_put_remote_batch(struct journal *j, const struct event *evs, size_t n, const int *skip);

/* Replace event (origin, seq) with an EV_VOID of the same number: its apply failed. */
int journal_void(struct journal *j, uint64_t origin, uint64_t seq);

/* Remove the record under (origin, seq) whatever it holds (fsck repair). */
int journal_delete(struct journal *j, uint64_t origin, uint64_t seq);

/*
 * Read event (origin, seq).  With payload set, a value-log payload is read
 * into ev->data and checked against its CRC.  The caller frees with
 * event_free().  -ESTALE if it was trimmed (seq <= journal_trimmed()),
 * -ENOENT if otherwise absent; -EBADMSG with *why on a bad record.
 */
int journal_get(struct journal *j, uint64_t origin, uint64_t seq, int payload, struct event *ev,
		const char **why);

/* Load the value-log payload of ev into ev->data (no-op when inline). */
int journal_load_payload(struct journal *j, struct event *ev, const char **why);

/*
 * A descriptor of value-log segment that the caller owns (close(2)), to
 * read an event's payload without the node lock with vlog_read_fd()
 * (vlog.h).
 */
int journal_payload_fd(struct journal *j, uint32_t segment, int *fd, const char **why);

/* Record in memory that (origin, seq) is applied; written with the next batch. */
void journal_mark_applied(struct journal *j, uint64_t origin, uint64_t seq);

/* Highest applied seq for origin (pending marks included); 0 if none. */
uint64_t journal_applied(struct journal *j, uint64_t origin);

/*
 * Every origin's applied mark (pending ones included), in *v, n of them.
 * *v is malloc'd (NULL when n is 0), the caller frees it.  0 or -ENOMEM.
 */
int journal_applied_marks(struct journal *j, struct evid **v, size_t *n);

/* Make every journaled event and mark durable: value log and LevelDB log fdatasync. */
int journal_sync(struct journal *j);

/* A journal_sync() in steps (below). */
struct journal_sync {
	uint64_t gen;	     /* LevelDB writes it covers */
	struct vlog_sync vs; /* the value log's part */
};

/*
 * journal_sync() in three steps, so that the caller need not hold its lock
 * while the disk flushes.  journal_sync_begin() writes the pending applied
 * marks; it returns 1 when a sync is needed, 0 when everything is durable
 * already, or a negative errno.  journal_sync_log() then makes every
 * value-log record and LevelDB write made before the begin durable, the
 * value log first; unlike every other call it may run concurrently with
 * the others, and writes go on meanwhile.  journal_sync_end(), with the
 * caller's lock again after every begin that returned 1, is given what
 * journal_sync_log() returned and records that nothing is left to sync
 * unless writes came in between.
 */
int journal_sync_begin(struct journal *j, struct journal_sync *s);
int journal_sync_log(struct journal *j, struct journal_sync *s);
void journal_sync_end(struct journal *j, struct journal_sync *s, int result);

/* Checkpoints: highest seq peer confirmed for origin.  0 if none. */
int journal_checkpoint_get(struct journal *j, uint64_t peer, uint64_t origin, uint64_t *seq);
/* Never moves a checkpoint backwards: a lower seq is ignored. */
int journal_checkpoint_put(struct journal *j, uint64_t peer, uint64_t origin, uint64_t seq);
/*
 * Delete every checkpoint of peer: it left the membership, or its name now
 * belongs to a new node (a replaced one), whose confirmations start afresh.
 */
int journal_checkpoint_forget(struct journal *j, uint64_t peer);

/*
 * Iteration over keys of one kind in key order.  Each step hands out the
 * raw value (valid until the next step) so fsck can look at records that
 * do not decode.
 */
struct journal_iter;

enum journal_kind {
	JOURNAL_EVENTS = 'e',
	JOURNAL_APPLIED = 'a',
	JOURNAL_CHECKPOINTS = 'c',
	JOURNAL_META = 'm',
};

/*
 * Start at the first key of kind >= (origin, seq) (events), >= origin
 * (applied), >= peer (checkpoints; origin then ignored) or the first meta
 * key.  *out is freed with journal_iter_free().
 */
int journal_iter_new(struct journal *j, enum journal_kind kind, uint64_t origin, uint64_t seq,
		     struct journal_iter **out);
void journal_iter_free(struct journal_iter *it);

/*
 * Next record: 1 and fills the out-parameters, 0 at the end, negative errno
 * on a LevelDB error.  For events a = origin, b = seq; applied: a = origin,
 * b = 0; checkpoints: a = peer, b = origin; meta: a = b = 0 and *name points
 * at the name (not terminated, name_len bytes).  *val, *len: the raw value.
 */
int journal_iter_next(struct journal_iter *it, uint64_t *a, uint64_t *b, const char **name,
		      size_t *name_len, const uint8_t **val, size_t *len);

/* Bytes in the value log and in LevelDB's files, for benchmarks and status. */
int journal_disk_usage(struct journal *j, uint64_t *leveldb_bytes, uint64_t *vlog_bytes);

/* Events deleted per LevelDB write batch while trimming. */
#define JOURNAL_TRIM_BATCH 1000
/* Events journal_trim_point() examines at most per call. */
#define JOURNAL_TRIM_SCAN_MAX 100000

/*
 * Delete the events of origin with seq <= upto and raise its trimmed mark
 * to upto, then delete the value-log segments no remaining event can
 * reference (see Trimming above), including any a crash left behind.
 * Deletes go in batches of JOURNAL_TRIM_BATCH, each raising the mark to its
 * last seq, so a crash leaves a shorter trim, never a hole.  upto at or
 * below the mark deletes nothing (and still looks for segments to delete).
 * -EINVAL for origin 0 or upto above journal_applied(origin): an event is
 * trimmed only after this node applied it.  *trimmed (may be NULL) gets
 * the number of event records deleted, also when deleting a segment fails
 * afterwards (that error is returned; the next call retries).  The cost is
 * one LevelDB delete per event: bound upto with journal_trim_point().
 */
int journal_trim(struct journal *j, uint64_t origin, uint64_t upto, uint64_t *trimmed);

/* Highest trimmed seq of origin: every event <= it is gone.  0 if none. */
int journal_trimmed(struct journal *j, uint64_t origin, uint64_t *seq);

/* Oldest seq of origin still journaled; 0 if the journal holds none. */
int journal_oldest(struct journal *j, uint64_t origin, uint64_t *seq);

/*
 * The highest seq of origin that may be trimmed now, into *upto: at most
 * confirmed (the lowest seq every member confirmed, from the caller) and
 * journal_applied(origin), and never an event that retention keeps:
 *   - retain_age_ms (0: none): an event is kept until now_ms is at least
 *     retain_age_ms past the physical part of its hlc (ms since the epoch,
 *     the clock of the node that made it), but only while *excess is 0;
 *   - excess (NULL: none): how many bytes the journal is over its bound.
 *     While *excess is above 0, events go however young they are, and
 *     each one the walk passes takes its size (key + record + value-log
 *     record) off *excess, so that the caller can carry what is left to
 *     the next origin.
 * The walk goes oldest first from the oldest retained event and stops at
 * the first event kept, so retention holds a contiguous suffix.  An event
 * that does not decode stops the walk (fsck repairs it).  At most
 * JOURNAL_TRIM_SCAN_MAX events are examined per call (each is decoded,
 * CRC included, when an age or an excess is given), so one call bounds the
 * work of the journal_trim() it leads to; the next call goes on from
 * there.  *upto is journal_trimmed(origin) when nothing may be trimmed.
 */
int journal_trim_point(struct journal *j, uint64_t origin, uint64_t confirmed,
		       uint64_t retain_age_ms, uint64_t now_ms, uint64_t *excess, uint64_t *upto);

/*
 * Bytes LevelDB's table files still hold of trimmed events: LevelDB gives
 * their space back only when a compaction goes over them.  An estimate
 * from the files' index blocks (leveldb_approximate_sizes() over each
 * origin's trimmed range), no I/O: the journal's size on disk less this is
 * what it keeps; the caller compacts (journal_compact_events()) once the
 * estimate is worth the rewrite.
 */
uint64_t journal_dead_bytes(struct journal *j);

/*
 * Compact LevelDB's files over the events of origin up to upto, so that
 * the space of trimmed events comes back now, not whenever LevelDB's own
 * compactions reach them (with keys written in order, that can be never
 * for the oldest).  It flushes LevelDB's write buffer and rewrites the
 * table files that overlap the range; as it touches nothing but LevelDB,
 * it may run concurrently with every other call, and should: it takes as
 * long as reading those files.
 */
void journal_compact_events(struct journal *j, uint64_t origin, uint64_t upto);

/*
 * Size at which the value log starts a new segment (vlog_set_segment_max()).
 * The segment appends go to is never deleted, so this is how much the value
 * log can hold beyond what retention keeps.
 */
void journal_set_vlog_segment_max(struct journal *j, uint64_t bytes);

#endif
