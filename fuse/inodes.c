/*
 * inodes.c - the kernel-visible object table (see inodes.h).
 *
 * FUSE inode numbers are the addresses of struct lfs_inode, as in libfuse's
 * passthrough_ll, so no second map is needed from number to object; the
 * hash on the store's inode number finds an object already known when
 * another name of it is looked up.
 *
 * Paths come from /proc/self/fd when it can tell them, which costs one
 * readlink.  Past PATH_MAX it cannot, and the slow ways take over: climbing
 * ".." from a directory, one readdir per level until an ancestor is short
 * enough for /proc, and for a file its remembered name, or as a last resort
 * a search of the store.  Only deep trees pay for them.
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

#include "fuse/inodes.h"
#include "lib/dirscan.h"
#include "lib/relpath.h"
#include "store/path.h"

#define DELETED_SUFFIX " (deleted)"

static size_t bucket_of(const struct inode_table *t, ino_t ino, dev_t dev)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev;

	return (size_t)(h >> 17) % t->nbuckets;
}

int inodes_init(struct inode_table *t, struct store *store)
{
	char proc[PATH_PROCFD_LEN], buf[PATH_MAX];
	int root_fd = store->root;
	struct stat st;
	ssize_t n;

	memset(t, 0, sizeof(*t));
	t->store = store;
	if (fstat(root_fd, &st) < 0)
		return -errno;
	/* A root too deep for /proc leaves every path to the slow ways. */
	n = readlink(path_procfd(root_fd, proc), buf, sizeof(buf) - 1);
	if (n < 0 && errno != ENAMETOOLONG)
		return -errno;
	if (n >= 0 && n < (ssize_t)sizeof(buf) - 1) {
		buf[n] = '\0';
		t->root_path = strdup(buf);
		if (!t->root_path)
			return -ENOMEM;
		t->root_len = (size_t)n;
	}
	t->nbuckets = 4096;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t->root_path);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->root.wlock, NULL);
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
			free(in->name);
			free(in->path);
			pthread_mutex_destroy(&in->wlock);
			free(in);
		}
	}
	free(t->buckets);
	pthread_mutex_destroy(&t->root.wlock);
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

/* The object (dev, ino) if the table holds it, the root included; table lock held. */
static struct lfs_inode *find_locked(struct inode_table *t, dev_t dev, ino_t ino)
{
	struct lfs_inode *in;

	if (ino == t->root.ino && dev == t->root.dev)
		return &t->root;
	for (in = t->buckets[bucket_of(t, ino, dev)]; in; in = in->next)
		if (in->ino == ino && in->dev == dev)
			break;
	return in;
}

/*
 * Remember name in directory (pdev, pino) as non-directory in's name;
 * table lock held.  Only a hint, checked before use: on no memory the old
 * one stays.
 */
static void set_name_locked(struct lfs_inode *in, dev_t pdev, ino_t pino, const char *name)
{
	char *copy;

	if (in->name && in->pdev == pdev && in->pino == pino && strcmp(in->name, name) == 0)
		return;
	copy = strdup(name);
	if (!copy)
		return;
	free(in->name);
	in->name = copy;
	in->pdev = pdev;
	in->pino = pino;
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
	in = find_locked(t, st->st_dev, st->st_ino);
	if (in) {
		in->ids_cached = 0;
		*nodeid = inodes_nodeid(t, in);
	}
	pthread_mutex_unlock(&t->lock);
	return in ? 0 : -ENOENT;
}

int inodes_lookup_fd(struct inode_table *t, struct lfs_inode *parent, const char *name, int fd,
		     const struct stat *st, struct lfs_inode **out)
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
	in = find_locked(t, st->st_dev, st->st_ino);
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
		pthread_mutex_init(&in->wlock, NULL);
		in->ino = st->st_ino;
		in->dev = st->st_dev;
		in->fd = fd;
		in->nlookup = 1;
		in->next = t->buckets[b];
		t->buckets[b] = in;
		if (++t->count > t->nbuckets)
			grow(t);
	}
	if (!S_ISDIR(st->st_mode))
		set_name_locked(in, parent->dev, parent->ino, name);
	pthread_mutex_unlock(&t->lock);
	*out = in;
	return 0;
}

