/*
 * cmd_restore.c - "ledgerctl restore": rebuild a store from a backup
 * repository (backup/repo.h).
 *
 * The newest backup's files are laid down in TARGET_DIR/store: directories,
 * files (copied from their blobs, each checked against its SHA-256 as it
 * is copied, through a temp name and a rename), hard links, symlinks and
 * special files, then every object's xattrs (ledgerfs's fid and version
 * among them), owner, mode and times, directories' times last.  Then the
 * events the backup carries are replayed leniently (backup/events.h),
 * which takes the store to the backup's position.  With --delta an
 * existing store is brought to the backup: names the backup lacks are
 * removed, files whose contents match are kept, and only what differs is
 * rewritten.  With --node the target is a node directory made by
 * 'ledgerctl init' whose journal holds nothing yet: after the restore its
 * applied vector is the backup's position, so when it starts it catches up
 * from its peers from there, as after a snapshot resync.
 *
 * A corrupt manifest, events blob or file blob is refused, naming it, and
 * nothing more is written.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/events.h"
#include "backup/repo.h"
#include "cmd.h"
#include "lib/config.h"
#include "lib/files.h"
#include "lib/progress.h"
#include "lib/treewalk.h"
#include "node/node.h"
#include "store/xattr_at.h"

#define RESTORE_IO     (1u << 20)
#define RESTORE_TMP    ".ledgerfs-restore.tmp"
#define RESTORE_ERR    (3 * PATH_MAX)
#define RESTORE_XLIST  65536

struct restore {
	const char *repo_dir, *target, *node_name, *backup_name;
	int delta;
	struct repo *repo;
	struct manifest m;
	char mname[256];
	char store[PATH_MAX];
	int root; /* O_RDONLY descriptor of the store */
	size_t *sorted; /* --delta: the manifest's entries sorted by path */
	uint8_t *buf;
	struct progress prog;
	uint64_t files_written, files_kept, bytes_written, removed;
	char err[RESTORE_ERR];
};

static void restore_usage(FILE *out)
{
	fputs("usage: ledgerctl restore REPO TARGET_DIR [--delta] [--node NAME] [--backup NAME]\n"
	      "\n"
	      "Rebuild a store from the newest backup in REPO (or the one named) into\n"
	      "TARGET_DIR/store: its files are laid down, then the events that ran while\n"
	      "the backup was taken are replayed, so the store is the source's store at\n"
	      "the backup's journal position.  Every blob is checked against its SHA-256\n"
	      "and the manifest against its checksum; a corrupt one is refused, named.\n"
	      "\n"
	      "  --delta        TARGET_DIR/store exists: rewrite only what differs from the\n"
	      "                 backup, remove what the backup lacks\n"
	      "  --node NAME    TARGET_DIR is a node directory made by 'ledgerctl init --name\n"
	      "                 NAME' (with the cluster's CA and peers) that has applied\n"
	      "                 nothing yet: afterwards it starts at the backup's position and\n"
	      "                 catches up from its peers (add it to their membership with\n"
	      "                 'ledgerctl peer add')\n"
	      "  --backup NAME  restore that backup ('ledgerctl backup list REPO') instead of\n"
	      "                 the newest\n"
	      "  -h, --help     this help\n"
	      "\n"
	      "On a terminal a progress line goes to stderr; a summary line at the end.\n"
	      "Exit status: 0 restored, 1 failed (a corrupt repository among the causes),\n"
	      "2 usage error.\n",
	      out);
}

/* ---- helpers -------------------------------------------------------------- */

