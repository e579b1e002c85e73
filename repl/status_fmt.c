/*
 * status_fmt.c - text, JSON and Prometheus renderings of struct
 * repl_status (see status_fmt.h).
 *
 * The three renderers walk the same snapshot and append with printf-style
 * helpers that keep the first error and ignore everything after it, the way
 * stdio's error flag works: a renderer is a long list of appends, and
 * checking each one would bury what is printed under error handling.
 *
 * JSON schema (ids are 16-digit lowercase hex strings, times are ms since
 * the epoch, the keys of applied and checkpoints are origin ids):
 *
 *   {"name":"a","node_id":"…","role":"primary"|"replica","term":1,
 *    "listen":"127.0.0.1:7001","now_ms":…,"in_sync":true,
 *    "applied":{"<hex>":1234,…},
 *    "peers":[{"name":"b","address":"…","id":"…"|null,
 *              "state":"connecting"|"connected"|"retrying"|"refused",
 *              "since_ms":…,"why":"…","retry_in_ms":0,"inbound":true,
 *              "lag":{"events":0,"bytes":0,"seconds":0.0},
 *              "checkpoints":{"<hex>":1234},"events_sent":…,"bytes_sent":…,
 *              "events_received":…,"bytes_received":…,"connects":1}],
 *    "notes":[{"type":"outage"|"recovered","origin":"<hex>","seq":7,
 *              "time_ms":…,"first_origin":"<hex>","first_seq":1201,
 *              "last_seq":1234}]}
 *
 * first_origin, first_seq and last_seq appear for recovered notes only.
 * After them (DESIGN invariant 9: the last divergence and its heal):
 *
 *    "diverged":true|false,
 *    "divergence":{"state":"none"|"healing"|"healed"|"stopped"|"resolved",
 *                  "event":{"origin":"<hex>","seq":963},"type":"chmod",
 *                  "path":"…","why":"…","text":"diverged at event …: why",
 *                  "stopped":"…","peer":"b","scope":"…","since_ms":…,
 *                  "heals":1,"entries":2,"bytes":12,"retry_in_ms":0,
 *                  "divergences":1,"healed":1,"heal_failures":0,
 *                  "heal_entries":2,"heal_bytes":12}
 *
 * diverged is true while a divergence is not over (healing, healed and
 * waiting for the event to apply, or stopped); the counters are since start.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "repl/status_fmt.h"

/* The buffer being appended to and the first error met, after which appends do nothing. */
struct out {
	struct buf *b;
	int err;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	if (o->err)
		return;
	room = o->b->cap - o->b->len;
	va_start(ap, fmt);
	n = vsnprintf(room ? (char *)o->b->data + o->b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0) {
		o->err = -EINVAL;
		return;
	}
	if ((size_t)n >= room) {
		/* +1 for the terminator vsnprintf always writes, which keeps data a C string. */
		o->err = buf_reserve(o->b, (size_t)n + 1);
		if (o->err)
			return;
		va_start(ap, fmt);
		vsnprintf((char *)o->b->data + o->b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	o->b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left); 0 if none starts there. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8. */
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

enum esc {
	ESC_TEXT, /* for a terminal: control characters and stray bytes as \xNN */
	ESC_JSON, /* a JSON string body: \" \\ \u00XX, stray bytes as U+FFFD */
	ESC_PROM, /* a Prometheus label value: \\ \" \n, stray bytes as U+FFFD */
};

/* Appends the string in field (at most max bytes, NUL-terminated or not) escaped for mode. */
static void put_escaped(struct out *o, const char *field, size_t max, enum esc mode)
{
	const unsigned char *s = (const unsigned char *)field;
	size_t n = strnlen(field, max), i = 0, len;

	while (i < n && !o->err) {
		unsigned c = s[i];

		len = utf8_len(s + i, n - i);
		if (len == 0) {
			if (mode == ESC_TEXT)
				put(o, "\\x%02x", c);
			else
				put(o, mode == ESC_JSON ? "\\ufffd" : "\xef\xbf\xbd");
			i++;
			continue;
		}
		if (mode == ESC_TEXT && (c < 0x20 || c == 0x7f)) {
			put(o, "\\x%02x", c);
		} else if (mode == ESC_TEXT && len == 2 && c == 0xc2 && s[i + 1] < 0xa0) {
			/* C1 controls: some terminals take U+009B for an escape sequence. */
			put(o, "\\x%02x\\x%02x", c, s[i + 1]);
		} else if (mode == ESC_JSON && (c == '"' || c == '\\')) {
			put(o, "\\%c", c);
		} else if (mode == ESC_JSON && (c < 0x20 || c == 0x7f)) {
			put(o, "\\u%04x", c);
		} else if (mode == ESC_PROM && (c == '"' || c == '\\')) {
			put(o, "\\%c", c);
		} else if (mode == ESC_PROM && c == '\n') {
			put(o, "\\n");
		} else {
			put(o, "%.*s", (int)len, (const char *)s + i);
		}
		i += len;
	}
}

static int check_counts(const struct repl_status *st)
{
	unsigned i;

	if (st->norigins > REPL_MAX_ORIGINS || st->npeers > CONFIG_MAX_PEERS ||
	    st->nnotes > REPL_MAX_NOTES || st->ntails > NODE_MAX_FENCES)
		return -EINVAL;
	for (i = 0; i < st->npeers; i++)
		if (st->peers[i].ncheckpoints > REPL_MAX_ORIGINS)
			return -EINVAL;
	return 0;
}

const char *repl_peer_state_name(enum repl_peer_state state)
{
	switch (state) {
	case REPL_PEER_CONNECTING:
		return "connecting";
	case REPL_PEER_CONNECTED:
		return "connected";
	case REPL_PEER_RETRYING:
		return "retrying";
	case REPL_PEER_REFUSED:
		return "refused";
	}
	return "unknown";
}

const char *repl_div_state_name(enum repl_div_state state)
{
	switch (state) {
	case REPL_DIV_NONE:
		return "none";
	case REPL_DIV_HEALING:
		return "healing";
	case REPL_DIV_HEALED:
		return "healed";
	case REPL_DIV_STOPPED:
		return "stopped";
	case REPL_DIV_RESOLVED:
		return "resolved";
	}
	return "unknown";
}

/* "diverged at event <origin>:<seq> (<type> <path>): <why>", escaped as mode says. */
static void put_div_what(struct out *o, const struct repl_divergence *d, enum esc mode)
{
	put(o, "diverged at event %016" PRIx64 ":%" PRIu64 " (%s", d->event.origin, d->event.seq,
	    event_type_name(d->type));
	if (d->path[0]) {
		put(o, " ");
		put_escaped(o, d->path, sizeof(d->path), mode);
	}
	put(o, "): ");
	put_escaped(o, d->why, sizeof(d->why), mode);
}

/* ---- text ------------------------------------------------------------ */

/* "350ms", "1.6s", "12s", "5m3s", "2h5m", "3d4h"; negative spans (clock steps) read as 0. */
static void put_duration(struct out *o, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	if (ms < 1000)
		put(o, "%" PRId64 "ms", ms);
	else if (ms < 10000)
		put(o, "%" PRId64 ".%" PRId64 "s", ms / 1000, ms % 1000 / 100);
	else if (ms < 60 * 1000)
		put(o, "%" PRId64 "s", ms / 1000);
	else if (ms < 3600 * 1000)
		put(o, "%" PRId64 "m%" PRId64 "s", ms / 60000, ms / 1000 % 60);
	else if (ms < 86400 * 1000)
		put(o, "%" PRId64 "h%" PRId64 "m", ms / 3600000, ms / 60000 % 60);
	else
		put(o, "%" PRId64 "d%" PRId64 "h", ms / 86400000, ms / 3600000 % 24);
}

/* "512 B", "1.2 KiB", "5.1 MiB", ... */
static void put_bytes(struct out *o, uint64_t n)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)n;
	unsigned u = 0;

