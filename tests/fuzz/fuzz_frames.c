/*
 * fuzz_frames.c - libFuzzer target for the replication frame codec
 * (net/proto.c), and through EVENTS for the event codec behind it.
 *
 * The input is read the way a link reads its TLS stream: split into frames
 * by proto_frame_peek(), each parsed by proto_parse(), each EVENTS record
 * decoded by proto_event_decode().  Anything refused must come with a
 * reason; anything accepted must re-encode to exactly the bytes it came
 * from, records included.  Every other outcome is a codec bug and abort()s.
 *
 * Random bytes rarely frame themselves consistently or carry a valid event
 * CRC, which would keep the fuzzer at the first length check, so each input
 * is also tried once as a single frame "sealed": its length field set to
 * the input size and, for EVENTS, each record's own length made to fit its
 * framing and its CRC made right.  That copy reaches the body and event
 * checks.
 *
 * The same stream is also put through the handshake's rules (net/hello.c)
 * as a node applies them to a peer that dialled it: the first frame must be
 * an acceptable HELLO, and each event after it must pass the receiver's
 * checks; every refusal must say why.
 *
 * Built with -DFUZZ_WRITE_SEEDS instead, the file is a small program that
 * writes one valid frame of each type, and a stream of all of them, into
 * the directory given as its argument: the seed corpus tools/fuzz uses.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bytes.h"
#include "lib/crc32c.h"
#include "journal/event.h"
#include "net/hello.h"
#include "net/proto.h"

/* The cluster and peer id the seed HELLO carries, so seeds pass the handshake. */
#define SEED_CLUSTER_BYTE 0xab
#define SEED_PEER_ID	  2

/* Re-encodes a parsed message into b; aborts if the encoder refuses what the decoder took. */
static void reencode(const struct proto_msg *msg, struct buf *b)
{
	struct proto_events_iter it;
	struct proto_batch batch;
	const uint8_t *rec;
	size_t len;
	int ret = -1;

	switch (msg->type) {
	case PROTO_HELLO:
		ret = proto_put_hello(b, &msg->hello);
		break;
	case PROTO_EVENTS:
		ret = proto_put_events_begin(b, &batch);
		proto_events_iter_init(&it, &msg->events);
		while (ret == 0 && proto_events_next(&it, &rec, &len))
			ret = proto_put_events_add(b, &batch, rec, len);
		if (ret == 0)
			ret = proto_put_events_end(b, &batch);
		break;
	case PROTO_ACK:
		ret = proto_put_ack(b, msg->ack.origin, msg->ack.seq);
		break;
	case PROTO_FETCH:
		ret = proto_put_fetch(b, msg->fetch.origin, msg->fetch.from_seq);
		break;
	case PROTO_PING:
		ret = proto_put_ping(b, msg->nonce);
		break;
	case PROTO_PONG:
		ret = proto_put_pong(b, msg->nonce);
		break;
	case PROTO_ERROR:
		ret = proto_put_error(b, msg->error.code, msg->error.msg);
		break;
	case PROTO_SNAP_BEGIN:
	case PROTO_SNAP_DONE:
		ret = proto_put_snap_round(b, msg->type, msg->round);
		break;
	case PROTO_SNAP_INFO:
	case PROTO_SNAP_END:
		ret = proto_put_snap_vec(b, msg->type, msg->snap_vec.round, msg->snap_vec.entries,
					 msg->snap_vec.vec, msg->snap_vec.count);
		break;
	case PROTO_SNAP_LIST:
	case PROTO_SNAP_GET:
	case PROTO_SNAP_SCOPE:
		ret = proto_put_snap_path(b, msg->type, msg->snap_path.id, msg->snap_path.path);
		break;
	case PROTO_SNAP_DIR:
		ret = proto_put_snap_dir(b, msg->snap_path.path, msg->snap_path.listing,
					 msg->snap_path.listing_len);
		break;
	case PROTO_SNAP_ENTRY:
		ret = proto_put_snap_entry(b, msg->snap_entry.id, msg->snap_entry.status,
					   &msg->snap_entry.meta);
		break;
	case PROTO_SNAP_DATA: {
		uint8_t *dst;

		ret = proto_put_snap_data(b, msg->snap_data.id, msg->snap_data.offset,
					  msg->snap_data.len, &dst);
		if (ret == 0 && msg->snap_data.len)
			memcpy(dst, msg->snap_data.data, msg->snap_data.len);
		break;
	}
	}
	if (ret != 0)
		abort();
}

