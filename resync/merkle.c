/*
 * merkle.c - the hash tree of a store and its top-down comparison (see merkle.h).
 *
 * The walk is digest.c's, lib/treewalk.c (names sorted byte-wise, one
 * directory descriptor open however deep the tree): entries opened relative
 * to their parent with O_NOFOLLOW, the stat that is hashed taken from the
 * descriptor that is read.  It differs where a resync needs it to: every
 * entry gets its own digest, a directory's computed after its entries (from
 * their digests, never their bytes), and the fid and version xattrs are
 * covered.
 *
 * Memory is what a comparison needs and no more: per entry its name (in a
 * shared pool, not one allocation each), mode, size, inode key, link group
 * and digest, about 80 bytes plus the name.  Entries with more than one
 * link are remembered by inode until the walk ends, so their contents are
 * read once and the later links get the first one's digest and group.
 * While it runs, the walk also holds the names of each directory from the
 * root down to where it is.
 *
 * A directory's digest covers its own metadata digest and the name, mode,
 * size and digest of each entry; a decoded listing holds exactly that, so
 * the decoder recomputes the digest instead of trusting one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/dirscan.h"
#include "lib/grow.h"
#include "lib/log.h"
#include "lib/relpath.h"
#include "lib/treewalk.h"
#include "resync/merkle.h"
#include "resync/snapshot.h"
#include "store/path.h"
#include "store/store.h"
#include "store/xattr_at.h"

/* Read buffer for file contents and symlink targets, one per build. */
#define READ_BUF_SIZE (1 << 20)

/* Threads that hash files ahead of a build's walk, at most (one per online CPU). */
#define PREHASH_THREADS 4

/* First buffer sizes for xattr names and values; most entries need no more. */
#define XATTR_BUF_SIZE 4096

/* Names are copied into blocks of this size. */
#define NAME_BLOCK_SIZE (64 * 1024)

/* Fed first into every digest, so a change of format changes every digest. */
#define ENTRY_DOMAIN "ledgerfs merkle entry v1"
#define DIR_DOMAIN   "ledgerfs merkle dir v1"

/* Wire sizes: version, mode, meta, count; then per entry all but the name. */
#define WIRE_HEADER_LEN (2 + 4 + MERKLE_DIGEST_LEN + 4)
#define WIRE_ENTRY_LEN	(1 + 4 + 8 + 4 + MERKLE_DIGEST_LEN)

struct name_block {
	struct name_block *next;
	size_t used;
	char data[];
};

struct merkle {
	struct merkle_entry root;
	struct merkle_dir **dirs; /* every listing of the tree, for merkle_free() */
	size_t ndirs, dirs_cap;
	struct name_block *names; /* the entries' names; the newest block first */
};

/* An inode with more than one link, seen once already. */
struct link_slot {
	uint64_t dev, ino; /* ino 0 marks a free slot: no file has inode 0 */
	uint32_t link;
	struct fid fid;
	uint8_t digest[MERKLE_DIGEST_LEN];
};

/* Open addressing over (dev, ino), at most half full. */
struct link_table {
	struct link_slot *v;
	size_t cap, n; /* cap is a power of two */
	uint32_t next_link;
};

struct merkle_walk {
	struct merkle *m;
	EVP_MD_CTX *md;
	uint8_t *buf; /* READ_BUF_SIZE bytes */
	const struct treewalk *tw; /* its path is the current entry's; NULL in prehash threads */
	struct stat seen;	   /* the fstatat() of the directory being walked into */
	char *xnames; /* listxattr() output */
	size_t xnames_cap;
	char **xsorted; /* pointers into xnames, sorted */
	size_t xsorted_cap;
	uint8_t *xval; /* one xattr value */
	size_t xval_cap;
	struct fid fid; /* the fid xattr of the entry hashed last; zero if none */
	struct link_table links;
	const struct merkle_cache *cache_old; /* digests to trust, NULL for none */
	struct merkle_cache *cache_new;	      /* this build's, NULL when not kept */
	int64_t trust_ns;		      /* cache entries with a ctime up to this */
	const struct merkle_cache *fresh;     /* hashed ahead by this build (prehash) */
	uint64_t reused;		      /* files taken from cache_old */
	uint64_t entries;
	bool quiet; /* a prehash thread: its failures only leave the file to the walk */
	struct merkle_progress *progress; /* counted into, NULL for none */
};

/*
 * Regular files hashed ahead of the walk by several threads: hashing is
 * most of a build whose files are not in the cache, and one thread uses
 * one core.  The walk takes their digests from fresh when the file's stat
 * is still exactly the one hashed.
 */
struct prehash {
	int root;
	const struct merkle_cache *cache_old;
	int64_t trust_ns;
	char **files; /* store paths of the regular files to hash */
	size_t nfiles, files_cap;
	atomic_size_t next; /* index of the next file to take */
	pthread_mutex_t lock;
	struct merkle_cache *fresh; /* guarded by lock while the threads run */
	struct merkle_progress *progress; /* NULL for none */
	uint64_t bytes;			  /* sizes of the files listed */
};

struct diff_walk {
	merkle_list_fn list;
	void *list_arg;
	merkle_change_fn change;
	void *change_arg;
	struct merkle_diff_stats stats;
	struct relpath path;
};

static int report(const struct merkle_walk *w, int err, const char *why)
{
	if (w->quiet)
		return err;
	log_err("merkle: %s: %s", relpath_str(&w->tw->path), why ? why : strerror(-err));
	return err;
}

