/*
 * test_event.c - unit tests of the event codec (journal/event.c) and of CRC32C
 * (lib/crc32c.c).
 *
 * The decoder is the first code that sees bytes from a peer, so most of
 * these tests feed it hostile records: each rejection rule gets a record
 * that breaks that rule alone (with a correct CRC, so the rule and not the
 * checksum is what refuses it), and every truncation and every single-byte
 * corruption of a valid record is tried.  The wire layout is pinned byte
 * by byte against docs/internals.md ("Event format"), since peers of
 * different builds must agree on it, and so is the table of event types
 * against what the decoder enforces.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/crc32c.h"
#include "journal/event.h"

/* Offsets from docs/internals.md, restated so a drift in journal/event.c shows. */
#define OFF_RECORD_LEN 0
#define OFF_CRC	       4
#define OFF_VERSION    8
#define OFF_TYPE       9
#define OFF_FLAGS      10
#define OFF_PATH_LEN   176
#define OFF_PATH2_LEN  178
#define OFF_NAME_LEN   180
#define OFF_DATA_LEN   182

static const unsigned all_types[] = {
    EV_CREATE,	  EV_MKNOD,   EV_MKDIR,	   EV_SYMLINK,	   EV_LINK,	 EV_UNLINK,
    EV_RMDIR,	  EV_RENAME,  EV_WRITE,	   EV_TRUNCATE,	   EV_FALLOCATE, EV_CHMOD,
    EV_CHOWN,	  EV_UTIMENS, EV_SETXATTR, EV_REMOVEXATTR, EV_VOID,	 EV_OUTAGE,
    EV_RECOVERED, EV_ROLE,    EV_DIVERGED, EV_HEALED,
};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

