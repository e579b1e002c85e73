/*
 * replay.c - replay a whole journal into a store (see replay.h).
 *
 * History order is a k-way merge: one cursor per origin walks that
 * origin's events in seq order, whose terms never decrease, and the next
 * event applied is the head with the lowest term (ties: the lowest origin).
 * Heads are kept decoded, so a cursor holds one event in memory; payloads
 * in the value log are read only when their event is applied.  Origins are
 * few (the cluster's members, past and present), so the lowest head is
 * found by a scan.
 */
#include <errno.h>
#include <stdlib.h>

#include "lib/bytes.h"
#include "lib/grow.h"
#include "node/replay.h"

#define REPLAY_PROGRESS_EVERY 4096

/* Bytes of one JOURNAL_META_TAILS entry: origin, first, last, term. */
#define TAIL_ENTRY_LEN 32

/* One origin's events in seq order. */
struct cursor {
	struct journal_iter *it;
	uint64_t origin;
	uint64_t last;	 /* highest seq to replay: the applied mark, or UINT64_MAX */
	struct event ev; /* the decoded head, owned while live */
	int live;
};

struct merge {
	struct journal *j;
	const struct replay_hooks *h;
	struct cursor *c; /* malloc'd, n cursors in origin order */
	size_t n, cap;
	uint64_t seen; /* records read, for the progress hook */
	uint64_t applied;
	uint64_t failed;
};

/* A record that does not decode reaches the failed hook as a bare number (type 0). */
static void report_bare(const struct replay_hooks *h, uint64_t origin, uint64_t seq,
			const char *why, int err)
{
	struct event bare = {.origin = origin, .seq = seq};

	if (h->failed)
		h->failed(h->arg, &bare, why, err);
}

/*
 * Move c to the next event of its origin that decodes, passing over kept-
 * aside events and reporting records that do not decode.  c->live stays 0
 * at the end of the origin or past c->last.  0 or a negative errno.
 */
static int cursor_next(struct merge *m, struct cursor *c)
{
	const struct replay_hooks *h = m->h;
	uint64_t origin, seq;
	const uint8_t *val;
	const char *why;
	size_t len;
	int r;

	if (c->live)
		event_free(&c->ev);
	c->live = 0;
	for (;;) {
		r = journal_iter_next(c->it, &origin, &seq, NULL, NULL, &val, &len);
		/* A key of the wrong length was logged by the journal; the next call passes it. */
		if (r == -EBADMSG)
			continue;
		if (r <= 0 || origin != c->origin || seq > c->last)
			return r < 0 ? r : 0;
		if (++m->seen % REPLAY_PROGRESS_EVERY == 0 && h->progress)
			h->progress(h->arg, m->seen);
		if (h->skip && h->skip(h->skip_arg, origin, seq)) {
			m->applied++;
			continue;
		}
		why = NULL;
		r = event_decode(val, len, &c->ev, NULL, &why);
		if (r == 0 && (c->ev.origin != origin || c->ev.seq != seq)) {
			event_free(&c->ev);
			why = "record is filed under another number";
			r = -EBADMSG;
		}
		if (r == 0) {
			c->live = 1;
			return 0;
		}
		report_bare(h, origin, seq, why, r);
	}
}

/* The first origin with an event at or after origin: 1 and *found, 0 if none, or -errno. */
static int next_origin(struct journal *j, uint64_t origin, uint64_t *found)
{
	struct journal_iter *it = NULL;
	uint64_t a, b;
	int r;

	r = journal_iter_new(j, JOURNAL_EVENTS, origin, 0, &it);
	while (r >= 0) {
		r = journal_iter_next(it, &a, &b, NULL, NULL, NULL, NULL);
		if (r == -EBADMSG) {
			r = 0;
			continue;
		}
		if (r == 1)
			*found = a;
		break;
	}
	journal_iter_free(it);
	return r;
}

