/*
 * proto.c - codec of the replication protocol's frames (see proto.h).
 *
 * The decoder is the first code that sees bytes from another machine, so
 * it reads through a cursor that checks every length against what is left
 * before touching a byte, bounds every count before looping or allocating
 * on it, and insists that a body is consumed exactly: trailing bytes are as
 * suspect as missing ones.  Each rejection has its own reason, because the
 * reason is all an operator gets in the log when a link is dropped.
 *
 * Encoders and decoder share the rules (vector order, message text), so
 * whatever an encoder produces the decoder accepts and re-encodes to the
 * same bytes; tests/fuzz/fuzz_frames.c holds the codec to that.  EVENTS
 * records are checked for framing only here: the event codec owns their
 * contents, and proto_event_decode() applies it per record, so a receiver
 * can journal a record's bytes as they came.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/bytes.h"
#include "store/path.h"
#include "net/proto.h"

/* The u32 length field alone; the length it holds counts what follows. */
#define LEN_FIELD 4
/* HELLO before the vector: version, cluster id, node id, term, primary, count. */
#define HELLO_FIXED (2 + PROTO_CLUSTER_ID_LEN + 8 + 8 + 8 + 4)
#define HELLO_ENTRY 16
/* HELLO's optional flags after the vector. */
#define HELLO_FLAGS 4
/* EVENTS before the first record: the count. */
#define EVENTS_FIXED 4
/* ERROR before the text: code and text length. */
#define ERROR_FIXED 4
/* SNAP_INFO / SNAP_END before the vector: round, entries, count. */
#define SNAP_VEC_FIXED (8 + 8 + 4)
/* A path field at its longest: length and bytes. */
#define PATH_FIELD_MAX (2 + PATH_REL_MAX)
_Static_assert(PATH_REL_MAX <= UINT16_MAX, "a store path fits its u16 length field");
/* SNAP_ENTRY's fixed fields: id, status, mode, uid, gid, size, mtime, rdev. */
#define SNAP_ENTRY_FIXED (4 + 1 + 4 + 4 + 4 + 8 + 8 + 4 + 8)
/* SNAP_DATA before the contents: id, offset. */
#define SNAP_DATA_FIXED (4 + 8)

_Static_assert(PROTO_MAX_FRAME >= 1 + EVENTS_FIXED + 4 + (uint64_t)EVENT_MAX_RECORD,
	       "an EVENTS frame must hold the largest event record");
_Static_assert(1 + HELLO_FIXED + (uint64_t)HELLO_ENTRY * PROTO_MAX_VECTOR + HELLO_FLAGS <=
		   PROTO_MAX_FRAME,
	       "the largest HELLO must fit in a frame");
_Static_assert(PROTO_MAX_FRAME / (4 + EVENT_HEADER_LEN) < UINT32_MAX,
	       "a batch's record count must fit its u32 field");

/* Bytes of a frame not yet read. */
struct cursor {
	const uint8_t *p;
	size_t left;
};

/* -EBADMSG if fewer than n bytes are left; the caller names what overran. */
static int take(struct cursor *c, size_t n, const uint8_t **out)
{
	if (n > c->left)
		return -EBADMSG;
	*out = c->p;
	c->p += n;
	c->left -= n;
	return 0;
}

/* The take* helpers below read what the caller has already checked is there. */
static void take_copy(struct cursor *c, void *dst, size_t n)
{
	memcpy(dst, c->p, n);
	c->p += n;
	c->left -= n;
}

static uint16_t take16(struct cursor *c)
{
	const uint8_t *p = c->p;

	c->p += 2;
	c->left -= 2;
	return get_le16(p);
}

static uint32_t take32(struct cursor *c)
{
	const uint8_t *p = c->p;

	c->p += 4;
	c->left -= 4;
	return get_le32(p);
}

static uint64_t take64(struct cursor *c)
{
	const uint8_t *p = c->p;

	c->p += 8;
	c->left -= 8;
	return get_le64(p);
}

const char *proto_type_name(unsigned type)
{
	switch (type) {
	case PROTO_HELLO:
		return "hello";
	case PROTO_EVENTS:
		return "events";
	case PROTO_ACK:
		return "ack";
	case PROTO_FETCH:
		return "fetch";
	case PROTO_PING:
		return "ping";
	case PROTO_PONG:
		return "pong";
	case PROTO_ERROR:
		return "error";
	case PROTO_SNAP_BEGIN:
		return "snapshot-begin";
	case PROTO_SNAP_INFO:
		return "snapshot-info";
	case PROTO_SNAP_LIST:
		return "snapshot-list";
	case PROTO_SNAP_DIR:
		return "snapshot-dir";
	case PROTO_SNAP_GET:
		return "snapshot-get";
	case PROTO_SNAP_ENTRY:
		return "snapshot-entry";
	case PROTO_SNAP_DATA:
		return "snapshot-data";
	case PROTO_SNAP_DONE:
		return "snapshot-done";
	case PROTO_SNAP_END:
		return "snapshot-end";
	case PROTO_SNAP_SCOPE:
		return "snapshot-scope";
	default:
		return "unknown";
	}
}

