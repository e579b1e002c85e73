/*
 * rebuild.c - rebuild a store without its kept-aside events (rebuild.h).
 *
 * The names say which step a crash interrupted: with NODE_DIR/store in
 * place, a store.rebuilding beside it is an unfinished build (derived from
 * the journal alone, so it is removed and built again); with no store, a
 * store.rebuilding is a finished, synced build whose predecessor was moved
 * aside already, so only the last renames remain.  Anything else that is
 * not this node's store is refused rather than rebuilt over, for the same
 * reason node_open() refuses it: an unmounted disk must not be served.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/dirscan.h"
#include "lib/log.h"
#include "node/node_int.h"
#include "node/rebuild.h"
#include "node/replay.h"

/* Names store.fenced-<term>-<time>[-N] tried when a copy made in the same second exists. */
#define FENCED_TRIES 100

struct rebuild_run {
	struct node *n;
	int tty;	 /* stderr is a terminal: show progress */
	uint64_t failed; /* events that did not apply */
};

/* n->lock is held for the whole rebuild. */
static int skip_tail(void *n, uint64_t origin, uint64_t seq)
{
	uint64_t term;

	return node_in_tail_locked(n, origin, seq, &term);
}

static void on_forced(void *arg, const struct event *ev, const char *why)
{
	struct rebuild_run *run = arg;

	log_warn("%s: rebuild: event %016" PRIx64 ":%" PRIu64 " (%s %s): %s; applied anyway",
		 run->n->dir, ev->origin, ev->seq, event_type_name(ev->type),
		 ev->path ? ev->path : "", why);
}

static void on_failed(void *arg, const struct event *ev, const char *why, int err)
{
	struct rebuild_run *run = arg;

	run->failed++;
	log_err("%s: rebuild: event %016" PRIx64 ":%" PRIu64 " (%s %s) does not apply: %s%s%s",
		run->n->dir, ev->origin, ev->seq,
		ev->type ? event_type_name(ev->type) : "corrupt record", ev->path ? ev->path : "",
		why ? why : "", why ? ": " : "", strerror(-err));
}

static void on_progress(void *arg, uint64_t events)
{
	struct rebuild_run *run = arg;

	if (run->tty)
		fprintf(stderr, "\r%s: rebuilding the store: %" PRIu64 " events", run->n->dir,
			events);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

static int sync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/*
 * Step 2: build a stamped store at work, with root owned and moded as
 * old's (the journal has no event that made the root; old may be NULL),
 * holding the journal's history up to the applied marks without the
 * tails, and put it on disk.  *out is the caller's: store_close().
 */
static int build(struct rebuild_run *run, const char *work, const struct stat *old,
		 struct store **out, char *err, size_t errlen)
{
	struct replay_hooks hooks = {.arg = run,
				     .upto_applied = 1,
				     .skip = skip_tail,
				     .skip_arg = run->n,
				     .forced = on_forced,
				     .failed = on_failed,
				     .progress = on_progress};
	struct node *n = run->n;
	struct store *s = NULL;
	uint64_t applied = 0, failed = 0;
	int fd = -1, r;

	if (mkdir(work, 0755) < 0 || (old && chown(work, old->st_uid, old->st_gid) < 0) ||
	    chmod(work, old ? old->st_mode & 07777 : 0755) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot make the new store: %s", work, strerror(-r));
		goto out;
	}
	r = store_open(work, &s);
	if (r == 0)
		r = store_stamp(s, n->cfg.cluster_id);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot stamp the new store: %s", work, strerror(-r));
		goto out;
	}
	r = replay_journal(n->journal, s, &hooks, &applied, &failed);
	if (run->tty)
		fprintf(stderr, "\r%s: rebuilding the store: %" PRIu64 " events, done\n", n->dir,
			applied + failed);
	if (r < 0) {
		snprintf(err, errlen, "%s/%s: reading the journal for the rebuild failed: %s",
			 n->dir, NODE_JOURNAL_DIR, strerror(-r));
		goto out;
	}
	/* The renames that follow must never put in place a store not yet on disk. */
	fd = open(work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot sync the new store: %s", work, strerror(-r));
		goto out;
	}
	log_info("%s: new store built from the journal: %" PRIu64 " events, %" PRIu64
		 " did not apply",
		 n->dir, applied, failed);
	*out = s;
	s = NULL;
out:
	if (fd >= 0)
		close(fd);
	store_close(s);
	return r;
}