void inodes_moved(struct inode_table *t, struct lfs_inode *dir, const char *name)
{
	struct lfs_inode *in;
	struct stat st;

	if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
		return;
	pthread_mutex_lock(&t->lock);
	in = find_locked(t, st.st_dev, st.st_ino);
	if (in && in != &t->root)
		set_name_locked(in, dir->dev, dir->ino, name);
	pthread_mutex_unlock(&t->lock);
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
		free(in->name);
		free(in->path);
		pthread_mutex_destroy(&in->wlock);
		free(in);
	}
	pthread_mutex_unlock(&t->lock);
}

/* Strip the store root from an absolute path; 1 if it is not beneath it. */
static int strip_root(struct inode_table *t, const char *abs, char *buf)
{
	const char *rest;

	if (strncmp(abs, t->root_path, t->root_len) != 0)
		return 1;
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
		return 1;
	memmove(buf, rest, strlen(rest) + 1);
	return 0;
}

/*
 * The store path of the object at fd as /proc/self/fd tells it, into buf
 * (PATH_MAX bytes).  0; 1 when /proc cannot tell (the absolute path is
 * past PATH_MAX, or the store root's is unknown); -ENOENT when the name fd
 * was opened through is gone; another negative errno.
 */
static int proc_path(struct inode_table *t, int fd, char *buf)
{
	char proc[PATH_PROCFD_LEN];
	size_t slen = strlen(DELETED_SUFFIX);
	ssize_t n;

	if (!t->root_path)
		return 1;
	n = readlink(path_procfd(fd, proc), buf, PATH_MAX - 1);
	if (n < 0)
		return errno == ENAMETOOLONG ? 1 : -errno;
	if (n >= PATH_MAX - 1)
		return 1;
	buf[n] = '\0';
	if ((size_t)n > slen && strcmp(buf + n - slen, DELETED_SUFFIX) == 0) {
		/*
		 * Either the name is gone or it really ends that way: only
		 * the second kind still reaches this object by that path.
		 */
		struct stat a, b;

		if (fstat(fd, &a) < 0)
			return -errno;
		if (a.st_nlink == 0 || lstat(buf, &b) < 0 || a.st_ino != b.st_ino ||
		    a.st_dev != b.st_dev)
			return -ENOENT;
	}
	return strip_root(t, buf, buf);
}

/* A store path built from its end, component by component, at most PATH_REL_MAX bytes. */
struct rpath {
	char *buf;  /* PATH_REL_MAX + 1 bytes */
	size_t pos; /* the path so far is buf + pos */
};

static int rpath_init(struct rpath *p)
{
	p->buf = malloc(PATH_REL_MAX + 1);
	if (!p->buf)
		return -ENOMEM;
	p->pos = PATH_REL_MAX;
	p->buf[p->pos] = '\0';
	return 0;
}

/* Put the n bytes at s in front, with a slash between them and what follows. */
static int rpath_push(struct rpath *p, const char *s, size_t n)
{
	int rest = p->buf[p->pos] != '\0';

	if (n + (size_t)rest > p->pos)
		return -ENAMETOOLONG;
	if (rest)
		p->buf[--p->pos] = '/';
	p->pos -= n;
	memcpy(p->buf + p->pos, s, n);
	return 0;
}

/* The finished path, "." if empty, into *out (malloc'd); frees p's buffer. */
static int rpath_finish(struct rpath *p, char **out)
{
	*out = strdup(p->buf[p->pos] ? p->buf + p->pos : PATH_ROOT);
	free(p->buf);
	p->buf = NULL;
	return *out ? 0 : -ENOMEM;
}

/* What push_name_in() looks for, and where it puts the name. */
struct name_of {
	const struct stat *st;
	struct rpath *p;
	int r; /* rpath_push()'s return once the name is found */
};

/* 1 (with n->r) when de names n's object; d_ino spares a stat of every other entry. */
static int name_of_entry(int dir, const struct dirent *de, void *arg)
{
	struct name_of *n = arg;
	struct stat est;

	if (de->d_ino != n->st->st_ino)
		return 0;
	if (fstatat(dir, de->d_name, &est, AT_SYMLINK_NOFOLLOW) < 0 ||
	    est.st_ino != n->st->st_ino || est.st_dev != n->st->st_dev)
		return 0;
	n->r = rpath_push(n->p, de->d_name, strlen(de->d_name));
	return 1;
}