static void put_le(uint8_t *p, uint64_t v, int width)
{
	for (int i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int width)
{
	uint64_t v = 0;

	for (int i = width - 1; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* Recomputes the CRC of a record patched by a test, so only the patch is wrong. */
static void reseal(uint8_t *rec)
{
	uint32_t len = (uint32_t)get_le(rec + OFF_RECORD_LEN, 4);

	put_le(rec + OFF_CRC, crc32c(0, rec + 8, len - 8), 4);
}

/* An event of the given type with every fixed field distinct and non-zero. */
static void fill_event(struct event *ev, unsigned type)
{
	static const uint8_t binary[] = {0x00, 0x01, 0xff, 0x00, 'x', 0x80};

	memset(ev, 0, sizeof(*ev));
	ev->type = (uint8_t)type;
	ev->origin = 0x0102030405060708ull;
	ev->seq = 0x1112131415161718ull;
	ev->hlc = 0x2122232425262728ull;
	ev->term = 0x3132333435363738ull;
	ev->fid = (struct fid){0x4142434445464748ull, 0x494a4b4c4d4e4f40ull};
	ev->fid2 = (struct fid){0x5152535455565758ull, 0x595a5b5c5d5e5f50ull};
	ev->base = (struct evid){0x6162636465666768ull, 0x696a6b6c6d6e6f60ull};
	ev->offset = 0x7172737475767778ull;
	ev->length = 0x8182838485868788ull;
	ev->rdev = 0x9192939495969798ull;
	ev->mode = 0xa1a2a3a4u;
	ev->uid = 0xb1b2b3b4u;
	ev->gid = 0xc1c2c3c4u;
	ev->op_flags = 0xd1d2d3d4u;
	ev->atime_sec = -1234567890123ll;
	ev->atime_nsec = 999999999u;
	ev->mtime_sec = 0x7edcba9876543210ll;
	ev->mtime_nsec = 0x3ffffffeu; /* UTIME_OMIT-sized values must survive */
	ev->vref = (struct vref){0xe1e2e3e4u, 0xe5e6e7e8e9eaebecull, 0xedeeef00u, 0xf1f2f3f4u};
	cr_assert_eq(event_set_path(ev, "dir/sub/file.txt"), 0);
	cr_assert_eq(event_set_path2(ev, "other/new name"), 0);
	cr_assert_eq(event_set_name(ev, "user.comment"), 0);
	if (type == EV_SYMLINK)
		cr_assert_eq(event_set_data(ev, "../target/of link", 17), 0);
	else
		cr_assert_eq(event_set_data(ev, binary, sizeof(binary)), 0);
}

static void assert_str_same(const char *a, const char *b)
{
	if (!a || !b)
		cr_assert_eq(a, b, "one string is NULL and the other is not");
	else
		cr_assert_str_eq(a, b);
}

static void assert_events_equal(const struct event *a, const struct event *b)
{
	cr_assert_eq(a->type, b->type);
	cr_assert_eq(a->flags, b->flags);
	cr_assert_eq(a->origin, b->origin);
	cr_assert_eq(a->seq, b->seq);
	cr_assert_eq(a->hlc, b->hlc);
	cr_assert_eq(a->term, b->term);
	cr_assert_eq(a->fid.origin, b->fid.origin);
	cr_assert_eq(a->fid.counter, b->fid.counter);
	cr_assert_eq(a->fid2.origin, b->fid2.origin);
	cr_assert_eq(a->fid2.counter, b->fid2.counter);
	cr_assert_eq(a->base.origin, b->base.origin);
	cr_assert_eq(a->base.seq, b->base.seq);
	cr_assert_eq(a->offset, b->offset);
	cr_assert_eq(a->length, b->length);
	cr_assert_eq(a->rdev, b->rdev);
	cr_assert_eq(a->mode, b->mode);
	cr_assert_eq(a->uid, b->uid);
	cr_assert_eq(a->gid, b->gid);
	cr_assert_eq(a->op_flags, b->op_flags);
	cr_assert_eq(a->atime_sec, b->atime_sec);
	cr_assert_eq(a->atime_nsec, b->atime_nsec);
	cr_assert_eq(a->mtime_sec, b->mtime_sec);
	cr_assert_eq(a->mtime_nsec, b->mtime_nsec);
	cr_assert_eq(a->vref.segment, b->vref.segment);
	cr_assert_eq(a->vref.offset, b->vref.offset);
	cr_assert_eq(a->vref.len, b->vref.len);
	cr_assert_eq(a->vref.crc, b->vref.crc);
	assert_str_same(a->path, b->path);
	assert_str_same(a->path2, b->path2);
	assert_str_same(a->name, b->name);
	cr_assert_eq(a->data_len, b->data_len);
	if (a->data_len)
		cr_assert_eq(memcmp(a->data, b->data, a->data_len), 0);
	else
		cr_assert_null(b->data);
}

/* Encodes ev into a malloc'd buffer of exactly event_encoded_len() bytes. */
static uint8_t *encode_alloc(const struct event *ev, size_t *len)
{
	size_t cap = event_encoded_len(ev);
	uint8_t *buf = malloc(cap);

	cr_assert_not_null(buf);
	cr_assert_eq(event_encode(ev, buf, cap, len), 0, "encode of %s failed",
		     event_type_name(ev->type));
	cr_assert_eq(*len, cap);
	return buf;
}

/*
 * A record built by hand: the fixed fields of a plain write event, then the
 * given type, flags and tail lengths, a tail of 'a' bytes, and a valid CRC.
 * Tests patch it further (then reseal) to break exactly one rule.
 */
static uint8_t *raw_record(unsigned type, unsigned flags, size_t path_len, size_t path2_len,
			   size_t name_len, size_t data_len, size_t *len)
{
	struct event ev;
	size_t hdr_len;
	uint8_t *hdr;
	uint8_t *rec;

	fill_event(&ev, EV_WRITE);
	event_set_path(&ev, NULL);
	event_set_path2(&ev, NULL);
	event_set_name(&ev, NULL);
	event_set_data(&ev, NULL, 0);
	hdr = encode_alloc(&ev, &hdr_len);
	cr_assert_eq(hdr_len, EVENT_HEADER_LEN);
	*len = EVENT_HEADER_LEN + path_len + path2_len + name_len + data_len;
	rec = malloc(*len);
	cr_assert_not_null(rec);
	memcpy(rec, hdr, EVENT_HEADER_LEN);
	memset(rec + EVENT_HEADER_LEN, 'a', *len - EVENT_HEADER_LEN);
	put_le(rec + OFF_RECORD_LEN, *len, 4);
	rec[OFF_TYPE] = (uint8_t)type;
	put_le(rec + OFF_FLAGS, flags, 2);
	put_le(rec + OFF_PATH_LEN, path_len, 2);
	put_le(rec + OFF_PATH2_LEN, path2_len, 2);
	put_le(rec + OFF_NAME_LEN, name_len, 2);
	put_le(rec + OFF_DATA_LEN, data_len, 4);
	reseal(rec);
	free(hdr);
	event_free(&ev);
	return rec;
}

/* Decodes buf, expects err with reason want (any reason if NULL), and a zeroed event. */
static void expect_reject(const uint8_t *buf, size_t len, int err, const char *want)
{
	static const struct event zero;
	struct event ev;
	const char *why = NULL;
	size_t used = 12345;
	int ret;

	memset(&ev, 0xab, sizeof(ev));
	ret = event_decode(buf, len, &ev, &used, &why);
	cr_assert_eq(ret, err, "decode returned %d (%s), expected %d", ret, why ? why : "-", err);
	cr_assert_not_null(why);
	if (want)
		cr_assert_str_eq(why, want);
	cr_assert_eq(memcmp(&ev, &zero, sizeof(ev)), 0, "event not zeroed after a failure");
	cr_assert_eq(used, 12345, "used set on failure");
}

static void expect_raw_reject(unsigned type, unsigned flags, size_t path_len, size_t path2_len,
			      size_t name_len, size_t data_len, int err, const char *want)
{
	size_t len;
	uint8_t *rec = raw_record(type, flags, path_len, path2_len, name_len, data_len, &len);

	expect_reject(rec, len, err, want);
	free(rec);
}

static void expect_raw_accept(unsigned type, unsigned flags, size_t path_len, size_t path2_len,
			      size_t name_len, size_t data_len)
{
	struct event ev;
	const char *why = NULL;
	size_t len, used = 0;
	uint8_t *rec = raw_record(type, flags, path_len, path2_len, name_len, data_len, &len);

	cr_assert_eq(event_decode(rec, len, &ev, &used, &why), 0, "rejected: %s", why);
	cr_assert_eq(used, len);
	event_free(&ev);
	free(rec);
}

/* CRC32C one bit at a time, straight from the definition: the reference. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	for (; len > 0; len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

Test(crc32c, known_vectors)
{
	uint8_t buf[32];

	cr_assert_eq(crc32c(0, "123456789", 9), 0xE3069283u);
	cr_assert_eq(crc32c(0, "", 0), 0);
	cr_assert_eq(crc32c(0xdeadbeefu, "", 0), 0xdeadbeefu);
	/* The iSCSI test patterns of RFC 3720, B.4. */
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(crc32c(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	cr_assert_eq(crc32c(0, buf, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	cr_assert_eq(crc32c(0, buf, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	cr_assert_eq(crc32c(0, buf, 32), 0x113FDB5Cu);
}

Test(crc32c, matches_bitwise_reference_at_every_length_and_alignment)
{
	uint8_t buf[1100];

	srand(42);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rand();
	for (size_t align = 0; align < 8; align++)
		for (size_t len = 0; len + align <= sizeof(buf); len += (len < 64 ? 1 : 37))
			cr_assert_eq(crc32c(0, buf + align, len),
				     crc32c_bitwise(0, buf + align, len), "align %zu len %zu",
				     align, len);
}

Test(crc32c, chunked_equals_whole)
{
	enum { SIZE = 65536 + 13 };
	uint8_t *buf = malloc(SIZE);

	cr_assert_not_null(buf);
	srand(7);
	for (size_t i = 0; i < SIZE; i++)
		buf[i] = (uint8_t)rand();
	for (int round = 0; round < 200; round++) {
		size_t len = (size_t)rand() % SIZE;
		uint32_t whole = crc32c(0, buf, len);
		uint32_t crc = 0;
		size_t at = 0;

		while (at < len) {
			size_t n = (size_t)rand() % (round % 2 ? 17 : 4099);

			if (n > len - at)
				n = len - at;
			crc = crc32c(crc, buf + at, n);
			at += n;
		}
		cr_assert_eq(crc, whole, "round %d len %zu", round, len);
	}
	cr_assert_eq(crc32c(0, buf, SIZE), crc32c_bitwise(0, buf, SIZE));
	free(buf);
}

Test(event, round_trip_of_every_type_with_all_fields)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		struct event in, out;
		const char *why = NULL;
		size_t len, used = 0, len2;
		uint8_t *buf, *buf2;

		fill_event(&in, all_types[i]);
		buf = encode_alloc(&in, &len);
		cr_assert_eq(event_decode(buf, len, &out, &used, &why), 0, "%s: %s",
			     event_type_name(all_types[i]), why);
		cr_assert_eq(used, len);
		assert_events_equal(&in, &out);
		buf2 = encode_alloc(&out, &len2);
		cr_assert_eq(len2, len);
		cr_assert_eq(memcmp(buf, buf2, len), 0, "re-encoding changed the bytes");
		free(buf2);
		free(buf);
		event_free(&out);
		event_free(&in);
	}
}

/* A divergence and its heal as receive.c journals them: every field they use survives. */
Test(event, diverged_and_healed_round_trip)
{
	static const char why[] = "base version mismatch: Stale file handle";
	static const char list[] = "dir play/n779388\nfetch play/n779388/n890355\n";
	struct event d = {.type = EV_DIVERGED,
			  .origin = 0xb2,
			  .seq = 12,
			  .hlc = 77ull << 16,
			  .base = {0xa1, 963},
			  .op_flags = EVENT_DIVERGED_STOPPED};
	struct event h = {.type = EV_HEALED,
			  .origin = 0xb2,
			  .seq = 13,
			  .base = {0xa1, 963},
			  .offset = 970,
			  .length = 2};
	struct event out;
	const char *err = NULL;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(event_set_path(&d, "play/n779388"), 0);
	cr_assert_eq(event_set_path2(&d, "play/n779388/n890355"), 0);
	cr_assert_eq(event_set_name(&d, "a"), 0);
	cr_assert_eq(event_set_data(&d, why, sizeof(why) - 1), 0);
	buf = encode_alloc(&d, &len);
	cr_assert_eq(event_decode(buf, len, &out, NULL, &err), 0, "%s", err);
	cr_assert_eq(out.type, EV_DIVERGED);
	cr_assert_eq(out.base.origin, 0xa1);
	cr_assert_eq(out.base.seq, 963);
	cr_assert_eq(out.op_flags, EVENT_DIVERGED_STOPPED);
	cr_assert_str_eq(out.path, "play/n779388");
	cr_assert_str_eq(out.path2, "play/n779388/n890355");
	cr_assert_str_eq(out.name, "a");
	cr_assert_eq(out.data_len, sizeof(why) - 1);
	cr_assert_eq(memcmp(out.data, why, out.data_len), 0);
	cr_assert_not(event_type_mutates(out.type));
	event_free(&out);
	free(buf);

	/* The root as the subtree, no event path: a path-less event's heal. */
	cr_assert_eq(event_set_path(&h, "."), 0);
	cr_assert_eq(event_set_name(&h, "a"), 0);
	cr_assert_eq(event_set_data(&h, list, sizeof(list) - 1), 0);
	buf = encode_alloc(&h, &len);
	cr_assert_eq(event_decode(buf, len, &out, NULL, &err), 0, "%s", err);
	cr_assert_eq(out.type, EV_HEALED);
	cr_assert_eq(out.base.seq, 963);
	cr_assert_eq(out.offset, 970);
	cr_assert_eq(out.length, 2);
	cr_assert_str_eq(out.path, ".");
	cr_assert_null(out.path2);
	cr_assert_eq(out.data_len, sizeof(list) - 1);
	cr_assert_eq(memcmp(out.data, list, out.data_len), 0);
	event_free(&out);
	free(buf);
	event_free(&h);
	event_free(&d);
}

Test(event, round_trip_of_vref_write)
{
	struct event in, out;
	const char *why = NULL;
	size_t len;
	uint8_t *buf;

	fill_event(&in, EV_WRITE);
	event_set_data(&in, NULL, 0);
	in.flags = EVENT_F_VREF;
	buf = encode_alloc(&in, &len);
	cr_assert_eq(event_decode(buf, len, &out, NULL, &why), 0, "%s", why);
	assert_events_equal(&in, &out);
	cr_assert_null(out.data);
	free(buf);
	event_free(&out);
	event_free(&in);
}

Test(event, inline_head_plus_payload_and_seal_equals_the_inline_encoding)
{
	static const uint8_t payload[] = "payload read from the value log";
	struct event vref, inl;
	size_t head, len, want_len;
	uint8_t *buf, *want;

	fill_event(&vref, EV_WRITE);
	event_set_data(&vref, NULL, 0);
	vref.flags = EVENT_F_VREF;
	vref.vref = (struct vref){.segment = 3, .offset = 99, .len = sizeof(payload), .crc = 7};
	fill_event(&inl, EV_WRITE);
	inl.vref = (struct vref){0};
	event_set_data(&inl, payload, sizeof(payload));
	want = encode_alloc(&inl, &want_len);

	buf = malloc(want_len);
	cr_assert_not_null(buf);
	cr_assert_eq(event_encode_inline_head(&vref, buf, want_len, &head, &len), 0);
	cr_assert_eq(len, want_len);
	cr_assert_eq(head, want_len - sizeof(payload));
	memcpy(buf + head, payload, sizeof(payload));
	event_seal(buf, len);
	cr_assert_arr_eq(buf, want, want_len);

	cr_assert_eq(event_encode_inline_head(&vref, buf, head - 1, &head, &len), -ENOSPC);
	cr_assert_eq(event_encode_inline_head(&inl, buf, want_len, &head, &len), -EINVAL,
		     "an inline event has no payload to leave out");
	free(buf);
	free(want);
	event_free(&inl);
	event_free(&vref);
}

Test(event, empty_fields_decode_to_null)
{
	struct event in, out;
	const char *why = NULL;
	size_t len;
	uint8_t *buf;

	memset(&in, 0, sizeof(in));
	in.type = EV_TRUNCATE; /* a file unlinked while open: no path */
	in.length = 4096;
	buf = encode_alloc(&in, &len);
	cr_assert_eq(len, EVENT_HEADER_LEN);
	cr_assert_eq(event_decode(buf, len, &out, NULL, &why), 0, "%s", why);
	cr_assert_null(out.path);
	cr_assert_null(out.path2);
	cr_assert_null(out.name);
	cr_assert_null(out.data);
	cr_assert_eq(out.data_len, 0);
	cr_assert_eq(out.length, 4096);
	free(buf);
	event_free(&out);
}

Test(event, layout_matches_header_comment)
{
	static const struct {
		size_t off;
		int width;
		uint64_t want;
	} fields[] = {
	    {8, 1, EVENT_VERSION},
	    {9, 1, EV_RENAME},
	    {10, 2, 0},
	    {12, 8, 0x0102030405060708ull},
	    {20, 8, 0x1112131415161718ull},
	    {28, 8, 0x2122232425262728ull},
	    {36, 8, 0x3132333435363738ull},
	    {44, 8, 0x4142434445464748ull},
	    {52, 8, 0x494a4b4c4d4e4f40ull},
	    {60, 8, 0x5152535455565758ull},
	    {68, 8, 0x595a5b5c5d5e5f50ull},
	    {76, 8, 0x6162636465666768ull},
	    {84, 8, 0x696a6b6c6d6e6f60ull},
	    {92, 8, 0x7172737475767778ull},
	    {100, 8, 0x8182838485868788ull},
	    {108, 8, 0x9192939495969798ull},
	    {116, 4, 0xa1a2a3a4u},
	    {120, 4, 0xb1b2b3b4u},
	    {124, 4, 0xc1c2c3c4u},
	    {128, 4, 0xd1d2d3d4u},
	    {132, 8, (uint64_t)-1234567890123ll},
	    {140, 4, 999999999u},
	    {144, 8, 0x7edcba9876543210ull},
	    {152, 4, 0x3ffffffeu},
	    {156, 4, 0xe1e2e3e4u},
	    {160, 8, 0xe5e6e7e8e9eaebecull},
	    {168, 4, 0xedeeef00u},
	    {172, 4, 0xf1f2f3f4u},
	    {176, 2, 16},
	    {178, 2, 14},
	    {180, 2, 12},
	    {182, 4, 6},
	};
	struct event ev;
	size_t len;
	uint8_t *buf;

	fill_event(&ev, EV_RENAME);
	buf = encode_alloc(&ev, &len);
	cr_assert_eq(len, EVENT_HEADER_LEN + 16 + 14 + 12 + 6);
	cr_assert_eq(get_le(buf + OFF_RECORD_LEN, 4), len);
	cr_assert_eq(get_le(buf + OFF_CRC, 4), crc32c(0, buf + 8, len - 8));
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		cr_assert_eq(get_le(buf + fields[i].off, fields[i].width), fields[i].want,
			     "field at offset %zu", fields[i].off);
	cr_assert_eq(
	    memcmp(buf + EVENT_HEADER_LEN, "dir/sub/file.txtother/new nameuser.comment", 42), 0);
	cr_assert_eq(memcmp(buf + EVENT_HEADER_LEN + 42, "\x00\x01\xff\x00x\x80", 6), 0);
	free(buf);
	event_free(&ev);
}

Test(event, decode_consumes_one_record_of_a_stream)
{
	struct event a, b, out;
	const char *why = NULL;
	size_t la, lb, used = 0;
	uint8_t *ba, *bb, *stream;

	fill_event(&a, EV_MKDIR);
	fill_event(&b, EV_UNLINK);
	ba = encode_alloc(&a, &la);
	bb = encode_alloc(&b, &lb);
	stream = malloc(la + lb);
	cr_assert_not_null(stream);
	memcpy(stream, ba, la);
	memcpy(stream + la, bb, lb);
	cr_assert_eq(event_decode(stream, la + lb, &out, &used, &why), 0, "%s", why);
	cr_assert_eq(used, la);
	assert_events_equal(&a, &out);
	event_free(&out);
	cr_assert_eq(event_decode(stream + used, la + lb - used, &out, &used, &why), 0, "%s", why);
	cr_assert_eq(used, lb);
	assert_events_equal(&b, &out);
	event_free(&out);
	free(stream);
	free(bb);
	free(ba);
	event_free(&b);
	event_free(&a);
}

Test(event, type_names_and_mutation)
{
	static const char *const names[] = {
	    "create",	 "mknod",   "mkdir",	"symlink",     "link",	    "unlink",
	    "rmdir",	 "rename",  "write",	"truncate",    "fallocate", "chmod",
	    "chown",	 "utimens", "setxattr", "removexattr", "void",	    "outage",
	    "recovered", "role",    "diverged", "healed",
	};

	for (size_t i = 0; i < N_TYPES; i++) {
		cr_assert_str_eq(event_type_name(all_types[i]), names[i]);
		cr_assert_eq(!!event_type_mutates(all_types[i]),
			     all_types[i] >= EV_CREATE && all_types[i] <= EV_REMOVEXATTR,
			     "mutates(%s)", names[i]);
	}
	cr_assert_str_eq(event_type_name(0), "unknown");
	cr_assert_str_eq(event_type_name(18), "unknown");
	cr_assert_str_eq(event_type_name(37), "unknown");
	cr_assert_str_eq(event_type_name(1000), "unknown");
	cr_assert_not(event_type_mutates(0));
	cr_assert_not(event_type_mutates(EV_VOID));
	cr_assert_not(event_type_mutates(EV_ROLE));
	cr_assert_not(event_type_mutates(EV_DIVERGED));
	cr_assert_not(event_type_mutates(EV_HEALED));
	cr_assert_not(event_type_mutates(1000));
}

Test(event, rejects_every_truncation)
{
	struct event ev;
	size_t len;
	uint8_t *buf;

	fill_event(&ev, EV_SETXATTR);
	buf = encode_alloc(&ev, &len);
	for (size_t n = 0; n < len; n++) {
		uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */

		cr_assert_not_null(copy);
		memcpy(copy, buf, n);
		expect_reject(copy, n, -EBADMSG,
			      n < EVENT_HEADER_LEN ? "truncated header" : "truncated record");
		free(copy);
	}
	free(buf);
	event_free(&ev);
}

Test(event, rejects_every_single_byte_corruption)
{
	struct event ev;
	size_t len;
	uint8_t *buf;

	fill_event(&ev, EV_RENAME);
	buf = encode_alloc(&ev, &len);
	for (size_t at = 0; at < len; at++) {
		for (unsigned x = 1; x < 256; x++) {
			buf[at] ^= (uint8_t)x;
			expect_reject(buf, len, -EBADMSG, NULL);
			buf[at] ^= (uint8_t)x;
		}
	}
	free(buf);
	event_free(&ev);
}

Test(event, rejects_bad_record_length)
{
	size_t len;
	uint8_t *rec = raw_record(EV_WRITE, 0, 0, 0, 0, 0, &len);

	put_le(rec + OFF_RECORD_LEN, EVENT_HEADER_LEN - 1, 4);
	expect_reject(rec, len, -EBADMSG, "record length smaller than header");
	put_le(rec + OFF_RECORD_LEN, 0, 4);
	expect_reject(rec, len, -EBADMSG, "record length smaller than header");
	put_le(rec + OFF_RECORD_LEN, EVENT_HEADER_LEN + 1, 4);
	expect_reject(rec, len, -EBADMSG, "truncated record");
	put_le(rec + OFF_RECORD_LEN, (uint64_t)EVENT_MAX_RECORD + 1, 4);
	expect_reject(rec, len, -EBADMSG, "record too long");
	put_le(rec + OFF_RECORD_LEN, 0xffffffffu, 4);
	expect_reject(rec, len, -EBADMSG, "record too long");
	free(rec);
}

Test(event, rejects_bad_crc)
{
	size_t len;
	uint8_t *rec = raw_record(EV_WRITE, 0, 3, 0, 0, 5, &len);

	rec[OFF_CRC] ^= 1;
	expect_reject(rec, len, -EBADMSG, "bad crc");
	rec[OFF_CRC] ^= 1;
	rec[len - 1] ^= 0x40;
	expect_reject(rec, len, -EBADMSG, "bad crc");
	free(rec);
}

Test(event, rejects_unknown_version)
{
	static const uint8_t versions[] = {0, 2, 3, 0x80, 0xff};
	size_t len;
	uint8_t *rec = raw_record(EV_WRITE, 0, 0, 0, 0, 0, &len);

	for (size_t i = 0; i < sizeof(versions); i++) {
		rec[OFF_VERSION] = versions[i];
		reseal(rec);
		expect_reject(rec, len, -EPROTO, "unknown version");
	}
	free(rec);
}

Test(event, rejects_unknown_type)
{
	static const unsigned types[] = {0, 18, 19, 31, 37, 64, 255};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		expect_raw_reject(types[i], 0, 1, 1, 1, 1, -EPROTO, "unknown type");
}

Test(event, rejects_unknown_flags)
{
	for (unsigned bit = 1; bit < 16; bit++)
		expect_raw_reject(EV_WRITE, 1u << bit, 0, 0, 0, 0, -EBADMSG, "unknown flags");
}

Test(event, rejects_lengths_that_do_not_fill_the_record)
{
	static const size_t fields[] = {OFF_PATH_LEN, OFF_PATH2_LEN, OFF_NAME_LEN, OFF_DATA_LEN};
	size_t len;
	uint8_t *rec = raw_record(EV_RENAME, 0, 4, 4, 4, 4, &len);

	for (size_t i = 0; i < 4; i++) {
		int width = fields[i] == OFF_DATA_LEN ? 4 : 2;

		put_le(rec + fields[i], 5, width);
		reseal(rec);
		expect_reject(rec, len, -EBADMSG, "lengths overrun record");
		put_le(rec + fields[i], 3, width);
		reseal(rec);
		expect_reject(rec, len, -EBADMSG, "lengths leave bytes unused");
		put_le(rec + fields[i], 4, width);
	}
	/* Sums that would wrap a 32-bit counter must not look like a fit. */
	put_le(rec + OFF_DATA_LEN, 0xffffffffu, 4);
	put_le(rec + OFF_PATH_LEN, 0xffff, 2);
	reseal(rec);
	expect_reject(rec, len, -EBADMSG, "lengths overrun record");
	/* 9 + 4 + 4 + (2^32 - 1) is 16 modulo 2^32: exactly the tail length. */
	put_le(rec + OFF_DATA_LEN, 0xffffffffu, 4);
	put_le(rec + OFF_PATH_LEN, 9, 2);
	reseal(rec);
	expect_reject(rec, len, -EBADMSG, "lengths overrun record");
	free(rec);
}

Test(event, rejects_over_long_strings)
{
	/* Paths deeper than PATH_MAX are valid; u16 lengths cannot pass the limit. */
	expect_raw_accept(EV_RENAME, 0, 4096, 4096, 255, 0);
	expect_raw_accept(EV_RENAME, 0, EVENT_MAX_PATH, EVENT_MAX_PATH, 255, 0);
	expect_raw_reject(EV_SETXATTR, 0, 1, 0, 256, 0, -EBADMSG, "name too long");
	expect_raw_accept(EV_SYMLINK, 0, 1, 0, 0, 4095);
	expect_raw_reject(EV_SYMLINK, 0, 1, 0, 0, 4096, -EBADMSG, "symlink target too long");
}

Test(event, rejects_over_long_data)
{
	expect_raw_accept(EV_WRITE, 0, 1, 0, 0, EVENT_MAX_DATA);
	expect_raw_reject(EV_WRITE, 0, 1, 0, 0, EVENT_MAX_DATA + 1, -EBADMSG, "data too long");
}

Test(event, rejects_nul_inside_strings)
{
	static const struct {
		size_t at;
		const char *why;
	} cases[] = {
	    {EVENT_HEADER_LEN + 0, "NUL in path"},  {EVENT_HEADER_LEN + 3, "NUL in path"},
	    {EVENT_HEADER_LEN + 4, "NUL in path2"}, {EVENT_HEADER_LEN + 7, "NUL in path2"},
	    {EVENT_HEADER_LEN + 8, "NUL in name"},  {EVENT_HEADER_LEN + 11, "NUL in name"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		uint8_t *rec = raw_record(EV_RENAME, 0, 4, 4, 4, 4, &len);

		rec[cases[i].at] = 0;
		reseal(rec);
		expect_reject(rec, len, -EBADMSG, cases[i].why);
		free(rec);
	}
}

Test(event, accepts_nul_in_data_but_not_in_a_symlink_target)
{
	size_t len;
	uint8_t *rec = raw_record(EV_SETXATTR, 0, 4, 0, 4, 4, &len);
	struct event ev;
	const char *why = NULL;

	rec[len - 2] = 0;
	reseal(rec);
	cr_assert_eq(event_decode(rec, len, &ev, NULL, &why), 0, "%s", why);
	cr_assert_eq(ev.data[2], 0);
	event_free(&ev);
	free(rec);

	rec = raw_record(EV_SYMLINK, 0, 4, 0, 0, 4, &len);
	rec[len - 2] = 0;
	reseal(rec);
	expect_reject(rec, len, -EBADMSG, "NUL in symlink target");
	free(rec);
}

Test(event, rejects_misused_vref)
{
	expect_raw_accept(EV_WRITE, EVENT_F_VREF, 1, 0, 0, 0);
	expect_raw_accept(EV_WRITE, EVENT_F_VREF, 0, 0, 0, 0);
	expect_raw_reject(EV_WRITE, EVENT_F_VREF, 1, 0, 0, 1, -EBADMSG, "vref with inline data");
	for (size_t i = 0; i < N_TYPES; i++) {
		if (all_types[i] == EV_WRITE)
			continue;
		expect_raw_reject(all_types[i], EVENT_F_VREF, 1, 1, 1, 0, -EBADMSG,
				  "vref on a type other than write");
	}
}

Test(event, rejects_missing_required_fields)
{
	static const unsigned need_path[] = {EV_CREATE, EV_MKNOD,  EV_MKDIR, EV_SYMLINK,
					     EV_LINK,	EV_UNLINK, EV_RMDIR, EV_RENAME};

	for (size_t i = 0; i < sizeof(need_path) / sizeof(need_path[0]); i++) {
		expect_raw_accept(need_path[i], 0, 1, 1, 0, 1);
		expect_raw_reject(need_path[i], 0, 0, 1, 1, 1, -EBADMSG, "missing path");
	}
	expect_raw_reject(EV_LINK, 0, 1, 0, 0, 0, -EBADMSG, "missing path2");
	expect_raw_reject(EV_RENAME, 0, 1, 0, 0, 0, -EBADMSG, "missing path2");
	expect_raw_reject(EV_SETXATTR, 0, 1, 0, 0, 1, -EBADMSG, "missing name");
	expect_raw_reject(EV_REMOVEXATTR, 0, 1, 0, 0, 0, -EBADMSG, "missing name");
	expect_raw_reject(EV_SYMLINK, 0, 1, 0, 0, 0, -EBADMSG, "missing data");
}

Test(event, accepts_empty_path_for_open_unlinked_files)
{
	static const unsigned types[] = {EV_WRITE,     EV_TRUNCATE, EV_FALLOCATE, EV_CHMOD,
					 EV_CHOWN,     EV_UTIMENS,  EV_VOID,	  EV_OUTAGE,
					 EV_RECOVERED, EV_ROLE,	    EV_DIVERGED,  EV_HEALED};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		expect_raw_accept(types[i], 0, 0, 0, 0, 0);
	expect_raw_accept(EV_SETXATTR, 0, 0, 0, 1, 1);
	expect_raw_accept(EV_REMOVEXATTR, 0, 0, 0, 1, 0);
}

Test(event, decode_tolerates_null_used_and_why)
{
	size_t len;
	uint8_t *rec = raw_record(EV_CHMOD, 0, 2, 0, 0, 0, &len);
	struct event ev;

	cr_assert_eq(event_decode(rec, len, &ev, NULL, NULL), 0);
	event_free(&ev);
	cr_assert_eq(event_decode(rec, len - 1, &ev, NULL, NULL), -EBADMSG);
	free(rec);
}

Test(event, encode_rejects_invalid_events)
{
	struct event ev;
	static uint8_t buf[EVENT_HEADER_LEN + 2 * EVENT_MAX_PATH + 16384];
	static char long_path[EVENT_MAX_PATH + 2];
	char long_name[257];
	size_t len = 0;

	memset(long_path, 'p', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';

	fill_event(&ev, EV_RENAME);
	ev.type = 0;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	ev.type = 18;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	ev.type = EV_RENAME;
	ev.flags = 0x8000;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	ev.flags = EVENT_F_VREF;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	ev.flags = 0;
	cr_assert_eq(event_set_path(&ev, long_path), 0);
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	long_path[EVENT_MAX_PATH] = '\0';
	cr_assert_eq(event_set_path(&ev, long_path), 0);
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), 0);
	cr_assert_eq(event_set_path2(&ev, long_path + 1), 0);
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), 0);
	cr_assert_eq(event_set_name(&ev, long_name), 0);
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	cr_assert_eq(event_set_name(&ev, NULL), 0);
	cr_assert_eq(event_set_path2(&ev, ""), 0);
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL, "rename without path2");
	cr_assert_eq(event_set_path(&ev, NULL), 0);
	ev.type = EV_UNLINK;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL, "unlink without path");
	event_free(&ev);

	fill_event(&ev, EV_WRITE);
	ev.flags = EVENT_F_VREF;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL, "vref with data");
	free(ev.data);
	ev.data = NULL; /* a length without bytes behind it */
	ev.flags = 0;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL);
	ev.data_len = 0;
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), 0);
	event_free(&ev);

	fill_event(&ev, EV_SYMLINK);
	cr_assert_eq(event_set_data(&ev, "a\0b", 3), 0);
	cr_assert_eq(event_encode(&ev, buf, sizeof(buf), &len), -EINVAL, "NUL in target");
	event_free(&ev);
}

