/*
 * node.c - opening, creating and committing to a node (see node.h).
 *
 * The refusal to open a store without this cluster's stamp is what keeps an
 * unmounted disk or a wrong fstab path from being served as an empty tree,
 * whose deletes would otherwise replicate.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledgerfs/files.h"
#include "ledgerfs/log.h"
#include "ledgerfs/node.h"
#include "ledgerfs/path.h"

static int random_bytes(void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = getrandom((char *)buf + done, len - done, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

int node_create(const char *dir, struct config *cfg, int primary, char *err, size_t errlen)
{
	static const uint8_t zero[16];
	char path[PATH_MAX];
	struct journal *j = NULL;
	struct store *s = NULL;
	const char *why = NULL;
	int r;

	if (!config_name_valid(cfg->name)) {
		snprintf(err, errlen, "invalid node name '%s' (1-63 of A-Z a-z 0-9 . _ -)",
			 cfg->name);
		return -EINVAL;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(-r));
		return r;
	}
	r = dir_is_empty(dir);
	if (r <= 0) {
		r = r < 0 ? r : -ENOTEMPTY;
		snprintf(err, errlen, "%s: %s", dir,
			 r == -ENOTEMPTY ? "directory is not empty; refusing to create a node there"
					 : strerror(-r));
		return r;
	}
	do {
		r = random_bytes(&cfg->node_id, sizeof(cfg->node_id));
	} while (r == 0 && cfg->node_id == 0);
	if (r == 0 && !memcmp(cfg->cluster_id, zero, sizeof(zero)))
		r = random_bytes(cfg->cluster_id, sizeof(cfg->cluster_id));
	if (r < 0) {
		snprintf(err, errlen, "getrandom: %s", strerror(-r));
		return r;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, NODE_JOURNAL_DIR);
	r = journal_open(path, 1, cfg->node_id, &j, &why);
	if (r == 0)
		r = journal_meta_put(j, JOURNAL_META_CLUSTER_ID, cfg->cluster_id, 16, 0);
	if (r == 0)
		r = journal_meta_put_u64(j, JOURNAL_META_ROLE, primary ? 1 : 0, 0);
	if (r == 0)
		r = journal_meta_put_u64(j, JOURNAL_META_TERM, 1, 0);
	if (r == 0)
		r = journal_meta_put_u64(j, JOURNAL_META_CLEAN, 1, 1);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, why ? why : strerror(-r));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, NODE_STORE_DIR);
	if (mkdir(path, 0755) < 0 || chmod(path, 0755) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		goto out;
	}
	r = store_open(path, &s);
	if (r == 0)
		r = store_stamp(s, cfg->cluster_id);
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot stamp the store: %s%s", path, strerror(-r),
			 r == -EPERM ? " (trusted xattrs need root)" : "");
		goto out;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, CONFIG_FILE);
	r = config_save(path, cfg);
	if (r < 0)
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
out:
	store_close(s);
	journal_close(j);
	return r;
}

/* Refuse a store that is missing, unstamped while the journal holds events, or foreign. */
static int node_check_store(struct node *n, char *err, size_t errlen)
{
	char path[PATH_MAX];
	uint64_t events = journal_next_seq(n->journal) - 1;
	int r;

	snprintf(path, sizeof(path), "%s/%s", n->dir, NODE_STORE_DIR);
	r = store_open(path, &n->store);
	if (r < 0) {
		snprintf(err, errlen, "%s: store missing: %s", path, strerror(-r));
		return r;
	}
	r = store_check_stamp(n->store, n->cfg.cluster_id);
	if (r == -ENODATA && events == 0 && dir_is_empty(path) == 1)
		return store_stamp(n->store, n->cfg.cluster_id);
	if (r == -ENODATA) {
		snprintf(err, errlen,
			 "%s: store has no ledgerfs stamp but the journal holds %" PRIu64
			 " local events; is its disk mounted? refusing to serve it",
			 path, events);
		return -ENODATA;
	}
	if (r == -ESTALE) {
		snprintf(err, errlen, "%s: store belongs to another cluster; refusing to serve it",
			 path);
		return r;
	}
	if (r < 0)
		snprintf(err, errlen, "%s: cannot read the store stamp: %s", path, strerror(-r));
	return r;
}

static void *node_syncer(void *arg);