/* The entry named path, by binary search over rs->sorted (indices sorted by path), or NULL. */
static const struct manifest_entry *find_entry(struct restore *rs, const char *path)
{
	size_t lo = 0, hi = rs->m.n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(rs->m.e[rs->sorted[mid]].path, path);

		if (c == 0)
			return &rs->m.e[rs->sorted[mid]];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int cmp_index(const void *a, const void *b, void *arg)
{
	const struct manifest *m = arg;

	return strcmp(m->e[*(const size_t *)a].path, m->e[*(const size_t *)b].path);
}

/* The path relative to the store root for *at calls: "." for the root. */
static const char *at_path(const char *p)
{
	return p[0] ? p : ".";
}

/* Remove name in dfd, a whole tree if it is a directory.  0 or -errno. */
static int remove_tree(int dfd, const char *name)
{
	struct treewalk tw = {0};
	int r;

	if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	r = treewalk_open(&tw, dfd, name, O_NOFOLLOW);
	while (r == 0) {
		/* Empty the directory the walk is in, going down into subdirectories. */
		int fd = dup(tw.fd);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;
		char sub[256] = "";

		if (!d) {
			if (fd >= 0)
				close(fd);
			r = -errno;
			break;
		}
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (unlinkat(tw.fd, de->d_name, 0) == 0)
				continue;
			if (errno == EISDIR || errno == EPERM) {
				snprintf(sub, sizeof(sub), "%s", de->d_name);
				break;
			}
			r = -errno;
			break;
		}
		closedir(d);
		if (r < 0)
			break;
		if (sub[0]) {
			if (unlinkat(tw.fd, sub, AT_REMOVEDIR) == 0)
				continue;
			r = treewalk_down(&tw, sub);
			continue;
		}
		if (tw.depth == 0)
			break;
		r = treewalk_up(&tw);
	}
	treewalk_close(&tw);
	if (r == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = -errno;
	return r;
}

/* --delta: remove what the backup lacks or has as another type. */
static int prune_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		       size_t index, size_t count, void *dir, void **sub)
{
	struct restore *rs = tw->arg;
	const char *path = relpath_str(&tw->path);
	const struct manifest_entry *e = find_entry(rs, path);
	int r;

	if (e && (e->mode & S_IFMT) == (st->st_mode & S_IFMT))
		return S_ISDIR(st->st_mode) ? TREEWALK_DESCEND : 0;
	r = remove_tree(dfd, name);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "%s/%s: cannot remove: %s", rs->store, path,
			 strerror(-r));
		return r;
	}
	rs->removed++;
	return 0;
}

/* ---- laying files down ----------------------------------------------------- */

/* Copy blob e->sha into a temp file beside e->path, checked, then rename it there. */
static int write_file(struct restore *rs, const struct manifest_entry *e)
{
	char tmp[PATH_MAX], blob[REPO_BLOB_PATH];
	const char *slash = strrchr(e->path, '/');
	uint8_t sha[MANIFEST_SHA];
	EVP_MD_CTX *ctx = NULL;
	int in = -1, out = -1, r = 0;
	uint64_t off = 0;
	ssize_t n, w;

	repo_blob_path(e->sha, blob);
	if (snprintf(tmp, sizeof(tmp), "%.*s%s", slash ? (int)(slash - e->path + 1) : 0, e->path,
		     RESTORE_TMP) >= (int)sizeof(tmp)) {
		snprintf(rs->err, sizeof(rs->err), "%s/%s: path too long", rs->store, e->path);
		return -ENAMETOOLONG;
	}
	r = repo_blob_open(rs->repo, e->sha, &in);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "blob %s/%s (for %s): %s", rs->repo_dir, blob,
			 e->path, r == -ENOENT ? "missing" : strerror(-r));
		return r;
	}
	out = openat(rs->root, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	ctx = EVP_MD_CTX_new();
	if (out < 0 || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		r = out < 0 ? -errno : -ENOMEM;
		snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, tmp, strerror(-r));
		goto out;
	}
	for (;;) {
		n = read(in, rs->buf, RESTORE_IO);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(rs->err, sizeof(rs->err), "blob %s/%s: %s", rs->repo_dir, blob,
				 strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, rs->buf, (size_t)n);
		for (w = 0; w < n;) {
			ssize_t k = write(out, rs->buf + w, (size_t)(n - w));

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				r = -errno;
				snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path,
					 strerror(errno));
				goto out;
			}
			w += k;
		}
		off += (uint64_t)n;
		progress_advance(&rs->prog, (uint64_t)n);
	}
	EVP_DigestFinal_ex(ctx, sha, NULL);
	if (memcmp(sha, e->sha, sizeof(sha)) || off != e->size) {
		r = -EBADMSG;
		snprintf(rs->err, sizeof(rs->err),
			 "blob %s/%s (for %s) is corrupt: its contents do not match its SHA-256",
			 rs->repo_dir, blob, e->path);
		goto out;
	}
	if (close(out) < 0) {
		out = -1;
		r = -errno;
		snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
		goto out;
	}
	out = -1;
	if (renameat(rs->root, tmp, rs->root, e->path) < 0) {
		r = -errno;
		snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
		goto out;
	}
	rs->files_written++;
	rs->bytes_written += off;
