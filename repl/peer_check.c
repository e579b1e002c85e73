/*
 * peer_check.c - fsck.ledgerfs --against: a stopped node's store compared
 * with a live peer's, over the snapshot resync's rounds (see peer_check.h).
 *
 * Two halves.  peer_check_run() makes the node's side: our hash tree
 * (every file read), the link with the node's own certificate, a HELLO
 * that claims no term, then snap_recv_check() runs the rounds.  The
 * snap_check_*() functions are what those rounds call for each step of
 * their plan: each step belongs to one difference (a missing directory's
 * whole subtree to one), and a difference between two entries of the same
 * type is named once the peer's entry arrives: its metadata compared with
 * ours field by field, its contents with our file's bytes as they stream.
 * A round the peer's files changed under is forgotten; the differences of
 * the steady one are reported, in the walk's order.
 *
 * Memory: the check owns our tree, the differences (their paths and xattr
 * lists) and the step map; everything is freed before peer_check_run()
 * returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/grow.h"
#include "net/hello.h"
#include "net/tls.h"
#include "node/node.h"
#include "repl/peer_check.h"
#include "repl_int.h"
#include "resync/snap_meta.h"
#include "resync/snapshot.h"
#include "store/path.h"

#define NO_DIFF SIZE_MAX

/* One difference and what comparing it needs. */
struct diff {
	struct peer_diff d; /* d.path and d.xattrs point at path and xattrs */
	char *path;
	char *xattrs;
	int pending;	/* same type on both sides: named once the peer's entry arrives */
	int fd;		/* our regular file, while the peer's contents are compared; -1 */
	int accepted;	/* found() asked for a repair, and keep() did not refuse */
	int dropped;	/* its LINK steps left out: their target's repair was not accepted */
	int unfinished; /* its install stopped before every step of it was carried out */
};

struct snap_check {
	const struct peer_check_opts *o;
	const struct peer_check_ops *ops;
	struct peer_check_result *res;
	struct peer_check_progress *prog;
	struct merkle *tree;
	uint64_t entries;
	struct diff *v;
	size_t n, cap;
	size_t *step_diff; /* plan step -> index in v, NO_DIFF if none */
	size_t steps_cap;
	char *below; /* a missing directory being fetched whole: its steps are one difference */
	size_t below_diff; /* its index in v */
	uint8_t *buf;	   /* our bytes to compare with a chunk of the peer's */
	size_t buf_cap;
	size_t *acc_diff; /* step of the accepted plan -> index in v */
	size_t acc_cap;
	uint64_t need, room; /* need > 0: a repair would not fit in the staging area */
};

/* Counters live in the caller's progress, or in this one when it gave none. */
static struct peer_check_progress no_progress;

int snap_check_repairs(const struct snap_check *c)
{
	return c->o->repair;
}

int snap_check_tree(struct snap_check *c, struct merkle **out, uint64_t *entries)
{
	*out = c->tree;
	*entries = c->entries;
	return c->tree ? 0 : -EINVAL;
}

static void diff_free(struct diff *x)
{
	if (x->fd >= 0)
		close(x->fd);
	free(x->path);
	free(x->xattrs);
}

void snap_check_round(struct snap_check *c)
{
	for (size_t i = 0; i < c->n; i++)
		diff_free(&c->v[i]);
	c->n = 0;
	free(c->below);
	c->below = NULL;
	atomic_store(&c->prog->found, 0);
}

/* Is path beneath (not at) dir? */
static int beneath(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (path_is_root(dir))
		return !path_is_root(path);
	return !strncmp(path, dir, n) && path[n] == '/';
}

static int map_step(struct snap_check *c, uint32_t step, size_t diff)
{
	size_t old = c->steps_cap;

	if (grow_array(&c->step_diff, &c->steps_cap, (size_t)step + 1) < 0)
		return -ENOMEM;
	for (size_t i = old; i < c->steps_cap; i++)
		c->step_diff[i] = NO_DIFF;
	c->step_diff[step] = diff;
	return 0;
}