static int h_update(EVP_MD_CTX *c, const void *p, size_t n)
{
	return EVP_DigestUpdate(c, p, n) == 1 ? 0 : -EIO;
}

static int h_u64(EVP_MD_CTX *c, uint64_t v)
{
	uint8_t b[8];

	put_le64(b, v);
	return h_update(c, b, sizeof(b));
}

static int h_bytes(EVP_MD_CTX *c, const void *p, size_t n)
{
	int err = h_u64(c, n);

	return err ? err : h_update(c, p, n);
}

static int h_init(EVP_MD_CTX *c, const char *domain)
{
	if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1)
		return -EIO;
	return h_update(c, domain, strlen(domain) + 1);
}

static int h_final(EVP_MD_CTX *c, uint8_t out[MERKLE_DIGEST_LEN])
{
	return EVP_DigestFinal_ex(c, out, NULL) == 1 ? 0 : -EIO;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The directory digest, from what a listing holds: its mode, its metadata
 * digest and each entry's name, mode, size and digest.
 */
static int dir_digest(EVP_MD_CTX *md, struct merkle_dir *d)
{
	size_t i;
	int err;

	err = h_init(md, DIR_DOMAIN);
	if (!err)
		err = h_u64(md, d->mode);
	if (!err)
		err = h_update(md, d->meta, MERKLE_DIGEST_LEN);
	if (!err)
		err = h_u64(md, d->n);
	for (i = 0; i < d->n && !err; i++) {
		const struct merkle_entry *e = &d->v[i];

		err = h_bytes(md, e->name, strlen(e->name));
		if (!err)
			err = h_u64(md, e->mode);
		if (!err)
			err = h_u64(md, e->size);
		if (!err)
			err = h_update(md, e->digest, MERKLE_DIGEST_LEN);
	}
	return err ? err : h_final(md, d->digest);
}

/*
 * Read the xattr names of fd into w->xnames; *len receives their length.
 * The buffers start non-empty, so one call does in the common case; a
 * size-0 call only follows ERANGE.
 */
static int xattr_names(struct merkle_walk *w, int fd, bool opath, size_t *len)
{
	ssize_t n;
	int err;

	for (;;) {
		n = xattr_at_list(fd, opath, w->xnames, w->xnames_cap);
		if (n >= 0)
			break;
		if (errno == ENOTSUP) {
			n = 0;
			break;
		}
		if (errno != ERANGE)
			return report(w, -errno, NULL);
		n = xattr_at_list(fd, opath, NULL, 0);
		if (n < 0)
			return report(w, -errno, NULL);
		err = grow_array(&w->xnames, &w->xnames_cap, (size_t)n + 1);
		if (err)
			return report(w, err, NULL);
	}
	*len = (size_t)n;
	return 0;
}

/* The value of xattr name into w->xval; *len receives its length. */
static int xattr_value(struct merkle_walk *w, int fd, bool opath, const char *name, size_t *len)
{
	ssize_t n;
	int err;

	for (;;) {
		n = xattr_at_get(fd, opath, name, w->xval, w->xval_cap);
		if (n >= 0)
			break;
		if (errno != ERANGE)
			return report(w, -errno, NULL);
		n = xattr_at_get(fd, opath, name, NULL, 0);
		if (n < 0)
			return report(w, -errno, NULL);
		err = grow_array(&w->xval, &w->xval_cap, (size_t)n + 1);
		if (err)
			return report(w, err, NULL);
	}
	*len = (size_t)n;
	return 0;
}

/* Hash the covered xattrs of fd, sorted by name, each name and value length-prefixed. */
static int hash_xattrs(struct merkle_walk *w, int fd, bool opath)
{
	size_t i, len = 0, vlen = 0, n = 0;
	char *p;
	int err;

	err = xattr_names(w, fd, opath, &len);
	if (err)
		return err;
	for (p = w->xnames; p < w->xnames + len; p += strlen(p) + 1) {
		if (!xattr_replicated(p, strlen(p)))
			continue;
		err = grow_array(&w->xsorted, &w->xsorted_cap, n + 1);
		if (err)
			return report(w, err, NULL);
		w->xsorted[n++] = p;
	}
	if (n > 1)
		qsort(w->xsorted, n, sizeof(char *), cmp_str);
	err = h_u64(w->md, n);
	w->fid = (struct fid){0, 0};
	for (i = 0; i < n && !err; i++) {
		err = xattr_value(w, fd, opath, w->xsorted[i], &vlen);
		if (err)
			return err;
		if (vlen == 16 && !strcmp(w->xsorted[i], STORE_XATTR_FID))
			w->fid = (struct fid){get_le64(w->xval), get_le64(w->xval + 8)};
		err = h_bytes(w->md, w->xsorted[i], strlen(w->xsorted[i]));
		if (!err)
			err = h_bytes(w->md, w->xval, vlen);
	}
	return err ? report(w, err, NULL) : 0;
}

static char type_char(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return 'f';
	case S_IFDIR:
		return 'd';
	case S_IFLNK:
		return 'l';
	case S_IFCHR:
		return 'c';
	case S_IFBLK:
		return 'b';
	case S_IFIFO:
		return 'p';
	default:
		return 's';
	}
}

/* Start w->md on an entry: domain, type, permission bits, owner, xattrs. */
static int hash_meta(struct merkle_walk *w, const struct stat *st, int fd, bool opath)
{
	uint8_t type = (uint8_t)type_char(st->st_mode);
	int err;

	err = h_init(w->md, ENTRY_DOMAIN);
	if (!err)
		err = h_update(w->md, &type, 1);
	if (!err)
		err = h_u64(w->md, st->st_mode & 07777);
	if (!err)
		err = h_u64(w->md, st->st_uid);
	if (!err)
		err = h_u64(w->md, st->st_gid);
	if (err)
		return report(w, err, "SHA-256 failed");
	return hash_xattrs(w, fd, opath);
}