const char *proto_error_name(unsigned code)
{
	switch (code) {
	case PROTO_ERR_MALFORMED:
		return "malformed";
	case PROTO_ERR_VERSION:
		return "version";
	case PROTO_ERR_CLUSTER:
		return "cluster";
	case PROTO_ERR_MEMBER:
		return "member";
	case PROTO_ERR_TERM:
		return "term";
	case PROTO_ERR_EVENT:
		return "event";
	case PROTO_ERR_TRIMMED:
		return "trimmed";
	case PROTO_ERR_SHUTDOWN:
		return "shutdown";
	default:
		return "unknown";
	}
}

/*
 * Largest length field a frame of this type can have, 0 for an unknown
 * type.  Lets proto_frame_peek() refuse a 64 MiB PING from its first five
 * bytes instead of buffering it all before proto_parse() can say no.
 */
static size_t type_max_len(unsigned type)
{
	switch (type) {
	case PROTO_HELLO:
		return 1 + HELLO_FIXED + (size_t)HELLO_ENTRY * PROTO_MAX_VECTOR + HELLO_FLAGS;
	case PROTO_EVENTS:
		return PROTO_MAX_FRAME;
	case PROTO_ACK:
	case PROTO_FETCH:
		return 1 + 16;
	case PROTO_PING:
	case PROTO_PONG:
		return 1 + 8;
	case PROTO_ERROR:
		return 1 + ERROR_FIXED + PROTO_MAX_ERROR_MSG;
	case PROTO_SNAP_BEGIN:
	case PROTO_SNAP_DONE:
		return 1 + 8;
	case PROTO_SNAP_INFO:
	case PROTO_SNAP_END:
		return 1 + SNAP_VEC_FIXED + (size_t)HELLO_ENTRY * PROTO_MAX_VECTOR;
	case PROTO_SNAP_LIST:
	case PROTO_SNAP_GET:
	case PROTO_SNAP_SCOPE:
		return 1 + 4 + PATH_FIELD_MAX;
	case PROTO_SNAP_DATA:
		return 1 + SNAP_DATA_FIXED + PROTO_SNAP_DATA_MAX;
	case PROTO_SNAP_DIR:
	case PROTO_SNAP_ENTRY:
		return PROTO_MAX_FRAME;
	default:
		return 0;
	}
}

int proto_frame_peek(const uint8_t *buf, size_t len, size_t *frame_len, const char **why)
{
	const char *unused_why;
	size_t max;
	uint32_t n;

	if (!why)
		why = &unused_why;
	*frame_len = 0;
	if (len < LEN_FIELD)
		return -EAGAIN;
	n = get_le32(buf);
	if (n == 0) {
		*why = "zero-length frame";
		return -EBADMSG;
	}
	if (n > PROTO_MAX_FRAME) {
		*why = "frame too long";
		return -EMSGSIZE;
	}
	if (len >= PROTO_HEADER_LEN) {
		max = type_max_len(buf[LEN_FIELD]);
		if (max == 0) {
			*why = "unknown frame type";
			return -EPROTO;
		}
		if (n > max) {
			*why = "frame too long for its type";
			return -EMSGSIZE;
		}
	}
	*frame_len = LEN_FIELD + (size_t)n;
	return len < *frame_len ? -EAGAIN : 0;
}

/*
 * NULL if the n bytes at s are well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing past U+10FFFF) free of C0 and C1 control characters,
 * else the reason.  The text ends up in a log line: a newline or a terminal
 * escape sequence from a peer must not forge or hide log lines.
 */
static const char *check_text(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t more;

		if (c < 0x80) {
			cp = c;
			more = 0;
		} else if (c >= 0xc2 && c <= 0xdf) {
			cp = c & 0x1f;
			more = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			cp = c & 0x0f;
			more = 2;
		} else if (c >= 0xf0 && c <= 0xf4) {
			cp = c & 0x07;
			more = 3;
		} else {
			return "error message is not UTF-8";
		}
		if (more > n - i - 1)
			return "error message ends inside a character";
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return "error message is not UTF-8";
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return "overlong or out-of-range character in error message";
		if (cp >= 0xd800 && cp <= 0xdfff)
			return "surrogate in error message";
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			return "control character in error message";
		i += 1 + more;
	}
	return NULL;
}

