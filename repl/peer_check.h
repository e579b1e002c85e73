/*
 * peer_check.h - compare a stopped node's store with a live peer's, and
 * repair it from the peer (fsck.ledgerfs NODE_DIR --against HOST:PORT).
 *
 * Nothing here is new machinery: the comparison is a snapshot resync's
 * (snap_recv.c), run without a daemon.  The node dials the peer with its
 * own certificate, both sides build the hash tree of their store
 * (merkle.h), and the top-down diff asks the peer for the listings of the
 * directories whose digests differ.  Where the same name is on both sides
 * the peer's entry is fetched (SNAP_GET) and compared with ours field by
 * field, so each difference can be named: missing, extra, content or
 * metadata.  Our tree is built reading every file: a byte changed behind
 * ledgerfs's back, with its mtime put back, is found all the same.
 *
 * With repair set, the entries fetched are staged under NODE_DIR/snap/ as
 * a resync stages them (fid and version xattrs included, so the store
 * stays consistent with the journal's view of the peer), and the steps of
 * the differences the caller accepts are installed with snap_install()
 * through a plan saved in NODE_DIR/snap/ and recorded in the journal
 * (node_snap_repair_begin()) first, so that an install cut short is
 * finished by the node's next start or the next repairing check.
 * The applied vector is left alone, as a heal leaves it: the versions the
 * installed objects carry tell the apply engine which later events they
 * already show.  A repair is refused (every difference reported as not
 * fixable) when the peer lacks events this node applied, since taking its
 * version would drop them.
 *
 * The node must be stopped: nothing here takes the node lock, and our
 * HELLO claims no term, so the check changes nothing on the peer.
 */
#ifndef LEDGERFS_PEER_CHECK_H
#define LEDGERFS_PEER_CHECK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "journal/journal.h"
#include "lib/config.h"
#include "resync/merkle.h"

enum peer_diff_kind {
	PEER_DIFF_MISSING = 1, /* the peer has it, we do not */
	PEER_DIFF_EXTRA,       /* we have it, the peer does not */
	PEER_DIFF_CONTENT,     /* type, contents, symlink target or device differ */
	PEER_DIFF_METADATA,    /* only what PEER_DIFF_MODE ... _XATTRS say */
};

/* What differs, in struct peer_diff's what. */
#define PEER_DIFF_TYPE	 0x01 /* the file type */
#define PEER_DIFF_DATA	 0x02 /* contents, symlink target or device number */
#define PEER_DIFF_MODE	 0x04 /* permission bits */
#define PEER_DIFF_OWNER	 0x08 /* uid or gid */
#define PEER_DIFF_MTIME	 0x10 /* regular files only: directory mtimes are not compared */
#define PEER_DIFF_XATTRS 0x20 /* xattrs, ledgerfs's fid and version ones included */

/* One difference, as reported to the caller; valid during the call only. */
struct peer_diff {
	enum peer_diff_kind kind;
	const char *path;		/* store path, "." for the root */
	unsigned what;			/* PEER_DIFF_* bits, for CONTENT and METADATA */
	uint32_t mode_here, mode_there; /* st_mode; 0 on the side that lacks it */
	uint64_t size_here, size_there; /* regular file: size; symlink: target length */
	uint32_t uid_here, gid_here, uid_there, gid_there;
	int64_t mtime_here, mtime_there; /* ns since the epoch, regular files */
	const char *xattrs; /* names of the xattrs that differ, ", " between; NULL if none */
};

enum peer_check_phase {
	PEER_CHECK_HASHING = 0, /* building our tree, before the peer is dialled */
	PEER_CHECK_CONNECTING,
	PEER_CHECK_COMPARING, /* the peer's tree, the diff and the transfer of what differs */
	PEER_CHECK_REPAIRING, /* installing */
	PEER_CHECK_DONE,
};

/*
 * Figures another thread may read while peer_check_run() runs (a progress
 * display).  The caller zeroes it; the check only stores into it.
 */
struct peer_check_progress {
	atomic_int phase;		       /* enum peer_check_phase */
	struct merkle_progress hash;	       /* our tree's build */
	atomic_uint_least64_t entries;	       /* entries in our tree, once built */
	atomic_uint_least64_t peer_entries;    /* entries in the peer's tree, once it said */
	atomic_uint_least64_t listed;	       /* the peer's listings compared */
	atomic_uint_least64_t found;	       /* differences found so far (this round) */
	atomic_uint_least64_t fetched, wanted; /* contents bytes received, and asked for */
};

struct peer_check_opts {
	const char *node_dir;	  /* its node.crt, node.key and ca.crt; its snap/ for a repair */
	const struct config *cfg; /* NODE_DIR's configuration: cluster, members, listen */
	struct journal *journal;  /* NODE_DIR's journal (or a copy without repair): the applied
				     vector; a repair records its install there */
	int store_root;		  /* the store's root directory, open; stays the caller's */
	const char *address;	  /* the peer, "HOST:PORT" */
	int repair;		  /* stage what differs and install what found() accepts */
	struct peer_check_progress *progress; /* may be NULL */
};

struct peer_check_ops {
	void *arg;
	/* A remark for the person running the check (one line, no newline). */
	void (*note)(void *arg, const char *text);
	/*
	 * A difference, once the last round found the peer's tree steady.
	 * fixable: the peer's version may be taken (the peer holds every
	 * event this node applied).  Return 1 to have it repaired (only done
	 * with o->repair), 0 to leave it.
	 */
	int (*found)(void *arg, const struct peer_diff *d, int fixable);
	/*
	 * Before a repair replaces or removes what we have (EXTRA, CONTENT):
	 * the caller may keep a copy of it aside, without changing the store
	 * (the install may stop before it replaces it).  0 to go on, or a
	 * negative errno that leaves this difference unrepaired.  May be NULL.
	 */
	int (*keep)(void *arg, const struct peer_diff *d);
	/* The outcome of a repair found() asked for: r is 0 or a negative errno. */
	void (*fixed)(void *arg, const struct peer_diff *d, int r);
};

struct peer_check_result {
	char peer[CONFIG_NAME_MAX]; /* the peer's name in our configuration */
	uint64_t entries_here, entries_there;
	uint64_t differences; /* reported through found() */
	uint64_t accepted;    /* of those, found() asked to repair */
	uint64_t repaired;    /* and were */
	uint64_t listed;      /* listings asked of the peer, last round */
	uint64_t bytes;	      /* contents received, every round */
	uint64_t rounds;
};

/*
 * Run the check (and the repair) described by o, reporting through ops.
 * 0 with *res filled, whatever was found; or a negative errno when the
 * check could not be made (the peer unreachable, refused, not a member,
 * the store unreadable, out of memory), with why (whylen bytes) naming the
 * peer or the path.  A repair whose install fails is reported through
 * fixed() and note(), not here.
 */
int peer_check_run(const struct peer_check_opts *o, const struct peer_check_ops *ops,
		   struct peer_check_result *res, char *why, size_t whylen);

#endif
