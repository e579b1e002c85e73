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
#include <time.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/files.h"
#include "lib/log.h"
#include "lib/grow.h"
#include "node/checkpoint.h"
#include "node/node_int.h"
#include "store/path.h"
#include "node/rebuild.h"

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
static int load_failover(struct node *n);

int node_open(const char *dir, int flags, struct node **out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct node *n = calloc(1, sizeof(*n));
	const char *why = NULL;
	void *cluster = NULL;
	size_t len = 0;
	uint64_t clean = 1, replayed = 0, skipped = 0, redone = 0, role = 1;
	int r;

	if (!n || !(n->dir = strdup(dir))) {
		free(n);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->sync_wanted, NULL);
	pthread_cond_init(&n->sync_done, NULL);
	pthread_cond_init(&n->confirmed_cond, NULL);
	pthread_cond_init(&n->writes_cv, NULL);
	pthread_mutex_init(&n->ckpt_lock, NULL);
	pthread_mutex_init(&n->stored_lock, NULL);
	pthread_mutex_init(&n->ckpt_stop_lock, NULL);
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
	/* Nodes made before roles existed were single primaries of term 1. */
	if (journal_meta_get_u64(n->journal, JOURNAL_META_ROLE, &role) < 0)
		role = 1;
	__atomic_store_n(&n->primary, role == 1, __ATOMIC_RELEASE);
	if (journal_meta_get_u64(n->journal, JOURNAL_META_TERM, &n->term) < 0 || n->term == 0)
		n->term = 1;
	if (n->primary) {
		n->role_origin = n->cfg.node_id;
		n->role_term = n->term;
	}
	r = load_failover(n);
	if (r < 0) {
		snprintf(err, errlen, "%s: failover state unreadable: %s", path, strerror(-r));
		goto fail;
	}
	r = node_stored_load(n);
	if (r < 0) {
		snprintf(err, errlen, "%s: store checkpoint position unreadable: %s", path,
			 strerror(-r));
		goto fail;
	}
	r = node_snap_load(n);
	if (r < 0) {
		snprintf(err, errlen, "%s: snapshot resync state unreadable: %s", path,
			 strerror(-r));
		goto fail;
	}
	/* Before the store is checked: a crash mid-rebuild can leave no store/ yet. */
	if ((flags & NODE_OPEN_REBUILD) && n->rebuild_needed) {
		r = rebuild_store(n, err, errlen);
		if (r < 0)
			goto fail;
		store_close(n->store);
		n->store = NULL;
	}
	r = node_check_store(n, err, errlen);
	if (r < 0)
		goto fail;
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
		r = node_snap_recover(n, err, errlen);
		if (r < 0)
			goto fail;
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
		/* A power loss may have kept less of the store's data than it shows. */
		node_lock(n);
		r = node_redo_data(n, &redone);
		node_unlock(n);
		if (r < 0) {
			snprintf(err, errlen,
				 "%s: writing the data of the events since the last "
				 "store checkpoint again failed: %s",
				 dir, strerror(-r));
			goto fail;
		}
		if (redone)
			log_info("%s: wrote the data of %" PRIu64
				 " events since the last store checkpoint again",
				 dir, redone);
		/*
		 * The replay's voids and applied marks are on disk before any
		 * event is shipped: a void a peer took must not turn back into
		 * the event it replaced after a crash here.
		 */
		r = journal_sync(n->journal);
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot sync the journal after the replay: %s",
				 path, strerror(-r));
			goto fail;
		}
	}
	/* What the journal held at open survived a restart: it is on disk. */
	__atomic_store_n(&n->synced_seq, journal_next_seq(n->journal) - 1, __ATOMIC_RELEASE);
	r = -pthread_create(&n->syncer, NULL, node_syncer, n);
	if (r < 0) {
		snprintf(err, errlen, "cannot start the journal syncer: %s", strerror(-r));
		goto fail;
	}
	n->syncer_running = 1;
	if (flags & NODE_OPEN_MOUNT) {
		r = node_checkpoint_first(n);
		if (r == 0)
			r = node_checkpointer_start(n);
		/* Not to be written again next time: checkpoint it, in the background. */
		if (r == 0 && redone)
			node_checkpoint_soon(n);
		if (r < 0) {
			snprintf(err, errlen, "%s: cannot checkpoint the store: %s", dir,
				 strerror(-r));
			goto fail;
		}
	}
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
	node_checkpointer_stop(n);
	if (n->journal && n->store && clean) {
		/* Nothing to write again at the next start (and no walk for files gone since). */
		int r = node_checkpoint(n, NODE_CKPT_IF_MOVED);

		if (r == 0)
			r = journal_sync(n->journal);

		if (r == 0)
			r = journal_meta_put_u64(n->journal, JOURNAL_META_CLEAN, 1, 1);
		if (r < 0)
			log_err("%s: cannot record a clean shutdown: %s", n->dir, strerror(-r));
	}
	journal_close(n->journal);
	store_close(n->store);
	pthread_cond_destroy(&n->sync_done);
	pthread_cond_destroy(&n->sync_wanted);
	pthread_cond_destroy(&n->confirmed_cond);
	pthread_cond_destroy(&n->writes_cv);
	pthread_mutex_destroy(&n->lock);
	pthread_mutex_destroy(&n->ckpt_lock);
	pthread_mutex_destroy(&n->stored_lock);
	pthread_mutex_destroy(&n->ckpt_stop_lock);
	free(n->stored);
	free(n->wseq);
	free(n->dir);
	free(n);
}