/* Origins strictly increasing: one entry per origin, and one encoding per vector. */
static int vector_sorted(const struct evid *v, uint32_t count)
{
	for (uint32_t i = 1; i < count; i++)
		if (v[i].origin <= v[i - 1].origin)
			return 0;
	return 1;
}

static int parse_hello(struct cursor *c, struct proto_hello *h, const char **why)
{
	uint16_t version;

	if (c->left < HELLO_FIXED) {
		*why = "truncated hello";
		return -EBADMSG;
	}
	version = take16(c);
	if (version != PROTO_VERSION) {
		*why = "unsupported protocol version";
		return -EPROTO;
	}
	take_copy(c, h->cluster_id, PROTO_CLUSTER_ID_LEN);
	h->node_id = take64(c);
	h->term = take64(c);
	h->primary = take64(c);
	h->count = take32(c);
	if (h->count > PROTO_MAX_VECTOR) {
		*why = "applied vector too long";
		return -EBADMSG;
	}
	if (c->left < (size_t)h->count * HELLO_ENTRY) {
		*why = "applied vector overruns frame";
		return -EBADMSG;
	}
	/* After the vector: nothing, or flags (proto.h). */
	if (c->left != (size_t)h->count * HELLO_ENTRY &&
	    c->left != (size_t)h->count * HELLO_ENTRY + HELLO_FLAGS) {
		*why = "trailing bytes after hello";
		return -EBADMSG;
	}
	if (h->count) {
		/* Owned by the message: proto_msg_free(). */
		h->applied = malloc((size_t)h->count * sizeof(*h->applied));
		if (!h->applied) {
			*why = "out of memory";
			return -ENOMEM;
		}
	}
	for (uint32_t i = 0; i < h->count; i++) {
		h->applied[i].origin = take64(c);
		h->applied[i].seq = take64(c);
	}
	if (!vector_sorted(h->applied, h->count)) {
		*why = "applied vector not in origin order";
		return -EBADMSG;
	}
	if (c->left == 0)
		return 0;
	h->flags = take32(c);
	/* One encoding per message: no flags are written as none. */
	if (h->flags == 0) {
		*why = "hello flags written as zero";
		return -EBADMSG;
	}
	if (h->flags & ~PROTO_HELLO_FLAGS) {
		*why = "unknown hello flag";
		return -EPROTO;
	}
	return 0;
}

static int parse_events(struct cursor *c, struct proto_events *ev, const char **why)
{
	const uint8_t *rec;

	if (c->left < EVENTS_FIXED) {
		*why = "truncated events";
		return -EBADMSG;
	}
	ev->count = take32(c);
	if (ev->count == 0) {
		*why = "empty events batch";
		return -EBADMSG;
	}
	ev->records = c->p;
	ev->records_len = c->left;
	/* Each record takes at least 4 + EVENT_HEADER_LEN bytes, so a huge count stops early. */
	for (uint32_t i = 0; i < ev->count; i++) {
		uint32_t n;

		if (c->left < 4) {
			*why = "truncated record length";
			return -EBADMSG;
		}
		n = take32(c);
		if (!event_record_len_ok(n)) {
			*why = "record length out of range";
			return -EBADMSG;
		}
		if (take(c, n, &rec) < 0) {
			*why = "record overruns frame";
			return -EBADMSG;
		}
	}
	if (c->left != 0) {
		*why = "trailing bytes after last record";
		return -EBADMSG;
	}
	return 0;
}

/* ACK, FETCH, PING and PONG: a body of n_u64 integers, nothing more. */
static int parse_u64s(struct cursor *c, uint64_t *v, size_t n_u64, const char **why)
{
	if (c->left < 8 * n_u64) {
		*why = "truncated body";
		return -EBADMSG;
	}
	if (c->left > 8 * n_u64) {
		*why = "trailing bytes after body";
		return -EBADMSG;
	}
	for (size_t i = 0; i < n_u64; i++)
		v[i] = take64(c);
	return 0;
}

static int parse_error(struct cursor *c, struct proto_error *e, const char **why)
{
	const uint8_t *text;
	const char *bad;
	uint16_t n;

	if (c->left < ERROR_FIXED) {
		*why = "truncated error";
		return -EBADMSG;
	}
	e->code = take16(c);
	n = take16(c);
	if (n > PROTO_MAX_ERROR_MSG) {
		*why = "error message too long";
		return -EBADMSG;
	}
	if (take(c, n, &text) < 0) {
		*why = "error message overruns frame";
		return -EBADMSG;
	}
	if (c->left != 0) {
		*why = "trailing bytes after error";
		return -EBADMSG;
	}
	bad = check_text(text, n);
	if (bad) {
		*why = bad;
		return -EBADMSG;
	}
	memcpy(e->msg, text, n);
	e->msg[n] = '\0';
	return 0;
}

