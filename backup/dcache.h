/*
 * dcache.h - a repository's digest cache: the SHA-256 of each regular file
 * a node's last backup into it read, keyed by inode, size, mtime and
 * ctime, so that the next backup reads only files that changed.
 *
 * REPO/cache/<node id 16 hex>:
 *   "LFSBKDC1"  u32 count  count x (u64 ino, u64 size, i64 mtime ns,
 *   i64 ctime ns, 32 sha)  sorted by ino  32 SHA-256 of everything before
 * written atomically after a backup.  A file changed since has another
 * ctime (any write, chmod or xattr change moves it), except within the
 * clock tick ctime has: an entry is kept only if its ctime was over
 * DCACHE_SETTLE_NS old when the file was read, as the hash tree's cache
 * does (resync/merkle_cache.c).  A cache that is missing or does not
 * check is empty: it is only a cache.
 */
#ifndef LEDGERFS_BACKUP_DCACHE_H
#define LEDGERFS_BACKUP_DCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "backup/repo.h"

#define DCACHE_DIR	 "cache"
#define DCACHE_SETTLE_NS (2ll * 1000000000)

struct dcache_entry {
	uint64_t ino, size;
	int64_t mtime_ns, ctime_ns;
	uint8_t sha[MANIFEST_SHA];
};

struct dcache {
	struct dcache_entry *v; /* sorted by ino; malloc'd */
	size_t n;
};

/* Load node's cache from r into *c (empty when missing or damaged).  Free with dcache_free(). */
void dcache_load(struct repo *r, uint64_t node, struct dcache *c);
void dcache_free(struct dcache *c);

/* 1 and sha if st (a regular file's) matches an entry, else 0. */
int dcache_lookup(const struct dcache *c, const struct stat *st, uint8_t sha[MANIFEST_SHA]);

/* Fill e from st and sha. */
void dcache_entry_set(struct dcache_entry *e, const struct stat *st,
		      const uint8_t sha[MANIFEST_SHA]);

/* Whether st's ctime is old enough at now_ns for its entry to be kept. */
int dcache_settled(const struct stat *st, int64_t now_ns);

/* Sort v (n entries) and write it as node's cache in r, atomically.  0 or -errno. */
int dcache_save(struct repo *r, uint64_t node, struct dcache_entry *v, size_t n);

#endif
