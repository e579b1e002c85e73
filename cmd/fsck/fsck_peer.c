/*
 * fsck_peer.c - fsck.ledgerfs NODE_DIR --against HOST:PORT: the store
 * compared with a live peer's by hash tree, and repaired from it.
 *
 * The comparison and the repair are the snapshot resync's, run for a
 * stopped node (repl/peer_check.h); this file turns what they find into
 * fsck's problems, one line each, so that -n, -y, the questions at the
 * terminal and the exit code work as for the other checks.  What a repair
 * replaces or removes is kept in NODE_DIR/lost+found/<time>/ first, by
 * hard links: the store itself only changes through the install plan,
 * which a stop in the middle leaves for the node's next start (or the
 * next run with -y) to finish.  A snapshot resync's install left
 * unfinished is the node's to finish: the check refuses to run over it.
 *
 * On a terminal a thread redraws a progress line (rate and ETA) while our
 * tree is hashed and the trees are compared; it stops before the first
 * problem is printed.  One summary line follows on stderr either way.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fsck.h"
#include "lib/log.h"
#include "lib/progress.h"
#include "node/node.h"
#include "repl/peer_check.h"
#include "resync/snapshot.h"
#include "store/path.h"

#define PROGRESS_MS 250

struct peer_run {
	struct fsck *f;
	struct store *store;
	struct peer_check_progress prog;
	struct peer_check_result res;
	pthread_t thread;
	int thread_running;
	atomic_int stop;
	struct timespec t0, phase_t0;
	int last_phase;
	uint64_t hash_ms; /* how long our tree took */
};

static int64_t ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* The bar of a phase: done of total bytes in ms (lib/progress.h). */
static void bar(char *out, size_t len, uint64_t done, uint64_t total, int64_t ms)
{
	progress_format(out, len, done, total, (double)ms / 1000.0, 1);
}

static void draw(struct peer_run *p)
{
	struct peer_check_progress *g = &p->prog;
	int phase = atomic_load(&g->phase);
	char line[256];

	if (phase != p->last_phase) {
		clock_gettime(CLOCK_MONOTONIC, &p->phase_t0);
		p->last_phase = phase;
	}
	switch (phase) {
	case PEER_CHECK_HASHING:
		bar(line, sizeof(line), atomic_load(&g->hash.bytes), atomic_load(&g->hash.total),
		    ms_since(&p->phase_t0));
		fsck_progress(p->f, "hashing the store %s", line);
		break;
	case PEER_CHECK_CONNECTING:
		fsck_progress(p->f, "connecting to %s", p->f->against);
		break;
	case PEER_CHECK_COMPARING:
		bar(line, sizeof(line), atomic_load(&g->fetched), atomic_load(&g->wanted),
		    ms_since(&p->phase_t0));
		fsck_progress(p->f,
			      "comparing with %s: %" PRIu64 " listings, %" PRIu64
			      " differences; fetched %s",
			      p->f->against, (uint64_t)atomic_load(&g->listed),
			      (uint64_t)atomic_load(&g->found), line);
		break;
	default:
		break;
	}
}

static void *progress_main(void *arg)
{
	struct peer_run *p = arg;
	struct timespec pause = {0, PROGRESS_MS * 1000000L};

	while (!atomic_load(&p->stop)) {
		draw(p);
		nanosleep(&pause, NULL);
	}
	return NULL;
}

static void progress_stop(struct peer_run *p)
{
	if (!p->thread_running)
		return;
	atomic_store(&p->stop, 1);
	pthread_join(p->thread, NULL);
	p->thread_running = 0;
	fsck_progress_end(p->f);
}

/* A path as the digest listing shows it: \n, \\ and other control bytes escaped. */
static void escape(const char *s, char *out, size_t len)
{
	size_t o = 0;

	for (; *s && o + 5 < len; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '\n')
			o += (size_t)snprintf(out + o, len - o, "\\n");
		else if (ch == '\\')
			o += (size_t)snprintf(out + o, len - o, "\\\\");
		else if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	if (*s && o + 4 <= len)
		o += (size_t)snprintf(out + o, len - o, "...");
	out[o < len ? o : len - 1] = '\0';
}

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "regular file";
	case S_IFDIR:
		return "directory";
	case S_IFLNK:
		return "symlink";
	case S_IFCHR:
		return "character device";
	case S_IFBLK:
		return "block device";
	case S_IFIFO:
		return "fifo";
	default:
		return "socket";
	}
}

