/*
 * journal_copy.h - reading a journal that another process holds open.
 *
 * LevelDB lets one process open a database, and writes to it even when it
 * only reads (recovery, a new log).  A reader that must not disturb the
 * node - 'ledgerctl log' on a mounted node, 'fsck.ledgerfs -n' - opens a
 * private copy instead: LevelDB's immutable table files are hard-linked
 * (copied across filesystems), its small mutable files copied, and the
 * value log reached through a symlink to the real one, which the journal
 * only reads until its first append.  The copy is taken again if a
 * compaction removes a file half-way through.
 */
#ifndef LEDGERFS_JOURNAL_COPY_H
#define LEDGERFS_JOURNAL_COPY_H

#include <limits.h>

#include "journal/journal.h"

struct journal_copy {
	struct journal *journal;
	char dir[PATH_MAX]; /* the private copy, removed by journal_copy_close() */
};

/* Flags for journal_copy_open(). */
#define JOURNAL_COPY_IF_BUSY 0x1 /* open the journal itself unless another process holds it */

/*
 * Copy the journal in dir to a new directory under $TMPDIR (or /tmp) and
 * open the copy; nothing inside dir is written.  With
 * JOURNAL_COPY_IF_BUSY, open the journal itself when no other process
 * holds it (s->dir then stays empty).  On success the caller owns s:
 * journal_copy_close().  On failure *why names the step.
 */
int journal_copy_open(const char *dir, int flags, struct journal_copy *s, const char **why);

/* Close the copy and remove it.  Safe on a zeroed or failed snapshot. */
void journal_copy_close(struct journal_copy *s);

#endif
