/*
 * fsck_copy.c - the two ways fsck.ledgerfs changes a store: copying an
 * entry from the reference store over or next to the store's, and moving
 * an entry the journal does not know into NODE_DIR/lost+found.
 *
 * A copy carries everything the tree digest and the apply engine look at:
 * contents, owner, mode, every xattr (ledgerfs's own fid and version
 * included, so the repaired entry is the object the journal talks about)
 * and, for regular files, atime and mtime.  The steps run in the order that
 * keeps each from undoing the last: contents, then owner (chown clears
 * set-id bits and file capabilities), then xattrs (an ACL rewrites mode
 * bits), then mode, then times (every other step moves them).
 *
 * Objects are reached through O_PATH descriptors opened without following
 * a final symlink, and their xattrs and modes through /proc/self/fd, as the
 * apply engine does, so a symlink planted in the store leads nowhere.  The
 * xattr calls are the following kind: the l* ones would look at the
 * /proc/self/fd link itself, which has none.
 * Nothing is ever deleted from a store: entries in the way go to
 * lost+found.  What a repair from a peer will replace is kept there by hard
 * links before the repair starts (fsck_link_lost()), so the store is whole
 * whatever point the repair reaches, and keeping a large file costs no
 * space and no copy.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "lib/files.h"
#include "fsck.h"
#include "store/path.h"

#define COPY_BUF (1u << 20)

/* llistxattr of the object at fd into *names (malloc'd, the caller frees); *len bytes. */
static int xattr_names(int fd, char **names, ssize_t *len)
{
	char proc[PATH_PROCFD_LEN];
	ssize_t n;

	*names = NULL;
	for (;;) {
		n = listxattr(path_procfd(fd, proc), NULL, 0);
		if (n < 0 && errno == ENOTSUP) {
			*len = 0;
			return 0;
		}
		if (n < 0)
			return -errno;
		free(*names);
		*names = malloc((size_t)n + 1);
		if (!*names)
			return -ENOMEM;
		n = listxattr(proc, *names, (size_t)n);
		if (n >= 0)
			break;
		if (errno != ERANGE)
			return -errno;
	}
	*len = n;
	return 0;
}

static int has_name(const char *names, ssize_t len, const char *name)
{
	for (const char *p = names; p < names + len; p += strlen(p) + 1)
		if (!strcmp(p, name))
			return 1;
	return 0;
}

/* Make the xattrs of dst exactly those of src. */
static int copy_xattrs(int src, int dst)
{
	char sproc[PATH_PROCFD_LEN], dproc[PATH_PROCFD_LEN];
	char *snames = NULL, *dnames = NULL, *val = NULL;
	ssize_t slen = 0, dlen = 0, vlen;
	const char *p;
	int r;

	path_procfd(src, sproc);
	path_procfd(dst, dproc);
	r = xattr_names(src, &snames, &slen);
	if (r == 0)
		r = xattr_names(dst, &dnames, &dlen);
	for (p = dnames; r == 0 && p < dnames + dlen; p += strlen(p) + 1)
		if (!has_name(snames, slen, p) && removexattr(dproc, p) < 0 && errno != ENODATA)
			r = -errno;
	for (p = snames; r == 0 && p < snames + slen; p += strlen(p) + 1) {
		vlen = getxattr(sproc, p, NULL, 0);
		if (vlen < 0) {
			r = -errno;
			break;
		}
		free(val);
		val = malloc((size_t)vlen + 1);
		if (!val) {
			r = -ENOMEM;
			break;
		}
		vlen = getxattr(sproc, p, val, (size_t)vlen);
		if (vlen < 0 || setxattr(dproc, p, val, (size_t)vlen, 0) < 0)
			r = -errno;
	}
	free(val);
	free(dnames);
	free(snames);
	return r;
}

