/*
 * merkle_cache.c - file digests remembered between hash-tree builds (see
 * merkle.h), so that a resync reads only the files that changed.
 *
 * An entry is trusted only while the file's inode, size, mtime and ctime
 * are all what they were, and only if its ctime was at least
 * MERKLE_CACHE_RACY_NS before the build that would use it: the kernel
 * updates ctime at the granularity of its clock tick, so a change made in
 * the same tick as the reading that produced the digest could leave every
 * field equal (git's "racy" index entries).  Every change a digest covers
 * (contents, mode, owner, xattrs) moves ctime, and nothing can set ctime
 * back.
 *
 * File format, little-endian: u32 magic "LFSD", u16 version 1, u64 count,
 * count x { u64 dev, u64 ino, u64 size, i64 mtime_ns, i64 ctime_ns,
 * u32 mode, u64 fid origin, u64 fid counter, u8[32] digest }, u32 CRC32C
 * of all before it.  It is a cache: a damaged or missing file only costs
 * reading every file again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/crc32c.h"
#include "resync/merkle.h"

#define CACHE_MAGIC   0x4453464cu /* "LFSD" */
#define CACHE_VERSION 1
#define CACHE_HEAD    (4 + 2 + 8)
#define CACHE_ENTRY   (8 * 5 + 4 + 16 + MERKLE_DIGEST_LEN)

struct cache_ent {
	uint64_t dev, ino; /* ino 0: a free slot */
	uint64_t size;
	int64_t mtime_ns, ctime_ns;
	uint32_t mode;
	struct fid fid;
	uint8_t digest[MERKLE_DIGEST_LEN];
};

/* Open addressing over (dev, ino), at most half full. */
struct merkle_cache {
	struct cache_ent *v;
	size_t n, cap;
};

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static size_t slot_of(const struct merkle_cache *c, uint64_t dev, uint64_t ino)
{
	uint64_t h = (dev * 0x9e3779b97f4a7c15ull) ^ (ino * 0xc2b2ae3d27d4eb4full);
	size_t i = (size_t)(h ^ (h >> 29)) & (c->cap - 1);

	while (c->v[i].ino && (c->v[i].ino != ino || c->v[i].dev != dev))
		i = (i + 1) & (c->cap - 1);
	return i;
}