	if (n < 1024) {
		put(o, "%" PRIu64 " B", n);
		return;
	}
	v /= 1024;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	put(o, "%.1f %s", v, units[u]);
}

/* "2026-11-23 08:12:01", UTC, so that nodes in different zones print the same. */
static void put_time(struct out *o, int64_t ms)
{
	time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
	char buf[32];
	struct tm tm;

	if (!gmtime_r(&secs, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm)) {
		put(o, "@%" PRId64 "ms", ms);
		return;
	}
	put(o, "%s", buf);
}

/* An origin by the name the status knows for it, else by hex id. */
static void put_origin(struct out *o, const struct repl_status *st, uint64_t id)
{
	unsigned i;

	if (id == st->node_id && st->name[0]) {
		put_escaped(o, st->name, sizeof(st->name), ESC_TEXT);
		return;
	}
	for (i = 0; i < st->npeers; i++) {
		if (st->peers[i].id == id && id && st->peers[i].name[0]) {
			put_escaped(o, st->peers[i].name, sizeof(st->peers[i].name), ESC_TEXT);
			return;
		}
	}
	put(o, "%016" PRIx64, id);
}

static void put_vector(struct out *o, const struct repl_status *st, const struct evid *v,
		       unsigned n)
{
	unsigned i;

	if (n == 0)
		put(o, " none");
	for (i = 0; i < n; i++) {
		put(o, " ");
		put_origin(o, st, v[i].origin);
		put(o, "=%" PRIu64, v[i].seq);
	}
	put(o, "\n");
}

