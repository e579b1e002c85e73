/*
 * test_merkle.c - resync/merkle.c: two copies of a tree have equal digests;
 * each change replication must carry changes the root digest, and the diff
 * names exactly the paths that changed while listing only the directories
 * on the way to them; listings survive the wire and hostile listings are
 * refused with a reason.  Runs as root (chown, trusted.* xattrs).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "resync/merkle.h"
#include "tree.h"

static char base[] = "/tmp/test_merkle.XXXXXX";
static char tree_a[PATH_MAX], tree_b[PATH_MAX];

static void setup(void)
{
	cr_assert_not_null(mkdtemp(base));
	snprintf(tree_a, sizeof(tree_a), "%s/a", base);
	snprintf(tree_b, sizeof(tree_b), "%s/b", base);
	umask(022);
}

static void teardown(void)
{
	tree_remove(base);
}

TestSuite(merkle, .init = setup, .fini = teardown);

/*
 * The same tree whenever it is built: 12 entries with the root.  "shared"
 * and "d1/shared2" are one inode; "up" and "abs" point out of the tree and
 * must not be followed.
 */
static void make_tree(const char *root)
{
	char p[PATH_MAX], q[PATH_MAX];

	cr_assert_eq(mkdir(root, 0755), 0);
	tree_make_dir(root, "d1", 0750);
	tree_make_dir(root, "d1/sub", 0700);
	tree_put_file(root, "file", "hello, world\n");
	tree_put_file(root, "d1/inner", "inner contents");
	tree_put_file(root, "d1/sub/deep", "");
	tree_put_file(root, "shared", "one inode, two names");
	tree_set_mtime(root, "file", 1700000000, 0);
	tree_set_mtime(root, "d1/inner", 1700000001, 0);
	tree_set_mtime(root, "d1/sub/deep", 1700000002, 0);
	tree_set_mtime(root, "shared", 1700000003, 0);
	tree_at(p, root, "shared");
	tree_at(q, root, "d1/shared2");
	cr_assert_eq(link(p, q), 0);
	tree_make_symlink(root, "link", "file");
	tree_make_symlink(root, "up", "..");
	tree_make_symlink(root, "abs", "/");
	tree_xset_str(root, "file", "user.colour", "blue");
	tree_xset_str(root, "file", "user.empty", "");
	tree_at(p, root, "fifo");
	cr_assert_eq(mkfifo(p, 0600), 0);
}

static struct merkle *build(const char *root, uint64_t *entries)
{
	struct merkle *m;
	int fd, err;

	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", root, strerror(errno));
	err = merkle_build(fd, &m, entries);
	cr_assert_eq(err, 0, "merkle_build %s: %s", root, strerror(-err));
	close(fd);
	return m;
}

/* The diff's calls as lines "F path" / "D path". */
struct changes {
	char text[8192];
	size_t len;
	int fail_with; /* returned by the callback when nonzero */
};

static int record(void *arg, enum merkle_change what, const char *path,
		  const struct merkle_entry *theirs, const struct merkle_entry *mine)
{
	struct changes *c = arg;

	if (what == MERKLE_FETCH)
		cr_assert_not_null(theirs, "FETCH %s without their entry", path);
	else
		cr_assert(!theirs && mine, "DELETE %s with the wrong entries", path);
	c->len += (size_t)snprintf(c->text + c->len, sizeof(c->text) - c->len, "%c %s\n",
				   what == MERKLE_FETCH ? 'F' : 'D', path);
	cr_assert_lt(c->len, sizeof(c->text));
	return c->fail_with;
}

/* Diff mine (the receiver) against theirs (the sender) through the wire format. */
static int diff(const struct merkle *mine, const struct merkle *theirs, struct changes *c,
		struct merkle_diff_stats *stats)
{
	return merkle_diff(mine, merkle_list_tree, (void *)theirs, record, c, stats);
}

