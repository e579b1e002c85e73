/*
 * repo.c - a backup repository on disk (repo.h): blobs written whole or
 * not at all, manifests written atomically.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/repo.h"
#include "lib/files.h"
#include "lib/grow.h"

static atomic_uint tmp_counter;

void repo_hex(const uint8_t sha[MANIFEST_SHA], char out[2 * MANIFEST_SHA + 1])
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < MANIFEST_SHA; i++) {
		out[2 * i] = digits[sha[i] >> 4];
		out[2 * i + 1] = digits[sha[i] & 15];
	}
	out[2 * MANIFEST_SHA] = '\0';
}

void repo_blob_path(const uint8_t sha[MANIFEST_SHA], char out[REPO_BLOB_PATH])
{
	char hex[2 * MANIFEST_SHA + 1];

	repo_hex(sha, hex);
	snprintf(out, REPO_BLOB_PATH, REPO_PACKS "/%.2s/%s", hex, hex);
}

/* Remove temp files of processes that are gone (a backup killed half-way). */
static void clean_tmp(struct repo *r)
{
	int fd = openat(r->fd, REPO_TMP, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d))) {
		long pid = strtol(de->d_name, NULL, 10);

		if (de->d_name[0] == '.')
			continue;
		if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno == ESRCH))
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

static int check_config(struct repo *r, char *err, size_t errlen)
{
	char text[256], head[64];
	unsigned format = 0;
	ssize_t n;
	int fd = openat(r->fd, REPO_CONFIG, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "%s/%s: %s (not a backup repository?)", r->dir, REPO_CONFIG,
			 strerror(errno));
		return -errno;
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "%s/%s: %s", r->dir, REPO_CONFIG, strerror(errno));
		return -EIO;
	}
	text[n] = '\0';
	if (sscanf(text, "%63[^\n]\nformat %u", head, &format) != 2 ||
	    strcmp(head, REPO_CONFIG_HEAD)) {
		snprintf(err, errlen, "%s/%s: not a ledgerfs backup repository's config", r->dir,
			 REPO_CONFIG);
		return -EBADMSG;
	}
	if (format != REPO_FORMAT) {
		snprintf(err, errlen, "%s/%s: repository format %u, this ledgerctl reads %d",
			 r->dir, REPO_CONFIG, format, REPO_FORMAT);
		return -EPROTO;
	}
	return 0;
}

static int create_layout(const char *dir, char *err, size_t errlen)
{
	static const char *const subdirs[] = {REPO_PACKS, REPO_MANIFESTS, REPO_TMP};
	char path[PATH_MAX], text[64];
	size_t i;
	int r;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s: cannot create the repository: %s", dir, strerror(errno));
		return -errno;
	}
	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			return -errno;
		}
	}
	/* The config last: a repository with one is whole. */
	snprintf(path, sizeof(path), "%s/%s", dir, REPO_CONFIG);
	snprintf(text, sizeof(text), REPO_CONFIG_HEAD "\nformat %d\n", REPO_FORMAT);
	r = file_write_atomic(path, text, strlen(text), 0600);
	if (r < 0)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	return r;
}

int repo_open(const char *dir, int create, struct repo **out, char *err, size_t errlen)
{
	struct repo *r;
	struct stat st;
	char cfg[PATH_MAX];
	int ret;

	if (strlen(dir) >= sizeof(r->dir) - 80) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	snprintf(cfg, sizeof(cfg), "%s/%s", dir, REPO_CONFIG);
	if (create && stat(cfg, &st) < 0 && errno == ENOENT) {
		ret = stat(dir, &st) < 0 ? (errno == ENOENT ? 1 : -errno) : dir_is_empty(dir);
		if (ret < 0) {
			snprintf(err, errlen, "%s: %s", dir, strerror(-ret));
			return ret;
		}
		if (ret == 0) {
			snprintf(err, errlen,
				 "%s: neither a backup repository nor empty: refusing to use it",
				 dir);
			return -ENOTEMPTY;
		}
		ret = create_layout(dir, err, errlen);
		if (ret < 0)
			return ret;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "%s: out of memory", dir);
		return -ENOMEM;
	}
	snprintf(r->dir, sizeof(r->dir), "%s", dir);
	r->lock_fd = -1;
	r->fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (r->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		free(r);
		return ret;
	}
	ret = check_config(r, err, errlen);
	if (ret < 0) {
		repo_close(r);
		return ret;
	}
	clean_tmp(r);
	*out = r;
	return 0;
}