/* Append to buf (len bytes, used so far in *used), with sep before it unless first. */
static void add(char *buf, size_t len, size_t *used, const char *sep, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void add(char *buf, size_t len, size_t *used, const char *sep, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*used >= len)
		return;
	if (*used) {
		n = snprintf(buf + *used, len - *used, "%s", sep);
		*used += n > 0 ? (size_t)n : 0;
		if (*used >= len)
			return;
	}
	va_start(ap, fmt);
	n = vsnprintf(buf + *used, len - *used, fmt, ap);
	va_end(ap);
	*used += n > 0 ? (size_t)n : 0;
}

/* The metadata that differs: "mode 0600 here, 0644 on the peer; owner ...; mtime; xattrs a, b". */
static void describe_meta(const struct peer_diff *d, char *buf, size_t len, size_t *used)
{
	if (d->what & PEER_DIFF_MODE)
		add(buf, len, used, "; ", "mode %04o here, %04o on the peer",
		    (unsigned)(d->mode_here & 07777), (unsigned)(d->mode_there & 07777));
	if (d->what & PEER_DIFF_OWNER)
		add(buf, len, used, "; ", "owner %u:%u here, %u:%u on the peer", d->uid_here,
		    d->gid_here, d->uid_there, d->gid_there);
	if (d->what & PEER_DIFF_MTIME)
		add(buf, len, used, "; ", "mtime");
	if (d->what & PEER_DIFF_XATTRS)
		add(buf, len, used, "; ", "xattrs %s", d->xattrs ? d->xattrs : "");
}

/* "kind: path (what)" of a difference. */
static const char *describe(const struct peer_diff *d, char *buf, size_t len)
{
	char path[PATH_MAX + 64], more[512];
	size_t used = 0;
	const char *kind = "content";

	escape(d->path, path, sizeof(path));
	more[0] = '\0';
	switch (d->kind) {
	case PEER_DIFF_MISSING:
	case PEER_DIFF_EXTRA: {
		uint32_t mode = d->kind == PEER_DIFF_MISSING ? d->mode_there : d->mode_here;
		uint64_t size = d->kind == PEER_DIFF_MISSING ? d->size_there : d->size_here;

		kind = d->kind == PEER_DIFF_MISSING ? "missing" : "extra";
		if (S_ISDIR(mode))
			add(more, sizeof(more), &used, "", "directory, with everything below it");
		else if (S_ISREG(mode))
			add(more, sizeof(more), &used, "", "regular file, %" PRIu64 " bytes", size);
		else
			add(more, sizeof(more), &used, "", "%s", type_name(mode));
		break;
	}
	case PEER_DIFF_CONTENT:
		if (d->what & PEER_DIFF_TYPE)
			add(more, sizeof(more), &used, "", "type: %s here, %s on the peer",
			    type_name(d->mode_here), type_name(d->mode_there));
		else if (!(d->what & PEER_DIFF_DATA))
			add(more, sizeof(more), &used, "", "its hash differs, no field does");
		else if (S_ISREG(d->mode_there))
			add(more, sizeof(more), &used, "",
			    "contents: %" PRIu64 " bytes here, %" PRIu64 " on the peer",
			    d->size_here, d->size_there);
		else if (S_ISLNK(d->mode_there))
			add(more, sizeof(more), &used, "", "symlink target");
		else
			add(more, sizeof(more), &used, "", "device number");
		if (!(d->what & PEER_DIFF_TYPE)) {
			char meta[384];
			size_t mused = 0;

			meta[0] = '\0';
			describe_meta(d, meta, sizeof(meta), &mused);
			if (mused)
				add(more, sizeof(more), &used, "; ", "also %s", meta);
		}
		break;
	case PEER_DIFF_METADATA:
		kind = "metadata";
		describe_meta(d, more, sizeof(more), &used);
		break;
	}
	snprintf(buf, len, "%s: %s (%s)", kind, path, more);
	return buf;
}