static int same_root(const struct merkle *x, const struct merkle *y)
{
	return !memcmp(merkle_root(x)->digest, merkle_root(y)->digest, MERKLE_DIGEST_LEN);
}

/*
 * Build the reference tree twice, change the second (the sender's), and
 * check that the root digests differ exactly when something is expected
 * and that the diff reports expected.
 */
static void expect_diff(void (*change)(const char *root), const char *expected)
{
	struct merkle_diff_stats stats;
	struct changes c = {0};
	struct merkle *a, *b;

	make_tree(tree_a);
	make_tree(tree_b);
	change(tree_b);
	a = build(tree_a, NULL);
	b = build(tree_b, NULL);
	cr_expect_eq(same_root(a, b), !*expected, "root digests %s",
		     *expected ? "equal after a change" : "differ");
	cr_assert_eq(diff(a, b, &c, &stats), 0);
	cr_expect_str_eq(c.text, expected);
	merkle_free(b);
	merkle_free(a);
}

Test(merkle, copies_have_equal_digests_and_cost_one_listing)
{
	struct merkle_diff_stats stats;
	struct changes c = {0};
	const struct merkle_entry *e;
	struct merkle *a, *b;
	uint64_t na, nb;

	make_tree(tree_a);
	make_tree(tree_b);
	/* Directory mtimes differ between replicas by nature. */
	tree_set_mtime(tree_b, "d1", 1000, 0);
	a = build(tree_a, &na);
	b = build(tree_b, &nb);
	cr_expect_eq(na, 12, "the symlinks out of the tree were followed: %lu entries",
		     (unsigned long)na);
	cr_expect_eq(nb, na);
	cr_assert(same_root(a, b));
	cr_assert_eq(diff(a, b, &c, &stats), 0);
	cr_expect_str_eq(c.text, "");
	cr_expect_eq(stats.listings, 1);
	cr_expect_eq(stats.compared, 1);
	cr_assert_eq(merkle_find(a, "d1/sub/deep", &e), 0);
	cr_expect_str_eq(e->name, "deep");
	cr_expect(S_ISREG(e->mode) && e->size == 0);
	cr_assert_eq(merkle_find(a, "abs", &e), 0);
	cr_expect(S_ISLNK(e->mode) && e->size == 1 && !e->dir);
	merkle_free(b);
	merkle_free(a);
}

Test(merkle, progress_build_counts_every_byte_it_hashes)
{
	struct merkle_progress p = {0};
	struct merkle *a, *b;
	uint64_t na, nb;
	int fd, err;

	make_tree(tree_a);
	a = build(tree_a, &na);
	fd = open(tree_a, O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	err = merkle_build_progress(fd, &p, &b, &nb);
	close(fd);
	cr_assert_eq(err, 0, "merkle_build_progress: %s", strerror(-err));
	cr_expect(same_root(a, b), "the same tree as merkle_build()");
	cr_expect_eq(nb, na);
	/* file 13, d1/inner 14, d1/sub/deep 0, shared (two names, one inode) 20. */
	cr_expect_eq(atomic_load(&p.total), 47);
	cr_expect_eq(atomic_load(&p.bytes), 47);
	cr_expect_eq(atomic_load(&p.files), 4);
	merkle_free(b);
	merkle_free(a);
}

static void change_content(const char *root)
{
	tree_put_file(root, "file", "hello, World\n");
	tree_set_mtime(root, "file", 1700000000, 0);
}

Test(merkle, file_contents_are_covered)
{
	expect_diff(change_content, "F file\n");
}

static void change_mode(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "file");
	cr_assert_eq(chmod(p, 0600), 0);
}

Test(merkle, file_mode_is_covered)
{
	expect_diff(change_mode, "F file\n");
}

static void change_owner(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "d1/inner");
	cr_assert_eq(chown(p, 1000, 1000), 0);
}

Test(merkle, owner_is_covered)
{
	expect_diff(change_owner, "F d1/inner\n");
}

static void change_xattr(const char *root)
{
	tree_xset_str(root, "file", "user.colour", "red");
}