int node_open(const char *dir, int flags, struct node **out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct node *n = calloc(1, sizeof(*n));
	const char *why = NULL;
	void *cluster = NULL;
	size_t len = 0;
	uint64_t clean = 1, replayed = 0, skipped = 0, role = 1;
	int r;

	if (!n || !(n->dir = strdup(dir))) {
		free(n);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->sync_wanted, NULL);
	pthread_cond_init(&n->sync_done, NULL);
	snprintf(path, sizeof(path), "%s/%s", dir, CONFIG_FILE);
	r = config_load(path, &n->cfg, err, errlen);
	if (r < 0)
		goto fail;
	snprintf(path, sizeof(path), "%s/%s", dir, NODE_JOURNAL_DIR);
	r = journal_open(path, 0, n->cfg.node_id, &n->journal, &why);
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, why ? why : strerror(-r));
		goto fail;
	}
	if (journal_node_id(n->journal) != n->cfg.node_id) {
		snprintf(err, errlen,
			 "%s: journal belongs to node %016" PRIx64 ", config says %016" PRIx64,
			 path, journal_node_id(n->journal), n->cfg.node_id);
		r = -ESTALE;
		goto fail;
	}
	r = journal_meta_get(n->journal, JOURNAL_META_CLUSTER_ID, &cluster, &len);
	if (r < 0 || len != 16 || memcmp(cluster, n->cfg.cluster_id, 16) != 0) {
		snprintf(err, errlen, "%s: journal cluster id does not match %s/%s", path, dir,
			 CONFIG_FILE);
		r = r < 0 ? r : -ESTALE;
		goto fail;
	}
	r = node_check_store(n, err, errlen);
	if (r < 0)
		goto fail;
	/* Nodes made before roles existed were single primaries of term 1. */
	if (journal_meta_get_u64(n->journal, JOURNAL_META_ROLE, &role) < 0)
		role = 1;
	n->primary = role == 1;
	if (journal_meta_get_u64(n->journal, JOURNAL_META_TERM, &n->term) < 0 || n->term == 0)
		n->term = 1;
	if (flags & NODE_OPEN_MOUNT) {
		if (journal_meta_get_u64(n->journal, JOURNAL_META_CLEAN, &clean) < 0)
			clean = 0;
		if (!clean)
			log_warn("%s: last stop was not clean; replaying the unapplied tail", dir);
		r = journal_meta_put_u64(n->journal, JOURNAL_META_CLEAN, 0, 1);
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot record mount state: %s", path,
				 strerror(-r));
			goto fail;
		}
	}
	if (flags & NODE_OPEN_REPLAY) {
		r = node_replay(n, &replayed, &skipped);
		if (r < 0) {
			snprintf(err, errlen, "%s: replay of the unapplied tail failed: %s", dir,
				 strerror(-r));
			goto fail;
		}
		if (replayed || skipped)
			log_info("%s: replayed %" PRIu64 " events, %" PRIu64
				 " already in the store",
				 dir, replayed, skipped);
	}
	/* What the journal held at open survived a restart: it is on disk. */
	n->synced_seq = journal_next_seq(n->journal) - 1;
	r = -pthread_create(&n->syncer, NULL, node_syncer, n);
	if (r < 0) {
		snprintf(err, errlen, "cannot start the journal syncer: %s", strerror(-r));
		goto fail;
	}
	n->syncer_running = 1;
	free(cluster);
	*out = n;
	return 0;
fail:
	free(cluster);
	node_close(n, 0);
	return r;
}

void node_close(struct node *n, int clean)
{
	if (!n)
		return;
	if (n->syncer_running) {
		pthread_mutex_lock(&n->lock);
		n->stopping = 1;
		pthread_cond_signal(&n->sync_wanted);
		pthread_mutex_unlock(&n->lock);
		pthread_join(n->syncer, NULL);
	}
	if (n->journal && clean) {
		int r = journal_sync(n->journal);

		if (r == 0)
			r = journal_meta_put_u64(n->journal, JOURNAL_META_CLEAN, 1, 1);
		if (r < 0)
			log_err("%s: cannot record a clean shutdown: %s", n->dir, strerror(-r));
	}
	journal_close(n->journal);
	store_close(n->store);
	pthread_cond_destroy(&n->sync_done);
	pthread_cond_destroy(&n->sync_wanted);
	pthread_mutex_destroy(&n->lock);
	free(n->dir);
	free(n);
}