Test(event, encode_rejects_over_long_data)
{
	struct event ev;
	uint8_t *big = calloc(1, EVENT_MAX_DATA + 1);
	uint8_t *buf = malloc(EVENT_MAX_RECORD + 1);
	size_t len;

	cr_assert_not_null(big);
	cr_assert_not_null(buf);
	fill_event(&ev, EV_WRITE);
	cr_assert_eq(event_set_data(&ev, big, EVENT_MAX_DATA + 1), 0);
	cr_assert_eq(event_encode(&ev, buf, EVENT_MAX_RECORD + 1, &len), -EINVAL);
	cr_assert_eq(event_set_data(&ev, big, EVENT_MAX_DATA), 0);
	cr_assert_eq(event_encode(&ev, buf, EVENT_MAX_RECORD + 1, &len), 0);
	cr_assert_leq(len, EVENT_MAX_RECORD);
	event_free(&ev);
	free(buf);
	free(big);
}

Test(event, encode_reports_short_buffer)
{
	struct event ev;
	size_t len = 0, need;
	uint8_t *buf;

	fill_event(&ev, EV_SETXATTR);
	need = event_encoded_len(&ev);
	buf = malloc(need);
	cr_assert_not_null(buf);
	cr_assert_eq(event_encode(&ev, buf, need - 1, &len), -ENOSPC);
	cr_assert_eq(event_encode(&ev, buf, 0, &len), -ENOSPC);
	cr_assert_eq(event_encode(&ev, buf, need, &len), 0);
	cr_assert_eq(len, need);
	free(buf);
	event_free(&ev);
}