Test(merkle, xattr_is_covered)
{
	expect_diff(change_xattr, "F file\n");
}

static void change_mtime(const char *root)
{
	tree_set_mtime(root, "d1/sub/deep", 1700000099, 0);
}

Test(merkle, file_mtime_is_covered)
{
	expect_diff(change_mtime, "F d1/sub/deep\n");
}

static void change_target(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "link");
	cr_assert_eq(unlink(p), 0);
	tree_make_symlink(root, "link", "d1/inner");
}

Test(merkle, symlink_target_is_covered)
{
	expect_diff(change_target, "F link\n");
}

static void add_file(const char *root)
{
	tree_put_file(root, "d1/sub/new", "new");
}

Test(merkle, added_file_is_fetched)
{
	expect_diff(add_file, "F d1/sub/new\n");
}

static void delete_file(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "d1/inner");
	cr_assert_eq(unlink(p), 0);
}

Test(merkle, deleted_file_is_deleted)
{
	expect_diff(delete_file, "D d1/inner\n");
}

static void rename_file(const char *root)
{
	char p[PATH_MAX], q[PATH_MAX];

	tree_at(p, root, "file");
	tree_at(q, root, "d1/file");
	cr_assert_eq(rename(p, q), 0);
}

Test(merkle, renamed_file_is_deleted_and_fetched)
{
	expect_diff(rename_file, "F d1/file\nD file\n");
}

static void change_dir_mode(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "d1/sub");
	cr_assert_eq(chmod(p, 0755), 0);
}

Test(merkle, directory_metadata_alone_is_fetched)
{
	expect_diff(change_dir_mode, "F d1/sub\n");
}

static void change_root_mode(const char *root)
{
	cr_assert_eq(chmod(root, 0700), 0);
}

Test(merkle, root_metadata_is_fetched_as_dot)
{
	expect_diff(change_root_mode, "F .\n");
}

static void add_dir(const char *root)
{
	tree_make_dir(root, "new", 0755);
	tree_make_dir(root, "new/sub", 0755);
	tree_put_file(root, "new/sub/x", "x");
}

Test(merkle, added_directory_is_fetched_with_everything_beneath)
{
	expect_diff(add_dir, "F new\nF new/sub\nF new/sub/x\n");
}

static void delete_dir(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "d1");
	tree_remove(p);
}

Test(merkle, deleted_directory_is_one_delete)
{
	expect_diff(delete_dir, "D d1\n");
}

static void file_to_dir(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "file");
	cr_assert_eq(unlink(p), 0);
	tree_make_dir(root, "file", 0755);
	tree_put_file(root, "file/x", "x");
}

Test(merkle, type_change_deletes_then_fetches)
{
	expect_diff(file_to_dir, "D file\nF file\nF file/x\n");
}

static void change_shared(const char *root)
{
	tree_put_file(root, "shared", "one inode, 2 names!!");
	tree_set_mtime(root, "shared", 1700000003, 0);
}

Test(merkle, hard_links_share_digest_and_link_group)
{
	const struct merkle_entry *s1, *s2, *f;
	struct merkle *a;

	make_tree(tree_a);
	a = build(tree_a, NULL);
	cr_assert_eq(merkle_find(a, "shared", &s1), 0);
	cr_assert_eq(merkle_find(a, "d1/shared2", &s2), 0);
	cr_assert_eq(merkle_find(a, "file", &f), 0);
	cr_expect_neq(s1->link, 0);
	cr_expect_eq(s1->link, s2->link);
	cr_expect(s1->dev == s2->dev && s1->ino == s2->ino);
	cr_expect_eq(memcmp(s1->digest, s2->digest, MERKLE_DIGEST_LEN), 0);
	cr_expect_eq(f->link, 0);
	merkle_free(a);
	tree_remove(tree_a);
	/* A change through one name is a change of both. */
	expect_diff(change_shared, "F d1/shared2\nF shared\n");
}

