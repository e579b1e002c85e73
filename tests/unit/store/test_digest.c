/*
 * test_digest.c - store/digest.c: equal trees give equal digests, every change
 * replication must carry changes the digest, and what legitimately differs
 * between replicas (directory mtimes, ledgerfs's own xattrs) does not.
 * Runs as root (chown, trusted.* xattrs, device nodes).
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "store/digest.h"
#include "tree.h"

static char base[] = "/tmp/test_digest.XXXXXX";
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

TestSuite(digest, .init = setup, .fini = teardown);

/* The same tree whenever it is built: fixed contents, modes, owners and mtimes. */
static void make_tree(const char *root)
{
	char p[PATH_MAX];

	cr_assert_eq(mkdir(root, 0755), 0);
	tree_make_dir(root, "dir", 0750);
	tree_make_dir(root, "dir/sub", 0700);
	tree_put_file(root, "file", "hello, world\n");
	tree_put_file(root, "dir/inner", "inner contents");
	tree_put_file(root, "dir/sub/deep", "");
	tree_set_mtime(root, "file", 1700000000, 123456789);
	tree_set_mtime(root, "dir/inner", 1700000001, 1);
	tree_set_mtime(root, "dir/sub/deep", 1700000002, 0);
	tree_at(p, root, "link");
	cr_assert_eq(symlink("file", p), 0);
	tree_at(p, root, "file");
	cr_assert_eq(setxattr(p, "user.colour", "blue", 4, 0), 0, "%s", strerror(errno));
	cr_assert_eq(setxattr(p, "user.empty", "", 0, 0), 0);
	tree_at(p, root, "fifo");
	cr_assert_eq(mkfifo(p, 0600), 0);
	tree_at(p, root, "null");
	cr_assert_eq(mknod(p, S_IFCHR | 0666, makedev(1, 3)), 0, "%s", strerror(errno));
}

static void digest_of(const char *root, unsigned char d[DIGEST_LEN])
{
	cr_assert_eq(digest_tree(root, d, NULL), 0, "digest of %s", root);
}

static int same_digest(const char *x, const char *y)
{
	unsigned char dx[DIGEST_LEN], dy[DIGEST_LEN];

	digest_of(x, dx);
	digest_of(y, dy);
	return memcmp(dx, dy, DIGEST_LEN) == 0;
}

/* Build the reference tree twice, change one of them, compare. */
static int digest_survives(void (*change)(const char *root))
{
	make_tree(tree_a);
	make_tree(tree_b);
	cr_assert(same_digest(tree_a, tree_b), "the two fresh trees differ");
	change(tree_b);
	return same_digest(tree_a, tree_b);
}

Test(digest, identical_trees_give_equal_digests)
{
	unsigned char d1[DIGEST_LEN], d2[DIGEST_LEN];

	make_tree(tree_a);
	make_tree(tree_b);
	digest_of(tree_a, d1);
	digest_of(tree_b, d2);
	cr_expect_arr_eq(d1, d2, DIGEST_LEN);
	digest_of(tree_a, d2);
	cr_expect_arr_eq(d1, d2, DIGEST_LEN, "same tree twice");
}

static void change_content_byte(const char *root)
{
	tree_put_file(root, "dir/inner", "inner contentz");
	tree_set_mtime(root, "dir/inner", 1700000001, 1);
}

static void change_mode(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "dir/inner");
	cr_assert_eq(chmod(p, 0640), 0);
}

static void change_root_mode(const char *root)
{
	cr_assert_eq(chmod(root, 0700), 0);
}

static void change_uid(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "dir/sub/deep");
	cr_assert_eq(lchown(p, 1234, -1), 0, "%s", strerror(errno));
}

static void change_gid(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "link");
	cr_assert_eq(lchown(p, -1, 4321), 0, "%s", strerror(errno));
}

static void change_xattr(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "file");
	cr_assert_eq(setxattr(p, "user.colour", "bluf", 4, 0), 0);
}

static void add_xattr(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "dir");
	cr_assert_eq(setxattr(p, "user.new", "1", 1, 0), 0);
}

static void change_symlink_target(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "link");
	cr_assert_eq(unlink(p), 0);
	cr_assert_eq(symlink("filf", p), 0);
}

static void change_file_mtime(const char *root)
{
	tree_set_mtime(root, "file", 1700000000, 123456790);
}

static void rename_file(const char *root)
{
	char from[PATH_MAX], to[PATH_MAX];

	tree_at(from, root, "dir/inner");
	tree_at(to, root, "dir/inner2");
	cr_assert_eq(rename(from, to), 0);
}

static void add_empty_file(const char *root)
{
	tree_put_file(root, "dir/sub/empty", "");
	tree_set_mtime(root, "dir/sub/empty", 1700000002, 0);
}

static void change_device_number(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "null");
	cr_assert_eq(unlink(p), 0);
	cr_assert_eq(mknod(p, S_IFCHR | 0666, makedev(1, 5)), 0);
}

