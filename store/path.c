/*
 * path.c - openat2-based resolution beneath the store root (see path.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "store/path.h"

#define PATH_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

int path_is_root(const char *rel)
{
	return rel && strcmp(rel, PATH_ROOT) == 0;
}

void path_up(char *p)
{
	char *slash = strrchr(p, '/');

	if (slash)
		*slash = '\0';
	else
		strcpy(p, PATH_ROOT);
}

/*
 * Check the components of the len bytes at rel: none empty, "." or "..",
 * none over NAME_MAX.  0, -EINVAL or -ENAMETOOLONG with *why set.
 */
static int check_components(const char *rel, size_t len, const char **why)
{
	const char *p, *start = rel, *end = rel + len;
	size_t n;

	for (p = rel;; p++) {
		if (p < end && *p != '/')
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
		if (p == end)
			return 0;
		start = p + 1;
	}
}

int path_check(const char *rel, const char **why)
{
	size_t len;

	if (!rel || !*rel) {
		*why = "empty path";
		return -EINVAL;
	}
	if (path_is_root(rel))
		return 0;
	len = strlen(rel);
	if (len > PATH_REL_MAX) {
		*why = "path longer than 65535 bytes";
		return -ENAMETOOLONG;
	}
	if (rel[0] == '/') {
		*why = "absolute path";
		return -EINVAL;
	}
	return check_components(rel, len, why);
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

/*
 * Open the first len bytes of rel beneath root.  openat2() takes less than
 * PATH_MAX bytes, so a longer path is cut at slashes into pieces that fit,
 * each resolved beneath the directory the previous one reached, with the
 * same restrictions: no piece can leave its starting directory, so the
 * whole stays beneath root.  Its components are checked first as
 * path_check() does, so that no piece even climbs within itself.
 */
static int open_beneath(int root, const char *rel, size_t len, int flags, mode_t mode)
{
	char piece[PATH_MAX];
	const char *p = rel, *end = rel + len, *name, *why;
	int dir = root, fd, last;
	size_t n;

	if (len > PATH_REL_MAX)
		return -ENAMETOOLONG;
	if (len >= PATH_MAX && (fd = check_components(rel, len, &why)) < 0)
		return fd;
	for (;;) {
		n = (size_t)(end - p);
		last = n < PATH_MAX;
		if (!last) {
			/* Components are at most NAME_MAX bytes: a slash is near the cut. */
			for (n = PATH_MAX - 1; n > 0 && p[n] != '/'; n--)
				;
			if (n == 0) {
				fd = -ENAMETOOLONG;
				break;
			}
		}
		/* rel[len] is readable: the string's NUL or the slash before a base name. */
		if (last && p[n] == '\0') {
			name = p;
		} else {
			memcpy(piece, p, n);
			piece[n] = '\0';
			name = piece;
		}
		fd = last ? openat2_beneath(dir, name, flags, mode)
			  : openat2_beneath(dir, name, O_PATH | O_DIRECTORY, 0);
		if (fd < 0 || last)
			break;
		if (dir != root)
			close(dir);
		dir = fd;
		p += n + 1;
	}
	if (dir != root)
		close(dir);
	return fd;
}

int path_open(int root, const char *rel, int flags, mode_t mode, int *fd)
{
	int r = open_beneath(root, rel, strlen(rel), flags, mode);

	if (r < 0)
		return r;
	*fd = r;
	return 0;
}

int path_at_open(int root, const char *rel, struct path_at *at)
{
	const char *slash = strrchr(rel, '/');
	int r;

	if (!slash) {
		at->dirfd = root;
		at->owned = 0;
		at->base = rel;
		return 0;
	}
	/* Readable, not O_PATH: the apply engine reads and sets the directory's xattrs through it.
	 */
	r = open_beneath(root, rel, (size_t)(slash - rel), O_RDONLY | O_DIRECTORY, 0);
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

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* the same on every architecture */
#endif

int path_fchmod(int fd, mode_t mode)
{
	/* Cleared once the kernel says it has no fchmodat2, or no AT_EMPTY_PATH for it. */
	static atomic_bool have_fchmodat2 = true;
	char proc[PATH_PROCFD_LEN];

	mode &= 07777;
	if (fchmod(fd, mode) == 0)
		return 0;
	if (errno != EBADF)
		return -errno;
	if (atomic_load_explicit(&have_fchmodat2, memory_order_relaxed)) {
		if (syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH) == 0)
			return 0;
		if (errno != ENOSYS && errno != EINVAL)
			return -errno;
		atomic_store_explicit(&have_fchmodat2, false, memory_order_relaxed);
	}
	if (chmod(path_procfd(fd, proc), mode) == 0)
		return 0;
	/* A descriptor that is not open has no /proc entry: say so as fchmod() would. */
	if (errno == ENOENT && fcntl(fd, F_GETFD) < 0)
		return -EBADF;
	return -errno;
}