/* Symlinks and fifos are read through O_PATH descriptors: their xattrs count too. */
static void change_fid(const char *root)
{
	tree_xset_str(root, "file", "trusted.ledgerfs.fid", "0123456789abcdef");
	tree_xset_str(root, "link", "trusted.ledgerfs.fid", "0123456789abcdef");
	tree_xset_str(root, "fifo", "trusted.ledgerfs.ver", "0123456789abcdef");
}

Test(merkle, fid_and_version_xattrs_are_covered)
{
	expect_diff(change_fid, "F fifo\nF file\nF link\n");
}

static void stamp_root(const char *root)
{
	tree_xset_str(root, ".", "trusted.ledgerfs.node", "the cluster id!!");
}

Test(merkle, cluster_stamp_is_left_out)
{
	expect_diff(stamp_root, "");
}

/* 10 directories of 100 files; the same tree whenever it is built. */
static void make_wide(const char *root)
{
	char rel[64];
	int d, f;

	cr_assert_eq(mkdir(root, 0755), 0);
	for (d = 0; d < 10; d++) {
		snprintf(rel, sizeof(rel), "dir%d", d);
		tree_make_dir(root, rel, 0755);
		for (f = 0; f < 100; f++) {
			snprintf(rel, sizeof(rel), "dir%d/file%03d", d, f);
			tree_put_file(root, rel, rel);
			tree_set_mtime(root, rel, 1700000000 + f, 0);
		}
	}
}

Test(merkle, three_changed_files_of_a_thousand_are_three_fetches)
{
	struct merkle_diff_stats stats;
	struct changes c = {0};
	struct merkle *a, *b;
	uint64_t n;

	make_wide(tree_a);
	make_wide(tree_b);
	tree_put_file(tree_b, "dir2/file010", "changed");
	tree_put_file(tree_b, "dir2/file077", "changed");
	tree_set_mtime(tree_b, "dir7/file050", 1, 0);
	a = build(tree_a, &n);
	b = build(tree_b, NULL);
	cr_expect_eq(n, 1011);
	cr_assert_eq(diff(a, b, &c, &stats), 0);
	cr_expect_str_eq(c.text, "F dir2/file010\nF dir2/file077\nF dir7/file050\n");
	cr_expect_eq(stats.fetch, 3);
	cr_expect_eq(stats.del, 0);
	/* The root's listing and the two directories holding changes, nothing else. */
	cr_expect_eq(stats.listings, 3);
	cr_expect_eq(stats.compared, 1 + 10 + 2 * 100);
	merkle_free(b);
	merkle_free(a);
}

Test(merkle, builds_trees_deeper_than_path_max)
{
	char name[201];
	struct merkle *a, *b;
	uint64_t n;

	memset(name, 'n', 200);
	name[200] = '\0';
	for (int t = 0; t < 2; t++) {
		const char *root = t ? tree_b : tree_a;

		cr_assert_eq(mkdir(root, 0755), 0);
		tree_make_chain(root, name, 30);
	}
	a = build(tree_a, &n);
	b = build(tree_b, NULL);
	cr_expect_eq(n, 31);
	cr_expect(same_root(a, b));
	merkle_free(b);
	merkle_free(a);
}