out:
	EVP_MD_CTX_free(ctx);
	if (out >= 0)
		close(out);
	if (r < 0)
		unlinkat(rs->root, tmp, 0);
	close(in);
	return r;
}

/* --delta: 1 if the file at e->path has e's contents already. */
static int same_file(struct restore *rs, const struct manifest_entry *e)
{
	uint8_t sha[MANIFEST_SHA];
	uint64_t size = 0;
	struct stat st;
	int fd, r;

	if (fstatat(rs->root, e->path, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != e->size)
		return 0;
	fd = openat(rs->root, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	r = repo_hash_fd(fd, rs->buf, RESTORE_IO, sha, &size);
	close(fd);
	return r == 0 && size == e->size && !memcmp(sha, e->sha, sizeof(sha));
}

/* Make the object of entry e (not its metadata).  0 or -errno with rs->err. */
static int make_object(struct restore *rs, const struct manifest_entry *e)
{
	char target[EVENT_MAX_TARGET + 1];
	struct stat st, lst;
	ssize_t tl;
	int exists, r = 0;

	if (!e->path[0])
		return 0;
	exists = fstatat(rs->root, e->path, &st, AT_SYMLINK_NOFOLLOW) == 0;
	if (e->link != MANIFEST_NOLINK) {
		const struct manifest_entry *lead = &rs->m.e[e->link];

		if (exists && fstatat(rs->root, lead->path, &lst, AT_SYMLINK_NOFOLLOW) == 0 &&
		    lst.st_ino == st.st_ino && lst.st_dev == st.st_dev)
			return 0;
		if (exists && unlinkat(rs->root, e->path, 0) < 0)
			goto fail;
		if (linkat(rs->root, lead->path, rs->root, e->path, 0) < 0)
			goto fail;
		return 0;
	}
	switch (e->mode & S_IFMT) {
	case S_IFDIR:
		if (exists && S_ISDIR(st.st_mode))
			return 0;
		if (mkdirat(rs->root, e->path, 0700) < 0)
			goto fail;
		return 0;
	case S_IFREG:
		if (exists && rs->delta && same_file(rs, e)) {
			rs->files_kept++;
			progress_advance(&rs->prog, e->size);
			return 0;
		}
		if (!e->has_sha) {
			snprintf(rs->err, sizeof(rs->err), "%s: the manifest has no contents for it",
				 e->path);
			return -EBADMSG;
		}
		return write_file(rs, e);
	case S_IFLNK:
		if (exists && S_ISLNK(st.st_mode)) {
			tl = readlinkat(rs->root, e->path, target, sizeof(target) - 1);
			if (tl >= 0 && (target[tl] = '\0', e->target && !strcmp(target, e->target)))
				return 0;
		}
		if (exists && unlinkat(rs->root, e->path, 0) < 0)
			goto fail;
		if (symlinkat(e->target ? e->target : "", rs->root, e->path) < 0)
			goto fail;
		return 0;
	default:
		if (exists && (st.st_mode & S_IFMT) == (e->mode & S_IFMT) &&
		    (uint64_t)st.st_rdev == e->rdev)
			return 0;
		if (exists && unlinkat(rs->root, e->path, 0) < 0)
			goto fail;
		if (mknodat(rs->root, e->path, e->mode & (S_IFMT | 0600), (dev_t)e->rdev) < 0)
			goto fail;
		return 0;
	}
fail:
	r = -errno;
	snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
	return r;
}

/* xattrs exactly as e has them: set each, remove the others. */
static int set_xattrs(struct restore *rs, int fd, const struct manifest_entry *e)
{
	char *names = malloc(RESTORE_XLIST), name[256];
	size_t at = 0;
	ssize_t n;
	char *p;
	int r = 0;

	if (!names)
		return -ENOMEM;
	n = xattr_at_list(fd, true, names, RESTORE_XLIST);
	for (p = names; n > 0 && p < names + n; p += strlen(p) + 1) {
		const uint8_t *v;
		uint32_t vl;

		if (!manifest_xattr(e, p, &v, &vl)) {
			r = xattr_at_remove(fd, true, p);
			if (r < 0)
				goto out;
		}
	}
	while (at + 2 <= e->xattrs_len) {
		uint16_t nl = (uint16_t)(e->xattrs[at] | e->xattrs[at + 1] << 8);
		uint32_t vl;

		if (at + 6 + nl > e->xattrs_len || nl >= sizeof(name)) {
			r = -EBADMSG;
			goto out;
		}
		memcpy(name, e->xattrs + at + 2, nl);
		name[nl] = '\0';
		vl = (uint32_t)e->xattrs[at + 2 + nl] | (uint32_t)e->xattrs[at + 3 + nl] << 8 |
		     (uint32_t)e->xattrs[at + 4 + nl] << 16 | (uint32_t)e->xattrs[at + 5 + nl] << 24;
		if (at + 6 + nl + vl > e->xattrs_len) {
			r = -EBADMSG;
			goto out;
		}
		r = xattr_at_set(fd, true, name, e->xattrs + at + 6 + nl, vl);
		if (r < 0)
			goto out;
		at += 6 + (size_t)nl + vl;
	}
out:
	free(names);
	return r;
}

/* Owner, mode, xattrs and (but for directories) times of e. */
static int set_meta(struct restore *rs, const struct manifest_entry *e)
{
	const char *p = at_path(e->path);
	struct timespec ts[2] = {{e->mtime_sec, e->mtime_nsec}, {e->mtime_sec, e->mtime_nsec}};
	int fd, r = 0;

	if (e->link != MANIFEST_NOLINK)
		return 0; /* one inode: its first name carries it */
	if (fchownat(rs->root, p, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
		goto fail;
	if (!S_ISLNK(e->mode) && fchmodat(rs->root, p, e->mode & 07777, 0) < 0)
		goto fail;
	fd = openat(rs->root, p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		goto fail;
	r = set_xattrs(rs, fd, e);
	close(fd);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "%s/%s: xattrs: %s", rs->store, e->path,
			 strerror(-r));
		return r;
	}
	if (!S_ISDIR(e->mode) && utimensat(rs->root, p, ts, AT_SYMLINK_NOFOLLOW) < 0)
		goto fail;
	return 0;
fail:
	r = -errno;
	snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path, strerror(errno));
	return r;
}

static int lay_down(struct restore *rs)
{
	size_t i;
	int r;

	for (i = 0; i < rs->m.n; i++) {
		r = make_object(rs, &rs->m.e[i]);
		if (r < 0)
			return r;
	}
	for (i = 0; i < rs->m.n; i++) {
		r = set_meta(rs, &rs->m.e[i]);
		if (r < 0)
			return r;
	}
	/* Directories' times once nothing is made in them any more. */
	for (i = 0; i < rs->m.n; i++) {
		const struct manifest_entry *e = &rs->m.e[i];
		struct timespec ts[2] = {{e->mtime_sec, e->mtime_nsec},
					 {e->mtime_sec, e->mtime_nsec}};

		if (S_ISDIR(e->mode) && utimensat(rs->root, at_path(e->path), ts, 0) < 0) {
			snprintf(rs->err, sizeof(rs->err), "%s/%s: %s", rs->store, e->path,
				 strerror(errno));
			return -errno;
		}
	}
	return 0;
}

/* ---- the events --------------------------------------------------------- */

/* Read the events blob whole, checked against its name.  0 or -errno with rs->err. */
static int read_events(struct restore *rs, uint8_t **data, size_t *len)
{
	char blob[REPO_BLOB_PATH];
	uint8_t sha[MANIFEST_SHA];
	uint8_t *p = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, r;

	repo_blob_path(rs->m.events_sha, blob);
	r = repo_blob_open(rs->repo, rs->m.events_sha, &fd);
	if (r < 0) {
		snprintf(rs->err, sizeof(rs->err), "blob %s/%s (the backup's events): %s",
			 rs->repo_dir, blob, r == -ENOENT ? "missing" : strerror(-r));
		return r;
	}
	p = malloc(rs->m.events_bytes ? rs->m.events_bytes : 1);
	if (!p) {
		close(fd);
		snprintf(rs->err, sizeof(rs->err), "out of memory for the backup's events");
		return -ENOMEM;
	}
	while (got < rs->m.events_bytes) {
		n = read(fd, p + got, rs->m.events_bytes - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != rs->m.events_bytes ||
	    EVP_Digest(p, got, sha, NULL, EVP_sha256(), NULL) != 1 ||
	    memcmp(sha, rs->m.events_sha, sizeof(sha))) {
		free(p);
		snprintf(rs->err, sizeof(rs->err),
			 "blob %s/%s (the backup's events) is corrupt: its contents do not match "
			 "its SHA-256",
			 rs->repo_dir, blob);
		return -EBADMSG;
	}
	*data = p;
	*len = got;
	return 0;
}

/* ---- --node ------------------------------------------------------------- */

/* Check the node directory before anything is written.  0 or -1 with a message. */
static int check_node_dir(struct restore *rs)
{
	char path[PATH_MAX + 32], err[1024];
	struct config cfg;

	snprintf(path, sizeof(path), "%s/%s", rs->target, CONFIG_FILE);
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr,
			"ledgerctl: restore: --node: %s (make the node with 'ledgerctl init' "
			"first)\n",
			err);
		return -1;
	}
	if (strcmp(cfg.name, rs->node_name)) {
		fprintf(stderr, "ledgerctl: restore: --node %s: %s is node %s\n", rs->node_name,
			rs->target, cfg.name);
		return -1;
	}
	if (memcmp(cfg.cluster_id, rs->m.cluster, sizeof(cfg.cluster_id))) {
		fprintf(stderr,
			"ledgerctl: restore: --node: %s is of another cluster than the backup "
			"(of node %s)\n",
			rs->target, rs->m.node);
		return -1;
	}
	return 0;
}

/* The node starts at the backup's position: its applied vector. */
static int set_node_position(struct restore *rs)
{
	struct node *n = NULL;
	struct journal *j;
	char err[1024];
	uint8_t none[5] = {0};
	uint32_t i;
	int r;

	r = node_open(rs->target, 0, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s\n", err);
		return -1;
	}
	j = node_journal(n);
	for (i = 0; i < rs->m.npos; i++) {
		if (rs->m.pos[i].origin == journal_node_id(j) && rs->m.pos[i].seq) {
			fprintf(stderr,
				"ledgerctl: restore: --node: %s has the id of the backup's origin "
				"%016" PRIx64 "; make a new node with 'ledgerctl init'\n",
				rs->target, rs->m.pos[i].origin);
			node_close(n, 1);
			return -1;
		}
		if (journal_applied(j, rs->m.pos[i].origin) < rs->m.pos[i].seq)
			journal_mark_applied(j, rs->m.pos[i].origin, rs->m.pos[i].seq);
	}
	/* A snapshot asked for by 'init --join' is not needed now: the store is at pos. */
	r = journal_meta_put(j, JOURNAL_META_SNAP, none, sizeof(none), 0);
	if (r == 0)
		r = journal_sync(j);
	node_close(n, 1);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s/%s: %s\n", rs->target, NODE_JOURNAL_DIR,
			strerror(-r));
		return -1;
	}
	return 0;
}