int node_commit_locked(struct node *n, struct event *ev, struct apply_ctx *ctx)
{
	const char *why = NULL;
	int r, rv;

	/* Only the primary changes the store on its own; replicas follow it. */
	if (!n->primary && event_type_mutates(ev->type))
		return -EROFS;
	/* A new object's fid is the number of the event that creates it. */
	if (ev->type == EV_CREATE || ev->type == EV_MKNOD || ev->type == EV_MKDIR ||
	    ev->type == EV_SYMLINK)
		ev->fid = (struct fid){journal_node_id(n->journal), journal_next_seq(n->journal)};
	r = journal_append(n->journal, ev);
	if (r < 0) {
		log_err("journal append of %s %s failed: %s", event_type_name(ev->type),
			ev->path ? ev->path : "(unlinked file)", strerror(-r));
		return r;
	}
	ctx->fresh = 1;
	r = apply_event(n->store, ev, ctx, &why);
	if (r < 0) {
		rv = journal_void(n->journal, ev->origin, ev->seq);
		if (rv < 0)
			log_err("seq %" PRIu64 ": cannot void failed %s: %s", ev->seq,
				event_type_name(ev->type), strerror(-rv));
		else
			journal_mark_applied(n->journal, ev->origin, ev->seq);
		n->committed++;
		if (n->on_commit)
			n->on_commit(n->on_commit_arg);
		return r;
	}
	journal_mark_applied(n->journal, ev->origin, ev->seq);
	n->committed++;
	if (n->on_commit)
		n->on_commit(n->on_commit_arg);
	return 0;
}

int node_apply_remote(struct node *n, const struct event *ev, const char **why)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct event copy;
	uint64_t applied;
	int r;

	*why = NULL;
	pthread_mutex_lock(&n->lock);
	if (ev->origin == journal_node_id(n->journal) && ev->seq >= journal_next_seq(n->journal)) {
		*why = "event claims to come from this node but this node never made it";
		r = -EPROTO;
		goto out;
	}
	applied = journal_applied(n->journal, ev->origin);
	if (ev->seq <= applied) {
		r = 1;
		goto out;
	}
	if (ev->seq != applied + 1) {
		*why = "events of this origin skip a seq";
		r = -EPROTO;
		goto out;
	}
	/* Refuse an escaping path before it is journaled, not only when applied. */
	if ((ev->path && path_check(ev->path, why) < 0) ||
	    (ev->path2 && path_check(ev->path2, why) < 0)) {
		r = -EINVAL;
		goto out;
	}
	/* journal_put_remote() may point the copy at the value log; ev stays the caller's. */
	copy = *ev;
	r = journal_put_remote(n->journal, &copy);
	if (r == -EEXIST) {
		/* Journaled by an earlier attempt whose apply failed: apply it now. */
		r = 0;
	} else if (r < 0) {
		*why = "cannot journal it";
		goto out;
	}
	r = apply_event(n->store, ev, &ctx, why);
	if (r < 0)
		goto out;
	journal_mark_applied(n->journal, ev->origin, ev->seq);
	if (ev->term > n->term)
		n->term = ev->term;
	n->committed++;
	if (n->on_commit)
		n->on_commit(n->on_commit_arg);
	r = 0;
out:
	pthread_mutex_unlock(&n->lock);
	return r;
}

int node_sync(struct node *n)
{
	return node_sync_wait(n, node_sync_start(n));
}