static struct diff *step_diff(struct snap_check *c, uint32_t step)
{
	if (step >= c->steps_cap || c->step_diff[step] == NO_DIFF)
		return NULL;
	return &c->v[c->step_diff[step]];
}

int snap_check_step(struct snap_check *c, uint32_t step, const char *path, uint32_t mode_here,
		    uint64_t size_here, const struct merkle_entry *theirs, int *probe)
{
	struct diff *x;

	*probe = 0;
	if (c->below && beneath(path, c->below)) {
		if (theirs && S_ISREG(theirs->mode) && c->o->repair)
			atomic_fetch_add(&c->prog->wanted, theirs->size);
		return map_step(c, step, c->below_diff);
	}
	free(c->below);
	c->below = NULL;
	if (grow_array(&c->v, &c->cap, c->n + 1) < 0)
		return -ENOMEM;
	x = &c->v[c->n];
	*x = (struct diff){.fd = -1, .path = strdup(path)};
	if (!x->path)
		return -ENOMEM;
	c->n++; /* from here on the check owns x and frees it */
	x->d.path = x->path;
	x->d.mode_here = mode_here;
	x->d.size_here = size_here;
	if (theirs) {
		x->d.mode_there = theirs->mode;
		x->d.size_there = theirs->size;
	}
	if (!theirs) {
		x->d.kind = PEER_DIFF_EXTRA;
	} else if (!mode_here || (mode_here & S_IFMT) != (theirs->mode & S_IFMT)) {
		if (!mode_here) {
			x->d.kind = PEER_DIFF_MISSING;
		} else {
			x->d.kind = PEER_DIFF_CONTENT;
			x->d.what = PEER_DIFF_TYPE;
		}
		/* A directory there only comes whole: what is below it is part of it. */
		if (S_ISDIR(theirs->mode)) {
			c->below = strdup(path);
			if (!c->below)
				return -ENOMEM;
			c->below_diff = c->n - 1;
		}
	} else {
		x->pending = 1;
		*probe = 1;
	}
	if (theirs && S_ISREG(theirs->mode) && (*probe || c->o->repair))
		atomic_fetch_add(&c->prog->wanted, theirs->size);
	atomic_fetch_add(&c->prog->found, 1);
	return map_step(c, step, c->n - 1);
}

/* Append name (len bytes) to the list of differing xattrs. */
static int xattrs_note(struct diff *x, const uint8_t *name, size_t len)
{
	size_t have = x->xattrs ? strlen(x->xattrs) : 0;
	char *p = realloc(x->xattrs, have + len + 3);

	if (!p)
		return -ENOMEM;
	x->xattrs = p;
	if (have) {
		memcpy(p + have, ", ", 2);
		have += 2;
	}
	memcpy(p + have, name, len);
	p[have + len] = '\0';
	return 0;
}

/* The names of the xattrs that the two checked blobs hold differently, in byte order. */
static int xattrs_compare(struct diff *x, const uint8_t *a, size_t alen, const uint8_t *b,
			  size_t blen)
{
	unsigned na = xattr_blob_count(a, alen), nb = xattr_blob_count(b, blen), i = 0, j = 0;
	size_t oa = 2, ob = 2;
	struct xent ea = {0}, eb = {0};
	int err = 0;

	if (na)
		xattr_blob_next(a, &oa, &ea);
	if (nb)
		xattr_blob_next(b, &ob, &eb);
	while (!err && (i < na || j < nb)) {
		int c;

		if (i == na) {
			c = 1;
		} else if (j == nb) {
			c = -1;
		} else {
			size_t m = ea.name_len < eb.name_len ? ea.name_len : eb.name_len;

			c = memcmp(ea.name, eb.name, m);
			if (!c)
				c = ea.name_len < eb.name_len ? -1 : ea.name_len > eb.name_len;
		}
		if (c < 0)
			err = xattrs_note(x, ea.name, ea.name_len);
		else if (c > 0)
			err = xattrs_note(x, eb.name, eb.name_len);
		else if (ea.value_len != eb.value_len || memcmp(ea.value, eb.value, ea.value_len))
			err = xattrs_note(x, ea.name, ea.name_len);
		if (c <= 0 && ++i < na)
			xattr_blob_next(a, &oa, &ea);
		if (c >= 0 && ++j < nb)
			xattr_blob_next(b, &ob, &eb);
	}
	if (!err && x->xattrs)
		x->d.what |= PEER_DIFF_XATTRS;
	return err;
}