Test(event, setters_copy_and_replace)
{
	struct event ev;
	char src[] = "a/b";

	memset(&ev, 0, sizeof(ev));
	cr_assert_eq(event_set_path(&ev, src), 0);
	src[0] = 'z';
	cr_assert_str_eq(ev.path, "a/b");
	cr_assert_eq(event_set_path(&ev, ev.path), 0, "setting a field from itself");
	cr_assert_str_eq(ev.path, "a/b");
	cr_assert_eq(event_set_path(&ev, ""), 0);
	cr_assert_null(ev.path);
	cr_assert_eq(event_set_data(&ev, "xyz", 3), 0);
	cr_assert_eq(ev.data_len, 3);
	cr_assert_eq(memcmp(ev.data, "xyz", 3), 0);
	cr_assert_eq(event_set_data(&ev, NULL, 0), 0);
	cr_assert_null(ev.data);
	cr_assert_eq(ev.data_len, 0);
	cr_assert_eq(event_set_data(&ev, NULL, 4), -EINVAL);
	cr_assert_eq(event_set_name(&ev, "user.x"), 0);
	event_free(&ev);
	cr_assert_null(ev.name);
	event_free(&ev); /* freeing a zeroed event is harmless */
}

/* ---- the table of event types ------------------------------------------ */