/* Replace the contents of (dst_dir, dst_name) with those of (src_dir, src_name). */
static int copy_contents(int src_dir, const char *src_name, int dst_dir, const char *dst_name)
{
	char *buf = malloc(COPY_BUF);
	int in = -1, out = -1, r = 0;

	if (!buf)
		return -ENOMEM;
	in = openat(src_dir, src_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0) {
		r = -errno;
		goto out;
	}
	out = openat(dst_dir, dst_name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
	if (out < 0) {
		r = -errno;
		goto out;
	}
	for (;;) {
		ssize_t n = read(in, buf, COPY_BUF);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : 0;
			break;
		}
		r = file_write_all(out, buf, (size_t)n);
		if (r < 0)
			break;
	}
	/* The store must be as durable as the journal that describes it. */
	if (r == 0 && fsync(out) < 0)
		r = -errno;
out:
	if (out >= 0 && close(out) < 0 && r == 0)
		r = -errno;
	if (in >= 0)
		close(in);
	free(buf);
	return r;
}

int fsck_copy_over(int src_dir, const char *src_name, const struct stat *st, int dst_dir,
		   const char *dst_name)
{
	int src = -1, dst = -1, r = 0;

	if (S_ISREG(st->st_mode))
		r = copy_contents(src_dir, src_name, dst_dir, dst_name);
	if (r < 0)
		return r;
	src = openat(src_dir, src_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	dst = openat(dst_dir, dst_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (src < 0 || dst < 0) {
		r = -errno;
		goto out;
	}
	if (fchownat(dst, "", st->st_uid, st->st_gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		goto out;
	}
	r = copy_xattrs(src, dst);
	if (r < 0)
		goto out;
	if (!S_ISLNK(st->st_mode) && (r = path_fchmod(dst, st->st_mode)) < 0)
		goto out;
	if (S_ISREG(st->st_mode)) {
		struct timespec ts[2] = {st->st_atim, st->st_mtim};

		if (utimensat(dst, "", ts, AT_EMPTY_PATH) < 0)
			r = -errno;
	}
out:
	if (dst >= 0)
		close(dst);
	if (src >= 0)
		close(src);
	return r;
}

int fsck_copy_new(int src_dir, const char *src_name, const struct stat *st, int dst_dir,
		  const char *dst_name)
{
	char target[PATH_MAX];
	ssize_t n;
	int fd, r;

	switch (st->st_mode & S_IFMT) {
	case S_IFREG:
		fd = openat(dst_dir, dst_name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
			    0600);
		if (fd < 0)
			return -errno;
		close(fd);
		break;
	case S_IFDIR:
		if (mkdirat(dst_dir, dst_name, 0700) < 0)
			return -errno;
		break;
	case S_IFLNK:
		n = readlinkat(src_dir, src_name, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = '\0';
		if (symlinkat(target, dst_dir, dst_name) < 0)
			return -errno;
		break;
	default:
		if (mknodat(dst_dir, dst_name, (st->st_mode & S_IFMT) | 0600, st->st_rdev) < 0)
			return -errno;
		break;
	}
	r = fsck_copy_over(src_dir, src_name, st, dst_dir, dst_name);
	/* Only what was made here is removed again: an entry half copied helps nobody. */
	if (r < 0)
		unlinkat(dst_dir, dst_name, S_ISDIR(st->st_mode) ? AT_REMOVEDIR : 0);
	return r;
}

/* Make NODE_DIR/lost+found/<time> for this run; a second run in the same second gets -N. */
static int lost_dir(struct fsck *f)
{
	char stamp[32], base[PATH_MAX + 16];
	time_t now = time(NULL);
	struct tm tm;

	snprintf(base, sizeof(base), "%s/%s", f->real, FSCK_LOST_FOUND);
	if (mkdir(base, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (!localtime_r(&now, &tm) || !strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm))
		return -EINVAL;
	for (int i = 0; i < 100; i++) {
		char *p;

		if ((i ? asprintf(&p, "%s/%s-%d", base, stamp, i)
		       : asprintf(&p, "%s/%s", base, stamp)) < 0)
			return -ENOMEM;
		if (mkdir(p, 0700) == 0) {
			f->lost = p;
			return 0;
		}
		free(p);
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/*
 * Open the directory of rel's parent inside this run's lost+found, making
 * it and the directories on the way, so that an entry keeps its place in
 * the tree.  *dir is the caller's to close; *base points into rel.
 */
static int lost_parent(struct fsck *f, const char *rel, int *dir, const char **base)
{
	const char *p = rel, *slash;
	int fd, r;

	if (!f->lost && (r = lost_dir(f)) < 0)
		return r;
	fd = open(f->lost, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while ((slash = strchr(p, '/'))) {
		char name[NAME_MAX + 1];
		size_t n = (size_t)(slash - p);
		int next;

		if (n > NAME_MAX) {
			close(fd);
			return -ENAMETOOLONG;
		}
		memcpy(name, p, n);
		name[n] = '\0';
		if (mkdirat(fd, name, 0700) < 0 && errno != EEXIST) {
			r = -errno;
			close(fd);
			return r;
		}
		next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = -errno;
		close(fd);
		if (next < 0)
			return r;
		fd = next;
		p = slash + 1;
	}
	*dir = fd;
	*base = p;
	return 0;
}

int fsck_move_lost(struct fsck *f, int store_root, const char *rel)
{
	struct path_at at = {.dirfd = -1};
	const char *base;
	int dir = -1, r;

	r = lost_parent(f, rel, &dir, &base);
	if (r == 0)
		r = path_at_open(store_root, rel, &at);
	if (r == 0 && renameat(at.dirfd, at.base, dir, base) < 0)
		r = -errno;
	path_at_release(&at);
	if (dir >= 0)
		close(dir);
	return r;
}

/*
 * Keep (src_dir, src_name), whose stat is st, as (dst_dir, dst_name): a hard
 * link of a non-directory (a copy on another filesystem), a directory made
 * anew with the same owner, mode and xattrs and its entries kept the same way.
 */
static int link_tree(int src_dir, const char *src_name, const struct stat *st, int dst_dir,
		     const char *dst_name)
{
	int sfd = -1, dfd = -1, r;
	DIR *d = NULL;
	struct dirent *de;

	if (!S_ISDIR(st->st_mode)) {
		if (linkat(src_dir, src_name, dst_dir, dst_name, 0) == 0)
			return 0;
		if (errno != EXDEV)
			return -errno;
		return fsck_copy_new(src_dir, src_name, st, dst_dir, dst_name);
	}
	r = fsck_copy_new(src_dir, src_name, st, dst_dir, dst_name);
	if (r < 0)
		return r;
	sfd = openat(src_dir, src_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	dfd = openat(dst_dir, dst_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0 || dfd < 0) {
		r = -errno;
		goto out;
	}
	d = fdopendir(sfd);
	if (!d) {
		r = -errno;
		goto out;
	}
	sfd = -1; /* d owns it */
	for (errno = 0; r == 0 && (de = readdir(d)); errno = 0) {
		struct stat es;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &es, AT_SYMLINK_NOFOLLOW) < 0)
			r = -errno;
		else
			r = link_tree(dirfd(d), de->d_name, &es, dfd, de->d_name);
	}
	if (r == 0 && errno)
		r = -errno;
out:
	if (d)
		closedir(d);
	if (sfd >= 0)
		close(sfd);
	if (dfd >= 0)
		close(dfd);
	return r;
}

/* Keep the store entry rel in lost+found through keep(), which gets its stat. */
static int keep_lost(struct fsck *f, int store_root, const char *rel,
		     int (*keep)(int src_dir, const char *src_name, const struct stat *st,
				 int dst_dir, const char *dst_name))
{
	struct path_at at = {.dirfd = -1};
	const char *base;
	struct stat st;
	int dir = -1, r;

	r = lost_parent(f, rel, &dir, &base);
	if (r == 0)
		r = path_at_open(store_root, rel, &at);
	if (r == 0 && fstatat(at.dirfd, at.base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	if (r == 0)
		r = keep(at.dirfd, at.base, &st, dir, base);
	path_at_release(&at);
	if (dir >= 0)
		close(dir);
	return r;
}

int fsck_save_lost(struct fsck *f, int store_root, const char *rel)
{
	return keep_lost(f, store_root, rel, fsck_copy_new);
}

int fsck_link_lost(struct fsck *f, int store_root, const char *rel)
{
	return keep_lost(f, store_root, rel, link_tree);
}
