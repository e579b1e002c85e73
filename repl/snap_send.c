/*
 * snap_send.c - the sending side of a snapshot resync, on an inbound link.
 *
 * A peer that lacks events we (or every member) trimmed asks for a
 * snapshot: we build the hash tree of our store under the node lock, so
 * that the tree is the store exactly at the applied vector we read with
 * it (no event is applied meanwhile), and answer the peer's questions from
 * that tree.  Directories are sent as the tree captured them.  A file's
 * contents cannot be kept, so they are read when asked for: if the path no
 * longer holds the file the tree had (same fid), we say so and the peer
 * runs another round; otherwise the file is sent as it is now, with the
 * version it has now, read before the contents, so the peer's replay
 * from the tree's position skips exactly what the file already shows.
 * The vector at the end of the round (SNAP_END) bounds that replay.
 *
 * Contents stream in SNAP_DATA frames, flushed as they go, so a large file
 * never sits whole in memory.
 *
 * A heal (SNAP_SCOPE) asks the same of one directory: the tree is built
 * of that subtree alone, and every path of the round is relative to it.
 * Its files are read in full, without the digest cache of whole-store
 * builds, which keeps exactly one build's files.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "resync/merkle.h"
#include "store/path.h"
#include "repl_int.h"

/* Flush the link once this much is queued, so a big file streams. */
#define SNAP_SEND_FLUSH (4u << 20)
#define SNAP_TREE_TRIES 3 /* walks while objects move before one under the node lock */

struct snap_send {
	struct merkle *tree;
	int scope_fd; /* the directory of a SNAP_SCOPE round, else -1: the store root */
	uint64_t round;
	uint64_t sent_files, sent_bytes, changed;
	int64_t started_ms;
	int64_t round_ms; /* when the round's SNAP_BEGIN came */
};

int snap_send_active(const struct snap_send *ss)
{
	return ss && ss->tree;
}

void snap_send_free(struct snap_send *ss)
{
	if (!ss)
		return;
	merkle_free(ss->tree);
	if (ss->scope_fd >= 0)
		close(ss->scope_fd);
	free(ss);
}

/*
 * Our applied vector, sorted by origin, into vec (REPL_MAX_ORIGINS entries).
 * Each event it counts is applied; later ones may be too.
 */
static uint32_t applied_vector(struct repl *r, struct evid *vec)
{
	unsigned i, n;

	pthread_mutex_lock(&r->lock);
	n = r->norigins;
	for (i = 0; i < n; i++) {
		vec[i].origin = r->origins[i];
		vec[i].seq = journal_applied(node_journal(r->n), r->origins[i]);
	}
	pthread_mutex_unlock(&r->lock);
	qsort(vec, n, sizeof(*vec), repl_evid_cmp);
	return n;
}

/*
 * The tree of a round and the position it is at least at.  Built without
 * the node lock, so writers go on: the store may move on during the walk,
 * as it may before a file is sent.  vec is read first, and every event it
 * counts is applied, so the tree shows the store at vec or later, which
 * the receiver tolerates up to the position it is given at the end (it
 * counts an event whose change it finds made as applied).  What it cannot
 * tolerate is an object that moved between a part of the tree walked
 * already and one not yet walked (seen twice, or not at all), so a walk
 * during which a rename or link began is done again, and after
 * SNAP_TREE_TRIES such walks once under the node lock.
 */
static int build_tree(struct repl *r, struct snap_send *ss, const char *scope,
		      struct evid *vec, uint32_t *n, uint64_t *entries)
{
	unsigned attempt;
	uint64_t moves;
	int rv, locked;

	for (attempt = 0;; attempt++) {
		locked = attempt >= SNAP_TREE_TRIES;
		if (locked)
			node_lock(r->n);
		moves = store_moves(node_store(r->n));
		*n = applied_vector(r, vec);
		if (ss->scope_fd >= 0)
			close(ss->scope_fd);
		ss->scope_fd = -1;
		if (!scope) {
			rv = repl_build_tree(r, &ss->tree, entries);
		} else {
			rv = path_open(node_store(r->n)->root, scope,
				       O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, &ss->scope_fd);
			if (rv == 0)
				rv = merkle_build(ss->scope_fd, &ss->tree, entries);
		}
		if (locked)
			node_unlock(r->n);
		if (locked || rv < 0 || store_moves(node_store(r->n)) == moves)
			return rv;
		log_debug("hash tree: objects moved during the walk; walking again");
		merkle_free(ss->tree);
		ss->tree = NULL;
	}
}