static int parse_snap_vec(struct cursor *c, struct proto_snap_vec *v, const char **why)
{
	if (c->left < SNAP_VEC_FIXED) {
		*why = "truncated snapshot vector";
		return -EBADMSG;
	}
	v->round = take64(c);
	v->entries = take64(c);
	v->count = take32(c);
	if (v->count > PROTO_MAX_VECTOR) {
		*why = "snapshot vector too long";
		return -EBADMSG;
	}
	if (c->left != (size_t)v->count * HELLO_ENTRY) {
		*why = "snapshot vector does not fill the frame";
		return -EBADMSG;
	}
	if (v->count == 0)
		return 0;
	/* Owned by the message: proto_msg_free(). */
	v->vec = malloc((size_t)v->count * sizeof(*v->vec));
	if (!v->vec) {
		*why = "out of memory";
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < v->count; i++) {
		v->vec[i].origin = take64(c);
		v->vec[i].seq = take64(c);
	}
	if (!vector_sorted(v->vec, v->count)) {
		*why = "snapshot vector not in origin order";
		return -EBADMSG;
	}
	return 0;
}

/*
 * A u16-prefixed store path into *out (malloc'd, NUL-terminated), checked
 * by path_check(); the u16 holds any path up to PATH_REL_MAX, deeper than PATH_MAX.
 */
static int parse_path(struct cursor *c, char **out, const char **why)
{
	const uint8_t *p;
	uint16_t n;

	if (c->left < 2) {
		*why = "truncated path";
		return -EBADMSG;
	}
	n = take16(c);
	if (n == 0 || take(c, n, &p) < 0) {
		*why = n == 0 ? "empty path" : "path overruns frame";
		return -EBADMSG;
	}
	if (memchr(p, 0, n)) {
		*why = "NUL byte in path";
		return -EBADMSG;
	}
	*out = malloc((size_t)n + 1);
	if (!*out) {
		*why = "out of memory";
		return -ENOMEM;
	}
	memcpy(*out, p, n);
	(*out)[n] = '\0';
	return path_check(*out, why) < 0 ? -EBADMSG : 0;
}

static int parse_snap_path(struct cursor *c, uint8_t type, struct proto_snap_path *sp,
			   const char **why)
{
	int r;

	if (type == PROTO_SNAP_GET || type == PROTO_SNAP_SCOPE) {
		if (c->left < 4) {
			*why = "truncated snapshot request";
			return -EBADMSG;
		}
		sp->id = take32(c);
	}
	r = parse_path(c, &sp->path, why);
	if (r < 0)
		return r;
	if (type == PROTO_SNAP_DIR) {
		sp->listing = c->p;
		sp->listing_len = c->left;
		c->left = 0;
	}
	if (c->left != 0) {
		*why = "trailing bytes after path";
		return -EBADMSG;
	}
	return 0;
}

static int parse_snap_entry(struct cursor *c, struct proto_snap_entry *e, const char **why)
{
	struct snap_meta *m = &e->meta;
	const uint8_t *p;
	uint16_t tlen;
	uint32_t xlen;

	if (c->left < SNAP_ENTRY_FIXED + 2) {
		*why = "truncated snapshot entry";
		return -EBADMSG;
	}
	e->id = take32(c);
	take_copy(c, &e->status, 1);
	m->mode = take32(c);
	m->uid = take32(c);
	m->gid = take32(c);
	m->size = take64(c);
	m->mtime_sec = (int64_t)take64(c);
	m->mtime_nsec = take32(c);
	m->rdev = take64(c);
	tlen = take16(c);
	if (e->status > SNAP_ENTRY_CHANGED) {
		*why = "unknown snapshot entry status";
		return -EBADMSG;
	}
	if (e->status == SNAP_ENTRY_OK && !snap_mode_valid(m->mode)) {
		*why = "bad mode in snapshot entry";
		return -EBADMSG;
	}
	if (m->mtime_nsec >= 1000000000u) {
		*why = "bad mtime in snapshot entry";
		return -EBADMSG;
	}
	if (take(c, tlen, &p) < 0) {
		*why = "symlink target overruns frame";
		return -EBADMSG;
	}
	if (S_ISLNK(m->mode) != (tlen != 0) ||
	    (tlen && (tlen >= PATH_MAX || memchr(p, 0, tlen) || m->size != tlen))) {
		*why = "bad symlink target in snapshot entry";
		return -EBADMSG;
	}
	if (tlen) {
		/* Owned by the message: proto_msg_free(). */
		m->target = malloc((size_t)tlen + 1);
		if (!m->target) {
			*why = "out of memory";
			return -ENOMEM;
		}
		memcpy(m->target, p, tlen);
		m->target[tlen] = '\0';
	}
	if (c->left < 4) {
		*why = "truncated snapshot entry xattrs";
		return -EBADMSG;
	}
	xlen = take32(c);
	if (c->left != xlen) {
		*why = "snapshot entry xattrs do not fill the frame";
		return -EBADMSG;
	}
	if (xlen) {
		if (snap_xattrs_check(c->p, xlen, &m->fid, &m->ver, why) < 0)
			return -EBADMSG;
		m->xattrs = malloc(xlen);
		if (!m->xattrs) {
			*why = "out of memory";
			return -ENOMEM;
		}
		take_copy(c, m->xattrs, xlen);
		m->xattrs_len = xlen;
	}
	return 0;
}

