/*
 * event.c - binary codec of journaled events, and the table of event types.
 *
 * The record layout is documented in docs/internals.md ("Event format");
 * the offsets below are its implementation.  The same bytes are stored in
 * the journal and sent to peers, so the decoder is the first thing that
 * sees input from the network: it checks the record length against the
 * buffer, the CRC, then every length and every per-type requirement before
 * it allocates or copies anything, and each rejection names its reason for
 * the log line that reports it.
 *
 * What a type requires and what it may carry comes from one table,
 * type_table below, which the rest of the tree reads through
 * event_type_info(): a new type, or a new use of a field, is one row.
 *
 * Integers are written one byte at a time, least significant first, so the
 * format is the same on every host and no field is read through a cast of
 * a possibly unaligned pointer.  Encoding runs the same checks as decoding:
 * whatever event_encode() accepts, event_decode() gives back unchanged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bytes.h"
#include "lib/crc32c.h"
#include "journal/event.h"
#include "store/path.h"

/* Byte offsets of the fixed fields, in the order docs/internals.md lists them. */
enum {
	OFF_RECORD_LEN = 0,
	OFF_CRC = 4,
	OFF_VERSION = 8,
	OFF_TYPE = 9,
	OFF_FLAGS = 10,
	OFF_ORIGIN = 12,
	OFF_SEQ = 20,
	OFF_HLC = 28,
	OFF_TERM = 36,
	OFF_FID_ORIGIN = 44,
	OFF_FID_COUNTER = 52,
	OFF_FID2_ORIGIN = 60,
	OFF_FID2_COUNTER = 68,
	OFF_BASE_ORIGIN = 76,
	OFF_BASE_SEQ = 84,
	OFF_OFFSET = 92,
	OFF_LENGTH = 100,
	OFF_RDEV = 108,
	OFF_MODE = 116,
	OFF_UID = 120,
	OFF_GID = 124,
	OFF_OP_FLAGS = 128,
	OFF_ATIME_SEC = 132,
	OFF_ATIME_NSEC = 140,
	OFF_MTIME_SEC = 144,
	OFF_MTIME_NSEC = 152,
	OFF_VREF_SEGMENT = 156,
	OFF_VREF_OFFSET = 160,
	OFF_VREF_LEN = 168,
	OFF_VREF_CRC = 172,
	OFF_PATH_LEN = 176,
	OFF_PATH2_LEN = 178,
	OFF_NAME_LEN = 180,
	OFF_DATA_LEN = 182,
};
_Static_assert(OFF_DATA_LEN + 4 == EVENT_HEADER_LEN, "event header layout and length disagree");

/* The CRC covers everything after the length and the CRC itself. */
#define CRC_START 8
/* An EV_ROLE fence: u64 origin, u64 seq. */
#define FENCE_LEN 16

_Static_assert(EVENT_MAX_PATH == PATH_REL_MAX, "event paths carry any valid store path");

#define EVENT_F_KNOWN ((unsigned)EVENT_F_VREF)

/* Short names for the table. */
#define PATH	EVENT_FIELD_PATH
#define PATH2	EVENT_FIELD_PATH2
#define FID2	EVENT_FIELD_FID2
#define BASE	EVENT_FIELD_BASE
#define MODE	EVENT_FIELD_MODE
#define RDEV	EVENT_FIELD_RDEV
#define OWNER	EVENT_FIELD_OWNER
#define MTIME	EVENT_FIELD_MTIME
#define TIMES	EVENT_FIELD_TIMES
#define OFFSET	EVENT_FIELD_OFFSET
#define LENGTH	EVENT_FIELD_LENGTH
#define SIZE	EVENT_FIELD_SIZE
#define FLAGS	EVENT_FIELD_FLAGS
#define NAME	EVENT_FIELD_NAME
#define PAYLOAD EVENT_FIELD_PAYLOAD
#define TARGET	EVENT_FIELD_TARGET
#define VALUE	EVENT_FIELD_VALUE
#define TEXT	EVENT_FIELD_TEXT
#define FENCES	EVENT_FIELD_FENCES
#define CHANGE	EVENT_T_MUTATES

