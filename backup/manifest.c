/*
 * manifest.c - encoding and decoding of a backup's manifest (manifest.h).
 * The layout is in the header; SHA-256 comes from OpenSSL.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "backup/manifest.h"
#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/grow.h"

#define MAGIC_LEN 8

void manifest_entry_free(struct manifest_entry *e)
{
	free(e->path);
	free(e->target);
	free(e->xattrs);
	memset(e, 0, sizeof(*e));
}

void manifest_free(struct manifest *m)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		manifest_entry_free(&m->e[i]);
	free(m->e);
	free(m->from);
	free(m->pos);
	free(m->fences);
	memset(m, 0, sizeof(*m));
}

int manifest_add(struct manifest *m, struct manifest_entry *e)
{
	if (grow_array(&m->e, &m->cap, m->n + 1) < 0) {
		manifest_entry_free(e);
		return -ENOMEM;
	}
	m->e[m->n++] = *e;
	memset(e, 0, sizeof(*e));
	return 0;
}

int manifest_xattr(const struct manifest_entry *e, const char *name, const uint8_t **val,
		   uint32_t *vlen)
{
	size_t nl = strlen(name), at = 0;

	while (at + 2 <= e->xattrs_len) {
		uint16_t klen = get_le16(e->xattrs + at);
		uint32_t l;

		if (at + 2 + klen + 4 > e->xattrs_len)
			return 0;
		l = get_le32(e->xattrs + at + 2 + klen);
		if (at + 6 + klen + l > e->xattrs_len)
			return 0;
		if (klen == nl && !memcmp(e->xattrs + at + 2, name, nl)) {
			*val = e->xattrs + at + 6 + klen;
			*vlen = l;
			return 1;
		}
		at += 6 + klen + l;
	}
	return 0;
}

static int sha256(const uint8_t *p, size_t len, uint8_t out[MANIFEST_SHA])
{
	unsigned olen = 0;

	return EVP_Digest(p, len, out, &olen, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

static int put_str(struct buf *b, const char *s)
{
	size_t l = s ? strlen(s) : 0;

	if (l > UINT32_MAX)
		return -EINVAL;
	if (buf_put32(b, (uint32_t)l) < 0)
		return -ENOMEM;
	return buf_put(b, s, l) < 0 ? -ENOMEM : 0;
}

static int put_vec(struct buf *b, const struct evid *v, uint32_t n)
{
	uint32_t i;
	int r = buf_put32(b, n);

	for (i = 0; r == 0 && i < n; i++) {
		r = buf_put64(b, v[i].origin);
		if (r == 0)
			r = buf_put64(b, v[i].seq);
	}
	return r;
}

static int put_entry(struct buf *b, const struct manifest_entry *e)
{
	int r = put_str(b, e->path);

	r = r ?: buf_put32(b, e->mode);
	r = r ?: buf_put32(b, e->uid);
	r = r ?: buf_put32(b, e->gid);
	r = r ?: buf_put64(b, (uint64_t)e->mtime_sec);
	r = r ?: buf_put32(b, e->mtime_nsec);
	r = r ?: buf_put64(b, e->size);
	r = r ?: buf_put64(b, e->rdev);
	r = r ?: buf_put64(b, e->link);
	r = r ?: buf_put(b, (uint8_t[1]){e->has_sha ? 1 : 0}, 1);
	if (r == 0 && e->has_sha)
		r = buf_put(b, e->sha, MANIFEST_SHA);
	r = r ?: put_str(b, e->target);
	r = r ?: buf_put32(b, e->xattrs_len);
	r = r ?: buf_put(b, e->xattrs, e->xattrs_len);
	return r;
}

int manifest_encode(const struct manifest *m, uint8_t **out, size_t *len)
{
	struct buf b = BUF_INIT;
	uint8_t sum[MANIFEST_SHA];
	size_t i;
	int r;

	r = buf_put(&b, MANIFEST_MAGIC, MAGIC_LEN);
	r = r ?: buf_put32(&b, MANIFEST_FORMAT);
	r = r ?: buf_put64(&b, m->created);
	r = r ?: put_str(&b, m->node);
	r = r ?: buf_put64(&b, m->node_id);
	r = r ?: buf_put(&b, m->cluster, sizeof(m->cluster));
	r = r ?: put_vec(&b, m->from, m->nfrom);
	r = r ?: put_vec(&b, m->pos, m->npos);
	r = r ?: buf_put(&b, m->events_sha, MANIFEST_SHA);
	r = r ?: buf_put64(&b, m->events_bytes);
	r = r ?: buf_put64(&b, m->events_count);
	r = r ?: buf_put64(&b, m->term);
	r = r ?: buf_put32(&b, m->nfences);
	for (i = 0; r == 0 && i < m->nfences; i++) {
		r = buf_put64(&b, m->fences[i].origin);
		r = r ?: buf_put64(&b, m->fences[i].term);
		r = r ?: buf_put64(&b, m->fences[i].seq);
	}
	r = r ?: buf_put64(&b, m->n);
	for (i = 0; r == 0 && i < m->n; i++)
		r = put_entry(&b, &m->e[i]);
	r = r ?: sha256(b.data, b.len, sum);
	r = r ?: buf_put(&b, sum, sizeof(sum));
	if (r < 0) {
		buf_free(&b);
		return r == -EOVERFLOW ? -ENOMEM : r;
	}
	*out = b.data;
	*len = b.len;
	return 0;
}

/* A reader over the body: every get checks the length left. */
struct cur {
	const uint8_t *p;
	size_t left;
	int bad;
};

