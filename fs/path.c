/*
 * path.c - openat2-based resolution beneath the store root (see path.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ledgerfs/path.h"

#define PATH_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

int path_is_root(const char *rel)
{
	return rel && strcmp(rel, PATH_ROOT) == 0;
}

int path_check(const char *rel, const char **why)
{
	const char *p, *start;
	size_t n;

	if (!rel || !*rel) {
		*why = "empty path";
		return -EINVAL;
	}
	if (path_is_root(rel))
		return 0;
	if (strlen(rel) >= PATH_MAX) {
		*why = "path longer than PATH_MAX";
		return -ENAMETOOLONG;
	}
	if (rel[0] == '/') {
		*why = "absolute path";
		return -EINVAL;
	}
	start = rel;
	for (p = rel;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		n = (size_t)(p - start);
		if (n == 0) {
			*why = "empty path component";
			return -EINVAL;
		}
		if (n > NAME_MAX) {
			*why = "path component longer than NAME_MAX";
			return -ENAMETOOLONG;
		}
		if ((n == 1 && start[0] == '.') || (n == 2 && start[0] == '.' && start[1] == '.')) {
			*why = "'.' or '..' path component";
			return -EINVAL;
		}
		if (*p == '\0')
			return 0;
		start = p + 1;
	}
}

/*
 * The same resolution one component at a time, for kernels (and tools such
 * as valgrind 3.19) without openat2: every component is opened with
 * O_NOFOLLOW relative to the previous one, and "." / ".." are refused, so
 * the walk can neither follow a symlink nor climb out of root.
 */
static int walk_beneath(int root, const char *rel, int flags, mode_t mode)
{
	char comp[NAME_MAX + 1];
	const char *p = rel, *slash;
	int dir = root, fd, r = 0;
	size_t n;

	if (path_is_root(rel)) {
		fd = openat(root, ".", flags | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	for (;;) {
		slash = strchr(p, '/');
		n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || n > NAME_MAX) {
			r = n ? -ENAMETOOLONG : -EINVAL;
			break;
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		if (!strcmp(comp, ".") || !strcmp(comp, "..")) {
			r = -EXDEV;
			break;
		}
		if (slash)
			fd = openat(dir, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		else
			fd = openat(dir, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
		if (fd < 0) {
			r = -errno;
			break;
		}
		if (dir != root)
			close(dir);
		dir = fd;
		if (!slash)
			return fd;
		p = slash + 1;
	}
	if (dir != root)
		close(dir);
	return r;
}

static int openat2_beneath(int root, const char *rel, int flags, mode_t mode)
{
	static int no_openat2;
	struct open_how how = {
	    .flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC),
	    .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
	    .resolve = PATH_RESOLVE,
	};
	long fd;

	if (no_openat2)
		return walk_beneath(root, rel, flags, mode);
	do
		fd = syscall(SYS_openat2, root, rel, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	if (fd < 0 && errno == ENOSYS) {
		no_openat2 = 1;
		return walk_beneath(root, rel, flags, mode);
	}
	return fd < 0 ? -errno : (int)fd;
}

int path_open(int root, const char *rel, int flags, mode_t mode, int *fd)
{
	int r = openat2_beneath(root, rel, flags, mode);

	if (r < 0)
		return r;
	*fd = r;
	return 0;
}

int path_at_open(int root, const char *rel, struct path_at *at)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(rel, '/');
	size_t n;
	int r;

	if (!slash) {
		at->dirfd = root;
		at->owned = 0;
		at->base = rel;
		return 0;
	}
	n = (size_t)(slash - rel);
	if (n >= sizeof(parent))
		return -ENAMETOOLONG;
	memcpy(parent, rel, n);
	parent[n] = '\0';
	/* Readable, not O_PATH: the apply engine reads and sets the directory's xattrs through it.
	 */
	r = openat2_beneath(root, parent, O_RDONLY | O_DIRECTORY, 0);
	if (r < 0)
		return r;
	at->dirfd = r;
	at->owned = 1;
	at->base = slash + 1;
	return 0;
}

void path_at_release(struct path_at *at)
{
	if (at->owned && at->dirfd >= 0)
		close(at->dirfd);
	at->dirfd = -1;
	at->owned = 0;
}

const char *path_procfd(int fd, char *buf)
{
	snprintf(buf, PATH_PROCFD_LEN, "/proc/self/fd/%d", fd);
	return buf;
}