Test(merkle, listing_round_trips_through_the_wire)
{
	const struct merkle_entry *e;
	struct merkle_dir *d;
	const char *why = NULL;
	struct merkle *a;
	uint8_t *buf;
	size_t len, cap, i;

	make_tree(tree_a);
	a = build(tree_a, NULL);
	cr_assert_eq(merkle_find(a, ".", &e), 0);
	cr_assert_eq(e, merkle_root(a));
	cap = merkle_dir_encoded_len(e->dir);
	buf = malloc(cap);
	cr_assert_not_null(buf);
	cr_expect_eq(merkle_dir_encode(e->dir, buf, cap - 1, &len), -ENOSPC);
	cr_assert_eq(merkle_dir_encode(e->dir, buf, cap, &len), 0);
	cr_assert_eq(len, cap);
	cr_assert_eq(merkle_dir_decode(buf, len, &d, &why), 0, "%s", why);
	cr_expect_eq(memcmp(d->digest, e->digest, MERKLE_DIGEST_LEN), 0);
	cr_expect_eq(memcmp(d->meta, e->dir->meta, MERKLE_DIGEST_LEN), 0);
	cr_expect_eq(d->mode, e->dir->mode);
	cr_assert_eq(d->n, e->dir->n);
	for (i = 0; i < d->n; i++) {
		const struct merkle_entry *x = &d->v[i], *y = &e->dir->v[i];

		cr_expect_str_eq(x->name, y->name);
		cr_expect_eq(x->mode, y->mode);
		cr_expect_eq(x->size, y->size);
		cr_expect_eq(x->link, y->link);
		cr_expect_eq(memcmp(x->digest, y->digest, MERKLE_DIGEST_LEN), 0);
		cr_expect(!x->dir && !x->dev && !x->ino);
	}
	merkle_dir_free(d);
	free(buf);
	merkle_free(a);
}

/* A listing of the given names, all regular files, encoded into buf. */
static size_t encode_names(const char **names, size_t n, uint8_t *buf, size_t cap)
{
	struct merkle_entry v[8] = {0};
	struct merkle_dir d = {.mode = S_IFDIR | 0755, .n = n, .v = v};
	size_t len;

	cr_assert_leq(n, 8);
	for (size_t i = 0; i < n; i++) {
		v[i].name = names[i];
		v[i].mode = S_IFREG | 0644;
		v[i].size = i;
	}
	cr_assert_eq(merkle_dir_encode(&d, buf, cap, &len), 0);
	return len;
}

static void expect_refused(const uint8_t *buf, size_t len, int err, const char *why)
{
	struct merkle_dir *d = (void *)1;
	const char *got = NULL;

	cr_expect_eq(merkle_dir_decode(buf, len, &d, &got), err, "decoding with %s", why);
	cr_expect_null(d);
	cr_expect_str_eq(got ? got : "(none)", why);
}

/* Header: version 2, mode 4, meta 32, count 4; then per entry the name length. */
#define COUNT_AT 38
#define NAME0_AT 42

Test(merkle, decode_refuses_hostile_listings)
{
	const char *two[] = {"ab", "cd"}, *slash[] = {"a/"}, *nul[] = {"ab"}, *dots[] = {".."},
		   *dot[] = {"x"}, *unsorted[] = {"cd", "ab"}, *twice[] = {"ab", "ab"};
	const char *why;
	uint8_t buf[512], copy[512];
	size_t len, cut;
	int err;

	len = encode_names(two, 2, buf, sizeof(buf));
	for (cut = 0; cut < len; cut++) {
		struct merkle_dir *d;

		why = NULL;
		err = merkle_dir_decode(buf, cut, &d, &why);
		cr_expect_eq(err, -EBADMSG, "a listing cut at %zu of %zu bytes decoded", cut, len);
		cr_expect_not_null(why);
	}
	expect_refused(buf, 3, -EBADMSG, "truncated header");
	expect_refused(buf, len - 1, -EBADMSG, "truncated entry");

	memcpy(copy, buf, len);
	copy[len] = 0;
	expect_refused(copy, len + 1, -EBADMSG, "trailing bytes");

	memcpy(copy, buf, len);
	copy[0] = 2;
	expect_refused(copy, len, -EPROTO, "unknown listing version");

	memcpy(copy, buf, len);
	copy[2] = 0; /* the directory's mode: no longer a directory */
	copy[3] = 0x80;
	expect_refused(copy, len, -EBADMSG, "bad directory mode");

	memcpy(copy, buf, len);
	memset(copy + COUNT_AT, 0xff, 4);
	expect_refused(copy, len, -EBADMSG, "more entries than bytes");

	memcpy(copy, buf, len);
	memset(copy + NAME0_AT + 1 + 2, 0xff, 4); /* the first entry's mode */
	expect_refused(copy, len, -EBADMSG, "bad mode");

	len = encode_names(slash, 1, buf, sizeof(buf));
	expect_refused(buf, len, -EBADMSG, "name with '/' or NUL");

	len = encode_names(nul, 1, buf, sizeof(buf));
	buf[NAME0_AT + 2] = '\0';
	expect_refused(buf, len, -EBADMSG, "name with '/' or NUL");

	len = encode_names(dots, 1, buf, sizeof(buf));
	expect_refused(buf, len, -EBADMSG, "name '.' or '..'");

	len = encode_names(dot, 1, buf, sizeof(buf));
	buf[NAME0_AT + 1] = '.';
	expect_refused(buf, len, -EBADMSG, "name '.' or '..'");

	/* An empty name: the one name byte taken out and the length set to 0. */
	len = encode_names(dot, 1, buf, sizeof(buf));
	buf[NAME0_AT] = 0;
	memmove(buf + NAME0_AT + 1, buf + NAME0_AT + 2, len - NAME0_AT - 2);
	expect_refused(buf, len - 1, -EBADMSG, "empty name");

	len = encode_names(unsorted, 2, buf, sizeof(buf));
	expect_refused(buf, len, -EBADMSG, "names not in strictly increasing order");

	len = encode_names(twice, 2, buf, sizeof(buf));
	expect_refused(buf, len, -EBADMSG, "names not in strictly increasing order");
}

