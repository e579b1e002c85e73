/*
 * test_manifest.c - a backup manifest survives encode/decode whole, and
 * any damage to its bytes is refused by its checksum or its lengths.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backup/manifest.h"
#include "lib/bytes.h"

static void add(struct manifest *m, const char *path, uint32_t mode, const char *target,
		uint64_t link, int sha_byte)
{
	struct manifest_entry e = {.mode = mode,
				   .uid = 1000,
				   .gid = 100,
				   .mtime_sec = 1700000000,
				   .mtime_nsec = 123456789,
				   .size = 42,
				   .rdev = 0,
				   .link = link};
	static const uint8_t xattrs[] = {4, 0, 'u', 's', 'e', 'r', 3, 0, 0, 0, 'a', 'b', 'c'};

	e.path = strdup(path);
	if (target)
		e.target = strdup(target);
	if (sha_byte >= 0) {
		e.has_sha = 1;
		memset(e.sha, sha_byte, sizeof(e.sha));
	}
	e.xattrs = malloc(sizeof(xattrs));
	memcpy(e.xattrs, xattrs, sizeof(xattrs));
	e.xattrs_len = sizeof(xattrs);
	cr_assert_eq(manifest_add(m, &e), 0);
}

static void sample(struct manifest *m)
{
	memset(m, 0, sizeof(*m));
	m->created = 1765000000;
	strcpy(m->node, "replica-b");
	m->node_id = 0x1122334455667788ull;
	memset(m->cluster, 0xab, sizeof(m->cluster));
	m->nfrom = 2;
	m->from = calloc(2, sizeof(struct evid));
	m->from[0] = (struct evid){1, 10};
	m->from[1] = (struct evid){2, 20};
	m->npos = 2;
	m->pos = calloc(2, sizeof(struct evid));
	m->pos[0] = (struct evid){1, 15};
	m->pos[1] = (struct evid){2, 29};
	memset(m->events_sha, 7, sizeof(m->events_sha));
	m->events_bytes = 4096;
	m->events_count = 14;
	m->term = 3;
	m->nfences = 2;
	m->fences = calloc(2, sizeof(*m->fences));
	m->fences[0] = (struct manifest_fence){1, 2, 15};
	m->fences[1] = (struct manifest_fence){2, 3, 29};
	add(m, "", S_IFDIR | 0755, NULL, MANIFEST_NOLINK, -1);
	add(m, "dir", S_IFDIR | 0700, NULL, MANIFEST_NOLINK, -1);
	add(m, "dir/file", S_IFREG | 0644, NULL, MANIFEST_NOLINK, 0x5a);
	add(m, "dir/hard", S_IFREG | 0644, NULL, 2, -1);
	add(m, "sym", S_IFLNK | 0777, "dir/file", MANIFEST_NOLINK, -1);
}

Test(manifest, round_trip_keeps_every_field)
{
	struct manifest m, d;
	const char *why = NULL;
	const uint8_t *v;
	uint32_t vl;
	uint8_t *buf;
	size_t len, i;

	sample(&m);
	cr_assert_eq(manifest_encode(&m, &buf, &len), 0);
	cr_assert_eq(manifest_decode(buf, len, &d, &why), 0, "decode: %s", why);
	cr_assert_eq(d.created, m.created);
	cr_assert_str_eq(d.node, "replica-b");
	cr_assert_eq(d.node_id, m.node_id);
	cr_assert_arr_eq(d.cluster, m.cluster, sizeof(m.cluster));
	cr_assert_eq(d.nfrom, 2);
	cr_assert_eq(d.npos, 2);
	cr_assert_eq(d.pos[1].origin, 2);
	cr_assert_eq(d.pos[1].seq, 29);
	cr_assert_eq(d.from[0].seq, 10);
	cr_assert_arr_eq(d.events_sha, m.events_sha, MANIFEST_SHA);
	cr_assert_eq(d.events_bytes, 4096);
	cr_assert_eq(d.events_count, 14);
	cr_assert_eq(d.term, 3);
	cr_assert_eq(d.nfences, 2);
	cr_assert_eq(d.fences[1].origin, 2);
	cr_assert_eq(d.fences[1].term, 3);
	cr_assert_eq(d.fences[1].seq, 29);
	cr_assert_eq(d.fences[0].seq, 15);
	cr_assert_eq(d.n, m.n);
	for (i = 0; i < m.n; i++) {
		cr_assert_str_eq(d.e[i].path, m.e[i].path);
		cr_assert_eq(d.e[i].mode, m.e[i].mode);
		cr_assert_eq(d.e[i].uid, 1000);
		cr_assert_eq(d.e[i].gid, 100);
		cr_assert_eq(d.e[i].mtime_sec, 1700000000);
		cr_assert_eq(d.e[i].mtime_nsec, 123456789);
		cr_assert_eq(d.e[i].link, m.e[i].link);
		cr_assert_eq(d.e[i].has_sha, m.e[i].has_sha);
		if (m.e[i].has_sha)
			cr_assert_arr_eq(d.e[i].sha, m.e[i].sha, MANIFEST_SHA);
		cr_assert_eq(d.e[i].xattrs_len, m.e[i].xattrs_len);
	}
	cr_assert_str_eq(d.e[4].target, "dir/file");
	cr_assert_null(d.e[2].target);
	cr_assert_eq(manifest_xattr(&d.e[2], "user", &v, &vl), 1);
	cr_assert_eq(vl, 3);
	cr_assert_eq(memcmp(v, "abc", 3), 0);
	cr_assert_eq(manifest_xattr(&d.e[2], "trusted.ledgerfs.fid", &v, &vl), 0);
	free(buf);
	manifest_free(&d);
	manifest_free(&m);
}

Test(manifest, every_flipped_byte_is_refused)
{
	struct manifest m, d;
	const char *why;
	uint8_t *buf;
	size_t len, i;

	sample(&m);
	cr_assert_eq(manifest_encode(&m, &buf, &len), 0);
	for (i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		why = NULL;
		cr_assert_neq(manifest_decode(buf, len, &d, &why), 0, "byte %zu flipped", i);
		cr_assert_not_null(why);
		buf[i] ^= 0x01;
	}
	cr_assert_eq(manifest_decode(buf, len, &d, &why), 0);
	manifest_free(&d);
	free(buf);
	manifest_free(&m);
}

Test(manifest, truncation_is_refused)
{
	struct manifest m, d;
	const char *why;
	uint8_t *buf;
	size_t len, cut;

	sample(&m);
	cr_assert_eq(manifest_encode(&m, &buf, &len), 0);
	for (cut = 0; cut < len; cut += 7)
		cr_assert_neq(manifest_decode(buf, cut, &d, &why), 0, "cut at %zu", cut);
	free(buf);
	manifest_free(&m);
}

/* A body whose checksum is right but whose lengths lie is refused by the lengths. */
Test(manifest, lengths_are_checked_behind_a_valid_checksum)
{
	struct manifest m, d;
	const char *why = NULL;
	uint8_t *buf;
	size_t len;
	unsigned olen;

	memset(&m, 0, sizeof(m));
	strcpy(m.node, "n");
	add(&m, "", S_IFDIR | 0755, NULL, MANIFEST_NOLINK, -1);
	/* A link to itself (not an earlier entry). */
	add(&m, "x", S_IFREG | 0644, NULL, 1, -1);
	cr_assert_eq(manifest_encode(&m, &buf, &len), 0);
	cr_assert_eq(manifest_decode(buf, len, &d, &why), -EBADMSG);
	cr_assert_str_eq(why, "bad entry");
	/* A path length past the end, checksum recomputed. */
	manifest_free(&m);
	memset(&m, 0, sizeof(m));
	strcpy(m.node, "n");
	add(&m, "", S_IFDIR | 0755, NULL, MANIFEST_NOLINK, -1);
	free(buf);
	cr_assert_eq(manifest_encode(&m, &buf, &len), 0);
	/* magic 8, format 4, created 8, node (4+1), id 8, cluster 16, 2 empty vectors 8,
	   events 32+8+8, term 8, no fences 4, count 8: the first entry's path length follows. */
	put_le32(buf + 8 + 4 + 8 + 5 + 8 + 16 + 8 + 48 + 12 + 8, 0x7fffffff);
	cr_assert(EVP_Digest(buf, len - MANIFEST_SHA, buf + len - MANIFEST_SHA, &olen, EVP_sha256(),
			     NULL) == 1);
	cr_assert_eq(manifest_decode(buf, len, &d, &why), -EBADMSG);
	free(buf);
	manifest_free(&m);
}
