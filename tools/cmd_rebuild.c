/*
 * cmd_rebuild.c - ledgerctl rebuild NODE_DIR OUTDIR: replay a node's whole
 * journal into an empty directory.
 *
 * The result is the reference store: what the store must look like if the
 * journal is right.  The crash tests and fsck compare against it with
 * 'ledgerctl digest'.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd.h"
#include "ledgerfs/config.h"
#include "ledgerfs/journal_snapshot.h"
#include "ledgerfs/store.h"

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

/* Apply every journaled event to s; counts applied events, stops at the first error. */
static int rebuild_apply_all(struct journal *j, struct store *s, uint64_t *count)
{
	struct journal_iter *it = NULL;
	const uint8_t *val;
	uint64_t origin, seq;
	size_t len;
	int r;

	r = journal_iter_new(j, JOURNAL_EVENTS, 0, 0, &it);
	while (r == 0 && (r = journal_iter_next(it, &origin, &seq, NULL, NULL, &val, &len)) == 1) {
		struct apply_ctx ctx = APPLY_CTX_INIT;
		struct event ev;
		const char *why = NULL;

		r = event_decode(val, len, &ev, NULL, &why);
		if (r == 0)
			r = journal_load_payload(j, &ev, &why);
		if (r == 0) {
			r = apply_event(s, &ev, &ctx, &why);
			if (r == APPLY_SKIPPED)
				r = 0;
		}
		if (r < 0)
			fprintf(stderr, "ledgerctl: rebuild: event %016" PRIx64 ":%" PRIu64 " (%s %s): %s%s%s\n",
				origin, seq, event_type_name(ev.type), ev.path ? ev.path : "",
				why ? why : "", why ? ": " : "", strerror(-r));
		else
			(*count)++;
		event_free(&ev);
	}
	journal_iter_free(it);
	return r < 0 ? r : 0;
}

int cmd_rebuild(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char path[PATH_MAX], err[1024];
	struct config cfg;
	struct journal_snapshot snap = {0};
	struct store *s = NULL;
	const char *why = NULL;
	uint64_t count = 0;
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
	r = journal_snapshot_open(path, JOURNAL_SNAPSHOT_IF_BUSY, &snap, &why);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: rebuild: %s: %s\n", path, why ? why : strerror(-r));
		goto out;
	}
	if (mkdir(argv[optind + 1], 0755) < 0 && errno != EEXIST) {
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
	if (rebuild_apply_all(snap.journal, s, &count) < 0)
		goto out;
	printf("replayed %" PRIu64 " events into %s\n", count, argv[optind + 1]);
	rc = 0;
out:
	store_close(s);
	journal_snapshot_close(&snap);
	return rc;
}