Test(merkle, find_refuses_paths_outside_the_tree)
{
	const struct merkle_entry *e;
	char longname[NAME_MAX + 2];
	struct merkle *a;

	make_tree(tree_a);
	a = build(tree_a, NULL);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cr_expect_eq(merkle_find(a, "../a", &e), -EINVAL);
	cr_expect_eq(merkle_find(a, "/etc", &e), -EINVAL);
	cr_expect_eq(merkle_find(a, "d1/../file", &e), -EINVAL);
	cr_expect_eq(merkle_find(a, "d1//inner", &e), -EINVAL);
	cr_expect_eq(merkle_find(a, "", &e), -EINVAL);
	cr_expect_eq(merkle_find(a, longname, &e), -ENAMETOOLONG);
	cr_expect_eq(merkle_find(a, "file/x", &e), -ENOTDIR);
	cr_expect_eq(merkle_find(a, "up/file", &e), -ENOTDIR);
	cr_expect_eq(merkle_find(a, "d1/nope", &e), -ENOENT);
	cr_expect_null(e);
	cr_assert_eq(merkle_find(a, "d1/sub", &e), 0);
	cr_expect(e->dir && S_ISDIR(e->mode));
	merkle_free(a);
}

/* The other side changes between its root listing and the next. */
struct moving_peer {
	const struct merkle *before, *after;
};

static int list_moving(void *arg, const char *path, struct merkle_dir **out)
{
	struct moving_peer *p = arg;

	return merkle_list_tree((void *)(strcmp(path, ".") ? p->after : p->before), path, out);
}

Test(merkle, listing_that_does_not_match_its_parent_is_stale)
{
	struct moving_peer peer;
	struct changes c = {0};
	struct merkle *a, *b, *b2;

	make_tree(tree_a);
	make_tree(tree_b);
	tree_put_file(tree_b, "d1/inner", "changed");
	a = build(tree_a, NULL);
	b = build(tree_b, NULL);
	tree_put_file(tree_b, "d1/sub/deep", "changed later");
	b2 = build(tree_b, NULL);
	peer = (struct moving_peer){.before = b, .after = b2};
	cr_expect_eq(merkle_diff(a, list_moving, &peer, record, &c, NULL), -ESTALE);
	merkle_free(b2);
	merkle_free(b);
	merkle_free(a);
}

