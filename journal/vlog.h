/*
 * vlog.h - the journal's append-only value log for large write payloads.
 *
 * LevelDB rewrites every value it compacts, so megabyte payloads kept in it
 * would be copied again and again.  The value log holds them once, in
 * segment files <dir>/%08u.vlog, and the journaled event keeps a struct vref
 * (segment, offset, length, CRC32C) pointing at them (WiscKey, FAST '16).
 *
 * Record (little-endian):
 *   u32 payload_len, u32 crc32c(payload), u64 origin, u64 seq, payload
 * vref.offset is the offset of the payload, VLOG_HEADER_LEN past the record.
 * The header repeats the event's number so a reference that points at the
 * wrong record is caught, not only a damaged payload.
 *
 * Every open appends to a fresh segment, so a record torn by a crash is
 * never followed by good ones in the same file.  Space comes back a whole
 * segment at a time: the journal knows which events reference a segment
 * and calls vlog_remove() once none is left (journal.h, trimming).  Records are not durable
 * until vlog_sync(); the journal syncs the value log before LevelDB's log,
 * so a synced event never references a payload that could be lost.
 *
 * Thread safety: none; the journal's caller serialises access.
 */
#ifndef LEDGERFS_VLOG_H
#define LEDGERFS_VLOG_H

#include <stdint.h>

#include "journal/event.h"

#define VLOG_HEADER_LEN 24
/* A segment is closed once appending would take it past this size. */
#define VLOG_SEGMENT_MAX (256ull << 20)
/* Smallest roll-over size vlog_set_segment_max() sets: fewer files to open and list. */
#define VLOG_SEGMENT_MIN (1ull << 20)
/* Largest payload accepted; the same bound as an inline event payload. */
#define VLOG_MAX_PAYLOAD EVENT_MAX_DATA

struct vlog;

/*
 * Open the value log in dir, making the directory if it is missing.
 * segment_max is the roll-over size (VLOG_SEGMENT_MAX outside tests).
 * On success *out is owned by the caller: vlog_close().
 * Errors: negative errno; *why (may be NULL) names the problem.
 */
int vlog_open(const char *dir, uint64_t segment_max, struct vlog **out, const char **why);

/*
 * Change the roll-over size: the segment appends go to is closed once a
 * record would take it past bytes (at least VLOG_SEGMENT_MIN, at most
 * VLOG_SEGMENT_MAX), also when it is already larger.
 */
void vlog_set_segment_max(struct vlog *v, uint64_t bytes);

/* Closes without syncing (vlog_sync() first for durability).  NULL is allowed. */
void vlog_close(struct vlog *v);

/*
 * Append the payload of event (origin, seq) and fill *ref.  On failure
 * (-ENOSPC, -EIO, ...) nothing refers to the partial record and the next
 * append starts where this one did.  Not durable until vlog_sync().
 */
int vlog_append(struct vlog *v, uint64_t origin, uint64_t seq, const void *data, uint32_t len,
		struct vref *ref);

/*
 * fdatasync the segment being appended to if it has unsynced records.  A
 * failed fdatasync is sticky: the page cache may have dropped the data, so
 * every later append and sync fails with the same error.
 */
int vlog_sync(struct vlog *v);

/* A vlog_sync() in steps (below). */
struct vlog_sync {
	int fd;	       /* what to fdatasync, -1 if nothing */
	uint64_t upto; /* records it covers */
	int result;    /* of the fdatasync */
};

/*
 * vlog_sync() in three steps, so that the caller need not hold its lock
 * while the disk flushes.  vlog_sync_begin() (lock held) returns 1 when
 * records are waiting, 0 when none is, or a negative errno; then
 * vlog_sync_fd() makes every record appended before the begin durable and
 * may run concurrently with anything; vlog_sync_end() (lock held, after
 * every begin) records the outcome, a failure sticky as in vlog_sync().
 */
int vlog_sync_begin(struct vlog *v, struct vlog_sync *s);
int vlog_sync_fd(const struct vlog *v, struct vlog_sync *s);
void vlog_sync_end(struct vlog *v, struct vlog_sync *s);

/* End a begun sync that will not run (lock held): its records stay unsynced. */
void vlog_sync_cancel(struct vlog_sync *s);

/*
 * Read the payload ref points at into buf (ref->len bytes) and check it is
 * the record of event (origin, seq) and matches its CRC.
 * -EBADMSG with *why on a missing segment, short record, mismatched header
 * or bad CRC; other negative errno on I/O errors.
 */
int vlog_read(struct vlog *v, const struct vref *ref, uint64_t origin, uint64_t seq, void *buf,
	      const char **why);

/* vlog_read() through fd, a descriptor of ref's segment (vlog_dup_segment()). */
int vlog_read_fd(int fd, const struct vref *ref, uint64_t origin, uint64_t seq, void *buf,
		 const char **why);

/*
 * A read-only descriptor of segment that the caller owns (close(2)), to
 * read records with vlog_read_fd() without the journal's lock: a record
 * that an event references is never written again, and the descriptor
 * keeps the file readable even if trimming deletes it meanwhile.
 */
int vlog_dup_segment(struct vlog *v, uint32_t segment, int *fd, const char **why);

/* Number of the segment appends go to (its file may not exist yet). */
uint32_t vlog_segment(const struct vlog *v);

/*
 * Delete the file of segment.  -EBUSY for the segment appends go to.  A
 * missing file is success, so a removal cut short by a crash can simply be
 * repeated.  Not durable until vlog_sync_dir().
 */
int vlog_remove(struct vlog *v, uint32_t segment);

/* fsync the directory, making earlier removals durable. */
int vlog_sync_dir(struct vlog *v);

/* Sum of the segment file sizes. */
int vlog_disk_usage(struct vlog *v, uint64_t *bytes);

#endif