static void put_text_peer(struct out *o, const struct repl_status *st,
			  const struct repl_peer_status *p)
{
	put(o, "peer ");
	put_escaped(o, p->name, sizeof(p->name), ESC_TEXT);
	if (p->id)
		put(o, " (%016" PRIx64 ") ", p->id);
	else
		put(o, " (id not yet known) ");
	put_escaped(o, p->address, sizeof(p->address), ESC_TEXT);

	put(o, "\n  link: %s for ", repl_peer_state_name(p->state));
	put_duration(o, st->now_ms - p->since_ms);
	if (p->why[0]) {
		put(o, " (");
		put_escaped(o, p->why, sizeof(p->why), ESC_TEXT);
		put(o, ")");
	}
	if (p->state == REPL_PEER_RETRYING) {
		put(o, ", next try in ");
		put_duration(o, (int64_t)(p->retry_in_ms > INT64_MAX ? INT64_MAX : p->retry_in_ms));
	}
	put(o, "; inbound: %s%s\n", p->inbound ? "up" : "down",
	    p->synchronous ? "; synchronous" : "");

	put(o, "  lag: %" PRIu64 " event%s, ", p->lag_events, p->lag_events == 1 ? "" : "s");
	put_bytes(o, p->lag_bytes);
	put(o, ", %.1f s\n", isfinite(p->lag_seconds) ? p->lag_seconds : 0.0);

	put(o, "  confirmed:");
	put_vector(o, st, p->checkpoints, p->ncheckpoints);

	put(o, "  sent %" PRIu64 " event%s (", p->events_sent, p->events_sent == 1 ? "" : "s");
	put_bytes(o, p->bytes_sent);
	put(o, "), received %" PRIu64 " event%s (", p->events_received,
	    p->events_received == 1 ? "" : "s");
	put_bytes(o, p->bytes_received);
	put(o, "), %" PRIu64 " connect%s\n", p->connects, p->connects == 1 ? "" : "s");
}

static void put_text_note(struct out *o, const struct repl_status *st, const struct repl_note *n)
{
	put(o, "  ");
	put_time(o, n->time_ms);
	put(o, " ");
	put_origin(o, st, n->origin);
	if (n->type == EV_OUTAGE) {
		put(o, " OUTAGE\n");
	} else if (n->type == EV_RECOVERED) {
		put(o, " RECOVERED ");
		put_origin(o, st, n->first.origin);
		put(o, " %" PRIu64 "..%" PRIu64 "\n", n->first.seq, n->last_seq);
	} else {
		put(o, " event type %u\n", n->type);
	}
}

/* The last divergence and its heal, if there was one since start. */
static void put_text_divergence(struct out *o, const struct repl_status *st)
{
	const struct repl_divergence *d = &st->div;

	if (d->state == REPL_DIV_NONE)
		return;
	if (d->state == REPL_DIV_RESOLVED)
		put(o, "last divergence, over: ");
	put_div_what(o, d, ESC_TEXT);
	put(o, "\n  ");
	switch (d->state) {
	case REPL_DIV_HEALING:
		put(o, "healing subtree ");
		put_escaped(o, d->scope, sizeof(d->scope), ESC_TEXT);
		put(o, " from ");
		put_escaped(o, d->peer, sizeof(d->peer), ESC_TEXT);
		put(o, " (heal %u)", d->heals);
		break;
	case REPL_DIV_STOPPED:
		put(o, "heal stopped: ");
		put_escaped(o, d->stopped, sizeof(d->stopped), ESC_TEXT);
		put(o, "; next try in ");
		put_duration(o, d->retry_in_ms);
		break;
	default:
		put(o, "healed subtree ");
		put_escaped(o, d->scope, sizeof(d->scope), ESC_TEXT);
		put(o, " from ");
		put_escaped(o, d->peer, sizeof(d->peer), ESC_TEXT);
		put(o, ": %" PRIu64 " entr%s replaced (", d->entries,
		    d->entries == 1 ? "y" : "ies");
		put_bytes(o, d->bytes);
		put(o, ")%s", d->state == REPL_DIV_HEALED ? ", taking the events again" : "");
	}
	put(o, "; since ");
	put_time(o, d->since_ms);
	put(o,
	    " UTC, %" PRIu64 " divergence%s, %" PRIu64 " heal%s, %" PRIu64 " failed since start\n",
	    st->divergences, st->divergences == 1 ? "" : "s", st->heals, st->heals == 1 ? "" : "s",
	    st->heal_failures);
}

