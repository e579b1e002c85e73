/*
 * event.h - the journaled event and its binary codec.
 *
 * An event is one mutation of the store (or one node-state change).  It is
 * the unit that is journaled, replayed after a crash and shipped to peers,
 * so its encoding is versioned, little-endian, length-prefixed and covered
 * by a CRC32C.  Decoding treats every buffer as hostile: each length is
 * checked before it is read and every failure names what was wrong.
 *
 * The record layout is described in docs/internals.md ("Event format"),
 * its only prose copy; journal/event.c holds the offsets as code.  After
 * the record length, the CRC and the version, the fixed header holds the
 * fields of struct event below in their order, the four lengths last;
 * path, path2, name and data follow as raw bytes.
 */
#ifndef LEDGERFS_EVENT_H
#define LEDGERFS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define EVENT_VERSION 1
/* Header fields that readers of raw journal records peek at without decoding. */
#define EVENT_OFF_TYPE	9
#define EVENT_OFF_FLAGS 10
#define EVENT_OFF_TERM	36

/* Bytes before the variable-length tail (docs/internals.md, "Event format"). */
#define EVENT_HEADER_LEN 186
/* Largest inline payload an encoder accepts (write data, xattr value, link). */
#define EVENT_MAX_DATA (16u << 20)
/*
 * Longest path and path2 (PATH_REL_MAX: what their u16 lengths hold; a
 * tree can be deeper than PATH_MAX), xattr name, and symlink target (which
 * the kernel limits to PATH_MAX - 1).
 */
#define EVENT_MAX_PATH	 65535
#define EVENT_MAX_NAME	 255
#define EVENT_MAX_TARGET 4095
#define EVENT_MAX_RECORD (EVENT_HEADER_LEN + 2 * EVENT_MAX_PATH + EVENT_MAX_NAME + EVENT_MAX_DATA)

enum event_type {
	EV_CREATE = 1,	     /* path, fid, mode, uid, gid, mtime */
	EV_MKNOD = 2,	     /* path, fid, mode, rdev, uid, gid, mtime */
	EV_MKDIR = 3,	     /* path, fid, mode, uid, gid */
	EV_SYMLINK = 4,	     /* path, fid, data = target, uid, gid */
	EV_LINK = 5,	     /* path = existing, path2 = new name, fid */
	EV_UNLINK = 6,	     /* path, fid */
	EV_RMDIR = 7,	     /* path, fid */
	EV_RENAME = 8,	     /* path -> path2, fid, fid2 = entry replaced/exchanged, op_flags */
	EV_WRITE = 9,	     /* path, fid, offset, data or vref, mtime */
	EV_TRUNCATE = 10,    /* path, fid, length = new size, mtime */
	EV_FALLOCATE = 11,   /* path, fid, op_flags = mode, offset, length, mtime */
	EV_CHMOD = 12,	     /* path, fid, mode */
	EV_CHOWN = 13,	     /* path, fid, uid, gid, mode = mode after the change */
	EV_UTIMENS = 14,     /* path, fid, atime, mtime (nsec may be UTIME_OMIT) */
	EV_SETXATTR = 15,    /* path, fid, name, data = value, op_flags */
	EV_REMOVEXATTR = 16, /* path, fid, name */
	EV_VOID = 17,	     /* an event whose apply failed: keeps seq continuity, does nothing */
	EV_OUTAGE = 32,	     /* node state: this node found it was down or cut off */
	EV_RECOVERED = 33,   /* node state: base = (origin, first seq), length = last seq fetched */
	EV_ROLE = 34,	     /* node state: promotion/demotion, op_flags = role, term */
	/*
	 * node state: an event from a peer did not apply here (its base version
	 * or fids do not match: the stores diverged).  base = that event,
	 * path = the subtree healed from the peer ("." the root), path2 = the
	 * event's path (absent if it had none), name = the peer, data = why
	 * (text), op_flags = EVENT_DIVERGED_*.
	 */
	EV_DIVERGED = 35,
	/*
	 * node state: a divergence healed.  base = the event that diverged,
	 * path = the subtree replaced from the peer, name = the peer, offset =
	 * its position: the peer's applied seq of base.origin when it read the
	 * subtree, length = the entries replaced, data = what was done to them,
	 * a line each ("fetch PATH", "dir PATH", "link PATH", "delete PATH"),
	 * cut after EVENT_HEALED_LIST_MAX bytes with a last line "...".
	 */
	EV_HEALED = 36,
};