/*
 * Every type this version knows; a type without a row is refused.  An
 * event about an existing object may have no path: the file was unlinked
 * while still open.
 */
static const struct event_type_info type_table[] = {
    [EV_CREATE] = {"create", CHANGE | EVENT_T_CREATES, PATH | MODE | OWNER | MTIME, PATH},
    [EV_MKNOD] = {"mknod", CHANGE | EVENT_T_CREATES, PATH | MODE | RDEV | OWNER | MTIME, PATH},
    [EV_MKDIR] = {"mkdir", CHANGE | EVENT_T_CREATES, PATH | MODE | OWNER, PATH},
    [EV_SYMLINK] = {"symlink", CHANGE | EVENT_T_CREATES, PATH | OWNER | TARGET, PATH | TARGET},
    /* path is the existing name, path2 the new one. */
    [EV_LINK] = {"link", CHANGE, PATH | PATH2 | BASE, PATH | PATH2},
    [EV_UNLINK] = {"unlink", CHANGE, PATH | BASE, PATH},
    [EV_RMDIR] = {"rmdir", CHANGE, PATH | BASE, PATH},
    [EV_RENAME] = {"rename", CHANGE, PATH | PATH2 | FID2 | BASE | FLAGS, PATH | PATH2},
    [EV_WRITE] = {"write", CHANGE | EVENT_T_CONTENT | EVENT_T_VREF,
		  PATH | BASE | OFFSET | PAYLOAD | MTIME, 0},
    [EV_TRUNCATE] = {"truncate", CHANGE | EVENT_T_CONTENT, PATH | BASE | SIZE | MTIME, 0},
    /* op_flags is fallocate(2)'s mode. */
    [EV_FALLOCATE] = {"fallocate", CHANGE | EVENT_T_CONTENT,
		      PATH | BASE | OFFSET | LENGTH | FLAGS | MTIME, 0},
    [EV_CHMOD] = {"chmod", CHANGE, PATH | BASE | MODE, 0},
    /* mode is the one after the change, which may clear set-id bits. */
    [EV_CHOWN] = {"chown", CHANGE, PATH | BASE | OWNER | MODE, 0},
    [EV_UTIMENS] = {"utimens", CHANGE, PATH | BASE | TIMES, 0},
    [EV_SETXATTR] = {"setxattr", CHANGE, PATH | BASE | NAME | VALUE | FLAGS, NAME},
    [EV_REMOVEXATTR] = {"removexattr", CHANGE, PATH | BASE | NAME, NAME},
    [EV_VOID] = {"void", 0, 0, 0},
    [EV_OUTAGE] = {"outage", 0, 0, 0},
    /* base = the first event fetched (origin, seq), length = the last seq fetched. */
    [EV_RECOVERED] = {"recovered", 0, BASE | LENGTH, 0},
    /*
     * op_flags = 1 for a promotion (to term), 0 for a demotion; data =
     * each origin's applied seq when it was promoted: the fences.
     */
    [EV_ROLE] = {"role", 0, FLAGS | FENCES, 0},
    /*
     * The stores diverged: a peer's event did not apply here (its base
     * version or fids do not match).  base = that event, path = the
     * subtree healed from the peer ("." the root), path2 = the event's
     * path (absent if it had none), name = the peer, data = why,
     * op_flags = EVENT_DIVERGED_*.
     */
    [EV_DIVERGED] = {"diverged", 0, PATH | PATH2 | BASE | NAME | TEXT | FLAGS, 0},
    /*
     * base = the event that diverged, path = the subtree replaced from the
     * peer, name = the peer, offset = its position: the peer's applied seq
     * of base.origin when it read the subtree, length = the entries
     * replaced, data = what was done to them, a line each ("fetch PATH",
     * "dir PATH", "link PATH", "delete PATH"), cut after
     * EVENT_HEALED_LIST_MAX bytes with a last line "...".
     */
    [EV_HEALED] = {"healed", 0, PATH | BASE | NAME | OFFSET | LENGTH | TEXT, 0},
};
#undef PATH
#undef PATH2
#undef FID2
#undef BASE
#undef MODE
#undef RDEV
#undef OWNER
#undef MTIME
#undef TIMES
#undef OFFSET
#undef LENGTH
#undef SIZE
#undef FLAGS
#undef NAME
#undef PAYLOAD
#undef TARGET
#undef VALUE
#undef TEXT
#undef FENCES
#undef CHANGE

