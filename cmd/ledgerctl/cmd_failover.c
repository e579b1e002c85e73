/*
 * cmd_failover.c - ledgerctl promote, demote and tail-export: roles by
 * hand, and what a failover kept aside, laid out for a person to merge.
 *
 * promote and demote ask a running node over its control socket
 * (ctl_socket.h), so the node changes role under its own lock and tells its
 * peers at once; a stopped node is opened and changed in place.  Before a
 * running node with a mount is demoted, the mount is synced: with the
 * writeback cache the kernel may still hold writes the node has not seen,
 * which it would refuse once it is a replica.
 *
 * tail-export reads a copy of the journal (journal_copy.h), so it
 * works on a running node too and never opens the node itself, which would
 * rebuild its store.  A tail's files come from the store that holds its
 * effects: the first store.fenced-<term>-... moved aside at or after the
 * tail's term (rebuild.h), or the store itself while its rebuild is
 * pending.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"
#include "ctl_socket.h"
#include "journal/journal_copy.h"
#include "lib/files.h"
#include "lib/grow.h"
#include "node/node.h"
#include "node/rebuild.h"
#include "node/replay.h"
#include "repl/control.h"
#include "store/path.h"

#define MOUNT_TYPE "fuse.ledgerfs"

/* ---- promote, demote ---------------------------------------------------- */

static void role_usage(FILE *out, int promote)
{
	if (promote)
		fputs("usage: ledgerctl promote NODE_DIR\n"
		      "\n"
		      "Make the node in NODE_DIR the primary of a new term (the highest term it\n"
		      "has seen plus one).  Its peers fence every origin at what it has applied,\n"
		      "so a returning old primary's later changes are refused and kept aside.\n"
		      "A running node is asked over NODE_DIR/" CONTROL_SOCKET "; a stopped one is\n"
		      "changed in place.\n",
		      out);
	else
		fputs("usage: ledgerctl demote NODE_DIR\n"
		      "\n"
		      "Make the node in NODE_DIR a replica: its mount turns read-only.  A running\n"
		      "node's mount is synced first, so writes the kernel still caches reach it\n"
		      "while it accepts them.  A running node is asked over\n"
		      "NODE_DIR/" CONTROL_SOCKET "; a stopped one is changed in place.\n",
		      out);
	fputs("\n"
	      "  -h, --help   this help\n"
	      "\n"
	      "Exit status: 0 success, 1 failure, 2 usage error.\n",
	      out);
}

/* mountinfo escapes space, tab, newline and backslash as \ooo: undo it in place. */
static void unescape_octal(char *s)
{
	char *d = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 4;
		} else {
			*d++ = *s++;
		}
	}
	*d = '\0';
}

/*
 * The mount point of the ledgerfs mount serving the node in real (a
 * realpath: the mount's source, see cmd/ledgerfs.c).  0, -ENOENT if there is
 * none in this mount namespace, or a negative errno.
 */
static int find_mount(const char *real, char *mnt, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *sep, *type, *source, *point, *save;
	size_t cap = 0;
	int i, r = -ENOENT;

	if (!f)
		return -errno;
	while (r == -ENOENT && getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		/* "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER" */
		sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		type = strtok_r(sep + 3, " ", &save);
		source = strtok_r(NULL, " ", &save);
		if (!type || !source || strcmp(type, MOUNT_TYPE))
			continue;
		unescape_octal(source);
		if (strcmp(source, real))
			continue;
		point = strtok_r(line, " ", &save);
		for (i = 0; point && i < 4; i++)
			point = strtok_r(NULL, " ", &save);
		if (!point)
			continue;
		unescape_octal(point);
		snprintf(mnt, len, "%s", point);
		r = 0;
	}
	free(line);
	fclose(f);
	return r;
}

/*
 * Flush the kernel's writeback cache of dir's mount, if it has one here.
 * A mount whose node is gone (ENOTCONN) has nowhere to flush to.  0 or 1.
 */
