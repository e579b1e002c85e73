/*
 * inodes.c - the kernel-visible object table (see inodes.h).
 *
 * FUSE inode numbers are the addresses of struct lfs_inode, as in libfuse's
 * passthrough_ll, so no second map is needed from number to object; the
 * hash on the store's inode number finds an object already known when
 * another name of it is looked up.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "ledgerfs/inodes.h"
#include "ledgerfs/path.h"

#define DELETED_SUFFIX " (deleted)"

static size_t bucket_of(const struct inode_table *t, ino_t ino, dev_t dev)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev;

	return (size_t)(h >> 17) % t->nbuckets;
}

int inodes_init(struct inode_table *t, int root_fd)
{
	char proc[PATH_PROCFD_LEN], buf[PATH_MAX];
	struct stat st;
	ssize_t n;

	memset(t, 0, sizeof(*t));
	if (fstat(root_fd, &st) < 0)
		return -errno;
	n = readlink(path_procfd(root_fd, proc), buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	t->root_path = strdup(buf);
	if (!t->root_path)
		return -ENOMEM;
	t->root_len = (size_t)n;
	t->nbuckets = 4096;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t->root_path);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->root.ino = st.st_ino;
	t->root.dev = st.st_dev;
	t->root.fd = root_fd;
	t->root.nlookup = 2;
	return 0;
}

void inodes_destroy(struct inode_table *t)
{
	for (size_t i = 0; t->buckets && i < t->nbuckets; i++) {
		struct lfs_inode *in = t->buckets[i], *next;

		for (; in; in = next) {
			next = in->next;
			close(in->fd);
			free(in);
		}
	}
	free(t->buckets);
	free(t->root_path);
	pthread_mutex_destroy(&t->lock);
}

struct lfs_inode *inodes_get(struct inode_table *t, uint64_t nodeid)
{
	if (nodeid == FUSE_ROOT_ID)
		return &t->root;
	return (struct lfs_inode *)(uintptr_t)nodeid;
}

uint64_t inodes_nodeid(struct inode_table *t, struct lfs_inode *in)
{
	return in == &t->root ? FUSE_ROOT_ID : (uint64_t)(uintptr_t)in;
}

/* Double the buckets when the table gets crowded; called with the lock held. */
static void grow(struct inode_table *t)
{
	size_t old = t->nbuckets, i;
	struct lfs_inode **nb = calloc(old * 2, sizeof(*nb));

	if (!nb)
		return;
	t->nbuckets = old * 2;
	for (i = 0; i < old; i++) {
		struct lfs_inode *in = t->buckets[i], *next;

		for (; in; in = next) {
			size_t b = bucket_of(t, in->ino, in->dev);

			next = in->next;
			in->next = nb[b];
			nb[b] = in;
		}
	}
	free(t->buckets);
	t->buckets = nb;
}

/* True if the name the descriptor was opened through has been removed. */
static int name_gone(int fd)
{
	char proc[PATH_PROCFD_LEN], buf[PATH_MAX];
	size_t slen = strlen(DELETED_SUFFIX);
	ssize_t n = readlink(path_procfd(fd, proc), buf, sizeof(buf) - 1);

	if (n < 0)
		return 0;
	buf[n] = '\0';
	return (size_t)n > slen && strcmp(buf + n - slen, DELETED_SUFFIX) == 0;
}

/*
 * A hard-linked object whose descriptor was opened through a name that has
 * since been removed can no longer tell its path; a fresh lookup through
 * another name gives it a live descriptor again.  dup2() swaps it in place
 * so that no reader ever sees the number closed.  Consumes fd.
 */
static void refresh_fd(struct inode_table *t, struct lfs_inode *in, int fd, const struct stat *st)
{
	if (st->st_nlink > 1 && name_gone(in->fd))
		dup2(fd, in->fd);
	close(fd);
}

int inodes_touch(struct inode_table *t, const struct stat *st, uint64_t *nodeid)
{
	struct lfs_inode *in;

	if (st->st_ino == t->root.ino && st->st_dev == t->root.dev) {
		t->root.ids_cached = 0;
		*nodeid = FUSE_ROOT_ID;
		return 0;
	}
	pthread_mutex_lock(&t->lock);
	for (in = t->buckets[bucket_of(t, st->st_ino, st->st_dev)]; in; in = in->next)
		if (in->ino == st->st_ino && in->dev == st->st_dev)
			break;
	if (in) {
		in->ids_cached = 0;
		*nodeid = inodes_nodeid(t, in);
	}
	pthread_mutex_unlock(&t->lock);
	return in ? 0 : -ENOENT;
}

int inodes_lookup_fd(struct inode_table *t, int fd, const struct stat *st, struct lfs_inode **out)
{
	struct lfs_inode *in;
	size_t b;

	if (st->st_ino == t->root.ino && st->st_dev == t->root.dev) {
		close(fd);
		*out = &t->root;
		return 0;
	}
	pthread_mutex_lock(&t->lock);
	b = bucket_of(t, st->st_ino, st->st_dev);
	for (in = t->buckets[b]; in; in = in->next)
		if (in->ino == st->st_ino && in->dev == st->st_dev)
			break;
	if (in) {
		in->nlookup++;
		refresh_fd(t, in, fd, st);
	} else {
		in = calloc(1, sizeof(*in));
		if (!in) {
			pthread_mutex_unlock(&t->lock);
			close(fd);
			return -ENOMEM;
		}
		in->ino = st->st_ino;
		in->dev = st->st_dev;
		in->fd = fd;
		in->nlookup = 1;
		in->next = t->buckets[b];
		t->buckets[b] = in;
		if (++t->count > t->nbuckets)
			grow(t);
	}
	pthread_mutex_unlock(&t->lock);
	*out = in;
	return 0;
}

