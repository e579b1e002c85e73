/*
 * fsck.c - fsck.ledgerfs NODE_DIR: offline check and repair of a node.
 *
 * With --against HOST:PORT the store is compared with a live peer's
 * instead of with a replay of the journal (fsck_peer.c).
 * The journal is the truth and the store is derived from it, so the checks
 * run in that order: first the journal on its own (fsck_journal.c), then
 * the store against a reference built by replaying the journal into an
 * empty directory (fsck_store.c).  This file holds the driver and what the
 * passes share: problem reporting, asking, progress, the exit code.
 *
 * Two rules shape it.  fsck must never run beside a daemon that owns the
 * node, so it looks for the node's FUSE mount and for a process holding
 * the journal's lock before it touches anything.  And -n must write
 * nothing inside NODE_DIR, while LevelDB writes on every open; so under -n
 * fsck reads a private copy of the journal (journal_copy.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsck.h"
#include "lib/grow.h"
#include "lib/log.h"
#include "node/node.h"

#define PROG "fsck.ledgerfs"

static void usage(FILE *out)
{
	fputs(
	    "usage: " PROG " NODE_DIR [-n] [-y] [-v] [--against HOST:PORT]\n"
	    "\n"
	    "Check a ledgerfs node that is not mounted, and repair what can be repaired:\n"
	    "  1. every journal record decodes and its CRC (and its value-log payload's) matches\n"
	    "  2. each origin's events are numbered 1, 2, 3... without gaps, the applied\n"
	    "     marks and the next local seq agree with them\n"
	    "  3. no checkpoint is ahead of the journal\n"
	    "  4. events above the applied marks (an unclean stop) are replayed\n"
	    "  5. every object in the store has a fid and no two files share one\n"
	    "  6. the store equals a replay of the journal into an empty directory\n"
	    "A bad record is replaced by a void event (its change is lost from the journal;\n"
	    "the store keeps what it had).  Store entries that the journal does not know are\n"
	    "never deleted: they are moved to NODE_DIR/" FSCK_LOST_FOUND "/<time>/.\n"
	    "Temporary files (a journal copy, the reference store) go to $TMPDIR or /tmp.\n"
	    "\n"
	    "With --against HOST:PORT none of the checks above runs: the store is compared with\n"
	    "the store of the live peer listening there, by the snapshot resync's hash tree, over\n"
	    "mutual TLS with NODE_DIR's own certificate.  Every file of this store is read and\n"
	    "hashed (no digest cache is trusted).  Each difference is one line,\n"
	    "\"peer NAME: KIND: PATH (detail)\", KIND one of:\n"
	    "  missing     the peer has it, this node does not\n"
	    "  extra       this node has it, the peer does not\n"
	    "  content     type, contents, symlink target or device number differ\n"
	    "  metadata    only mode, owner, mtime or xattrs (named) differ\n"
	    "A fix fetches the peer's version (contents and metadata, ledgerfs's fid and\n"
	    "version xattrs included); what it replaces or removes is moved to\n"
	    "NODE_DIR/" FSCK_LOST_FOUND "/<time>/.  Nothing is fixed from a peer that lacks\n"
	    "events this node applied.  The journal is read, not checked: run fsck.ledgerfs\n"
	    "without --against for that.\n"
	    "\n"
	    "  -n          report only; change nothing (the default without a terminal)\n"
	    "  -y          fix every problem without asking\n"
	    "  -v          say more about what is checked\n"
	    "  --against HOST:PORT\n"
	    "              compare the store with that peer's (see above)\n"
	    "  -h, --help  this help\n"
	    "\n"
	    "Without -n or -y, each fix is asked for on the terminal.  On a terminal, long\n"
	    "phases show a progress line on stderr; --against ends with one summary line there.\n"
	    "Exit status: 0 clean, 1 problems found and all fixed, 4 problems left\n"
	    "uncorrected, 8 operational error (usage, cannot open, node mounted).\n",
	    out);
}

int fsck_problem(struct fsck *f, const char *fix, const char *fmt, ...)
{
	char answer[16];
	va_list ap;

	fsck_progress_end(f);
	f->found++;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!fix || f->mode == FSCK_MODE_NO) {
		putchar('\n');
		fflush(stdout);
		return 0;
	}
	if (f->mode == FSCK_MODE_YES) {
		printf(" -- fixing: %s\n", fix);
		fflush(stdout);
		return 1;
	}
	printf(" -- %s? [y/n] ", fix);
	fflush(stdout);
	if (!fgets(answer, sizeof(answer), stdin)) {
		/* Nobody left to ask: the rest is reported only. */
		putchar('\n');
		f->mode = FSCK_MODE_NO;
		return 0;
	}
	return answer[0] == 'y' || answer[0] == 'Y';
}

void fsck_fix_done(struct fsck *f, int r)
{
	if (r == 0)
		f->fixed++;
	else
		printf("    not fixed: %s\n", strerror(-r));
	fflush(stdout);
}