int status_fmt_text(const struct repl_status *st, struct buf *b)
{
	struct out o = {b, check_counts(st)};
	unsigned i;

	/* A bad count would walk past its array; render nothing. */
	if (o.err)
		goto out;
	put(&o, "node ");
	put_escaped(&o, st->name, sizeof(st->name), ESC_TEXT);
	put(&o, " (%016" PRIx64 "), %s, term %" PRIu64 ", ", st->node_id,
	    st->primary ? "primary" : "replica", st->term);
	if (st->listen[0]) {
		put(&o, "listening on ");
		put_escaped(&o, st->listen, sizeof(st->listen), ESC_TEXT);
		put(&o, "\n");
	} else {
		put(&o, "not listening\n");
	}
	put(&o, "applied:");
	put_vector(&o, st, st->applied, st->norigins);
	put(&o, "in sync: %s\n", st->in_sync ? "yes" : "no");
	put(&o, "journal: ");
	put_bytes(&o, st->journal_bytes);
	put(&o, " of a ");
	put_bytes(&o, st->journal_bound);
	put(&o, " bound, oldest held:");
	put_vector(&o, st, st->oldest, st->norigins);
	if (st->archive.on) {
		put(&o, "archive: %" PRIu64 " events behind, %.1f s", st->archive.lag_events,
		    (double)st->archive.lag_ms / 1000.0);
		if (st->archive.error[0]) {
			put(&o, "; failing: ");
			put_escaped(&o, st->archive.error, sizeof(st->archive.error), ESC_TEXT);
		}
		put(&o, "\n");
	}
	if (st->sync_peers)
		put(&o, "synchronous replication: fsync waits for %" PRIu32 " peer%s%s\n",
		    st->sync_peers, st->sync_peers == 1 ? "" : "s",
		    st->degraded ? "; DEGRADED to asynchronous" : "");
	for (i = 0; i < st->ntails; i++)
		put(&o,
		    "kept aside: events %016" PRIx64 ":%" PRIu64 "..%" PRIu64
		    " beyond the promotion of term %" PRIu64 " (ledgerctl tail-export)\n",
		    st->tails[i].origin, st->tails[i].first, st->tails[i].last, st->tails[i].term);
	if (st->rebuild_needed)
		put(&o,
		    "the store still holds kept-aside events: restart the node to rebuild it\n");
	if (st->snap_needed && !st->snap.active && st->primary)
		put(&o,
		    "snapshot resync needed, but a primary never replaces its store: it takes no "
		    "events from peers until `ledgerctl demote` makes it a replica\n");
	else if (st->snap_needed && !st->snap.active)
		put(&o, "snapshot resync needed: waiting for a peer that holds everything we do\n");
	if (st->snap.active || st->snap.done)
		put(&o,
		    "snapshot resync from %s: %s, round %" PRIu64 ", %" PRIu64
		    " entries in its tree, %" PRIu64 " directories compared, %" PRIu64
		    " entries received (",
		    st->snap.peer, st->snap.active ? "running" : "done", st->snap.round,
		    st->snap.entries, st->snap.listed, st->snap.fetched);
	if (st->snap.active || st->snap.done) {
		put_bytes(&o, st->snap.bytes);
		put(&o, "), %" PRIu64 " reused, %" PRIu64 " deleted\n", st->snap.reused,
		    st->snap.deleted);
	}
	put_text_divergence(&o, st);
	for (i = 0; i < st->npeers; i++)
		put_text_peer(&o, st, &st->peers[i]);
	if (st->nnotes)
		put(&o, "outages:\n");
	for (i = 0; i < st->nnotes; i++)
		put_text_note(&o, st, &st->notes[i]);
out:
	return o.err;
}

/* ---- JSON ------------------------------------------------------------ */

static void put_json_string(struct out *o, const char *field, size_t max)
{
	put(o, "\"");
	put_escaped(o, field, max, ESC_JSON);
	put(o, "\"");
}

/* {"<hex>":seq,...} */
static void put_json_vector(struct out *o, const struct evid *v, unsigned n)
{
	unsigned i;

	put(o, "{");
	for (i = 0; i < n; i++)
		put(o, "%s\"%016" PRIx64 "\":%" PRIu64, i ? "," : "", v[i].origin, v[i].seq);
	put(o, "}");
}