/* The node lock, with no parallel write between its append and its apply's end. */
static void excl_lock(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	n->excl++;
	while (n->writes)
		pthread_cond_wait(&n->writes_cv, &n->lock);
}

static void excl_unlock(struct node *n)
{
	if (--n->excl == 0)
		pthread_cond_broadcast(&n->writes_cv);
	pthread_mutex_unlock(&n->lock);
}

void node_lock(struct node *n)
{
	excl_lock(n);
}

void node_unlock(struct node *n)
{
	excl_unlock(n);
}

/*
 * The highest local seq up to which every event is committed (applied or
 * voided): below the oldest parallel write still applying.  Lock held.
 */
static uint64_t done_seq_locked(struct node *n)
{
	return n->writes ? n->wseq[0] - 1 : journal_next_seq(n->journal) - 1;
}

void node_write_lock(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	while (n->excl)
		pthread_cond_wait(&n->writes_cv, &n->lock);
}

void node_write_unlock(struct node *n)
{
	pthread_mutex_unlock(&n->lock);
}

int node_write_begin_locked(struct node *n, struct event *ev)
{
	int r;

	if (!n->primary)
		return -EROFS;
	/* Only data writes commute with another object's changes. */
	if (ev->type != EV_WRITE)
		return -EINVAL;
	if (grow_array(&n->wseq, &n->wseq_cap, n->writes + 1) < 0)
		return -ENOMEM;
	r = journal_append(n->journal, ev);
	if (r < 0) {
		log_err("journal append of %s %s failed: %s", event_type_name(ev->type),
			ev->path ? ev->path : "(unlinked file)", strerror(-r));
		return r;
	}
	n->wseq[n->writes++] = ev->seq;
	return 0;
}

/* After a local event ended, applied or voided: count it, wake the shippers.  Lock held. */
static void committed_locked(struct node *n, uint64_t origin)
{
	n->committed++;
	if (n->on_commit)
		n->on_commit(n->on_commit_arg, origin);
}

int node_write_finish(struct node *n, struct event *ev, struct apply_ctx *ctx)
{
	const char *why = NULL;
	uint64_t before;
	size_t i;
	int r, rv;

	ctx->fresh = 1;
	r = apply_event(n->store, ev, ctx, &why);
	pthread_mutex_lock(&n->lock);
	if (r < 0) {
		rv = journal_void(n->journal, ev->origin, ev->seq);
		if (rv < 0)
			log_err("seq %" PRIu64 ": cannot void failed %s: %s", ev->seq,
				event_type_name(ev->type), strerror(-rv));
	}
	before = done_seq_locked(n);
	for (i = 0; i < n->writes && n->wseq[i] != ev->seq; i++)
		;
	if (i < n->writes) {
		memmove(&n->wseq[i], &n->wseq[i + 1], (n->writes - i - 1) * sizeof(*n->wseq));
		n->writes--;
	}
	/* The applied mark moves only over a run with nothing still applying. */
	if (done_seq_locked(n) > before)
		journal_mark_applied(n->journal, ev->origin, done_seq_locked(n));
	committed_locked(n, ev->origin);
	if (n->writes == 0)
		pthread_cond_broadcast(&n->writes_cv);
	pthread_mutex_unlock(&n->lock);
	/*
	 * A later write may have been made durable (an fsync) with this one
	 * still journaled as a write: its void must be durable before the
	 * caller hears of the failure, or a power loss would bring back as
	 * done a write that was refused.
	 */
	if (r < 0 && (rv = node_sync(n)) < 0)
		log_err("seq %" PRIu64 ": cannot make the void of a failed %s durable: %s", ev->seq,
			event_type_name(ev->type), strerror(-rv));
	return r;
}