static int parse_snap_data(struct cursor *c, struct proto_snap_data *d, const char **why)
{
	if (c->left < SNAP_DATA_FIXED) {
		*why = "truncated snapshot data";
		return -EBADMSG;
	}
	d->id = take32(c);
	d->offset = take64(c);
	if (c->left > PROTO_SNAP_DATA_MAX || d->offset > UINT64_MAX - c->left) {
		*why = "snapshot data out of range";
		return -EBADMSG;
	}
	d->data = c->p;
	d->len = c->left;
	c->left = 0;
	return 0;
}

int proto_parse(const uint8_t *frame, size_t len, struct proto_msg *out, const char **why)
{
	const char *unused_why;
	struct cursor c;
	uint64_t v[2] = {0, 0};
	uint32_t n;
	int r;

	if (!why)
		why = &unused_why;
	memset(out, 0, sizeof(*out));
	if (len < PROTO_HEADER_LEN) {
		*why = "truncated frame header";
		return -EBADMSG;
	}
	n = get_le32(frame);
	if (n == 0) {
		*why = "zero-length frame";
		return -EBADMSG;
	}
	if (n > PROTO_MAX_FRAME) {
		*why = "frame too long";
		return -EMSGSIZE;
	}
	if (n > len - LEN_FIELD) {
		*why = "truncated frame";
		return -EBADMSG;
	}
	if (n < len - LEN_FIELD) {
		*why = "bytes after frame";
		return -EBADMSG;
	}
	out->type = frame[LEN_FIELD];
	c = (struct cursor){frame + PROTO_HEADER_LEN, len - PROTO_HEADER_LEN};

	switch (out->type) {
	case PROTO_HELLO:
		r = parse_hello(&c, &out->hello, why);
		break;
	case PROTO_EVENTS:
		r = parse_events(&c, &out->events, why);
		break;
	case PROTO_ACK:
		r = parse_u64s(&c, v, 2, why);
		out->ack = (struct proto_ack){v[0], v[1]};
		break;
	case PROTO_FETCH:
		r = parse_u64s(&c, v, 2, why);
		out->fetch = (struct proto_fetch){v[0], v[1]};
		break;
	case PROTO_PING:
	case PROTO_PONG:
		r = parse_u64s(&c, v, 1, why);
		out->nonce = v[0];
		break;
	case PROTO_ERROR:
		r = parse_error(&c, &out->error, why);
		break;
	case PROTO_SNAP_BEGIN:
	case PROTO_SNAP_DONE:
		r = parse_u64s(&c, v, 1, why);
		out->round = v[0];
		break;
	case PROTO_SNAP_INFO:
	case PROTO_SNAP_END:
		r = parse_snap_vec(&c, &out->snap_vec, why);
		if (r == 0 && out->type == PROTO_SNAP_END && out->snap_vec.entries) {
			*why = "snapshot end with entries";
			r = -EBADMSG;
		}
		break;
	case PROTO_SNAP_LIST:
	case PROTO_SNAP_DIR:
	case PROTO_SNAP_GET:
	case PROTO_SNAP_SCOPE:
		r = parse_snap_path(&c, out->type, &out->snap_path, why);
		break;
	case PROTO_SNAP_ENTRY:
		r = parse_snap_entry(&c, &out->snap_entry, why);
		break;
	case PROTO_SNAP_DATA:
		r = parse_snap_data(&c, &out->snap_data, why);
		break;
	default:
		*why = "unknown frame type";
		r = -EPROTO;
		break;
	}
	if (r < 0)
		proto_msg_free(out);
	return r;
}