static void swap_fifo_for_file(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "fifo");
	cr_assert_eq(unlink(p), 0);
	cr_assert_eq(mknod(p, S_IFREG | 0600, 0), 0);
}

Test(digest, a_content_byte_changes_it)
{
	cr_expect_not(digest_survives(change_content_byte));
}

Test(digest, a_mode_changes_it)
{
	cr_expect_not(digest_survives(change_mode));
}

Test(digest, the_root_mode_changes_it)
{
	cr_expect_not(digest_survives(change_root_mode));
}

Test(digest, an_owner_changes_it)
{
	cr_expect_not(digest_survives(change_uid));
}

Test(digest, a_symlink_group_changes_it)
{
	cr_expect_not(digest_survives(change_gid));
}

Test(digest, an_xattr_value_changes_it)
{
	cr_expect_not(digest_survives(change_xattr));
}

Test(digest, an_added_xattr_changes_it)
{
	cr_expect_not(digest_survives(add_xattr));
}

Test(digest, a_symlink_target_changes_it)
{
	cr_expect_not(digest_survives(change_symlink_target));
}

Test(digest, a_file_mtime_changes_it)
{
	cr_expect_not(digest_survives(change_file_mtime));
}

Test(digest, a_rename_changes_it)
{
	cr_expect_not(digest_survives(rename_file));
}

Test(digest, an_added_empty_file_changes_it)
{
	cr_expect_not(digest_survives(add_empty_file));
}

Test(digest, a_device_number_changes_it)
{
	cr_expect_not(digest_survives(change_device_number));
}

Test(digest, a_type_changes_it)
{
	cr_expect_not(digest_survives(swap_fifo_for_file));
}

static void change_dir_mtime(const char *root)
{
	tree_set_mtime(root, "dir", 1000, 0);
	tree_set_mtime(root, ".", 2000, 0);
}

static void add_private_xattrs(const char *root)
{
	char p[PATH_MAX];

	tree_at(p, root, "file");
	cr_assert_eq(setxattr(p, "trusted.ledgerfs.fid", "0123456789abcdef", 16, 0), 0);
	cr_assert_eq(setxattr(root, "trusted.ledgerfs.version", "7", 1, 0), 0);
	tree_at(p, root, "link");
	cr_assert_eq(lsetxattr(p, "trusted.ledgerfs.fid", "x", 1, 0), 0);
}

static void read_files(const char *root)
{
	char p[PATH_MAX], buf[64];
	int fd;

	/* Reading changes atimes (and ctime does not matter either). */
	tree_at(p, root, "file");
	fd = open(p, O_RDONLY | O_NOATIME);
	cr_assert_geq(fd, 0);
	cr_assert_gt(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	tree_set_mtime(root, "file", 1700000000, 123456789);
}

Test(digest, a_directory_mtime_does_not_change_it)
{
	cr_expect(digest_survives(change_dir_mtime));
}

Test(digest, ledgerfs_private_xattrs_do_not_change_it)
{
	cr_expect(digest_survives(add_private_xattrs));
}

Test(digest, atimes_and_ctimes_do_not_change_it)
{
	cr_expect(digest_survives(read_files));
}

Test(digest, symlinks_are_not_followed)
{
	char outside[PATH_MAX], p[PATH_MAX];
	unsigned char d1[DIGEST_LEN], d2[DIGEST_LEN];

	snprintf(outside, sizeof(outside), "%s/outside", base);
	cr_assert_eq(mkdir(outside, 0755), 0);
	make_tree(tree_a);
	tree_at(p, tree_a, "escape");
	cr_assert_eq(symlink(outside, p), 0);
	digest_of(tree_a, d1);
	tree_put_file(outside, "new", "x");
	digest_of(tree_a, d2);
	cr_expect_arr_eq(d1, d2, DIGEST_LEN);
}

Test(digest, hard_links_digest_like_copies)
{
	char p[PATH_MAX], q[PATH_MAX];
	unsigned char d1[DIGEST_LEN], d2[DIGEST_LEN];

	make_tree(tree_a);
	make_tree(tree_b);
	tree_at(p, tree_a, "file");
	tree_at(q, tree_a, "hardlink");
	cr_assert_eq(link(p, q), 0);
	tree_put_file(tree_b, "hardlink", "hello, world\n");
	tree_at(q, tree_b, "hardlink");
	cr_assert_eq(setxattr(q, "user.colour", "blue", 4, 0), 0);
	cr_assert_eq(setxattr(q, "user.empty", "", 0, 0), 0);
	tree_set_mtime(tree_b, "hardlink", 1700000000, 123456789);
	digest_of(tree_a, d1);
	digest_of(tree_b, d2);
	cr_expect_arr_eq(d1, d2, DIGEST_LEN);
}

/* Run digest_tree with a listing; returns the listing (caller frees). */
static char *listing(const char *root, unsigned char d[DIGEST_LEN])
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	cr_assert_eq(digest_tree(root, d, f), 0);
	cr_assert_eq(fclose(f), 0);
	return text;
}

