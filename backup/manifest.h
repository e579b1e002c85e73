/*
 * manifest.h - one backup's manifest: where in the history it stands and
 * every object of the store it holds, and its encoding.
 *
 * A manifest says which journal position the backup is as of (the applied
 * vector pos) and carries what it takes to get there from the files: the
 * walk of the store began at the vector from, and the events (from, pos]
 * of the source's journal are stored beside the files in one blob
 * (events_sha), replayed by a restore after the files are laid down.  Each
 * entry is one name in the store: its type and mode, owner, mtime, every
 * xattr (ledgerfs's fid and version included, so a restored store is a
 * node's), a symlink's target, a regular file's SHA-256 (its contents are
 * the blob of that name in the repository, backup/repo.h), or the entry it
 * is a hard link of.
 *
 * Encoding, integers little-endian:
 *   "LFSBKMF1"  u32 format (MANIFEST_FORMAT)
 *   u64 created (Unix seconds)  str node name  u64 node id  16 cluster id
 *   u32 n, n x (u64 origin, u64 seq): from;  the same for pos
 *   32 events sha  u64 events bytes  u64 events count
 *   u64 term  u32 n, n x (u64 origin, u64 term, u64 seq): the term history,
 *   the source's fences (a promotion at term cut origin's history at seq)
 *   u64 entries, each:
 *     str path ("" is the store's root)  u32 mode  u32 uid  u32 gid
 *     i64 mtime sec  u32 mtime nsec  u64 size  u64 rdev
 *     u64 link (index of the entry it is a hard link of, or UINT64_MAX)
 *     u8 has sha [32 sha]  str symlink target
 *     u32 xattr bytes, then (u16 name length, name, u32 value length, value)...
 *   32 SHA-256 of every byte before it
 * where str is u32 length and bytes.  Decoding checks the trailer first and
 * every length against what is left.
 */
#ifndef LEDGERFS_BACKUP_MANIFEST_H
#define LEDGERFS_BACKUP_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "journal/event.h"

#define MANIFEST_MAGIC	  "LFSBKMF1"
#define MANIFEST_FORMAT	  1
#define MANIFEST_SHA	  32
#define MANIFEST_NOLINK	  UINT64_MAX
#define MANIFEST_NAME_MAX 255

struct manifest_entry {
	char *path; /* relative to the store root, "" for the root; owned */
	uint32_t mode, uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t size, rdev;
	uint64_t link; /* a hard link of entry link (an earlier one), or MANIFEST_NOLINK */
	int has_sha;
	uint8_t sha[MANIFEST_SHA];
	char *target;	 /* a symlink's target, else NULL; owned */
	uint8_t *xattrs; /* (u16 name len, name, u32 value len, value)...; owned */
	uint32_t xattrs_len;
};

/* A promotion at term cut origin's events at seq (the journal's fences). */
struct manifest_fence {
	uint64_t origin, term, seq;
};

struct manifest {
	uint64_t created;
	char node[MANIFEST_NAME_MAX + 1];
	uint64_t node_id;
	uint8_t cluster[16];
	struct evid *from, *pos; /* malloc'd; nfrom, npos entries */
	uint32_t nfrom, npos;
	uint8_t events_sha[MANIFEST_SHA];
	uint64_t events_bytes, events_count;
	uint64_t term;		       /* the source's term at pos */
	struct manifest_fence *fences; /* malloc'd, nfences: its term history */
	uint32_t nfences;
	struct manifest_entry *e; /* malloc'd, n entries (cap allocated) */
	size_t n, cap;
};

/*
 * Append *e to m, which takes over what e points to (on failure too: it is
 * freed then).  0 or -ENOMEM.
 */
int manifest_add(struct manifest *m, struct manifest_entry *e);

/* Free what one entry owns; zeroes it. */
void manifest_entry_free(struct manifest_entry *e);

/* Free everything m owns; m is zeroed. */
void manifest_free(struct manifest *m);

/*
 * Encode m into *out (malloc'd, the caller frees), *len bytes, trailer
 * included.  0, -ENOMEM, or -EINVAL for a field out of range.
 */
int manifest_encode(const struct manifest *m, uint8_t **out, size_t *len);

/*
 * Decode len bytes into *m (zeroed first; manifest_free() it after
 * success).  0, or -EBADMSG with *why naming the problem ("checksum
 * mismatch", "truncated entry", ...), -EPROTO for another format, -ENOMEM.
 */
int manifest_decode(const uint8_t *buf, size_t len, struct manifest *m, const char **why);

/*
 * The value of xattr name in e's blob: 1 with *val, *vlen pointing into
 * the blob, 0 when absent.
 */
int manifest_xattr(const struct manifest_entry *e, const char *name, const uint8_t **val,
		   uint32_t *vlen);

#endif