/* Hash size, then contents read from fd, which must match the size. */
static int hash_contents(struct merkle_walk *w, int fd, off_t size)
{
	uint64_t total = 0;
	ssize_t n;
	int err;

	err = h_u64(w->md, (uint64_t)size);
	while (!err) {
		n = read(fd, w->buf, READ_BUF_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return report(w, -errno, NULL);
		if (n == 0)
			break;
		total += (uint64_t)n;
		if (total > (uint64_t)size)
			break;
		err = h_update(w->md, w->buf, (size_t)n);
		if (w->progress)
			atomic_fetch_add(&w->progress->bytes, (uint64_t)n);
	}
	if (err)
		return report(w, err, "SHA-256 failed");
	if (total != (uint64_t)size)
		return report(w, -EAGAIN, "changed while being read");
	if (w->progress)
		atomic_fetch_add(&w->progress->files, 1);
	return 0;
}

/* The digest of a non-directory open at fd (O_PATH unless a regular file), whose stat is st. */
static int hash_leaf(struct merkle_walk *w, const struct stat *st, int fd,
		     uint8_t out[MERKLE_DIGEST_LEN])
{
	bool opath = !S_ISREG(st->st_mode);
	ssize_t n;
	int err;

	err = hash_meta(w, st, fd, opath);
	if (err)
		return err;
	switch (st->st_mode & S_IFMT) {
	case S_IFREG:
		err = hash_contents(w, fd, st->st_size);
		if (err)
			return err;
		err = h_u64(w->md, (uint64_t)((int64_t)st->st_mtim.tv_sec * 1000000000 +
					      st->st_mtim.tv_nsec));
		break;
	case S_IFLNK:
		n = readlinkat(fd, "", (char *)w->buf, READ_BUF_SIZE);
		if (n < 0)
			return report(w, -errno, NULL);
		if (n == READ_BUF_SIZE)
			return report(w, -ENAMETOOLONG, NULL);
		err = h_bytes(w->md, w->buf, (size_t)n);
		break;
	case S_IFCHR:
	case S_IFBLK:
		err = h_u64(w->md, major(st->st_rdev));
		if (!err)
			err = h_u64(w->md, minor(st->st_rdev));
		break;
	}
	if (!err)
		err = h_final(w->md, out);
	return err ? report(w, err, "SHA-256 failed") : 0;
}

static size_t link_hash(uint64_t dev, uint64_t ino, size_t cap)
{
	uint64_t h = (dev * 0x9e3779b97f4a7c15ull) ^ (ino * 0xc2b2ae3d27d4eb4full);

	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

/* The slot of (dev, ino): its entry, or the free slot where it belongs. */
static struct link_slot *link_slot(const struct link_table *t, uint64_t dev, uint64_t ino)
{
	size_t i = link_hash(dev, ino, t->cap);

	while (t->v[i].ino && (t->v[i].ino != ino || t->v[i].dev != dev))
		i = (i + 1) & (t->cap - 1);
	return &t->v[i];
}

static int link_grow(struct link_table *t)
{
	struct link_table bigger = *t;
	size_t i;

	bigger.cap = t->cap ? 2 * t->cap : 64;
	bigger.v = calloc(bigger.cap, sizeof(*bigger.v));
	if (!bigger.v)
		return -ENOMEM;
	for (i = 0; i < t->cap; i++)
		if (t->v[i].ino)
			*link_slot(&bigger, t->v[i].dev, t->v[i].ino) = t->v[i];
	free(t->v);
	*t = bigger;
	return 0;
}

/* Remember e, just hashed, as the first link seen of its inode; give it a link group. */
static int link_add(struct merkle_walk *w, struct merkle_entry *e)
{
	struct link_table *t = &w->links;
	struct link_slot *s;
	int err;

	if (2 * (t->n + 1) > t->cap) {
		err = link_grow(t);
		if (err)
			return report(w, err, NULL);
	}
	s = link_slot(t, e->dev, e->ino);
	s->dev = e->dev;
	s->ino = e->ino;
	s->link = e->link = ++t->next_link;
	s->fid = e->fid;
	memcpy(s->digest, e->digest, MERKLE_DIGEST_LEN);
	t->n++;
	return 0;
}

/* Copy name into the tree's name pool. */
static const char *name_dup(struct merkle *m, const char *name)
{
	size_t len = strlen(name) + 1;
	struct name_block *b = m->names;
	char *p;

	if (!b || NAME_BLOCK_SIZE - b->used < len) {
		b = malloc(sizeof(*b) + NAME_BLOCK_SIZE);
		if (!b)
			return NULL;
		b->next = m->names;
		b->used = 0;
		m->names = b;
	}
	p = b->data + b->used;
	memcpy(p, name, len);
	b->used += len;
	return p;
}

/* A new empty listing, owned by m. */
static int dir_new(struct merkle *m, struct merkle_dir **out)
{
	int err;

	err = grow_array(&m->dirs, &m->dirs_cap, m->ndirs + 1);
	if (err)
		return err;
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	m->dirs[m->ndirs++] = *out;
	return 0;
}

/*
 * Open name beneath dirfd with flags (O_NOFOLLOW added) and check that it is
 * the object *st, from fstatat(), describes; *st is then replaced by the
 * descriptor's stat, so that what is hashed is what is read.
 */
static int entry_open(struct merkle_walk *w, int dirfd, const char *name, int flags,
		      struct stat *st, int *fd)
{
	struct stat now;

	*fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return report(w, -errno, NULL);
	if (fstat(*fd, &now) < 0 || now.st_dev != st->st_dev || now.st_ino != st->st_ino ||
	    (now.st_mode & S_IFMT) != (st->st_mode & S_IFMT)) {
		close(*fd);
		*fd = -1;
		return report(w, -EAGAIN, "changed while being read");
	}
	*st = now;
	return 0;
}

static void entry_fill(struct merkle_entry *e, const struct stat *st)
{
	e->mode = st->st_mode;
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->size = S_ISREG(st->st_mode) || S_ISLNK(st->st_mode) ? (uint64_t)st->st_size : 0;
}

/* Hash e, a non-directory beneath dirfd whose fstatat() is st. */
static int walk_leaf(struct merkle_walk *w, int dirfd, struct merkle_entry *e, struct stat *st)
{
	const struct link_slot *s;
	int fd, flags, err = 0;

	if (st->st_nlink > 1 && w->links.n) {
		s = link_slot(&w->links, st->st_dev, st->st_ino);
		if (s->ino) {
			entry_fill(e, st);
			e->link = s->link;
			e->fid = s->fid;
			memcpy(e->digest, s->digest, MERKLE_DIGEST_LEN);
			return 0;
		}
	}
	if (S_ISREG(st->st_mode) &&
	    merkle_cache_get(w->cache_old, st, w->trust_ns, &e->fid, e->digest)) {
		entry_fill(e, st);
		w->reused++;
	} else if (S_ISREG(st->st_mode) &&
		   merkle_cache_get(w->fresh, st, INT64_MAX, &e->fid, e->digest)) {
		/* Hashed in this build, under the same lock: its ctime needs no age. */
		entry_fill(e, st);
	} else {
		/* O_NONBLOCK: should it have become a fifo meanwhile, the open must not hang. */
		flags = S_ISREG(st->st_mode) ? O_RDONLY | O_NONBLOCK | O_NOCTTY : O_PATH;
		err = entry_open(w, dirfd, e->name, flags, st, &fd);
		if (err)
			return err;
		entry_fill(e, st);
		err = hash_leaf(w, st, fd, e->digest);
		e->fid = w->fid;
		close(fd);
	}
	if (!err && w->cache_new && S_ISREG(st->st_mode))
		err = merkle_cache_put(w->cache_new, st, e->fid, e->digest);
	if (!err && st->st_nlink > 1)
		err = link_add(w, e);
	return err;
}

/*
 * Walking into the directory of e (the root first), whose stat is st: it
 * must be the one its entry's fstatat() saw.
 */
static int build_enter(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	struct merkle_walk *w = tw->arg;

	if (tw->depth && (st->st_dev != w->seen.st_dev || st->st_ino != w->seen.st_ino))
		return report(w, -EAGAIN, "changed while being read");
	entry_fill(dir, st);
	return 0;
}

/*
 * An entry of the directory of de, open at dfd: its name into the tree,
 * then hashed, or walked into with a listing of its own.
 */
static int build_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		       size_t index, size_t count, void *de, void **sub)
{
	struct merkle_walk *w = tw->arg;
	struct merkle_dir *d = ((struct merkle_entry *)de)->dir;
	struct merkle_entry *e;
	struct stat leaf;
	int err;

	if (index == 0) {
		d->v = calloc(count, sizeof(*d->v));
		if (!d->v)
			return report(w, -ENOMEM, NULL);
	}
	e = &d->v[index];
	e->name = name_dup(w->m, name);
	if (!e->name)
		return report(w, -ENOMEM, NULL);
	d->n++;
	w->entries++;
	if (!S_ISDIR(st->st_mode)) {
		leaf = *st;
		return walk_leaf(w, dfd, e, &leaf);
	}
	err = dir_new(w->m, &e->dir);
	if (err)
		return report(w, err, NULL);
	w->seen = *st;
	*sub = e;
	return TREEWALK_DESCEND;
}

/*
 * The entries of the directory of e, open at fd, are done: its own
 * metadata (from st, taken when the walk entered it) and its digest.
 */
static int build_leave(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	struct merkle_walk *w = tw->arg;
	struct merkle_entry *e = dir;
	struct merkle_dir *d = e->dir;
	int err;

	d->mode = st->st_mode;
	d->uid = st->st_uid;
	d->gid = st->st_gid;
	err = hash_meta(w, st, fd, false);
	if (err)
		return err;
	d->fid = w->fid;
	/* The values too, not just their digest: a resync sends them as they were here. */
	err = snap_xattrs_read(fd, 0, &d->xattrs, &d->xattrs_len);
	if (err)
		return report(w, err, NULL);
	err = h_final(w->md, d->meta);
	if (!err)
		err = dir_digest(w->md, d);
	if (err)
		return report(w, err, "SHA-256 failed");
	memcpy(e->digest, d->digest, MERKLE_DIGEST_LEN);
	e->fid = d->fid;
	return 0;
}

static int build_fail(struct treewalk *tw, int err, const char *why)
{
	return report(tw->arg, err, why);
}

static const struct treewalk_ops build_ops = {
    .enter = build_enter,
    .entry = build_entry,
    .leave = build_leave,
    .fail = build_fail,
};

/* Queue the store path of name in dir (NULL: name is the path) in *v.  0 or a negative errno. */
static int prehash_push(char ***v, size_t *n, size_t *cap, const char *dir, const char *name)
{
	char *path;
	int len = !dir || strcmp(dir, PATH_ROOT) == 0 ? asprintf(&path, "%s", name)
						      : asprintf(&path, "%s/%s", dir, name);

	if (len < 0)
		return -ENOMEM;
	if ((size_t)len > PATH_REL_MAX) {
		free(path);
		return -ENAMETOOLONG;
	}
	if (grow_array(v, cap, *n + 1) < 0) {
		free(path);
		return -ENOMEM;
	}
	(*v)[(*n)++] = path;
	return 0;
}

/* Where prehash_entry() puts what one directory holds. */
struct prehash_dir {
	struct prehash *ph;
	const char *dir;
	char ***dirs;
	size_t *ndirs, *dirs_cap;
};

/* A regular file the cache cannot give into ph->files, a subdirectory into *dirs. */
static int prehash_entry(int dfd, const char *name, void *arg)
{
	struct prehash_dir *pd = arg;
	struct prehash *ph = pd->ph;
	uint8_t digest[MERKLE_DIGEST_LEN];
	struct stat st;
	struct fid fid;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	if (S_ISDIR(st.st_mode))
		return prehash_push(pd->dirs, pd->ndirs, pd->dirs_cap, pd->dir, name);
	/* A file of several names is hashed once: each name counts its share. */
	if (S_ISREG(st.st_mode) && ph->progress)
		ph->bytes += (uint64_t)st.st_size / (st.st_nlink ? st.st_nlink : 1);
	if (S_ISREG(st.st_mode) && st.st_nlink == 1 &&
	    !merkle_cache_get(ph->cache_old, &st, ph->trust_ns, &fid, digest))
		return prehash_push(&ph->files, &ph->nfiles, &ph->files_cap, pd->dir, name);
	return 0;
}

/* One directory's entries, through prehash_entry(). */
static int prehash_list(struct prehash *ph, const char *dir, char ***dirs, size_t *ndirs,
			size_t *dirs_cap)
{
	struct prehash_dir pd = {ph, dir, dirs, ndirs, dirs_cap};
	int fd, err = path_open(ph->root, dir, O_RDONLY | O_DIRECTORY, 0, &fd);

	if (err)
		return err;
	err = dir_scan(fd, prehash_entry, &pd);
	close(fd);
	return err;
}

/* Every directory of the store, breadth first, without following symlinks. */
static int prehash_collect(struct prehash *ph)
{
	char **dirs = NULL;
	size_t ndirs = 0, cap = 0, i;
	int err = prehash_push(&dirs, &ndirs, &cap, NULL, PATH_ROOT);

	for (i = 0; !err && i < ndirs; i++)
		err = prehash_list(ph, dirs[i], &dirs, &ndirs, &cap);
	for (i = 0; i < ndirs; i++)
		free(dirs[i]);
	free(dirs);
	return err;
}

/* A prehash thread: files taken in turn until none is left.  Failures leave the file to the walk.
 */
static void *prehash_run(void *arg)
{
	struct prehash *ph = arg;
	struct merkle_walk w = {.quiet = true, .progress = ph->progress};
	uint8_t digest[MERKLE_DIGEST_LEN];
	struct stat st;
	size_t i;
	int fd;

	w.md = EVP_MD_CTX_new();
	w.buf = malloc(READ_BUF_SIZE);
	w.xnames = malloc(XATTR_BUF_SIZE);
	w.xval = malloc(XATTR_BUF_SIZE);
	w.xnames_cap = w.xval_cap = XATTR_BUF_SIZE;
	while (w.md && w.buf && w.xnames && w.xval &&
	       (i = atomic_fetch_add(&ph->next, 1)) < ph->nfiles) {
		if (path_open(ph->root, ph->files[i], O_RDONLY | O_NONBLOCK | O_NOCTTY, 0, &fd) < 0)
			continue;
		/* The stat of the descriptor read is the key the walk must find unchanged. */
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
		    hash_leaf(&w, &st, fd, digest) == 0) {
			pthread_mutex_lock(&ph->lock);
			merkle_cache_put(ph->fresh, &st, w.fid, digest);
			pthread_mutex_unlock(&ph->lock);
		}
		close(fd);
	}
	free(w.xval);
	free(w.xsorted);
	free(w.xnames);
	free(w.buf);
	EVP_MD_CTX_free(w.md);
	return NULL;
}

