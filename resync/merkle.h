/*
 * merkle.h - the hash tree of a store, for snapshot resync.
 *
 * When a peer needs events that were already trimmed, the two stores are
 * compared by a hash tree instead of being copied whole: every entry has a
 * SHA-256 digest, a directory's digest covers its own metadata and the
 * sorted (name, mode, size, digest) of its entries, so two equal subtrees
 * are recognised by one comparison of their digests and only the paths
 * that differ are sent.
 *
 * What the digests cover is what replication makes equal (see digest.h and
 * DESIGN.md invariant 4): names, types, permission bits, owners, xattrs,
 * symlink targets, device numbers, and for regular files size, contents and
 * mtime.  Unlike digest_tree(), the fid and version xattrs
 * (trusted.ledgerfs.fid, .ver) are covered, because a resync must carry
 * them; the other trusted.ledgerfs.* xattrs (the root's cluster stamp)
 * belong to the node and are left out.  Directory mtimes are left out as
 * there, and hard links are hashed once per inode.
 *
 * The tree lives on one node and is compared top-down against another's:
 * the diff asks the other side for one directory listing at a time, only
 * for directories whose digests differ, through a function the caller
 * provides (over the network: a request answered with merkle_dir_encode(),
 * decoded with merkle_dir_decode()).
 *
 * Listing wire format, all integers little-endian:
 *
 *   u16 version         MERKLE_WIRE_VERSION
 *   u32 mode            the directory's own st_mode
 *   u8[32] meta         digest of the directory's own metadata
 *   u32 count
 *   count x {
 *     u8  name_len      1..NAME_MAX; no '/' or NUL, not "." or ".."
 *     name_len bytes    names strictly increasing (byte order)
 *     u32 mode          st_mode: type and permission bits
 *     u64 size          regular file: st_size; symlink: target length; else 0
 *     u32 link          hard-link group within the sender's tree, 0 if single
 *     u8[32] digest
 *   }
 *
 * The directory's digest is not sent: the decoder computes it from the
 * listing, so a listing cannot claim a digest its contents do not have.
 */
#ifndef LEDGERFS_MERKLE_H
#define LEDGERFS_MERKLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "journal/event.h"

#define MERKLE_DIGEST_LEN   32
#define MERKLE_WIRE_VERSION 1

struct merkle_dir;

/* One entry of a directory listing. */
struct merkle_entry {
	const char *name; /* NUL-terminated; owned by the tree or listing */
	/* A directory's listing in a built tree; NULL for other types and in decoded listings. */
	struct merkle_dir *dir;
	uint64_t size; /* regular file: st_size; symlink: target length; else 0 */
	/* Inode key (st_dev, st_ino) on the node that built the tree; 0 in decoded listings. */
	uint64_t dev;
	uint64_t ino;
	uint32_t mode; /* st_mode: type and permission bits */
	/*
	 * Hard-link group: entries of one tree with the same nonzero link
	 * are one inode, so a resync links them instead of copying twice.
	 * 0 when the inode has a single link.
	 */
	uint32_t link;
	/* Built trees: the fid xattr (zero if none), so a sender can tell the path still holds it.
	 */
	struct fid fid;
	uint8_t digest[MERKLE_DIGEST_LEN];
};

/* A directory's listing: its entries sorted by name (strcmp). */
struct merkle_dir {
	uint8_t
	    digest[MERKLE_DIGEST_LEN];	 /* over meta and entries: equal digests, equal subtrees */
	uint8_t meta[MERKLE_DIGEST_LEN]; /* over the directory's own mode, owner and xattrs */
	uint32_t mode;			 /* the directory's own st_mode */
	/*
	 * Built trees only (zero in decoded listings): the directory's own
	 * owner, fid and xattrs as the walk read them, so that a resync can
	 * send the directory as it was when the tree was built.
	 */
	uint32_t uid, gid;
	struct fid fid;
	uint8_t *xattrs; /* xattr blob (snapshot.h), malloc'd; NULL if none */
	size_t xattrs_len;
	size_t n;
	struct merkle_entry *v;
};