void fsck_info(struct fsck *f, const char *fmt, ...)
{
	va_list ap;

	if (!f->verbose)
		return;
	fsck_progress_end(f);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static int progress_shown;

void fsck_progress(struct fsck *f, const char *fmt, ...)
{
	va_list ap;

	if (!f->progress)
		return;
	fputs("\r\033[K", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
	progress_shown = 1;
}

void fsck_progress_end(struct fsck *f)
{
	if (!f->progress || !progress_shown)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	progress_shown = 0;
}

struct fsck_origin *fsck_origin_get(struct fsck *f, uint64_t origin)
{
	struct fsck_origin *o;
	size_t i;

	for (i = 0; i < f->norigins && f->origins[i].origin <= origin; i++)
		if (f->origins[i].origin == origin)
			return &f->origins[i];
	if (grow_array(&f->origins, &f->origins_cap, f->norigins + 1) < 0)
		return NULL;
	o = f->origins;
	memmove(&o[i + 1], &o[i], (f->norigins - i) * sizeof(*o));
	f->norigins++;
	o[i] = (struct fsck_origin){.origin = origin};
	/* A trimmed prefix is retention, not a gap: checking starts after it. */
	journal_trimmed(f->j, origin, &o[i].last);
	return &o[i];
}

/* a/b into out (PATH_MAX bytes); -ENAMETOOLONG rather than a truncated path. */
static int join(char *out, const char *a, const char *b)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", a, b);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Undo the octal escapes (\040 for a space) of /proc/self/mountinfo fields, in place. */
static void mountinfo_unescape(char *s)
{
	char *out = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 4;
		} else {
			*out++ = *s++;
		}
	}
	*out = '\0';
}

/*
 * 1 if a fuse.ledgerfs mount serves the node at real (the daemon names its
 * mount after the node's real path), 0 if none does.
 */