static int sync_mount(const char *cmd, const char *dir)
{
	char real[PATH_MAX], mnt[PATH_MAX];
	int fd = -1, r, rc = 1;

	if (!realpath(dir, real)) {
		fprintf(stderr, "ledgerctl: %s: %s: %s\n", cmd, dir, strerror(errno));
		return 1;
	}
	r = find_mount(real, mnt, sizeof(mnt));
	if (r == -ENOENT) {
		rc = 0;
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "ledgerctl: %s: %s: cannot read /proc/self/mountinfo: %s\n", cmd,
			dir, strerror(-r));
		goto out;
	}
	fd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd) < 0) {
		if (errno == ENOTCONN) {
			rc = 0;
			goto out;
		}
		fprintf(stderr,
			"ledgerctl: %s: %s: cannot flush its mount %s: %s; not demoting, since "
			"the writes it holds would be refused\n",
			cmd, dir, mnt, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Change the role of a stopped node in place.  0 or 1. */
static int role_offline(const char *cmd, const char *dir, int promote)
{
	struct node *n = NULL;
	uint64_t term = 0, clean = 0;
	char err[1024];
	int r;

	r = node_open(dir, 0, &n, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerctl: %s: %s\n", cmd, err);
		return 1;
	}
	/* Closing as it was found: an unclean stop stays on record for the next mount. */
	journal_meta_get_u64(node_journal(n), JOURNAL_META_CLEAN, &clean);
	r = promote ? node_promote(n, &term) : node_demote(n, "demoted by ledgerctl");
	if (r == 0 && promote)
		printf("%s is primary of term %" PRIu64 "\n", node_cfg(n)->name, term);
	else if (r == 0)
		printf("%s is a replica\n", node_cfg(n)->name);
	else
		fprintf(stderr, "ledgerctl: %s: %s: %s\n", cmd, dir, strerror(-r));
	node_close(n, clean != 0);
	return r < 0;
}

/* The node's reply without its "ok: " to stdout, or its "error: ..." to stderr.  0 or 1. */
static int print_reply(const char *cmd, const char *dir, const struct buf *reply)
{
	size_t ok = strlen(CTL_OK_PREFIX), bad = strlen(CTL_ERROR_PREFIX);
	const char *p = (const char *)reply->data;

	if (reply->len >= ok && !memcmp(p, CTL_OK_PREFIX, ok)) {
		fwrite(p + ok, 1, reply->len - ok, stdout);
		return 0;
	}
	if (reply->len >= bad && !memcmp(p, CTL_ERROR_PREFIX, bad))
		fprintf(stderr, "ledgerctl: %s: %s: %.*s", cmd, dir, (int)(reply->len - bad),
			p + bad);
	else
		fprintf(stderr, "ledgerctl: %s: %s: unexpected reply: %.*s\n", cmd, dir,
			(int)reply->len, p);
	return 1;
}

static int run_role(int argc, char **argv, int promote)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *cmd = promote ? "promote" : "demote", *dir;
	struct buf reply = BUF_INIT;
	char sock[PATH_MAX];
	int c, r, rc = 1;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			role_usage(stdout, promote);
			return 0;
		}
		role_usage(stderr, promote);
		return 2;
	}
	if (optind != argc - 1) {
		role_usage(stderr, promote);
		return 2;
	}
	dir = argv[optind];
	r = snprintf(sock, sizeof(sock), "%s/%s", dir, CONTROL_SOCKET);
	if (r < 0 || (size_t)r >= sizeof(sock)) {
		fprintf(stderr, "ledgerctl: %s: %s: control socket path too long\n", cmd, dir);
		goto out;
	}
	if (!promote && sync_mount(cmd, dir))
		goto out;
	r = ctl_ask(sock, cmd, &reply);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		rc = role_offline(cmd, dir, promote);
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "ledgerctl: %s: %s: %s (%s)\n", cmd, dir, ctl_failure_meaning(r),
			strerror(-r));
		goto out;
	}
	rc = print_reply(cmd, dir, &reply);
out:
	buf_free(&reply);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		perror("ledgerctl: stdout");
		rc = 1;
	}
	return rc;
}

int cmd_promote(int argc, char **argv)
{
	return run_role(argc, argv, 1);
}

int cmd_demote(int argc, char **argv)
{
	return run_role(argc, argv, 0);
}

/* ---- tail-export -------------------------------------------------------- */

static void export_usage(FILE *out)
{
	fputs("usage: ledgerctl tail-export NODE_DIR DIR\n"
	      "\n"
	      "Write out the events NODE_DIR keeps aside after a failover (changes made\n"
	      "beyond a promotion, which its store no longer shows once rebuilt), so a\n"
	      "person can merge them by hand.  DIR must be absent or empty; it receives\n"
	      "  events.jsonl   one line per kept-aside event, as 'ledgerctl log --json'\n"
	      "  files/PATH     each path those events name, as the node's kept store\n"
	      "                 (NODE_DIR/" REBUILD_FENCED_PREFIX "TERM-TIME, or NODE_DIR/store\n"
	      "                 until it is rebuilt) holds it: files with contents and\n"
	      "                 mode, directories, symlinks\n"
	      "  missing.txt    paths the kept store does not hold, one a line, with why\n"
	      "                 (newlines and backslashes in names escaped as \\n, \\\\)\n"
	      "Works on a running node too: it reads a copy of the journal.\n"
	      "\n"
	      "  -h, --help   this help\n"
	      "\n"
	      "Exit status: 0 success (also when nothing is kept aside), 1 failure, 2 usage\n"
	      "error.\n",
	      out);
}