/* A record that decodes must be exactly the encoding of what it decodes to. */
static void check_record(const uint8_t *rec, size_t len)
{
	const char *why = NULL;
	struct event ev;
	uint8_t *again;
	size_t again_len;

	if (proto_event_decode(rec, len, &ev, &why) != 0) {
		if (!why)
			abort();
		return;
	}
	if (event_encoded_len(&ev) != len)
		abort();
	again = malloc(len);
	if (!again || event_encode(&ev, again, len, &again_len) != 0 || again_len != len ||
	    memcmp(again, rec, len) != 0)
		abort();
	free(again);
	event_free(&ev);
}

static void check_frame(const uint8_t *frame, size_t len)
{
	struct buf b = BUF_INIT;
	struct proto_events_iter it;
	struct proto_msg msg;
	const char *why = NULL;
	const uint8_t *rec;
	size_t rec_len, frame_len;
	uint32_t n = 0;

	if (proto_parse(frame, len, &msg, &why) != 0) {
		if (!why)
			abort();
		return;
	}
	/* peek must never refuse, or mis-measure, what parse accepts. */
	if (proto_frame_peek(frame, len, &frame_len, &why) != 0 || frame_len != len)
		abort();
	reencode(&msg, &b);
	if (b.len != len || memcmp(b.data, frame, len) != 0)
		abort();
	if (msg.type == PROTO_EVENTS) {
		proto_events_iter_init(&it, &msg.events);
		while (proto_events_next(&it, &rec, &rec_len)) {
			if (rec < frame || rec_len > len ||
			    rec - frame > (ptrdiff_t)(len - rec_len))
				abort();
			check_record(rec, rec_len);
			n++;
		}
		if (n != msg.events.count)
			abort();
	}
	proto_msg_free(&msg);
	buf_free(&b);
}

/* Reads data as a stream of frames, as a link would. */
static void check_stream(const uint8_t *data, size_t size)
{
	size_t off = 0, frame_len;
	const char *why;
	int ret;

	while (off < size) {
		why = NULL;
		ret = proto_frame_peek(data + off, size - off, &frame_len, &why);
		if (ret == -EAGAIN) {
			if (frame_len != 0 && frame_len <= size - off)
				abort();
			return;
		}
		if (ret != 0) {
			if (!why || frame_len != 0)
				abort();
			return;
		}
		if (frame_len < PROTO_HEADER_LEN || frame_len > size - off)
			abort();
		check_frame(data + off, frame_len);
		off += frame_len;
	}
}

/* The handshake's rules over one frame; returns 0 while the link would stay up. */
static int handshake_frame(const uint8_t *frame, size_t len, int first)
{
	uint8_t cluster[PROTO_CLUSTER_ID_LEN];
	struct proto_events_iter it;
	struct proto_msg msg;
	const char *why = NULL;
	const uint8_t *rec;
	size_t rec_len;
	int code = 0;

	if (proto_parse(frame, len, &msg, &why) != 0)
		return -1;
	memset(cluster, SEED_CLUSTER_BYTE, sizeof(cluster));
	if (first) {
		code = hello_check(cluster, SEED_PEER_ID, &msg, &why);
	} else if (msg.type == PROTO_EVENTS) {
		proto_events_iter_init(&it, &msg.events);
		while (!code && proto_events_next(&it, &rec, &rec_len)) {
			struct event ev;

			if (proto_event_decode(rec, rec_len, &ev, &why) != 0) {
				code = -1;
				break;
			}
			why = NULL;
			code = hello_check_event(&ev, &why);
			event_free(&ev);
		}
	}
	if (code > 0 && !why)
		abort();
	proto_msg_free(&msg);
	return code;
}

/* Reads data as a peer's stream, from its first frame, until the link would drop. */
static void check_handshake(const uint8_t *data, size_t size)
{
	size_t off = 0, frame_len;
	const char *why;

	while (off < size && proto_frame_peek(data + off, size - off, &frame_len, &why) == 0) {
		if (handshake_frame(data + off, frame_len, off == 0) != 0)
			return;
		off += frame_len;
	}
}

