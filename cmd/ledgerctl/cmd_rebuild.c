/*
 * cmd_rebuild.c - ledgerctl rebuild NODE_DIR OUTDIR: replay a node's whole
 * journal into an empty directory.
 *
 * The result is the reference store: what the store must look like if the
 * journal is right.  The crash tests and fsck compare against it with
 * 'ledgerctl digest'.  Kept-aside tails are left out once the node rebuilt
 * its store without them, and kept in while its store still holds them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd.h"
#include "lib/config.h"
#include "lib/files.h"
#include "journal/journal_copy.h"
#include "node/replay.h"
#include "store/store.h"

static void rebuild_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl rebuild NODE_DIR OUTDIR\n"
		     "\n"
		     "Replay every event in NODE_DIR's journal, in order, into OUTDIR (absent\n"
		     "or empty) through the same apply engine the filesystem uses.  The node\n"
		     "must not be mounted.\n"
		     "\n"
		     "  -h, --help   this help\n");
}

static void rebuild_forced(void *arg, const struct event *ev, const char *why)
{
	fprintf(stderr,
		"ledgerctl: rebuild: event %016" PRIx64 ":%" PRIu64
		" (%s %s): %s; applied anyway\n",
		ev->origin, ev->seq, event_type_name(ev->type), ev->path ? ev->path : "", why);
}

static void rebuild_failed(void *arg, const struct event *ev, const char *why, int err)
{
	(*(uint64_t *)arg)++;
	fprintf(stderr, "ledgerctl: rebuild: event %016" PRIx64 ":%" PRIu64 " (%s %s): %s%s%s\n",
		ev->origin, ev->seq, ev->type ? event_type_name(ev->type) : "corrupt record",
		ev->path ? ev->path : "", why ? why : "", why ? ": " : "", strerror(-err));
}

int cmd_rebuild(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	char path[PATH_MAX], err[1024];
	struct config cfg;
	struct journal_copy snap = {0};
	struct replay_tails tails = {0};
	struct store *s = NULL;
	const char *why = NULL;
	uint64_t count = 0, failed = 0, problems = 0;
	struct replay_hooks hooks = {
	    .arg = &problems, .forced = rebuild_forced, .failed = rebuild_failed};
	int c, r, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			rebuild_usage(stdout);
			return 0;
		}
		rebuild_usage(stderr);
		return 2;
	}
	if (optind != argc - 2) {
		rebuild_usage(stderr);
		return 2;
	}
	snprintf(path, sizeof(path), "%s/%s", argv[optind], CONFIG_FILE);
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s\n", err);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/journal", argv[optind]);
	r = journal_copy_open(path, JOURNAL_COPY_IF_BUSY, &snap, &why);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", path, why ? why : strerror(-r));
		goto out;
	}
	r = replay_tails_load(snap.journal, &tails);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: kept-aside tails unreadable: %s\n", path,
			strerror(-r));
		goto out;
	}
	if (!tails.in_store) {
		hooks.skip = replay_tails_skip;
		hooks.skip_arg = &tails;
	}
	if (mkdir(argv[optind + 1], 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", argv[optind + 1], strerror(errno));
		goto out;
	}
	r = dir_is_empty(argv[optind + 1]);
	if (r <= 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", argv[optind + 1],
			r ? strerror(-r) : "not empty; rebuild needs an empty directory");
		goto out;
	}
	/* The same root mode as 'ledgerctl init' gives a store, whatever the umask. */
	if (chmod(argv[optind + 1], 0755) < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", argv[optind + 1], strerror(errno));
		goto out;
	}
	r = store_open(argv[optind + 1], &s);
	if (r == 0)
		r = store_stamp(s, cfg.cluster_id);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", argv[optind + 1], strerror(-r));
		goto out;
	}
	r = replay_journal(snap.journal, s, &hooks, &count, &failed);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", path, strerror(-r));
		goto out;
	}
	printf("replayed %" PRIu64 " events into %s\n", count, argv[optind + 1]);
	if (problems) {
		fprintf(stderr, "ledgerctl: rebuild: %" PRIu64 " events did not apply or decode\n",
			problems);
		goto out;
	}
	rc = 0;
out:
	store_close(s);
	replay_tails_free(&tails);
	journal_copy_close(&snap);
	return rc;
}