uint64_t node_term(struct node *n)
{
	uint64_t term;

	pthread_mutex_lock(&n->lock);
	term = n->term;
	pthread_mutex_unlock(&n->lock);
	return term;
}

int node_commit_locked(struct node *n, struct event *ev, struct apply_ctx *ctx)
{
	const char *why = NULL;
	int r, rv;

	/* Only the primary changes the store on its own; replicas follow it. */
	if (!n->primary && event_type_mutates(ev->type))
		return -EROFS;
	/* A new object's fid is the number of the event that creates it. */
	if (event_type_is(ev->type, EVENT_T_CREATES))
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
		committed_locked(n, ev->origin);
		return r;
	}
	journal_mark_applied(n->journal, ev->origin, ev->seq);
	committed_locked(n, ev->origin);
	return 0;
}

/* ---- failover: roles, terms, fences, kept-aside tails ------------------- */

/* Write fences, tails and the rebuild flag.  Lock held. */
static int save_failover(struct node *n)
{
	uint8_t buf[NODE_MAX_FENCES * 32];
	unsigned i;
	int r;

	for (i = 0; i < n->nfences; i++) {
		put_le64(buf + i * 24, n->fences[i].origin);
		put_le64(buf + i * 24 + 8, n->fences[i].term);
		put_le64(buf + i * 24 + 16, n->fences[i].seq);
	}
	r = journal_meta_put(n->journal, JOURNAL_META_FENCES, buf, (size_t)n->nfences * 24, 0);
	for (i = 0; r == 0 && i < n->ntails; i++) {
		put_le64(buf + i * 32, n->tails[i].origin);
		put_le64(buf + i * 32 + 8, n->tails[i].first);
		put_le64(buf + i * 32 + 16, n->tails[i].last);
		put_le64(buf + i * 32 + 24, n->tails[i].term);
	}
	if (r == 0)
		r = journal_meta_put(n->journal, JOURNAL_META_TAILS, buf, (size_t)n->ntails * 32,
				     0);
	if (r == 0)
		r = journal_meta_put_u64(n->journal, JOURNAL_META_REBUILD, n->rebuild_needed, 1);
	if (r < 0)
		log_err("%s: cannot record the failover state: %s", n->dir, strerror(-r));
	return r;
}

/* Read fences, tails and the rebuild flag (absent means none). */
static int load_failover(struct node *n)
{
	void *val = NULL;
	size_t len = 0, i;
	uint64_t rebuild = 0;
	int r;

	r = journal_meta_get(n->journal, JOURNAL_META_FENCES, &val, &len);
	if (r == 0) {
		for (i = 0; i + 24 <= len && n->nfences < NODE_MAX_FENCES; i += 24)
			n->fences[n->nfences++] = (struct node_fence){
			    get_le64((uint8_t *)val + i), get_le64((uint8_t *)val + i + 8),
			    get_le64((uint8_t *)val + i + 16)};
		free(val);
	} else if (r != -ENOENT) {
		return r;
	}
	r = journal_meta_get(n->journal, JOURNAL_META_TAILS, &val, &len);
	if (r == 0) {
		for (i = 0; i + 32 <= len && n->ntails < NODE_MAX_FENCES; i += 32)
			n->tails[n->ntails++] = (struct node_tail){
			    get_le64((uint8_t *)val + i), get_le64((uint8_t *)val + i + 8),
			    get_le64((uint8_t *)val + i + 16), get_le64((uint8_t *)val + i + 24)};
		free(val);
	} else if (r != -ENOENT) {
		return r;
	}
	if (journal_meta_get_u64(n->journal, JOURNAL_META_REBUILD, &rebuild) == 0)
		n->rebuild_needed = rebuild != 0;
	return 0;
}

int node_in_tail_locked(struct node *n, uint64_t origin, uint64_t seq, uint64_t *term)
{
	unsigned i;

	for (i = 0; i < n->ntails; i++) {
		if (n->tails[i].origin == origin && seq >= n->tails[i].first &&
		    seq <= n->tails[i].last) {
			*term = n->tails[i].term;
			return 1;
		}
	}
	return 0;
}

/* Set role and term in memory and the journal.  Lock held. */
static int set_role(struct node *n, int primary, uint64_t term)
{
	int r;

	r = journal_meta_put_u64(n->journal, JOURNAL_META_TERM, term, 0);
	if (r == 0)
		r = journal_meta_put_u64(n->journal, JOURNAL_META_ROLE, primary ? 1 : 0, 1);
	if (r < 0)
		return r;
	n->term = term;
	__atomic_store_n(&n->primary, primary, __ATOMIC_RELAXED);
	if (primary) {
		n->role_origin = journal_node_id(n->journal);
		n->role_term = term;
	}
	return 0;
}