/*
 * Build the tree of a round: of the whole store, or with scope of the
 * directory there (SNAP_SCOPE).  A scope that is not a directory here
 * gets SNAP_INFO with no entries, and no tree.
 */
static int begin(struct repl *r, struct link *l, struct snap_send **ssp, uint64_t round,
		 const char *scope, const char *peer)
{
	struct evid vec[REPL_MAX_ORIGINS];
	struct snap_send *ss = *ssp;
	uint64_t entries = 0;
	int64_t t0 = clock_mono_ms();
	uint32_t n;
	int rv;

	if (!ss) {
		ss = calloc(1, sizeof(*ss));
		if (!ss)
			return -ENOMEM;
		ss->started_ms = clock_mono_ms();
		ss->scope_fd = -1;
		*ssp = ss;
	}
	merkle_free(ss->tree);
	ss->tree = NULL;
	if (ss->scope_fd >= 0)
		close(ss->scope_fd);
	ss->scope_fd = -1;
	ss->round = round;
	ss->round_ms = t0;
	rv = build_tree(r, ss, scope, vec, &n, &entries);
	if (scope && (rv == -ENOENT || rv == -ENOTDIR || rv == -ELOOP)) {
		log_info("heal for peer %s: %s is not a directory here", peer, scope);
		return proto_put_snap_vec(&l->out, PROTO_SNAP_INFO, round, 0, vec, n);
	}
	if (rv < 0) {
		snprintf(l->why, sizeof(l->why), "cannot build the hash tree of %.200s: %s",
			 scope ? scope : "the store", strerror(-rv));
		return rv;
	}
	log_info("%s for peer %s: round %" PRIu64 ", hash tree of %" PRIu64
		 " entries of %s built in %.1f s",
		 scope ? "heal" : "snapshot", peer, round, entries, scope ? scope : "the store",
		 (double)(clock_mono_ms() - t0) / 1000.0);
	return proto_put_snap_vec(&l->out, PROTO_SNAP_INFO, round, entries, vec, n);
}

static int list(struct link *l, struct snap_send *ss, const char *path)
{
	const struct merkle_entry *e;
	size_t len;
	uint8_t *buf;
	int rv;

	rv = merkle_find(ss->tree, path, &e);
	if (rv == 0 && !e->dir)
		rv = -ENOTDIR;
	if (rv < 0) {
		snprintf(l->why, sizeof(l->why), "peer asked for the listing of %.200s: %s", path,
			 strerror(-rv));
		return rv;
	}
	len = merkle_dir_encoded_len(e->dir);
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	rv = merkle_dir_encode(e->dir, buf, len, &len);
	if (rv == 0)
		rv = proto_put_snap_dir(&l->out, path, buf, len);
	free(buf);
	return rv;
}

/* A directory, as the tree captured it. */
static int send_dir(struct link *l, uint32_t id, const struct merkle_entry *e)
{
	struct snap_meta m = {
	    .mode = e->dir->mode,
	    .uid = e->dir->uid,
	    .gid = e->dir->gid,
	    .fid = e->dir->fid,
	    .xattrs = e->dir->xattrs,
	    .xattrs_len = e->dir->xattrs_len,
	};

	return proto_put_snap_entry(&l->out, id, SNAP_ENTRY_OK, &m);
}