void proto_msg_free(struct proto_msg *msg)
{
	switch (msg->type) {
	case PROTO_HELLO:
		free(msg->hello.applied);
		break;
	case PROTO_SNAP_INFO:
	case PROTO_SNAP_END:
		free(msg->snap_vec.vec);
		break;
	case PROTO_SNAP_LIST:
	case PROTO_SNAP_DIR:
	case PROTO_SNAP_GET:
	case PROTO_SNAP_SCOPE:
		free(msg->snap_path.path);
		break;
	case PROTO_SNAP_ENTRY:
		snap_meta_free(&msg->snap_entry.meta);
		break;
	}
	memset(msg, 0, sizeof(*msg));
}

void proto_events_iter_init(struct proto_events_iter *it, const struct proto_events *events)
{
	it->p = events->records;
	it->left = events->records_len;
}

int proto_events_next(struct proto_events_iter *it, const uint8_t **rec, size_t *len)
{
	uint32_t n;

	if (it->left < 4)
		return 0;
	n = get_le32(it->p);
	if (n > it->left - 4)
		return 0;
	*rec = it->p + 4;
	*len = n;
	it->p += 4 + (size_t)n;
	it->left -= 4 + (size_t)n;
	return 1;
}

int proto_event_decode(const uint8_t *rec, size_t len, struct event *ev, const char **why)
{
	const char *unused_why;
	size_t used = 0;
	int r;

	if (!why)
		why = &unused_why;
	r = event_decode(rec, len, ev, &used, why);
	if (r < 0)
		return r;
	if (used != len) {
		*why = "record shorter than its frame length";
		r = -EBADMSG;
		goto out;
	}
	if (ev->flags & EVENT_F_VREF) {
		*why = "value-log reference in a shipped event";
		r = -EBADMSG;
		goto out;
	}
out:
	if (r < 0)
		event_free(ev);
	return r;
}

/*
 * Appends the header of a frame with a body_len-byte body and returns
 * where the body goes in *body.  The caller fills all of it: nothing
 * after this can fail, so b->len moves only on success.
 */
static int put_frame(struct buf *b, uint8_t type, size_t body_len, uint8_t **body)
{
	uint8_t *p;
	int r;

	r = buf_reserve(b, PROTO_HEADER_LEN + body_len);
	if (r < 0)
		return r;
	p = b->data + b->len;
	put_le32(p, (uint32_t)(1 + body_len));
	p[LEN_FIELD] = type;
	*body = p + PROTO_HEADER_LEN;
	b->len += PROTO_HEADER_LEN + body_len;
	return 0;
}

int proto_put_hello(struct buf *b, const struct proto_hello *hello)
{
	uint8_t *p;
	int r;

	if (hello->count > PROTO_MAX_VECTOR || (hello->count != 0 && !hello->applied))
		return -EINVAL;
	if (!vector_sorted(hello->applied, hello->count) || (hello->flags & ~PROTO_HELLO_FLAGS))
		return -EINVAL;
	r = put_frame(b, PROTO_HELLO,
			HELLO_FIXED + (size_t)hello->count * HELLO_ENTRY +
			    (hello->flags ? HELLO_FLAGS : 0),
			&p);
	if (r < 0)
		return r;
	put_le16(p, PROTO_VERSION);
	memcpy(p + 2, hello->cluster_id, PROTO_CLUSTER_ID_LEN);
	p += 2 + PROTO_CLUSTER_ID_LEN;
	put_le64(p, hello->node_id);
	put_le64(p + 8, hello->term);
	put_le64(p + 16, hello->primary);
	put_le32(p + 24, hello->count);
	p += 28;
	for (uint32_t i = 0; i < hello->count; i++, p += HELLO_ENTRY) {
		put_le64(p, hello->applied[i].origin);
		put_le64(p + 8, hello->applied[i].seq);
	}
	if (hello->flags)
		put_le32(p, hello->flags);
	return 0;
}

static int put_u64s(struct buf *b, uint8_t type, const uint64_t *v, size_t n_u64)
{
	uint8_t *p;
	int r;

	r = put_frame(b, type, 8 * n_u64, &p);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_u64; i++)
		put_le64(p + 8 * i, v[i]);
	return 0;
}

int proto_put_ack(struct buf *b, uint64_t origin, uint64_t seq)
{
	return put_u64s(b, PROTO_ACK, (const uint64_t[]){origin, seq}, 2);
}

