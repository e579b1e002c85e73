/*
 * snap_pipe.h - staging a resync's objects on a worker thread.
 *
 * The thread that reads a resync's frames hands each received entry to a
 * snap_pipe instead of staging it itself: a worker creates the staging
 * file, writes the contents, sets owner, mode, xattrs and mtime
 * (snapshot.h's snap_obj_*) and makes finished objects durable in batches
 * (snap_stage_flush()), while the reader decrypts the next frames.  With
 * several workers, objects are staged in any order (each one whole by one
 * worker); nothing depends on that order before snap_pipe_drain().
 *
 * Contents are copied into the queue, which holds at most max_bytes of
 * them: the reader waits for the worker beyond that.  The first error of
 * the worker sticks: every later call returns it, with the path of the
 * entry and what failed.
 */
#ifndef LEDGERFS_SNAP_PIPE_H
#define LEDGERFS_SNAP_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "resync/snapshot.h"

/* When the worker makes the objects it finished durable: whichever comes first. */
struct snap_pipe_limits {
	size_t objs;	  /* objects committed since the last flush */
	uint64_t bytes;	  /* content bytes written since the last flush */
	int64_t ms;	  /* milliseconds since the last flush, checked after each object */
	size_t max_bytes; /* content bytes queued and not yet written */
	size_t workers;	  /* threads, 1..SNAP_PIPE_MAX_WORKERS */
};

#define SNAP_PIPE_MAX_WORKERS 4

struct snap_pipe;

/*
 * Start the workers on stage s (which must outlive the pipe; until
 * snap_pipe_drain() returns only snap_stage_has() may be used besides).  0 with *out
 * (snap_pipe_stop()), or a negative errno.
 */
int snap_pipe_start(struct snap_stage *s, const struct snap_pipe_limits *lim,
		    struct snap_pipe **out);

/*
 * Queue an object: digest and metadata as for snap_obj_begin() (copied),
 * path only for error messages (copied).  A regular file's contents
 * follow through snap_pipe_write(), then snap_pipe_commit().  0 or the
 * worker's error.
 */
int snap_pipe_begin(struct snap_pipe *p, const uint8_t digest[SNAP_DIGEST_LEN],
		    const struct snap_meta *m, const char *path);
int snap_pipe_write(struct snap_pipe *p, uint64_t off, const void *buf, size_t len);
int snap_pipe_commit(struct snap_pipe *p);

/*
 * Wait until the worker has done everything queued (objects committed,
 * not necessarily flushed).  0, or the worker's error with *why (valid
 * until snap_pipe_stop()) saying which entry and what failed.
 */
int snap_pipe_drain(struct snap_pipe *p, const char **why);

/* The error the worker stopped on, 0 while none; *why as snap_pipe_drain(). */
int snap_pipe_error(struct snap_pipe *p, const char **why);

/* Stop the worker, dropping what it has not done and an unfinished object; NULL is fine. */
void snap_pipe_stop(struct snap_pipe *p);

#endif