/* The variable-length fields, whether they come from a buffer or an event. */
struct event_tail {
	const char *path;
	const char *path2;
	const char *name;
	const uint8_t *data;
	size_t path_len;
	size_t path2_len;
	size_t name_len;
	size_t data_len;
};

static void put_u8(uint8_t *p, uint8_t v)
{
	p[0] = v;
}

/* An absent field is NULL with length 0, which memchr() must not be given. */
static int has_nul(const void *p, size_t n)
{
	return n != 0 && memchr(p, 0, n) != NULL;
}

const struct event_type_info *event_type_info(unsigned type)
{
	if (type >= sizeof(type_table) / sizeof(type_table[0]) || !type_table[type].name)
		return NULL;
	return &type_table[type];
}

int event_type_is(unsigned type, unsigned props)
{
	const struct event_type_info *ti = event_type_info(type);

	return ti && (ti->props & props) == props;
}

const char *event_type_name(unsigned type)
{
	const struct event_type_info *ti = event_type_info(type);

	return ti ? ti->name : "unknown";
}

int event_type_mutates(unsigned type)
{
	return event_type_is(type, EVENT_T_MUTATES);
}

int event_record_len_ok(size_t len)
{
	return len >= EVENT_HEADER_LEN && len <= EVENT_MAX_RECORD;
}

/*
 * The checks shared by encoder and decoder, so that the two accept exactly
 * the same events.  -EPROTO for an unknown type, -EBADMSG otherwise.
 */
static int event_check(unsigned type, unsigned flags, const struct event_tail *t, const char **why)
{
	const struct event_type_info *ti = event_type_info(type);

	if (!ti) {
		*why = "unknown type";
		return -EPROTO;
	}
	if (flags & ~EVENT_F_KNOWN) {
		*why = "unknown flags";
		return -EBADMSG;
	}
	if (t->path_len > EVENT_MAX_PATH) {
		*why = "path too long";
		return -EBADMSG;
	}
	if (t->path2_len > EVENT_MAX_PATH) {
		*why = "path2 too long";
		return -EBADMSG;
	}
	if (t->name_len > EVENT_MAX_NAME) {
		*why = "name too long";
		return -EBADMSG;
	}
	if (t->data_len > EVENT_MAX_DATA) {
		*why = "data too long";
		return -EBADMSG;
	}
	if (has_nul(t->path, t->path_len)) {
		*why = "NUL in path";
		return -EBADMSG;
	}
	if (has_nul(t->path2, t->path2_len)) {
		*why = "NUL in path2";
		return -EBADMSG;
	}
	if (has_nul(t->name, t->name_len)) {
		*why = "NUL in name";
		return -EBADMSG;
	}
	if ((flags & EVENT_F_VREF) && !(ti->props & EVENT_T_VREF)) {
		*why = "vref on a type other than write";
		return -EBADMSG;
	}
	if ((flags & EVENT_F_VREF) && t->data_len != 0) {
		*why = "vref with inline data";
		return -EBADMSG;
	}
	if ((ti->need & EVENT_FIELD_PATH) && t->path_len == 0) {
		*why = "missing path";
		return -EBADMSG;
	}
	if ((ti->need & EVENT_FIELD_PATH2) && t->path2_len == 0) {
		*why = "missing path2";
		return -EBADMSG;
	}
	if ((ti->need & EVENT_FIELD_NAME) && t->name_len == 0) {
		*why = "missing name";
		return -EBADMSG;
	}
	if ((ti->need & EVENT_FIELDS_DATA) && t->data_len == 0) {
		*why = "missing data";
		return -EBADMSG;
	}
	/* A symlink target becomes a C string that symlink(2) takes whole. */
	if ((ti->fields & EVENT_FIELD_TARGET) && t->data_len > EVENT_MAX_TARGET) {
		*why = "symlink target too long";
		return -EBADMSG;
	}
	if ((ti->fields & EVENT_FIELD_TARGET) && has_nul(t->data, t->data_len)) {
		*why = "NUL in symlink target";
		return -EBADMSG;
	}
	return 0;
}