/* Journal a node-state event of our own, with nfences fences.  Lock held. */
static int commit_role_event(struct node *n, int primary, const struct evid *fences,
			     uint32_t nfences)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	struct event ev = {.type = EV_ROLE, .op_flags = primary ? 1 : 0};
	int r;

	r = event_set_fences(&ev, fences, nfences);
	if (r == 0)
		r = node_commit_locked(n, &ev, &ctx);
	if (r == 0)
		r = journal_sync(n->journal);
	event_free(&ev);
	return r;
}

/* Add or raise a fence.  Lock held. */
static void add_fence(struct node *n, uint64_t origin, uint64_t term, uint64_t seq)
{
	unsigned i;

	for (i = 0; i < n->nfences; i++) {
		if (n->fences[i].origin == origin) {
			if (term > n->fences[i].term)
				n->fences[i] = (struct node_fence){origin, term, seq};
			return;
		}
	}
	if (n->nfences < NODE_MAX_FENCES)
		n->fences[n->nfences++] = (struct node_fence){origin, term, seq};
}

int node_promote(struct node *n, uint64_t *term)
{
	struct evid vec[256];
	struct journal_iter *it = NULL;
	uint64_t a, b;
	const uint8_t *val;
	size_t len;
	uint32_t k = 0;
	int r;

	excl_lock(n);
	/* Pending applied marks ride on this sync, so the a/ keys list every origin. */
	r = journal_sync(n->journal);
	if (r == 0)
		r = journal_iter_new(n->journal, JOURNAL_APPLIED, 0, 0, &it);
	while (r == 0 && k < sizeof(vec) / sizeof(vec[0]) &&
	       journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0)
		vec[k++] = (struct evid){a, journal_applied(n->journal, a)};
	journal_iter_free(it);
	/*
	 * Members this node has applied nothing of are fenced at 0, so that
	 * its replicas, too, keep aside what they made at older terms rather
	 * than wait for a fence that would never come.
	 */
	for (unsigned p = 0; r == 0 && p < n->cfg.npeers && k < sizeof(vec) / sizeof(vec[0]); p++) {
		uint64_t id = n->cfg.peers[p].id;
		int known = id == 0 || id == journal_node_id(n->journal);

		for (uint32_t i = 0; !known && i < k; i++)
			known = vec[i].origin == id;
		if (!known)
			vec[k++] = (struct evid){id, 0};
	}
	if (r == 0)
		r = set_role(n, 1, n->term + 1);
	/* This node enforces its own fences too: an old primary may dial in at once. */
	for (uint32_t i = 0; r == 0 && i < k; i++)
		if (vec[i].origin != journal_node_id(n->journal))
			add_fence(n, vec[i].origin, n->term, vec[i].seq);
	if (r == 0)
		r = save_failover(n);
	if (r == 0)
		r = commit_role_event(n, 1, vec, k);
	if (r == 0) {
		*term = n->term;
		log_info("%s: promoted to primary of term %" PRIu64, n->dir, n->term);
	} else {
		log_err("%s: promotion failed: %s", n->dir, strerror(-r));
	}
	excl_unlock(n);
	return r;
}

/* Demote with the lock held. */
static int demote_locked(struct node *n, const char *why)
{
	int r = set_role(n, 0, n->term);

	if (r == 0)
		r = commit_role_event(n, 0, NULL, 0);
	if (r == 0)
		log_warn("%s: now a replica of term %" PRIu64 ": %s", n->dir, n->term, why);
	else
		log_err("%s: demotion failed: %s", n->dir, strerror(-r));
	return r;
}

int node_demote(struct node *n, const char *why)
{
	int r;

	excl_lock(n);
	r = demote_locked(n, why);
	excl_unlock(n);
	return r;
}

int node_see_term(struct node *n, uint64_t term, uint64_t primary)
{
	uint64_t self = journal_node_id(n->journal);
	int r = 0;

	excl_lock(n);
	if (term > n->term) {
		if (n->primary) {
			char why[96];

			snprintf(why, sizeof(why), "a peer has seen term %" PRIu64, term);
			n->term = term;
			demote_locked(n, why);
		} else {
			journal_meta_put_u64(n->journal, JOURNAL_META_TERM, term, 1);
			n->term = term;
		}
	}
	if (primary && term >= n->role_term) {
		if (term == n->role_term && n->role_origin && primary != n->role_origin) {
			log_err("%s: two primaries claim term %" PRIu64 ": %016" PRIx64
				" and %016" PRIx64 "; refusing the second",
				n->dir, term, n->role_origin, primary);
			r = -EPERM;
		} else if (primary != self || term > n->role_term) {
			n->role_origin = primary;
			n->role_term = term;
		}
	}
	excl_unlock(n);
	return r;
}

