/*
 * dcache.h - a repository's digest cache: what a node's last backup into
 * it found of each object of the store, keyed by inode, type, size, mtime
 * and ctime, so that the next backup reads only the objects that changed.
 *
 * REPO/cache/<node id 16 hex>:
 *   "LFSBKDC2"  u32 count  u8 length, the name of the manifest the
 *   entries index (backup/repo.h)  count x (u64 ino, u64 size, i64 mtime
 *   ns, i64 ctime ns, u32 mode, u32 index of the object's entry in that
 *   manifest or DCACHE_NO_ENTRY, 32 SHA-256 of a regular file's contents)
 *   sorted by ino  32 SHA-256 of everything before
 * written atomically after a backup.  An object changed since has another
 * ctime (any write, chmod, chown, xattr change, rename or link moves it, a
 * directory's also when a name inside it comes or goes), except within
 * the clock tick ctime has: an entry is kept only if its ctime was over
 * DCACHE_SETTLE_NS old when the object was read, as the hash tree's cache
 * does (resync/merkle_cache.c).  An unchanged object's entry in the
 * manifest is then the same as in the last backup's (its xattrs, target
 * and digest), and the next backup copies it from there without opening
 * the object.  A cache that is missing or does not check is empty: it is
 * only a cache.
 */
#ifndef LEDGERFS_BACKUP_DCACHE_H
#define LEDGERFS_BACKUP_DCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "backup/repo.h"

#define DCACHE_DIR	 "cache"
#define DCACHE_SETTLE_NS (2ll * 1000000000)
#define DCACHE_NO_ENTRY	 UINT32_MAX
#define DCACHE_NAME_MAX	 127

struct dcache_entry {
	uint64_t ino, size;
	int64_t mtime_ns, ctime_ns;
	uint32_t mode;
	uint32_t index; /* the object's entry in the cache's manifest, or DCACHE_NO_ENTRY */
	uint8_t sha[MANIFEST_SHA];
};

struct dcache {
	char manifest[DCACHE_NAME_MAX + 1]; /* the manifest index refers to; "" if none */
	struct dcache_entry *v;		    /* sorted by ino; malloc'd */
	size_t n;
};

/* Load node's cache from r into *c (empty when missing or damaged).  Free with dcache_free(). */
void dcache_load(struct repo *r, uint64_t node, struct dcache *c);
void dcache_free(struct dcache *c);

/* The entry st (any object's) matches, or NULL; valid until c changes. */
const struct dcache_entry *dcache_find(const struct dcache *c, const struct stat *st);

/* 1 and sha if st (a regular file's) matches an entry, else 0. */
int dcache_lookup(const struct dcache *c, const struct stat *st, uint8_t sha[MANIFEST_SHA]);

/* Fill e from st, index and sha (NULL: none). */
void dcache_entry_set(struct dcache_entry *e, const struct stat *st, uint32_t index,
		      const uint8_t sha[MANIFEST_SHA]);

/* Whether st's ctime is old enough at now_ns for its entry to be kept. */
int dcache_settled(const struct stat *st, int64_t now_ns);

/*
 * Sort v (n entries) and write it as node's cache in r, atomically; the
 * entries' indices are into manifest (at most DCACHE_NAME_MAX bytes).  0
 * or -errno.
 */
int dcache_save(struct repo *r, uint64_t node, const char *manifest, struct dcache_entry *v,
		size_t n);

#endif
