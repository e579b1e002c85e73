/*
 * proto.h - frames of the replication protocol between peers.
 *
 * Peers exchange frames over a TLS stream.  A frame is
 *
 *   u32 length          bytes that follow: type + body, 1..PROTO_MAX_FRAME
 *   u8  type            enum proto_type
 *   body                per type, below
 *
 * all integers little-endian.  The hard maximum lets a reader refuse a
 * frame from its length field alone, before buffering any of it.  This
 * module only turns frames into bytes and back; it does no I/O, so the
 * links, the shipper and the receiver share one codec that can be tested
 * and fuzzed on its own.  Every decoder treats its input as hostile and
 * names what it refused in a static string (`why`) for the log line that
 * drops the link.
 *
 * Bodies:
 *   HELLO   u16 version, u8[16] cluster id, u64 node id, u64 term,
 *           u64 primary (the node id the sender knows as primary, 0 if none),
 *           u32 count, count x (u64 origin, u64 seq)   applied vector,
 *           [u32 flags]   only when nonzero (PROTO_HELLO_*), so that an
 *                         ordinary HELLO is what it always was
 *   EVENTS  u32 count, count x (u32 len, len bytes)    event records (event.h)
 *   ACK     u64 origin, u64 seq
 *   FETCH   u64 origin, u64 from_seq
 *   PING    u64 nonce
 *   PONG    u64 nonce
 *   ERROR   u16 code, u16 len, len bytes of UTF-8      why the link is dropped
 *
 * Snapshot resync (repl/snap_send.c, snap_recv.c), asked by the dialling
 * side of a link (the receiver) of the side it dialled (the sender); a
 * path is u16 len + bytes, a store path as path_check() accepts:
 *   SNAP_BEGIN  u64 round                      build a hash tree now
 *   SNAP_INFO   u64 round, u64 entries, u32 count, count x (u64 origin, u64 seq)
 *               the tree's position: the sender's applied vector when built
 *   SNAP_LIST   path                           a directory's listing, please
 *   SNAP_DIR    path, listing (merkle.h wire format, the rest of the body)
 *   SNAP_GET    u32 id, path                   an entry, please
 *   SNAP_ENTRY  u32 id, u8 status, u32 mode, u32 uid, u32 gid, u64 size,
 *               i64 mtime_sec, u32 mtime_nsec, u64 rdev, u16 target_len,
 *               target, u32 xattrs_len, xattr blob (snapshot.h)
 *               status SNAP_ENTRY_CHANGED: the path no longer holds what the
 *               tree had (metadata fields then zero); a regular file's
 *               contents follow in DATA frames, in order, size bytes in all
 *   SNAP_DATA   u32 id, u64 offset, the rest of the body: contents
 *   SNAP_DONE   u64 round                      every entry received
 *   SNAP_END    u64 round, u64 0, u32 count, count x (u64 origin, u64 seq)
 *               the sender's applied vector now: replay up to it may meet
 *               changes that files sent already show
 *   SNAP_SCOPE  u32 round, path                build a hash tree of the directory
 *               at path only (a heal, receive.c), then as after SNAP_BEGIN,
 *               every path relative to that directory; SNAP_INFO with
 *               entries 0 says path is not a directory here
 */
#ifndef LEDGERFS_PROTO_H
#define LEDGERFS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "journal/event.h"
#include "lib/buf.h"
#include "resync/snapshot.h"

#define PROTO_VERSION 1
/* The u32 length and the u8 type in front of every body. */
#define PROTO_HEADER_LEN 5
/* Largest value of the length field (type + body). */
#define PROTO_MAX_FRAME (64u << 20)
/* Largest applied vector in a HELLO: origins are cluster members. */
#define PROTO_MAX_VECTOR 4096
/*
 * HELLO flags.  PUSH: the dialling side pushes events over this link
 * (`ledgerctl rescue`) instead of subscribing to them.  The dialled side
 * answers with its own HELLO, whose applied vector says what it lacks,
 * then takes EVENTS frames as a receiver does and ACKs them; the pusher
 * ends with ERROR PROTO_ERR_SHUTDOWN once every event is acknowledged.
 * A node of a build without flags refuses such a HELLO ("trailing bytes").
 */