int snap_check_entry(struct snap_check *c, uint32_t step, const struct snap_meta *m,
		     const char **why)
{
	struct diff *x = step_diff(c, step);
	struct snap_meta mine = {0};
	int fd = -1, err;

	/* A missing directory's steps belong to it, and are named already. */
	if (!x || !x->pending)
		return 0;
	x->pending = 0;
	err = snap_read_entry(c->o->store_root, x->path, &mine, &fd);
	if (err) {
		*why = "cannot read this node's entry to compare";
		return err;
	}
	if ((mine.mode & S_IFMT) != (m->mode & S_IFMT))
		x->d.what |= PEER_DIFF_TYPE;
	if ((mine.mode & 07777) != (m->mode & 07777))
		x->d.what |= PEER_DIFF_MODE;
	x->d.mode_here = mine.mode;
	x->d.mode_there = m->mode;
	x->d.uid_here = mine.uid;
	x->d.gid_here = mine.gid;
	x->d.uid_there = m->uid;
	x->d.gid_there = m->gid;
	if (mine.uid != m->uid || mine.gid != m->gid)
		x->d.what |= PEER_DIFF_OWNER;
	x->d.size_here = mine.size;
	x->d.size_there = m->size;
	switch (m->mode & S_IFMT) {
	case S_IFREG:
		x->d.mtime_here = mine.mtime_sec * 1000000000 + mine.mtime_nsec;
		x->d.mtime_there = m->mtime_sec * 1000000000 + m->mtime_nsec;
		if (x->d.mtime_here != x->d.mtime_there)
			x->d.what |= PEER_DIFF_MTIME;
		if (mine.size != m->size)
			x->d.what |= PEER_DIFF_DATA;
		else if (m->size && fd >= 0) {
			/* The contents are compared as they arrive. */
			x->fd = fd;
			fd = -1;
		}
		break;
	case S_IFLNK:
		if (!mine.target || !m->target || strcmp(mine.target, m->target))
			x->d.what |= PEER_DIFF_DATA;
		break;
	case S_IFCHR:
	case S_IFBLK:
		if (mine.rdev != m->rdev)
			x->d.what |= PEER_DIFF_DATA;
		break;
	}
	err = xattrs_compare(x, mine.xattrs, mine.xattrs_len, m->xattrs, m->xattrs_len);
	if (fd >= 0)
		close(fd);
	snap_meta_free(&mine);
	return err;
}

int snap_check_data(struct snap_check *c, uint32_t step, uint64_t off, const uint8_t *data,
		    size_t len)
{
	struct diff *x = step_diff(c, step);
	ssize_t got;

	if (!x || x->fd < 0)
		return 0;
	if (grow_array(&c->buf, &c->buf_cap, len ? len : 1) < 0)
		return -ENOMEM;
	got = pread(x->fd, c->buf, len, (off_t)off);
	if (got < 0)
		return -errno;
	if ((size_t)got != len || memcmp(c->buf, data, len)) {
		x->d.what |= PEER_DIFF_DATA;
		close(x->fd);
		x->fd = -1;
	} else if (off + len >= x->d.size_there) {
		close(x->fd);
		x->fd = -1;
	}
	return 0;
}

/*
 * This node's applied vector (its own origin included) into vec, sorted by
 * origin; *n entries.  0 or a negative errno.
 */
