/*
 * snap_meta.c - a snapshot entry's metadata and its xattr blob (see
 * snap_meta.h and snapshot.h).
 */
#include <errno.h>
#include <linux/limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bytes.h"
#include "resync/snap_meta.h"
#include "store/store.h"
#include "store/xattr_at.h"

#define ID_XATTR_LEN 16

void snap_meta_free(struct snap_meta *m)
{
	free(m->target);
	free(m->xattrs);
	memset(m, 0, sizeof(*m));
}

/* Byte order of names, the shorter first when one is a prefix of the other (strcmp's order). */
static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static bool name_is(const struct xent *e, const char *name)
{
	return e->name_len == strlen(name) && !memcmp(e->name, name, e->name_len);
}

/*
 * The entry at *off of a blob, advancing *off; *off must be at an entry of
 * a blob that snap_xattrs_check() accepted, which makes every read in range.
 */
void xattr_blob_next(const uint8_t *blob, size_t *off, struct xent *e)
{
	const uint8_t *p = blob + *off;

	e->name_len = p[0];
	e->name = p + 1;
	e->value_len = get_le32(p + 1 + e->name_len);
	e->value = p + 1 + e->name_len + 4;
	*off += 1 + e->name_len + 4 + e->value_len;
}

/* Entries of a checked blob; 0 for an empty one. */
unsigned xattr_blob_count(const uint8_t *blob, size_t len)
{
	return len >= 2 ? get_le16(blob) : 0;
}

/* Read one entry of an unchecked blob at *off: lengths, name rules, order. */
static int check_entry(const uint8_t *blob, size_t len, size_t *off, struct xent *prev,
		       struct xent *e, const char **why)
{
	if (len - *off < 1 + 1 + 4) {
		*why = "xattr blob truncated";
		return -EBADMSG;
	}
	e->name_len = blob[*off];
	if (e->name_len == 0) {
		*why = "empty xattr name";
		return -EBADMSG;
	}
	if (len - *off - 1 < e->name_len + 4) {
		*why = "xattr blob truncated";
		return -EBADMSG;
	}
	e->name = blob + *off + 1;
	e->value_len = get_le32(e->name + e->name_len);
	e->value = e->name + e->name_len + 4;
	if (memchr(e->name, 0, e->name_len)) {
		*why = "NUL in an xattr name";
		return -EBADMSG;
	}
	if (!xattr_replicated((const char *)e->name, e->name_len)) {
		*why = "node-own trusted.ledgerfs xattr in a blob";
		return -EBADMSG;
	}
	if (prev->name && name_cmp(prev->name, prev->name_len, e->name, e->name_len) >= 0) {
		*why = "xattr names not sorted";
		return -EBADMSG;
	}
	if (e->value_len > XATTR_SIZE_MAX || len - *off - 1 - e->name_len - 4 < e->value_len) {
		*why =
		    e->value_len > XATTR_SIZE_MAX ? "xattr value too long" : "xattr blob truncated";
		return -EBADMSG;
	}
	*off += 1 + e->name_len + 4 + e->value_len;
	return 0;
}

int snap_xattrs_check(const uint8_t *blob, size_t len, struct fid *fid, struct evid *ver,
		      const char **why)
{
	struct xent prev = {0}, e;
	struct fid f = {0};
	struct evid v = {0};
	size_t off = 2;
	unsigned count, i;
	int err;

	if (len == 0)
		goto done;
	if (len < 2 || !blob) {
		*why = "xattr blob shorter than its count";
		return -EBADMSG;
	}
	count = get_le16(blob);
	for (i = 0; i < count; i++) {
		err = check_entry(blob, len, &off, &prev, &e, why);
		if (err)
			return err;
		/* Like store_get_ids(), an id of another length reads as none. */
		if (name_is(&e, STORE_XATTR_FID) && e.value_len == ID_XATTR_LEN) {
			f.origin = get_le64(e.value);
			f.counter = get_le64(e.value + 8);
		} else if (name_is(&e, STORE_XATTR_VER) && e.value_len == ID_XATTR_LEN) {
			v.origin = get_le64(e.value);
			v.seq = get_le64(e.value + 8);
		}
		prev = e;
	}
	if (off != len) {
		*why = "trailing bytes after the xattrs";
		return -EBADMSG;
	}
done:
	if (fid)
		*fid = f;
	if (ver)
		*ver = v;
	return 0;
}

/* Set every xattr of a checked blob on fd. */
/* True if the checked blob holds an xattr named like e (and with e's value, if value). */
bool xattr_blob_holds(const uint8_t *blob, size_t len, const struct xent *e, bool value)
{
	unsigned i, count = xattr_blob_count(blob, len);
	size_t off = 2;
	struct xent x;

	for (i = 0; i < count; i++) {
		xattr_blob_next(blob, &off, &x);
		if (x.name_len != e->name_len || memcmp(x.name, e->name, x.name_len))
			continue;
		return !value ||
		       (x.value_len == e->value_len && !memcmp(x.value, e->value, x.value_len));
	}
	return false;
}

