/*
 * tree.c - building and removing test trees for the unit tests.
 */
#include "tree.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

void tree_remove(const char *path)
{
	char cmd[PATH_MAX + 32];

	cr_assert_lt(snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", path), (int)sizeof(cmd));
	cr_expect_eq(system(cmd), 0, "rm -rf %s", path);
}

void tree_at(char *out, const char *root, const char *rel)
{
	cr_assert_lt(snprintf(out, PATH_MAX, "%s/%s", root, rel), PATH_MAX);
}

void tree_put_file(const char *root, const char *rel, const char *data)
{
	char p[PATH_MAX];
	int fd;

	tree_at(p, root, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data), "%s", p);
	cr_assert_eq(close(fd), 0, "%s", p);
}

/* chmod after mkdir: the umask must not decide the mode a test asked for. */
void tree_make_dir(const char *root, const char *rel, mode_t mode)
{
	char p[PATH_MAX];

	tree_at(p, root, rel);
	cr_assert_eq(mkdir(p, mode), 0, "%s: %s", p, strerror(errno));
	cr_assert_eq(chmod(p, mode), 0, "%s", p);
}

void tree_make_chain(const char *dir, const char *name, int levels)
{
	int fd = open(dir, O_PATH | O_DIRECTORY), sub;

	cr_assert_geq(fd, 0, "%s: %s", dir, strerror(errno));
	for (int i = 0; i < levels; i++) {
		cr_assert_eq(mkdirat(fd, name, 0755), 0, "%s: level %d: %s", dir, i,
			     strerror(errno));
		sub = openat(fd, name, O_PATH | O_DIRECTORY);
		cr_assert_geq(sub, 0, "%s: level %d: %s", dir, i, strerror(errno));
		close(fd);
		fd = sub;
	}
	close(fd);
}

void tree_make_symlink(const char *root, const char *rel, const char *target)
{
	char p[PATH_MAX];

	tree_at(p, root, rel);
	cr_assert_eq(symlink(target, p), 0, "%s: %s", p, strerror(errno));
}

void tree_set_mtime(const char *root, const char *rel, time_t sec, long nsec)
{
	struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
	char p[PATH_MAX];

	tree_at(p, root, rel);
	cr_assert_eq(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0, "%s: %s", p,
		     strerror(errno));
}

void tree_xset(const char *root, const char *rel, const char *name, const void *v, size_t n)
{
	char p[PATH_MAX];

	tree_at(p, root, rel);
	cr_assert_eq(lsetxattr(p, name, v, n, 0), 0, "%s %s: %s", p, name, strerror(errno));
}

void tree_xset_str(const char *root, const char *rel, const char *name, const char *v)
{
	tree_xset(root, rel, name, v, strlen(v));
}