/* The record of fill_event(type) for every type, pinned: a CRC32C over all of it. */
Test(event, encoding_of_every_type_is_pinned)
{
	static const struct {
		unsigned type;
		size_t len;
		uint32_t crc;
	} pinned[] = {
	    {EV_CREATE, 234, 0x8d51b403u},    {EV_MKNOD, 234, 0x1840b6c2u},
	    {EV_MKDIR, 234, 0x97eb9ad2u},     {EV_SYMLINK, 245, 0x3ee87a5fu},
	    {EV_LINK, 234, 0xb825e9a1u},      {EV_UNLINK, 234, 0x2d34eb60u},
	    {EV_RMDIR, 234, 0xa29fc770u},     {EV_RENAME, 234, 0x68122357u},
	    {EV_WRITE, 234, 0xe7b90f47u},     {EV_TRUNCATE, 234, 0x72a80d86u},
	    {EV_FALLOCATE, 234, 0xfd032196u}, {EV_CHMOD, 234, 0x5d667ef5u},
	    {EV_CHOWN, 234, 0xd2cd52e5u},     {EV_UTIMENS, 234, 0x47dc5024u},
	    {EV_SETXATTR, 234, 0xc8777c34u},  {EV_REMOVEXATTR, 234, 0xd72bee9bu},
	    {EV_VOID, 234, 0x5880c28bu},      {EV_OUTAGE, 234, 0xacb403f2u},
	    {EV_RECOVERED, 234, 0x231f2fe2u}, {EV_ROLE, 234, 0xb60e2d23u},
	    {EV_DIVERGED, 234, 0x39a50133u},  {EV_HEALED, 234, 0x99c05e50u},
	};

	cr_assert_eq(sizeof(pinned) / sizeof(pinned[0]), N_TYPES);
	for (size_t i = 0; i < N_TYPES; i++) {
		struct event ev;
		size_t len;
		uint8_t *buf;

		fill_event(&ev, pinned[i].type);
		buf = encode_alloc(&ev, &len);
		cr_assert_eq(len, pinned[i].len, "%s", event_type_name(pinned[i].type));
		cr_assert_eq(crc32c(0, buf, len), pinned[i].crc, "%s encodes to other bytes",
			     event_type_name(pinned[i].type));
		free(buf);
		event_free(&ev);
	}
}

