/*
 * digest.c - one SHA-256 for a whole directory tree (see digest.h).
 *
 * Convergence (DESIGN.md, invariant 4) is checked by comparing these
 * digests across nodes, so the digest covers exactly what replication must
 * make equal and nothing that legitimately differs between replicas.
 *
 * Each entry is hashed on its own from a fixed sequence of fields, every
 * variable-length field preceded by its length, so two different entries
 * can never feed the same bytes.  The tree digest is SHA-256 over the
 * (path, entry hash) pairs in walk order: names sorted byte-wise within a
 * directory, a directory's entries right after the directory itself.
 *
 * Symlinks below the root are never followed (the root itself is opened as
 * given, so a symlink naming a tree works): entries are opened relative to their parent
 * with O_NOFOLLOW, and xattrs of entries without an open fd are read with
 * l*xattr() through /proc/self/fd/PARENT/NAME.  The walk is lib/treewalk.c's,
 * which keeps one directory fd open however deep the tree.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "lib/grow.h"
#include "lib/treewalk.h"
#include "store/digest.h"
#include "store/xattr_at.h"

/* Read buffer for file contents, allocated once per digest_tree() call. */
#define READ_BUF_SIZE (1 << 20)

/* Fed first into the tree digest, so a future change of format changes every digest. */
#define TREE_DOMAIN "ledgerfs tree digest v1"

struct digest_walk {
	const char *root;
	FILE *list;
	EVP_MD_CTX *tree;   /* over (path, entry hash) pairs */
	EVP_MD_CTX *entry;  /* reset for each entry */
	unsigned char *buf; /* READ_BUF_SIZE bytes: file contents, symlink targets */
	const struct treewalk *tw; /* its path is the current entry's, "" for the root */
	char *xnames; /* llistxattr() output */
	size_t xnames_cap;
	char **xsorted; /* pointers into xnames, sorted */
	size_t xsorted_cap;
	unsigned char *xval; /* one xattr value */
	size_t xval_cap;
};

/* The entry's path as shown to people: the root is ".". */
static const char *entry_path(const struct digest_walk *w)
{
	return relpath_str(&w->tw->path);
}

static int report(const struct digest_walk *w, int err, const char *why)
{
	bool below = w->tw->path.len;

	fprintf(stderr, "ledgerctl: digest: %s%s%s: %s\n", w->root, below ? "/" : "",
		below ? w->tw->path.p : "", why ? why : strerror(-err));
	return err;
}

static int h_update(EVP_MD_CTX *c, const void *p, size_t n)
{
	return EVP_DigestUpdate(c, p, n) == 1 ? 0 : -EIO;
}

static int h_u64(EVP_MD_CTX *c, uint64_t v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	return h_update(c, b, sizeof(b));
}