/* Makes the framing of data (size bytes) consistent, as described at the top. */
static void seal(uint8_t *data, size_t size)
{
	uint8_t *p = data + PROTO_HEADER_LEN + 4;
	size_t left;

	put_le32(data, (uint32_t)(size - 4));
	if (data[4] != PROTO_EVENTS || size < PROTO_HEADER_LEN + 4)
		return;
	left = size - PROTO_HEADER_LEN - 4;
	while (left >= 4) {
		uint32_t n = get_le32(p);

		if (n > left - 4)
			return;
		if (n >= 8) {
			/* A shorter inner length is kept: the decoder must notice the slack. */
			uint32_t r = get_le32(p + 4);

			if (r < 8 || r > n)
				r = n;
			put_le32(p + 4, r);
			put_le32(p + 8, crc32c(0, p + 4 + 8, r - 8));
		}
		p += 4 + (size_t)n;
		left -= 4 + (size_t)n;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *sealed;

	check_stream(data, size);
	check_handshake(data, size);
	check_frame(data, size);
	if (size < PROTO_HEADER_LEN || size - 4 > PROTO_MAX_FRAME)
		return 0;
	sealed = malloc(size);
	if (!sealed)
		abort();
	memcpy(sealed, data, size);
	seal(sealed, size);
	check_frame(sealed, size);
	free(sealed);
	return 0;
}

#ifdef FUZZ_WRITE_SEEDS
static int write_seed(const char *dir, const char *name, const struct buf *b)
{
	char path[4096];
	FILE *f;
	int ret = -1;

	snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		goto out;
	if (fwrite(b->data, 1, b->len, f) == b->len)
		ret = 0;
	if (fclose(f) != 0)
		ret = -1;
out:
	if (ret < 0)
		perror(path);
	return ret;
}

/* An EVENTS frame of a few event types that carry different fields. */
static void put_events(struct buf *b)
{
	static const unsigned types[] = {EV_CREATE, EV_WRITE, EV_RENAME, EV_SETXATTR, EV_ROLE};
	struct proto_batch batch;

	if (proto_put_events_begin(b, &batch))
		abort();
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct event ev = {.type = (uint8_t)types[i], .origin = 1, .seq = i + 1};

		ev.hlc = (uint64_t)1700000000000 << 16;
		ev.fid = (struct fid){1, 100 + i};
		ev.mode = 0100644;
		if (event_set_path(&ev, "dir/file") || event_set_path2(&ev, "dir/other") ||
		    event_set_name(&ev, "user.tag") || event_set_data(&ev, "payload", 7) ||
		    proto_put_events_add_event(b, &batch, &ev))
			abort();
		event_free(&ev);
	}
	if (proto_put_events_end(b, &batch))
		abort();
}

/*
 * EVENTS carrying a write whose payload is in the sender's value log: well
 * framed, refused per record.  Added as raw bytes, since the encoder's
 * event path refuses it.
 */
static void put_vref_events(struct buf *b)
{
	struct event ev = {.type = EV_WRITE, .flags = EVENT_F_VREF, .origin = 1, .seq = 9};
	uint8_t rec[EVENT_HEADER_LEN];
	struct proto_batch batch;
	size_t len;

	ev.vref = (struct vref){3, 65536, 1 << 20, 0x12345678};
	if (event_encode(&ev, rec, sizeof(rec), &len) || proto_put_events_begin(b, &batch) ||
	    proto_put_events_add(b, &batch, rec, len) || proto_put_events_end(b, &batch))
		abort();
}

/* Appends sample frame number which, in the order of names[] in main(), to b. */
static void put_sample(int which, struct buf *b)
{
	struct evid vector[] = {{1, 10}, {2, 20}, {3, 0}};
	struct proto_hello hello = {
	    .node_id = SEED_PEER_ID, .term = 1, .count = 3, .applied = vector};
	int err = 0;

	memset(hello.cluster_id, SEED_CLUSTER_BYTE, sizeof(hello.cluster_id));
	switch (which) {
	case 0:
		err = proto_put_hello(b, &hello);
		break;
	case 1:
		put_events(b);
		break;
	case 2:
		err = proto_put_ack(b, 1, 5);
		break;
	case 3:
		err = proto_put_fetch(b, 1, 6);
		break;
	case 4:
		err = proto_put_ping(b, 77);
		break;
	case 5:
		err = proto_put_pong(b, 77);
		break;
	case 6:
		err = proto_put_error(b, PROTO_ERR_MALFORMED, "bad frame: naïve ✓");
		break;
	case 7:
		put_vref_events(b);
		break;
	case 8:
		hello.flags = PROTO_HELLO_PUSH;
		err = proto_put_hello(b, &hello);
		break;
	}
	if (err)
		abort();
}

int main(int argc, char **argv)
{
	static const char *const names[] = {"hello", "events", "ack",	      "fetch",	   "ping",
					    "pong",  "error",  "events-vref", "hello-push"};
	struct buf all = BUF_INIT, one = BUF_INIT;
	int ret = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
		buf_reset(&one);
		put_sample(i, &one);
		ret |= write_seed(argv[1], names[i], &one);
		/* The same frames back to back: a stream as a link reads it. */
		put_sample(i, &all);
	}
	ret |= write_seed(argv[1], "stream", &all);
	buf_free(&one);
	buf_free(&all);
	return ret ? 1 : 0;
}
#endif