#define PROTO_HELLO_PUSH  0x1u
#define PROTO_HELLO_FLAGS PROTO_HELLO_PUSH /* every flag this build knows */
/* Largest ERROR message in bytes, without a terminator. */
#define PROTO_MAX_ERROR_MSG  256
#define PROTO_CLUSTER_ID_LEN 16

enum proto_type {
	PROTO_HELLO = 1,
	PROTO_EVENTS = 2,
	PROTO_ACK = 3,
	PROTO_FETCH = 4,
	PROTO_PING = 5,
	PROTO_PONG = 6,
	PROTO_ERROR = 7,
	PROTO_SNAP_BEGIN = 8,
	PROTO_SNAP_INFO = 9,
	PROTO_SNAP_LIST = 10,
	PROTO_SNAP_DIR = 11,
	PROTO_SNAP_GET = 12,
	PROTO_SNAP_ENTRY = 13,
	PROTO_SNAP_DATA = 14,
	PROTO_SNAP_DONE = 15,
	PROTO_SNAP_END = 16,
	PROTO_SNAP_SCOPE = 17,
};

/* SNAP_ENTRY status. */
#define SNAP_ENTRY_OK	   0
#define SNAP_ENTRY_CHANGED 1

/*
 * Codes carried by ERROR.  A peer may send a code this build does not know
 * (a newer version): the decoder accepts any code, proto_error_name() says
 * "unknown" for it.
 */
enum proto_error_code {
	PROTO_ERR_MALFORMED = 1, /* a frame or event failed to decode */
	PROTO_ERR_VERSION = 2,	 /* protocol version not supported */
	PROTO_ERR_CLUSTER = 3,	 /* HELLO names another cluster */
	PROTO_ERR_MEMBER = 4,	 /* node id not in the membership, or not the certificate's */
	PROTO_ERR_TERM = 5,	 /* events from a term lower than one already seen */
	PROTO_ERR_EVENT = 6,	 /* an event decoded but breaks an invariant */
	PROTO_ERR_TRIMMED = 7,	 /* FETCH asks for events this node no longer holds */
	PROTO_ERR_SHUTDOWN = 8,	 /* the node is stopping */
};

/* Name of a frame type for logs ("hello", ...); "unknown" otherwise. */
const char *proto_type_name(unsigned type);

/* Name of an error code for logs ("malformed", ...); "unknown" otherwise. */
const char *proto_error_name(unsigned code);

/*
 * Is a whole frame at the start of buf (len bytes buffered so far)?
 * Returns 0 with *frame_len = 4 + the length field: the bytes to hand to
 * proto_parse() and then drop from the stream.  -EAGAIN if more
 * bytes are needed; *frame_len is then the whole frame's size once the
 * length field is buffered (for sizing the read buffer), 0 before.
 * Errors, with *why set and *frame_len 0: -EBADMSG for a zero length,
 * -EMSGSIZE for one over PROTO_MAX_FRAME or, once the type byte is
 * buffered, over the most that type can need; -EPROTO for an unknown
 * type.  The stream cannot be resynchronised after any: drop the link.
 */
int proto_frame_peek(const uint8_t *buf, size_t len, size_t *frame_len, const char **why);

/* HELLO.  The vector lists origins in strictly increasing order. */
struct proto_hello {
	uint8_t cluster_id[PROTO_CLUSTER_ID_LEN];
	uint64_t node_id;
	uint64_t term;
	uint64_t primary; /* node id the sender knows as primary; 0 if none */
	uint32_t count;
	struct evid *applied; /* per origin, the highest contiguous seq applied */
	uint32_t flags;	      /* PROTO_HELLO_*; 0 for an ordinary link */
};

/* EVENTS, as decoded: the records stay in the frame, walked with an iterator. */
struct proto_events {
	uint32_t count;
	const uint8_t *records; /* count x (u32 len, record), inside the frame */
	size_t records_len;
};