static int applied_vector(struct journal *j, uint64_t self, struct evid *vec, uint32_t *n)
{
	struct journal_iter *it = NULL;
	const uint8_t *val;
	uint64_t a, b;
	size_t len;
	int rv, more;

	*n = 0;
	vec[(*n)++] = (struct evid){self, journal_applied(j, self)};
	rv = journal_iter_new(j, JOURNAL_APPLIED, 0, 0, &it);
	while (rv == 0 && (more = journal_iter_next(it, &a, &b, NULL, NULL, &val, &len)) != 0) {
		if (more < 0) {
			rv = more;
			break;
		}
		if (a == self || a == 0)
			continue;
		if (*n == REPL_MAX_ORIGINS) {
			rv = -E2BIG;
			break;
		}
		vec[(*n)++] = (struct evid){a, journal_applied(j, a)};
	}
	journal_iter_free(it);
	if (rv == 0)
		qsort(vec, *n, sizeof(*vec), repl_evid_cmp);
	return rv;
}

static void note(struct snap_check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct snap_check *c, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	if (!c->ops->note)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	c->ops->note(c->ops->arg, text);
}

/*
 * Compare our applied vector with the peer's position: 1 when a repair
 * may take the peer's versions (it has every event we applied), else 0;
 * notes say where they differ.  A negative errno if ours cannot be read.
 */
static int positions(struct snap_check *c, const struct evid *theirs, uint32_t count)
{
	struct evid mine[REPL_MAX_ORIGINS];
	uint32_t n, i, k;
	int rv, ok = 1, ahead = 0;

	rv = applied_vector(c->o->journal, c->o->cfg->node_id, mine, &n);
	if (rv < 0) {
		note(c, "cannot read this node's applied vector: %s", strerror(-rv));
		return rv;
	}
	for (i = 0; i < n; i++) {
		uint64_t seq = 0;

		for (k = 0; k < count; k++)
			if (theirs[k].origin == mine[i].origin)
				seq = theirs[k].seq;
		if (seq < mine[i].seq) {
			note(c,
			     "peer %s has applied events of origin %016" PRIx64 " up to %" PRIu64
			     ", this node up to %" PRIu64
			     ": its version would drop them, so nothing can be repaired from it",
			     c->res->peer, mine[i].origin, seq, mine[i].seq);
			ok = 0;
		}
	}
	for (k = 0; k < count; k++) {
		uint64_t seq = 0;

		for (i = 0; i < n; i++)
			if (mine[i].origin == theirs[k].origin)
				seq = mine[i].seq;
		if (theirs[k].seq > seq && !ahead) {
			note(c,
			     "peer %s is ahead of this node (origin %016" PRIx64 ": %" PRIu64
			     " there, %" PRIu64 " here): some differences are events this node "
			     "fetches when it starts",
			     c->res->peer, theirs[k].origin, theirs[k].seq, seq);
			ahead = 1;
		}
	}
	return ok;
}

static int link_declined(struct snap_check *c, const struct snap_plan *plan, size_t i);

void snap_check_no_room(struct snap_check *c, uint64_t need, uint64_t room)
{
	c->need = need;
	c->room = room;
}