int repo_lock(struct repo *r, int exclusive, int wait)
{
	if (r->lock_fd < 0) {
		r->lock_fd = openat(r->fd, REPO_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (r->lock_fd < 0)
			return -errno;
	}
	if (flock(r->lock_fd, (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)) < 0)
		return -errno;
	return 0;
}

void repo_close(struct repo *r)
{
	if (!r)
		return;
	if (r->lock_fd >= 0)
		close(r->lock_fd);
	close(r->fd);
	free(r);
}

int repo_blob_has(struct repo *r, const uint8_t sha[MANIFEST_SHA])
{
	char path[REPO_BLOB_PATH];
	struct stat st;

	repo_blob_path(sha, path);
	if (fstatat(r->fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return S_ISREG(st.st_mode);
	return errno == ENOENT ? 0 : -errno;
}

int repo_hash_fd(int fd, uint8_t *buf, size_t buflen, uint8_t sha[MANIFEST_SHA], uint64_t *size)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint64_t off = 0;
	ssize_t n;
	int r = 0;

	if (!ctx)
		return -ENOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		r = -EIO;
	while (r == 0) {
		n = pread(fd, buf, buflen, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			r = -EIO;
		off += (uint64_t)n;
	}
	if (r == 0 && EVP_DigestFinal_ex(ctx, sha, NULL) != 1)
		r = -EIO;
	EVP_MD_CTX_free(ctx);
	if (r == 0 && size)
		*size = off;
	return r;
}

/* A temp file in tmp/: its name into tmp, its descriptor or -errno (err set). */
static int open_tmp(struct repo *r, char tmp[64], char *err, size_t errlen)
{
	int out;

	snprintf(tmp, 64, REPO_TMP "/%ld-%u", (long)getpid(), atomic_fetch_add(&tmp_counter, 1));
	out = openat(r->fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0) {
		out = -errno;
		snprintf(err, errlen, "%s/%s: %s", r->dir, tmp, strerror(errno));
	}
	return out;
}

/* Give the durable temp file tmp the blob's name.  0 or -errno (err set; tmp stays). */
static int rename_tmp(struct repo *r, const char *tmp, const uint8_t sha[MANIFEST_SHA], char *err,
		      size_t errlen)
{
	char path[REPO_BLOB_PATH], dir[sizeof(REPO_PACKS) + 4];

	repo_blob_path(sha, path);
	memcpy(dir, path, sizeof(REPO_PACKS) + 2);
	dir[sizeof(REPO_PACKS) + 2] = '\0';
	if (mkdirat(r->fd, dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "%s/%s: %s", r->dir, dir, strerror(errno));
		return -errno;
	}
	if (renameat(r->fd, tmp, r->fd, path) < 0) {
		int ret = -errno;

		snprintf(err, errlen, "%s/%s: %s", r->dir, path, strerror(errno));
		return ret;
	}
	return 0;
}

/*
 * Close the temp file out and name it: without batch, made durable and
 * renamed now; with it, renamed by repo_batch_commit().  The name's
 * directory entry is made durable by repo_sync(), before any manifest
 * names it; a crash before that loses the name, and the next backup
 * stores the blob again.  0 or -errno (err set; tmp removed).
 */
static int name_tmp(struct repo *r, struct repo_batch *batch, int out, const char *tmp,
		    const uint8_t sha[MANIFEST_SHA], off_t size, char *err, size_t errlen)
{
	int ret = 0;

	if (!batch && fsync(out) < 0)
		ret = -errno;
	if (close(out) < 0 && ret == 0)
		ret = -errno;
	if (ret < 0) {
		snprintf(err, errlen, "%s/%s: %s", r->dir, tmp, strerror(-ret));
		goto fail;
	}
	if (batch) {
		if (grow_array(&batch->v, &batch->cap, batch->n + 1) < 0) {
			ret = -ENOMEM;
			snprintf(err, errlen, "%s/%s: out of memory", r->dir, tmp);
			goto fail;
		}
		snprintf(batch->v[batch->n].tmp, sizeof(batch->v[batch->n].tmp), "%s", tmp);
		memcpy(batch->v[batch->n].sha, sha, MANIFEST_SHA);
		batch->n++;
		batch->bytes += (uint64_t)size;
		return 0;
	}
	ret = rename_tmp(r, tmp, sha, err, errlen);
	if (ret == 0)
		return 0;
fail:
	unlinkat(r->fd, tmp, 0);
	return ret;
}

void repo_batch_init(struct repo_batch *b, struct repo *r)
{
	*b = (struct repo_batch){.r = r};
}

void repo_batch_abort(struct repo_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		unlinkat(b->r->fd, b->v[i].tmp, 0);
	free(b->v);
	b->v = NULL;
	b->n = b->cap = 0;
	b->bytes = 0;
}

int repo_batch_commit(struct repo_batch *b, char *err, size_t errlen)
{
	size_t i;
	int ret;

	if (!b->n)
		return 0;
	ret = repo_sync(b->r);
	if (ret < 0) {
		snprintf(err, errlen, "%s: syncfs: %s", b->r->dir, strerror(-ret));
		repo_batch_abort(b);
		return ret;
	}
	for (i = 0; i < b->n; i++) {
		ret = rename_tmp(b->r, b->v[i].tmp, b->v[i].sha, err, errlen);
		if (ret < 0)
			break;
	}
	if (ret < 0) {
		/* The ones already named are whole; the rest go. */
		memmove(b->v, b->v + i, (b->n - i) * sizeof(*b->v));
		b->n -= i;
		repo_batch_abort(b);
		return ret;
	}
	b->n = 0;
	b->bytes = 0;
	return 0;
}

int repo_blob_put(struct repo *r, struct repo_batch *batch, int fd,
		  const uint8_t want[MANIFEST_SHA], uint8_t *buf, size_t buflen, uint64_t *written,
		  char *err, size_t errlen)
{
	char tmp[64];
	EVP_MD_CTX *ctx = NULL;
	uint8_t sha[MANIFEST_SHA];
	uint64_t off = 0;
	int out, ret = 0;
	ssize_t n;

	*written = 0;
	out = open_tmp(r, tmp, err, errlen);
	if (out < 0)
		return out;
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: cannot start SHA-256", r->dir);
		goto out;
	}
	for (;;) {
		n = pread(fd, buf, buflen, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			snprintf(err, errlen, "reading the source: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		ret = file_write_all(out, buf, (size_t)n);
		if (ret < 0) {
			snprintf(err, errlen, "%s/%s: %s", r->dir, tmp, strerror(-ret));
			goto out;
		}
		off += (uint64_t)n;
	}
	EVP_DigestFinal_ex(ctx, sha, NULL);
	EVP_MD_CTX_free(ctx);
	ctx = NULL;
	if (memcmp(sha, want, sizeof(sha))) {
		ret = -EAGAIN;
		snprintf(err, errlen, "the source changed while it was copied");
		goto out;
	}
	ret = name_tmp(r, batch, out, tmp, want, (off_t)off, err, errlen);
	if (ret == 0)
		*written = off;
	return ret;
out:
	EVP_MD_CTX_free(ctx);
	close(out);
	unlinkat(r->fd, tmp, 0);
	return ret;
}

int repo_blob_put_mem(struct repo *r, struct repo_batch *batch, const void *data, size_t len,
		      const uint8_t sha[MANIFEST_SHA], uint64_t *written, char *err, size_t errlen)
{
	char tmp[64];
	int out, ret;

	*written = 0;
	out = open_tmp(r, tmp, err, errlen);
	if (out < 0)
		return out;
	ret = file_write_all(out, data, len);
	if (ret < 0) {
		snprintf(err, errlen, "%s/%s: %s", r->dir, tmp, strerror(-ret));
		close(out);
		unlinkat(r->fd, tmp, 0);
		return ret;
	}
	ret = name_tmp(r, batch, out, tmp, sha, (off_t)len, err, errlen);
	if (ret == 0)
		*written = len;
	return ret;
}

int repo_sync(struct repo *r)
{
	int fd = openat(r->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (syncfs(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

int repo_blob_open(struct repo *r, const uint8_t sha[MANIFEST_SHA], int *fd)
{
	char path[REPO_BLOB_PATH];

	repo_blob_path(sha, path);
	*fd = openat(r->fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return *fd < 0 ? -errno : 0;
}

int repo_blob_check(struct repo *r, const uint8_t sha[MANIFEST_SHA], uint8_t *buf, size_t buflen,
		    uint64_t *size)
{
	uint8_t got[MANIFEST_SHA];
	int fd, ret;

	ret = repo_blob_open(r, sha, &fd);
	if (ret < 0)
		return ret;
	ret = repo_hash_fd(fd, buf, buflen, got, size);
	close(fd);
	if (ret == 0 && memcmp(got, sha, sizeof(got)))
		ret = -EBADMSG;
	return ret;
}

int repo_manifest_write(struct repo *r, const struct manifest *m, char *name, size_t namelen,
			char *err, size_t errlen)
{
	char path[PATH_MAX + 64], stamp[32];
	struct tm tm;
	time_t now = time(NULL);
	struct stat st;
	uint8_t *data = NULL;
	size_t len = 0;
	unsigned k;
	int ret;

	ret = manifest_encode(m, &data, &len);
	if (ret < 0) {
		snprintf(err, errlen, "%s: cannot encode the manifest: %s", r->dir, strerror(-ret));
		return ret;
	}
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (k = 1;; k++) {
		if (k == 1)
			snprintf(name, namelen, "%s-%s", stamp, m->node);
		else
			snprintf(name, namelen, "%s-%s.%u", stamp, m->node, k);
		snprintf(path, sizeof(path), "%s/%s/%s", r->dir, REPO_MANIFESTS, name);
		if (stat(path, &st) < 0)
			break;
	}
	ret = file_write_atomic(path, data, len, 0600);
	if (ret < 0)
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
	free(data);
	return ret;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void repo_names_free(char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int repo_dir_list(int dirfd, const char *dir, const char *prefix, int (*keep)(const char *name),
		  char ***names, size_t *n)
{
	int fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **v = NULL;
	size_t count = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	*names = NULL;
	*n = 0;
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!keep(de->d_name))
			continue;
		if (grow_array(&v, &cap, count + 1) < 0)
			goto nomem;
		if (asprintf(&v[count], "%s%s", prefix ? prefix : "", de->d_name) < 0)
			goto nomem;
		count++;
	}
	closedir(d);
	if (count)
		qsort(v, count, sizeof(*v), cmp_names);
	*names = v;
	*n = count;
	return 0;
nomem:
	closedir(d);
	repo_names_free(v, count);
	return -ENOMEM;
}

/* A manifest's name: not hidden, not a temporary being written. */
static int is_manifest(const char *name)
{
	size_t l = strlen(name);

	return name[0] != '.' && !(l > 4 && !strcmp(name + l - 4, ".tmp"));
}

int repo_manifest_list(struct repo *r, char ***names, size_t *n)
{
	return repo_dir_list(r->fd, REPO_MANIFESTS, NULL, is_manifest, names, n);
}

int repo_manifest_read(struct repo *r, const char *name, struct manifest *m, char *err,
		       size_t errlen)
{
	char path[PATH_MAX + 300];
	const char *why = NULL;
	uint8_t *data = NULL;
	struct stat st;
	size_t got = 0;
	ssize_t n;
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s/%s", r->dir, REPO_MANIFESTS, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "manifest %s: %s", path, strerror(errno));
		goto out;
	}
	data = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!data) {
		ret = -ENOMEM;
		snprintf(err, errlen, "manifest %s: out of memory", path);
		goto out;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, data + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			snprintf(err, errlen, "manifest %s: %s", path,
				 n < 0 ? strerror(errno) : "shorter than its size");
			goto out;
		}
		got += (size_t)n;
	}
	ret = manifest_decode(data, got, m, &why);
	if (ret < 0)
		snprintf(err, errlen, "manifest %s is corrupt: %s", path,
			 why ? why : strerror(-ret));
out:
	if (fd >= 0)
		close(fd);
	free(data);
	return ret;
}
