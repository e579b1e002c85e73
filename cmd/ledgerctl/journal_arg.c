/*
 * journal_arg.c - a node directory's journal, copied and checked
 * (journal_arg.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "journal_arg.h"
#include "lib/config.h"

int journal_arg_open(const char *cmd, const char *dir, const char *jdir, uint64_t node_id,
		     struct journal_copy *jc)
{
	const char *why = NULL;
	int r;

	r = journal_copy_open(jdir, 0, jc, &why);
	if (r < 0) {
		fprintf(stderr,
			"ledgerctl: %s: %s: cannot read a copy of it: %s%s%s (the copy goes under "
			"$TMPDIR, or /tmp)\n",
			cmd, jdir, why ? why : "", why ? ": " : "", strerror(-r));
		return -1;
	}
	if (journal_node_id(jc->journal) != node_id) {
		fprintf(stderr,
			"ledgerctl: %s: %s: journal of node %016" PRIx64 ", %s/%s says %016" PRIx64
			"\n",
			cmd, jdir, journal_node_id(jc->journal), dir, CONFIG_FILE, node_id);
		return -1;
	}
	return 0;
}