int snap_check_end(struct snap_check *c, const struct evid *vec, uint32_t count,
		   const struct snap_plan *plan, struct snap_plan *accepted)
{
	int fixable = 0, rv = 0;
	size_t i;

	if (c->n) {
		rv = positions(c, vec, count);
		if (rv < 0)
			return rv;
		fixable = rv;
		if (fixable && c->need && c->o->repair) {
			note(c,
			     "a repair needs at least %" PRIu64
			     " MiB free in %s/%s to stage what it "
			     "fetches, %" PRIu64
			     " MiB are: nothing can be repaired until there is room",
			     (c->need + (1u << 20) - 1) >> 20, c->o->node_dir, SNAP_DIR,
			     c->room >> 20);
			fixable = 0;
		}
	}
	for (i = 0; i < c->n; i++) {
		struct diff *x = &c->v[i];

		if (x->fd >= 0) {
			close(x->fd);
			x->fd = -1;
		}
		if (!x->d.kind)
			x->d.kind = x->d.what & (PEER_DIFF_TYPE | PEER_DIFF_DATA) || !x->d.what
					? PEER_DIFF_CONTENT
					: PEER_DIFF_METADATA;
		x->d.xattrs = x->xattrs;
		c->res->differences++;
		x->accepted = c->ops->found(c->ops->arg, &x->d, fixable) && fixable && c->o->repair;
	}
	for (i = 0; i < c->n; i++) {
		struct diff *x = &c->v[i];

		if (!x->accepted)
			continue;
		c->res->accepted++;
		if ((x->d.kind == PEER_DIFF_EXTRA || x->d.kind == PEER_DIFF_CONTENT) &&
		    !path_is_root(x->path) && c->ops->keep) {
			rv = c->ops->keep(c->ops->arg, &x->d);
			if (rv < 0) {
				x->accepted = 0;
				c->ops->fixed(c->ops->arg, &x->d, rv);
			}
		}
	}
	rv = 0;
	for (i = 0; rv == 0 && i < plan->n; i++) {
		struct diff *x = step_diff(c, (uint32_t)i);

		if (!x || !x->accepted || link_declined(c, plan, i))
			continue;
		rv = grow_array(&c->acc_diff, &c->acc_cap, accepted->n + 1);
		if (rv == 0)
			rv = snap_plan_add(accepted, &plan->v[i]);
		if (rv == 0)
			c->acc_diff[accepted->n - 1] = (size_t)(x - c->v);
	}
	if (rv == 0 && c->o->repair && !accepted->n)
		atomic_store(&c->prog->phase, PEER_CHECK_DONE);
	else if (rv == 0 && accepted->n)
		atomic_store(&c->prog->phase, PEER_CHECK_REPAIRING);
	/* A difference left with none of its steps is not repaired at all. */
	for (i = 0; rv == 0 && i < c->n; i++) {
		struct diff *x = &c->v[i];
		size_t k;

		if (!x->accepted || !x->dropped)
			continue;
		for (k = 0; k < accepted->n && c->acc_diff[k] != i; k++)
			;
		if (k == accepted->n) {
			x->accepted = 0;
			c->ops->fixed(c->ops->arg, &x->d, -ECANCELED);
		}
	}
	return rv;
}

/*
 * Is step i of plan a LINK to a name whose own difference is not repaired
 * (declined, or its keep() failed)?  Installing it would link the old
 * contents under the new name, or fail for a target that is not there:
 * the step is left out, said in a note, and its difference marked.
 */
static int link_declined(struct snap_check *c, const struct snap_plan *plan, size_t i)
{
	const struct snap_step *st = &plan->v[i];
	struct diff *x = step_diff(c, (uint32_t)i), *t;
	size_t k;

	if (st->op != SNAP_OP_LINK || !st->link_to)
		return 0;
	/* The target's step comes first; a target no step names is unchanged here. */
	for (k = i; k-- > 0;)
		if (plan->v[k].op == SNAP_OP_OBJ && !strcmp(plan->v[k].path, st->link_to))
			break;
	if (k == SIZE_MAX)
		return 0;
	t = step_diff(c, (uint32_t)k);
	if (t && t->accepted)
		return 0;
	x->dropped = 1;
	note(c, "not linking %s to %s: %s is not repaired, so the link would show its old contents",
	     st->path, st->link_to, st->link_to);
	return 1;
}

/* Make what keep() put aside durable before the install can replace it in the store. */
static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rv = 0;

	if (fd < 0)
		return -errno;
	if (syncfs(fd) < 0)
		rv = -errno;
	close(fd);
	return rv;
}

