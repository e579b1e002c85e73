/*
 * archive.h - continuous archiving of a node's journal into a backup
 * repository, and reading the archive back for a point-in-time restore.
 *
 * A node with "[archive] repository = PATH" runs an archiver thread that
 * every ARCHIVE_INTERVAL_MS writes the events it applied since the last
 * time into REPO/archive/<origin>/<first>-<last> segments (origin 16 hex
 * digits, seqs 20 decimal digits, so names sort by seq), each sealed:
 *
 *   "LFSARSG1"  u32 format  u64 origin  u64 first  u64 last
 *   u64 first term  u64 last term  u64 first hlc  u64 last hlc  u32 count
 *   count x (u32 length, event record with its payload inline)
 *   32 SHA-256 of every byte before it
 *
 * A segment is written to a temp name, fsync'd and renamed, then its
 * directory fsync'd; only then does the archiver record, in the journal,
 * how far each origin is archived (a checkpoint of the pseudo-peer
 * ARCHIVE_PEER_ID), and trimming never drops an event above it
 * (repl.c), as it waits for members' confirmations.  A node's own events
 * are archived once durable (node_synced_seq()).  Several nodes may
 * archive into one repository: segments may overlap, and a reader takes
 * each event once.
 */
#ifndef LEDGERFS_BACKUP_ARCHIVE_H
#define LEDGERFS_BACKUP_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "backup/repo.h"
#include "journal/event.h"
#include "node/node.h"

#define ARCHIVE_DIR	    "archive"
#define ARCHIVE_MAGIC	    "LFSARSG1"
#define ARCHIVE_FORMAT	    1
#define ARCHIVE_PEER_ID	    UINT64_MAX
#define ARCHIVE_INTERVAL_MS 1000
#define ARCHIVE_SEG_EVENTS  4096
#define ARCHIVE_SEG_BYTES   (64u << 20)

/* What a segment's header says. */
struct archive_seg {
	uint64_t origin, first, last;
	uint64_t term_first, term_last;
	uint64_t hlc_first, hlc_last;
	uint32_t count;
};

/*
 * Write the events first..last of origin from j (fewer if ARCHIVE_SEG_BYTES
 * is reached first: *last_out says where it stopped) as one sealed
 * segment in r.  0, or a negative errno with err naming the event or path
 * (-ESTALE: an event was trimmed).
 */
int archive_segment_write(struct repo *r, struct journal *j, uint64_t origin, uint64_t first,
			  uint64_t last, uint64_t *last_out, char *err, size_t errlen);

/*
 * Read and check the segment at path (the file as a whole against its
 * SHA-256, then each record) into *h and *evs (malloc'd, *n events,
 * backup_events_free()).  0, or -EBADMSG with err naming the file and what
 * is wrong.
 */
int archive_segment_read(const char *path, struct archive_seg *h, struct event **evs, size_t *n,
			 char *err, size_t errlen);

/*
 * The segments of origin in r, sorted by first seq: *paths (malloc'd
 * array of malloc'd full paths, repo_names_free()) and *n.  None is not an
 * error.  0 or -errno.
 */
int archive_list(struct repo *r, uint64_t origin, char ***paths, size_t *n);

/* The origins that have an archive directory in r (malloc'd, *n).  0 or -errno. */
int archive_origins(struct repo *r, uint64_t **origins, size_t *n);

/* The daemon's archiver thread. */
struct archiver;

/* What status shows of it. */
struct archive_status {
	int on;
	uint64_t lag_events; /* applied but not archived yet, over every origin */
	int64_t lag_ms;	     /* since the oldest event not archived was applied, 0 if none */
	int64_t last_ok_ms;  /* wall clock of the last pass that archived everything */
	char error[256];     /* the last pass's failure, "" if it worked */
};

/*
 * Start archiving n's journal into the repository at path (made if
 * missing).  *out is the caller's: archiver_stop().  0 or a negative errno
 * (logged with the path).
 */
int archiver_start(struct node *n, const char *path, struct archiver **out);

/* Stop and join the thread; NULL is allowed. */
void archiver_stop(struct archiver *a);

/* Fill *st (thread-safe). */
void archiver_status(struct archiver *a, struct archive_status *st);

/* The seq of origin archived so far, as recorded in j (0 if none). */
uint64_t archive_done(struct journal *j, uint64_t origin);

#endif