static int node_mounted(const char *real, char *where, size_t wlen)
{
	FILE *mi = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!mi)
		return -errno;
	while (!found && getline(&line, &cap, mi) > 0) {
		char *sep = strstr(line, " - "), *save = NULL, *fstype, *source;
		char *mp = NULL;
		int i;

		if (!sep)
			continue;
		*sep = '\0';
		fstype = strtok_r(sep + 3, " \n", &save);
		source = strtok_r(NULL, " \n", &save);
		if (!fstype || !source || strcmp(fstype, "fuse.ledgerfs") != 0)
			continue;
		mountinfo_unescape(source);
		if (strcmp(source, real) != 0)
			continue;
		save = NULL;
		for (i = 0, mp = strtok_r(line, " ", &save); mp && i < 4; i++)
			mp = strtok_r(NULL, " ", &save);
		if (mp) {
			mountinfo_unescape(mp);
			snprintf(where, wlen, "%s", mp);
		}
		found = 1;
	}
	free(line);
	fclose(mi);
	return found;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0)
		fprintf(stderr, PROG ": cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* Remove the private temp directory; FTW_PHYS keeps the walk off the vlog symlink. */
static void tmp_remove(const char *tmp)
{
	if (tmp && nftw(tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		fprintf(stderr, PROG ": cannot remove %s: %s\n", tmp, strerror(errno));
}

static int make_tmp(struct fsck *f)
{
	const char *base = getenv("TMPDIR");

	if (!base || !*base)
		base = "/tmp";
	if (asprintf(&f->tmp, "%s/fsck.ledgerfs.XXXXXX", base) < 0) {
		f->tmp = NULL;
		return -ENOMEM;
	}
	if (!mkdtemp(f->tmp)) {
		int r = -errno;

		fprintf(stderr, PROG ": cannot make a temp directory %s: %s\n", f->tmp,
			strerror(errno));
		free(f->tmp);
		f->tmp = NULL;
		return r;
	}
	return 0;
}

/* The one message for a node that a daemon (or any other process) holds. */
#define BUSY_FMT PROG ": %s is mounted (or in use by another process); unmount it first\n"

/* Open the journal, or under -n a private copy of it.  Messages go to stderr. */
static int open_journal(struct fsck *f)
{
	char dir[PATH_MAX];
	const char *why = NULL;
	int r;

	r = join(dir, f->real, NODE_JOURNAL_DIR);
	if (r < 0)
		return r;
	if (f->mode == FSCK_MODE_NO) {
		r = journal_copy_open(dir, 0, &f->snap, &why);
		f->j = f->snap.journal;
		if (r == 0)
			fsck_info(f, "reading a copy of the journal in %s", f->snap.dir);
	} else {
		r = journal_open(dir, 0, 0, &f->j, &why);
	}
	if (r == -EBUSY)
		fprintf(stderr, BUSY_FMT, f->dir);
	else if (r < 0)
		fprintf(stderr, PROG ": %s: %s\n", dir, why ? why : strerror(-r));
	return r;
}

/* The journal must be the one the config describes, or nothing else makes sense. */
static int check_identity(struct fsck *f)
{
	void *cluster = NULL;
	size_t len = 0;
	int r;

	if (journal_node_id(f->j) != f->cfg.node_id) {
		fprintf(stderr,
			PROG ": %s: journal belongs to node %016" PRIx64 ", %s says %016" PRIx64
			     "\n",
			f->dir, journal_node_id(f->j), CONFIG_FILE, f->cfg.node_id);
		return -ESTALE;
	}
	r = journal_meta_get(f->j, JOURNAL_META_CLUSTER_ID, &cluster, &len);
	if (r == 0 && (len != 16 || memcmp(cluster, f->cfg.cluster_id, 16) != 0))
		r = -ESTALE;
	if (r < 0)
		fprintf(stderr, PROG ": %s: journal cluster id %s %s\n", f->dir,
			r == -ESTALE ? "does not match" : "cannot be read; see", CONFIG_FILE);
	free(cluster);
	return r;
}

static int parse_args(struct fsck *f, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"against", required_argument, NULL, 'A'},
	    {NULL, 0, NULL, 0},
	};
	int c, no = 0, yes = 0;

	while ((c = getopt_long(argc, argv, "nyvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			no = 1;
			break;
		case 'y':
			yes = 1;
			break;
		case 'v':
			f->verbose = 1;
			break;
		case 'A':
			if (!*optarg || !strchr(optarg, ':')) {
				fprintf(stderr, PROG ": --against wants HOST:PORT, not '%s'\n",
					optarg);
				return -EINVAL;
			}
			f->against = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(FSCK_EXIT_CLEAN);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, PROG ": expected one NODE_DIR\n");
		usage(stderr);
		return -EINVAL;
	}
	if (no && yes) {
		fprintf(stderr, PROG ": -n and -y exclude each other\n");
		return -EINVAL;
	}
	f->dir = argv[optind];
	f->mode = yes ? FSCK_MODE_YES : no || !isatty(STDIN_FILENO) ? FSCK_MODE_NO : FSCK_MODE_ASK;
	f->progress = isatty(STDERR_FILENO);
	return 0;
}

/* Refuse a node that a daemon serves; 0 when it is free. */
static int check_not_in_use(struct fsck *f)
{
	char jdir[PATH_MAX], where[PATH_MAX] = "";
	int r;

	r = node_mounted(f->real, where, sizeof(where));
	if (r < 0)
		fprintf(stderr, PROG ": /proc/self/mountinfo: %s\n", strerror(-r));
	if (r > 0)
		fsck_info(f, "%s is mounted at %s", f->dir, where);
	if (r == 0) {
		r = join(jdir, f->real, NODE_JOURNAL_DIR);
		if (r == 0)
			r = journal_lock_holder(jdir, NULL);
		if (r < 0)
			fprintf(stderr, PROG ": %s/LOCK: %s\n", jdir, strerror(-r));
	}
	if (r > 0) {
		fprintf(stderr, BUSY_FMT, f->dir);
		return -EBUSY;
	}
	return r;
}

static int run(struct fsck *f)
{
	char path[PATH_MAX], err[1024];
	int r;

	if (!realpath(f->dir, f->real)) {
		r = -errno;
		fprintf(stderr, PROG ": %s: %s\n", f->dir, strerror(errno));
		return r;
	}
	r = check_not_in_use(f);
	if (r < 0)
		return r;
	r = join(path, f->real, CONFIG_FILE);
	if (r == 0)
		r = config_load(path, &f->cfg, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "%s: %s", f->dir, strerror(-r));
	if (r < 0) {
		fprintf(stderr, PROG ": %s\n", err);
		return r;
	}
	r = make_tmp(f);
	if (r == 0)
		r = open_journal(f);
	if (r == 0)
		r = check_identity(f);
	if (r == 0 && f->against)
		return fsck_check_peer(f);
	if (r == 0)
		r = fsck_check_journal(f);
	if (r == 0)
		r = fsck_check_tail(f);
	if (r == 0)
		r = fsck_check_store(f);
	return r;
}

int main(int argc, char **argv)
{
	struct fsck f = {0};
	int r, rc;

	log_init(PROG, NULL);
	if (parse_args(&f, argc, argv) < 0)
		return FSCK_EXIT_OPERATION;
	r = run(&f);
	if (f.snap.journal)
		journal_copy_close(&f.snap);
	else
		journal_close(f.j);
	tmp_remove(f.tmp);
	fsck_progress_end(&f);
	if (r < 0) {
		rc = FSCK_EXIT_OPERATION;
		printf("%s: check not finished (%s): %lu problems found, %lu fixed\n", f.dir,
		       strerror(-r), f.found, f.fixed);
	} else if (f.found == 0 && f.against) {
		rc = FSCK_EXIT_CLEAN;
		printf("%s: clean against peer %s, %" PRIu64 " entries\n", f.dir, f.peer,
		       f.peer_entries);
	} else if (f.found == 0) {
		rc = FSCK_EXIT_CLEAN;
		printf("%s: clean, %" PRIu64 " events\n", f.dir, f.events);
	} else {
		rc = f.fixed == f.found ? FSCK_EXIT_FIXED : FSCK_EXIT_UNFIXED;
		printf("%s: %lu problems found, %lu fixed, %lu left uncorrected\n", f.dir, f.found,
		       f.fixed, f.found - f.fixed);
	}
	free(f.tmp);
	free(f.origins);
	free(f.lost);
	if (fflush(stdout) == EOF)
		rc = FSCK_EXIT_OPERATION;
	return rc;
}