/* The syncer thread: one journal sync for everything committed when it wakes. */
static void *node_syncer(void *arg)
{
	struct node *n = arg;
	uint64_t target, seq;
	int r;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		while (!n->stopping && n->want <= n->synced)
			pthread_cond_wait(&n->sync_wanted, &n->lock);
		if (n->stopping)
			break;
		target = n->committed;
		seq = journal_next_seq(n->journal) - 1;
		r = journal_sync(n->journal);
		if (r < 0) {
			log_err("%s: journal sync failed: %s", n->dir, strerror(-r));
			n->sync_error = r;
		} else {
			n->synced = target;
			n->synced_seq = seq;
		}
		pthread_cond_broadcast(&n->sync_done);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

uint64_t node_sync_start(struct node *n)
{
	uint64_t ticket;

	pthread_mutex_lock(&n->lock);
	ticket = n->committed;
	if (ticket > n->synced && ticket > n->want) {
		n->want = ticket;
		n->sync_error = 0;
		pthread_cond_signal(&n->sync_wanted);
	}
	pthread_mutex_unlock(&n->lock);
	return ticket;
}

int node_sync_wait(struct node *n, uint64_t ticket)
{
	int r = 0;

	pthread_mutex_lock(&n->lock);
	while (n->synced < ticket && !n->sync_error)
		pthread_cond_wait(&n->sync_done, &n->lock);
	if (n->synced < ticket)
		r = n->sync_error;
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* replay_one(): a peer's event that does not apply was left as it is. */
#define REPLAY_LEFT 2

/*
 * Apply one journaled event during replay.  A local event the store refuses
 * is voided; a peer's is left unapplied (REPLAY_LEFT).
 */
static int replay_one(struct node *n, struct event *ev, uint64_t *replayed, uint64_t *skipped)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	const char *why = NULL;
	int r;

	r = journal_load_payload(n->journal, ev, &why);
	if (r < 0) {
		log_err("replay: event %016" PRIx64 ":%" PRIu64 ": payload unreadable: %s",
			ev->origin, ev->seq, why ? why : strerror(-r));
		return r;
	}
	r = apply_event(n->store, ev, &ctx, &why);
	if (r == APPLY_SKIPPED) {
		(*skipped)++;
	} else if (r < 0 && ev->origin != journal_node_id(n->journal)) {
		/* Its origin applied it: leave it for the receiver to retry, never void it. */
		log_err("replay: event %016" PRIx64 ":%" PRIu64 " (%s %s) from a peer does not "
			"apply (%s: %s); leaving this origin's tail unapplied",
			ev->origin, ev->seq, event_type_name(ev->type), ev->path ? ev->path : "",
			why ? why : "", strerror(-r));
		return REPLAY_LEFT;
	} else if (r < 0) {
		log_warn("replay: event %016" PRIx64 ":%" PRIu64
			 " (%s %s) does not apply (%s: %s); "
			 "voiding it",
			 ev->origin, ev->seq, event_type_name(ev->type), ev->path ? ev->path : "",
			 why ? why : "", strerror(-r));
		r = journal_void(n->journal, ev->origin, ev->seq);
		if (r < 0)
			return r;
	} else {
		(*replayed)++;
	}
	journal_mark_applied(n->journal, ev->origin, ev->seq);
	return 0;
}

int node_replay(struct node *n, uint64_t *replayed, uint64_t *skipped)
{
	struct journal_iter *it = NULL;
	uint64_t origin = 0, seq = 0, a, b, applied;
	const uint8_t *val;
	size_t len;
	int r;

	*replayed = *skipped = 0;
	pthread_mutex_lock(&n->lock);
	for (;;) {
		struct event ev;
		const char *why = NULL;

		journal_iter_free(it);
		r = journal_iter_new(n->journal, JOURNAL_EVENTS, origin, seq, &it);
		if (r < 0)
			break;
		r = journal_iter_next(it, &a, &b, NULL, NULL, &val, &len);
		if (r <= 0)
			break;
		applied = journal_applied(n->journal, a);
		if (b <= applied) {
			/* Jump over what this origin has applied already. */
			origin = a;
			seq = applied + 1;
			if (seq == 0) {
				origin = a + 1;
				seq = 0;
			}
			continue;
		}
		if (b != applied + 1) {
			log_err("replay: origin %016" PRIx64 " jumps from applied seq %" PRIu64
				" to %" PRIu64 "; run fsck.ledgerfs",
				a, applied, b);
			r = -EBADMSG;
			break;
		}
		r = event_decode(val, len, &ev, NULL, &why);
		if (r < 0) {
			log_err("replay: event %016" PRIx64 ":%" PRIu64
				" is corrupt (%s); run fsck.ledgerfs",
				a, b, why);
			break;
		}
		r = replay_one(n, &ev, replayed, skipped);
		event_free(&ev);
		if (r < 0)
			break;
		origin = a;
		seq = b + 1;
		if (r == REPLAY_LEFT) {
			r = 0;
			if (++origin == 0)
				break;
			seq = 0;
		}
	}
	journal_iter_free(it);
	if (r == 0 && (*replayed || *skipped))
		r = journal_sync(n->journal);
	pthread_mutex_unlock(&n->lock);
	return r < 0 ? r : 0;
}