static int h_bytes(EVP_MD_CTX *c, const void *p, size_t n)
{
	int err = h_u64(c, n);

	return err ? err : h_update(c, p, n);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Hash the xattrs of an entry: through fd when it is >= 0, else through
 * procpath without following a symlink at its end.
 */
static int hash_xattrs(struct digest_walk *w, int fd, const char *procpath)
{
	size_t i, n = 0;
	ssize_t len, vlen;
	char *p;
	int err;

	for (;;) {
		len = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(procpath, NULL, 0);
		if (len < 0 && (errno == ENOTSUP || errno == ENODATA))
			len = 0;
		if (len < 0)
			return report(w, -errno, NULL);
		if (len == 0)
			break;
		err = grow_array(&w->xnames, &w->xnames_cap, (size_t)len);
		if (err)
			return report(w, err, NULL);
		len = fd >= 0 ? flistxattr(fd, w->xnames, w->xnames_cap)
			      : llistxattr(procpath, w->xnames, w->xnames_cap);
		if (len >= 0)
			break;
		/* The list grew between the two calls: ask again. */
		if (errno != ERANGE)
			return report(w, -errno, NULL);
	}
	for (p = w->xnames; p < w->xnames + len; p += strlen(p) + 1) {
		/* ledgerfs's own bookkeeping (fids, versions) differs per node. */
		if (xattr_is_ledgerfs(p, strlen(p)))
			continue;
		err = grow_array(&w->xsorted, &w->xsorted_cap, n + 1);
		if (err)
			return report(w, err, NULL);
		w->xsorted[n++] = p;
	}
	if (n > 1)
		qsort(w->xsorted, n, sizeof(char *), cmp_str);
	err = h_u64(w->entry, n);
	for (i = 0; i < n && !err; i++) {
		const char *name = w->xsorted[i];

		for (;;) {
			vlen = fd >= 0 ? fgetxattr(fd, name, NULL, 0)
				       : lgetxattr(procpath, name, NULL, 0);
			if (vlen < 0)
				return report(w, -errno, NULL);
			err = grow_array(&w->xval, &w->xval_cap, (size_t)vlen + 1);
			if (err)
				return report(w, err, NULL);
			vlen = fd >= 0 ? fgetxattr(fd, name, w->xval, w->xval_cap)
				       : lgetxattr(procpath, name, w->xval, w->xval_cap);
			if (vlen >= 0)
				break;
			if (errno != ERANGE)
				return report(w, -errno, NULL);
		}
		err = h_bytes(w->entry, name, strlen(name));
		if (!err)
			err = h_bytes(w->entry, w->xval, (size_t)vlen);
	}
	return err ? report(w, err, NULL) : 0;
}

/* Hash size, then contents read from fd, which must match the size. */
static int hash_contents(struct digest_walk *w, int fd, off_t size)
{
	uint64_t total = 0;
	ssize_t n;
	int err;

	err = h_u64(w->entry, (uint64_t)size);
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
		err = h_update(w->entry, w->buf, (size_t)n);
	}
	if (err)
		return report(w, err, NULL);
	if (total != (uint64_t)size)
		return report(w, -EAGAIN, "changed while being read");
	return 0;
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

static void list_path(FILE *f, const char *p)
{
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '\n')
			fputs("\\n", f);
		else if (c == '\\')
			fputs("\\\\", f);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

static void list_entry(struct digest_walk *w, const struct stat *st,
		       const unsigned char h[DIGEST_LEN])
{
	char hex[2 * DIGEST_LEN + 1];

	digest_hex(h, hex);
	fprintf(w->list, "%s %c %04o %ju:%ju ", hex, type_char(st->st_mode),
		(unsigned)(st->st_mode & 07777), (uintmax_t)st->st_uid, (uintmax_t)st->st_gid);
	/* Size and mtime are part of the digest for regular files only. */
	if (S_ISREG(st->st_mode))
		fprintf(w->list, "%jd %jd ", (intmax_t)st->st_size,
			(intmax_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
	else
		fputs("- - ", w->list);
	list_path(w->list, entry_path(w));
	fputc('\n', w->list);
}

/*
 * Hash one entry whose stat is st.  fd is an open fd of the entry (a
 * directory or regular file) or -1; dirfd and name locate it otherwise.
 */
static int hash_entry(struct digest_walk *w, const struct stat *st, int fd, int dirfd,
		      const char *name)
{
	unsigned char h[DIGEST_LEN];
	unsigned char type = (unsigned char)type_char(st->st_mode);
	char procpath[64 + NAME_MAX];
	int64_t mtime_ns;
	ssize_t n;
	int err;

	if (EVP_DigestInit_ex(w->entry, EVP_sha256(), NULL) != 1)
		return report(w, -EIO, "SHA-256 unavailable");
	err = h_update(w->entry, &type, 1);
	if (!err)
		err = h_u64(w->entry, st->st_mode & 07777);
	if (!err)
		err = h_u64(w->entry, st->st_uid);
	if (!err)
		err = h_u64(w->entry, st->st_gid);
	if (err)
		return report(w, err, NULL);
	snprintf(procpath, sizeof(procpath), "/proc/self/fd/%d/%s", dirfd, name);
	err = hash_xattrs(w, fd, procpath);
	if (err)
		return err;
	switch (st->st_mode & S_IFMT) {
	case S_IFREG:
		err = hash_contents(w, fd, st->st_size);
		if (err)
			return err;
		mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
		err = h_u64(w->entry, (uint64_t)mtime_ns);
		break;
	case S_IFLNK:
		n = readlinkat(dirfd, name, (char *)w->buf, READ_BUF_SIZE);
		if (n < 0)
			return report(w, -errno, NULL);
		if (n == READ_BUF_SIZE)
			return report(w, -ENAMETOOLONG, NULL);
		err = h_bytes(w->entry, w->buf, (size_t)n);
		break;
	case S_IFCHR:
	case S_IFBLK:
		err = h_u64(w->entry, major(st->st_rdev));
		if (!err)
			err = h_u64(w->entry, minor(st->st_rdev));
		break;
	}
	if (!err && EVP_DigestFinal_ex(w->entry, h, NULL) != 1)
		err = -EIO;
	if (!err)
		err = h_bytes(w->tree, entry_path(w), strlen(entry_path(w)));
	if (!err)
		err = h_update(w->tree, h, sizeof(h));
	if (err)
		return report(w, err, NULL);
	if (w->list)
		list_entry(w, st, h);
	return 0;
}

/* Walking into a directory: hash it through its fd (the root too). */
static int digest_enter(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	return hash_entry(tw->arg, st, fd, fd, ".");
}

/*
 * Hash a non-directory below dfd, through an fd when it is a regular file,
 * stat'd through that fd so that what is hashed is what is read.  A
 * directory is walked into and hashed by digest_enter().
 */
static int digest_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *seen,
			size_t index, size_t count, void *dir, void **sub)
{
	struct digest_walk *w = tw->arg;
	struct stat st = *seen;
	int fd = -1, err;

	if (S_ISDIR(st.st_mode))
		return TREEWALK_DESCEND;
	if (S_ISREG(st.st_mode)) {
		fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0)
			return report(w, -errno, NULL);
		if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			close(fd);
			return report(w, -EAGAIN, "changed while being read");
		}
	}
	err = hash_entry(w, &st, fd, dfd, name);
	if (fd >= 0)
		close(fd);
	return err;
}