static void event_tail_of(const struct event *ev, struct event_tail *t)
{
	t->path = ev->path;
	t->path2 = ev->path2;
	t->name = ev->name;
	t->data = ev->data;
	t->path_len = ev->path ? strlen(ev->path) : 0;
	t->path2_len = ev->path2 ? strlen(ev->path2) : 0;
	t->name_len = ev->name ? strlen(ev->name) : 0;
	t->data_len = ev->data_len;
}

size_t event_encoded_len(const struct event *ev)
{
	struct event_tail t;

	event_tail_of(ev, &t);
	return EVENT_HEADER_LEN + t.path_len + t.path2_len + t.name_len + t.data_len;
}

static void put_header(uint8_t *buf, const struct event *ev, const struct event_tail *t)
{
	put_u8(buf + OFF_VERSION, EVENT_VERSION);
	put_u8(buf + OFF_TYPE, ev->type);
	put_le16(buf + OFF_FLAGS, ev->flags);
	put_le64(buf + OFF_ORIGIN, ev->origin);
	put_le64(buf + OFF_SEQ, ev->seq);
	put_le64(buf + OFF_HLC, ev->hlc);
	put_le64(buf + OFF_TERM, ev->term);
	put_le64(buf + OFF_FID_ORIGIN, ev->fid.origin);
	put_le64(buf + OFF_FID_COUNTER, ev->fid.counter);
	put_le64(buf + OFF_FID2_ORIGIN, ev->fid2.origin);
	put_le64(buf + OFF_FID2_COUNTER, ev->fid2.counter);
	put_le64(buf + OFF_BASE_ORIGIN, ev->base.origin);
	put_le64(buf + OFF_BASE_SEQ, ev->base.seq);
	put_le64(buf + OFF_OFFSET, ev->offset);
	put_le64(buf + OFF_LENGTH, ev->length);
	put_le64(buf + OFF_RDEV, ev->rdev);
	put_le32(buf + OFF_MODE, ev->mode);
	put_le32(buf + OFF_UID, ev->uid);
	put_le32(buf + OFF_GID, ev->gid);
	put_le32(buf + OFF_OP_FLAGS, ev->op_flags);
	put_le64(buf + OFF_ATIME_SEC, (uint64_t)ev->atime_sec);
	put_le32(buf + OFF_ATIME_NSEC, ev->atime_nsec);
	put_le64(buf + OFF_MTIME_SEC, (uint64_t)ev->mtime_sec);
	put_le32(buf + OFF_MTIME_NSEC, ev->mtime_nsec);
	put_le32(buf + OFF_VREF_SEGMENT, ev->vref.segment);
	put_le64(buf + OFF_VREF_OFFSET, ev->vref.offset);
	put_le32(buf + OFF_VREF_LEN, ev->vref.len);
	put_le32(buf + OFF_VREF_CRC, ev->vref.crc);
	put_le16(buf + OFF_PATH_LEN, (uint16_t)t->path_len);
	put_le16(buf + OFF_PATH2_LEN, (uint16_t)t->path2_len);
	put_le16(buf + OFF_NAME_LEN, (uint16_t)t->name_len);
	put_le32(buf + OFF_DATA_LEN, (uint32_t)t->data_len);
}