/*
 * Hash the store's regular files that cache_old cannot give, on one
 * thread per CPU this thread may run on (at most PREHASH_THREADS), into *fresh
 * (merkle_cache_free()).  Best effort: a file it could not hash is hashed
 * by the walk.  With progress, the files are listed and hashed here even on
 * one CPU, so that the total is known before the hashing starts.  0, or
 * -ENOMEM when there is no cache to fill.
 */
static int prehash(int root, const struct merkle_cache *cache_old, int64_t trust_ns,
		   struct merkle_progress *progress, struct merkle_cache **fresh)
{
	struct prehash ph = {
	    .root = root, .cache_old = cache_old, .trust_ns = trust_ns, .progress = progress};
	pthread_t t[PREHASH_THREADS];
	cpu_set_t cpus;
	int ncpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
	size_t i, n = ncpus > PREHASH_THREADS ? PREHASH_THREADS : (size_t)ncpus;
	size_t started = 0;

	*fresh = NULL;
	if (merkle_cache_new(&ph.fresh) < 0)
		return -ENOMEM;
	if ((n > 1 || progress) && prehash_collect(&ph) == 0 && (ph.nfiles > 1 || progress)) {
		if (progress)
			atomic_store(&progress->total, ph.bytes);
		atomic_init(&ph.next, 0);
		pthread_mutex_init(&ph.lock, NULL);
		for (i = 1; i < n; i++)
			if (pthread_create(&t[started], NULL, prehash_run, &ph) == 0)
				started++;
		prehash_run(&ph);
		for (i = 0; i < started; i++)
			pthread_join(t[i], NULL);
		pthread_mutex_destroy(&ph.lock);
	}
	for (i = 0; i < ph.nfiles; i++)
		free(ph.files[i]);
	free(ph.files);
	*fresh = ph.fresh;
	return 0;
}