static const uint8_t *take(struct cur *c, size_t n)
{
	const uint8_t *p = c->p;

	if (c->bad || n > c->left) {
		c->bad = 1;
		return NULL;
	}
	c->p += n;
	c->left -= n;
	return p;
}

static uint32_t get32(struct cur *c)
{
	const uint8_t *p = take(c, 4);

	return p ? get_le32(p) : 0;
}

static uint64_t get64(struct cur *c)
{
	const uint8_t *p = take(c, 8);

	return p ? get_le64(p) : 0;
}

/* A string of at most max bytes without NULs, malloc'd (NULL for an empty one if opt). */
static int get_str(struct cur *c, size_t max, int opt, char **out)
{
	uint32_t l = get32(c);
	const uint8_t *p;

	*out = NULL;
	if (c->bad || l > max || l > c->left)
		return -EBADMSG;
	p = take(c, l);
	if (memchr(p, '\0', l))
		return -EBADMSG;
	if (l == 0 && opt)
		return 0;
	*out = malloc((size_t)l + 1);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, p, l);
	(*out)[l] = '\0';
	return 0;
}

static int get_vec(struct cur *c, struct evid **v, uint32_t *n)
{
	uint32_t count = get32(c), i;

	if (c->bad || count > c->left / 16)
		return -EBADMSG;
	*v = calloc(count ? count : 1, sizeof(**v));
	if (!*v)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		(*v)[i].origin = get64(c);
		(*v)[i].seq = get64(c);
	}
	*n = count;
	return 0;
}

static int get_entry(struct cur *c, size_t index, struct manifest_entry *e, const char **why)
{
	const uint8_t *p;
	int r;

	r = get_str(c, 65535, 0, &e->path);
	if (r < 0) {
		*why = "bad entry path";
		return r;
	}
	e->mode = get32(c);
	e->uid = get32(c);
	e->gid = get32(c);
	e->mtime_sec = (int64_t)get64(c);
	e->mtime_nsec = get32(c);
	e->size = get64(c);
	e->rdev = get64(c);
	e->link = get64(c);
	p = take(c, 1);
	if (p && *p > 1)
		c->bad = 1;
	e->has_sha = p && *p;
	if (e->has_sha && (p = take(c, MANIFEST_SHA)))
		memcpy(e->sha, p, MANIFEST_SHA);
	if (c->bad || e->mtime_nsec >= 1000000000u ||
	    (e->link != MANIFEST_NOLINK && e->link >= index)) {
		*why = "bad entry";
		return -EBADMSG;
	}
	r = get_str(c, 4095, 1, &e->target);
	if (r < 0) {
		*why = "bad symlink target";
		return r;
	}
	e->xattrs_len = get32(c);
	if (c->bad || e->xattrs_len > c->left) {
		*why = "truncated xattrs";
		return -EBADMSG;
	}
	if (e->xattrs_len) {
		e->xattrs = malloc(e->xattrs_len);
		if (!e->xattrs)
			return -ENOMEM;
		memcpy(e->xattrs, take(c, e->xattrs_len), e->xattrs_len);
	}
	return 0;
}

