/*
 * test_proto_snap.c - unit tests of the snapshot resync frames of the
 * replication codec (net/proto.c): every SNAP_* message round trips,
 * and what a hostile peer could send instead is refused with its reason:
 * paths that leave the store, vectors out of order, entries whose mode,
 * symlink target or xattr blob is wrong, data past its bound, and every
 * truncation of every valid frame.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/bytes.h"
#include "net/proto.h"

static const struct evid vec[] = {{1, 10}, {5, 0}, {9, 123456789}};

/* An xattr blob with a user xattr and a fid, as snapshot.h describes it. */
static size_t sample_blob(uint8_t *b)
{
	size_t n = 0;

	put_le16(b, 2);
	n = 2;
	b[n++] = 20;
	memcpy(b + n, "trusted.ledgerfs.fid", 20);
	n += 20;
	put_le32(b + n, 16);
	n += 4;
	put_le64(b + n, 7);
	put_le64(b + n + 8, 42);
	n += 16;
	b[n++] = 8;
	memcpy(b + n, "user.tag", 8);
	n += 8;
	put_le32(b + n, 3);
	memcpy(b + n + 4, "red", 3);
	return n + 7;
}

static void parse_ok(const struct buf *b, struct proto_msg *m)
{
	const char *why = NULL;

	cr_assert_eq(proto_parse(b->data, b->len, m, &why), 0, "why: %s", why ? why : "");
}

static void expect_reject(const struct buf *b, const char *want)
{
	struct proto_msg m;
	const char *why = NULL;

	cr_assert_eq(proto_parse(b->data, b->len, &m, &why), -EBADMSG, "want %s, why: %s", want,
		     why ? why : "(none)");
	cr_assert_str_eq(why, want);
}

/* Patch b's length field after its body was edited in place. */
static void fix_len(struct buf *b)
{
	put_le32(b->data, (uint32_t)(b->len - 4));
}

Test(proto_snap, rounds_and_vectors_round_trip)
{
	struct buf b = BUF_INIT;
	struct proto_msg m;

	cr_assert_eq(proto_put_snap_round(&b, PROTO_SNAP_BEGIN, 3), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.type, PROTO_SNAP_BEGIN);
	cr_assert_eq(m.round, 3);
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_vec(&b, PROTO_SNAP_INFO, 3, 1000, vec, 3), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.snap_vec.round, 3);
	cr_assert_eq(m.snap_vec.entries, 1000);
	cr_assert_eq(m.snap_vec.count, 3);
	cr_assert_eq(memcmp(m.snap_vec.vec, vec, sizeof(vec)), 0);
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_vec(&b, PROTO_SNAP_END, 3, 0, NULL, 0), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.type, PROTO_SNAP_END);
	cr_assert_eq(m.snap_vec.count, 0);
	proto_msg_free(&m);
	cr_assert_eq(proto_put_snap_vec(&b, PROTO_SNAP_END, 3, 5, vec, 3), -EINVAL);
	cr_assert_eq(proto_put_snap_round(&b, PROTO_SNAP_INFO, 3), -EINVAL);
	buf_free(&b);
}

Test(proto_snap, vector_out_of_order_refused)
{
	struct buf b = BUF_INIT;

	cr_assert_eq(proto_put_snap_vec(&b, PROTO_SNAP_INFO, 1, 1, vec, 3), 0);
	/* Swap the first two origins. */
	put_le64(b.data + 5 + 20, 5);
	put_le64(b.data + 5 + 36, 1);
	expect_reject(&b, "snapshot vector not in origin order");
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_vec(&b, PROTO_SNAP_INFO, 1, 1, vec, 3), 0);
	put_le32(b.data + 5 + 16, 4);
	expect_reject(&b, "snapshot vector does not fill the frame");
	buf_free(&b);
}