/* One cursor per origin that has events, each on its first event.  0 or -errno. */
static int cursors_open(struct merge *m)
{
	struct cursor *c;
	uint64_t origin = 0;
	int r;

	for (;;) {
		r = next_origin(m->j, origin, &origin);
		if (r <= 0)
			break;
		r = grow_array(&m->c, &m->cap, m->n + 1);
		if (r < 0)
			break;
		c = &m->c[m->n];
		*c = (struct cursor){.origin = origin,
				     .last = m->h->upto_applied ? journal_applied(m->j, origin)
								: UINT64_MAX};
		r = journal_iter_new(m->j, JOURNAL_EVENTS, origin, 0, &c->it);
		if (r < 0)
			break;
		m->n++;
		r = cursor_next(m, c);
		if (r < 0 || origin == UINT64_MAX)
			break;
		origin++;
	}
	return r < 0 ? r : 0;
}

static void cursors_close(struct merge *m)
{
	size_t i;

	for (i = 0; i < m->n; i++) {
		if (m->c[i].live)
			event_free(&m->c[i].ev);
		journal_iter_free(m->c[i].it);
	}
	free(m->c);
}

/* The head that comes first in history: lowest term, then lowest origin.  NULL when done. */
static struct cursor *cursors_lowest(struct merge *m)
{
	struct cursor *best = NULL;
	size_t i;

	/* Cursors are in origin order, so keeping the first of equal terms breaks ties. */
	for (i = 0; i < m->n; i++)
		if (m->c[i].live && (!best || m->c[i].ev.term < best->ev.term))
			best = &m->c[i];
	return best;
}

/* Apply one decoded event (still the caller's): 1 if it applied (or was present), 0 if not. */
static int replay_one(struct journal *j, struct store *s, const struct replay_hooks *h,
		      struct event *ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	const char *why = NULL;
	int r;

	r = journal_load_payload(j, ev, &why);
	if (r == 0)
		r = apply_event(s, ev, &ctx, &why);
	if (r == -ESTALE) {
		if (h->forced)
			h->forced(h->arg, ev, why);
		ctx = (struct apply_ctx)APPLY_CTX_INIT;
		ctx.fresh = 1;
		r = apply_event(s, ev, &ctx, &why);
	}
	if (r < 0 && h->failed)
		h->failed(h->arg, ev, why, r);
	return r >= 0;
}

int replay_journal(struct journal *j, struct store *s, const struct replay_hooks *h,
		   uint64_t *applied, uint64_t *failed)
{
	struct merge m = {.j = j, .h = h};
	struct cursor *c;
	int r;

	r = cursors_open(&m);
	while (r == 0 && (c = cursors_lowest(&m))) {
		if (replay_one(j, s, h, &c->ev))
			m.applied++;
		else
			m.failed++;
		r = cursor_next(&m, c);
	}
	cursors_close(&m);
	*applied = m.applied;
	*failed = m.failed;
	return r;
}

int replay_tails_load(struct journal *j, struct replay_tails *t)
{
	const uint8_t *p;
	void *val = NULL;
	uint64_t rebuild = 0;
	size_t len = 0, i;
	int r;

	*t = (struct replay_tails){0};
	r = journal_meta_get(j, JOURNAL_META_TAILS, &val, &len);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		goto out;
	if (len % TAIL_ENTRY_LEN) {
		r = -EBADMSG;
		goto out;
	}
	if (len) {
		t->v = malloc(len / TAIL_ENTRY_LEN * sizeof(*t->v));
		if (!t->v) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (p = val, i = 0; i < len; i += TAIL_ENTRY_LEN)
		t->v[t->n++] = (struct node_tail){get_le64(p + i), get_le64(p + i + 8),
						  get_le64(p + i + 16), get_le64(p + i + 24)};
	r = journal_meta_get_u64(j, JOURNAL_META_REBUILD, &rebuild);
	if (r == -ENOENT)
		r = 0;
	t->in_store = rebuild != 0;
out:
	free(val);
	if (r < 0)
		replay_tails_free(t);
	return r;
}

void replay_tails_free(struct replay_tails *t)
{
	free(t->v);
	*t = (struct replay_tails){0};
}

int replay_tails_skip(void *skip_arg, uint64_t origin, uint64_t seq)
{
	const struct replay_tails *t = skip_arg;
	size_t i;

	for (i = 0; i < t->n; i++)
		if (t->v[i].origin == origin && seq >= t->v[i].first && seq <= t->v[i].last)
			return 1;
	return 0;
}
