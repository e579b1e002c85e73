/*
 * test_proto.c - unit tests of the replication frame codec (net/proto.c).
 *
 * Frames arrive from other machines, so besides a round trip of every
 * message these tests feed the decoder what a broken or hostile peer could
 * send: every truncation of every valid frame, lengths that are zero, over
 * the maximum or overrunning, counts over their bounds, trailing bytes,
 * unknown types, text that is not clean UTF-8, events that point into the
 * sender's value log, and every single-byte corruption.  Each refusal is
 * checked for its reason as well as its error, because the reason is what
 * the log line dropping the link will say.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "journal/event.h"
#include "net/proto.h"

/* One valid frame of each type, built by sample_frame(), in type order: PROTO_x is S_x + 1. */
enum { S_HELLO, S_EVENTS, S_ACK, S_FETCH, S_PING, S_PONG, S_ERROR, N_SAMPLES };

static const uint8_t cluster[PROTO_CLUSTER_ID_LEN] = {0xc0, 0xff, 0xee, 1, 2,  3,  4,  5,
						      6,    7,	  8,	9, 10, 11, 12, 13};

static struct evid vector[] = {
    {1, 100},
    {2, 0},
    {0x8000000000000001ull, 0xfffffffffffffffeull},
};
#define N_VECTOR (sizeof(vector) / sizeof(vector[0]))

static void put_le(uint8_t *p, uint64_t v, int width)
{
	for (int i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* An event of type with the fields that type requires; free with event_free(). */
static void make_event(struct event *ev, unsigned type, uint64_t seq)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = (uint8_t)type;
	ev->origin = 7;
	ev->seq = seq;
	ev->hlc = (uint64_t)1700000000000 << 16 | seq;
	ev->term = 3;
	ev->fid = (struct fid){7, 1000 + seq};
	ev->mode = 0100644;
	cr_assert_eq(event_set_path(ev, "dir/file"), 0);
	if (type == EV_RENAME)
		cr_assert_eq(event_set_path2(ev, "dir/other"), 0);
	if (type == EV_SETXATTR) {
		cr_assert_eq(event_set_name(ev, "user.tag"), 0);
		cr_assert_eq(event_set_data(ev, "value", 5), 0);
	}
	if (type == EV_WRITE) {
		ev->offset = 4096;
		cr_assert_eq(event_set_data(ev, "\0\1\2binary\xff", 10), 0);
	}
}

/* Encodes ev into a malloc'd record of exactly its length. */
static uint8_t *encode_record(const struct event *ev, size_t *len)
{
	size_t cap = event_encoded_len(ev);
	uint8_t *rec = malloc(cap);

	cr_assert_not_null(rec);
	cr_assert_eq(event_encode(ev, rec, cap, len), 0);
	return rec;
}

static const unsigned batch_types[] = {EV_CREATE, EV_WRITE, EV_RENAME, EV_SETXATTR};
#define N_BATCH (sizeof(batch_types) / sizeof(batch_types[0]))

/* Appends an EVENTS frame of the batch_types events, half added as records, half as events. */
static void put_sample_events(struct buf *b)
{
	struct proto_batch batch;

	cr_assert_eq(proto_put_events_begin(b, &batch), 0);
	for (size_t i = 0; i < N_BATCH; i++) {
		struct event ev;
		uint8_t *rec;
		size_t len;

		make_event(&ev, batch_types[i], i + 1);
		if (i % 2) {
			cr_assert_eq(proto_put_events_add_event(b, &batch, &ev), 0);
		} else {
			rec = encode_record(&ev, &len);
			cr_assert_eq(proto_put_events_add(b, &batch, rec, len), 0);
			free(rec);
		}
		event_free(&ev);
	}
	cr_assert_eq(proto_put_events_end(b, &batch), 0);
}

static void sample_frame(int which, struct buf *b)
{
	struct proto_hello hello = {.node_id = 0x1122334455667788ull, .term = 9, .primary = 0x77};

	memcpy(hello.cluster_id, cluster, sizeof(cluster));
	hello.count = N_VECTOR;
	hello.applied = vector;
	switch (which) {
	case S_HELLO:
		cr_assert_eq(proto_put_hello(b, &hello), 0);
		break;
	case S_EVENTS:
		put_sample_events(b);
		break;
	case S_ACK:
		cr_assert_eq(proto_put_ack(b, 7, 42), 0);
		break;
	case S_FETCH:
		cr_assert_eq(proto_put_fetch(b, 7, 43), 0);
		break;
	case S_PING:
		cr_assert_eq(proto_put_ping(b, 0xdeadbeefcafef00dull), 0);
		break;
	case S_PONG:
		cr_assert_eq(proto_put_pong(b, 0xdeadbeefcafef00dull), 0);
		break;
	case S_ERROR:
		cr_assert_eq(proto_put_error(b, PROTO_ERR_CLUSTER, "cluster id differs: naïve ✓"),
			     0);
		break;
	}
}

/* Parses a frame the test expects to be refused with err and reason want. */
static void expect_reject(const uint8_t *frame, size_t len, int err, const char *want)
{
	static const struct proto_msg zero;
	struct proto_msg msg;
	const char *why = NULL;

	cr_assert_eq(proto_parse(frame, len, &msg, &why), err, "want %d (%s), why: %s", err, want,
		     why ? why : "(none)");
	cr_assert_not_null(why);
	if (want)
		cr_assert_str_eq(why, want);
	cr_assert_eq(memcmp(&msg, &zero, sizeof(msg)), 0, "a refused frame left data in msg");
}

/* A frame of the given type around body (len field set to match); in a buf. */
static void raw_frame(struct buf *b, uint8_t type, const void *body, size_t body_len)
{
	cr_assert_eq(buf_reserve(b, PROTO_HEADER_LEN + body_len), 0);
	put_le(b->data + b->len, 1 + body_len, 4);
	b->data[b->len + 4] = type;
	if (body_len)
		memcpy(b->data + b->len + PROTO_HEADER_LEN, body, body_len);
	b->len += PROTO_HEADER_LEN + body_len;
}

static void parse_ok(const struct buf *b, struct proto_msg *msg)
{
	const char *why = NULL;

	cr_assert_eq(proto_parse(b->data, b->len, msg, &why), 0, "why: %s", why ? why : "");
}

Test(proto, hello_round_trip)
{
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	sample_frame(S_HELLO, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_HELLO);
	cr_assert_eq(memcmp(msg.hello.cluster_id, cluster, sizeof(cluster)), 0);
	cr_assert_eq(msg.hello.node_id, 0x1122334455667788ull);
	cr_assert_eq(msg.hello.term, 9);
	cr_assert_eq(msg.hello.primary, 0x77);
	cr_assert_eq(msg.hello.count, N_VECTOR);
	for (size_t i = 0; i < N_VECTOR; i++) {
		cr_assert_eq(msg.hello.applied[i].origin, vector[i].origin);
		cr_assert_eq(msg.hello.applied[i].seq, vector[i].seq);
	}
	proto_msg_free(&msg);
	buf_free(&b);
}

Test(proto, hello_with_empty_vector_round_trips)
{
	struct proto_hello hello = {.node_id = 5, .term = 1};
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	cr_assert_eq(b.len, PROTO_HEADER_LEN + 46);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.hello.count, 0);
	cr_assert_null(msg.hello.applied);
	cr_assert_eq(msg.hello.node_id, 5);
	proto_msg_free(&msg);
	buf_free(&b);
}