/*
 * The last seq of origin after fence that this node holds with a term
 * below term: what the promotion cuts off.  Events of the new term that
 * follow (an old primary's own demotion, say) are not part of it.  Lock held.
 */
static uint64_t last_of_older_term(struct node *n, uint64_t origin, uint64_t fence, uint64_t term)
{
	uint64_t self = journal_node_id(n->journal), last = fence, a, b;
	uint64_t held =
	    origin == self ? journal_next_seq(n->journal) - 1 : journal_applied(n->journal, origin);
	struct journal_iter *it = NULL;
	struct event_head h;
	const uint8_t *val;
	size_t len;

	if (held <= fence ||
	    journal_iter_new(n->journal, JOURNAL_EVENTS, origin, fence + 1, &it) < 0)
		return fence;
	while (journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0 && a == origin &&
	       b <= held && event_peek_header(val, len, &h, NULL) == 0 && h.term < term)
		last = b;
	journal_iter_free(it);
	return last;
}

/*
 * A peer's promotion (EV_ROLE, primary) was applied: adopt its term, step
 * down if we were primary, fence every origin at the new primary's applied
 * seq, and keep aside what we hold beyond a fence.  Lock held.
 */
static void take_promotion(struct node *n, const struct event *ev)
{
	uint64_t self = journal_node_id(n->journal);
	uint32_t i;

	if (ev->term > n->term) {
		journal_meta_put_u64(n->journal, JOURNAL_META_TERM, ev->term, 0);
		n->term = ev->term;
	}
	if (n->primary && ev->origin != self) {
		char why[96];

		snprintf(why, sizeof(why), "node %016" PRIx64 " was promoted at term %" PRIu64,
			 ev->origin, ev->term);
		demote_locked(n, why);
	}
	n->role_origin = ev->origin;
	n->role_term = ev->term;
	for (i = 0; i < event_fence_count(ev); i++) {
		struct evid f = event_fence(ev, i);
		uint64_t origin = f.origin, seq = f.seq;
		uint64_t held = last_of_older_term(n, origin, seq, ev->term);

		if (origin == ev->origin)
			continue;
		add_fence(n, origin, ev->term, seq);
		if (held > seq && n->ntails < NODE_MAX_FENCES) {
			n->tails[n->ntails++] = (struct node_tail){origin, seq + 1, held, ev->term};
			n->rebuild_needed = 1;
			log_err("%s: events %016" PRIx64 ":%" PRIu64 "..%" PRIu64
				" are beyond the promotion of term %" PRIu64
				": kept aside (ledgerctl tail-export); a snapshot resync from the "
				"new primary takes them out of the store",
				n->dir, origin, seq + 1, held, ev->term);
		}
	}
	save_failover(n);
	/* A running node gets the store level by snapshot; a start rebuilds it anyway. */
	if (n->rebuild_needed && n->snap_state == NODE_SNAP_NONE &&
	    journal_meta_put(n->journal, JOURNAL_META_SNAP, (uint8_t[5]){NODE_SNAP_NEEDED}, 5, 0) ==
		0)
		n->snap_state = NODE_SNAP_NEEDED;
}

/* Is origin fenced by a promotion of at least term?  Lock held. */
static int fenced_at(struct node *n, uint64_t origin, uint64_t term)
{
	unsigned i;

	for (i = 0; i < n->nfences; i++)
		if (n->fences[i].origin == origin && n->fences[i].term >= term)
			return 1;
	return 0;
}