/* ---- the command ------------------------------------------------------------ */

static int pick_backup(struct restore *rs)
{
	char **names = NULL;
	size_t n = 0;
	int r;

	if (rs->backup_name) {
		snprintf(rs->mname, sizeof(rs->mname), "%s", rs->backup_name);
	} else {
		r = repo_manifest_list(rs->repo, &names, &n);
		if (r < 0 || n == 0) {
			fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->repo_dir,
				r < 0 ? strerror(-r) : "holds no backup");
			repo_names_free(names, n);
			return -1;
		}
		snprintf(rs->mname, sizeof(rs->mname), "%s", names[n - 1]);
		repo_names_free(names, n);
	}
	if (repo_manifest_read(rs->repo, rs->mname, &rs->m, rs->err, sizeof(rs->err)) < 0) {
		fprintf(stderr, "ledgerctl: restore: refused: %s\n", rs->err);
		return -1;
	}
	return 0;
}

/* The target store: made (empty), or existing for --delta and --node. */
static int open_target(struct restore *rs)
{
	struct stat st;
	int r;

	snprintf(rs->store, sizeof(rs->store), "%s/%s", rs->target, NODE_STORE_DIR);
	if (mkdir(rs->target, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->target, strerror(errno));
		return -1;
	}
	if (stat(rs->store, &st) < 0) {
		if (errno != ENOENT || mkdir(rs->store, 0755) < 0) {
			fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->store, strerror(errno));
			return -1;
		}
	} else if (!rs->delta) {
		r = dir_is_empty(rs->store);
		if (r != 1) {
			fprintf(stderr,
				"ledgerctl: restore: %s: %s (use --delta to restore over it)\n",
				rs->store, r < 0 ? strerror(-r) : "not empty");
			return -1;
		}
	}
	rs->root = open(rs->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rs->root < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs->store, strerror(errno));
		return -1;
	}
	return 0;
}