/* The layout from proto.h, pinned: peers of different builds must agree on it. */
Test(proto, hello_wire_layout)
{
	struct buf b = BUF_INIT;
	const uint8_t *p;

	sample_frame(S_HELLO, &b);
	p = b.data;
	cr_assert_eq(b.len, 4 + 1 + 2 + 16 + 8 + 8 + 8 + 4 + 16 * N_VECTOR);
	cr_assert_eq(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24, b.len - 4);
	cr_assert_eq(p[4], PROTO_HELLO);
	cr_assert_eq(p[5] | p[6] << 8, PROTO_VERSION);
	cr_assert_eq(memcmp(p + 7, cluster, 16), 0);
	cr_assert_eq(p[23], 0x88);
	cr_assert_eq(p[30], 0x11);
	cr_assert_eq(p[31], 9);
	cr_assert_eq(p[39], 0x77); /* primary */
	cr_assert_eq(p[47], N_VECTOR);
	cr_assert_eq(p[51], 1);	  /* first origin */
	cr_assert_eq(p[59], 100); /* its seq */
	buf_free(&b);
}

/* A pushing HELLO (ledgerctl rescue): the flags follow the vector, and only then. */
Test(proto, hello_push_flag_round_trips_after_the_vector)
{
	struct proto_hello hello = {.node_id = 0x1122334455667788ull,
				    .term = 9,
				    .count = N_VECTOR,
				    .applied = vector,
				    .flags = PROTO_HELLO_PUSH};
	struct buf b = BUF_INIT;
	struct proto_msg msg;
	const uint8_t *p;

	memcpy(hello.cluster_id, cluster, sizeof(cluster));
	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	p = b.data;
	cr_assert_eq(b.len, 4 + 1 + 46 + 16 * N_VECTOR + 4);
	cr_assert_eq(p[b.len - 4], PROTO_HELLO_PUSH);
	cr_assert_eq(p[b.len - 3] | p[b.len - 2] | p[b.len - 1], 0);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.hello.flags, PROTO_HELLO_PUSH);
	cr_assert_eq(msg.hello.count, N_VECTOR);
	cr_assert_eq(msg.hello.applied[N_VECTOR - 1].seq, vector[N_VECTOR - 1].seq);
	proto_msg_free(&msg);

	/* Without a vector too. */
	buf_reset(&b);
	hello.count = 0;
	hello.applied = NULL;
	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	cr_assert_eq(b.len, PROTO_HEADER_LEN + 46 + 4);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.hello.flags, PROTO_HELLO_PUSH);
	cr_assert_null(msg.hello.applied);
	proto_msg_free(&msg);
	buf_free(&b);
}

/* An ordinary HELLO is decoded with no flags, and written without them. */
Test(proto, hello_without_flags_has_none)
{
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	sample_frame(S_HELLO, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.hello.flags, 0);
	proto_msg_free(&msg);
	buf_free(&b);
}