size_t inodes_count(struct inode_table *t)
{
	size_t n;

	pthread_mutex_lock(&t->lock);
	n = t->count;
	pthread_mutex_unlock(&t->lock);
	return n;
}

void inodes_forget(struct inode_table *t, uint64_t nodeid, uint64_t n)
{
	struct lfs_inode *in = inodes_get(t, nodeid), **pp;

	if (in == &t->root)
		return;
	pthread_mutex_lock(&t->lock);
	in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
	if (in->nlookup == 0) {
		for (pp = &t->buckets[bucket_of(t, in->ino, in->dev)]; *pp; pp = &(*pp)->next) {
			if (*pp == in) {
				*pp = in->next;
				break;
			}
		}
		t->count--;
		close(in->fd);
		free(in);
	}
	pthread_mutex_unlock(&t->lock);
}

/* Strip the store root from an absolute path; -ENOENT if it is not beneath it. */
static int strip_root(struct inode_table *t, const char *abs, char *buf)
{
	const char *rest;

	if (strncmp(abs, t->root_path, t->root_len) != 0)
		return -ENOENT;
	rest = abs + t->root_len;
	if (*rest == '\0') {
		strcpy(buf, PATH_ROOT);
		return 0;
	}
	if (t->root_len == 1)
		rest = abs + 1;
	else if (*rest == '/')
		rest++;
	else
		return -ENOENT;
	memmove(buf, rest, strlen(rest) + 1);
	return 0;
}

/*
 * Depth-first search beneath dir (whose store path is the first len bytes
 * of buf) for a name of inode ino; on success buf holds its path.
 */
static int find_ino(int dir, ino_t ino, char *buf, size_t len, int depth)
{
	int fd = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int r = -ENOENT;

	if (fd < 0 || depth > PATH_MAX / 2)
		return fd < 0 ? -errno : -ENOENT;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while (r == -ENOENT && (de = readdir(d))) {
		size_t n = strlen(de->d_name);
		int sub;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (len + n + 2 >= PATH_MAX)
			continue;
		if (len)
			buf[len] = '/';
		memcpy(buf + len + (len ? 1 : 0), de->d_name, n + 1);
		if (de->d_ino == ino) {
			r = 0;
			break;
		}
		if (de->d_type != DT_DIR)
			continue;
		sub = openat(dirfd(d), de->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		r = find_ino(sub, ino, buf, len + n + (len ? 1 : 0), depth + 1);
		close(sub);
	}
	closedir(d);
	if (r < 0)
		buf[len] = '\0';
	return r;
}

/*
 * The object at fd lost the name it was opened through but still has
 * others: find one in the store and make fd refer to it.
 */
static int relink_fd(struct inode_table *t, int fd, char *buf)
{
	struct stat st;
	int nfd, r;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_nlink == 0)
		return -ENOENT;
	buf[0] = '\0';
	r = find_ino(t->root.fd, st.st_ino, buf, 0, 0);
	if (r < 0)
		return r;
	nfd = openat(t->root.fd, buf, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	dup2(nfd, fd);
	close(nfd);
	return 0;
}

int path_of_fd(struct inode_table *t, int fd, char *buf)
{
	char proc[PATH_PROCFD_LEN];
	size_t slen = strlen(DELETED_SUFFIX);
	ssize_t n;
	int r;

	n = readlink(path_procfd(fd, proc), buf, PATH_MAX - 1);
	if (n < 0)
		return -errno;
	if (n >= PATH_MAX - 1)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	if ((size_t)n > slen && strcmp(buf + n - slen, DELETED_SUFFIX) == 0) {
		/*
		 * Either the name is gone or it really ends that way: only
		 * the second kind still reaches this object by that path.
		 */
		struct stat a, b;

		if (fstat(fd, &a) < 0 || a.st_nlink == 0)
			return -ENOENT;
		if (lstat(buf, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			return relink_fd(t, fd, buf);
	}
	r = strip_root(t, buf, buf);
	return r;
}

int path_of_child(struct inode_table *t, struct lfs_inode *dir, const char *name, char *buf)
{
	size_t len, nlen = strlen(name);
	int r;

	if (nlen > NAME_MAX)
		return -ENAMETOOLONG;
	if (dir == &t->root) {
		if (nlen >= PATH_MAX)
			return -ENAMETOOLONG;
		memcpy(buf, name, nlen + 1);
		return 0;
	}
	r = path_of_fd(t, dir->fd, buf);
	if (r < 0)
		return r;
	len = strlen(buf);
	if (len + 1 + nlen >= PATH_MAX)
		return -ENAMETOOLONG;
	buf[len] = '/';
	memcpy(buf + len + 1, name, nlen + 1);
	return 0;
}
