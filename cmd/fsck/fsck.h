/*
 * fsck.h - state shared by the passes of fsck.ledgerfs.
 *
 * fsck.c drives the run: it parses options, makes sure nobody else holds
 * the node, opens the journal (a private copy of it under -n, because
 * LevelDB writes even when it is only read) and prints the summary.  The
 * passes report what they find through fsck_problem(), which also decides,
 * from -n, -y or the answer typed at the terminal, whether a problem is
 * fixed, and counts both, so the exit code follows from the two counts.
 *
 *   fsck_journal.c  records, seq continuity, applied marks, checkpoints,
 *                   the unapplied tail
 *   fsck_store.c    the reference store, fids, the store against it
 *   fsck_tree.c     a tree as a sorted list of digest lines, stats and fids
 *   fsck_copy.c     copying one entry from the reference into the store and
 *                   moving entries aside to lost+found
 */
#ifndef LEDGERFS_TOOLS_FSCK_H
#define LEDGERFS_TOOLS_FSCK_H

#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>

#include "lib/config.h"
#include "journal/journal_copy.h"
#include "store/store.h"

/* Exit codes, as e2fsck's. */
#define FSCK_EXIT_CLEAN	    0
#define FSCK_EXIT_FIXED	    1
#define FSCK_EXIT_UNFIXED   4
#define FSCK_EXIT_OPERATION 8

#define FSCK_LOST_FOUND "lost+found"

enum fsck_mode {
	FSCK_MODE_NO,  /* -n, or no terminal to ask on: report only, write nothing */
	FSCK_MODE_ASK, /* ask before each fix */
	FSCK_MODE_YES, /* -y */
};

/* What the journal pass learnt about one origin's events. */
struct fsck_origin {
	uint64_t origin;
	uint64_t last;	  /* highest seq journaled */
	uint64_t applied; /* the applied mark */
};

struct fsck {
	const char *dir;     /* NODE_DIR as given, for messages */
	char real[PATH_MAX]; /* its real path */
	enum fsck_mode mode;
	int verbose;
	int progress; /* stderr is a terminal: show progress lines */
	struct config cfg;
	struct journal *j;	      /* NODE_DIR's journal, or under -n snap's copy of it */
	struct journal_copy snap; /* under -n: the private copy of the journal */
	char *tmp;		      /* private directory under $TMPDIR, removed at the end */
	struct fsck_origin *origins;  /* sorted by origin */
	size_t norigins, origins_cap;
	uint64_t events;     /* records in the journal */
	int tail_left;	     /* events above the applied marks were not replayed */
	int replay_blocked;  /* bad records or gaps left that a replay cannot pass */
	char *lost;	     /* NODE_DIR/lost+found/<time>, made on first use */
	const char *against; /* --against HOST:PORT, or NULL */
	char peer[CONFIG_NAME_MAX]; /* --against: the peer's name, once it answered */
	uint64_t peer_entries;	    /* --against: entries of our store compared */
	unsigned long found; /* problems found */
	unsigned long fixed; /* of those, fixed */
};

/*
 * Report one problem: prints "<what>" on one line of stdout.  fix says what
 * fixing it would do, or is NULL when it cannot be fixed.  Returns 1 when
 * the caller must fix it now (-y, or the answer at the terminal was yes),
 * then reports the outcome with fsck_fix_done(); 0 otherwise.
 */
int fsck_problem(struct fsck *f, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The outcome of a fix fsck_problem() asked for: r is 0 or a negative errno. */
void fsck_fix_done(struct fsck *f, int r);

/* One line of information, shown with -v only. */
void fsck_info(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress of a long phase on a terminal: an updating line, cleared by fsck_progress_end(). */
void fsck_progress(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fsck_progress_end(struct fsck *f);

/* The fsck_origin of origin, added (zeroed) when new; NULL when out of memory. */
struct fsck_origin *fsck_origin_get(struct fsck *f, uint64_t origin);

/* Checks 1-3: records, seq continuity, applied marks, next seq, checkpoints. */
int fsck_check_journal(struct fsck *f);

/* Check 4: the events above the applied marks; replays them when allowed. */
int fsck_check_tail(struct fsck *f);

/* Checks 5-6: store fids and the store against a replay of the journal. */
int fsck_check_store(struct fsck *f);

/*
 * --against: the store against a live peer's by hash tree, repairs taken
 * from the peer (fsck_peer.c, over repl/peer_check.h).
 */
int fsck_check_peer(struct fsck *f);

/* Trees as lists of entries (fsck_tree.c). */

/* One entry of a tree: a line of its digest listing, with its stat and fid. */
struct fsck_entry {
	char *path;	   /* relative, unescaped, "." for the root; owned */
	const char *esc;   /* path as the listing escapes it, for messages; in tree.buf */
	const char *attrs; /* "HASH TYPE MODE UID:GID SIZE MTIME"; in tree.buf */
	struct stat st;
	struct fid fid;
	int has_fid;
	int fid_reported; /* check 5 spoke about its fid already */
};

/* A tree: a store or the reference.  dir, store and the entries are owned. */
struct fsck_tree {
	char *dir;
	struct store *store;
	struct fsck_entry *v;
	size_t n;
	char *buf; /* the listing, cut into the fields entries point at */
	size_t len;
};

/*
 * List every entry of t (t->dir, open as t->store) with its digest line,
 * stat and fid, sorted with fsck_path_cmp().  Freed with fsck_tree_free().
 */
int fsck_tree_load(struct fsck *f, struct fsck_tree *t);
/* Drop the listing and keep t->dir and t->store, for another fsck_tree_load(). */
void fsck_tree_unload(struct fsck_tree *t);
void fsck_tree_free(struct fsck_tree *t);

/* The entry of t at path, or NULL. */
struct fsck_entry *fsck_tree_find(struct fsck_tree *t, const char *path);

/* Fill e's stat and fid from the object at e->path beneath t's root. */
int fsck_entry_load(struct fsck_tree *t, struct fsck_entry *e);

/* The digest's walk order: the root first, then bytes with '/' lowest. */
int fsck_path_cmp(const char *a, const char *b);

/* Copying from the reference into the store (fsck_copy.c). */

/*
 * Make the object at (dst_dir, dst_name) carry the owner, mode, xattrs
 * (all of them, trusted.ledgerfs.* included) and, for regular files,
 * contents and times of the object at (src_dir, src_name), whose stat is
 * st.  Both must be of the same type.
 */
int fsck_copy_over(int src_dir, const char *src_name, const struct stat *st, int dst_dir,
		   const char *dst_name);

/* Create (dst_dir, dst_name), absent, as a copy of (src_dir, src_name) (see fsck_copy_over). */
int fsck_copy_new(int src_dir, const char *src_name, const struct stat *st, int dst_dir,
		  const char *dst_name);

/*
 * Move store entry rel (beneath the store root fd) to
 * NODE_DIR/lost+found/<time>/rel, making the directories on the way.
 */
int fsck_move_lost(struct fsck *f, int store_root, const char *rel);

/*
 * Keep store entry rel as NODE_DIR/lost+found/<time>/rel without changing
 * the store: hard links of its non-directories (copies when lost+found is
 * on another filesystem), its directories made anew with their owner, mode
 * and xattrs.  What a later change replaces in the store stays there.
 */
int fsck_link_lost(struct fsck *f, int store_root, const char *rel);

/* Copy store entry rel to NODE_DIR/lost+found/<time>/rel, before it is overwritten. */
int fsck_save_lost(struct fsck *f, int store_root, const char *rel);

#endif
