/*
 * replay.c - replay a whole journal into a store (see replay.h).
 */
#include <errno.h>

#include "ledgerfs/replay.h"

#define REPLAY_PROGRESS_EVERY 4096

/* Apply one record: 1 if it applied (or was present), 0 if it failed, -1 if it does not decode. */
static int replay_one(struct journal *j, struct store *s, const struct replay_hooks *h,
		      uint64_t origin, uint64_t seq, const uint8_t *val, size_t len)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	const char *why = NULL;
	struct event ev;
	int r;

	r = event_decode(val, len, &ev, NULL, &why);
	if (r == 0 && (ev.origin != origin || ev.seq != seq)) {
		event_free(&ev);
		why = "record is filed under another number";
		r = -EBADMSG;
	}
	if (r < 0) {
		/* A record that does not decode reaches the hook as a bare number (type 0). */
		struct event bare = {.origin = origin, .seq = seq};

		if (h->failed)
			h->failed(h->arg, &bare, why, r);
		return -1;
	}
	r = journal_load_payload(j, &ev, &why);
	if (r == 0)
		r = apply_event(s, &ev, &ctx, &why);
	if (r == -ESTALE) {
		if (h->forced)
			h->forced(h->arg, &ev, why);
		ctx = (struct apply_ctx)APPLY_CTX_INIT;
		ctx.fresh = 1;
		r = apply_event(s, &ev, &ctx, &why);
	}
	if (r < 0 && h->failed)
		h->failed(h->arg, &ev, why, r);
	event_free(&ev);
	return r >= 0;
}

int replay_journal(struct journal *j, struct store *s, const struct replay_hooks *h,
		   uint64_t *applied, uint64_t *failed)
{
	struct journal_iter *it = NULL;
	uint64_t origin, seq, n = 0;
	const uint8_t *val;
	size_t len;
	int r;

	*applied = *failed = 0;
	r = journal_iter_new(j, JOURNAL_EVENTS, 0, 0, &it);
	while (r >= 0) {
		r = journal_iter_next(it, &origin, &seq, NULL, NULL, &val, &len);
		if (r == -EBADMSG) {
			r = 0;
			continue;
		}
		if (r <= 0)
			break;
		if (++n % REPLAY_PROGRESS_EVERY == 0 && h->progress)
			h->progress(h->arg, n);
		if (h->upto_applied && seq > journal_applied(j, origin))
			continue;
		r = replay_one(j, s, h, origin, seq, val, len);
		if (r > 0)
			(*applied)++;
		else if (r == 0)
			(*failed)++;
		r = 0;
	}
	journal_iter_free(it);
	return r < 0 ? r : 0;
}
