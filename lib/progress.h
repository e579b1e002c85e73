/*
 * progress.h - the progress line of a long operation (backup, restore,
 * verify): on a terminal an updating line on stderr with a bar, the
 * amount done, the rate and the time left; elsewhere nothing while it
 * runs, and the caller prints one summary line at the end.
 *
 * Workers may advance it from several threads; drawing is throttled to a
 * few times a second and done by whichever caller crosses the interval.
 */
#ifndef LEDGERFS_PROGRESS_H
#define LEDGERFS_PROGRESS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct progress {
	pthread_mutex_t lock;
	const char *what; /* "backup", "restore": the line's first word */
	int tty;	  /* stderr is a terminal: draw */
	int bytes;	  /* done and total are bytes: shown as KiB, MiB ... */
	int64_t started;  /* clock_mono_ms() at progress_init() */
	int64_t last_draw;
	uint64_t done, total; /* guarded by lock */
	int drawn;	      /* guarded by lock: a line is on the screen */
};

/* Start p for an operation of total units (bytes when bytes is set). */
void progress_init(struct progress *p, const char *what, uint64_t total, int bytes);

/* Raise the total (work found while it runs).  Thread-safe. */
void progress_add_total(struct progress *p, uint64_t more);

/* Count n more units done and redraw if it is time.  Thread-safe. */
void progress_advance(struct progress *p, uint64_t n);

/* Clear the line (terminal) and release p. */
void progress_end(struct progress *p);

/* Seconds since progress_init(). */
double progress_seconds(const struct progress *p);

/* bytes as "12.3 MiB" into buf; returns buf. */
const char *progress_human(uint64_t bytes, char *buf, size_t len);

/*
 * The line itself, for callers that draw their own: "[####.....]  42%
 * 1.2 GiB of 3.0 GiB, 80.0 MiB/s, ETA 0:12" (units when not bytes).
 */
void progress_format(char *out, size_t len, uint64_t done, uint64_t total, double secs, int bytes);

#endif