int snap_check_install(struct snap_check *c, struct snap_stage *stage,
		       const struct snap_plan *accepted)
{
	const char *why = NULL, *path = NULL;
	size_t done = 0, i;
	int rv, begun = 0, left = 0;

	rv = sync_dir(c->o->node_dir);
	if (rv < 0) {
		why = "cannot sync what was kept aside";
		goto report;
	}
	/*
	 * The plan and the journal's mark first, as a resync's install: a stop
	 * in the middle leaves a store the node's next start finishes from
	 * the plan, with nothing of ours lost (keep() linked it aside).
	 */
	rv = snap_plan_save(stage, accepted);
	if (rv < 0) {
		why = "cannot save the install plan";
		goto report;
	}
	rv = node_snap_repair_begin(c->o->journal);
	if (rv < 0) {
		why = "cannot record the install in the journal";
		goto report;
	}
	begun = 1;
	rv = snap_install(c->o->node_dir, c->o->store_root, accepted, NULL, NULL, &why, &path);
	for (done = 0; rv < 0 && done < accepted->n && accepted->v[done].path != path; done++)
		;
	if (rv < 0 && done == accepted->n)
		done = 0; /* the staging area or the final sync: none is known done */
	if (rv == 0) {
		done = accepted->n;
		rv = node_snap_repair_end(c->o->journal);
		if (rv < 0) {
			why = "installed, but cannot record that in the journal";
			path = NULL;
		}
	}
report:
	if (rv < 0) {
		note(c, "the repair stopped at %s: %s: %s", path ? path : "(end)",
		     why ? why : "install failed", strerror(-rv));
		if (begun)
			note(c,
			     "%s/%s/plan holds the rest: the node finishes it when it starts, "
			     "or a rerun with -y does; what it replaces was kept aside first",
			     c->o->node_dir, SNAP_DIR);
		left = begun;
	}
	for (i = done; i < accepted->n; i++)
		c->v[c->acc_diff[i]].unfinished = 1;
	for (i = 0; i < c->n; i++) {
		struct diff *x = &c->v[i];
		int r = x->unfinished ? rv : x->dropped ? -ECANCELED : 0;

		if (!x->accepted)
			continue;
		c->ops->fixed(c->ops->arg, &x->d, r);
		c->res->repaired += r == 0;
	}
	atomic_store(&c->prog->phase, PEER_CHECK_DONE);
	return left;
}

void snap_check_progress(struct snap_check *c, uint64_t listed, uint64_t bytes, uint64_t round)
{
	atomic_store(&c->prog->listed, listed);
	atomic_store(&c->prog->fetched, bytes);
	c->res->listed = listed;
	c->res->bytes = bytes;
	c->res->rounds = round;
}

/*
 * Which member answered: the id its CA-signed certificate carries, or for
 * a configured peer whose id is not known yet, its CA-signed name.
 */
static int identify(const struct peer_check_opts *o, struct link *l, struct peer_check_result *res,
		    uint64_t *id, char *why, size_t whylen)
{
	char cn[CONFIG_NAME_MAX] = "";
	const char *reason = NULL, *member = NULL;

	if (tls_peer_node_id(l->ssl, id, &reason) < 0) {
		snprintf(why, whylen, "peer at %s: %s", o->address, reason);
		return -EACCES;
	}
	if (tls_peer_name(l->ssl, cn, sizeof(cn)) < 0)
		cn[0] = '\0';
	if (tls_check_member(o->cfg, *id, &member) < 0) {
		for (unsigned i = 0; i < o->cfg->npeers && !member; i++)
			if (!o->cfg->peers[i].id && cn[0] && !strcmp(o->cfg->peers[i].name, cn))
				member = o->cfg->peers[i].name;
	}
	if (!member) {
		snprintf(why, whylen,
			 "%s is node %016" PRIx64 " (%s), not a peer in %s's configuration",
			 o->address, *id, cn[0] ? cn : "no name", o->node_dir);
		return -EACCES;
	}
	snprintf(res->peer, sizeof(res->peer), "%s", member);
	return 0;
}