/* EV_DIVERGED op_flags. */
#define EVENT_DIVERGED_HEALING 0 /* a heal from the peer starts */
#define EVENT_DIVERGED_STOPPED 1 /* the heal cannot make progress: stopped, retried later */
/* Most bytes of the list of replaced entries an EV_HEALED carries. */
#define EVENT_HEALED_LIST_MAX (64u << 10)

/* The payload of an EV_WRITE lives in the value log instead of inline. */
#define EVENT_F_VREF 0x0001

struct fid {
	uint64_t origin;
	uint64_t counter;
};

struct evid {
	uint64_t origin;
	uint64_t seq;
};

/* Where a large payload sits in the journal's value log. */
struct vref {
	uint32_t segment;
	uint64_t offset;
	uint32_t len;
	uint32_t crc; /* CRC32C of the payload bytes */
};

/*
 * One event in memory.  Strings are NUL-terminated copies (the encoding has
 * no terminators and refuses embedded NULs); absent strings are NULL.
 * After event_decode() every pointer is owned by the event: event_free().
 */
struct event {
	uint8_t type;
	uint16_t flags;
	uint64_t origin;
	uint64_t seq;
	uint64_t hlc; /* physical ms << 16 | logical */
	uint64_t term;
	struct fid fid;
	struct fid fid2;
	struct evid base;
	uint64_t offset;
	uint64_t length;
	uint64_t rdev;
	uint32_t mode;
	uint32_t uid;
	uint32_t gid;
	uint32_t op_flags;
	int64_t atime_sec;
	uint32_t atime_nsec;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	struct vref vref;
	char *path;
	char *path2;
	char *name;
	uint8_t *data;
	uint32_t data_len;
};

/* Name of a type for logs ("write", "rename", ...); "unknown" otherwise. */
const char *event_type_name(unsigned type);

/* True for the types that change the store (not VOID or node-state). */
int event_type_mutates(unsigned type);

/* Bytes event_encode() needs for ev. */
size_t event_encoded_len(const struct event *ev);

/*
 * Encode ev into buf (cap bytes).  Returns 0, -ENOSPC if cap is too small,
 * -EINVAL if a field is out of range (string too long, unknown type).
 * *len receives the record length.
 */
int event_encode(const struct event *ev, uint8_t *buf, size_t cap, size_t *len);

/*
 * The record ev (a value-log event, EVENT_F_VREF, data NULL) makes with
 * its payload inline, all but the payload: buf receives the first *head
 * bytes of the *len-byte record, the vref.len payload bytes go after them
 * (the caller reads them from the value log straight into place), then
 * event_seal() sets the CRC.  So a shipped payload is copied once, and not
 * under the lock that guards the journal.  -ENOSPC if cap < *head,
 * -EINVAL if ev is not such an event or a field is out of range.
 */
int event_encode_inline_head(const struct event *ev, uint8_t *buf, size_t cap, size_t *head,
			     size_t *len);

/* Set the CRC of the len-byte record at rec, whose other bytes are final. */
void event_seal(uint8_t *rec, size_t len);

/*
 * Decode one record from buf.  Returns 0 and fills *ev (caller frees with
 * event_free()), or -EBADMSG / -EPROTO / -ENOMEM with *why set to a static
 * string naming the problem ("truncated header", "bad crc", ...).  *ev is
 * left zeroed on failure.  *used receives the record length when non-NULL.
 */
int event_decode(const uint8_t *buf, size_t len, struct event *ev, size_t *used, const char **why);

/* Frees what event_decode() or the event_set_* helpers allocated; zeroes *ev. */
void event_free(struct event *ev);

/* Copy helpers for builders: replace the field with a copy.  0 or -ENOMEM. */
int event_set_path(struct event *ev, const char *path);
int event_set_path2(struct event *ev, const char *path2);
int event_set_name(struct event *ev, const char *name);
int event_set_data(struct event *ev, const void *data, uint32_t len);

#endif