static const char *fix_text(const struct peer_diff *d)
{
	switch (d->kind) {
	case PEER_DIFF_MISSING:
		return "fetch it from the peer";
	case PEER_DIFF_EXTRA:
		return "remove it (kept in " FSCK_LOST_FOUND ")";
	case PEER_DIFF_CONTENT:
		return "replace it with the peer's version (this one kept in " FSCK_LOST_FOUND ")";
	default:
		return "take the peer's metadata";
	}
}

static void on_note(void *arg, const char *text)
{
	struct peer_run *p = arg;

	progress_stop(p);
	printf("note: %s\n", text);
	fflush(stdout);
}

static int on_found(void *arg, const struct peer_diff *d, int fixable)
{
	struct peer_run *p = arg;
	char line[PATH_MAX + 1024];

	progress_stop(p);
	return fsck_problem(p->f, fixable ? fix_text(d) : NULL, "peer %s: %s", p->res.peer,
			    describe(d, line, sizeof(line)));
}

/*
 * What a repair replaces is kept in lost+found first: an extra entry, and
 * an entry whose type or contents differ (not a directory that stays one:
 * its entries are compared on their own).  Kept by hard links, not moved:
 * until the install replaces it, the store still holds it.
 */
static int on_keep(void *arg, const struct peer_diff *d)
{
	struct peer_run *p = arg;

	if (d->kind == PEER_DIFF_CONTENT && !(d->what & PEER_DIFF_TYPE) && S_ISDIR(d->mode_here))
		return 0;
	return fsck_link_lost(p->f, p->store->root, d->path);
}

static void on_fixed(void *arg, const struct peer_diff *d, int r)
{
	struct peer_run *p = arg;

	(void)d;
	fsck_fix_done(p->f, r);
}

/* One line on stderr: what was compared and what it cost. */
static void summary(struct peer_run *p, int rv)
{
	const struct peer_check_result *res = &p->res;
	char hashed[32], fetched[32];
	double secs = (double)ms_since(&p->t0) / 1000.0;

	fprintf(stderr,
		"fsck.ledgerfs: %s %s %s%s%s: %" PRIu64 " entries here (%s hashed), %" PRIu64
		" listing%s compared in %" PRIu64 " round%s, %s fetched, %" PRIu64
		" differences, %.1f s\n",
		p->f->dir, rv < 0 ? "could not be compared with" : "compared with",
		res->peer[0] ? res->peer : p->f->against, res->peer[0] ? " at " : "",
		res->peer[0] ? p->f->against : "", res->entries_here,
		progress_human(atomic_load(&p->prog.hash.bytes), hashed, sizeof(hashed)),
		res->listed, res->listed == 1 ? "" : "s", res->rounds, res->rounds == 1 ? "" : "s",
		progress_human(res->bytes, fetched, sizeof(fetched)), res->differences, secs);
}

/*
 * An install the journal says is under way.  A snapshot resync's is the
 * node's to finish (its position goes with it): refused, touching nothing.
 * An earlier repair's (this check's own) is finished here when repairing,
 * as the node's start would finish it; under -n it is refused.  0 when the
 * check may go on, else a negative errno, said on stderr.
 */