/* Appends n bytes at *p; memcpy must not see a NULL source even for n == 0. */
static void put_bytes(uint8_t **p, const void *src, size_t n)
{
	if (n == 0)
		return;
	memcpy(*p, src, n);
	*p += n;
}

int event_encode(const struct event *ev, uint8_t *buf, size_t cap, size_t *len)
{
	struct event_tail t;
	const char *why;
	size_t need;
	uint8_t *p;

	event_tail_of(ev, &t);
	if (t.data_len != 0 && !t.data)
		return -EINVAL;
	if (event_check(ev->type, ev->flags, &t, &why) < 0)
		return -EINVAL;
	need = EVENT_HEADER_LEN + t.path_len + t.path2_len + t.name_len + t.data_len;
	if (need > cap)
		return -ENOSPC;

	put_header(buf, ev, &t);
	p = buf + EVENT_HEADER_LEN;
	put_bytes(&p, t.path, t.path_len);
	put_bytes(&p, t.path2, t.path2_len);
	put_bytes(&p, t.name, t.name_len);
	put_bytes(&p, t.data, t.data_len);
	put_le32(buf + OFF_RECORD_LEN, (uint32_t)need);
	put_le32(buf + OFF_CRC, crc32c(0, buf + CRC_START, need - CRC_START));
	*len = need;
	return 0;
}

int event_encode_inline_head(const struct event *ev, uint8_t *buf, size_t cap, size_t *head,
			     size_t *len)
{
	struct event e = *ev;
	struct event_tail t;
	const char *why;
	uint8_t *p;

	if (!(ev->flags & EVENT_F_VREF) || ev->data)
		return -EINVAL;
	e.flags &= (uint16_t)~EVENT_F_VREF;
	e.vref = (struct vref){0};
	e.data_len = ev->vref.len;
	event_tail_of(&e, &t);
	if (event_check(e.type, e.flags, &t, &why) < 0)
		return -EINVAL;
	*len = EVENT_HEADER_LEN + t.path_len + t.path2_len + t.name_len + t.data_len;
	*head = *len - t.data_len;
	if (*head > cap)
		return -ENOSPC;
	put_header(buf, &e, &t);
	p = buf + EVENT_HEADER_LEN;
	put_bytes(&p, t.path, t.path_len);
	put_bytes(&p, t.path2, t.path2_len);
	put_bytes(&p, t.name, t.name_len);
	put_le32(buf + OFF_RECORD_LEN, (uint32_t)*len);
	return 0;
}

void event_seal(uint8_t *rec, size_t len)
{
	put_le32(rec + OFF_CRC, crc32c(0, rec + CRC_START, len - CRC_START));
}

static void get_header(const uint8_t *buf, struct event *ev)
{
	ev->type = buf[OFF_TYPE];
	ev->flags = get_le16(buf + OFF_FLAGS);
	ev->origin = get_le64(buf + OFF_ORIGIN);
	ev->seq = get_le64(buf + OFF_SEQ);
	ev->hlc = get_le64(buf + OFF_HLC);
	ev->term = get_le64(buf + OFF_TERM);
	ev->fid.origin = get_le64(buf + OFF_FID_ORIGIN);
	ev->fid.counter = get_le64(buf + OFF_FID_COUNTER);
	ev->fid2.origin = get_le64(buf + OFF_FID2_ORIGIN);
	ev->fid2.counter = get_le64(buf + OFF_FID2_COUNTER);
	ev->base.origin = get_le64(buf + OFF_BASE_ORIGIN);
	ev->base.seq = get_le64(buf + OFF_BASE_SEQ);
	ev->offset = get_le64(buf + OFF_OFFSET);
	ev->length = get_le64(buf + OFF_LENGTH);
	ev->rdev = get_le64(buf + OFF_RDEV);
	ev->mode = get_le32(buf + OFF_MODE);
	ev->uid = get_le32(buf + OFF_UID);
	ev->gid = get_le32(buf + OFF_GID);
	ev->op_flags = get_le32(buf + OFF_OP_FLAGS);
	ev->atime_sec = (int64_t)get_le64(buf + OFF_ATIME_SEC);
	ev->atime_nsec = get_le32(buf + OFF_ATIME_NSEC);
	ev->mtime_sec = (int64_t)get_le64(buf + OFF_MTIME_SEC);
	ev->mtime_nsec = get_le32(buf + OFF_MTIME_NSEC);
	ev->vref.segment = get_le32(buf + OFF_VREF_SEGMENT);
	ev->vref.offset = get_le64(buf + OFF_VREF_OFFSET);
	ev->vref.len = get_le32(buf + OFF_VREF_LEN);
	ev->vref.crc = get_le32(buf + OFF_VREF_CRC);
}