Test(proto, hello_flags_refused_unless_known_and_nonzero)
{
	struct proto_hello hello = {.node_id = 5, .term = 1, .flags = PROTO_HELLO_PUSH};
	struct buf b = BUF_INIT;
	size_t at;

	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	at = b.len - 4;
	/* Written as zero: the same HELLO has one encoding, without them. */
	put_le(b.data + at, 0, 4);
	expect_reject(b.data, b.len, -EBADMSG, "hello flags written as zero");
	/* A flag of a newer build. */
	put_le(b.data + at, PROTO_HELLO_PUSH | 0x2, 4);
	expect_reject(b.data, b.len, -EPROTO, "unknown hello flag");
	put_le(b.data + at, 0x80000000u, 4);
	expect_reject(b.data, b.len, -EPROTO, "unknown hello flag");
	/* Anything but 0 or 4 bytes after the vector is no field. */
	for (size_t cut = 1; cut < 4; cut++) {
		put_le(b.data + at, PROTO_HELLO_PUSH, 4);
		put_le(b.data, b.len - cut - 4, 4);
		expect_reject(b.data, b.len - cut, -EBADMSG, "trailing bytes after hello");
	}
	buf_reset(&b);
	hello.flags = 0x2;
	cr_assert_eq(proto_put_hello(&b, &hello), -EINVAL);
	cr_assert_eq(b.len, 0);
	buf_free(&b);
}

Test(proto, events_round_trip_and_decode)
{
	struct buf b = BUF_INIT;
	struct proto_events_iter it;
	struct proto_msg msg;
	const uint8_t *rec;
	size_t len, n = 0;

	sample_frame(S_EVENTS, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_EVENTS);
	cr_assert_eq(msg.events.count, N_BATCH);
	proto_events_iter_init(&it, &msg.events);
	while (proto_events_next(&it, &rec, &len)) {
		struct event want, got;
		const char *why = NULL;
		size_t want_len;
		uint8_t *want_rec;

		cr_assert_lt(n, N_BATCH);
		make_event(&want, batch_types[n], n + 1);
		want_rec = encode_record(&want, &want_len);
		cr_assert_eq(len, want_len);
		cr_assert_eq(memcmp(rec, want_rec, len), 0, "record %zu changed in transit", n);
		cr_assert_eq(proto_event_decode(rec, len, &got, &why), 0, "why: %s", why);
		cr_assert_eq(got.type, batch_types[n]);
		cr_assert_eq(got.seq, n + 1);
		cr_assert_str_eq(got.path, "dir/file");
		free(want_rec);
		event_free(&want);
		event_free(&got);
		n++;
	}
	cr_assert_eq(n, N_BATCH);
	proto_msg_free(&msg);
	buf_free(&b);
}

Test(proto, small_messages_round_trip)
{
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	sample_frame(S_ACK, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_ACK);
	cr_assert_eq(msg.ack.origin, 7);
	cr_assert_eq(msg.ack.seq, 42);
	proto_msg_free(&msg);

	buf_reset(&b);
	sample_frame(S_FETCH, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_FETCH);
	cr_assert_eq(msg.fetch.origin, 7);
	cr_assert_eq(msg.fetch.from_seq, 43);
	proto_msg_free(&msg);

	buf_reset(&b);
	sample_frame(S_PING, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_PING);
	cr_assert_eq(msg.nonce, 0xdeadbeefcafef00dull);
	proto_msg_free(&msg);

	buf_reset(&b);
	sample_frame(S_PONG, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_PONG);
	cr_assert_eq(msg.nonce, 0xdeadbeefcafef00dull);
	proto_msg_free(&msg);

	buf_reset(&b);
	sample_frame(S_ERROR, &b);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.type, PROTO_ERROR);
	cr_assert_eq(msg.error.code, PROTO_ERR_CLUSTER);
	cr_assert_str_eq(msg.error.msg, "cluster id differs: naïve ✓");
	proto_msg_free(&msg);
	buf_free(&b);
}

Test(proto, error_message_limits)
{
	char text[PROTO_MAX_ERROR_MSG + 2];
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	memset(text, 'x', sizeof(text));
	text[PROTO_MAX_ERROR_MSG] = '\0';
	cr_assert_eq(proto_put_error(&b, PROTO_ERR_SHUTDOWN, text), 0);
	parse_ok(&b, &msg);
	cr_assert_str_eq(msg.error.msg, text);
	proto_msg_free(&msg);

	buf_reset(&b);
	cr_assert_eq(proto_put_error(&b, PROTO_ERR_SHUTDOWN, NULL), 0);
	parse_ok(&b, &msg);
	cr_assert_str_eq(msg.error.msg, "");
	proto_msg_free(&msg);

	buf_reset(&b);
	text[PROTO_MAX_ERROR_MSG] = 'x';
	text[PROTO_MAX_ERROR_MSG + 1] = '\0';
	cr_assert_eq(proto_put_error(&b, PROTO_ERR_SHUTDOWN, text), -EINVAL);
	cr_assert_eq(b.len, 0);
	buf_free(&b);
}

