/*
 * fsck_tree.c - a directory tree as fsck.ledgerfs compares it: the lines
 * of its digest listing, each with the entry's stat and fid.
 *
 * The listing comes from digest_tree(), so that "equal" means the same to
 * fsck as to `ledgerctl digest`, which the crash tests and replicas use.
 * Its lines carry escaped paths; they are unescaped here and looked up
 * again beneath the tree's root for what the listing leaves out (the fid,
 * the inode that tells hard links apart).  Entries are sorted in the
 * digest's walk order, which puts a directory before everything in it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsck.h"
#include "store/digest.h"
#include "store/path.h"

void fsck_tree_unload(struct fsck_tree *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].path);
	free(t->v);
	free(t->buf);
	t->v = NULL;
	t->n = 0;
	t->buf = NULL;
	t->len = 0;
}

void fsck_tree_free(struct fsck_tree *t)
{
	fsck_tree_unload(t);
	store_close(t->store);
	free(t->dir);
}

/* Byte order with '/' lowest and the root first: the digest's walk order. */
int fsck_path_cmp(const char *a, const char *b)
{
	int ra = !strcmp(a, "."), rb = !strcmp(b, ".");

	if (ra || rb)
		return rb - ra;
	for (;; a++, b++) {
		int ca = *a == '/' ? 1 : *a ? (unsigned char)*a + 1 : 0;
		int cb = *b == '/' ? 1 : *b ? (unsigned char)*b + 1 : 0;

		if (ca != cb || !ca)
			return ca - cb;
	}
}

static int entry_cmp(const void *a, const void *b)
{
	return fsck_path_cmp(((const struct fsck_entry *)a)->path,
			     ((const struct fsck_entry *)b)->path);
}

struct fsck_entry *fsck_tree_find(struct fsck_tree *t, const char *path)
{
	struct fsck_entry key = {.path = (char *)path};

	return bsearch(&key, t->v, t->n, sizeof(key), entry_cmp);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Undo the listing's escapes (\n, \\, \xNN).  The result is malloc'd. */
static char *unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (!out)
		return NULL;
	while (*s) {
		if (s[0] == '\\' && s[1] == 'n') {
			*o++ = '\n';
			s += 2;
		} else if (s[0] == '\\' && s[1] == 'x' && hexval(s[2]) >= 0 && hexval(s[3]) >= 0) {
			*o++ = (char)(hexval(s[2]) << 4 | hexval(s[3]));
			s += 4;
		} else if (s[0] == '\\' && s[1] == '\\') {
			*o++ = '\\';
			s += 2;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

/* Stat and fid of e, looked up beneath the tree's root. */
int fsck_entry_load(struct fsck_tree *t, struct fsck_entry *e)
{
	int fd = -1, r;

	r = path_open(t->store->root, e->path, O_PATH, 0, &fd);
	if (r < 0)
		return r;
	if (fstat(fd, &e->st) < 0) {
		r = -errno;
		goto out;
	}
	r = store_get_ids(fd, &e->fid, NULL);
	e->has_fid = r == 0;
	if (r == -ENODATA)
		r = 0;
out:
	close(fd);
	return r;
}

/* Cut one listing line (NUL-terminated) into an entry. */
static int entry_parse(struct fsck_tree *t, char *line)
{
	struct fsck_entry *e;
	char *p = line;
	int spaces = 0, r;

	while (*p && spaces < 6)
		if (*p++ == ' ')
			spaces++;
	if (spaces < 6 || !*p) {
		fprintf(stderr, "fsck.ledgerfs: %s: unexpected digest line '%s'\n", t->dir, line);
		return -EPROTO;
	}
	p[-1] = '\0';
	e = &t->v[t->n];
	*e = (struct fsck_entry){.esc = p, .attrs = line, .path = unescape(p)};
	if (!e->path)
		return -ENOMEM;
	t->n++;
	r = fsck_entry_load(t, e);
	if (r < 0)
		fprintf(stderr, "fsck.ledgerfs: %s/%s: %s\n", t->dir, e->esc, strerror(-r));
	return r;
}

/* List every entry of the tree with its digest line, stat and fid, sorted by path. */
int fsck_tree_load(struct fsck *f, struct fsck_tree *t)
{
	unsigned char d[DIGEST_LEN];
	size_t lines = 0, i;
	FILE *ms;
	char *p, *nl;
	int r;

	fsck_progress(f, "reading %s", t->dir);
	ms = open_memstream(&t->buf, &t->len);
	if (!ms)
		return -errno;
	r = digest_tree(t->dir, d, ms);
	if (fclose(ms) != 0 && r == 0)
		r = -errno;
	if (r < 0)
		return r;
	for (i = 0; i < t->len; i++)
		lines += t->buf[i] == '\n';
	t->v = calloc(lines ? lines : 1, sizeof(*t->v));
	if (!t->v)
		return -ENOMEM;
	for (p = t->buf; r == 0 && (nl = strchr(p, '\n')); p = nl + 1) {
		*nl = '\0';
		r = entry_parse(t, p);
	}
	qsort(t->v, t->n, sizeof(*t->v), entry_cmp);
	return r;
}