/* The term named in the kept copy: the latest promotion that fenced events off. */
static uint64_t fenced_term(const struct node *n)
{
	uint64_t term = 0;
	unsigned i;

	for (i = 0; i < n->ntails; i++)
		if (n->tails[i].term > term)
			term = n->tails[i].term;
	return term ? term : n->term;
}

/* Step 3: move store aside under a name no earlier copy has; kept receives it. */
static int keep_old(struct node *n, const char *store, char *kept, size_t len)
{
	time_t now = time(NULL);
	char stamp[32];
	struct tm tm;
	int i;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
	for (i = 0; i < FENCED_TRIES; i++) {
		if (i == 0)
			snprintf(kept, len, "%s/%s%" PRIu64 "-%s", n->dir, REBUILD_FENCED_PREFIX,
				 fenced_term(n), stamp);
		else
			snprintf(kept, len, "%s/%s%" PRIu64 "-%s-%d", n->dir, REBUILD_FENCED_PREFIX,
				 fenced_term(n), stamp, i);
		if (renameat2(AT_FDCWD, store, AT_FDCWD, kept, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

/*
 * Which steps remain.  With a store to move aside, *have_old is set, *old
 * is its root, and an unfinished build beside it is removed (step 1); with
 * no store, a finished build leaves only step 4.  Refuses a store that is
 * not this node's plain directory.
 */
static int find_state(struct node *n, const char *store, const char *work, struct stat *old,
		      int *have_old, char *err, size_t errlen)
{
	struct store *s = NULL;
	struct stat parent;
	int r = 0;

	*have_old = 0;
	if (lstat(store, old) < 0) {
		r = -errno;
		if (r == -ENOENT && access(work, F_OK) == 0)
			return 0;
		snprintf(err, errlen, "%s: store missing and no finished rebuild beside it: %s",
			 store, strerror(-r));
		return r;
	}
	if (stat(n->dir, &parent) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", n->dir, strerror(-r));
		return r;
	}
	if (!S_ISDIR(old->st_mode) || old->st_dev != parent.st_dev) {
		snprintf(
		    err, errlen,
		    "%s: not a plain directory on the filesystem of %s (a symlink or a mount "
		    "point), so it cannot be moved aside for the rebuild its kept-aside events "
		    "need; move the store into %s",
		    store, n->dir, n->dir);
		return -EXDEV;
	}
	r = store_open(store, &s);
	if (r == 0)
		r = store_check_stamp(s, n->cfg.cluster_id);
	store_close(s);
	if (r < 0) {
		snprintf(err, errlen, "%s: not this node's store (%s); refusing to rebuild it",
			 store, strerror(-r));
		return r;
	}
	*have_old = 1;
	/* Step 1: an unfinished build beside the store is only derived data. */
	if (access(work, F_OK) == 0) {
		log_warn("%s: removing an unfinished rebuild", work);
		if (nftw(work, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0) {
			r = errno ? -errno : -EIO;
			snprintf(err, errlen, "%s: cannot remove an unfinished rebuild: %s", work,
				 strerror(-r));
		}
	}
	return r;
}

int rebuild_store(struct node *n, char *err, size_t errlen)
{
	char store[PATH_MAX], work[PATH_MAX], kept[PATH_MAX];
	struct rebuild_run run = {.n = n, .tty = isatty(STDERR_FILENO)};
	struct store *s = NULL;
	struct stat old;
	int have_old = 0, r = 0;

	pthread_mutex_lock(&n->lock);
	if (!n->rebuild_needed)
		goto out;
	snprintf(store, sizeof(store), "%s/%s", n->dir, NODE_STORE_DIR);
	snprintf(work, sizeof(work), "%s/%s", n->dir, REBUILD_WORK_DIR);
	r = find_state(n, store, work, &old, &have_old, err, errlen);
	if (r < 0)
		goto out;
	if (have_old) {
		log_warn("%s: the store holds kept-aside events; rebuilding it from the journal "
			 "without them",
			 n->dir);
		r = build(&run, work, &old, &s, err, errlen);
		if (r < 0)
			goto out;
		r = keep_old(n, store, kept, sizeof(kept));
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot move the old store aside: %s", store,
				 strerror(-r));
			goto out;
		}
		log_warn("%s: the old store, with the kept-aside events, is kept as %s (never "
			 "deleted; 'ledgerctl tail-export' reads it)",
			 n->dir, kept);
	} else {
		log_warn("%s: finishing a rebuild cut short: the old store was moved aside already",
			 n->dir);
	}
	if (rename(work, store) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot put the rebuilt store in place: %s", work,
			 strerror(-r));
		goto out;
	}
	r = sync_path(n->dir);
	if (r == 0)
		r = journal_meta_put_u64(n->journal, JOURNAL_META_REBUILD, 0, 1);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot record the finished rebuild: %s", n->dir,
			 strerror(-r));
		goto out;
	}
	n->rebuild_needed = 0;
	store_close(n->store);
	n->store = NULL;
	if (!s)
		r = store_open(store, &s);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot open the rebuilt store: %s", store, strerror(-r));
		goto out;
	}
	n->store = s;
	s = NULL;
	log_info("%s: store rebuilt without its kept-aside events", n->dir);