static int build(int root_fd, struct merkle_cache *cache, int64_t trust_ns,
		 struct merkle_progress *progress, struct merkle **out, uint64_t *entries,
		 uint64_t *reused);

int merkle_build(int root_fd, struct merkle **out, uint64_t *entries)
{
	return build(root_fd, NULL, 0, NULL, out, entries, NULL);
}

int merkle_build_progress(int root_fd, struct merkle_progress *p, struct merkle **out,
			  uint64_t *entries)
{
	return build(root_fd, NULL, 0, p, out, entries, NULL);
}

int merkle_build_cached(int root_fd, struct merkle_cache *cache, int64_t trust_ns,
			struct merkle **out, uint64_t *entries, uint64_t *reused)
{
	return build(root_fd, cache, trust_ns, NULL, out, entries, reused);
}

static int build(int root_fd, struct merkle_cache *cache, int64_t trust_ns,
		 struct merkle_progress *progress, struct merkle **out, uint64_t *entries,
		 uint64_t *reused)
{
	struct treewalk tw = {.fd = -1};
	struct merkle_walk w = {.tw = &tw, .progress = progress};
	struct merkle_cache *fresh = NULL;
	int err;

	*out = NULL;
	w.trust_ns = trust_ns;
	w.cache_old = cache;
	if (cache && merkle_cache_new(&w.cache_new) < 0)
		return -ENOMEM;
	/*
	 * Only without remembered digests: with them most files are not read,
	 * and the extra listing of every directory would cost more than the
	 * threads save (a 1% resync's builds).
	 */
	if ((!cache || merkle_cache_count(cache) == 0) &&
	    prehash(root_fd, cache, trust_ns, progress, &fresh) < 0) {
		merkle_cache_free(w.cache_new);
		return -ENOMEM;
	}
	w.fresh = fresh;

	w.m = calloc(1, sizeof(*w.m));
	w.md = EVP_MD_CTX_new();
	w.buf = malloc(READ_BUF_SIZE);
	w.xnames = malloc(XATTR_BUF_SIZE);
	w.xval = malloc(XATTR_BUF_SIZE);
	if (!w.m || !w.md || !w.buf || !w.xnames || !w.xval) {
		err = report(&w, -ENOMEM, NULL);
		goto out;
	}
	w.xnames_cap = w.xval_cap = XATTR_BUF_SIZE;
	w.m->root.name = PATH_ROOT;
	err = dir_new(w.m, &w.m->root.dir);
	if (err) {
		report(&w, err, NULL);
		goto out;
	}
	err = treewalk_open(&tw, root_fd, ".", 0);
	if (err) {
		report(&w, err, NULL);
		goto out;
	}
	err = treewalk_run(&tw, &build_ops, &w, &w.m->root);
	if (err)
		goto out;
	if (entries)
		*entries = w.entries + 1;
	if (reused)
		*reused = w.reused;
	if (cache)
		merkle_cache_swap(cache, w.cache_new);
	*out = w.m;
	w.m = NULL;
out:
	merkle_cache_free(fresh);
	merkle_cache_free(w.cache_new);
	treewalk_close(&tw);
	free(w.links.v);
	free(w.xval);
	free(w.xsorted);
	free(w.xnames);
	free(w.buf);
	EVP_MD_CTX_free(w.md);
	merkle_free(w.m);
	return err;
}

