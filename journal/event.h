/*
 * event.h - the journaled event and its binary codec.
 *
 * An event is one mutation of the store (or one node-state change).  It is
 * the unit that is journaled, replayed after a crash and shipped to peers,
 * so its encoding is versioned, little-endian, length-prefixed and covered
 * by a CRC32C.  Decoding treats every buffer as hostile: each length is
 * checked before it is read and every failure names what was wrong.
 *
 * The byte layout of a record is documented in one place only:
 * docs/internals.md, "Event format".  journal/event.c is its one
 * implementation; code elsewhere reads records through the functions
 * below, never at byte offsets of its own.  What each type carries, and
 * what it does, is the table behind event_type_info(): the codec, the
 * store and ledgerctl log all take it from there.
 */
#ifndef LEDGERFS_EVENT_H
#define LEDGERFS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define EVENT_VERSION 1

/* Bytes before the variable-length tail (path, path2, name, data). */
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

/* What each type carries: event_type_info() (the table in journal/event.c). */
enum event_type {
	EV_CREATE = 1,
	EV_MKNOD = 2,
	EV_MKDIR = 3,
	EV_SYMLINK = 4,
	EV_LINK = 5,
	EV_UNLINK = 6,
	EV_RMDIR = 7,
	EV_RENAME = 8,
	EV_WRITE = 9,
	EV_TRUNCATE = 10,
	EV_FALLOCATE = 11,
	EV_CHMOD = 12,
	EV_CHOWN = 13,
	EV_UTIMENS = 14,
	EV_SETXATTR = 15,
	EV_REMOVEXATTR = 16,
	EV_VOID = 17,	   /* an event whose apply failed: keeps seq continuity, does nothing */
	EV_OUTAGE = 32,	   /* node state: this node found it was down or cut off */
	EV_RECOVERED = 33, /* node state: what it fetched after an outage */
	EV_ROLE = 34,	   /* node state: a promotion or a demotion */
	EV_DIVERGED = 35,  /* node state: an event from a peer did not apply here */
	EV_HEALED = 36,	   /* node state: a divergence healed */
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

/*
 * The fields a type gives a meaning to (event_type_info.fields).  origin,
 * seq, hlc, term and fid belong to every type and have no bit.  A field
 * outside its type's set is encoded and decoded all the same, unchecked,
 * and nothing reads it.  Where one member means different things to
 * different changes (length, data) each meaning has its own bit; the
 * node-state types give some fields meanings of their own, which the
 * table in journal/event.c spells out.
 */
enum {
	EVENT_FIELD_PATH = 1u << 0,    /* path: the object */
	EVENT_FIELD_PATH2 = 1u << 1,   /* path2: a second name (link's new one, rename's target) */
	EVENT_FIELD_FID2 = 1u << 2,    /* fid2: the entry a rename replaced or exchanged */
	EVENT_FIELD_BASE = 1u << 3,    /* base: the version of the object the change was made on */
	EVENT_FIELD_MODE = 1u << 4,    /* mode */
	EVENT_FIELD_RDEV = 1u << 5,    /* rdev: the device number */
	EVENT_FIELD_OWNER = 1u << 6,   /* uid, gid */
	EVENT_FIELD_MTIME = 1u << 7,   /* mtime: the change's time, which it stamps on the object */
	EVENT_FIELD_TIMES = 1u << 8,   /* atime, mtime as set; a UTIME_OMIT nsec leaves one alone */
	EVENT_FIELD_OFFSET = 1u << 9,  /* offset: where in the file */
	EVENT_FIELD_LENGTH = 1u << 10, /* length: bytes from offset */
	EVENT_FIELD_SIZE = 1u << 11,   /* length: the file's new size */
	EVENT_FIELD_FLAGS = 1u << 12,  /* op_flags: the system call's flags */
	EVENT_FIELD_NAME = 1u << 13,   /* name: an extended attribute's name */
	EVENT_FIELD_PAYLOAD = 1u << 14, /* data: the bytes written at offset (or a vref to them) */
	EVENT_FIELD_TARGET = 1u << 15,	/* data: a symlink's target: no NUL, EVENT_MAX_TARGET */
	EVENT_FIELD_VALUE = 1u << 16,	/* data: an extended attribute's value */
	EVENT_FIELD_TEXT = 1u << 17,	/* data: text for people */
	EVENT_FIELD_FENCES = 1u << 18,	/* data: (origin, seq) pairs: event_fence() */
};
/* The bits that say what data holds; a type has at most one of them. */
#define EVENT_FIELDS_DATA                                                                          \
	(EVENT_FIELD_PAYLOAD | EVENT_FIELD_TARGET | EVENT_FIELD_VALUE | EVENT_FIELD_TEXT |         \
	 EVENT_FIELD_FENCES)

/* What a type does (event_type_info.props). */
enum {
	EVENT_T_MUTATES = 1u << 0, /* changes the store (not VOID, not node state) */
	EVENT_T_CREATES = 1u << 1, /* makes a new object, whose fid is the event's (origin, seq) */
	EVENT_T_CONTENT = 1u << 2, /* changes a regular file's contents (and so its mtime) */
	EVENT_T_VREF = 1u << 3,	   /* its payload may sit in the value log (EVENT_F_VREF) */
};

/*
 * One row of the table of event types.  The decoder refuses an event whose
 * need fields are empty (path, path2 or name of length 0, or no data), a
 * value-log reference on a type without EVENT_T_VREF, and a bad symlink
 * target where fields has EVENT_FIELD_TARGET.
 */
struct event_type_info {
	const char *name; /* for logs and ledgerctl log: "write", "rename", ... */
	unsigned props;	  /* EVENT_T_* */
	uint32_t fields;  /* EVENT_FIELD_*: the fields the type gives a meaning to */
	uint32_t need;	  /* those of fields that must not be empty */
};

/* The table's row for type, or NULL for a type this version does not know. */
const struct event_type_info *event_type_info(unsigned type);

/* True if type is known and has every one of props (EVENT_T_*). */
int event_type_is(unsigned type, unsigned props);

/* Name of a type for logs ("write", "rename", ...); "unknown" otherwise. */
const char *event_type_name(unsigned type);

/* True for the types that change the store: event_type_is(type, EVENT_T_MUTATES). */
int event_type_mutates(unsigned type);

/*
 * Whether len is a length a record can have, whatever its type: at least
 * its fixed header, at most EVENT_MAX_RECORD.  For framing records (the
 * replication protocol) without decoding them.
 */
int event_record_len_ok(size_t len);

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

/*
 * The fixed fields of a record that readers of the journal look at
 * without decoding it (event_peek_header()).
 */
struct event_head {
	uint32_t len; /* the record's own length */
	uint8_t type; /* as recorded: possibly a type this version does not know */
	uint16_t flags;
	uint64_t origin;
	uint64_t seq;
	uint64_t hlc;
	uint64_t term;
};

/*
 * Read the header of the record at the start of buf (len bytes), without
 * decoding it: for records the caller already trusts (the journal's own)
 * or decodes afterwards, as the CRC is not checked.  Returns 0 and fills
 * *h, or -EBADMSG (shorter than a header, a record length below a header,
 * over EVENT_MAX_RECORD or past len) or -EPROTO (another version) with
 * *why (may be NULL) set as event_decode() would, and *h untouched.
 */
int event_peek_header(const uint8_t *buf, size_t len, struct event_head *h, const char **why);

/* Frees what event_decode() or the event_set_* helpers allocated; zeroes *ev. */
void event_free(struct event *ev);

/* Copy helpers for builders: replace the field with a copy.  0 or -ENOMEM. */
int event_set_path(struct event *ev, const char *path);
int event_set_path2(struct event *ev, const char *path2);
int event_set_name(struct event *ev, const char *name);
int event_set_data(struct event *ev, const void *data, uint32_t len);

/*
 * An EV_ROLE's fences, which its data holds: for each origin, the seq the
 * promoted node had applied.  event_set_fences() replaces the data with
 * the n fences of v (0 or -ENOMEM, -EINVAL if n is over what data holds);
 * event_fence_count() is how many ev holds (bytes past the last whole one
 * are ignored) and event_fence() the i-th of them, i below that count.
 */
int event_set_fences(struct event *ev, const struct evid *v, uint32_t n);
uint32_t event_fence_count(const struct event *ev);
struct evid event_fence(const struct event *ev, uint32_t i);

#endif