out:
	store_close(s);
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* Where link_tree() is linking to, and the name it failed at, for the log. */
struct link_walk {
	int dfd;
	char failed[PATH_MAX];
};

static int link_tree(int sfd, struct link_walk *w);

/* One entry of link_tree(): a link for anything but a directory. */
static int link_entry(int sfd, const char *name, void *arg)
{
	struct link_walk *w = arg, sub = {.dfd = -1};
	struct stat st;
	int s2 = -1, r = 0;

	snprintf(w->failed, sizeof(w->failed), "%s", name);
	if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		goto out;
	}
	/* A link, not a copy: the copy costs nothing, and a file the node
	 * later replaces by rename keeps its old inode here. */
	if (!S_ISDIR(st.st_mode)) {
		if (linkat(sfd, name, w->dfd, name, 0) < 0)
			r = -errno;
		goto out;
	}
	if (mkdirat(w->dfd, name, st.st_mode & 07777) < 0) {
		r = -errno;
		goto out;
	}
	s2 = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	sub.dfd = openat(w->dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (s2 < 0 || sub.dfd < 0) {
		r = -errno;
		goto out;
	}
	r = link_tree(s2, &sub);
	/* A name deeper than PATH_MAX is cut short: it is only for the log. */
	if (r && snprintf(w->failed, sizeof(w->failed), "%s/%s", name, sub.failed) < 0)
		w->failed[0] = '\0';
out:
	if (s2 >= 0)
		close(s2);
	if (sub.dfd >= 0)
		close(sub.dfd);
	return r;
}

/* Link every entry of the directory sfd into w->dfd, making subdirectories. */
static int link_tree(int sfd, struct link_walk *w)
{
	return dir_scan(sfd, link_entry, w);
}

int rebuild_keep_links(struct node *n, char *kept, size_t len)
{
	char work[PATH_MAX], store[PATH_MAX];
	struct link_walk w = {.dfd = -1};
	int sfd = -1, r;

	snprintf(work, sizeof(work), "%s/%s", n->dir, REBUILD_KEEP_WORK_DIR);
	snprintf(store, sizeof(store), "%s/%s", n->dir, NODE_STORE_DIR);
	r = nftw(work, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	if (r < 0 && errno != ENOENT) {
		r = -errno;
		goto out;
	}
	if (mkdir(work, 0700) < 0) {
		r = -errno;
		goto out;
	}
	sfd = open(store, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	w.dfd = open(work, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	r = sfd < 0 || w.dfd < 0 ? -errno : link_tree(sfd, &w);
	if (r < 0) {
		log_err("%s: cannot keep the store's files aside (at %s): %s", n->dir, w.failed,
			strerror(-r));
		goto out;
	}
	if (syncfs(w.dfd) < 0)
		r = -errno;
	if (r == 0)
		r = keep_old(n, work, kept, len);
	if (r < 0)
		log_err("%s: cannot keep the store's files aside in %s: %s", n->dir, work,
			strerror(-r));
out:
	if (sfd >= 0)
		close(sfd);
	if (w.dfd >= 0)
		close(w.dfd);
	return r;
}