void merkle_free(struct merkle *m)
{
	struct name_block *b, *next;
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->ndirs; i++) {
		free(m->dirs[i]->v);
		free(m->dirs[i]->xattrs);
		free(m->dirs[i]);
	}
	free(m->dirs);
	for (b = m->names; b; b = next) {
		next = b->next;
		free(b);
	}
	free(m);
}

const struct merkle_entry *merkle_root(const struct merkle *m)
{
	return &m->root;
}

/* The entry of d named by the len bytes at name, or NULL. */
static const struct merkle_entry *dir_lookup(const struct merkle_dir *d, const char *name,
					     size_t len)
{
	size_t lo = 0, hi = d->n, mid;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strncmp(d->v[mid].name, name, len);
		if (!c && d->v[mid].name[len])
			c = 1;
		if (!c)
			return &d->v[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int merkle_find(const struct merkle *m, const char *path, const struct merkle_entry **out)
{
	const struct merkle_entry *e = &m->root;
	const char *p = path, *slash, *why;
	size_t len;
	int err;

	*out = NULL;
	err = path_check(path, &why);
	if (err)
		return err;
	if (!path_is_root(path)) {
		for (;;) {
			if (!e->dir)
				return -ENOTDIR;
			slash = strchr(p, '/');
			len = slash ? (size_t)(slash - p) : strlen(p);
			e = dir_lookup(e->dir, p, len);
			if (!e)
				return -ENOENT;
			if (!slash)
				break;
			p = slash + 1;
		}
	}
	*out = e;
	return 0;
}

size_t merkle_dir_encoded_len(const struct merkle_dir *d)
{
	size_t i, len = WIRE_HEADER_LEN;

	for (i = 0; i < d->n; i++)
		len += WIRE_ENTRY_LEN + strlen(d->v[i].name);
	return len;
}

int merkle_dir_encode(const struct merkle_dir *d, uint8_t *buf, size_t cap, size_t *len)
{
	uint8_t *p = buf;
	size_t i, nlen;

	if (d->n > UINT32_MAX)
		return -EOVERFLOW;
	*len = merkle_dir_encoded_len(d);
	if (cap < *len)
		return -ENOSPC;
	put_le16(p, MERKLE_WIRE_VERSION);
	put_le32(p + 2, d->mode);
	memcpy(p + 6, d->meta, MERKLE_DIGEST_LEN);
	put_le32(p + 6 + MERKLE_DIGEST_LEN, (uint32_t)d->n);
	p += WIRE_HEADER_LEN;
	for (i = 0; i < d->n; i++) {
		const struct merkle_entry *e = &d->v[i];

		/* Names come from readdir() or a decoded listing: 1..NAME_MAX bytes. */
		nlen = strlen(e->name);
		*p++ = (uint8_t)nlen;
		memcpy(p, e->name, nlen);
		p += nlen;
		put_le32(p, e->mode);
		put_le64(p + 4, e->size);
		put_le32(p + 12, e->link);
		memcpy(p + 16, e->digest, MERKLE_DIGEST_LEN);
		p += 16 + MERKLE_DIGEST_LEN;
	}
	return 0;
}

/* Byte order of two names without NULs, as strcmp() would give it. */
static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/*
 * Check every entry of a listing (header already checked) and sum the
 * bytes its names need, terminators included.
 */
static int dir_check(const uint8_t *p, const uint8_t *end, uint32_t n, size_t *names,
		     const char **why)
{
	const uint8_t *prev = NULL;
	size_t nlen, prev_len = 0;
	uint32_t i;

	*names = 0;
	for (i = 0; i < n; i++) {
		if (end - p < WIRE_ENTRY_LEN) {
			*why = "truncated entry";
			return -EBADMSG;
		}
		nlen = *p++;
		if ((size_t)(end - p) < nlen + WIRE_ENTRY_LEN - 1) {
			*why = "truncated entry";
			return -EBADMSG;
		}
		if (nlen == 0) {
			*why = "empty name";
			return -EBADMSG;
		}
		if (memchr(p, '/', nlen) || memchr(p, '\0', nlen)) {
			*why = "name with '/' or NUL";
			return -EBADMSG;
		}
		if ((nlen == 1 && p[0] == '.') || (nlen == 2 && p[0] == '.' && p[1] == '.')) {
			*why = "name '.' or '..'";
			return -EBADMSG;
		}
		if (prev && name_cmp(prev, prev_len, p, nlen) >= 0) {
			*why = "names not in strictly increasing order";
			return -EBADMSG;
		}
		if (!snap_mode_valid(get_le32(p + nlen))) {
			*why = "bad mode";
			return -EBADMSG;
		}
		prev = p;
		prev_len = nlen;
		*names += nlen + 1;
		p += nlen + WIRE_ENTRY_LEN - 1;
	}
	if (p != end) {
		*why = "trailing bytes";
		return -EBADMSG;
	}
	return 0;
}

int merkle_dir_decode(const uint8_t *buf, size_t len, struct merkle_dir **out, const char **why)
{
	const uint8_t *p, *end = buf + len;
	struct merkle_dir *d = NULL;
	EVP_MD_CTX *md = NULL;
	size_t i, names, nlen;
	uint32_t n;
	char *np;
	int err;

	*out = NULL;
	if (len < WIRE_HEADER_LEN) {
		*why = "truncated header";
		return -EBADMSG;
	}
	if (get_le16(buf) != MERKLE_WIRE_VERSION) {
		*why = "unknown listing version";
		return -EPROTO;
	}
	if (!snap_mode_valid(get_le32(buf + 2)) || !S_ISDIR(get_le32(buf + 2))) {
		*why = "bad directory mode";
		return -EBADMSG;
	}
	n = get_le32(buf + 6 + MERKLE_DIGEST_LEN);
	p = buf + WIRE_HEADER_LEN;
	/* Before anything is allocated for them, the entries must fit in what is left. */
	if ((uint64_t)n * WIRE_ENTRY_LEN > (uint64_t)(end - p)) {
		*why = "more entries than bytes";
		return -EBADMSG;
	}
	err = dir_check(p, end, n, &names, why);
	if (err)
		return err;
	d = malloc(sizeof(*d) + (size_t)n * sizeof(*d->v) + names);
	md = EVP_MD_CTX_new();
	if (!d || !md) {
		*why = "out of memory";
		err = -ENOMEM;
		goto out;
	}
	d->mode = get_le32(buf + 2);
	memcpy(d->meta, buf + 6, MERKLE_DIGEST_LEN);
	d->n = n;
	d->v = (struct merkle_entry *)(d + 1);
	np = (char *)(d->v + n);
	for (i = 0; i < n; i++) {
		struct merkle_entry *e = &d->v[i];

		nlen = *p++;
		memcpy(np, p, nlen);
		np[nlen] = '\0';
		e->name = np;
		np += nlen + 1;
		p += nlen;
		e->dir = NULL;
		e->dev = e->ino = 0;
		e->mode = get_le32(p);
		e->size = get_le64(p + 4);
		e->link = get_le32(p + 12);
		memcpy(e->digest, p + 16, MERKLE_DIGEST_LEN);
		p += 16 + MERKLE_DIGEST_LEN;
	}
	err = dir_digest(md, d);
	if (err) {
		*why = "SHA-256 failed";
		goto out;
	}
	*out = d;
	d = NULL;
out:
	EVP_MD_CTX_free(md);
	free(d);
	return err;
}

void merkle_dir_free(struct merkle_dir *d)
{
	free(d);
}

int merkle_list_tree(void *arg, const char *path, struct merkle_dir **out)
{
	const struct merkle_entry *e;
	const char *why;
	uint8_t *buf = NULL;
	size_t cap, len;
	int err;

	*out = NULL;
	err = merkle_find(arg, path, &e);
	if (err)
		goto out;
	if (!e->dir) {
		err = -ENOTDIR;
		goto out;
	}
	cap = merkle_dir_encoded_len(e->dir);
	buf = malloc(cap);
	if (!buf) {
		err = -ENOMEM;
		goto out;
	}
	err = merkle_dir_encode(e->dir, buf, cap, &len);
	if (!err)
		err = merkle_dir_decode(buf, len, out, &why);
out:
	free(buf);
	return err;
}

static int diff_emit(struct diff_walk *s, enum merkle_change what,
		     const struct merkle_entry *theirs, const struct merkle_entry *mine)
{
	if (what == MERKLE_FETCH)
		s->stats.fetch++;
	else
		s->stats.del++;
	return s->change(s->change_arg, what, relpath_str(&s->path), theirs, mine);
}

static int diff_dir(struct diff_walk *s, const struct merkle_entry *mine,
		    const struct merkle_entry *theirs);

/* theirs, at s->path, is not here: fetch it, and what is beneath it. */
static int diff_new(struct diff_walk *s, const struct merkle_entry *theirs)
{
	if (S_ISDIR(theirs->mode))
		return diff_dir(s, NULL, theirs);
	return diff_emit(s, MERKLE_FETCH, theirs, NULL);
}

/* mine and theirs have the same name, at s->path. */
static int diff_pair(struct diff_walk *s, const struct merkle_entry *mine,
		     const struct merkle_entry *theirs)
{
	int err;

	s->stats.compared++;
	if (!memcmp(mine->digest, theirs->digest, MERKLE_DIGEST_LEN))
		return 0;
	if ((mine->mode & S_IFMT) == (theirs->mode & S_IFMT)) {
		if (S_ISDIR(theirs->mode))
			return diff_dir(s, mine, theirs);
		return diff_emit(s, MERKLE_FETCH, theirs, mine);
	}
	err = diff_emit(s, MERKLE_DELETE, NULL, mine);
	return err ? err : diff_new(s, theirs);
}

/*
 * Compare the directory at s->path.  mine is this side's entry when it is
 * a directory here too, else NULL; theirs the other side's entry from its
 * parent's listing, NULL for the root.
 */
static int diff_dir(struct diff_walk *s, const struct merkle_entry *mine,
		    const struct merkle_entry *theirs)
{
	const struct merkle_dir *md = mine ? mine->dir : NULL;
	const struct merkle_entry *a, *b;
	struct merkle_entry root;
	struct merkle_dir *t = NULL;
	size_t i = 0, j = 0, saved;
	int c, err;

	err = s->list(s->list_arg, relpath_str(&s->path), &t);
	if (err)
		goto out;
	s->stats.listings++;
	if (theirs && memcmp(t->digest, theirs->digest, MERKLE_DIGEST_LEN)) {
		log_err("merkle: the other side's listing of %s does not match its parent's",
			relpath_str(&s->path));
		err = -ESTALE;
		goto out;
	}
	if (!theirs) {
		root = (struct merkle_entry){.name = PATH_ROOT, .mode = t->mode};
		memcpy(root.digest, t->digest, MERKLE_DIGEST_LEN);
		theirs = &root;
		s->stats.compared++;
		if (!memcmp(mine->digest, t->digest, MERKLE_DIGEST_LEN))
			goto out;
	}
	if (!md || memcmp(md->meta, t->meta, MERKLE_DIGEST_LEN)) {
		err = diff_emit(s, MERKLE_FETCH, theirs, mine);
		if (err)
			goto out;
	}
	while (i < (md ? md->n : 0) || j < t->n) {
		a = md && i < md->n ? &md->v[i] : NULL;
		b = j < t->n ? &t->v[j] : NULL;
		c = !a ? 1 : !b ? -1 : strcmp(a->name, b->name);
		saved = s->path.len;
		err = relpath_set(&s->path, saved, c < 0 ? a->name : b->name);
		if (err)
			goto out;
		if (c < 0)
			err = diff_emit(s, MERKLE_DELETE, NULL, a);
		else if (c > 0)
			err = diff_new(s, b);
		else
			err = diff_pair(s, a, b);
		relpath_cut(&s->path, saved);
		if (err)
			goto out;
		i += c <= 0;
		j += c >= 0;
	}
out:
	merkle_dir_free(t);
	return err;
}

int merkle_diff(const struct merkle *mine, merkle_list_fn list, void *list_arg,
		merkle_change_fn change, void *change_arg, struct merkle_diff_stats *stats)
{
	struct diff_walk s = {
	    .list = list, .list_arg = list_arg, .change = change, .change_arg = change_arg};
	int err;

	err = diff_dir(&s, &mine->root, NULL);
	if (stats)
		*stats = s.stats;
	free(s.path.p);
	return err;
}