/* ACK: every event of origin up to seq is journaled (synced) and applied. */
struct proto_ack {
	uint64_t origin;
	uint64_t seq;
};

/* FETCH: send the events of origin from from_seq on. */
struct proto_fetch {
	uint64_t origin;
	uint64_t from_seq;
};

struct proto_error {
	uint16_t code;
	char msg[PROTO_MAX_ERROR_MSG + 1]; /* NUL-terminated */
};

/* SNAP_INFO and SNAP_END: a round and a vector (malloc'd, owned by the message). */
struct proto_snap_vec {
	uint64_t round;
	uint64_t entries; /* SNAP_INFO: entries in the tree */
	uint32_t count;
	struct evid *vec;
};

/* SNAP_LIST, SNAP_DIR, SNAP_GET, SNAP_SCOPE. */
struct proto_snap_path {
	uint32_t id;		/* SNAP_GET; SNAP_SCOPE: the round */
	char *path;		/* malloc'd, NUL-terminated, path_check()ed */
	const uint8_t *listing; /* SNAP_DIR: inside the frame */
	size_t listing_len;
};

/* SNAP_ENTRY: meta's target and xattrs are malloc'd, owned by the message. */
struct proto_snap_entry {
	uint32_t id;
	uint8_t status;
	struct snap_meta meta;
};

/* SNAP_DATA: data points into the frame. */
struct proto_snap_data {
	uint32_t id;
	uint64_t offset;
	const uint8_t *data;
	size_t len;
};

struct proto_msg {
	uint8_t type; /* enum proto_type */
	union {
		struct proto_snap_vec snap_vec;
		struct proto_snap_path snap_path;
		struct proto_snap_entry snap_entry;
		struct proto_snap_data snap_data;
		uint64_t round; /* SNAP_BEGIN, SNAP_DONE */
		struct proto_hello hello;
		struct proto_events events;
		struct proto_ack ack;
		struct proto_fetch fetch;
		uint64_t nonce; /* PING and PONG */
		struct proto_error error;
	};
};

/*
 * Decodes one whole frame (len bytes, as measured by proto_frame_peek(),
 * length field included) into *out.  Returns 0, or leaves *out zeroed and
 * returns with *why set:
 *   -EBADMSG   truncated body, a length overrunning it, trailing bytes,
 *              a count over its bound, an unsorted vector, bad UTF-8,
 *              HELLO flags written as zero;
 *   -EPROTO    unknown frame type, protocol version or HELLO flag;
 *   -EMSGSIZE  length field over PROTO_MAX_FRAME;
 *   -ENOMEM    no memory for the HELLO vector.
 * HELLO's vector is malloc'd and owned by *out; EVENTS points into frame,
 * which must outlive *out.  EVENTS records are checked for structure only
 * (each length one event_record_len_ok() accepts, together filling the
 * body exactly); decode each with proto_event_decode().
 * Release *out with proto_msg_free() whatever its type.
 */
int proto_parse(const uint8_t *frame, size_t len, struct proto_msg *out, const char **why);

/* Frees what proto_parse() allocated and zeroes *msg.  Safe on a zeroed msg. */
void proto_msg_free(struct proto_msg *msg);

/* Walks the records of a parsed EVENTS frame. */
struct proto_events_iter {
	const uint8_t *p;
	size_t left;
};

void proto_events_iter_init(struct proto_events_iter *it, const struct proto_events *events);

/*
 * Next record: returns 1 with *rec and *len (pointing into the frame), or 0
 * after the last one.  proto_parse() already checked the structure.
 */
int proto_events_next(struct proto_events_iter *it, const uint8_t **rec, size_t *len);

/*
 * Decodes one shipped record with event_decode() and checks what only
 * matters on the wire: the record fills exactly the length it was framed
 * with, and it carries its payload inline (EVENT_F_VREF points into the
 * sender's value log, meaningless here).  Returns 0 with *ev filled (free
 * with event_free()), or an event_decode() error or -EBADMSG with *why
 * set and *ev zeroed.
 */
int proto_event_decode(const uint8_t *rec, size_t len, struct event *ev, const char **why);