static int prune(struct restore *rs)
{
	struct treewalk_ops ops = {.entry = prune_entry};
	struct treewalk tw = {0};
	size_t i;
	int r;

	rs->sorted = malloc((rs->m.n ? rs->m.n : 1) * sizeof(*rs->sorted));
	if (!rs->sorted)
		return -ENOMEM;
	for (i = 0; i < rs->m.n; i++)
		rs->sorted[i] = i;
	qsort_r(rs->sorted, rs->m.n, sizeof(*rs->sorted), cmp_index, &rs->m);
	r = treewalk_open(&tw, rs->root, ".", O_NOFOLLOW);
	if (r == 0)
		r = treewalk_run(&tw, &ops, rs, NULL);
	treewalk_close(&tw);
	if (r < 0 && !rs->err[0])
		snprintf(rs->err, sizeof(rs->err), "%s: %s", rs->store, strerror(-r));
	return r;
}

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {{"delta", no_argument, NULL, 'd'},
					     {"node", required_argument, NULL, 'n'},
					     {"backup", required_argument, NULL, 'b'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct restore rs = {.root = -1};
	struct event *evs = NULL;
	struct store *s = NULL;
	uint8_t *events = NULL;
	size_t nevs = 0, elen = 0, i;
	uint64_t applied = 0, skipped = 0, total = 0;
	char err[RESTORE_ERR], hb[32];
	int c, rc = 1, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			rs.delta = 1;
			break;
		case 'n':
			rs.node_name = optarg;
			break;
		case 'b':
			rs.backup_name = optarg;
			break;
		case 'h':
			restore_usage(stdout);
			return 0;
		default:
			restore_usage(stderr);
			return 2;
		}
	}
	if (optind + 2 != argc) {
		restore_usage(stderr);
		return 2;
	}
	rs.repo_dir = argv[optind];
	rs.target = argv[optind + 1];
	if (repo_open(rs.repo_dir, 0, &rs.repo, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: restore: %s\n", err);
		return 1;
	}
	rs.buf = malloc(RESTORE_IO);
	if (!rs.buf || pick_backup(&rs) < 0)
		goto out;
	/* Every check that needs no writing first: the events, the node directory. */
	if (read_events(&rs, &events, &elen) < 0 ||
	    backup_events_decode(events, elen, &evs, &nevs, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: restore: refused: %s%s\n",
			rs.err[0] ? "" : "the backup's events: ", rs.err[0] ? rs.err : err);
		goto out;
	}
	if (rs.node_name && check_node_dir(&rs) < 0)
		goto out;
	if (open_target(&rs) < 0)
		goto out;
	for (i = 0; i < rs.m.n; i++)
		if (S_ISREG(rs.m.e[i].mode) && rs.m.e[i].link == MANIFEST_NOLINK)
			total += rs.m.e[i].size;
	progress_init(&rs.prog, "restore", total, 1);
	r = rs.delta ? prune(&rs) : 0;
	if (r == 0)
		r = lay_down(&rs);
	progress_end(&rs.prog);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s%s\n",
			r == -EBADMSG ? "refused: " : "", rs.err);
		goto out;
	}
	r = store_open(rs.store, &s);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: %s\n", rs.store, strerror(-r));
		goto out;
	}
	r = backup_events_apply(s, evs, nevs, &applied, &skipped, err, sizeof(err));
	store_close(s);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: replaying the backup's events: %s\n",
			rs.store, err);
		goto out;
	}
	if (syncfs(rs.root) < 0) {
		fprintf(stderr, "ledgerctl: restore: %s: syncfs: %s\n", rs.store, strerror(errno));
		goto out;
	}
	if (rs.node_name && set_node_position(&rs) < 0)
		goto out;
	printf("restored %s (node %s) into %s: %zu entries, %" PRIu64 " files written (%s), %" PRIu64
	       " kept, %" PRIu64 " removed, %" PRIu64 " events replayed (%" PRIu64
	       " already shown) in %.1f s\n",
	       rs.mname, rs.m.node, rs.store, rs.m.n, rs.files_written,
	       progress_human(rs.bytes_written, hb, sizeof(hb)), rs.files_kept, rs.removed,
	       applied, skipped, progress_seconds(&rs.prog));
	rc = 0;
out:
	backup_events_free(evs, nevs);
	free(events);
	free(rs.sorted);
	free(rs.buf);
	if (rs.root >= 0)
		close(rs.root);
	manifest_free(&rs.m);
	repo_close(rs.repo);
	return rc;
}