/* A code this build does not know still parses: the peer may be newer. */
Test(proto, error_with_unknown_code_parses)
{
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	cr_assert_eq(proto_put_error(&b, 0xffff, "from the future"), 0);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.error.code, 0xffff);
	cr_assert_str_eq(proto_error_name(msg.error.code), "unknown");
	proto_msg_free(&msg);
	buf_free(&b);
}

Test(proto, error_text_must_be_clean_utf8)
{
	static const struct {
		const char *text;
		const char *why;
	} bad[] = {
	    {"\xff", "error message is not UTF-8"},
	    {"a\x80", "error message is not UTF-8"},
	    {"\xc0\x80", "error message is not UTF-8"},
	    {"\xe0\x80\xaf", "overlong or out-of-range character in error message"},
	    {"\xf4\x90\x80\x80", "overlong or out-of-range character in error message"},
	    {"\xed\xa0\x80", "surrogate in error message"},
	    {"\xe2\x82", "error message ends inside a character"},
	    {"\xe2\x28\xa1", "error message is not UTF-8"},
	    {"two\nlines", "control character in error message"},
	    {"\x1b[2J", "control character in error message"},
	    {"\x7f", "control character in error message"},
	    {"\xc2\x9b", "control character in error message"},
	};
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t n = strlen(bad[i].text);
		uint8_t body[64];

		cr_assert_eq(proto_put_error(&b, 1, bad[i].text), -EINVAL, "encoder took case %zu",
			     i);
		cr_assert_eq(b.len, 0);
		put_le(body, 1, 2);
		put_le(body + 2, n, 2);
		memcpy(body + 4, bad[i].text, n);
		raw_frame(&b, PROTO_ERROR, body, 4 + n);
		expect_reject(b.data, b.len, -EBADMSG, bad[i].why);
		buf_reset(&b);
	}
	/* Embedded NUL would cut the C string short: it counts as a control character. */
	raw_frame(&b, PROTO_ERROR, (const uint8_t[]){1, 0, 3, 0, 'a', 0, 'b'}, 7);
	expect_reject(b.data, b.len, -EBADMSG, "control character in error message");
	buf_free(&b);
}

Test(proto, error_message_over_bound_refused)
{
	uint8_t body[4 + PROTO_MAX_ERROR_MSG + 1];
	struct buf b = BUF_INIT;

	put_le(body, 1, 2);
	put_le(body + 2, PROTO_MAX_ERROR_MSG + 1, 2);
	memset(body + 4, 'x', PROTO_MAX_ERROR_MSG + 1);
	raw_frame(&b, PROTO_ERROR, body, sizeof(body));
	expect_reject(b.data, b.len, -EBADMSG, "error message too long");
	buf_reset(&b);
	/* The text length claims more than the frame holds. */
	put_le(body + 2, 10, 2);
	raw_frame(&b, PROTO_ERROR, body, 4 + 9);
	expect_reject(b.data, b.len, -EBADMSG, "error message overruns frame");
	buf_free(&b);
}

Test(proto, stream_of_frames_is_split_by_peek)
{
	struct buf b = BUF_INIT;
	size_t off = 0, frame_len;
	int seen = 0;

	for (int i = 0; i < N_SAMPLES; i++)
		sample_frame(i, &b);
	while (off < b.len) {
		struct proto_msg msg;

		cr_assert_eq(proto_frame_peek(b.data + off, b.len - off, &frame_len, NULL), 0);
		parse_ok(&(struct buf){b.data + off, frame_len, frame_len}, &msg);
		cr_assert_eq(msg.type, seen + 1, "frame %d has type %d", seen, msg.type);
		proto_msg_free(&msg);
		off += frame_len;
		seen++;
	}
	cr_assert_eq(off, b.len);
	cr_assert_eq(seen, N_SAMPLES);
	buf_free(&b);
}

Test(proto, peek_wants_more_until_the_frame_is_whole)
{
	for (int s = 0; s < N_SAMPLES; s++) {
		struct buf b = BUF_INIT;
		size_t frame_len;

		sample_frame(s, &b);
		for (size_t cut = 0; cut < b.len; cut++) {
			cr_assert_eq(proto_frame_peek(b.data, cut, &frame_len, NULL), -EAGAIN);
			cr_assert_eq(frame_len, cut < 4 ? 0 : b.len, "sample %d cut %zu", s, cut);
		}
		cr_assert_eq(proto_frame_peek(b.data, b.len, &frame_len, NULL), 0);
		cr_assert_eq(frame_len, b.len);
		buf_free(&b);
	}
}

Test(proto, every_truncation_is_refused)
{
	for (int s = 0; s < N_SAMPLES; s++) {
		struct buf b = BUF_INIT;

		sample_frame(s, &b);
		for (size_t cut = 0; cut < b.len; cut++) {
			uint8_t *copy = malloc(b.len);

			cr_assert_not_null(copy);
			memcpy(copy, b.data, b.len);
			/* As buffered: the length field still promises the whole frame. */
			expect_reject(copy, cut, -EBADMSG, NULL);
			/* As sent by a peer that cut the body but framed what it sent. */
			if (cut >= PROTO_HEADER_LEN) {
				put_le(copy, cut - 4, 4);
				expect_reject(copy, cut, -EBADMSG, NULL);
			}
			free(copy);
		}
		buf_free(&b);
	}
}