/* Our HELLO (no term, no primary: a check claims no role), then the peer's. */
static int greet(const struct peer_check_opts *o, struct link *l, const char *peer, uint64_t id,
		 char *why, size_t whylen)
{
	struct evid vec[REPL_MAX_ORIGINS];
	struct proto_hello h = {.node_id = o->cfg->node_id, .applied = vec};
	struct proto_msg m;
	const char *reason = NULL;
	int rv, code;

	rv = applied_vector(o->journal, o->cfg->node_id, vec, &h.count);
	if (rv < 0) {
		snprintf(why, whylen, "%s: cannot read the applied vector: %s", o->node_dir,
			 strerror(-rv));
		return rv;
	}
	memcpy(h.cluster_id, o->cfg->cluster_id, sizeof(h.cluster_id));
	rv = proto_put_hello(&l->out, &h);
	if (rv == 0)
		rv = link_flush(l, REPL_SEND_TIMEOUT_MS);
	if (rv == 0)
		rv = link_recv(l, REPL_HELLO_TIMEOUT_MS, &m);
	if (rv < 0) {
		/* TLS 1.3: the peer's verdict on our certificate arrives here. */
		snprintf(why, whylen, "peer %s (%s): %s", peer, o->address,
			 rv == -EAGAIN ? "no HELLO" : l->why);
		return rv == -EAGAIN ? -ETIMEDOUT : rv;
	}
	if (m.type == PROTO_ERROR) {
		snprintf(why, whylen, "peer %s (%s) refused this node: %s: %.180s", peer,
			 o->address, proto_error_name(m.error.code), m.error.msg);
		proto_msg_free(&m);
		return -EACCES;
	}
	code = hello_check(o->cfg->cluster_id, id, &m, &reason);
	proto_msg_free(&m);
	if (code) {
		snprintf(why, whylen, "peer %s (%s): bad HELLO: %s", peer, o->address, reason);
		repl_send_error(l, (unsigned)code, reason);
		return -EACCES;
	}
	return 0;
}

int peer_check_run(const struct peer_check_opts *o, const struct peer_check_ops *ops,
		   struct peer_check_result *res, char *why, size_t whylen)
{
	struct snap_check c = {.o = o, .ops = ops, .res = res, .prog = o->progress};
	SSL_CTX *ctx = NULL;
	struct link *l = NULL;
	uint64_t id = 0;
	int rv;

	memset(res, 0, sizeof(*res));
	if (!c.prog) {
		memset(&no_progress, 0, sizeof(no_progress));
		c.prog = &no_progress;
	}
	/*
	 * Our tree first, then the link: the peer drops a link that stays
	 * silent for long, and hashing a whole store may take minutes.
	 */
	atomic_store(&c.prog->phase, PEER_CHECK_HASHING);
	rv = merkle_build_progress(o->store_root, &c.prog->hash, &c.tree, &c.entries);
	if (rv < 0) {
		snprintf(why, whylen, "%s: cannot build the store's hash tree: %s", o->node_dir,
			 strerror(-rv));
		goto out;
	}
	res->entries_here = c.entries;
	atomic_store(&c.prog->entries, c.entries);
	atomic_store(&c.prog->phase, PEER_CHECK_CONNECTING);
	rv = tls_ctx_new(o->node_dir, 0, &ctx);
	if (rv < 0) {
		snprintf(why, whylen,
			 "%s: cannot load its certificate, key and CA (%s, %s, %s): %s",
			 o->node_dir, TLS_NODE_CERT, TLS_NODE_KEY, TLS_CA_CERT, strerror(-rv));
		goto out;
	}
	rv = link_dial_from(o->address, o->cfg->listen, ctx, REPL_DIAL_TIMEOUT_MS, &l, why, whylen);
	if (rv < 0)
		goto out;
	rv = identify(o, l, res, &id, why, whylen);
	if (rv == 0)
		rv = greet(o, l, res->peer, id, why, whylen);
	if (rv < 0)
		goto out;
	atomic_store(&c.prog->phase, PEER_CHECK_COMPARING);
	rv = snap_recv_check(l, res->peer, o->node_dir, o->store_root, &c);
	if (rv < 0)
		snprintf(why, whylen, "peer %s (%s): %s", res->peer, o->address,
			 l->why[0] ? l->why : strerror(-rv));
out:
	atomic_store(&c.prog->phase, PEER_CHECK_DONE);
	link_close(l);
	SSL_CTX_free(ctx);
	snap_check_round(&c);
	free(c.v);
	free(c.step_diff);
	free(c.acc_diff);
	free(c.buf);
	merkle_free(c.tree);
	return rv;
}