Test(digest, list_has_one_line_per_entry)
{
	unsigned char d1[DIGEST_LEN], d2[DIGEST_LEN];
	char *text, *line, *save = NULL;
	char hex[2 * DIGEST_LEN + 1];
	const char *want[] = {". d 0755",	"dir d 0750",	  "dir/inner f 0644",
			      "dir/sub d 0700", "dir/sub/deep f", "fifo p 0600",
			      "file f 0644",	"link l 0777",	  "null c 0644"};
	size_t n = 0;

	make_tree(tree_a);
	text = listing(tree_a, d1);
	digest_of(tree_a, d2);
	cr_expect_arr_eq(d1, d2, DIGEST_LEN, "listing must not change the digest");
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char type, path[PATH_MAX], size[32], mtime[32];
		unsigned mode, uid, gid;
		char prefix[PATH_MAX + 16];

		cr_assert_lt(n, sizeof(want) / sizeof(want[0]), "extra line: %s", line);
		cr_assert_eq(sscanf(line, "%64s %c %o %u:%u %31s %31s %4095s", hex, &type, &mode,
				    &uid, &gid, size, mtime, path),
			     8, "%s", line);
		cr_expect_eq(strlen(hex), 64);
		snprintf(prefix, sizeof(prefix), "%s %c %04o", path, type, mode);
		cr_expect_eq(strncmp(prefix, want[n], strlen(want[n])), 0, "line %zu: %s", n, line);
		if (!strcmp(path, "file"))
			cr_expect(strstr(line, " 0:0 13 1700000000123456789 file"), "%s", line);
		if (type != 'f')
			cr_expect(strstr(line, " - - "), "%s", line);
		n++;
	}
	cr_expect_eq(n, sizeof(want) / sizeof(want[0]));
	free(text);
}

Test(digest, list_escapes_unusual_names)
{
	unsigned char d[DIGEST_LEN];
	char *text;

	cr_assert_eq(mkdir(tree_a, 0755), 0);
	tree_put_file(tree_a, "two\nlines", "");
	tree_put_file(tree_a, "back\\slash", "");
	tree_put_file(tree_a, "caf\xc3\xa9 \t", "");
	text = listing(tree_a, d);
	cr_expect(strstr(text, " two\\nlines\n"), "%s", text);
	cr_expect(strstr(text, " back\\\\slash\n"), "%s", text);
	cr_expect(strstr(text, " caf\\xc3\\xa9 \\x09\n"), "%s", text);
	free(text);
}

Test(digest, names_are_sorted_bytewise)
{
	unsigned char d[DIGEST_LEN];
	char *text, *b, *a, *up;

	cr_assert_eq(mkdir(tree_a, 0755), 0);
	tree_put_file(tree_a, "b", "");
	tree_put_file(tree_a, "a", "");
	tree_put_file(tree_a, "B", "");
	tree_put_file(tree_a, "\xff", "");
	text = listing(tree_a, d);
	up = strstr(text, " B\n");
	a = strstr(text, " a\n");
	b = strstr(text, " b\n");
	cr_assert(up && a && b, "%s", text);
	cr_expect(up < a && a < b && b < strstr(text, "\\xff"), "%s", text);
	free(text);
}

Test(digest, deep_trees_need_few_file_descriptors)
{
	struct rlimit rl;
	unsigned char d[DIGEST_LEN];
	int depth = 3000;
	char *text;
	size_t lines = 0;

	cr_assert_eq(mkdir(tree_a, 0755), 0);
	tree_make_chain(tree_a, "d", depth);
	/* This test runs in its own process, so the limit ends with it. */
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = 16;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "%s", strerror(errno));
	text = listing(tree_a, d);
	for (char *p = text; *p; p++)
		lines += *p == '\n';
	cr_expect_eq(lines, (size_t)depth + 1);
	free(text);
}

/* The suite's setup runs as well. */
Test(digest, a_missing_root_is_reported, .init = cr_redirect_stderr)
{
	unsigned char d[DIGEST_LEN];
	char want[PATH_MAX + 64];

	snprintf(want, sizeof(want), "ledgerctl: digest: %s: No such file or directory\n", tree_a);
	cr_expect_eq(digest_tree(tree_a, d, NULL), -ENOENT);
	fflush(stderr);
	cr_expect_stderr_eq_str(want);
}

Test(digest, hex_is_lower_case)
{
	unsigned char d[DIGEST_LEN];
	char hex[2 * DIGEST_LEN + 1];
	int i;

	for (i = 0; i < DIGEST_LEN; i++)
		d[i] = (unsigned char)(i * 8 + 0xa);
	digest_hex(d, hex);
	cr_expect_str_eq(hex, "0a121a222a323a424a525a626a727a828a929aa2aab2bac2cad2dae2eaf2fa02");
}