/* Refuse an event a promotion fenced off, or one from a second primary.  Lock held. */
static int check_term(struct node *n, const struct event *ev, const char **why)
{
	uint64_t self = journal_node_id(n->journal);
	unsigned i;

	for (i = 0; i < n->nfences; i++) {
		if (n->fences[i].origin == ev->origin && ev->term < n->fences[i].term &&
		    ev->seq > n->fences[i].seq) {
			*why = "event of a lower term beyond the promotion that fenced its origin";
			return -EPERM;
		}
	}
	/*
	 * This node promoted itself to the term it knows and fenced every
	 * origin it had applied events of at what it had applied.  An origin
	 * it had applied nothing of has no fence, but the same holds for it:
	 * anything of an older term from it (its own promotion included) was
	 * made beyond what this primary knew, so it is kept aside, not taken.
	 */
	if (ev->origin != self && n->primary && n->role_origin == self && ev->term < n->term &&
	    journal_applied(n->journal, ev->origin) == 0 && !fenced_at(n, ev->origin, n->term)) {
		*why = "event of a lower term from a node this primary had nothing of when it "
		       "was promoted";
		return -EPERM;
	}
	if (event_type_mutates(ev->type) && ev->origin != self) {
		/*
		 * A change from an older term than we know may be history or an
		 * old primary's fenced tail: only the promotion's fence tells,
		 * so wait for it (it comes in the new primary's stream).
		 */
		if (ev->term < n->term && ev->origin != n->role_origin &&
		    !fenced_at(n, ev->origin, n->term)) {
			*why = "change of an older term, held back until this term's promotion "
			       "is known";
			return -EAGAIN;
		}
		if (n->primary && ev->term >= n->term) {
			*why = "another node made changes at this primary's term";
			return -EPERM;
		}
		if (n->role_origin && ev->term == n->role_term && ev->origin != n->role_origin) {
			*why = "changes from a node that is not the primary of their term";
			return -EPERM;
		}
	}
	return 0;
}

/*
 * Vet remote event ev before it is journaled: 1 if it is applied here
 * already, 0 if it is the next of its origin, where *next (the seq expected
 * after those earlier in the run, 0 if none came yet) says which that is,
 * or a negative errno with *why.  Lock held.
 */
static int remote_vet(struct node *n, const struct event *ev, uint64_t *next, const char **why)
{
	uint64_t expect = *next ? *next : journal_applied(n->journal, ev->origin) + 1;
	int r;

	if (ev->origin == journal_node_id(n->journal) && ev->seq >= journal_next_seq(n->journal)) {
		*why = "event claims to come from this node but this node never made it";
		return -EPROTO;
	}
	if (ev->seq < expect)
		return 1;
	if (ev->seq != expect) {
		*why = "events of this origin skip a seq";
		return -EPROTO;
	}
	r = check_term(n, ev, why);
	if (r < 0)
		return r;
	/* Refuse an escaping path before it is journaled, not only when applied. */
	if ((ev->path && path_check(ev->path, why) < 0) ||
	    (ev->path2 && path_check(ev->path2, why) < 0))
		return -EINVAL;
	*next = ev->seq + 1;
	return 0;
}

/*
 * The seq expected next of origin after the events vetted so far, in a
 * small table (origin, next) of *nnext entries; NULL when it is full.
 */
static uint64_t *run_next(uint64_t (*next)[2], size_t *nnext, uint64_t origin)
{
	size_t i;

	for (i = 0; i < *nnext; i++)
		if (next[i][0] == origin)
			return &next[i][1];
	if (*nnext == NODE_RUN_ORIGINS)
		return NULL;
	next[*nnext][0] = origin;
	next[*nnext][1] = 0;
	return &next[(*nnext)++][1];
}

/* Apply remote event ev, journaled already, and mark it applied.  Lock held. */
static int remote_apply(struct node *n, const struct event *ev, struct apply_cache *cache,
			const char **why)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;
	int r;

	ctx.cache = cache;
	r = apply_event(n->store, ev, &ctx, why);
	if (r < 0 && node_snap_lenient_locked(n, ev, r)) {
		log_debug("event %016" PRIx64 ":%" PRIu64 " (%s %s): %s: %s; the snapshot already "
			  "shows it",
			  ev->origin, ev->seq, event_type_name(ev->type), ev->path ? ev->path : "",
			  *why ? *why : "", strerror(-r));
		r = APPLY_SKIPPED;
	}
	if (r < 0)
		return r;
	journal_mark_applied(n->journal, ev->origin, ev->seq);
	if (ev->type == EV_ROLE && (ev->op_flags & 1))
		take_promotion(n, ev);
	n->committed++;
	if (n->on_commit)
		n->on_commit(n->on_commit_arg, ev->origin);
	return 0;
}

int node_apply_remote(struct node *n, const struct event *evs, size_t count,
		      struct apply_cache *cache, int *res, size_t *done, const char **why)
{
	uint64_t next[NODE_RUN_ORIGINS][2], *expect;
	const char *vet_why = NULL;
	size_t nnext = 0, k = 0, i;
	int r = 0, vet = 0;

