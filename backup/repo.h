/*
 * repo.h - a backup repository: a directory anywhere (local disk, NFS,
 * another ledgerfs mount) holding content-addressed blobs and manifests.
 *
 *   REPO/config                       "ledgerfs backup repository" and its format
 *   REPO/packs/<2 hex>/<64 hex>       a blob: bytes whose SHA-256 is its name
 *   REPO/manifests/<UTC time>-<node>  one per backup (backup/manifest.h)
 *   REPO/tmp/<pid>-<n>                blobs being written
 *   REPO/archive/<origin>/<first>-<last>  archived journal segments (archive.h)
 *   REPO/lock                         flock'd: shared by backup and restore,
 *                                     exclusive by expire
 *
 * A blob is written to tmp/, made durable, and renamed to its name; so a
 * blob that has its name is whole, writing one twice is harmless, and a
 * second backup stores only what it does not find.  Blobs written through
 * a batch (struct repo_batch) are made durable together, by one syncfs
 * before their renames, instead of an fsync each.  Before a manifest is written,
 * repo_sync() makes those names durable (one syncfs instead of a directory
 * fsync per blob); the manifest is written atomically after it, so a
 * manifest never names a blob that is missing, and a backup cut short
 * leaves only blobs, which its rerun finds.  Temp files of a process that
 * is gone are removed when the repository is opened.
 */
#ifndef LEDGERFS_BACKUP_REPO_H
#define LEDGERFS_BACKUP_REPO_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/manifest.h"

#define REPO_CONFIG	 "config"
#define REPO_PACKS	 "packs"
#define REPO_MANIFESTS	 "manifests"
#define REPO_TMP	 "tmp"
#define REPO_FORMAT	 1
#define REPO_CONFIG_HEAD "ledgerfs backup repository"
#define REPO_BLOB_PATH	 (sizeof(REPO_PACKS) + 3 + 2 * MANIFEST_SHA + 1)

struct repo {
	char dir[PATH_MAX];
	int fd;	     /* O_PATH descriptor of dir */
	int lock_fd; /* REPO/lock while locked, else -1 */
};

#define REPO_LOCK "lock"

/*
 * Open the repository at dir; with create, make it (and config) if dir is
 * missing or empty.  *out is the caller's: repo_close().  On failure err
 * says why, naming the path.  0 or a negative errno.
 */
int repo_open(const char *dir, int create, struct repo **out, char *err, size_t errlen);
void repo_close(struct repo *r);

/*
 * Lock the repository (flock of REPO/lock), shared for backups and
 * restores, exclusive for expire, which removes what no kept backup needs;
 * without wait, -EWOULDBLOCK if another holds it.  Released by
 * repo_close().  0 or -errno.
 */
int repo_lock(struct repo *r, int exclusive, int wait);

/* "packs/ab/ab...": a blob's path inside the repository. */
void repo_blob_path(const uint8_t sha[MANIFEST_SHA], char out[REPO_BLOB_PATH]);

/* 64 hex digits and a NUL into out. */
void repo_hex(const uint8_t sha[MANIFEST_SHA], char out[2 * MANIFEST_SHA + 1]);

/* 1 if the blob is stored, 0 if not, or a negative errno. */
int repo_blob_has(struct repo *r, const uint8_t sha[MANIFEST_SHA]);

/*
 * SHA-256 of fd's contents from offset 0 to its end, read with buf
 * (buflen bytes) into sha; *size gets the bytes read.  0 or -errno.
 */
int repo_hash_fd(int fd, uint8_t *buf, size_t buflen, uint8_t sha[MANIFEST_SHA], uint64_t *size);

/*
 * Blobs of one repository written but not yet named: repo_batch_commit()
 * makes their contents durable with one syncfs, then names them.  One
 * thread's; zero-initialise with repo_batch_init().
 */
struct repo_pending {
	char tmp[64]; /* its temp file, relative to the repository */
	uint8_t sha[MANIFEST_SHA];
};

struct repo_batch {
	struct repo *r;
	struct repo_pending *v; /* malloc'd */
	size_t n, cap;
	uint64_t bytes; /* written into its blobs */
};

void repo_batch_init(struct repo_batch *b, struct repo *r);

/*
 * Make every blob of the batch durable (syncfs) and give each its name;
 * the batch is then empty.  0, or -errno with err naming the path and the
 * batch's temp files removed.
 */
int repo_batch_commit(struct repo_batch *b, char *err, size_t errlen);

/* Remove the batch's temp files and free it (it is then empty and reusable). */
void repo_batch_abort(struct repo_batch *b);

/*
 * Store fd's contents (from offset 0) as a blob: copied to tmp/ while
 * hashed, and named by the hash only if it is want (else -EAGAIN: the
 * source changed since it was hashed; nothing is kept).  With batch
 * (NULL: at once, with an fsync) the blob is named by
 * repo_batch_commit().  *written gets the bytes written (0 when the blob
 * turned out to be there already).  On an error err names the path; the
 * temp file is removed.
 */
int repo_blob_put(struct repo *r, struct repo_batch *batch, int fd,
		  const uint8_t want[MANIFEST_SHA], uint8_t *buf, size_t buflen, uint64_t *written,
		  char *err, size_t errlen);

/* repo_blob_put() of len bytes at data, whose SHA-256 the caller computed. */
int repo_blob_put_mem(struct repo *r, struct repo_batch *batch, const void *data, size_t len,
		      const uint8_t sha[MANIFEST_SHA], uint64_t *written, char *err, size_t errlen);

/*
 * Make every blob written so far durable under its name (syncfs of the
 * repository's filesystem): before a manifest that names them is written.
 * 0 or -errno.
 */
int repo_sync(struct repo *r);

/* Open a blob read-only; *fd is the caller's.  0 or -errno (-ENOENT: missing). */
int repo_blob_open(struct repo *r, const uint8_t sha[MANIFEST_SHA], int *fd);

/*
 * Re-read a blob and check it against its name: 0, -EBADMSG when its
 * contents do not match, -ENOENT when missing, or another -errno.
 */
int repo_blob_check(struct repo *r, const uint8_t sha[MANIFEST_SHA], uint8_t *buf, size_t buflen,
		    uint64_t *size);

/*
 * Write a manifest (encoded) as manifests/<UTC time>-<node>, atomically;
 * name (at least 64 bytes) receives its name.  0 or -errno, err naming the
 * path.
 */
int repo_manifest_write(struct repo *r, const struct manifest *m, char *name, size_t namelen,
			char *err, size_t errlen);

/*
 * The manifests' names, oldest first: *names is a malloc'd array of *n
 * malloc'd strings, freed with repo_names_free().  0 or -errno.
 */
int repo_manifest_list(struct repo *r, char ***names, size_t *n);
void repo_names_free(char **names, size_t n);

/*
 * The names in directory dir (relative to dirfd, or absolute) that keep()
 * takes, sorted, each with prefix (may be NULL) in front: *names is a
 * malloc'd array of malloc'd strings (repo_names_free()), *n of them.  0
 * or -errno (-ENOENT for a missing dir).
 */
int repo_dir_list(int dirfd, const char *dir, const char *prefix, int (*keep)(const char *name),
		  char ***names, size_t *n);

/*
 * Read and decode manifest name into *m (manifest_free() it).  0, or a
 * negative errno with err naming the file and what is wrong with it.
 */
int repo_manifest_read(struct repo *r, const char *name, struct manifest *m, char *err,
		       size_t errlen);

#endif
