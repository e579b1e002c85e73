/*
 * replay.h - replaying a whole journal into a store, from empty.
 *
 * 'ledgerctl rebuild', fsck and the rebuild of a store that holds
 * kept-aside events (rebuild.h) all build the store the journal describes
 * this way.  Events go through the apply engine in history order: by term,
 * then origin, then seq.  Key order (origin after origin) is not history
 * order once a failover happened: a new primary's changes of term 2 may
 * build on files its predecessor made in term 1, whatever their origin ids.
 * Since the changes of one term come from that term's primary alone, term
 * order reproduces what every node applied.  An event refused with -ESTALE
 * (the file is not at the version the event expects, because an earlier
 * event of it was voided as a bad record) is applied anyway, as the node
 * applied it.
 */
#ifndef LEDGERFS_REPLAY_H
#define LEDGERFS_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "journal/event.h"
#include "journal/journal.h"
#include "node/node.h"
#include "store/store.h"

struct replay_hooks {
	void *arg;
	/* Only events at or below each origin's applied mark (the applied state). */
	int upto_applied;
	/*
	 * Nonzero for an event kept aside (may be NULL): it is passed over
	 * like a void, counted as applied, nothing applied.  It gets
	 * skip_arg, so replay_tails_skip() serves callers whose arg is theirs.
	 */
	int (*skip)(void *skip_arg, uint64_t origin, uint64_t seq);
	void *skip_arg;
	/* An event applied despite a version mismatch (may be NULL). */
	void (*forced)(void *arg, const struct event *ev, const char *why);
	/*
	 * An event that does not apply (may be NULL); replay goes on.  A
	 * record that does not decode comes with only origin and seq set.
	 */
	void (*failed)(void *arg, const struct event *ev, const char *why, int err);
	/* Called every few thousand events with the count so far (may be NULL). */
	void (*progress)(void *arg, uint64_t events);
};

/*
 * Replay j into s.  *applied counts events applied, found applied or
 * skipped, *failed those that did not apply; records that do not decode
 * are only reported to the failed hook.  Returns 0, or a negative errno
 * when the journal could not be read.
 */
int replay_journal(struct journal *j, struct store *s, const struct replay_hooks *h,
		   uint64_t *applied, uint64_t *failed);

/*
 * The kept-aside tails a journal records (JOURNAL_META_TAILS), for readers
 * that have a journal but no node: fsck, 'ledgerctl rebuild', tail-export.
 */
struct replay_tails {
	struct node_tail *v; /* malloc'd, n entries */
	size_t n;
	int in_store; /* the rebuild flag: the store still holds their effects */
};

/*
 * Load j's tails into *t (none is not an error).  The caller frees with
 * replay_tails_free().  0 or a negative errno (-EBADMSG for a record whose
 * length is not a multiple of its entry).
 */
int replay_tails_load(struct journal *j, struct replay_tails *t);
void replay_tails_free(struct replay_tails *t);

/* A skip hook: skip_arg is a struct replay_tails; nonzero inside one of its tails. */
int replay_tails_skip(void *skip_arg, uint64_t origin, uint64_t seq);

#endif