static void put_json_peer(struct out *o, const struct repl_peer_status *p)
{
	put(o, "{\"name\":");
	put_json_string(o, p->name, sizeof(p->name));
	put(o, ",\"address\":");
	put_json_string(o, p->address, sizeof(p->address));
	if (p->id)
		put(o, ",\"id\":\"%016" PRIx64 "\"", p->id);
	else
		put(o, ",\"id\":null");
	put(o,
	    ",\"state\":\"%s\",\"since_ms\":%" PRId64 ",\"why\":", repl_peer_state_name(p->state),
	    p->since_ms);
	put_json_string(o, p->why, sizeof(p->why));
	/* JSON has no NaN or infinity; a lag that cannot be measured reads as none. */
	put(o,
	    ",\"retry_in_ms\":%" PRIu64 ",\"inbound\":%s,\"lag\":{\"events\":%" PRIu64
	    ",\"bytes\":%" PRIu64 ",\"seconds\":%.3f},\"checkpoints\":",
	    p->retry_in_ms, p->inbound ? "true" : "false", p->lag_events, p->lag_bytes,
	    isfinite(p->lag_seconds) ? p->lag_seconds : 0.0);
	put_json_vector(o, p->checkpoints, p->ncheckpoints);
	put(o,
	    ",\"events_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"events_received\":%" PRIu64
	    ",\"bytes_received\":%" PRIu64 ",\"connects\":%" PRIu64 ",\"synchronous\":%s}",
	    p->events_sent, p->bytes_sent, p->events_received, p->bytes_received, p->connects,
	    p->synchronous ? "true" : "false");
}

static void put_json_note(struct out *o, const struct repl_note *n)
{
	put(o,
	    "{\"type\":\"%s\",\"origin\":\"%016" PRIx64 "\",\"seq\":%" PRIu64
	    ",\"time_ms\":%" PRId64,
	    event_type_name(n->type), n->origin, n->seq, n->time_ms);
	if (n->type == EV_RECOVERED)
		put(o,
		    ",\"first_origin\":\"%016" PRIx64 "\",\"first_seq\":%" PRIu64
		    ",\"last_seq\":%" PRIu64,
		    n->first.origin, n->first.seq, n->last_seq);
	put(o, "}");
}

static void put_json_divergence(struct out *o, const struct repl_status *st)
{
	const struct repl_divergence *d = &st->div;

	put(o, ",\"diverged\":%s,\"divergence\":{\"state\":\"%s\"",
	    repl_diverged(d) ? "true" : "false", repl_div_state_name(d->state));
	if (d->state != REPL_DIV_NONE) {
		put(o,
		    ",\"event\":{\"origin\":\"%016" PRIx64 "\",\"seq\":%" PRIu64
		    "},\"type\":\"%s\"",
		    d->event.origin, d->event.seq, event_type_name(d->type));
		put(o, ",\"path\":");
		put_json_string(o, d->path, sizeof(d->path));
		put(o, ",\"why\":");
		put_json_string(o, d->why, sizeof(d->why));
		put(o, ",\"text\":\"");
		put_div_what(o, d, ESC_JSON);
		put(o, "\",\"stopped\":");
		put_json_string(o, d->stopped, sizeof(d->stopped));
		put(o, ",\"peer\":");
		put_json_string(o, d->peer, sizeof(d->peer));
		put(o, ",\"scope\":");
		put_json_string(o, d->scope, sizeof(d->scope));
		put(o,
		    ",\"since_ms\":%" PRId64 ",\"heals\":%u,\"entries\":%" PRIu64
		    ",\"bytes\":%" PRIu64 ",\"retry_in_ms\":%" PRId64,
		    d->since_ms, d->heals, d->entries, d->bytes, d->retry_in_ms);
	}
	put(o,
	    ",\"divergences\":%" PRIu64 ",\"healed\":%" PRIu64 ",\"heal_failures\":%" PRIu64
	    ",\"heal_entries\":%" PRIu64 ",\"heal_bytes\":%" PRIu64 "}",
	    st->divergences, st->heals, st->heal_failures, st->heal_entries, st->heal_bytes);
}