/* A store directory moved aside by a rebuild: store.fenced-<term>-<time>[-N]. */
struct fenced {
	uint64_t term;
	char name[NAME_MAX + 1];
};

/* One path to export, from the store of one tail. */
struct export_path {
	char *path;    /* malloc'd */
	size_t source; /* index into struct tail_export's sources */
};

struct tail_export {
	const char *node_dir;
	const char *out_dir;
	struct journal *j;
	struct replay_tails tails;
	char **sources;		   /* per tail: the store holding its effects (malloc'd), or NULL */
	struct export_path *paths; /* malloc'd, npaths of them */
	size_t npaths, paths_cap;
	FILE *events;
	FILE *missing;
	int files; /* O_PATH descriptor of DIR/files */
	uint64_t nevents, nfiles, nmissing;
};

/* The copies of the store moved aside so far, in *out (malloc'd, the caller frees). */
static int list_fenced(const char *node_dir, struct fenced **out, size_t *n)
{
	size_t plen = strlen(REBUILD_FENCED_PREFIX), k = 0, cap = 0;
	struct fenced *v = NULL;
	DIR *d = opendir(node_dir);
	struct dirent *de;
	char *end;
	int r = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, REBUILD_FENCED_PREFIX, plen))
			continue;
		r = grow_array(&v, &cap, k + 1);
		if (r < 0)
			break;
		errno = 0;
		v[k].term = strtoull(de->d_name + plen, &end, 10);
		if (errno || end == de->d_name + plen || *end != '-')
			continue;
		snprintf(v[k].name, sizeof(v[k].name), "%s", de->d_name);
		k++;
	}
	closedir(d);
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	*n = k;
	return 0;
}

/*
 * Per tail, the store that holds its effects: the first copy moved aside
 * at or after its term (names sort by time within a term), else the store
 * while its rebuild is pending, else none.
 */
static int find_sources(struct tail_export *x)
{
	struct fenced *v = NULL, *best;
	size_t n = 0, i, t;
	int r;

	r = list_fenced(x->node_dir, &v, &n);
	if (r < 0)
		return r;
	x->sources = calloc(x->tails.n, sizeof(*x->sources));
	if (!x->sources) {
		r = -ENOMEM;
		goto out;
	}
	for (t = 0; t < x->tails.n && r == 0; t++) {
		best = NULL;
		for (i = 0; i < n; i++)
			if (v[i].term >= x->tails.v[t].term &&
			    (!best || v[i].term < best->term ||
			     (v[i].term == best->term && strcmp(v[i].name, best->name) < 0)))
				best = &v[i];
		if (best)
			r = asprintf(&x->sources[t], "%s/%s", x->node_dir, best->name);
		else if (x->tails.in_store)
			r = asprintf(&x->sources[t], "%s/%s", x->node_dir, NODE_STORE_DIR);
		if (r < 0) {
			x->sources[t] = NULL;
			r = -ENOMEM;
		} else {
			r = 0;
		}
	}
out:
	free(v);
	return r;
}

/* Remember path (from tail t's store) unless it is already there.  0 or -ENOMEM. */
static int add_path(struct tail_export *x, const char *path, size_t t)
{
	size_t i;

	for (i = 0; i < x->npaths; i++)
		if (!strcmp(x->paths[i].path, path))
			return 0;
	if (grow_array(&x->paths, &x->paths_cap, x->npaths + 1) < 0)
		return -ENOMEM;
	x->paths[x->npaths].path = strdup(path);
	if (!x->paths[x->npaths].path)
		return -ENOMEM;
	x->paths[x->npaths++].source = t;
	return 0;
}

/* Tail t's events to events.jsonl, and the paths they name.  0 or a negative errno. */
static int export_events(struct tail_export *x, size_t t)
{
	const struct node_tail *tail = &x->tails.v[t];
	struct journal_iter *it = NULL;
	uint64_t origin, seq;
	const uint8_t *val;
	size_t len;
	int r;

	r = journal_iter_new(x->j, JOURNAL_EVENTS, tail->origin, tail->first, &it);
	while (r >= 0) {
		struct event ev;
		const char *why = NULL;

		r = journal_iter_next(it, &origin, &seq, NULL, NULL, &val, &len);
		if (r == -EBADMSG) {
			r = 0;
			continue;
		}
		if (r <= 0 || origin != tail->origin || seq > tail->last)
			break;
		cmd_log_json_record(x->events, origin, seq, val, len);
		x->nevents++;
		if (event_decode(val, len, &ev, NULL, &why) < 0)
			continue;
		if (ev.path)
			r = add_path(x, ev.path, t);
		if (r >= 0 && ev.path2)
			r = add_path(x, ev.path2, t);
		event_free(&ev);
	}
	journal_iter_free(it);
	return r < 0 ? r : 0;
}

