/*
 * replay.h - replaying a whole journal into a store, from empty.
 *
 * 'ledgerctl rebuild' and fsck both build the store the journal describes
 * this way and compare it with the real one.  Events are applied in key
 * order through the apply engine.  An event refused with -ESTALE (the file
 * is not at the version the event expects, because an earlier event of it
 * was voided as a bad record) is applied anyway, as the node applied it.
 */
#ifndef LEDGERFS_REPLAY_H
#define LEDGERFS_REPLAY_H

#include <stdint.h>

#include "ledgerfs/event.h"
#include "ledgerfs/journal.h"
#include "ledgerfs/store.h"

struct replay_hooks {
	void *arg;
	/* Only events at or below each origin's applied mark (the applied state). */
	int upto_applied;
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
 * Replay j into s.  *applied counts events applied or found applied,
 * *failed those that did not apply; records that do not decode are only
 * reported to the failed hook.  Returns 0,
 * or a negative errno when the journal could not be read.
 */
int replay_journal(struct journal *j, struct store *s, const struct replay_hooks *h,
		   uint64_t *applied, uint64_t *failed);

#endif