/* A NUL-terminated malloc'd copy of n bytes, NULL for n == 0.  0 or -ENOMEM. */
static int dup_string(char **out, const char *src, size_t n)
{
	*out = NULL;
	if (n == 0)
		return 0;
	*out = malloc(n + 1);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, src, n);
	(*out)[n] = '\0';
	return 0;
}

/* A malloc'd copy of n bytes, NULL for n == 0.  0 or -ENOMEM. */
static int dup_bytes(uint8_t **out, const uint8_t *src, size_t n)
{
	*out = NULL;
	if (n == 0)
		return 0;
	*out = malloc(n);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, src, n);
	return 0;
}

/* Locates the variable-length fields of a record whose length is already checked. */
static int tail_of_record(const uint8_t *buf, uint32_t record_len, struct event_tail *t,
			  const char **why)
{
	uint64_t sum;
	const uint8_t *p = buf + EVENT_HEADER_LEN;

	t->path_len = get_le16(buf + OFF_PATH_LEN);
	t->path2_len = get_le16(buf + OFF_PATH2_LEN);
	t->name_len = get_le16(buf + OFF_NAME_LEN);
	t->data_len = get_le32(buf + OFF_DATA_LEN);
	sum = (uint64_t)t->path_len + t->path2_len + t->name_len + t->data_len;
	if (sum > record_len - EVENT_HEADER_LEN) {
		*why = "lengths overrun record";
		return -EBADMSG;
	}
	if (sum < record_len - EVENT_HEADER_LEN) {
		*why = "lengths leave bytes unused";
		return -EBADMSG;
	}
	t->path = (const char *)p;
	p += t->path_len;
	t->path2 = (const char *)p;
	p += t->path2_len;
	t->name = (const char *)p;
	p += t->name_len;
	t->data = p;
	return 0;
}

/* The record length of the record at buf, checked against its bounds and len. */
static int record_len_of(const uint8_t *buf, size_t len, uint32_t *record_len, const char **why)
{
	if (len < EVENT_HEADER_LEN) {
		*why = "truncated header";
		return -EBADMSG;
	}
	*record_len = get_le32(buf + OFF_RECORD_LEN);
	if (*record_len < EVENT_HEADER_LEN) {
		*why = "record length smaller than header";
		return -EBADMSG;
	}
	if (*record_len > EVENT_MAX_RECORD) {
		*why = "record too long";
		return -EBADMSG;
	}
	if (*record_len > len) {
		*why = "truncated record";
		return -EBADMSG;
	}
	return 0;
}

static int check_version(const uint8_t *buf, const char **why)
{
	if (buf[OFF_VERSION] != EVENT_VERSION) {
		*why = "unknown version";
		return -EPROTO;
	}
	return 0;
}

int event_peek_header(const uint8_t *buf, size_t len, struct event_head *h, const char **why)
{
	const char *unused_why;
	uint32_t record_len;
	int r;

	if (!why)
		why = &unused_why;
	r = record_len_of(buf, len, &record_len, why);
	if (r == 0)
		r = check_version(buf, why);
	if (r < 0)
		return r;
	h->len = record_len;
	h->type = buf[OFF_TYPE];
	h->flags = get_le16(buf + OFF_FLAGS);
	h->origin = get_le64(buf + OFF_ORIGIN);
	h->seq = get_le64(buf + OFF_SEQ);
	h->hlc = get_le64(buf + OFF_HLC);
	h->term = get_le64(buf + OFF_TERM);
	return 0;
}