/* A line of missing.txt: the path, then why. */
static void note_missing(struct tail_export *x, const char *path, const char *why)
{
	const char *p;

	for (p = path; *p; p++) {
		if (*p == '\n')
			fputs("\\n", x->missing);
		else if (*p == '\\')
			fputs("\\\\", x->missing);
		else
			fputc(*p, x->missing);
	}
	fprintf(x->missing, "\t%s\n", why);
	x->nmissing++;
}

/* Make the directories above rel beneath DIR/files.  0 or a negative errno. */
static int make_parents(int files, const char *rel)
{
	char buf[PATH_MAX];
	char *slash;

	snprintf(buf, sizeof(buf), "%s", rel);
	for (slash = strchr(buf, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdirat(files, buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*slash = '/';
	}
	return 0;
}

/* Copy the regular file open (O_PATH) at src to rel beneath DIR/files, with mode and mtime. */
static int copy_file(int src, const struct stat *st, int files, const char *rel)
{
	char proc[PATH_PROCFD_LEN], buf[65536];
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	int in = -1, out = -1, r = 0;
	ssize_t n, w;

	in = open(path_procfd(src, proc), O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	out = openat(files, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		r = -errno;
		goto out;
	}
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		for (w = 0; w < n;) {
			ssize_t k = write(out, buf + w, (size_t)(n - w));

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				r = -errno;
				goto out;
			}
			w += k;
		}
	}
	if (fchmod(out, st->st_mode & 07777) < 0 || futimens(out, times) < 0)
		r = -errno;
out:
	if (out >= 0 && close(out) < 0 && r == 0)
		r = -errno;
	close(in);
	return r;
}

/*
 * Export one path from the store open at root into DIR/files.  What the
 * store does not have goes to missing.txt; 0 then too.  A negative errno
 * only when DIR cannot be written.
 */
static int export_path(struct tail_export *x, int root, const char *rel)
{
	char target[PATH_MAX];
	const char *why = NULL;
	struct stat st;
	int fd = -1, r;
	ssize_t n;

	if (path_is_root(rel))
		return 0;
	r = path_check(rel, &why);
	if (r == 0)
		r = path_open(root, rel, O_PATH, 0, &fd);
	if (r == 0 && fstat(fd, &st) < 0)
		r = -errno;
	if (r < 0) {
		note_missing(x, rel, why ? why : strerror(-r));
		r = 0;
		goto out;
	}
	r = make_parents(x->files, rel);
	if (r == 0 && S_ISDIR(st.st_mode)) {
		if (mkdirat(x->files, rel, 0755) < 0 && errno != EEXIST)
			r = -errno;
		else if (fchmodat(x->files, rel, st.st_mode & 07777, 0) < 0)
			r = -errno;
	} else if (r == 0 && S_ISREG(st.st_mode)) {
		r = copy_file(fd, &st, x->files, rel);
	} else if (r == 0 && S_ISLNK(st.st_mode)) {
		n = readlinkat(fd, "", target, sizeof(target) - 1);
		if (n < 0) {
			r = -errno;
		} else {
			target[n] = '\0';
			if (symlinkat(target, x->files, rel) < 0)
				r = -errno;
		}
	} else if (r == 0) {
		note_missing(x, rel, "a device, fifo or socket: not exported");
		goto out;
	}
	/* Two events naming a file and a directory beneath it: one of them cannot be. */
	if (r == -EEXIST || r == -ENOTDIR) {
		note_missing(x, rel, strerror(-r));
		r = 0;
		goto out;
	}
	if (r == 0)
		x->nfiles++;
out:
	if (fd >= 0)
		close(fd);
	return r;
}

static int cmp_paths(const void *a, const void *b)
{
	return strcmp(((const struct export_path *)a)->path, ((const struct export_path *)b)->path);
}

/* Every remembered path, parents first, from its tail's store.  0 or a negative errno. */
static int export_files(struct tail_export *x)
{
	struct store *s = NULL;
	size_t i, open_source = (size_t)-1;
	int r = 0;

	qsort(x->paths, x->npaths, sizeof(*x->paths), cmp_paths);
	for (i = 0; i < x->npaths && r == 0; i++) {
		size_t t = x->paths[i].source;

		if (!x->sources[t]) {
			note_missing(x, x->paths[i].path, "no kept copy of the store was found");
			continue;
		}
		if (open_source == (size_t)-1 || strcmp(x->sources[open_source], x->sources[t])) {
			store_close(s);
			s = NULL;
			open_source = (size_t)-1;
			r = store_open(x->sources[t], &s);
			if (r < 0) {
				fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", x->sources[t],
					strerror(-r));
				break;
			}
			open_source = t;
		}
		r = export_path(x, s->root, x->paths[i].path);
		if (r < 0)
			fprintf(stderr, "ledgerctl: tail-export: %s/files/%s: %s\n", x->out_dir,
				x->paths[i].path, strerror(-r));
	}
	store_close(s);
	return r;
}