/* A built tree; opaque, immutable once built, so readers need no lock. */
struct merkle;

/*
 * Build the tree of everything beneath root_fd, an open descriptor of the
 * store root (O_PATH is enough; it stays the caller's).  Symlinks are never
 * followed.  *entries, when non-NULL, receives the number of entries, the
 * root included.  Returns 0 with *out freed by merkle_free(), or a negative
 * errno logged with the path concerned: what the kernel returned, -EAGAIN
 * if an entry changed while it was read (try again), -ENOMEM.
 */
int merkle_build(int root_fd, struct merkle **out, uint64_t *entries);

void merkle_free(struct merkle *m);

/*
 * File digests remembered between builds (resync/merkle_cache.c), so that a
 * build reads only the regular files whose inode, size, mtime or ctime
 * changed.  An entry is used only if its ctime is at least
 * MERKLE_CACHE_RACY_NS older than the build (ctime moves in clock ticks).
 * Not thread-safe: the caller serialises builds that share a cache.
 */
#define MERKLE_CACHE_RACY_NS (2 * 1000000000ll)

struct merkle_cache;

/* An empty cache into *out (merkle_cache_free()).  0 or -ENOMEM. */
int merkle_cache_new(struct merkle_cache **out);
void merkle_cache_free(struct merkle_cache *c);

/* Entries held. */
size_t merkle_cache_count(const struct merkle_cache *c);

/* Exchange the contents of a and b. */
void merkle_cache_swap(struct merkle_cache *a, struct merkle_cache *b);

/* Remember fid and digest of the regular file st describes.  0 or -ENOMEM. */
int merkle_cache_put(struct merkle_cache *c, const struct stat *st, struct fid fid,
		     const uint8_t digest[MERKLE_DIGEST_LEN]);

/*
 * 1 with *fid and digest filled if c (may be NULL) holds an entry for st
 * whose ctime is at most trust_ns (CLOCK_REALTIME ns; a build passes its
 * start minus MERKLE_CACHE_RACY_NS), else 0.
 */
int merkle_cache_get(const struct merkle_cache *c, const struct stat *st, int64_t trust_ns,
		     struct fid *fid, uint8_t digest[MERKLE_DIGEST_LEN]);

/*
 * Load a cache saved by merkle_cache_save() into *out (merkle_cache_free()):
 * 0, -ENOENT, -EBADMSG for a damaged file, or another negative errno.
 */
int merkle_cache_load(const char *path, struct merkle_cache **out);

/* Write c to path (through path.tmp and a rename; not synced).  0 or a negative errno. */
int merkle_cache_save(const char *path, const struct merkle_cache *c);

/*
 * merkle_build() taking the digests of unchanged regular files from cache
 * (entries with a ctime up to trust_ns, see merkle_cache_get()), which
 * afterwards holds exactly this build's regular files.  *reused (may be
 * NULL) gets the number of files not read.
 */
int merkle_build_cached(int root_fd, struct merkle_cache *cache, int64_t trust_ns,
			struct merkle **out, uint64_t *entries, uint64_t *reused);

/*
 * How far a build has gone, for a progress display that another thread
 * reads while the build runs.  The build only adds to the counters.
 */
struct merkle_progress {
	/*
	 * Bytes of regular files to hash, once they are listed (a file with
	 * n links counts 1/n per name, exact when all its names are in the tree).
	 */
	atomic_uint_least64_t total;
	atomic_uint_least64_t bytes; /* file contents hashed so far */
	atomic_uint_least64_t files; /* regular files hashed so far */
};

/*
 * merkle_build() reading every file (no digest is taken from a cache, so
 * a file changed behind ledgerfs's back is hashed as it is), counting into
 * *p (zeroed by the caller) as it goes.  The files are listed first, so
 * that p->total is known early.
 */
int merkle_build_progress(int root_fd, struct merkle_progress *p, struct merkle **out,
			  uint64_t *entries);

