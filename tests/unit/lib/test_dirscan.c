/*
 * test_dirscan.c - lib/dirscan.c: every entry but "." and ".." once, by
 * name or with its d_ino and d_type, the first nonzero return ending the
 * scan, and each scan starting over.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/dirscan.h"
#include "tree.h"

static char root[] = "/tmp/test_dirscan.XXXXXX";
static int rootfd = -1;

static void setup(void)
{
	cr_assert_not_null(mkdtemp(root));
	tree_put_file(root, "f", "x");
	tree_make_dir(root, "d", 0755);
	tree_make_symlink(root, "l", "f");
	rootfd = open(root, O_RDONLY | O_DIRECTORY);
	cr_assert_geq(rootfd, 0);
}

static void teardown(void)
{
	close(rootfd);
	tree_remove(root);
}

TestSuite(dirscan, .init = setup, .fini = teardown);

/* The names seen, as a bit each: f 1, d 2, l 4; anything else 8. */
static int note_name(int dfd, const char *name, void *arg)
{
	int *seen = arg;
	int bit = !strcmp(name, "f") ? 1 : !strcmp(name, "d") ? 2 : !strcmp(name, "l") ? 4 : 8;

	cr_expect_eq(dfd, rootfd);
	cr_expect_not(*seen & bit, "%s seen twice", name);
	*seen |= bit;
	return 0;
}

Test(dirscan, calls_for_each_entry_but_dot_and_dotdot)
{
	int seen = 0;

	cr_assert_eq(dir_scan(rootfd, note_name, &seen), 0);
	cr_expect_eq(seen, 7);
	seen = 0;
	cr_assert_eq(dir_scan(rootfd, note_name, &seen), 0, "a second scan starts over");
	cr_expect_eq(seen, 7);
}

static int check_entry(int dfd, const struct dirent *de, void *arg)
{
	int *n = arg;
	struct stat st;

	cr_assert_eq(fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW), 0);
	cr_expect_eq(de->d_ino, st.st_ino, "%s", de->d_name);
	if (de->d_type != DT_UNKNOWN)
		cr_expect_eq(de->d_type, IFTODT(st.st_mode), "%s", de->d_name);
	(*n)++;
	return 0;
}

Test(dirscan, hands_the_entries_with_their_inode_and_type)
{
	int n = 0;

	cr_assert_eq(dir_scan_entries(rootfd, check_entry, &n), 0);
	cr_expect_eq(n, 3);
}

static int stop_at_d(int dfd, const char *name, void *arg)
{
	int *calls = arg;

	(*calls)++;
	return strcmp(name, "d") ? 0 : -EXDEV;
}

Test(dirscan, ends_at_the_first_nonzero_return)
{
	int calls = 0;

	cr_expect_eq(dir_scan(rootfd, stop_at_d, &calls), -EXDEV);
	cr_expect_leq(calls, 3);
	cr_expect_geq(calls, 1);
}

Test(dirscan, fails_with_errno_when_the_directory_cannot_be_read)
{
	int fd = openat(rootfd, "f", O_RDONLY), seen = 0;

	cr_assert_geq(fd, 0);
	cr_expect_eq(dir_scan(fd, note_name, &seen), -ENOTDIR);
	cr_expect_eq(dir_scan(-1, note_name, &seen), -EBADF);
	cr_expect_eq(seen, 0);
	close(fd);
}