int proto_put_fetch(struct buf *b, uint64_t origin, uint64_t from_seq)
{
	return put_u64s(b, PROTO_FETCH, (const uint64_t[]){origin, from_seq}, 2);
}

int proto_put_ping(struct buf *b, uint64_t nonce)
{
	return put_u64s(b, PROTO_PING, &nonce, 1);
}

int proto_put_pong(struct buf *b, uint64_t nonce)
{
	return put_u64s(b, PROTO_PONG, &nonce, 1);
}

int proto_put_error(struct buf *b, uint16_t code, const char *msg)
{
	size_t n;
	uint8_t *p;
	int r;

	if (!msg)
		msg = "";
	n = strnlen(msg, PROTO_MAX_ERROR_MSG + 1);
	if (n > PROTO_MAX_ERROR_MSG || check_text((const uint8_t *)msg, n))
		return -EINVAL;
	r = put_frame(b, PROTO_ERROR, ERROR_FIXED + n, &p);
	if (r < 0)
		return r;
	put_le16(p, code);
	put_le16(p + 2, (uint16_t)n);
	memcpy(p + ERROR_FIXED, msg, n);
	return 0;
}

int proto_put_snap_round(struct buf *b, uint8_t type, uint64_t round)
{
	if (type != PROTO_SNAP_BEGIN && type != PROTO_SNAP_DONE)
		return -EINVAL;
	return put_u64s(b, type, &round, 1);
}

int proto_put_snap_vec(struct buf *b, uint8_t type, uint64_t round, uint64_t entries,
		       const struct evid *vec, uint32_t count)
{
	uint8_t *p;
	int r;

	if ((type != PROTO_SNAP_INFO && type != PROTO_SNAP_END) ||
	    (type == PROTO_SNAP_END && entries) || count > PROTO_MAX_VECTOR || (count && !vec) ||
	    !vector_sorted(vec, count))
		return -EINVAL;
	r = put_frame(b, type, SNAP_VEC_FIXED + (size_t)count * HELLO_ENTRY, &p);
	if (r < 0)
		return r;
	put_le64(p, round);
	put_le64(p + 8, entries);
	put_le32(p + 16, count);
	p += SNAP_VEC_FIXED;
	for (uint32_t i = 0; i < count; i++, p += HELLO_ENTRY) {
		put_le64(p, vec[i].origin);
		put_le64(p + 8, vec[i].seq);
	}
	return 0;
}

/* Room for a frame of type holding id (if with_id), a path and extra more bytes. */
static int put_path_frame(struct buf *b, uint8_t type, int with_id, uint32_t id, const char *path,
			  size_t extra, uint8_t **rest)
{
	const char *why;
	size_t n = strlen(path), head = (with_id ? 4 : 0) + 2 + n;
	uint8_t *p;
	int r;

	if (path_check(path, &why) < 0 || n > PATH_REL_MAX)
		return -EINVAL;
	r = put_frame(b, type, head + extra, &p);
	if (r < 0)
		return r;
	if (with_id) {
		put_le32(p, id);
		p += 4;
	}
	put_le16(p, (uint16_t)n);
	memcpy(p + 2, path, n);
	*rest = p + 2 + n;
	return 0;
}

int proto_put_snap_path(struct buf *b, uint8_t type, uint32_t id, const char *path)
{
	uint8_t *rest;

	if (type != PROTO_SNAP_LIST && type != PROTO_SNAP_GET && type != PROTO_SNAP_SCOPE)
		return -EINVAL;
	return put_path_frame(b, type, type != PROTO_SNAP_LIST, id, path, 0, &rest);
}

int proto_put_snap_dir(struct buf *b, const char *path, const uint8_t *listing, size_t len)
{
	uint8_t *rest;
	int r;

	if (len > PROTO_MAX_FRAME - 1 - 2 - strlen(path))
		return -EMSGSIZE;
	r = put_path_frame(b, PROTO_SNAP_DIR, 0, 0, path, len, &rest);
	if (r == 0)
		memcpy(rest, listing, len);
	return r;
}