int merkle_cache_new(struct merkle_cache **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void merkle_cache_free(struct merkle_cache *c)
{
	if (!c)
		return;
	free(c->v);
	free(c);
}

void merkle_cache_swap(struct merkle_cache *a, struct merkle_cache *b)
{
	struct merkle_cache t = *a;

	*a = *b;
	*b = t;
}

size_t merkle_cache_count(const struct merkle_cache *c)
{
	return c->n;
}

static int put_ent(struct merkle_cache *c, const struct cache_ent *e)
{
	size_t i;

	if (2 * (c->n + 1) > c->cap) {
		struct merkle_cache bigger = {.cap = c->cap ? 2 * c->cap : 1024};

		bigger.v = calloc(bigger.cap, sizeof(*bigger.v));
		if (!bigger.v)
			return -ENOMEM;
		for (i = 0; i < c->cap; i++)
			if (c->v[i].ino)
				bigger.v[slot_of(&bigger, c->v[i].dev, c->v[i].ino)] = c->v[i];
		bigger.n = c->n;
		free(c->v);
		*c = bigger;
	}
	i = slot_of(c, e->dev, e->ino);
	if (!c->v[i].ino)
		c->n++;
	c->v[i] = *e;
	return 0;
}

int merkle_cache_put(struct merkle_cache *c, const struct stat *st, struct fid fid,
		     const uint8_t digest[MERKLE_DIGEST_LEN])
{
	struct cache_ent e = {
	    .dev = st->st_dev,
	    .ino = st->st_ino,
	    .size = (uint64_t)st->st_size,
	    .mtime_ns = ts_ns(&st->st_mtim),
	    .ctime_ns = ts_ns(&st->st_ctim),
	    .mode = st->st_mode,
	    .fid = fid,
	};

	if (st->st_ino == 0)
		return 0;
	memcpy(e.digest, digest, MERKLE_DIGEST_LEN);
	return put_ent(c, &e);
}

int merkle_cache_get(const struct merkle_cache *c, const struct stat *st, int64_t trust_ns,
		     struct fid *fid, uint8_t digest[MERKLE_DIGEST_LEN])
{
	const struct cache_ent *e;

	if (!c || !c->cap || st->st_ino == 0)
		return 0;
	e = &c->v[slot_of(c, st->st_dev, st->st_ino)];
	if (!e->ino || e->size != (uint64_t)st->st_size || e->mtime_ns != ts_ns(&st->st_mtim) ||
	    e->ctime_ns != ts_ns(&st->st_ctim) || e->mode != st->st_mode || e->ctime_ns > trust_ns)
		return 0;
	*fid = e->fid;
	memcpy(digest, e->digest, MERKLE_DIGEST_LEN);
	return 1;
}

int64_t merkle_cache_trust_now(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return ts_ns(&now) - MERKLE_CACHE_RACY_NS;
}

static void encode_ent(uint8_t *p, const struct cache_ent *e)
{
	put_le64(p, e->dev);
	put_le64(p + 8, e->ino);
	put_le64(p + 16, e->size);
	put_le64(p + 24, (uint64_t)e->mtime_ns);
	put_le64(p + 32, (uint64_t)e->ctime_ns);
	put_le32(p + 40, e->mode);
	put_le64(p + 44, e->fid.origin);
	put_le64(p + 52, e->fid.counter);
	memcpy(p + 60, e->digest, MERKLE_DIGEST_LEN);
}

static void decode_ent(const uint8_t *p, struct cache_ent *e)
{
	e->dev = get_le64(p);
	e->ino = get_le64(p + 8);
	e->size = get_le64(p + 16);
	e->mtime_ns = (int64_t)get_le64(p + 24);
	e->ctime_ns = (int64_t)get_le64(p + 32);
	e->mode = get_le32(p + 40);
	e->fid.origin = get_le64(p + 44);
	e->fid.counter = get_le64(p + 52);
	memcpy(e->digest, p + 60, MERKLE_DIGEST_LEN);
}

int merkle_cache_save(const char *path, const struct merkle_cache *c)
{
	size_t len = CACHE_HEAD + c->n * CACHE_ENTRY + 4, off = CACHE_HEAD, i;
	uint8_t *buf = malloc(len);
	char tmp[4096];
	ssize_t w = 0;
	int fd = -1, r = 0;

	if (!buf)
		return -ENOMEM;
	put_le32(buf, CACHE_MAGIC);
	put_le16(buf + 4, CACHE_VERSION);
	put_le64(buf + 6, c->n);
	for (i = 0; i < c->cap; i++)
		if (c->v[i].ino) {
			encode_ent(buf + off, &c->v[i]);
			off += CACHE_ENTRY;
		}
	put_le32(buf + off, crc32c(0, buf, off));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0)
		w = write(fd, buf, len);
	if (fd < 0 || w < 0)
		r = -errno;
	else if ((size_t)w != len)
		r = -EIO;
	if (fd >= 0)
		close(fd);
	/* Not fsync'd: a cache lost in a crash is only read again. */
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	free(buf);
	return r;
}

int merkle_cache_load(const char *path, struct merkle_cache **out)
{
	struct merkle_cache *c = NULL;
	struct stat st;
	uint8_t *buf = NULL;
	uint64_t count, i;
	int fd, r;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && (st.st_size < CACHE_HEAD + 4 || (size_t)st.st_size > (1ull << 32)))
		r = -EBADMSG;
	if (r == 0 && !(buf = malloc((size_t)st.st_size)))
		r = -ENOMEM;
	if (r == 0 && read(fd, buf, (size_t)st.st_size) != st.st_size)
		r = -EIO;
	close(fd);
	if (r < 0)
		goto out;
	count = get_le64(buf + 6);
	if (get_le32(buf) != CACHE_MAGIC || get_le16(buf + 4) != CACHE_VERSION ||
	    count != ((uint64_t)st.st_size - CACHE_HEAD - 4) / CACHE_ENTRY ||
	    CACHE_HEAD + count * CACHE_ENTRY + 4 != (uint64_t)st.st_size ||
	    crc32c(0, buf, (size_t)st.st_size - 4) != get_le32(buf + st.st_size - 4)) {
		r = -EBADMSG;
		goto out;
	}
	r = merkle_cache_new(&c);
	for (i = 0; r == 0 && i < count; i++) {
		struct cache_ent e;

		decode_ent(buf + CACHE_HEAD + i * CACHE_ENTRY, &e);
		if (e.ino)
			r = put_ent(c, &e);
	}
	if (r == 0) {
		*out = c;
		c = NULL;
	}
out:
	merkle_cache_free(c);
	free(buf);
	return r;
}
