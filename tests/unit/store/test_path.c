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

#include "store/path.h"

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

Test(path, up_gives_the_parent_in_place)
{
	char p[] = "a/bb/c", top[] = "a", top_of_store[] = ".";

	path_up(p);
	cr_expect_str_eq(p, "a/bb");
	path_up(p);
	cr_expect_str_eq(p, "a");
	path_up(p);
	cr_expect_str_eq(p, ".");
	cr_expect(path_is_root(p));
	path_up(top);
	cr_expect_str_eq(top, ".");
	path_up(top_of_store);
	cr_expect_str_eq(top_of_store, ".");
}

Test(path, rejects_long_names_and_paths)
{
	char name[NAME_MAX + 2];
	char *longp = malloc(PATH_REL_MAX + 2);

	memset(name, 'x', NAME_MAX);
	name[NAME_MAX] = '\0';
	expect_check(name, 0);
	name[NAME_MAX] = 'x';
	name[NAME_MAX + 1] = '\0';
	expect_check(name, -ENAMETOOLONG);
	for (int i = 0; i < PATH_REL_MAX + 1; i += 2) {
		longp[i] = 'a';
		longp[i + 1] = '/';
	}
	/* Deeper than PATH_MAX is a valid store path; past PATH_REL_MAX it is not. */
	longp[PATH_MAX + 8] = '\0';
	longp[PATH_MAX + 7] = 'a';
	expect_check(longp, 0);
	longp[PATH_MAX + 7] = '/';
	longp[PATH_MAX + 8] = 'a';
	longp[PATH_REL_MAX] = '\0';
	longp[PATH_REL_MAX - 1] = 'a';
	expect_check(longp, 0);
	longp[PATH_REL_MAX] = 'a';
	longp[PATH_REL_MAX + 1] = '\0';
	expect_check(longp, -ENAMETOOLONG);
	free(longp);
}

/* 200-byte names: 20 of them and their slashes fit in PATH_MAX, 21 do not. */
#define DEEP_NAME_LEN 200

static void deep_name(char *name, char c)
{
	memset(name, c, DEEP_NAME_LEN);
	name[DEEP_NAME_LEN] = '\0';
}

/*
 * Make levels directories of DEEP_NAME_LEN-byte names below dir in the
 * store, with relative calls, and return their path ("dir/ddd.../ddd...").
 */
static char *make_deep(const char *dir, int levels)
{
	char name[DEEP_NAME_LEN + 1], *path = malloc(strlen(dir) + (size_t)levels * 201 + 1);
	int fd = openat(root, dir, O_PATH | O_DIRECTORY), next;

	cr_assert_not_null(path);
	cr_assert_geq(fd, 0);
	strcpy(path, dir);
	deep_name(name, 'd');
	for (int i = 0; i < levels; i++) {
		cr_assert_eq(mkdirat(fd, name, 0755), 0, "mkdir level %d: %s", i, strerror(errno));
		next = openat(fd, name, O_PATH | O_DIRECTORY);
		cr_assert_geq(next, 0);
		close(fd);
		fd = next;
		strcat(path, "/");
		strcat(path, name);
	}
	close(fd);
	return path;
}

