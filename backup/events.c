/*
 * events.c - the events a backup carries, written from a journal and
 * replayed into a restored store (events.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backup/events.h"
#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/grow.h"
#include "node/node.h"

#define MAGIC_LEN 8

static uint64_t seq_of(const struct evid *v, size_t n, uint64_t origin)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i].origin == origin)
			return v[i].seq;
	return 0;
}

int backup_event_append(struct journal *j, uint64_t origin, uint64_t seq, struct buf *out,
			struct event *hdr, char *err, size_t errlen)
{
	struct event ev;
	const char *why = NULL;
	size_t at = out->len, len;
	int r;

	r = journal_get(j, origin, seq, 1, &ev, &why);
	if (r < 0) {
		snprintf(err, errlen, "event %016" PRIx64 ":%" PRIu64 ": %s", origin, seq,
			 r == -ESTALE ? "trimmed from the journal meanwhile"
			 : why	      ? why
				      : strerror(-r));
		return r;
	}
	/* The payload is inline now. */
	ev.flags &= (uint16_t)~EVENT_F_VREF;
	len = event_encoded_len(&ev);
	r = buf_reserve(out, 4 + len);
	if (r == 0)
		r = event_encode(&ev, out->data + at + 4, len, &len);
	if (r == 0) {
		put_le32(out->data + at, (uint32_t)len);
		out->len = at + 4 + len;
		if (hdr) {
			hdr->term = ev.term;
			hdr->hlc = ev.hlc;
		}
	} else {
		snprintf(err, errlen, "event %016" PRIx64 ":%" PRIu64 ": %s", origin, seq,
			 r == -ENOMEM ? "out of memory" : strerror(-r));
	}
	event_free(&ev);
	return r;
}

int backup_events_write(struct journal *j, const struct evid *from, size_t nfrom,
			const struct evid *upto, size_t n, FILE *out, uint64_t *count, char *err,
			size_t errlen)
{
	struct buf b = BUF_INIT;
	uint64_t seq;
	size_t i;
	int r = 0;

	*count = 0;
	if (fwrite(BACKUP_EVENTS_MAGIC, MAGIC_LEN, 1, out) != 1) {
		snprintf(err, errlen, "writing the events: %s", strerror(errno));
		return -EIO;
	}
	for (i = 0; i < n && r == 0; i++) {
		for (seq = seq_of(from, nfrom, upto[i].origin) + 1; seq <= upto[i].seq; seq++) {
			buf_reset(&b);
			r = backup_event_append(j, upto[i].origin, seq, &b, NULL, err, errlen);
			if (r < 0)
				break;
			if (fwrite(b.data, b.len, 1, out) != 1) {
				r = -EIO;
				snprintf(err, errlen, "writing the events: %s", strerror(errno));
				break;
			}
			(*count)++;
		}
	}
	buf_free(&b);
	return r;
}

int backup_events_order(const void *a, const void *b)
{
	const struct event *x = a, *y = b;

	if (x->term != y->term)
		return x->term < y->term ? -1 : 1;
	if (x->origin != y->origin)
		return x->origin < y->origin ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return 0;
}

void backup_events_free(struct event *evs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		event_free(&evs[i]);
	free(evs);
}

int backup_events_decode(const uint8_t *buf, size_t len, struct event **evs, size_t *n, char *err,
			 size_t errlen)
{
	struct event *v = NULL;
	size_t at = MAGIC_LEN, count = 0, cap = 0;
	const char *why;
	uint32_t l;
	int r;

	if (len < MAGIC_LEN || memcmp(buf, BACKUP_EVENTS_MAGIC, MAGIC_LEN)) {
		snprintf(err, errlen, "not an events file (bad magic)");
		return -EBADMSG;
	}
	while (at < len) {
		if (len - at < 4 || (l = get_le32(buf + at)) > len - at - 4) {
			snprintf(err, errlen, "record %zu truncated", count + 1);
			r = -EBADMSG;
			goto fail;
		}
		if (grow_array(&v, &cap, count + 1) < 0) {
			r = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		why = NULL;
		r = event_decode(buf + at + 4, l, &v[count], NULL, &why);
		if (r < 0) {
			snprintf(err, errlen, "record %zu: %s", count + 1,
				 why ? why : strerror(-r));
			goto fail;
		}
		count++;
		at += 4 + (size_t)l;
	}
	if (count)
		qsort(v, count, sizeof(*v), backup_events_order);
	*evs = v;
	*n = count;
	return 0;
fail:
	backup_events_free(v, count);
	return r < 0 ? r : -EBADMSG;
}

int backup_events_apply(struct store *s, const struct event *evs, size_t n, int lenient,
			uint64_t *applied, uint64_t *skipped, char *err, size_t errlen)
{
	size_t i;

	*applied = *skipped = 0;
	for (i = 0; i < n; i++) {
		struct apply_ctx ctx = APPLY_CTX_INIT;
		const char *why = NULL;
		int r = apply_event(s, &evs[i], &ctx, &why);

		if (r < 0 && lenient && node_snap_lenient_err(r))
			r = APPLY_SKIPPED;
		if (r < 0) {
			snprintf(err, errlen,
				 "event %016" PRIx64 ":%" PRIu64 " (%s %s) does not apply: %s: %s",
				 evs[i].origin, evs[i].seq, event_type_name(evs[i].type),
				 evs[i].path ? evs[i].path : "", why ? why : "", strerror(-r));
			return r;
		}
		if (r == APPLY_SKIPPED)
			(*skipped)++;
		else
			(*applied)++;
	}
	return 0;
}