Test(proto_snap, paths_round_trip_and_escapes_refused)
{
	static const char *bad[] = {"../x", "/abs", "a/../b", "a//b", ""};
	static const char *why4[] = {"'.' or '..' path component", "absolute path"};
	struct buf b = BUF_INIT;
	struct proto_msg m;
	uint8_t listing[3] = {1, 2, 3};

	cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_GET, 77, "dir/file"), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.snap_path.id, 77);
	cr_assert_str_eq(m.snap_path.path, "dir/file");
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_LIST, 0, "."), 0);
	parse_ok(&b, &m);
	cr_assert_str_eq(m.snap_path.path, ".");
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_SCOPE, 2, "play/n779388"), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.type, PROTO_SNAP_SCOPE);
	cr_assert_eq(m.snap_path.id, 2);
	cr_assert_str_eq(m.snap_path.path, "play/n779388");
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_SCOPE, 1, "../x"), -EINVAL);
	cr_assert_eq(proto_put_snap_dir(&b, "d", listing, sizeof(listing)), 0);
	parse_ok(&b, &m);
	cr_assert_str_eq(m.snap_path.path, "d");
	cr_assert_eq(m.snap_path.listing_len, 3);
	cr_assert_eq(memcmp(m.snap_path.listing, listing, 3), 0);
	proto_msg_free(&m);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_LIST, 0, bad[i]), -EINVAL, "%s",
			     bad[i]);
		/* Written by hand, as a hostile peer would. */
		buf_reset(&b);
		cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_LIST, 0, "abcd"), 0);
		if (i < 2) {
			memcpy(b.data + 7, bad[i], 4);
			expect_reject(&b, why4[i]);
		}
	}
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_LIST, 0, "abcd"), 0);
	b.data[8] = 0;
	expect_reject(&b, "NUL byte in path");
	buf_free(&b);
}

Test(proto_snap, entries_round_trip)
{
	uint8_t blob[128];
	struct snap_meta file = {.mode = S_IFREG | 04755,
				 .uid = 1000,
				 .gid = 100,
				 .size = 5000,
				 .mtime_sec = 1700000000,
				 .mtime_nsec = 123};
	struct snap_meta link = {.mode = S_IFLNK | 0777, .size = 6, .target = "target"};
	struct buf b = BUF_INIT;
	struct proto_msg m;

	file.xattrs = blob;
	file.xattrs_len = sample_blob(blob);
	cr_assert_eq(proto_put_snap_entry(&b, 9, SNAP_ENTRY_OK, &file), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.snap_entry.id, 9);
	cr_assert_eq(m.snap_entry.meta.mode, file.mode);
	cr_assert_eq(m.snap_entry.meta.uid, 1000);
	cr_assert_eq(m.snap_entry.meta.size, 5000);
	cr_assert_eq(m.snap_entry.meta.mtime_nsec, 123);
	cr_assert_eq(m.snap_entry.meta.fid.origin, 7);
	cr_assert_eq(m.snap_entry.meta.fid.counter, 42);
	cr_assert_eq(m.snap_entry.meta.xattrs_len, file.xattrs_len);
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_entry(&b, 10, SNAP_ENTRY_OK, &link), 0);
	parse_ok(&b, &m);
	cr_assert_str_eq(m.snap_entry.meta.target, "target");
	proto_msg_free(&m);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_entry(&b, 11, SNAP_ENTRY_CHANGED, NULL), 0);
	parse_ok(&b, &m);
	cr_assert_eq(m.snap_entry.status, SNAP_ENTRY_CHANGED);
	proto_msg_free(&m);
	buf_free(&b);
}

Test(proto_snap, bad_entries_refused)
{
	struct snap_meta dir = {.mode = S_IFDIR | 0755};
	struct snap_meta link = {.mode = S_IFLNK | 0777, .size = 6, .target = "target"};
	struct snap_meta bad_mode = {.mode = 0170000 | 0755};
	struct buf b = BUF_INIT;
	uint8_t blob[128];
	size_t n;

	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &bad_mode), -EINVAL);
	link.size = 5;
	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &link), -EINVAL);
	link.size = 6;
	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &dir), 0);
	/* Mode field at body offset 5. */
	put_le32(b.data + 5 + 5, 0170755);
	expect_reject(&b, "bad mode in snapshot entry");
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &dir), 0);
	b.data[5 + 4] = 2;
	expect_reject(&b, "unknown snapshot entry status");
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &link), 0);
	b.data[b.len - 4 - 2] = 0;
	expect_reject(&b, "bad symlink target in snapshot entry");
	buf_reset(&b);
	/* An xattr blob whose names are out of order. */
	n = sample_blob(blob);
	memcpy(blob + 3, "trusted.ledgerfs.fie", 20);
	memcpy(blob + 3 + 20 + 4 + 16 + 1, "aser.tag", 8);
	dir.xattrs = blob;
	dir.xattrs_len = n;
	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &dir), -EINVAL);
	buf_free(&b);
}

