/*
 * fsck_journal.c - the journal checks of fsck.ledgerfs (checks 1 to 4).
 *
 * One pass over the event records decodes each one, reads its value-log
 * payload back (the CRC of a large write is only in the value log) and
 * follows each origin's seq numbers; the applied marks, the next local seq
 * and the checkpoints are then checked against what that pass found.
 *
 * A record that does not decode is replaced by a void event of the same
 * number: the journal then says "nothing happened here", which keeps seq
 * continuity, while the store keeps whatever the lost event had done to
 * it.  A gap in the numbering cannot be repaired here (the events may
 * exist on a peer), nor can a mark that is ahead of the journal, because
 * the journal API only ever raises marks and checkpoints.
 *
 * The unapplied tail is replayed through node_replay(), the same code a
 * mount runs after an unclean stop, so fsck and mount can never disagree
 * about what replaying means.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsck.h"
#include "journal/event.h"
#include "lib/bytes.h"
#include "lib/grow.h"
#include "node/node.h"

/* Progress lines are redrawn every this many records. */
#define PROGRESS_EVERY 4096

/* A record that failed check 1; why is a static string from the decoder or the value log. */
struct bad_record {
	uint64_t origin;
	uint64_t seq;
	const char *why;
};

/*
 * 0 if the record under (origin, seq) is sound, -EBADMSG with *why if it is
 * damaged, another negative errno if it could not be read at all.
 */
static int record_check(struct fsck *f, uint64_t origin, uint64_t seq, const uint8_t *val,
			size_t len, const char **why)
{
	struct event ev;
	size_t used = 0;
	int r;

	r = event_decode(val, len, &ev, &used, why);
	if (r == -EPROTO)
		return -EBADMSG;
	if (r < 0)
		return r;
	if (used != len) {
		*why = "trailing bytes after the record";
		r = -EBADMSG;
	} else if (ev.origin != origin || ev.seq != seq) {
		*why = "record does not match its key";
		r = -EBADMSG;
	} else {
		r = journal_load_payload(f->j, &ev, why);
	}
	event_free(&ev);
	return r;
}

static int bad_add(struct bad_record **bad, size_t *n, size_t *cap, uint64_t origin, uint64_t seq,
		   const char *why)
{
	if (grow_array(bad, cap, *n + 1) < 0)
		return -ENOMEM;
	(*bad)[(*n)++] = (struct bad_record){origin, seq, why};
	return 0;
}

/* A gap below the applied mark was applied around already; one above it stops a replay. */
static void report_gap(struct fsck *f, uint64_t origin, uint64_t from, uint64_t to)
{
	if (to >= journal_applied(f->j, origin))
		f->replay_blocked = 1;
	fsck_problem(f, NULL,
		     "journal: origin %016" PRIx64 ": events %" PRIu64 "..%" PRIu64
		     " are missing (a gap in the numbering)",
		     origin, from, to);
}