/*
 * Put in front of p the name of the object st in directory dir, found by
 * its inode number.  -ENOENT if dir holds no name of it.
 */
static int push_name_in(int dir, const struct stat *st, struct rpath *p)
{
	struct name_of n = {.st = st, .p = p};
	int r = dir_scan_entries(dir, name_of_entry, &n);

	return r == 1 ? n.r : r == 0 ? -ENOENT : r;
}

/*
 * Put in front of p the path of the directory open at fd: climb "..",
 * naming each directory in its parent, until the root or a directory
 * whose path /proc can tell.  -ENOENT if the directory was removed, or is
 * not beneath the root.
 */
static int push_dir_path(struct inode_table *t, int fd, struct rpath *p)
{
	char buf[PATH_MAX];
	struct stat st;
	int cur, up, r;

	cur = openat(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return -errno;
	for (;;) {
		if (fstat(cur, &st) < 0) {
			r = -errno;
			break;
		}
		if (st.st_ino == t->root.ino && st.st_dev == t->root.dev) {
			r = 0;
			break;
		}
		r = proc_path(t, cur, buf);
		if (r <= 0) {
			if (r == 0 && !path_is_root(buf))
				r = rpath_push(p, buf, strlen(buf));
			break;
		}
		up = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (up < 0) {
			r = -errno;
			break;
		}
		close(cur);
		cur = up;
		/* At "/", ".." is the directory itself, which no entry names: the climb ends. */
		r = push_name_in(cur, &st, p);
		if (r < 0)
			break;
	}
	close(cur);
	return r;
}

/* Where search_dir() looks for a name of a non-directory. */
struct search {
	dev_t dev;
	ino_t ino;
	struct relpath path; /* below the root, being looked at */
	struct stat parent; /* the directory the name was found in */
};

static int search_dir(struct search *s, int dir, size_t len);

/* One level of search_dir(): s, and the length of dir's path in s->path. */
struct search_level {
	struct search *s;
	size_t len;
};

/*
 * An entry of the directory dir: 1 when it is a name of s's object, 0 to
 * go on (d_ino and d_type spare the stats), or a negative errno.
 */
static int search_entry(int dir, const struct dirent *de, void *arg)
{
	const struct search_level *l = arg;
	struct search *s = l->s;
	size_t n = strlen(de->d_name), at = l->len ? l->len + 1 : 0;
	struct stat st;
	int sub, r;

	if (at + n > PATH_REL_MAX)
		return 0;
	if (relpath_set(&s->path, l->len, de->d_name) < 0)
		return -ENOMEM;
	if (de->d_ino == s->ino)
		return fstatat(dir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		       st.st_ino == s->ino && st.st_dev == s->dev && fstat(dir, &s->parent) == 0;
	if (de->d_type != DT_DIR)
		return 0;
	sub = openat(dir, de->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return 0;
	r = search_dir(s, sub, at + n);
	close(sub);
	return r == -ENOENT ? 0 : r == 0 ? 1 : r;
}

/*
 * Depth first beneath dir, whose path is the first len bytes of s->path,
 * for a name of s's object; on success s->path holds its path.  -ENOENT if
 * there is none.
 */
static int search_dir(struct search *s, int dir, size_t len)
{
	struct search_level l = {s, len};
	int r = dir_scan_entries(dir, search_entry, &l);

	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

/*
 * The path of non-directory in (stat st) when /proc cannot tell it: its
 * remembered name if that still holds it, else a search of the store.
 * With gone, the name in->fd was opened through is gone: in->fd is pointed
 * at the name found, so that /proc can tell the path again.
 */
static int file_path(struct inode_table *t, struct lfs_inode *in, const struct stat *st, int gone,
		     char **out)
{
	struct search s = {.dev = st->st_dev, .ino = st->st_ino};
	struct lfs_inode *dir;
	struct rpath p = {0};
	char *name = NULL;
	struct stat est;
	int dirfd = -1, fd, r;

	pthread_mutex_lock(&t->lock);
	dir = in->name ? find_locked(t, in->pdev, in->pino) : NULL;
	if (dir) {
		name = strdup(in->name);
		dirfd = fcntl(dir->fd, F_DUPFD_CLOEXEC, 0);
	}
	pthread_mutex_unlock(&t->lock);
	if (name && dirfd >= 0 && fstatat(dirfd, name, &est, AT_SYMLINK_NOFOLLOW) == 0 &&
	    est.st_ino == st->st_ino && est.st_dev == st->st_dev) {
		r = rpath_init(&p);
		if (r == 0)
			r = rpath_push(&p, name, strlen(name));
		if (r == 0)
			r = push_dir_path(t, dirfd, &p);
		if (r == 0)
			r = rpath_finish(&p, out);
		if (r == 0 && gone &&
		    (fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)) >= 0) {
			dup2(fd, in->fd);
			close(fd);
		}
		goto out;
	}
	/* The name is stale (a remote rename, a removed link): find another. */
	r = search_dir(&s, t->root.fd, 0);
	if (r < 0)
		goto out;
	*out = s.path.p;
	s.path.p = NULL;
	pthread_mutex_lock(&t->lock);
	set_name_locked(in, s.parent.st_dev, s.parent.st_ino,
			strrchr(*out, '/') ? strrchr(*out, '/') + 1 : *out);
	pthread_mutex_unlock(&t->lock);
	if (gone && path_open(t->root.fd, *out, O_PATH, 0, &fd) == 0) {
		dup2(fd, in->fd);
		close(fd);
	}
out:
	free(p.buf);
	free(s.path.p);
	free(name);
	if (dirfd >= 0)
		close(dirfd);
	return r;
}

/* path_of_inode() without the cache. */
static int find_path(struct inode_table *t, struct lfs_inode *in, char **out)
{
	char buf[PATH_MAX];
	struct rpath p;
	struct stat st;
	int r;

	r = proc_path(t, in->fd, buf);
	if (r == 0) {
		*out = strdup(buf);
		return *out ? 0 : -ENOMEM;
	}
	if (r < 0 && r != -ENOENT)
		return r;
	if (fstat(in->fd, &st) < 0)
		return -errno;
	if (st.st_nlink == 0)
		return -ENOENT;
	if (!S_ISDIR(st.st_mode))
		return file_path(t, in, &st, r == -ENOENT, out);
	if (r == -ENOENT)
		return r;
	r = rpath_init(&p);
	if (r == 0)
		r = push_dir_path(t, in->fd, &p);
	if (r == 0)
		return rpath_finish(&p, out);
	free(p.buf);
	return r;
}

/*
 * The path is remembered until a rename, unlink, rmdir or install may have
 * moved it (store_names()): a write to an open file then costs no readlink
 * of /proc.
 */
int path_of_inode(struct inode_table *t, struct lfs_inode *in, char **out)
{
	uint64_t gen = store_names(t->store);
	int r;

	if (in == &t->root) {
		*out = strdup(PATH_ROOT);
		return *out ? 0 : -ENOMEM;
	}
	if (in->path && in->path_gen == gen) {
		*out = strdup(in->path);
		return *out ? 0 : -ENOMEM;
	}
	r = find_path(t, in, out);
	if (r == 0) {
		free(in->path);
		in->path = strdup(*out);
		in->path_gen = gen;
	}
	return r;
}

int path_of_child(struct inode_table *t, struct lfs_inode *dir, const char *name, char **out)
{
	size_t len, nlen = strlen(name);
	char *dpath;
	int r;

	if (nlen > NAME_MAX)
		return -ENAMETOOLONG;
	if (dir == &t->root) {
		*out = strdup(name);
		return *out ? 0 : -ENOMEM;
	}
	r = path_of_inode(t, dir, &dpath);
	if (r < 0)
		return r;
	len = strlen(dpath);
	if (len + 1 + nlen > PATH_REL_MAX) {
		free(dpath);
		return -ENAMETOOLONG;
	}
	*out = malloc(len + 1 + nlen + 1);
	if (*out) {
		memcpy(*out, dpath, len);
		(*out)[len] = '/';
		memcpy(*out + len + 1, name, nlen + 1);
	}
	free(dpath);
	return *out ? 0 : -ENOMEM;
}