int proto_put_snap_entry(struct buf *b, uint32_t id, uint8_t status, const struct snap_meta *meta)
{
	static const struct snap_meta none;
	const struct snap_meta *m = meta ? meta : &none;
	size_t tlen = m->target ? strlen(m->target) : 0;
	const char *why;
	uint8_t *p;
	int ret;

	if (status > SNAP_ENTRY_CHANGED || (status == SNAP_ENTRY_OK && !meta) ||
	    (status == SNAP_ENTRY_OK && !snap_mode_valid(m->mode)) ||
	    m->mtime_nsec >= 1000000000u || S_ISLNK(m->mode) != (tlen != 0) ||
	    (tlen && (tlen >= PATH_MAX || m->size != tlen)) || m->xattrs_len > UINT32_MAX ||
	    (m->xattrs_len && snap_xattrs_check(m->xattrs, m->xattrs_len, NULL, NULL, &why) < 0))
		return -EINVAL;
	if (SNAP_ENTRY_FIXED + 2 + tlen + 4 + m->xattrs_len > PROTO_MAX_FRAME - 1)
		return -EMSGSIZE;
	ret = put_frame(b, PROTO_SNAP_ENTRY, SNAP_ENTRY_FIXED + 2 + tlen + 4 + m->xattrs_len, &p);
	if (ret < 0)
		return ret;
	put_le32(p, id);
	p[4] = status;
	put_le32(p + 5, m->mode);
	put_le32(p + 9, m->uid);
	put_le32(p + 13, m->gid);
	put_le64(p + 17, m->size);
	put_le64(p + 25, (uint64_t)m->mtime_sec);
	put_le32(p + 33, m->mtime_nsec);
	put_le64(p + 37, m->rdev);
	put_le16(p + 45, (uint16_t)tlen);
	p += SNAP_ENTRY_FIXED + 2;
	if (tlen)
		memcpy(p, m->target, tlen);
	put_le32(p + tlen, (uint32_t)m->xattrs_len);
	if (m->xattrs_len)
		memcpy(p + tlen + 4, m->xattrs, m->xattrs_len);
	return 0;
}

int proto_put_snap_data(struct buf *b, uint32_t id, uint64_t offset, size_t len, uint8_t **data)
{
	uint8_t *p;
	int r;

	if (len > PROTO_SNAP_DATA_MAX)
		return -EMSGSIZE;
	r = put_frame(b, PROTO_SNAP_DATA, SNAP_DATA_FIXED + len, &p);
	if (r < 0)
		return r;
	put_le32(p, id);
	put_le64(p + 4, offset);
	*data = p + SNAP_DATA_FIXED;
	return 0;
}

int proto_put_events_begin(struct buf *b, struct proto_batch *batch)
{
	uint8_t *p;
	int r;

	/* The length and the count are patched in by proto_put_events_end(). */
	r = put_frame(b, PROTO_EVENTS, EVENTS_FIXED, &p);
	if (r < 0)
		return r;
	batch->start = b->len - PROTO_HEADER_LEN - EVENTS_FIXED;
	batch->count = 0;
	return 0;
}

/* Makes room for one more len-byte record: 0, -EINVAL, -EMSGSIZE or -ENOMEM. */
static int batch_room(struct buf *b, const struct proto_batch *batch, size_t len)
{
	size_t frame = b->len - batch->start - LEN_FIELD;

	if (!event_record_len_ok(len))
		return -EINVAL;
	if (4 + len > PROTO_MAX_FRAME - frame)
		return -EMSGSIZE;
	return buf_reserve(b, 4 + len);
}

int proto_put_events_add(struct buf *b, struct proto_batch *batch, const uint8_t *rec, size_t len)
{
	int r;

	r = batch_room(b, batch, len);
	if (r < 0)
		return r;
	put_le32(b->data + b->len, (uint32_t)len);
	memcpy(b->data + b->len + 4, rec, len);
	b->len += 4 + len;
	batch->count++;
	return 0;
}

int proto_put_events_reserve(struct buf *b, struct proto_batch *batch, size_t len, size_t *off)
{
	int r;

	r = batch_room(b, batch, len);
	if (r < 0)
		return r;
	put_le32(b->data + b->len, (uint32_t)len);
	*off = b->len + 4;
	b->len += 4 + len;
	batch->count++;
	return 0;
}

int proto_put_events_add_event(struct buf *b, struct proto_batch *batch, const struct event *ev)
{
	size_t len = event_encoded_len(ev), got;
	int r;

	if (ev->flags & EVENT_F_VREF)
		return -EINVAL;
	r = batch_room(b, batch, len);
	if (r < 0)
		return r;
	r = event_encode(ev, b->data + b->len + 4, len, &got);
	if (r < 0)
		return -EINVAL;
	put_le32(b->data + b->len, (uint32_t)got);
	b->len += 4 + got;
	batch->count++;
	return 0;
}

int proto_put_events_end(struct buf *b, struct proto_batch *batch)
{
	uint8_t *p = b->data + batch->start;

	if (batch->count == 0) {
		b->len = batch->start;
		return 0;
	}
	put_le32(p, (uint32_t)(b->len - batch->start - LEN_FIELD));
	put_le32(p + PROTO_HEADER_LEN, batch->count);
	return 0;
}