/* Check 1 and the numbering half of check 2, in one pass over the event records. */
static int check_events(struct fsck *f)
{
	struct journal_iter *it = NULL;
	struct bad_record *bad = NULL;
	size_t nbad = 0, bad_cap = 0, i;
	uint64_t origin, seq;
	const uint8_t *val;
	size_t len;
	int r;

	r = journal_iter_new(f->j, JOURNAL_EVENTS, 0, 0, &it);
	while (r >= 0) {
		struct fsck_origin *o;
		const char *why = "unknown damage";

		r = journal_iter_next(it, &origin, &seq, NULL, NULL, &val, &len);
		if (r == -EBADMSG) {
			/* The journal has logged the key's length; the next step moves past it. */
			fsck_problem(f, NULL, "journal: an event record has a malformed key");
			r = 0;
			continue;
		}
		if (r <= 0)
			break;
		if (++f->events % PROGRESS_EVERY == 0)
			fsck_progress(f, "checking journal: %" PRIu64 " records", f->events);
		o = fsck_origin_get(f, origin);
		if (!o) {
			r = -ENOMEM;
			break;
		}
		if (seq != o->last + 1)
			report_gap(f, origin, o->last + 1, seq - 1);
		o->last = seq;
		r = record_check(f, origin, seq, val, len, &why);
		if (r == -EBADMSG)
			r = bad_add(&bad, &nbad, &bad_cap, origin, seq, why);
		else if (r < 0)
			fprintf(stderr,
				"fsck.ledgerfs: journal: event %016" PRIx64 ":%" PRIu64
				": %s: %s\n",
				origin, seq, why, strerror(-r));
	}
	journal_iter_free(it);
	fsck_progress_end(f);
	for (i = 0; r == 0 && i < nbad; i++) {
		struct bad_record *b = &bad[i];

		if (fsck_problem(
			f,
			"replace it with a void event; warning: its change is lost from the "
			"journal, the store keeps what it had",
			"journal: event %016" PRIx64 ":%" PRIu64 ": %s", b->origin, b->seq, b->why))
			fsck_fix_done(f, journal_void(f->j, b->origin, b->seq));
		else if (b->seq > journal_applied(f->j, b->origin))
			f->replay_blocked = 1;
	}
	free(bad);
	return r < 0 ? r : 0;
}

/* The marks half of check 2: no origin applied beyond its last event. */
static int check_applied(struct fsck *f)
{
	struct journal_iter *it = NULL;
	const uint8_t *val;
	uint64_t origin;
	size_t len;
	int r;

	r = journal_iter_new(f->j, JOURNAL_APPLIED, 0, 0, &it);
	while (r >= 0) {
		struct fsck_origin *o;

		r = journal_iter_next(it, &origin, NULL, NULL, NULL, &val, &len);
		if (r == -EBADMSG) {
			fsck_problem(f, NULL, "journal: an applied mark has a malformed key");
			r = 0;
			continue;
		}
		if (r <= 0)
			break;
		if (len != 8) {
			fsck_problem(f, NULL,
				     "journal: origin %016" PRIx64
				     ": applied mark has %zu bytes, not 8",
				     origin, len);
			continue;
		}
		o = fsck_origin_get(f, origin);
		if (!o) {
			r = -ENOMEM;
			break;
		}
		o->applied = get_le64(val);
		if (o->applied > o->last)
			fsck_problem(f, NULL,
				     "journal: origin %016" PRIx64 ": applied seq %" PRIu64
				     " is past its last event %" PRIu64,
				     origin, o->applied, o->last);
	}
	journal_iter_free(it);
	return r < 0 ? r : 0;
}

/* The rest of check 2: the next local seq must not reuse a journaled number. */
static int check_next_seq(struct fsck *f)
{
	struct fsck_origin *o = fsck_origin_get(f, f->cfg.node_id);
	uint64_t next;
	int r;

	if (!o)
		return -ENOMEM;
	r = journal_meta_get_u64(f->j, JOURNAL_META_NEXT_SEQ, &next);
	if (r < 0) {
		fsck_problem(f, NULL, "journal: next seq unreadable: %s", strerror(-r));
		return 0;
	}
	if (next > o->last)
		return 0;
	if (fsck_problem(f, "raise it",
			 "journal: next seq %" PRIu64 " is not past local event %" PRIu64, next,
			 o->last))
		fsck_fix_done(f, journal_meta_put_u64(f->j, JOURNAL_META_NEXT_SEQ, o->last + 1, 1));
	return 0;
}