Test(proto_snap, data_round_trips_and_is_bounded)
{
	struct buf b = BUF_INIT;
	struct proto_msg m;
	uint8_t *dst;
	const char *why = NULL;
	size_t frame_len;

	cr_assert_eq(proto_put_snap_data(&b, 4, 1 << 20, 5, &dst), 0);
	memcpy(dst, "hello", 5);
	parse_ok(&b, &m);
	cr_assert_eq(m.snap_data.id, 4);
	cr_assert_eq(m.snap_data.offset, 1 << 20);
	cr_assert_eq(m.snap_data.len, 5);
	cr_assert_eq(memcmp(m.snap_data.data, "hello", 5), 0);
	proto_msg_free(&m);
	cr_assert_eq(proto_put_snap_data(&b, 4, 0, PROTO_SNAP_DATA_MAX + 1, &dst), -EMSGSIZE);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_data(&b, 4, 0, PROTO_SNAP_DATA_MAX, &dst), 0);
	memset(dst, 0, PROTO_SNAP_DATA_MAX);
	cr_assert_eq(proto_frame_peek(b.data, b.len, &frame_len, &why), 0);
	cr_assert_eq(buf_reserve(&b, 1), 0);
	b.data[b.len++] = 0;
	fix_len(&b);
	cr_assert_eq(proto_frame_peek(b.data, 5, &frame_len, &why), -EMSGSIZE);
	buf_reset(&b);
	cr_assert_eq(proto_put_snap_data(&b, 4, UINT64_MAX - 2, 5, &dst), 0);
	expect_reject(&b, "snapshot data out of range");
	buf_free(&b);
}

Test(proto_snap, every_truncation_refused)
{
	uint8_t blob[128];
	struct snap_meta file = {.mode = S_IFREG | 0644, .size = 1};
	struct buf b = BUF_INIT;
	uint8_t *dst;
	size_t marks[8], k = 0;

	file.xattrs = blob;
	file.xattrs_len = sample_blob(blob);
	marks[k++] = b.len;
	cr_assert_eq(proto_put_snap_vec(&b, PROTO_SNAP_INFO, 1, 2, vec, 3), 0);
	marks[k++] = b.len;
	cr_assert_eq(proto_put_snap_path(&b, PROTO_SNAP_GET, 1, "a/b"), 0);
	marks[k++] = b.len;
	cr_assert_eq(proto_put_snap_entry(&b, 1, SNAP_ENTRY_OK, &file), 0);
	marks[k++] = b.len;
	cr_assert_eq(proto_put_snap_data(&b, 1, 0, 1, &dst), 0);
	*dst = 'x';
	marks[k++] = b.len;
	for (size_t f = 0; f + 1 < k; f++) {
		size_t len = marks[f + 1] - marks[f];
		uint8_t *copy = malloc(len);

		cr_assert_not_null(copy);
		for (size_t cut = PROTO_HEADER_LEN; cut < len; cut++) {
			struct proto_msg m;
			const char *why = NULL;
			int rv;

			memcpy(copy, b.data + marks[f], cut);
			put_le32(copy, (uint32_t)(cut - 4));
			rv = proto_parse(copy, cut, &m, &why);
			/* DATA may legally be shorter: a cut there is a shorter chunk. */
			if (rv == 0) {
				cr_assert_eq(m.type, PROTO_SNAP_DATA, "frame %zu cut at %zu", f,
					     cut);
				proto_msg_free(&m);
				continue;
			}
			cr_assert_eq(rv, -EBADMSG, "frame %zu cut at %zu: %d", f, cut, rv);
			cr_assert_not_null(why);
		}
		free(copy);
	}
	buf_free(&b);
}
