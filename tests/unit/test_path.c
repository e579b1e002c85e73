/*
 * test_path.c - path validation and resolution beneath the store root.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledgerfs/path.h"

static char tmp[64];
static int root = -1;

static void setup(void)
{
	char p[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "/tmp/lfs-path-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(p, sizeof(p), "%s/store", tmp);
	cr_assert_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/store/dir", tmp);
	cr_assert_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/store/dir/file", tmp);
	cr_assert_eq(close(open(p, O_CREAT | O_WRONLY, 0644)), 0);
	snprintf(p, sizeof(p), "%s/outside", tmp);
	cr_assert_eq(close(open(p, O_CREAT | O_WRONLY, 0644)), 0);
	snprintf(p, sizeof(p), "%s/store/escape", tmp);
	cr_assert_eq(symlink("..", p), 0);
	snprintf(p, sizeof(p), "%s/store/abs", tmp);
	cr_assert_eq(symlink("/etc", p), 0);
	snprintf(p, sizeof(p), "%s/store", tmp);
	root = open(p, O_PATH | O_DIRECTORY);
	cr_assert_geq(root, 0);
}

static void teardown(void)
{
	char cmd[128];

	close(root);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(path, .init = setup, .fini = teardown);

static void expect_check(const char *rel, int want)
{
	const char *why = NULL;
	int r = path_check(rel, &why);

	cr_assert_eq(r, want, "path_check(\"%s\") = %d, want %d", rel, r, want);
	if (want < 0)
		cr_assert_not_null(why, "no reason given for \"%s\"", rel);
}

Test(path, accepts_normal_paths)
{
	expect_check(".", 0);
	expect_check("a", 0);
	expect_check("a/b/c.txt", 0);
	expect_check("..a/b..", 0);
	expect_check("with\nnewline/\xff\xfe", 0);
}

Test(path, rejects_escapes_and_malformed)
{
	expect_check("", -EINVAL);
	expect_check("/etc/passwd", -EINVAL);
	expect_check("..", -EINVAL);
	expect_check("a/../../etc", -EINVAL);
	expect_check("a/./b", -EINVAL);
	expect_check("a//b", -EINVAL);
	expect_check("a/", -EINVAL);
	expect_check("./a", -EINVAL);
}

Test(path, rejects_long_names_and_paths)
{
	char name[NAME_MAX + 2];
	char *longp = malloc(PATH_MAX + 10);

	memset(name, 'x', NAME_MAX);
	name[NAME_MAX] = '\0';
	expect_check(name, 0);
	name[NAME_MAX] = 'x';
	name[NAME_MAX + 1] = '\0';
	expect_check(name, -ENAMETOOLONG);
	for (int i = 0; i < PATH_MAX + 8; i += 2) {
		longp[i] = 'a';
		longp[i + 1] = '/';
	}
	longp[PATH_MAX + 8] = '\0';
	longp[PATH_MAX + 7] = 'a';
	expect_check(longp, -ENAMETOOLONG);
	free(longp);
}

Test(path, opens_beneath_root)
{
	int fd = -1;

	cr_assert_eq(path_open(root, "dir/file", O_RDONLY, 0, &fd), 0);
	close(fd);
	cr_assert_eq(path_open(root, ".", O_PATH, 0, &fd), 0);
	close(fd);
}

Test(path, refuses_symlinks_out_of_store)
{
	int fd = -1;

	cr_assert_lt(path_open(root, "escape/outside", O_RDONLY, 0, &fd), 0);
	cr_assert_lt(path_open(root, "abs/passwd", O_RDONLY, 0, &fd), 0);
	cr_assert_lt(path_open(root, "../outside", O_RDONLY, 0, &fd), 0);
	/* The link itself can be reached, as an O_PATH handle only. */
	cr_assert_eq(path_open(root, "escape", O_PATH, 0, &fd), 0);
	close(fd);
	cr_assert_lt(path_open(root, "escape", O_RDONLY, 0, &fd), 0);
}

Test(path, parent_and_base)
{
	struct path_at at;
	struct stat st;

	cr_assert_eq(path_at_open(root, "dir/file", &at), 0);
	cr_assert_str_eq(at.base, "file");
	cr_assert_eq(fstatat(at.dirfd, at.base, &st, AT_SYMLINK_NOFOLLOW), 0);
	path_at_release(&at);
	cr_assert_eq(path_at_open(root, "top", &at), 0);
	cr_assert_eq(at.dirfd, root);
	cr_assert_str_eq(at.base, "top");
	path_at_release(&at);
	cr_assert_lt(path_at_open(root, "escape/x", &at), 0);
	cr_assert_eq(path_at_open(root, "missing/x", &at), -ENOENT);
}