/* Check 3: no peer confirmed an event this journal does not have. */
static int check_checkpoints(struct fsck *f)
{
	struct journal_iter *it = NULL;
	uint64_t peer, origin, seq;
	const uint8_t *val;
	size_t len;
	int r;

	r = journal_iter_new(f->j, JOURNAL_CHECKPOINTS, 0, 0, &it);
	while (r >= 0) {
		struct fsck_origin *o;

		r = journal_iter_next(it, &peer, &origin, NULL, NULL, &val, &len);
		if (r == -EBADMSG) {
			fsck_problem(f, NULL, "journal: a checkpoint has a malformed key");
			r = 0;
			continue;
		}
		if (r <= 0)
			break;
		if (len != 8) {
			fsck_problem(f, NULL,
				     "journal: checkpoint of peer %016" PRIx64
				     " for origin %016" PRIx64 " has %zu bytes, not 8",
				     peer, origin, len);
			continue;
		}
		o = fsck_origin_get(f, origin);
		if (!o) {
			r = -ENOMEM;
			break;
		}
		seq = get_le64(val);
		if (seq > o->last)
			fsck_problem(f, NULL,
				     "journal: checkpoint of peer %016" PRIx64
				     " for origin %016" PRIx64 " is at %" PRIu64
				     ", past the journal's last event %" PRIu64
				     " (this version cannot lower a checkpoint)",
				     peer, origin, seq, o->last);
	}
	journal_iter_free(it);
	return r < 0 ? r : 0;
}

int fsck_check_journal(struct fsck *f)
{
	int r;

	fsck_progress(f, "checking journal");
	r = check_events(f);
	if (r == 0)
		r = check_applied(f);
	if (r == 0)
		r = check_next_seq(f);
	if (r == 0)
		r = check_checkpoints(f);
	if (r < 0) {
		fsck_progress_end(f);
		fprintf(stderr, "fsck.ledgerfs: %s: reading the journal failed: %s\n", f->dir,
			strerror(-r));
		return r;
	}
	for (size_t i = 0; i < f->norigins; i++)
		fsck_info(f, "origin %016" PRIx64 ": events 1..%" PRIu64 ", applied %" PRIu64,
			  f->origins[i].origin, f->origins[i].last, f->origins[i].applied);
	return 0;
}

/*
 * Replay the tail through a node opened the way a mount opens it.  The
 * journal is closed meanwhile (node_open takes its lock) and reopened after.
 */
static int replay_tail(struct fsck *f)
{
	char err[1024], dir[PATH_MAX + 16];
	uint64_t replayed = 0, skipped = 0;
	struct node *n = NULL;
	const char *why = NULL;
	int r, rj;

	journal_close(f->j);
	f->j = NULL;
	r = node_open(f->real, 0, &n, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "fsck.ledgerfs: %s\n", err);
	else
		r = node_replay(n, &replayed, &skipped);
	node_close(n, 0);
	if (r == 0)
		fsck_info(f, "replayed %" PRIu64 " events, %" PRIu64 " were in the store already",
			  replayed, skipped);
	snprintf(dir, sizeof(dir), "%s/%s", f->real, NODE_JOURNAL_DIR);
	rj = journal_open(dir, 0, 0, &f->j, &why);
	if (rj < 0) {
		fprintf(stderr, "fsck.ledgerfs: %s: %s\n", dir, why ? why : strerror(-rj));
		return rj;
	}
	for (size_t i = 0; i < f->norigins; i++)
		f->origins[i].applied = journal_applied(f->j, f->origins[i].origin);
	return r;
}

int fsck_check_tail(struct fsck *f)
{
	uint64_t tail = 0;
	size_t i;
	int r;

	for (i = 0; i < f->norigins; i++)
		if (f->origins[i].last > f->origins[i].applied)
			tail += f->origins[i].last - f->origins[i].applied;
	if (tail == 0)
		return 0;
	if (!fsck_problem(f, "replay them into the store",
			  "journal: %" PRIu64 " unapplied events (the node did not stop cleanly)",
			  tail)) {
		f->tail_left = 1;
		return 0;
	}
	fsck_progress(f, "replaying %" PRIu64 " events", tail);
	r = replay_tail(f);
	fsck_progress_end(f);
	if (r < 0 && !f->j)
		return r;
	fsck_fix_done(f, r);
	if (r < 0)
		f->tail_left = 1;
	return 0;
}