Test(proto, zero_length_frame_refused)
{
	static const uint8_t zero[8];
	const char *why = NULL;
	size_t frame_len;

	cr_assert_eq(proto_frame_peek(zero, sizeof(zero), &frame_len, &why), -EBADMSG);
	cr_assert_str_eq(why, "zero-length frame");
	cr_assert_eq(frame_len, 0);
	expect_reject(zero, sizeof(zero), -EBADMSG, "zero-length frame");
}

Test(proto, oversized_length_refused_before_buffering)
{
	uint8_t hdr[PROTO_HEADER_LEN] = {0, 0, 0, 0, PROTO_PING};
	const char *why = NULL;
	size_t frame_len;

	put_le(hdr, PROTO_MAX_FRAME + 1ull, 4);
	cr_assert_eq(proto_frame_peek(hdr, 4, &frame_len, &why), -EMSGSIZE);
	cr_assert_str_eq(why, "frame too long");
	expect_reject(hdr, sizeof(hdr), -EMSGSIZE, "frame too long");
	put_le(hdr, 0xffffffffu, 4);
	cr_assert_eq(proto_frame_peek(hdr, 4, &frame_len, &why), -EMSGSIZE);
	/* The largest allowed length is merely more to read, for a type that can need it. */
	put_le(hdr, PROTO_MAX_FRAME, 4);
	hdr[4] = PROTO_EVENTS;
	cr_assert_eq(proto_frame_peek(hdr, sizeof(hdr), &frame_len, &why), -EAGAIN);
	cr_assert_eq(frame_len, 4 + (size_t)PROTO_MAX_FRAME);
}

/* A frame longer than its type can ever be is refused from its first five bytes. */
Test(proto, peek_refuses_length_its_type_cannot_need)
{
	static const struct {
		uint8_t type;
		uint32_t max;
	} types[] = {
	    {PROTO_HELLO, 1 + 46 + 16 * PROTO_MAX_VECTOR + 4},
	    {PROTO_ACK, 17},
	    {PROTO_FETCH, 17},
	    {PROTO_PING, 9},
	    {PROTO_PONG, 9},
	    {PROTO_ERROR, 1 + 4 + PROTO_MAX_ERROR_MSG},
	};
	uint8_t hdr[PROTO_HEADER_LEN];
	const char *why = NULL;
	size_t frame_len;

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		put_le(hdr, types[i].max, 4);
		hdr[4] = types[i].type;
		cr_assert_eq(proto_frame_peek(hdr, sizeof(hdr), &frame_len, &why), -EAGAIN);
		cr_assert_eq(frame_len, 4 + types[i].max);
		put_le(hdr, types[i].max + 1, 4);
		/* Four bytes say nothing of the type yet. */
		cr_assert_eq(proto_frame_peek(hdr, 4, &frame_len, &why), -EAGAIN);
		cr_assert_eq(proto_frame_peek(hdr, sizeof(hdr), &frame_len, &why), -EMSGSIZE);
		cr_assert_str_eq(why, "frame too long for its type");
		cr_assert_eq(frame_len, 0);
	}
}

Test(proto, peek_refuses_unknown_type)
{
	uint8_t hdr[PROTO_HEADER_LEN] = {9, 0, 0, 0, 0};
	const char *why = NULL;
	size_t frame_len;

	cr_assert_eq(proto_frame_peek(hdr, sizeof(hdr), &frame_len, &why), -EPROTO);
	cr_assert_str_eq(why, "unknown frame type");
	hdr[4] = PROTO_SNAP_SCOPE + 1;
	cr_assert_eq(proto_frame_peek(hdr, sizeof(hdr), &frame_len, &why), -EPROTO);
}

Test(proto, unknown_type_refused)
{
	static const uint8_t types[] = {0, PROTO_SNAP_SCOPE + 1, 0x7f, 0xff};
	struct buf b = BUF_INIT;

	for (size_t i = 0; i < sizeof(types); i++) {
		raw_frame(&b, types[i], "12345678", 8);
		expect_reject(b.data, b.len, -EPROTO, "unknown frame type");
		buf_reset(&b);
	}
	buf_free(&b);
}

Test(proto, trailing_bytes_refused)
{
	static const char *const why[N_SAMPLES] = {
	    [S_HELLO] = "trailing bytes after hello",
	    [S_EVENTS] = "trailing bytes after last record",
	    [S_ACK] = "trailing bytes after body",
	    [S_FETCH] = "trailing bytes after body",
	    [S_PING] = "trailing bytes after body",
	    [S_PONG] = "trailing bytes after body",
	    [S_ERROR] = "trailing bytes after error",
	};

	for (int s = 0; s < N_SAMPLES; s++) {
		struct buf b = BUF_INIT;

		sample_frame(s, &b);
		/* Bytes past the frame's own length: the caller split the stream wrong. */
		cr_assert_eq(buf_reserve(&b, 1), 0);
		b.data[b.len++] = 0;
		expect_reject(b.data, b.len, -EBADMSG, "bytes after frame");
		/* Inside the frame's length but past its body. */
		put_le(b.data, b.len - 4, 4);
		expect_reject(b.data, b.len, -EBADMSG, why[s]);
		buf_free(&b);
	}
}