static int digest_fail(struct treewalk *tw, int err, const char *why)
{
	return report(tw->arg, err, why);
}

static const struct treewalk_ops digest_ops = {
    .enter = digest_enter,
    .entry = digest_entry,
    .fail = digest_fail,
};

int digest_tree(const char *root, unsigned char out[DIGEST_LEN], FILE *list)
{
	struct treewalk tw = {.fd = -1};
	struct digest_walk w = {.root = root, .list = list, .tw = &tw};
	int err;

	w.tree = EVP_MD_CTX_new();
	w.entry = EVP_MD_CTX_new();
	w.buf = malloc(READ_BUF_SIZE);
	if (!w.tree || !w.entry || !w.buf) {
		err = report(&w, -ENOMEM, NULL);
		goto out;
	}
	if (EVP_DigestInit_ex(w.tree, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(w.tree, TREE_DOMAIN, sizeof(TREE_DOMAIN)) != 1) {
		err = report(&w, -EIO, "SHA-256 unavailable");
		goto out;
	}
	err = treewalk_open(&tw, AT_FDCWD, root, 0);
	if (err) {
		report(&w, err, NULL);
		goto out;
	}
	err = treewalk_run(&tw, &digest_ops, &w, NULL);
	if (!err && EVP_DigestFinal_ex(w.tree, out, NULL) != 1)
		err = report(&w, -EIO, "SHA-256 failed");
out:
	treewalk_close(&tw);
	free(w.xval);
	free(w.xsorted);
	free(w.xnames);
	free(w.buf);
	EVP_MD_CTX_free(w.entry);
	EVP_MD_CTX_free(w.tree);
	return err;
}

void digest_hex(const unsigned char d[DIGEST_LEN], char *hex)
{
	static const char digits[] = "0123456789abcdef";
	int i;

	for (i = 0; i < DIGEST_LEN; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[2 * DIGEST_LEN] = '\0';
}