/* The trust_ns for a build starting now: CLOCK_REALTIME minus MERKLE_CACHE_RACY_NS. */
int64_t merkle_cache_trust_now(void);

/* The root entry: name ".", its digest the whole tree's. */
const struct merkle_entry *merkle_root(const struct merkle *m);

/*
 * The entry at path, a store path as path_check() accepts ("." for the
 * root): 0, or -EINVAL / -ENAMETOOLONG for a bad path (a peer's request is
 * hostile), -ENOENT, -ENOTDIR when a component is not a directory.
 */
int merkle_find(const struct merkle *m, const char *path, const struct merkle_entry **out);

/* Bytes merkle_dir_encode() writes for d. */
size_t merkle_dir_encoded_len(const struct merkle_dir *d);

/*
 * Encode the listing d into buf (cap bytes); *len receives its length.
 * 0, or -ENOSPC when cap is below merkle_dir_encoded_len(d), -EOVERFLOW
 * for a listing of more than UINT32_MAX entries.
 */
int merkle_dir_encode(const struct merkle_dir *d, uint8_t *buf, size_t cap, size_t *len);

/*
 * Decode a listing received from a peer, all len bytes of it, and compute
 * its digest.  0 with *out freed by merkle_dir_free(), or -EBADMSG (any
 * malformed input: truncated, trailing bytes, bad name, names out of
 * order, bad mode), -EPROTO (unknown version), -ENOMEM, with *why naming
 * the problem.
 */
int merkle_dir_decode(const uint8_t *buf, size_t len, struct merkle_dir **out, const char **why);

/* Free a decoded listing; NULL is fine.  Never a built tree's listings. */
void merkle_dir_free(struct merkle_dir *d);

/*
 * The other side of a comparison: fill *out with the listing of the
 * directory at path ("." for the root), a decoded listing that the diff
 * frees with merkle_dir_free().  0 or a negative errno, which stops the
 * diff.
 */
typedef int (*merkle_list_fn)(void *arg, const char *path, struct merkle_dir **out);

/*
 * A merkle_list_fn over a tree in this process; arg is the struct merkle.
 * It goes through merkle_dir_encode() and merkle_dir_decode(), as the
 * network does.
 */
int merkle_list_tree(void *arg, const char *path, struct merkle_dir **out);

enum merkle_change {
	MERKLE_FETCH = 1,  /* make path here as it is there */
	MERKLE_DELETE = 2, /* path, with everything beneath it, exists here only */
};

/*
 * Called for each change.  FETCH: theirs is the other side's entry, mine
 * this side's when it is there with the same type (then only its contents
 * or metadata differ; for a directory only its own metadata, its entries
 * come in their own calls), else NULL.  DELETE: theirs is NULL.  Entries
 * are valid during the call only.  Return 0 to go on, or a negative errno
 * that stops the diff and is returned by it.
 */
typedef int (*merkle_change_fn)(void *arg, enum merkle_change what, const char *path,
				const struct merkle_entry *theirs, const struct merkle_entry *mine);

struct merkle_diff_stats {
	uint64_t listings; /* listings asked of the other side */
	uint64_t compared; /* entries compared by digest */
	uint64_t fetch;	   /* FETCH calls */
	uint64_t del;	   /* DELETE calls */
};

/*
 * Compare mine with the other side, top-down: only directories whose
 * digests differ are listed and descended into, so an equal subtree costs
 * one comparison and equal trees one listing (the root's).  Calls come in
 * walk order, a directory's own call before those beneath it; within a
 * directory in name order, and where a name changed type, its DELETE
 * before its FETCH.  A directory that is there only is descended into, so
 * everything beneath it is fetched; one that is here only is deleted with
 * one call.  Returns 0, what list or change returned, or -ESTALE when a
 * listing of the other side does not have the digest its parent's listing
 * gave it (that side changed during the diff).  stats may be NULL.
 */
int merkle_diff(const struct merkle *mine, merkle_list_fn list, void *list_arg,
		merkle_change_fn change, void *change_arg, struct merkle_diff_stats *stats);

#endif