	*why = NULL;
	*done = 0;
	excl_lock(n);
	/*
	 * Vet the run up to the first event refused, or the first promotion:
	 * applying one changes what check_term() lets through.  Events applied
	 * already (res 1) are left out of the journal: after a snapshot resync
	 * the journal does not hold them, nor should it.
	 */
	while (k < count && (expect = run_next(next, &nnext, evs[k].origin))) {
		vet = remote_vet(n, &evs[k], expect, &vet_why);
		if (vet < 0)
			break;
		res[k++] = vet;
		if (evs[k - 1].type == EV_ROLE)
			break;
	}
	/* Journal before store: the whole run is journaled before any of it is applied. */
	r = k ? journal_put_remote_batch(n->journal, evs, k, res) : 0;
	if (r < 0) {
		*why = "cannot journal it";
		goto out;
	}
	for (i = 0; i < k; i++) {
		/* Journaled by an earlier attempt whose apply failed, it is applied now. */
		r = res[i] == 0 ? remote_apply(n, &evs[i], cache, why) : 0;
		if (r < 0)
			goto out;
		*done = i + 1;
	}
	/* Nobody may see the store between runs with versions or times still deferred. */
	r = cache ? apply_cache_flush(cache) : 0;
	if (r < 0) {
		log_err("%s: cannot set the times or version deferred for %s: %s", n->dir,
			cache->obj, strerror(-r));
		*why = "set deferred times and version";
		*done = k ? k - 1 : 0;
		goto out;
	}
	if (vet < 0) {
		r = vet;
		*why = vet_why;
	}
out:
	excl_unlock(n);
	return r;
}

/* Peers that confirmed seq.  Lock held. */
static unsigned peers_confirmed(struct node *n, uint64_t seq)
{
	unsigned i, k = 0;

	for (i = 0; i < CONFIG_MAX_PEERS; i++)
		k += n->confirmed_peer[i] && n->confirmed_seq[i] >= seq;
	return k;
}

void node_peer_confirmed(struct node *n, uint64_t peer, uint64_t seq)
{
	unsigned i, slot = CONFIG_MAX_PEERS;

	pthread_mutex_lock(&n->lock);
	for (i = 0; i < CONFIG_MAX_PEERS; i++) {
		if (n->confirmed_peer[i] == peer) {
			slot = i;
			break;
		}
		if (!n->confirmed_peer[i] && slot == CONFIG_MAX_PEERS)
			slot = i;
	}
	if (slot < CONFIG_MAX_PEERS && seq > n->confirmed_seq[slot]) {
		n->confirmed_peer[slot] = peer;
		n->confirmed_seq[slot] = seq;
		pthread_cond_broadcast(&n->confirmed_cond);
	}
	/* Caught up again: the next fsync waits for peers as configured. */
	if (n->degraded &&
	    peers_confirmed(n, journal_next_seq(n->journal) - 1) >= n->cfg.sync_peers) {
		n->degraded = 0;
		log_info("%s: %u peers confirm everything again: synchronous replication restored",
			 n->dir, n->cfg.sync_peers);
	}
	pthread_mutex_unlock(&n->lock);
}

void node_peer_forget(struct node *n, uint64_t peer)
{
	unsigned i;

	pthread_mutex_lock(&n->lock);
	for (i = 0; i < CONFIG_MAX_PEERS; i++) {
		if (n->confirmed_peer[i] == peer) {
			n->confirmed_peer[i] = 0;
			n->confirmed_seq[i] = 0;
		}
	}
	pthread_mutex_unlock(&n->lock);
}

int node_wait_peers(struct node *n)
{
	struct timespec deadline;
	uint64_t tail;
	int r = 0, w = 0;

	/* Only the primary's changes need peers; a replica's fsync has nothing to wait for. */
	if (n->cfg.sync_peers == 0 || !__atomic_load_n(&n->primary, __ATOMIC_RELAXED))
		return 0;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += n->cfg.sync_timeout_ms / 1000;
	deadline.tv_nsec += (long)(n->cfg.sync_timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&n->lock);
	tail = journal_next_seq(n->journal) - 1;
	if (n->degraded)
		goto out;
	__atomic_add_fetch(&n->sync_waiting, 1, __ATOMIC_RELEASE);
	if (n->on_commit)
		n->on_commit(n->on_commit_arg, journal_node_id(n->journal));
	while (peers_confirmed(n, tail) < n->cfg.sync_peers && w != ETIMEDOUT && !n->stopping)
		w = pthread_cond_timedwait(&n->confirmed_cond, &n->lock, &deadline);
	__atomic_sub_fetch(&n->sync_waiting, 1, __ATOMIC_RELEASE);
	if (peers_confirmed(n, tail) >= n->cfg.sync_peers)
		goto out;
	if (n->cfg.sync_degrade) {
		n->degraded = 1;
		log_warn("%s: fewer than %u peers confirmed within %u ms: degraded to asynchronous "
			 "replication",
			 n->dir, n->cfg.sync_peers, n->cfg.sync_timeout_ms);
	} else {
		log_err("%s: fewer than %u peers confirmed seq %" PRIu64
			" within %u ms: fsync fails",
			n->dir, n->cfg.sync_peers, tail, n->cfg.sync_timeout_ms);
		r = -EIO;
	}
out:
	pthread_mutex_unlock(&n->lock);
	return r;
}

