/*
 * dcache.c - a repository's digest cache (dcache.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/dcache.h"
#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/files.h"

#define MAGIC	    "LFSBKDC2"
#define ENTRY_BYTES (4 * 8 + 2 * 4 + MANIFEST_SHA)

static int64_t ns_of(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

void dcache_entry_set(struct dcache_entry *e, const struct stat *st, uint32_t index,
		      const uint8_t sha[MANIFEST_SHA])
{
	e->ino = (uint64_t)st->st_ino;
	e->size = (uint64_t)st->st_size;
	e->mtime_ns = ns_of(&st->st_mtim);
	e->ctime_ns = ns_of(&st->st_ctim);
	e->mode = (uint32_t)st->st_mode;
	e->index = index;
	if (sha)
		memcpy(e->sha, sha, MANIFEST_SHA);
	else
		memset(e->sha, 0, MANIFEST_SHA);
}

int dcache_settled(const struct stat *st, int64_t now_ns)
{
	return ns_of(&st->st_ctim) + DCACHE_SETTLE_NS < now_ns;
}

void dcache_free(struct dcache *c)
{
	free(c->v);
	c->v = NULL;
	c->n = 0;
	c->manifest[0] = '\0';
}

static int cmp_ino(const void *a, const void *b)
{
	const struct dcache_entry *x = a, *y = b;

	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

void dcache_load(struct repo *r, uint64_t node, struct dcache *c)
{
	char path[PATH_MAX + 64];
	uint8_t *data = NULL, sum[MANIFEST_SHA];
	struct stat st;
	size_t got = 0, i, count, head, namelen;
	unsigned olen;
	ssize_t k;
	int fd;

	c->v = NULL;
	c->n = 0;
	c->manifest[0] = '\0';
	snprintf(path, sizeof(path), "%s/%s/%016" PRIx64, r->dir, DCACHE_DIR, node);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || st.st_size < 13 + MANIFEST_SHA ||
	    !(data = malloc((size_t)st.st_size)))
		goto out;
	while (got < (size_t)st.st_size) {
		k = read(fd, data + got, (size_t)st.st_size - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			goto out;
		got += (size_t)k;
	}
	if (memcmp(data, MAGIC, 8) ||
	    EVP_Digest(data, got - MANIFEST_SHA, sum, &olen, EVP_sha256(), NULL) != 1 ||
	    memcmp(sum, data + got - MANIFEST_SHA, MANIFEST_SHA))
		goto out;
	count = get_le32(data + 8);
	namelen = data[12];
	head = 13 + namelen;
	if (namelen > DCACHE_NAME_MAX || head + MANIFEST_SHA > got ||
	    count != (got - head - MANIFEST_SHA) / ENTRY_BYTES ||
	    (got - head - MANIFEST_SHA) % ENTRY_BYTES)
		goto out;
	c->v = malloc((count ? count : 1) * sizeof(*c->v));
	if (!c->v)
		goto out;
	for (i = 0; i < count; i++) {
		const uint8_t *p = data + head + i * ENTRY_BYTES;

		c->v[i].ino = get_le64(p);
		c->v[i].size = get_le64(p + 8);
		c->v[i].mtime_ns = (int64_t)get_le64(p + 16);
		c->v[i].ctime_ns = (int64_t)get_le64(p + 24);
		c->v[i].mode = get_le32(p + 32);
		c->v[i].index = get_le32(p + 36);
		memcpy(c->v[i].sha, p + 40, MANIFEST_SHA);
	}
	memcpy(c->manifest, data + 13, namelen);
	c->manifest[namelen] = '\0';
	c->n = count;
out:
	free(data);
	close(fd);
}

const struct dcache_entry *dcache_find(const struct dcache *c, const struct stat *st)
{
	struct dcache_entry key = {.ino = (uint64_t)st->st_ino};
	const struct dcache_entry *e;

	if (!c->n)
		return NULL;
	e = bsearch(&key, c->v, c->n, sizeof(*c->v), cmp_ino);
	if (!e || e->mode != (uint32_t)st->st_mode || e->size != (uint64_t)st->st_size ||
	    e->mtime_ns != ns_of(&st->st_mtim) || e->ctime_ns != ns_of(&st->st_ctim))
		return NULL;
	return e;
}

int dcache_lookup(const struct dcache *c, const struct stat *st, uint8_t sha[MANIFEST_SHA])
{
	const struct dcache_entry *e = S_ISREG(st->st_mode) ? dcache_find(c, st) : NULL;

	if (!e)
		return 0;
	memcpy(sha, e->sha, MANIFEST_SHA);
	return 1;
}

int dcache_save(struct repo *r, uint64_t node, const char *manifest, struct dcache_entry *v,
		size_t n)
{
	char path[PATH_MAX + 64];
	struct buf b = BUF_INIT;
	uint8_t sum[MANIFEST_SHA];
	size_t i, namelen = strlen(manifest);
	unsigned olen;
	int ret;

	if (n > UINT32_MAX || namelen > DCACHE_NAME_MAX)
		return -E2BIG;
	if (n)
		qsort(v, n, sizeof(*v), cmp_ino);
	ret = buf_put(&b, MAGIC, 8);
	ret = ret ?: buf_put32(&b, (uint32_t)n);
	ret = ret ?: buf_put(&b, &(uint8_t){(uint8_t)namelen}, 1);
	ret = ret ?: buf_put(&b, manifest, namelen);
	for (i = 0; ret == 0 && i < n; i++) {
		ret = buf_put64(&b, v[i].ino);
		ret = ret ?: buf_put64(&b, v[i].size);
		ret = ret ?: buf_put64(&b, (uint64_t)v[i].mtime_ns);
		ret = ret ?: buf_put64(&b, (uint64_t)v[i].ctime_ns);
		ret = ret ?: buf_put32(&b, v[i].mode);
		ret = ret ?: buf_put32(&b, v[i].index);
		ret = ret ?: buf_put(&b, v[i].sha, MANIFEST_SHA);
	}
	if (ret == 0 && EVP_Digest(b.data, b.len, sum, &olen, EVP_sha256(), NULL) != 1)
		ret = -EIO;
	ret = ret ?: buf_put(&b, sum, sizeof(sum));
	if (ret == 0) {
		snprintf(path, sizeof(path), "%s/%s", r->dir, DCACHE_DIR);
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			ret = -errno;
	}
	if (ret == 0) {
		snprintf(path, sizeof(path), "%s/%s/%016" PRIx64, r->dir, DCACHE_DIR, node);
		ret = file_write_atomic(path, b.data, b.len, 0600);
	}
	buf_free(&b);
	return ret;
}