int status_fmt_json(const struct repl_status *st, struct buf *b)
{
	struct out o = {b, check_counts(st)};
	unsigned i;

	/* A bad count would walk past its array; render nothing. */
	if (o.err)
		goto out;
	put(&o, "{\"name\":");
	put_json_string(&o, st->name, sizeof(st->name));
	put(&o, ",\"node_id\":\"%016" PRIx64 "\",\"role\":\"%s\",\"term\":%" PRIu64 ",\"listen\":",
	    st->node_id, st->primary ? "primary" : "replica", st->term);
	put_json_string(&o, st->listen, sizeof(st->listen));
	put(&o, ",\"now_ms\":%" PRId64 ",\"in_sync\":%s,\"applied\":", st->now_ms,
	    st->in_sync ? "true" : "false");
	put_json_vector(&o, st->applied, st->norigins);
	put(&o, ",\"peers\":[");
	for (i = 0; i < st->npeers; i++) {
		put(&o, i ? "," : "");
		put_json_peer(&o, &st->peers[i]);
	}
	put(&o, "],\"journal_bytes\":%" PRIu64 ",\"journal_bound\":%" PRIu64 ",\"oldest\":",
	    st->journal_bytes, st->journal_bound);
	put_json_vector(&o, st->oldest, st->norigins);
	if (st->archive.on) {
		put(&o,
		    ",\"archive\":{\"lag_events\":%" PRIu64 ",\"lag_ms\":%" PRId64 ",\"error\":\"",
		    st->archive.lag_events, st->archive.lag_ms);
		put_escaped(&o, st->archive.error, sizeof(st->archive.error), ESC_JSON);
		put(&o, "\"}");
	}
	put(&o, ",\"sync_peers\":%" PRIu32 ",\"degraded\":%s,\"rebuild_needed\":%s,\"tails\":[",
	    st->sync_peers, st->degraded ? "true" : "false", st->rebuild_needed ? "true" : "false");
	for (i = 0; i < st->ntails; i++)
		put(&o,
		    "%s{\"origin\":\"%016" PRIx64 "\",\"first\":%" PRIu64 ",\"last\":%" PRIu64
		    ",\"term\":%" PRIu64 "}",
		    i ? "," : "", st->tails[i].origin, st->tails[i].first, st->tails[i].last,
		    st->tails[i].term);
	put(&o, "],\"notes\":[");
	for (i = 0; i < st->nnotes; i++) {
		put(&o, i ? "," : "");
		put_json_note(&o, &st->notes[i]);
	}
	put(&o, "],\"snapshot\":{\"needed\":%s,\"active\":%s,\"done\":%s,\"peer\":",
	    st->snap_needed ? "true" : "false", st->snap.active ? "true" : "false",
	    st->snap.done ? "true" : "false");
	put_json_string(&o, st->snap.peer, sizeof(st->snap.peer));
	put(&o,
	    ",\"round\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"listed\":%" PRIu64
	    ",\"fetched\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"reused\":%" PRIu64
	    ",\"deleted\":%" PRIu64 "}",
	    st->snap.round, st->snap.entries, st->snap.listed, st->snap.fetched, st->snap.bytes,
	    st->snap.reused, st->snap.deleted);
	put_json_divergence(&o, st);
	put(&o, "}\n");
out:
	return o.err;
}

/* ---- Prometheus ------------------------------------------------------ */