/* DIR (absent or empty), its files/, events.jsonl and missing.txt.  0 or 1. */
static int open_output(struct tail_export *x)
{
	const char *d = x->out_dir;
	char path[PATH_MAX];
	int r;

	if (mkdir(d, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", d, strerror(errno));
		return 1;
	}
	r = dir_is_empty(d);
	if (r <= 0) {
		fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", d,
			r ? strerror(-r) : "not empty; tail-export needs an empty directory");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/files", d);
	if (mkdir(path, 0755) < 0 ||
	    (x->files = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", path, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/events.jsonl", d);
	x->events = fopen(path, "wxe");
	if (x->events) {
		snprintf(path, sizeof(path), "%s/missing.txt", d);
		x->missing = fopen(path, "wxe");
	}
	if (!x->events || !x->missing) {
		fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}

/* Close what open_output() opened; 1 if a buffered write failed, else rc. */
static int close_output(struct tail_export *x, int rc)
{
	if (x->events && fclose(x->events) == EOF && !rc) {
		fprintf(stderr, "ledgerctl: tail-export: %s/events.jsonl: %s\n", x->out_dir,
			strerror(errno));
		rc = 1;
	}
	if (x->missing && fclose(x->missing) == EOF && !rc) {
		fprintf(stderr, "ledgerctl: tail-export: %s/missing.txt: %s\n", x->out_dir,
			strerror(errno));
		rc = 1;
	}
	if (x->files >= 0)
		close(x->files);
	return rc;
}

int cmd_tail_export(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct tail_export x = {.files = -1};
	struct journal_copy snap = {0};
	char path[PATH_MAX];
	const char *why = NULL;
	size_t t;
	int c, r, rc = 1;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			export_usage(stdout);
			return 0;
		}
		export_usage(stderr);
		return 2;
	}
	if (optind != argc - 2) {
		export_usage(stderr);
		return 2;
	}
	x.node_dir = argv[optind];
	x.out_dir = argv[optind + 1];
	snprintf(path, sizeof(path), "%s/%s", x.node_dir, NODE_JOURNAL_DIR);
	r = journal_copy_open(path, JOURNAL_COPY_IF_BUSY, &snap, &why);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", path, why ? why : strerror(-r));
		goto out;
	}
	x.j = snap.journal;
	r = replay_tails_load(x.j, &x.tails);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: tail-export: %s: kept-aside tails unreadable: %s\n",
			path, strerror(-r));
		goto out;
	}
	if (x.tails.n == 0) {
		printf("no kept-aside events\n");
		rc = 0;
		goto out;
	}
	r = find_sources(&x);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: tail-export: %s: %s\n", x.node_dir, strerror(-r));
		goto out;
	}
	if (open_output(&x))
		goto out;
	for (t = 0, r = 0; t < x.tails.n && r == 0; t++)
		r = export_events(&x, t);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: tail-export: %s: reading the journal failed: %s\n",
			path, strerror(-r));
		goto out;
	}
	if (export_files(&x) < 0)
		goto out;
	rc = 0;
out:
	rc = close_output(&x, rc);
	if (rc == 0 && x.tails.n)
		printf("%" PRIu64 " kept-aside events of %zu ranges, %" PRIu64
		       " paths exported to %s, %" PRIu64 " missing (listed in missing.txt)\n",
		       x.nevents, x.tails.n, x.nfiles, x.out_dir, x.nmissing);
	for (t = 0; x.sources && t < x.tails.n; t++)
		free(x.sources[t]);
	free(x.sources);
	for (t = 0; t < x.npaths; t++)
		free(x.paths[t].path);
	free(x.paths);
	replay_tails_free(&x.tails);
	journal_copy_close(&snap);
	return rc;
}
