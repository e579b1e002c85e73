/*
 * journal_arg.h - a node directory's journal, opened the way the commands
 * that read a stopped or running node from disk (backup, rescue) need it:
 * a private copy (journal/journal_copy.h), checked to be the journal of
 * the node its configuration names, every failure said the same way.
 */
#ifndef LEDGERFS_TOOLS_JOURNAL_ARG_H
#define LEDGERFS_TOOLS_JOURNAL_ARG_H

#include <stdint.h>

#include "journal/journal_copy.h"

/*
 * Open a private copy of jdir, the journal of the node directory dir whose
 * configuration says node_id, into *jc (journal_copy_close() it, also
 * after a failure).  0, or -1 with a message on stderr naming cmd
 * ("ledgerctl: CMD: ...") and the path.
 */
int journal_arg_open(const char *cmd, const char *dir, const char *jdir, uint64_t node_id,
		     struct journal_copy *jc);

#endif