/* Stream size bytes of fd as DATA frames; a file that shrank meanwhile is padded with zeros. */
static int send_contents(struct link *l, struct snap_send *ss, uint32_t id, int fd, uint64_t size)
{
	uint64_t off = 0;
	int rv = 0;

	while (off < size && rv == 0) {
		size_t want =
		    size - off > PROTO_SNAP_DATA_MAX ? PROTO_SNAP_DATA_MAX : (size_t)(size - off);
		uint8_t *dst;
		ssize_t got;

		rv = proto_put_snap_data(&l->out, id, off, want, &dst);
		if (rv < 0)
			break;
		got = pread(fd, dst, want, (off_t)off);
		if (got < 0) {
			rv = -errno;
			snprintf(l->why, sizeof(l->why), "cannot read a file to send: %s",
				 strerror(-rv));
			break;
		}
		/* The replay of later events brings a file that changed under us right. */
		if ((size_t)got < want)
			memset(dst + got, 0, want - (size_t)got);
		off += want;
		ss->sent_bytes += want;
		if (l->out.len >= SNAP_SEND_FLUSH)
			rv = link_flush(l, REPL_SEND_TIMEOUT_MS);
	}
	return rv;
}

static int get(struct repl *r, struct link *l, struct snap_send *ss, uint32_t id, const char *path)
{
	const struct merkle_entry *e;
	struct snap_meta m = {0};
	int fd = -1, rv;

	rv = merkle_find(ss->tree, path, &e);
	if (rv < 0) {
		snprintf(l->why, sizeof(l->why), "peer asked for %.200s, not in the tree: %s", path,
			 strerror(-rv));
		return rv;
	}
	if (e->dir)
		return send_dir(l, id, e);
	rv = snap_read_entry(ss->scope_fd >= 0 ? ss->scope_fd : node_store(r->n)->root, path, &m, &fd);
	if (rv == -ENOENT || rv == -ENOTDIR ||
	    (rv == 0 && (!fid_eq(m.fid, e->fid) || (m.mode & S_IFMT) != (e->mode & S_IFMT)))) {
		ss->changed++;
		rv = proto_put_snap_entry(&l->out, id, SNAP_ENTRY_CHANGED, NULL);
		goto out;
	}
	if (rv < 0) {
		snprintf(l->why, sizeof(l->why), "cannot read %.200s to send: %s", path,
			 strerror(-rv));
		goto out;
	}
	rv = proto_put_snap_entry(&l->out, id, SNAP_ENTRY_OK, &m);
	if (rv == 0 && fd >= 0)
		rv = send_contents(l, ss, id, fd, m.size);
	ss->sent_files++;
out:
	if (fd >= 0)
		close(fd);
	snap_meta_free(&m);
	return rv;
}

static int done(struct repl *r, struct link *l, struct snap_send *ss, uint64_t round,
		const char *peer)
{
	struct evid vec[REPL_MAX_ORIGINS];
	uint32_t n;

	node_lock(r->n);
	n = applied_vector(r, vec);
	node_unlock(r->n);
	log_info("snapshot for peer %s: round %" PRIu64 " done in %.1f s, %" PRIu64
		 " entries sent (%" PRIu64 " bytes of contents), %" PRIu64 " changed meanwhile",
		 peer, round, (double)(clock_mono_ms() - ss->round_ms) / 1000.0, ss->sent_files,
		 ss->sent_bytes, ss->changed);
	ss->sent_files = ss->sent_bytes = ss->changed = 0;
	merkle_free(ss->tree);
	ss->tree = NULL;
	return proto_put_snap_vec(&l->out, PROTO_SNAP_END, round, 0, vec, n);
}

int snap_send_frame(struct repl *r, struct link *l, struct snap_send **ss,
		    const struct proto_msg *m, const char *peer)
{
	if (m->type != PROTO_SNAP_BEGIN && m->type != PROTO_SNAP_SCOPE && (!*ss || !(*ss)->tree)) {
		snprintf(l->why, sizeof(l->why), "%s without a snapshot begun",
			 proto_type_name(m->type));
		repl_send_error(l, PROTO_ERR_MALFORMED, l->why);
		return -EPROTO;
	}
	switch (m->type) {
	case PROTO_SNAP_BEGIN:
		return begin(r, l, ss, m->round, NULL, peer);
	case PROTO_SNAP_SCOPE:
		return begin(r, l, ss, m->snap_path.id, m->snap_path.path, peer);
	case PROTO_SNAP_LIST:
		return list(l, *ss, m->snap_path.path);
	case PROTO_SNAP_GET:
		return get(r, l, *ss, m->snap_path.id, m->snap_path.path);
	default:
		return done(r, l, *ss, m->round, peer);
	}
}