static int pending_install(struct fsck *f, struct store *store)
{
	struct snap_plan plan = {0};
	const char *why = NULL, *path = NULL;
	int state, r;

	r = node_snap_pending(f->j, &state);
	if (r < 0) {
		fprintf(stderr, "fsck.ledgerfs: %s: cannot read the snapshot state: %s\n", f->dir,
			strerror(-r));
		return r;
	}
	if (state == NODE_SNAP_INSTALLING) {
		fprintf(stderr,
			"fsck.ledgerfs: %s: a snapshot resync's install was interrupted "
			"(%s/%s/plan); start the node to finish it, then check again. "
			"Nothing was changed.\n",
			f->dir, f->dir, SNAP_DIR);
		return -EBUSY;
	}
	if (state != NODE_SNAP_REPAIRING)
		return 0;
	r = snap_plan_load(f->real, &plan, &why);
	if (r < 0) {
		fprintf(stderr,
			"fsck.ledgerfs: %s/%s/plan: cannot read the interrupted install: %s\n",
			f->dir, SNAP_DIR, why ? why : strerror(-r));
		goto out;
	}
	if (!fsck_problem(f, "finish it",
			  "interrupted install of an earlier repair from a peer (%zu steps)",
			  plan.n)) {
		fprintf(stderr,
			"fsck.ledgerfs: %s: the install of an earlier repair from a peer was "
			"interrupted (%s/%s/plan); run with -y, or start the node, to finish it. "
			"Nothing was changed.\n",
			f->dir, f->dir, SNAP_DIR);
		r = -EBUSY;
		goto out;
	}
	r = snap_install(f->real, store->root, &plan, NULL, NULL, &why, &path);
	if (r == 0 && (r = node_snap_repair_end(f->j)) < 0)
		why = "cannot record the finished install in the journal";
	if (r < 0) {
		fprintf(stderr,
			"fsck.ledgerfs: %s: cannot finish the install of an earlier repair "
			"(%s/%s/plan) at %s: %s: %s\n",
			f->dir, f->dir, SNAP_DIR, path ? path : "(plan)", why ? why : "install",
			strerror(-r));
		fsck_fix_done(f, r);
		goto out;
	}
	fsck_fix_done(f, 0);
	r = snap_stage_remove(f->real);
	if (r < 0)
		fprintf(stderr, "fsck.ledgerfs: %s/%s: cannot remove the staging area: %s\n",
			f->dir, SNAP_DIR, strerror(-r));
	r = 0;
out:
	snap_plan_free(&plan);
	return r;
}

int fsck_check_peer(struct fsck *f)
{
	struct peer_run p = {.f = f, .last_phase = -1};
	struct peer_check_opts o = {
	    .node_dir = f->real,
	    .cfg = &f->cfg,
	    .journal = f->j,
	    .address = f->against,
	    .repair = f->mode != FSCK_MODE_NO,
	    .progress = &p.prog,
	};
	struct peer_check_ops ops = {
	    .arg = &p, .note = on_note, .found = on_found, .keep = on_keep, .fixed = on_fixed};
	char dir[PATH_MAX + 16], why[1024] = "";
	int r;

	snprintf(dir, sizeof(dir), "%s/%s", f->real, NODE_STORE_DIR);
	r = store_open(dir, &p.store);
	if (r < 0) {
		fprintf(stderr, "fsck.ledgerfs: %s: %s\n", dir, strerror(-r));
		return r;
	}
	r = store_check_stamp(p.store, f->cfg.cluster_id);
	if (r < 0) {
		fprintf(stderr, "fsck.ledgerfs: %s: %s; not comparing it\n", dir,
			r == -ENODATA  ? "has no ledgerfs stamp (is its disk mounted?)"
			: r == -ESTALE ? "belongs to another cluster"
				       : strerror(-r));
		goto out;
	}
	r = pending_install(f, p.store);
	if (r < 0)
		goto out;
	o.store_root = p.store->root;
	/* The resync's log lines are for a daemon's log; -v shows them. */
	log_set_level(f->verbose ? LOG_INFO : LOG_WARNING);
	clock_gettime(CLOCK_MONOTONIC, &p.t0);
	p.phase_t0 = p.t0;
	if (f->progress && pthread_create(&p.thread, NULL, progress_main, &p) == 0)
		p.thread_running = 1;
	r = peer_check_run(&o, &ops, &p.res, why, sizeof(why));
	progress_stop(&p);
	summary(&p, r);
	if (r < 0)
		fprintf(stderr, "fsck.ledgerfs: %s\n", why[0] ? why : strerror(-r));
	snprintf(f->peer, sizeof(f->peer), "%s", p.res.peer);
	f->peer_entries = p.res.entries_here;
out:
	store_close(p.store);
	return r;
}