Test(event, table_knows_exactly_the_listed_types)
{
	size_t known = 0;

	for (unsigned t = 0; t < 1024; t++) {
		const struct event_type_info *ti = event_type_info(t);
		int listed = 0;

		for (size_t i = 0; i < N_TYPES; i++)
			listed |= all_types[i] == t;
		cr_assert_eq(ti != NULL, listed, "type %u", t);
		if (!ti) {
			cr_assert_str_eq(event_type_name(t), "unknown");
			cr_assert_not(event_type_is(t, 0), "an unknown type has no properties");
			continue;
		}
		known++;
		cr_assert_str_eq(event_type_name(t), ti->name);
		cr_assert(event_type_is(t, 0));
		cr_assert_eq(!!event_type_mutates(t), !!(ti->props & EVENT_T_MUTATES));
	}
	cr_assert_eq(known, N_TYPES);
}

/* What every row must hold for the codec and its readers to make sense of it. */
Test(event, table_rows_are_consistent)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		const struct event_type_info *ti = event_type_info(all_types[i]);
		uint32_t data = ti->fields & EVENT_FIELDS_DATA;

		cr_assert_eq(ti->need & ~ti->fields, 0, "%s needs a field it has not", ti->name);
		cr_assert_eq(data & (data - 1), 0, "%s: data holds one thing", ti->name);
		cr_assert_eq(ti->need & ~(EVENT_FIELD_PATH | EVENT_FIELD_PATH2 | EVENT_FIELD_NAME |
					  EVENT_FIELDS_DATA),
			     0, "%s: only strings and data can be missing", ti->name);
		if (ti->props & (EVENT_T_CREATES | EVENT_T_CONTENT))
			cr_assert(ti->props & EVENT_T_MUTATES, "%s", ti->name);
		if (ti->props & EVENT_T_CREATES)
			cr_assert(ti->need & EVENT_FIELD_PATH, "%s makes an object at no path",
				  ti->name);
		if (ti->props & EVENT_T_VREF)
			cr_assert(ti->fields & EVENT_FIELD_PAYLOAD, "%s", ti->name);
		for (size_t k = 0; k < i; k++)
			cr_assert_str_neq(event_type_name(all_types[k]), ti->name);
	}
	cr_assert(event_type_is(EV_WRITE, EVENT_T_MUTATES | EVENT_T_CONTENT | EVENT_T_VREF));
	cr_assert_not(event_type_is(EV_TRUNCATE, EVENT_T_MUTATES | EVENT_T_VREF));
	cr_assert(event_type_is(EV_SYMLINK, EVENT_T_CREATES));
	cr_assert_not(event_type_is(EV_LINK, EVENT_T_CREATES));
}