/*
 * Encoders append one frame at b->len.  They return 0, -ENOMEM, or -EINVAL
 * for a message the decoder would refuse; on error b->len is unchanged.
 */

/*
 * Writes PROTO_VERSION, and the flags only when nonzero; -EINVAL if
 * count > PROTO_MAX_VECTOR, origins unsorted or a flag unknown.
 */
int proto_put_hello(struct buf *b, const struct proto_hello *hello);
int proto_put_ack(struct buf *b, uint64_t origin, uint64_t seq);
int proto_put_fetch(struct buf *b, uint64_t origin, uint64_t from_seq);
int proto_put_ping(struct buf *b, uint64_t nonce);
int proto_put_pong(struct buf *b, uint64_t nonce);
/* msg: NUL-terminated, valid UTF-8 without control characters, at most 256 bytes; NULL = "". */
int proto_put_error(struct buf *b, uint16_t code, const char *msg);

/* SNAP_BEGIN and SNAP_DONE. */
int proto_put_snap_round(struct buf *b, uint8_t type, uint64_t round);
/* SNAP_INFO (entries given) and SNAP_END (entries 0); -EINVAL as for HELLO's vector. */
int proto_put_snap_vec(struct buf *b, uint8_t type, uint64_t round, uint64_t entries,
		       const struct evid *vec, uint32_t count);
/*
 * SNAP_LIST (id ignored), SNAP_GET and SNAP_SCOPE (id: the round); -EINVAL
 * for a path path_check() refuses.
 */
int proto_put_snap_path(struct buf *b, uint8_t type, uint32_t id, const char *path);
/* SNAP_DIR: listing as merkle_dir_encode() wrote it. */
int proto_put_snap_dir(struct buf *b, const char *path, const uint8_t *listing, size_t len);
/* SNAP_ENTRY; meta may be NULL for SNAP_ENTRY_CHANGED.  -EINVAL for what the decoder refuses. */
int proto_put_snap_entry(struct buf *b, uint32_t id, uint8_t status, const struct snap_meta *meta);
/*
 * SNAP_DATA header for len bytes: the caller writes the contents at *data
 * (len bytes reserved), e.g. straight from read(2).  -EMSGSIZE if len is
 * over PROTO_SNAP_DATA_MAX.
 */
int proto_put_snap_data(struct buf *b, uint32_t id, uint64_t offset, size_t len, uint8_t **data);

/* Most contents bytes in one SNAP_DATA frame. */
#define PROTO_SNAP_DATA_MAX (1u << 20)

/*
 * An EVENTS frame built in place: begin, add records, end.  Records are
 * copied into b as they are added, so a batch costs one buffer, not two.
 * Until end, b holds an unfinished frame: do not append anything else.
 */
struct proto_batch {
	size_t start; /* offset of the frame in b: b->data may move as it grows */
	uint32_t count;
};

int proto_put_events_begin(struct buf *b, struct proto_batch *batch);

/*
 * Adds one encoded record.  -EMSGSIZE if it would take the frame over
 * PROTO_MAX_FRAME (end this batch, start another), -EINVAL if len is
 * no record length (event_record_len_ok()).  The record must carry
 * its payload inline: receivers refuse EVENT_F_VREF.
 */
int proto_put_events_add(struct buf *b, struct proto_batch *batch, const uint8_t *rec, size_t len);

/*
 * Adds a len-byte record for the caller to write at b->data + *off (an
 * offset: b->data moves as b grows) before the frame is sent.  Checks
 * as proto_put_events_add().
 */
int proto_put_events_reserve(struct buf *b, struct proto_batch *batch, size_t len, size_t *off);

/* Encodes ev straight into the batch; -EINVAL also if ev has EVENT_F_VREF. */
int proto_put_events_add_event(struct buf *b, struct proto_batch *batch, const struct event *ev);

/*
 * Finishes the frame.  An empty batch leaves no frame (b->len goes back to
 * where begin found it), since receivers refuse EVENTS with no record.
 */
int proto_put_events_end(struct buf *b, struct proto_batch *batch);

#endif