Test(proto, hello_with_other_version_refused)
{
	struct buf b = BUF_INIT;

	sample_frame(S_HELLO, &b);
	put_le(b.data + PROTO_HEADER_LEN, PROTO_VERSION + 1, 2);
	expect_reject(b.data, b.len, -EPROTO, "unsupported protocol version");
	buf_free(&b);
}

Test(proto, hello_vector_over_bound_refused)
{
	struct evid *big = calloc(PROTO_MAX_VECTOR + 1, sizeof(*big));
	struct proto_hello hello = {.applied = big};
	struct buf b = BUF_INIT;
	struct proto_msg msg;

	cr_assert_not_null(big);
	for (uint32_t i = 0; i <= PROTO_MAX_VECTOR; i++)
		big[i] = (struct evid){i + 1, i};
	hello.count = PROTO_MAX_VECTOR;
	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.hello.count, PROTO_MAX_VECTOR);
	proto_msg_free(&msg);

	buf_reset(&b);
	hello.count = PROTO_MAX_VECTOR + 1;
	cr_assert_eq(proto_put_hello(&b, &hello), -EINVAL);
	cr_assert_eq(b.len, 0);
	/* Forged by hand: the count alone must stop it, whatever follows. */
	hello.count = 1;
	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	put_le(b.data + PROTO_HEADER_LEN + 42, PROTO_MAX_VECTOR + 1, 4);
	expect_reject(b.data, b.len, -EBADMSG, "applied vector too long");
	put_le(b.data + PROTO_HEADER_LEN + 42, 0xffffffffu, 4);
	expect_reject(b.data, b.len, -EBADMSG, "applied vector too long");
	put_le(b.data + PROTO_HEADER_LEN + 42, 2, 4);
	expect_reject(b.data, b.len, -EBADMSG, "applied vector overruns frame");
	free(big);
	buf_free(&b);
}

Test(proto, hello_vector_must_be_in_origin_order)
{
	struct evid v[] = {{5, 1}, {3, 1}};
	struct proto_hello hello = {.count = 2, .applied = v};
	struct buf b = BUF_INIT;

	cr_assert_eq(proto_put_hello(&b, &hello), -EINVAL);
	v[1].origin = 5;
	cr_assert_eq(proto_put_hello(&b, &hello), -EINVAL, "duplicate origin accepted");
	v[1].origin = 6;
	cr_assert_eq(proto_put_hello(&b, &hello), 0);
	/* Swap the origins on the wire: entries start after the 46 fixed bytes. */
	put_le(b.data + PROTO_HEADER_LEN + 46, 6, 8);
	put_le(b.data + PROTO_HEADER_LEN + 46 + 16, 5, 8);
	expect_reject(b.data, b.len, -EBADMSG, "applied vector not in origin order");
	put_le(b.data + PROTO_HEADER_LEN + 46, 5, 8);
	put_le(b.data + PROTO_HEADER_LEN + 46 + 16, 5, 8);
	expect_reject(b.data, b.len, -EBADMSG, "applied vector not in origin order");
	buf_free(&b);
}

/* An EVENTS body by hand: count, then each (len, bytes) as given. */
static void events_body(struct buf *b, uint32_t count, const uint32_t *lens, size_t n)
{
	uint8_t *body;
	size_t body_len = 4;

	for (size_t i = 0; i < n; i++)
		body_len += 4 + lens[i];
	body = calloc(1, body_len);
	cr_assert_not_null(body);
	put_le(body, count, 4);
	for (size_t i = 0, off = 4; i < n; i++) {
		put_le(body + off, lens[i], 4);
		off += 4 + lens[i];
	}
	raw_frame(b, PROTO_EVENTS, body, body_len);
	free(body);
}

Test(proto, events_framing_refused)
{
	struct buf b = BUF_INIT;
	uint32_t lens[2] = {EVENT_HEADER_LEN, EVENT_HEADER_LEN};

	events_body(&b, 0, NULL, 0);
	expect_reject(b.data, b.len, -EBADMSG, "empty events batch");
	buf_reset(&b);
	raw_frame(&b, PROTO_EVENTS, "\1\0", 2);
	expect_reject(b.data, b.len, -EBADMSG, "truncated events");
	buf_reset(&b);
	/* The count promises more records than the body holds. */
	events_body(&b, 3, lens, 2);
	expect_reject(b.data, b.len, -EBADMSG, "truncated record length");
	buf_reset(&b);
	events_body(&b, 0xffffffffu, lens, 2);
	expect_reject(b.data, b.len, -EBADMSG, "truncated record length");
	buf_reset(&b);
	/* Fewer records than the body holds. */
	events_body(&b, 1, lens, 2);
	expect_reject(b.data, b.len, -EBADMSG, "trailing bytes after last record");
	buf_reset(&b);
	lens[1] = EVENT_HEADER_LEN - 1;
	events_body(&b, 2, lens, 2);
	expect_reject(b.data, b.len, -EBADMSG, "record length out of range");
	buf_reset(&b);
	lens[1] = 0;
	events_body(&b, 2, lens, 2);
	expect_reject(b.data, b.len, -EBADMSG, "record length out of range");
	buf_free(&b);
}