int node_sync(struct node *n)
{
	return node_sync_wait(n, node_sync_start(n));
}

/*
 * The syncer thread: one journal sync for everything committed when it
 * wakes.  The disk flushes run without the lock, so events go on being
 * journaled and applied meanwhile.
 */
static void *node_syncer(void *arg)
{
	struct node *n = arg;
	struct journal_sync js;
	uint64_t target, seq;
	int r;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		while (!n->stopping && n->want <= n->synced)
			pthread_cond_wait(&n->sync_wanted, &n->lock);
		if (n->stopping)
			break;
		target = n->committed;
		seq = done_seq_locked(n);
		r = journal_sync_begin(n->journal, &js);
		if (r > 0) {
			pthread_mutex_unlock(&n->lock);
			r = journal_sync_log(n->journal, &js);
			pthread_mutex_lock(&n->lock);
			journal_sync_end(n->journal, &js, r);
		}
		if (r < 0) {
			/* Said once per error, retried at a walk's pace: the disk may be gone. */
			if (n->sync_error != r)
				log_err("%s: journal sync failed: %s", n->dir, strerror(-r));
			n->sync_error = r;
			pthread_cond_broadcast(&n->sync_done);
			pthread_mutex_unlock(&n->lock);
			nanosleep(&(struct timespec){.tv_nsec = 100000000L}, NULL);
			pthread_mutex_lock(&n->lock);
			continue;
		} else {
			n->synced = target;
			__atomic_store_n(&n->synced_seq, seq, __ATOMIC_RELEASE);
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

int node_sync_poll(struct node *n, uint64_t ticket)
{
	int r;

	pthread_mutex_lock(&n->lock);
	r = n->synced >= ticket ? 1 : n->sync_error ? n->sync_error : 0;
	pthread_mutex_unlock(&n->lock);
	return r;
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
	if (r < 0 && node_snap_lenient_locked(n, ev, r))
		r = APPLY_SKIPPED;
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
	excl_lock(n);
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
	excl_unlock(n);
	return r < 0 ? r : 0;
}

uint64_t node_synced_seq(struct node *n)
{
	return __atomic_load_n(&n->synced_seq, __ATOMIC_ACQUIRE);
}

int node_sync_waiting(struct node *n)
{
	return __atomic_load_n(&n->sync_waiting, __ATOMIC_ACQUIRE) != 0;
}

uint64_t node_tail_floor(struct node *n, uint64_t origin, uint64_t bound)
{
	unsigned i;

	pthread_mutex_lock(&n->lock);
	for (i = 0; i < n->ntails; i++)
		if (n->tails[i].origin == origin && n->tails[i].first - 1 < bound)
			bound = n->tails[i].first - 1;
	pthread_mutex_unlock(&n->lock);
	return bound;
}

const char *node_dir(const struct node *n)
{
	return n->dir;
}

struct config *node_cfg(struct node *n)
{
	return &n->cfg;
}

struct store *node_store(const struct node *n)
{
	return n->store;
}

struct journal *node_journal(const struct node *n)
{
	return n->journal;
}

int node_is_primary(struct node *n)
{
	return __atomic_load_n(&n->primary, __ATOMIC_ACQUIRE);
}

void node_set_on_commit(struct node *n, void (*fn)(void *arg, uint64_t origin), void *arg)
{
	pthread_mutex_lock(&n->lock);
	n->on_commit = fn;
	n->on_commit_arg = arg;
	pthread_mutex_unlock(&n->lock);
}

void node_state(struct node *n, struct node_state *st)
{
	pthread_mutex_lock(&n->lock);
	st->primary = n->primary;
	st->term = n->term;
	st->role_origin = n->role_origin;
	st->degraded = n->degraded;
	st->rebuild_needed = n->rebuild_needed;
	st->snap_needed = n->snap_state == NODE_SNAP_NEEDED;
	st->ntails = n->ntails;
	memcpy(st->tails, n->tails, sizeof(st->tails[0]) * n->ntails);
	pthread_mutex_unlock(&n->lock);
}

int node_rebuild_needed_locked(struct node *n)
{
	return n->rebuild_needed;
}
