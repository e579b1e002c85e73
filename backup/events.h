/*
 * events.h - the events a backup carries beside its files, and their
 * replay at restore.
 *
 * A backup of a store that changes while it is copied holds each object
 * as it was at some moment between the walk's start (the applied vector
 * from) and its end (pos).  The events (from, pos] of the source's journal
 * take every object to pos: replayed through the apply engine after the
 * files are laid down, each event either applies (the object was copied
 * before it) or finds its change already made (copied after it: the name
 * gone, the fid elsewhere, the version newer), which counts as applied, as
 * in a snapshot install (node_snap_lenient_err()).  An object copied
 * mid-change is right as well: its version xattr is read before its
 * contents and metadata, so what it says is applied is, and what came
 * later is replayed over it.
 *
 * File format: "LFSBKEV1", then per event u32 length and the record as
 * event_encode() makes it (payload inline, CRC32C).  The blob's SHA-256 in
 * the manifest guards the whole.
 */
#ifndef LEDGERFS_BACKUP_EVENTS_H
#define LEDGERFS_BACKUP_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "journal/event.h"
#include "lib/buf.h"
#include "journal/journal.h"
#include "store/store.h"

#define BACKUP_EVENTS_MAGIC "LFSBKEV1"

/*
 * Append event (origin, seq) of j to out as a backup carries it: u32
 * length, then the record with its payload inline.  hdr (may be NULL)
 * gets the event's term and hlc.  0, or a negative errno with err naming
 * the event: -ESTALE when j no longer holds it (trimmed).
 */
int backup_event_append(struct journal *j, uint64_t origin, uint64_t seq, struct buf *out,
			struct event *hdr, char *err, size_t errlen);

/*
 * Write the events (from, upto] of each origin of upto (n entries; an
 * origin missing from from starts at 1) from j to out, magic first.
 * *count gets the events written.  0, or a negative errno with err naming
 * the event: -ESTALE when j no longer holds one (trimmed).
 */
int backup_events_write(struct journal *j, const struct evid *from, size_t nfrom,
			const struct evid *upto, size_t n, FILE *out, uint64_t *count, char *err,
			size_t errlen);

/*
 * Decode a whole events file (len bytes at buf) into *evs (malloc'd, *n
 * events each freed with event_free(), then free()), in the order a
 * history is replayed in: by term, then origin, then seq (replay.h).  0,
 * or -EBADMSG with err saying which record is bad.
 */
int backup_events_decode(const uint8_t *buf, size_t len, struct event **evs, size_t *n, char *err,
			 size_t errlen);

/* Free what backup_events_decode() gave. */
void backup_events_free(struct event *evs, size_t n);

/*
 * Replay evs into s, with lenient leniently (above), else strictly (the
 * archived events after a backup's position, which the store is exactly
 * at).  *applied and *skipped count them.  0, or the negative errno of the
 * first event that does not apply, with err naming it and why.
 */
int backup_events_apply(struct store *s, const struct event *evs, size_t n, int lenient,
			uint64_t *applied, uint64_t *skipped, char *err, size_t errlen);

/* qsort() order of a history: by term, then origin, then seq. */
int backup_events_order(const void *a, const void *b);

#endif