Test(proto, events_record_overrunning_frame_refused)
{
	struct buf b = BUF_INIT;
	uint32_t lens[2] = {EVENT_HEADER_LEN, EVENT_HEADER_LEN};

	events_body(&b, 2, lens, 2);
	/* The second record claims one byte more than is left. */
	put_le(b.data + PROTO_HEADER_LEN + 4 + 4 + EVENT_HEADER_LEN, EVENT_HEADER_LEN + 1, 4);
	expect_reject(b.data, b.len, -EBADMSG, "record overruns frame");
	put_le(b.data + PROTO_HEADER_LEN + 4 + 4 + EVENT_HEADER_LEN, EVENT_MAX_RECORD, 4);
	expect_reject(b.data, b.len, -EBADMSG, "record overruns frame");
	put_le(b.data + PROTO_HEADER_LEN + 4 + 4 + EVENT_HEADER_LEN, EVENT_MAX_RECORD + 1, 4);
	expect_reject(b.data, b.len, -EBADMSG, "record length out of range");
	put_le(b.data + PROTO_HEADER_LEN + 4 + 4 + EVENT_HEADER_LEN, 0xffffffffu, 4);
	expect_reject(b.data, b.len, -EBADMSG, "record length out of range");
	buf_free(&b);
}

/* Builds a one-record EVENTS frame from raw record bytes and returns the parsed record. */
static void one_record_frame(struct buf *b, const uint8_t *rec, size_t len, struct proto_msg *msg)
{
	struct proto_events_iter it;
	struct proto_batch batch;
	const uint8_t *got;
	size_t got_len;

	cr_assert_eq(proto_put_events_begin(b, &batch), 0);
	cr_assert_eq(proto_put_events_add(b, &batch, rec, len), 0);
	cr_assert_eq(proto_put_events_end(b, &batch), 0);
	parse_ok(b, msg);
	proto_events_iter_init(&it, &msg->events);
	cr_assert_eq(proto_events_next(&it, &got, &got_len), 1);
	cr_assert_eq(got_len, len);
	cr_assert_eq(proto_events_next(&it, &got, &got_len), 0);
}

Test(proto, events_with_vref_refused_by_decode_helper)
{
	struct event ev = {.type = EV_WRITE, .flags = EVENT_F_VREF, .origin = 7, .seq = 1};
	struct buf b = BUF_INIT;
	struct proto_batch batch;
	struct proto_msg msg;
	struct event got;
	const char *why = NULL;
	uint8_t *rec;
	size_t len;

	ev.vref = (struct vref){3, 65536, 1 << 20, 0x12345678};
	rec = encode_record(&ev, &len);
	/* The frame is well formed: only the record's meaning is wrong. */
	one_record_frame(&b, rec, len, &msg);
	cr_assert_eq(proto_event_decode(msg.events.records + 4, len, &got, &why), -EBADMSG);
	cr_assert_str_eq(why, "value-log reference in a shipped event");
	cr_assert_null(got.path);
	cr_assert_eq(got.type, 0);
	proto_msg_free(&msg);

	/* The encoder refuses to put one in a batch in the first place. */
	buf_reset(&b);
	cr_assert_eq(proto_put_events_begin(&b, &batch), 0);
	cr_assert_eq(proto_put_events_add_event(&b, &batch, &ev), -EINVAL);
	cr_assert_eq(proto_put_events_end(&b, &batch), 0);
	cr_assert_eq(b.len, 0, "an empty batch left a frame behind");
	free(rec);
	buf_free(&b);
}

Test(proto, events_record_must_fill_its_frame_length)
{
	struct buf b = BUF_INIT;
	struct proto_msg msg;
	struct event ev;
	const char *why = NULL;
	uint8_t *rec, *longer;
	size_t len;

	make_event(&ev, EV_CREATE, 1);
	rec = encode_record(&ev, &len);
	longer = calloc(1, len + 1);
	cr_assert_not_null(longer);
	memcpy(longer, rec, len);
	one_record_frame(&b, longer, len + 1, &msg);
	event_free(&ev);
	cr_assert_eq(proto_event_decode(msg.events.records + 4, len + 1, &ev, &why), -EBADMSG);
	cr_assert_str_eq(why, "record shorter than its frame length");
	proto_msg_free(&msg);

	/* A corrupt record gets event_decode()'s own reason. */
	buf_reset(&b);
	rec[len - 1] ^= 1;
	one_record_frame(&b, rec, len, &msg);
	cr_assert_eq(proto_event_decode(msg.events.records + 4, len, &ev, &why), -EBADMSG);
	cr_assert_str_eq(why, "bad crc");
	proto_msg_free(&msg);
	free(longer);
	free(rec);
	buf_free(&b);
}