static void prom_family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Opens a sample: name{node="..." -- the caller adds labels, then closes with "} value". */
static void prom_open(struct out *o, const char *name, const struct repl_status *st)
{
	put(o, "%s{node=\"", name);
	put_escaped(o, st->name, sizeof(st->name), ESC_PROM);
	put(o, "\"");
}

static void prom_peer_open(struct out *o, const char *name, const struct repl_status *st,
			   const struct repl_peer_status *p)
{
	prom_open(o, name, st);
	put(o, ",peer=\"");
	put_escaped(o, p->name, sizeof(p->name), ESC_PROM);
	put(o, "\"");
}

/* Per-peer families that are a plain uint64_t field of struct repl_peer_status. */
static const struct peer_u64_metric {
	const char *name, *type, *help;
	size_t offset;
} peer_u64_metrics[] = {
    {"ledgerfs_peer_lag_events", "gauge", "Events this node holds that the peer has not confirmed.",
     offsetof(struct repl_peer_status, lag_events)},
    {"ledgerfs_peer_lag_bytes", "gauge", "Encoded size of the events the peer has not confirmed.",
     offsetof(struct repl_peer_status, lag_bytes)},
    {"ledgerfs_peer_events_sent_total", "counter", "Events sent to the peer since start.",
     offsetof(struct repl_peer_status, events_sent)},
    {"ledgerfs_peer_bytes_sent_total", "counter", "Bytes of events sent to the peer since start.",
     offsetof(struct repl_peer_status, bytes_sent)},
    {"ledgerfs_peer_events_received_total", "counter", "Events received from the peer since start.",
     offsetof(struct repl_peer_status, events_received)},
    {"ledgerfs_peer_bytes_received_total", "counter",
     "Bytes of events received from the peer since start.",
     offsetof(struct repl_peer_status, bytes_received)},
    {"ledgerfs_peer_connects_total", "counter", "Outbound links to the peer made since start.",
     offsetof(struct repl_peer_status, connects)},
};

static void prom_peers(struct out *o, const struct repl_status *st)
{
	const struct repl_peer_status *p;
	unsigned i, j;
	size_t m;

	prom_family(o, "ledgerfs_peer_up", "gauge", "1 if this node's link to the peer is up.");
	for (p = st->peers; p < st->peers + st->npeers; p++) {
		prom_peer_open(o, "ledgerfs_peer_up", st, p);
		put(o, "} %d\n", p->state == REPL_PEER_CONNECTED);
	}
	prom_family(o, "ledgerfs_peer_inbound_up", "gauge",
		    "1 if the peer's link to this node is up.");
	for (p = st->peers; p < st->peers + st->npeers; p++) {
		prom_peer_open(o, "ledgerfs_peer_inbound_up", st, p);
		put(o, "} %d\n", p->inbound ? 1 : 0);
	}
	prom_family(o, "ledgerfs_peer_lag_seconds", "gauge",
		    "Age of the oldest event the peer has not confirmed; 0 when none.");
	for (p = st->peers; p < st->peers + st->npeers; p++) {
		prom_peer_open(o, "ledgerfs_peer_lag_seconds", st, p);
		put(o, "} %.3f\n", isfinite(p->lag_seconds) ? p->lag_seconds : 0.0);
	}
	prom_family(o, "ledgerfs_peer_checkpoint_seq", "gauge",
		    "Highest seq of each origin the peer has confirmed.");
	for (i = 0; i < st->npeers; i++) {
		p = &st->peers[i];
		for (j = 0; j < p->ncheckpoints; j++) {
			prom_peer_open(o, "ledgerfs_peer_checkpoint_seq", st, p);
			put(o, ",origin=\"%016" PRIx64 "\"} %" PRIu64 "\n",
			    p->checkpoints[j].origin, p->checkpoints[j].seq);
		}
	}
	for (m = 0; m < sizeof(peer_u64_metrics) / sizeof(peer_u64_metrics[0]); m++) {
		const struct peer_u64_metric *pm = &peer_u64_metrics[m];

		prom_family(o, pm->name, pm->type, pm->help);
		for (p = st->peers; p < st->peers + st->npeers; p++) {
			uint64_t v;

			memcpy(&v, (const char *)p + pm->offset, sizeof(v));
			prom_peer_open(o, pm->name, st, p);
			put(o, "} %" PRIu64 "\n", v);
		}
	}
}

/* Divergence counters: plain uint64_t fields of struct repl_status. */
static const struct status_u64_metric {
	const char *name, *help;
	size_t offset;
} heal_metrics[] = {
    {"ledgerfs_divergences_total", "Events from peers that did not apply here, since start.",
     offsetof(struct repl_status, divergences)},
    {"ledgerfs_heals_total", "Divergences healed by a resync of their subtree, since start.",
     offsetof(struct repl_status, heals)},
    {"ledgerfs_heal_failures_total", "Heals that stopped without progress, since start.",
     offsetof(struct repl_status, heal_failures)},
    {"ledgerfs_heal_entries_total", "Entries heals replaced, since start.",
     offsetof(struct repl_status, heal_entries)},
    {"ledgerfs_heal_bytes_total", "Content bytes heals received, since start.",
     offsetof(struct repl_status, heal_bytes)},
};

int status_fmt_prometheus(const struct repl_status *st, struct buf *b)
{
	struct out o = {b, check_counts(st)};
	unsigned i;
	uint64_t kept = 0;

	/* A bad count would walk past its array; render nothing. */
	if (o.err)
		goto out;
	prom_family(&o, "ledgerfs_primary", "gauge",
		    "1 if this node is the primary, 0 if a replica.");
	prom_open(&o, "ledgerfs_primary", st);
	put(&o, "} %d\n", st->primary ? 1 : 0);
	prom_family(&o, "ledgerfs_term", "gauge",
		    "Current term of the cluster as this node knows it.");
	prom_open(&o, "ledgerfs_term", st);
	put(&o, "} %" PRIu64 "\n", st->term);
	prom_family(&o, "ledgerfs_in_sync", "gauge",
		    "1 if every peer is linked both ways and nothing is outstanding.");
	prom_open(&o, "ledgerfs_in_sync", st);
	put(&o, "} %d\n", st->in_sync ? 1 : 0);
	prom_family(&o, "ledgerfs_applied_seq", "gauge",
		    "Highest seq of each origin applied here.");
	for (i = 0; i < st->norigins; i++) {
		prom_open(&o, "ledgerfs_applied_seq", st);
		put(&o, ",origin=\"%016" PRIx64 "\"} %" PRIu64 "\n", st->applied[i].origin,
		    st->applied[i].seq);
	}
	prom_peers(&o, st);
	prom_family(&o, "ledgerfs_journal_bytes", "gauge",
		    "Bytes of the journal on disk (LevelDB and value log).");
	prom_open(&o, "ledgerfs_journal_bytes", st);
	put(&o, "} %" PRIu64 "\n", st->journal_bytes);
	prom_family(&o, "ledgerfs_journal_bound_bytes", "gauge",
		    "Bytes trimming keeps the journal within (retain_bytes), unless members "
		    "have not confirmed its events.");
	prom_open(&o, "ledgerfs_journal_bound_bytes", st);
	put(&o, "} %" PRIu64 "\n", st->journal_bound);
	if (st->archive.on) {
		prom_family(&o, "ledgerfs_archive_lag_events", "gauge",
			    "Events applied here and not archived yet ([archive] repository).");
		prom_open(&o, "ledgerfs_archive_lag_events", st);
		put(&o, "} %" PRIu64 "\n", st->archive.lag_events);
		prom_family(&o, "ledgerfs_archive_lag_seconds", "gauge",
			    "Seconds since the archive last held every applied event.");
		prom_open(&o, "ledgerfs_archive_lag_seconds", st);
		put(&o, "} %.3f\n", (double)st->archive.lag_ms / 1000.0);
		prom_family(&o, "ledgerfs_archive_failing", "gauge",
			    "1 while archiving fails (trimming waits for it).");
		prom_open(&o, "ledgerfs_archive_failing", st);
		put(&o, "} %d\n", st->archive.error[0] ? 1 : 0);
	}
	prom_family(&o, "ledgerfs_oldest_seq", "gauge",
		    "Oldest seq of each origin the journal still holds (0: none).");
	for (i = 0; i < st->norigins; i++) {
		prom_open(&o, "ledgerfs_oldest_seq", st);
		put(&o, ",origin=\"%016" PRIx64 "\"} %" PRIu64 "\n", st->oldest[i].origin,
		    st->oldest[i].seq);
	}
	prom_family(&o, "ledgerfs_degraded", "gauge",
		    "1 if fewer than sync_peers peers confirm and fsync runs asynchronously.");
	prom_open(&o, "ledgerfs_degraded", st);
	put(&o, "} %d\n", st->degraded ? 1 : 0);
	prom_family(
	    &o, "ledgerfs_snapshot_needed", "gauge",
	    "1 while this node lacks trimmed events and waits for or runs a snapshot resync.");
	prom_open(&o, "ledgerfs_snapshot_needed", st);
	put(&o, "} %d\n", st->snap_needed ? 1 : 0);
	prom_family(&o, "ledgerfs_snapshot_entries_received", "gauge",
		    "Entries received by the snapshot resync running or last finished.");
	prom_open(&o, "ledgerfs_snapshot_entries_received", st);
	put(&o, "} %" PRIu64 "\n", st->snap.fetched);
	prom_family(&o, "ledgerfs_snapshot_bytes_received", "gauge",
		    "Content bytes received by the snapshot resync running or last finished.");
	prom_open(&o, "ledgerfs_snapshot_bytes_received", st);
	put(&o, "} %" PRIu64 "\n", st->snap.bytes);
	prom_family(&o, "ledgerfs_kept_aside_events", "gauge",
		    "Events held beyond a promotion's fence, kept aside for tail-export.");
	prom_open(&o, "ledgerfs_kept_aside_events", st);
	for (i = 0; i < st->ntails; i++)
		kept += st->tails[i].last - st->tails[i].first + 1;
	put(&o, "} %" PRIu64 "\n", kept);
	prom_family(&o, "ledgerfs_outages_total", "counter",
		    "OUTAGE events in the journal, of any node.");
	prom_open(&o, "ledgerfs_outages_total", st);
	put(&o, "} %" PRIu64 "\n", st->outages);
	prom_family(&o, "ledgerfs_diverged", "gauge",
		    "1 while an event from a peer did not apply here and its divergence is not "
		    "over (healing, healed and retaking the events, or heal stopped).");
	prom_open(&o, "ledgerfs_diverged", st);
	put(&o, "} %d\n", repl_diverged(&st->div) ? 1 : 0);
	prom_family(&o, "ledgerfs_heal_stopped", "gauge",
		    "1 while a divergence's heal cannot make progress and waits to try again.");
	prom_open(&o, "ledgerfs_heal_stopped", st);
	put(&o, "} %d\n", st->div.state == REPL_DIV_STOPPED ? 1 : 0);
	prom_family(
	    &o, "ledgerfs_diverged_event_seq", "gauge",
	    "Seq of the event of the last divergence, by origin (no sample: none since start).");
	if (st->div.state != REPL_DIV_NONE) {
		prom_open(&o, "ledgerfs_diverged_event_seq", st);
		put(&o, ",origin=\"%016" PRIx64 "\"} %" PRIu64 "\n", st->div.event.origin,
		    st->div.event.seq);
	}
	for (i = 0; i < sizeof(heal_metrics) / sizeof(heal_metrics[0]); i++) {
		uint64_t v;

		memcpy(&v, (const char *)st + heal_metrics[i].offset, sizeof(v));
		prom_family(&o, heal_metrics[i].name, "counter", heal_metrics[i].help);
		prom_open(&o, heal_metrics[i].name, st);
		put(&o, "} %" PRIu64 "\n", v);
	}
out:
	return o.err;
}