Test(path, opens_paths_deeper_than_path_max)
{
	char *deep = make_deep("dir", 45), *file = malloc(strlen(deep) + sizeof("/missing"));
	struct path_at at;
	struct stat a, b;
	int fd = -1;

	cr_assert_gt(strlen(deep), 2 * PATH_MAX);
	sprintf(file, "%s/f", deep);
	/* Created through its parent, opened whole, and the same file both ways. */
	cr_assert_eq(path_at_open(root, file, &at), 0);
	cr_assert_str_eq(at.base, "f");
	fd = openat(at.dirfd, at.base, O_CREAT | O_EXCL | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(fstat(fd, &a), 0);
	close(fd);
	path_at_release(&at);
	cr_assert_eq(path_open(root, file, O_RDONLY, 0, &fd), 0);
	cr_assert_eq(fstat(fd, &b), 0);
	close(fd);
	cr_assert(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	cr_assert_eq(path_open(root, deep, O_RDONLY | O_DIRECTORY, 0, &fd), 0);
	close(fd);
	cr_assert_eq(path_open(root, file, O_RDONLY | O_DIRECTORY, 0, &fd), -ENOTDIR);
	sprintf(file, "%s/missing", deep);
	cr_assert_eq(path_open(root, file, O_RDONLY, 0, &fd), -ENOENT);
	free(file);
	free(deep);
}

Test(path, refuses_dotdot_in_deep_paths)
{
	char *deep = make_deep("dir", 25), *bad = malloc(strlen(deep) + 128);
	struct path_at at;
	int fd = -1;

	sprintf(bad, "%s/../file", deep);
	cr_assert_eq(path_open(root, bad, O_RDONLY, 0, &fd), -EINVAL);
	cr_assert_eq(path_at_open(root, bad, &at), -EINVAL);
	/* Far enough up to leave the store if a piece were resolved without limits. */
	strcpy(bad, deep);
	for (int i = 0; i < 30; i++)
		strcat(bad, "/..");
	cr_assert_eq(path_open(root, bad, O_RDONLY | O_DIRECTORY, 0, &fd), -EINVAL);
	sprintf(bad, "%s/./file", deep);
	cr_assert_eq(path_open(root, bad, O_RDONLY, 0, &fd), -EINVAL);
	free(bad);
	free(deep);
}

/*
 * A symlink in a deep path is refused whether it ends a piece or starts
 * one: "dir" and 19 levels take 3 + 19 * 201 bytes, so the cut falls after
 * the 21st component, which the 22nd carries past PATH_MAX.
 */
Test(path, refuses_symlinks_in_deep_paths)
{
	char *deep = make_deep("dir", 19), *bad = malloc(strlen(deep) + 3 * 256);
	char link[DEEP_NAME_LEN + 1], dir[DEEP_NAME_LEN + 1];
	int dfd = -1, sub = -1, fd = -1;

	cr_assert_eq(path_open(root, deep, O_PATH | O_DIRECTORY, 0, &dfd), 0);
	deep_name(link, 'e');
	deep_name(dir, 'd');
	cr_assert_eq(symlinkat("/", dfd, link), 0);
	cr_assert_eq(mkdirat(dfd, dir, 0755), 0);
	sub = openat(dfd, dir, O_PATH | O_DIRECTORY);
	cr_assert_geq(sub, 0);
	cr_assert_eq(symlinkat("/", sub, link), 0);
	cr_assert_eq(mkdirat(sub, "etc", 0755), 0);
	/* The link ends the first piece. */
	sprintf(bad, "%s/%s/%s/x", deep, link, dir);
	cr_assert_gt(strlen(bad), PATH_MAX);
	cr_assert_lt(path_open(root, bad, O_PATH, 0, &fd), 0);
	/* The link starts the second piece. */
	sprintf(bad, "%s/%s/%s/etc", deep, dir, link);
	cr_assert_gt(strlen(bad), PATH_MAX);
	cr_assert_lt(path_open(root, bad, O_RDONLY | O_DIRECTORY, 0, &fd), 0);
	cr_assert_lt(path_open(root, bad, O_PATH, 0, &fd), 0);
	/* The link itself, as the last component, opens as O_PATH only. */
	sprintf(bad, "%s/%s/%s", deep, dir, link);
	cr_assert_gt(strlen(bad), PATH_MAX);
	cr_assert_eq(path_open(root, bad, O_PATH, 0, &fd), 0);
	close(fd);
	cr_assert_lt(path_open(root, bad, O_RDONLY, 0, &fd), 0);
	close(sub);
	close(dfd);
	free(bad);
	free(deep);
}

Test(path, refuses_paths_over_the_hard_bound)
{
	char *longp = malloc(PATH_REL_MAX + 2);
	int fd = -1;

	for (int i = 0; i < PATH_REL_MAX + 1; i += 2) {
		longp[i] = 'a';
		longp[i + 1] = '/';
	}
	longp[PATH_REL_MAX] = 'a';
	longp[PATH_REL_MAX + 1] = '\0';
	cr_assert_eq(path_open(root, longp, O_RDONLY, 0, &fd), -ENAMETOOLONG);
	/* At the bound, the walk goes ahead (and finds nothing). */
	longp[PATH_REL_MAX] = '\0';
	longp[PATH_REL_MAX - 1] = 'a';
	cr_assert_eq(path_open(root, longp, O_RDONLY, 0, &fd), -ENOENT);
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

Test(path, fchmod_through_any_descriptor)
{
	int fd, dfd;
	struct stat st;

	/* An O_PATH descriptor of a file and of a directory, which fchmod() refuses. */
	cr_assert_eq(path_open(root, "dir/file", O_PATH, 0, &fd), 0);
	cr_assert_eq(path_fchmod(fd, 04600), 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 04600);
	close(fd);
	cr_assert_eq(path_open(root, "dir", O_PATH | O_DIRECTORY, 0, &dfd), 0);
	cr_assert_eq(path_fchmod(dfd, 0700), 0);
	cr_assert_eq(fstat(dfd, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0700);
	/* A readable descriptor takes the direct way; bits past 07777 are ignored. */
	cr_assert_eq(path_open(root, "dir/file", O_RDONLY, 0, &fd), 0);
	cr_assert_eq(path_fchmod(fd, S_IFREG | 0644), 0);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0644);
	close(fd);
	cr_assert_eq(path_fchmod(dfd, 0755), 0);
	close(dfd);
	cr_assert_eq(path_fchmod(-1, 0644), -EBADF);
}