Test(merkle, callback_error_stops_the_diff)
{
	struct merkle_diff_stats stats;
	struct changes c = {.fail_with = -EIO};
	struct merkle *a, *b;

	make_tree(tree_a);
	make_tree(tree_b);
	change_content(tree_b);
	change_mode(tree_b);
	delete_file(tree_b);
	a = build(tree_a, NULL);
	b = build(tree_b, NULL);
	cr_expect_eq(diff(a, b, &c, &stats), -EIO);
	cr_expect_str_eq(c.text, "D d1/inner\n");
	cr_expect_eq(stats.fetch + stats.del, 1);
	merkle_free(b);
	merkle_free(a);
}

static int64_t ctime_ns(const struct stat *st)
{
	return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

Test(merkle, cache_trusts_only_unchanged_files_older_than_the_racy_window)
{
	static const uint8_t digest[MERKLE_DIGEST_LEN] = {1, 2, 3};
	struct merkle_cache *c;
	uint8_t got[MERKLE_DIGEST_LEN];
	struct fid fid = {0};
	struct stat st, later;
	char p[PATH_MAX];

	tree_make_dir(base, "a", 0755);
	tree_put_file(tree_a, "f", "one");
	tree_at(p, tree_a, "f");
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(merkle_cache_new(&c), 0);
	cr_assert_eq(merkle_cache_put(c, &st, (struct fid){7, 9}, digest), 0);
	cr_assert_eq(merkle_cache_count(c), 1);
	cr_assert_eq(merkle_cache_get(c, &st, ctime_ns(&st), &fid, got), 1);
	cr_assert_eq(memcmp(got, digest, sizeof(got)), 0);
	cr_assert_eq(fid.counter, 9);
	/* Within the racy window the file may have changed in the same clock tick. */
	cr_assert_eq(merkle_cache_get(c, &st, ctime_ns(&st) - 1, &fid, got), 0);
	/* Any change the digest covers moves ctime; size and mtime are checked too. */
	later = st;
	later.st_ctim.tv_nsec ^= 1;
	cr_assert_eq(merkle_cache_get(c, &later, INT64_MAX, &fid, got), 0);
	later = st;
	later.st_size++;
	cr_assert_eq(merkle_cache_get(c, &later, INT64_MAX, &fid, got), 0);
	later = st;
	later.st_mtim.tv_sec--;
	cr_assert_eq(merkle_cache_get(c, &later, INT64_MAX, &fid, got), 0);
	later = st;
	later.st_ino++;
	cr_assert_eq(merkle_cache_get(c, &later, INT64_MAX, &fid, got), 0);
	cr_assert_eq(merkle_cache_get(NULL, &st, INT64_MAX, &fid, got), 0);
	merkle_cache_free(c);
}

Test(merkle, cache_file_round_trips_and_refuses_damage)
{
	static const uint8_t digest[MERKLE_DIGEST_LEN] = {9, 8, 7};
	struct merkle_cache *c, *back = NULL;
	uint8_t got[MERKLE_DIGEST_LEN];
	struct fid fid;
	struct stat st;
	char p[PATH_MAX], file[PATH_MAX];
	FILE *f;

	tree_make_dir(base, "a", 0755);
	tree_put_file(tree_a, "f", "one");
	tree_at(p, tree_a, "f");
	tree_at(file, base, "digests.cache");
	cr_assert_eq(stat(p, &st), 0);
	cr_assert_eq(merkle_cache_new(&c), 0);
	for (int i = 0; i < 3000; i++) {
		struct stat other = st;

		other.st_ino += (ino_t)i + 1;
		cr_assert_eq(merkle_cache_put(c, &other, (struct fid){1, (uint64_t)i}, digest), 0);
	}
	cr_assert_eq(merkle_cache_put(c, &st, (struct fid){7, 9}, digest), 0);
	cr_assert_eq(merkle_cache_save(file, c), 0);
	cr_assert_eq(merkle_cache_load(file, &back), 0);
	cr_assert_eq(merkle_cache_count(back), 3001);
	cr_assert_eq(merkle_cache_get(back, &st, INT64_MAX, &fid, got), 1);
	cr_assert_eq(fid.origin, 7);
	merkle_cache_free(back);
	/* One flipped byte: refused, so a build reads every file again. */
	f = fopen(file, "r+");
	cr_assert_not_null(f);
	cr_assert_eq(fseek(f, 100, SEEK_SET), 0);
	cr_assert_eq(fputc(0x55 ^ 0xff, f), 0x55 ^ 0xff);
	fclose(f);
	back = NULL;
	cr_assert_eq(merkle_cache_load(file, &back), -EBADMSG);
	cr_assert_null(back);
	tree_at(file, base, "missing");
	cr_assert_eq(merkle_cache_load(file, &back), -ENOENT);
	merkle_cache_free(c);
}

Test(merkle, cached_build_reads_only_changed_files_and_equals_a_full_one)
{
	struct merkle *plain, *cached;
	struct merkle_cache *c;
	uint64_t entries = 0, reused = 7, files;
	int fd;

	make_tree(tree_a);
	plain = build(tree_a, NULL);
	cr_assert_eq(merkle_cache_new(&c), 0);
	fd = open(tree_a, O_PATH | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	/* Files changed within the racy window are read. */
	cr_assert_eq(merkle_build_cached(fd, c, 0, &cached, &entries, &reused), 0);
	cr_assert_eq(reused, 0);
	cr_assert(same_root(plain, cached));
	files = merkle_cache_count(c);
	cr_assert_gt(files, 0);
	merkle_free(cached);
	/* Trusted: every regular file's digest comes from the cache, and the tree is the same. */
	cr_assert_eq(merkle_build_cached(fd, c, INT64_MAX, &cached, &entries, &reused), 0);
	cr_assert_eq(reused, files);
	cr_assert(same_root(plain, cached));
	merkle_free(cached);
	/* A changed file is read again (its ctime moved) and the change is seen. */
	change_content(tree_a);
	cr_assert_eq(merkle_build_cached(fd, c, INT64_MAX, &cached, &entries, &reused), 0);
	cr_assert_eq(reused, files - 1);
	cr_assert(!same_root(plain, cached));
	merkle_free(cached);
	close(fd);
	merkle_free(plain);
	merkle_cache_free(c);
}

Test(merkle, files_hashed_on_several_threads_give_the_digests_of_one)
{
	cpu_set_t all, one;
	struct merkle *single, *multi;
	const struct merkle_entry *e;
	char rel[64], *big;
	int i;

	cr_assert_eq(sched_getaffinity(0, sizeof(all), &all), 0);
	if (CPU_COUNT(&all) < 2)
		cr_skip_test("one CPU: the build hashes on one thread anyway");
	big = malloc(3 << 20);
	cr_assert_not_null(big);
	make_tree(tree_a);
	/* Files of many sizes, one over the read buffer, so the threads share the work. */
	for (i = 0; i < (3 << 20) - 1; i++)
		big[i] = (char)('a' + i % 23);
	big[(3 << 20) - 1] = '\0';
	for (i = 0; i < 60; i++) {
		snprintf(rel, sizeof(rel), "d1/f%02d", i);
		tree_put_file(tree_a, rel, big + (size_t)i * 50000);
	}
	CPU_ZERO(&one);
	for (i = 0; i < CPU_SETSIZE && !CPU_ISSET(i, &all); i++)
		;
	CPU_SET(i, &one);
	cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	single = build(tree_a, NULL);
	cr_assert_eq(sched_setaffinity(0, sizeof(all), &all), 0);
	multi = build(tree_a, NULL);
	cr_assert(same_root(single, multi));
	cr_assert_eq(merkle_find(multi, "d1/f07", &e), 0);
	/* And a change is still seen: the threads hash the file as it is. */
	change_content(tree_a);
	merkle_free(multi);
	multi = build(tree_a, NULL);
	cr_assert(!same_root(single, multi));
	merkle_free(multi);
	merkle_free(single);
	free(big);
}