int event_decode(const uint8_t *buf, size_t len, struct event *ev, size_t *used, const char **why)
{
	struct event_tail t;
	const char *unused_why;
	uint32_t record_len;
	int r;

	if (!why)
		why = &unused_why;
	memset(ev, 0, sizeof(*ev));

	r = record_len_of(buf, len, &record_len, why);
	if (r < 0)
		return r;
	if (crc32c(0, buf + CRC_START, record_len - CRC_START) != get_le32(buf + OFF_CRC)) {
		*why = "bad crc";
		return -EBADMSG;
	}
	r = check_version(buf, why);
	if (r < 0)
		return r;
	r = tail_of_record(buf, record_len, &t, why);
	if (r < 0)
		return r;
	r = event_check(buf[OFF_TYPE], get_le16(buf + OFF_FLAGS), &t, why);
	if (r < 0)
		return r;

	get_header(buf, ev);
	ev->data_len = (uint32_t)t.data_len;
	r = dup_string(&ev->path, t.path, t.path_len);
	if (r < 0)
		goto out;
	r = dup_string(&ev->path2, t.path2, t.path2_len);
	if (r < 0)
		goto out;
	r = dup_string(&ev->name, t.name, t.name_len);
	if (r < 0)
		goto out;
	r = dup_bytes(&ev->data, t.data, t.data_len);
	if (r < 0)
		goto out;
	if (used)
		*used = record_len;
out:
	if (r < 0) {
		*why = "out of memory";
		event_free(ev);
	}
	return r;
}

void event_free(struct event *ev)
{
	free(ev->path);
	free(ev->path2);
	free(ev->name);
	free(ev->data);
	memset(ev, 0, sizeof(*ev));
}

/* Empty and NULL both clear the field, as an empty string decodes to NULL. */
static int set_string(char **field, const char *s)
{
	char *copy = NULL;

	if (s && *s) {
		copy = strdup(s);
		if (!copy)
			return -ENOMEM;
	}
	free(*field);
	*field = copy;
	return 0;
}

int event_set_path(struct event *ev, const char *path)
{
	return set_string(&ev->path, path);
}

int event_set_path2(struct event *ev, const char *path2)
{
	return set_string(&ev->path2, path2);
}

int event_set_name(struct event *ev, const char *name)
{
	return set_string(&ev->name, name);
}

/* len == 0 clears the data; -EINVAL for a NULL source with len > 0. */
int event_set_data(struct event *ev, const void *data, uint32_t len)
{
	uint8_t *copy = NULL;

	if (len != 0 && !data)
		return -EINVAL;
	if (len != 0) {
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, data, len);
	}
	free(ev->data);
	ev->data = copy;
	ev->data_len = len;
	return 0;
}

int event_set_fences(struct event *ev, const struct evid *v, uint32_t n)
{
	uint8_t *data = NULL;

	if (n > EVENT_MAX_DATA / FENCE_LEN)
		return -EINVAL;
	if (n) {
		data = malloc((size_t)n * FENCE_LEN);
		if (!data)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		put_le64(data + (size_t)i * FENCE_LEN, v[i].origin);
		put_le64(data + (size_t)i * FENCE_LEN + 8, v[i].seq);
	}
	free(ev->data);
	ev->data = data;
	ev->data_len = n * FENCE_LEN;
	return 0;
}

uint32_t event_fence_count(const struct event *ev)
{
	return ev->data ? ev->data_len / FENCE_LEN : 0;
}

struct evid event_fence(const struct event *ev, uint32_t i)
{
	const uint8_t *p = ev->data + (size_t)i * FENCE_LEN;

	return (struct evid){get_le64(p), get_le64(p + 8)};
}