/* Each field a row needs is refused missing, alone, and the record is accepted with it. */
Test(event, decoder_requires_what_the_table_needs)
{
	static const struct {
		uint32_t field;
		const char *why;
	} needs[] = {
	    {EVENT_FIELD_PATH, "missing path"},
	    {EVENT_FIELD_PATH2, "missing path2"},
	    {EVENT_FIELD_NAME, "missing name"},
	    {EVENT_FIELDS_DATA, "missing data"},
	};

	for (size_t i = 0; i < N_TYPES; i++) {
		const struct event_type_info *ti = event_type_info(all_types[i]);

		expect_raw_accept(all_types[i], 0, 1, 1, 1, 1);
		for (size_t k = 0; k < sizeof(needs) / sizeof(needs[0]); k++) {
			uint32_t f = needs[k].field;

			if (!(ti->need & f)) {
				expect_raw_accept(all_types[i], 0, f != EVENT_FIELD_PATH,
						  f != EVENT_FIELD_PATH2, f != EVENT_FIELD_NAME,
						  f != EVENT_FIELDS_DATA);
				continue;
			}
			expect_raw_reject(all_types[i], 0, f != EVENT_FIELD_PATH,
					  f != EVENT_FIELD_PATH2, f != EVENT_FIELD_NAME,
					  f != EVENT_FIELDS_DATA, -EBADMSG, needs[k].why);
		}
	}
}

Test(event, vref_is_allowed_where_the_table_says)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		if (event_type_is(all_types[i], EVENT_T_VREF))
			expect_raw_accept(all_types[i], EVENT_F_VREF, 1, 1, 1, 0);
		else
			expect_raw_reject(all_types[i], EVENT_F_VREF, 1, 1, 1, 0, -EBADMSG,
					  "vref on a type other than write");
	}
}

Test(event, target_rules_apply_where_the_table_has_a_target)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		const struct event_type_info *ti = event_type_info(all_types[i]);
		size_t len;
		uint8_t *rec;

		if (!(ti->fields & EVENT_FIELD_TARGET)) {
			expect_raw_accept(all_types[i], 0, 1, 1, 1, EVENT_MAX_TARGET + 1);
			continue;
		}
		expect_raw_reject(all_types[i], 0, 1, 1, 1, EVENT_MAX_TARGET + 1, -EBADMSG,
				  "symlink target too long");
		rec = raw_record(all_types[i], 0, 1, 1, 1, 4, &len);
		rec[len - 1] = 0;
		reseal(rec);
		expect_reject(rec, len, -EBADMSG, "NUL in symlink target");
		free(rec);
	}
}

Test(event, record_len_bounds)
{
	cr_assert_not(event_record_len_ok(0));
	cr_assert_not(event_record_len_ok(EVENT_HEADER_LEN - 1));
	cr_assert(event_record_len_ok(EVENT_HEADER_LEN));
	cr_assert(event_record_len_ok(EVENT_MAX_RECORD));
	cr_assert_not(event_record_len_ok((size_t)EVENT_MAX_RECORD + 1));
	cr_assert_not(event_record_len_ok(SIZE_MAX));
}

/* ---- peeking at a record's header, and an EV_ROLE's fences --------------- */

static void assert_head_of(const struct event_head *h, const struct event *ev, size_t len)
{
	cr_assert_eq(h->len, len);
	cr_assert_eq(h->type, ev->type);
	cr_assert_eq(h->flags, ev->flags);
	cr_assert_eq(h->origin, ev->origin);
	cr_assert_eq(h->seq, ev->seq);
	cr_assert_eq(h->hlc, ev->hlc);
	cr_assert_eq(h->term, ev->term);
}

/* Peeks at buf, expects err with reason want and *h left as it was. */
static void expect_peek_reject(const uint8_t *buf, size_t len, int err, const char *want)
{
	struct event_head h, before;
	const char *why = NULL;
	int ret;

	memset(&h, 0x5a, sizeof(h));
	before = h;
	ret = event_peek_header(buf, len, &h, &why);
	cr_assert_eq(ret, err, "peek returned %d (%s), expected %d", ret, why ? why : "-", err);
	cr_assert_str_eq(why, want);
	cr_assert_eq(memcmp(&h, &before, sizeof(h)), 0, "header written on a failure");
}

Test(event_peek, reads_the_header_of_every_type)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		struct event ev;
		struct event_head h;
		const char *why = NULL;
		size_t len;
		uint8_t *buf;

		fill_event(&ev, all_types[i]);
		buf = encode_alloc(&ev, &len);
		cr_assert_eq(event_peek_header(buf, len, &h, &why), 0, "%s: %s",
			     event_type_name(all_types[i]), why);
		assert_head_of(&h, &ev, len);
		free(buf);
		event_free(&ev);
	}
}

