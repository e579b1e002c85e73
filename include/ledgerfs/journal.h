/*
 * journal.h - the node's LevelDB journal and its value log.
 *
 * Keys (DESIGN section 5; numbers big-endian so byte order is seq order):
 *   e/<origin:8><seq:8>   -> encoded event (payload may sit in the value log)
 *   a/<origin:8>          -> applied seq for that origin, u64 LE
 *   c/<peer:8>/<origin:8> -> checkpoint: highest seq the peer confirmed, u64 LE
 *   m/<name>              -> node metadata
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
 * Thread safety: none.  The caller serialises access (fs/node.c holds the
 * node's apply lock around every call).
 */
#ifndef LEDGERFS_JOURNAL_H
#define LEDGERFS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ledgerfs/event.h"

/* Payloads larger than this go to the value log. */
#define JOURNAL_INLINE_MAX 8192

/* Metadata names under m/. */
#define JOURNAL_META_NODE_ID	"node_id"    /* u64 */
#define JOURNAL_META_CLUSTER_ID "cluster_id" /* 16 bytes */
#define JOURNAL_META_FORMAT	"format"     /* u64 */
#define JOURNAL_META_NEXT_SEQ	"next_seq"   /* u64: seq the next local event gets */
#define JOURNAL_META_TERM	"term"	     /* u64 */
#define JOURNAL_META_CLEAN	"clean"	     /* u64: 1 after a clean unmount */
#define JOURNAL_META_ROLE	"role"	     /* u64: 1 primary, 0 replica */
#define JOURNAL_FORMAT		1

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

/* Writes pending applied marks and closes.  NULL is allowed. */
void journal_close(struct journal *j);

uint64_t journal_node_id(const struct journal *j);

/* Seq the next local event will get (first event is seq 1). */
uint64_t journal_next_seq(const struct journal *j);

/* Metadata as raw bytes.  *val is malloc'd, freed by the caller. -ENOENT if absent. */
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
 * -EEXIST if (origin, seq) is already journaled.
 */
int journal_put_remote(struct journal *j, struct event *ev);

/* Replace event (origin, seq) with an EV_VOID of the same number: its apply failed. */
int journal_void(struct journal *j, uint64_t origin, uint64_t seq);

/* Remove the record under (origin, seq) whatever it holds (fsck repair). */
int journal_delete(struct journal *j, uint64_t origin, uint64_t seq);

/*
 * Read event (origin, seq).  With payload set, a value-log payload is read
 * into ev->data and checked against its CRC.  The caller frees with
 * event_free().  -ENOENT if absent; -EBADMSG with *why on a bad record.
 */
int journal_get(struct journal *j, uint64_t origin, uint64_t seq, int payload, struct event *ev,
		const char **why);

/* Load the value-log payload of ev into ev->data (no-op when inline). */
int journal_load_payload(struct journal *j, struct event *ev, const char **why);

/* Record in memory that (origin, seq) is applied; written with the next batch. */
void journal_mark_applied(struct journal *j, uint64_t origin, uint64_t seq);

/* Highest applied seq for origin (pending marks included); 0 if none. */
uint64_t journal_applied(struct journal *j, uint64_t origin);

/* Make every journaled event and mark durable: value log fdatasync + LevelDB sync write. */
int journal_sync(struct journal *j);

/* Checkpoints: highest seq peer confirmed for origin.  0 if none. */
int journal_checkpoint_get(struct journal *j, uint64_t peer, uint64_t origin, uint64_t *seq);
/* Never moves a checkpoint backwards: a lower seq is ignored. */
int journal_checkpoint_put(struct journal *j, uint64_t peer, uint64_t origin, uint64_t seq);

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

#endif