Test(proto, events_add_checks_record_length)
{
	static uint8_t rec[EVENT_HEADER_LEN];
	struct buf b = BUF_INIT;
	struct proto_batch batch;
	struct event ev;

	cr_assert_eq(proto_put_events_begin(&b, &batch), 0);
	cr_assert_eq(proto_put_events_add(&b, &batch, rec, EVENT_HEADER_LEN - 1), -EINVAL);
	cr_assert_eq(proto_put_events_add(&b, &batch, rec, EVENT_MAX_RECORD + 1ull), -EINVAL);
	/* An event the event codec refuses (no path on a create). */
	make_event(&ev, EV_CREATE, 1);
	cr_assert_eq(event_set_path(&ev, NULL), 0);
	cr_assert_eq(proto_put_events_add_event(&b, &batch, &ev), -EINVAL);
	cr_assert_eq(batch.count, 0);
	cr_assert_eq(b.len, PROTO_HEADER_LEN + 4);
	event_free(&ev);
	buf_free(&b);
}

/*
 * A batch grows up to the frame maximum and no further: the record that
 * would cross it is refused with -EMSGSIZE, and what was added before it
 * still makes a valid frame.
 */
Test(proto, events_batch_stops_at_frame_maximum)
{
	uint8_t *big = calloc(1, EVENT_MAX_RECORD);
	struct buf b = BUF_INIT;
	struct proto_batch batch;
	struct proto_msg msg;
	uint32_t added = 0;
	int ret;

	cr_assert_not_null(big);
	cr_assert_eq(proto_put_events_begin(&b, &batch), 0);
	while ((ret = proto_put_events_add(&b, &batch, big, EVENT_MAX_RECORD)) == 0)
		added++;
	cr_assert_eq(ret, -EMSGSIZE);
	cr_assert_eq(added, (PROTO_MAX_FRAME - 5) / (4 + EVENT_MAX_RECORD));
	cr_assert_eq(batch.count, added);
	cr_assert_eq(proto_put_events_end(&b, &batch), 0);
	cr_assert_leq(b.len - 4, PROTO_MAX_FRAME);
	parse_ok(&b, &msg);
	cr_assert_eq(msg.events.count, added);
	proto_msg_free(&msg);
	free(big);
	buf_free(&b);
}

/* Frames appended after others leave those intact: one buffer, several frames, one write. */
Test(proto, batch_appends_after_other_frames)
{
	struct buf b = BUF_INIT;
	struct proto_batch batch;
	struct proto_msg msg;
	size_t ack_len, frame_len;

	cr_assert_eq(proto_put_ack(&b, 1, 2), 0);
	ack_len = b.len;
	cr_assert_eq(proto_put_events_begin(&b, &batch), 0);
	cr_assert_eq(proto_put_events_end(&b, &batch), 0);
	cr_assert_eq(b.len, ack_len);
	put_sample_events(&b);
	cr_assert_eq(proto_put_ping(&b, 3), 0);
	cr_assert_eq(proto_frame_peek(b.data, b.len, &frame_len, NULL), 0);
	cr_assert_eq(frame_len, ack_len);
	cr_assert_eq(proto_frame_peek(b.data + ack_len, b.len - ack_len, &frame_len, NULL), 0);
	cr_assert_eq(proto_parse(b.data + ack_len, frame_len, &msg, NULL), 0);
	cr_assert_eq(msg.events.count, N_BATCH);
	proto_msg_free(&msg);
	buf_free(&b);
}

/*
 * Every single-byte corruption of every sample frame, with three masks:
 * the decoder must refuse it with a reason or accept it, never crash or
 * read outside the frame (run under ASan and valgrind to see the latter).
 * What it accepts must re-encode to the same bytes.
 */
Test(proto, byte_flips_never_crash)
{
	static const uint8_t masks[] = {0x01, 0x80, 0xff};

	for (int s = 0; s < N_SAMPLES; s++) {
		struct buf b = BUF_INIT;

		sample_frame(s, &b);
		for (size_t i = 0; i < b.len; i++) {
			for (size_t m = 0; m < sizeof(masks); m++) {
				uint8_t *copy = malloc(b.len);
				struct proto_events_iter it;
				struct proto_msg msg;
				const char *why = NULL;
				const uint8_t *rec;
				size_t len;

				cr_assert_not_null(copy);
				memcpy(copy, b.data, b.len);
				copy[i] ^= masks[m];
				if (proto_parse(copy, b.len, &msg, &why) < 0) {
					cr_assert_not_null(why);
					free(copy);
					continue;
				}
				if (msg.type == PROTO_EVENTS) {
					proto_events_iter_init(&it, &msg.events);
					while (proto_events_next(&it, &rec, &len)) {
						struct event ev;

						why = NULL;
						if (proto_event_decode(rec, len, &ev, &why) < 0)
							cr_assert_not_null(why);
						event_free(&ev);
					}
				}
				proto_msg_free(&msg);
				free(copy);
			}
		}
		buf_free(&b);
	}
}

Test(proto, names)
{
	cr_assert_str_eq(proto_type_name(PROTO_HELLO), "hello");
	cr_assert_str_eq(proto_type_name(PROTO_EVENTS), "events");
	cr_assert_str_eq(proto_type_name(PROTO_ERROR), "error");
	cr_assert_str_eq(proto_type_name(0), "unknown");
	cr_assert_str_eq(proto_error_name(PROTO_ERR_MALFORMED), "malformed");
	cr_assert_str_eq(proto_error_name(PROTO_ERR_TRIMMED), "trimmed");
	cr_assert_str_eq(proto_error_name(0), "unknown");
}