Test(event_peek, sees_the_vref_flag)
{
	struct event ev;
	struct event_head h;
	size_t len;
	uint8_t *buf;

	fill_event(&ev, EV_WRITE);
	event_set_data(&ev, NULL, 0);
	ev.flags = EVENT_F_VREF;
	buf = encode_alloc(&ev, &len);
	cr_assert_eq(event_peek_header(buf, len, &h, NULL), 0);
	cr_assert_eq(h.flags, EVENT_F_VREF);
	cr_assert_eq(h.type, EV_WRITE);
	free(buf);
	event_free(&ev);
}

Test(event_peek, reads_the_first_record_of_a_longer_buffer)
{
	struct event a, b;
	struct event_head h;
	size_t la, lb;
	uint8_t *ba, *bb, *stream;

	fill_event(&a, EV_CHMOD);
	fill_event(&b, EV_ROLE);
	b.term = 77;
	ba = encode_alloc(&a, &la);
	bb = encode_alloc(&b, &lb);
	stream = malloc(la + lb);
	cr_assert_not_null(stream);
	memcpy(stream, ba, la);
	memcpy(stream + la, bb, lb);
	cr_assert_eq(event_peek_header(stream, la + lb, &h, NULL), 0);
	assert_head_of(&h, &a, la);
	cr_assert_eq(event_peek_header(stream + h.len, la + lb - h.len, &h, NULL), 0);
	assert_head_of(&h, &b, lb);
	free(stream);
	free(bb);
	free(ba);
	event_free(&b);
	event_free(&a);
}

Test(event_peek, rejects_every_truncation)
{
	struct event ev;
	size_t len;
	uint8_t *buf;

	fill_event(&ev, EV_RENAME);
	buf = encode_alloc(&ev, &len);
	for (size_t n = 0; n < len; n++) {
		uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */

		cr_assert_not_null(copy);
		memcpy(copy, buf, n);
		expect_peek_reject(copy, n, -EBADMSG,
				   n < EVENT_HEADER_LEN ? "truncated header" : "truncated record");
		free(copy);
	}
	free(buf);
	event_free(&ev);
}

Test(event_peek, rejects_bad_record_length)
{
	size_t len;
	uint8_t *rec = raw_record(EV_WRITE, 0, 0, 0, 0, 0, &len);

	put_le(rec + OFF_RECORD_LEN, EVENT_HEADER_LEN - 1, 4);
	expect_peek_reject(rec, len, -EBADMSG, "record length smaller than header");
	put_le(rec + OFF_RECORD_LEN, 0, 4);
	expect_peek_reject(rec, len, -EBADMSG, "record length smaller than header");
	put_le(rec + OFF_RECORD_LEN, EVENT_HEADER_LEN + 1, 4);
	expect_peek_reject(rec, len, -EBADMSG, "truncated record");
	put_le(rec + OFF_RECORD_LEN, (uint64_t)EVENT_MAX_RECORD + 1, 4);
	expect_peek_reject(rec, len, -EBADMSG, "record too long");
	put_le(rec + OFF_RECORD_LEN, 0xffffffffu, 4);
	expect_peek_reject(rec, len, -EBADMSG, "record too long");
	free(rec);
}

Test(event_peek, rejects_unknown_version)
{
	static const uint8_t versions[] = {0, 2, 0xff};
	size_t len;
	uint8_t *rec = raw_record(EV_WRITE, 0, 0, 0, 0, 0, &len);

	for (size_t i = 0; i < sizeof(versions); i++) {
		rec[OFF_VERSION] = versions[i];
		expect_peek_reject(rec, len, -EPROTO, "unknown version");
	}
	free(rec);
}

/* Peeking trusts the record: a bad CRC, an unknown type or flags still show. */
Test(event_peek, does_not_check_what_only_decoding_checks)
{
	struct event_head h;
	size_t len;
	uint8_t *rec = raw_record(EV_RENAME, 0, 0, 0, 0, 0, &len);

	rec[OFF_TYPE] = 200;
	put_le(rec + OFF_FLAGS, 0x8000, 2);
	rec[OFF_CRC] ^= 1;
	cr_assert_eq(event_peek_header(rec, len, &h, NULL), 0);
	cr_assert_eq(h.type, 200);
	cr_assert_eq(h.flags, 0x8000);
	expect_reject(rec, len, -EBADMSG, "bad crc");
	free(rec);
}

Test(event_peek, tolerates_null_why)
{
	struct event_head h;
	size_t len;
	uint8_t *rec = raw_record(EV_CHMOD, 0, 2, 0, 0, 0, &len);

	cr_assert_eq(event_peek_header(rec, len, &h, NULL), 0);
	cr_assert_eq(event_peek_header(rec, len - 1, &h, NULL), -EBADMSG);
	cr_assert_eq(event_peek_header(rec, 3, &h, NULL), -EBADMSG);
	free(rec);
}

Test(event_fences, round_trip_through_the_codec)
{
	static const struct evid v[] = {{0xa1, 10}, {0xb2, 0}, {0xffffffffffffffffull, 1ull << 63}};
	struct event ev = {.type = EV_ROLE, .op_flags = 1, .term = 4}, out;
	const char *why = NULL;
	size_t len;
	uint8_t *buf;

	cr_assert_eq(event_set_fences(&ev, v, 3), 0);
	cr_assert_eq(ev.data_len, 48);
	/* Two u64 a fence, little-endian: what journals and peers already hold. */
	cr_assert_eq(get_le(ev.data, 8), 0xa1);
	cr_assert_eq(get_le(ev.data + 8, 8), 10);
	cr_assert_eq(get_le(ev.data + 40, 8), 1ull << 63);
	buf = encode_alloc(&ev, &len);
	cr_assert_eq(event_decode(buf, len, &out, NULL, &why), 0, "%s", why);
	cr_assert_eq(event_fence_count(&out), 3);
	for (uint32_t i = 0; i < 3; i++) {
		cr_assert_eq(event_fence(&out, i).origin, v[i].origin);
		cr_assert_eq(event_fence(&out, i).seq, v[i].seq);
	}
	event_free(&out);
	free(buf);

	cr_assert_eq(event_set_fences(&ev, NULL, 0), 0);
	cr_assert_null(ev.data);
	cr_assert_eq(ev.data_len, 0);
	cr_assert_eq(event_fence_count(&ev), 0);
	cr_assert_eq(event_set_fences(&ev, v, EVENT_MAX_DATA / 16 + 1), -EINVAL);
	event_free(&ev);
}

Test(event_fences, bytes_past_the_last_whole_fence_are_ignored)
{
	static const uint8_t odd[20] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9};
	struct event ev = {.type = EV_ROLE};

	cr_assert_eq(event_fence_count(&ev), 0);
	cr_assert_eq(event_set_data(&ev, odd, 15), 0);
	cr_assert_eq(event_fence_count(&ev), 0);
	cr_assert_eq(event_set_data(&ev, odd, sizeof(odd)), 0);
	cr_assert_eq(event_fence_count(&ev), 1);
	cr_assert_eq(event_fence(&ev, 0).origin, 1);
	cr_assert_eq(event_fence(&ev, 0).seq, 2);
	event_free(&ev);
}