int manifest_decode(const uint8_t *buf, size_t len, struct manifest *m, const char **why)
{
	struct cur c;
	uint8_t sum[MANIFEST_SHA];
	uint64_t count, i;
	char *node = NULL;
	const uint8_t *p;
	int r;

	memset(m, 0, sizeof(*m));
	*why = NULL;
	if (len < MAGIC_LEN + 4 + MANIFEST_SHA || memcmp(buf, MANIFEST_MAGIC, MAGIC_LEN)) {
		*why = "not a manifest (bad magic or too short)";
		return -EBADMSG;
	}
	r = sha256(buf, len - MANIFEST_SHA, sum);
	if (r < 0) {
		*why = "cannot compute SHA-256";
		return r;
	}
	if (memcmp(sum, buf + len - MANIFEST_SHA, MANIFEST_SHA)) {
		*why = "checksum mismatch";
		return -EBADMSG;
	}
	c = (struct cur){buf + MAGIC_LEN, len - MAGIC_LEN - MANIFEST_SHA, 0};
	if (get32(&c) != MANIFEST_FORMAT) {
		*why = "unknown manifest format";
		return -EPROTO;
	}
	m->created = get64(&c);
	r = get_str(&c, MANIFEST_NAME_MAX, 1, &node);
	if (r < 0)
		goto bad;
	if (node)
		memcpy(m->node, node, strlen(node) + 1);
	free(node);
	m->node_id = get64(&c);
	p = take(&c, sizeof(m->cluster));
	if (p)
		memcpy(m->cluster, p, sizeof(m->cluster));
	r = get_vec(&c, &m->from, &m->nfrom);
	r = r ?: get_vec(&c, &m->pos, &m->npos);
	if (r < 0)
		goto bad;
	p = take(&c, MANIFEST_SHA);
	if (p)
		memcpy(m->events_sha, p, MANIFEST_SHA);
	m->events_bytes = get64(&c);
	m->events_count = get64(&c);
	m->term = get64(&c);
	m->nfences = get32(&c);
	if (c.bad || m->nfences > c.left / 24) {
		m->nfences = 0;
		r = -EBADMSG;
		goto bad;
	}
	m->fences = calloc(m->nfences ? m->nfences : 1, sizeof(*m->fences));
	if (!m->fences) {
		m->nfences = 0;
		r = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < m->nfences; i++) {
		m->fences[i].origin = get64(&c);
		m->fences[i].term = get64(&c);
		m->fences[i].seq = get64(&c);
	}
	count = get64(&c);
	if (c.bad || count > c.left / 40) {
		r = -EBADMSG;
		goto bad;
	}
	for (i = 0; i < count; i++) {
		struct manifest_entry e = {0};

		r = get_entry(&c, (size_t)i, &e, why);
		if (r == 0)
			r = manifest_add(m, &e);
		else
			manifest_entry_free(&e);
		if (r < 0)
			goto fail;
	}
	if (c.left) {
		*why = "bytes after the last entry";
		r = -EBADMSG;
		goto fail;
	}
	return 0;
bad:
	if (!*why)
		*why = "truncated header";
	if (r == 0)
		r = -EBADMSG;
fail:
	if (!*why)
		*why = r == -ENOMEM ? "out of memory" : "truncated entry";
	manifest_free(m);
	return r;
}
