/*
 * ledgerfs.c - ledgerfs NODE_DIR MOUNTPOINT [-f] [-o opts]: mount a node and
 * run its replication; ledgerfs --serve NODE_DIR [-f]: replication alone.
 *
 * Without -f the process detaches itself, but only after the node is open,
 * its unapplied tail replayed and the mount made, so that every error
 * (foreign store, journal in use, bad option) reaches the terminal and the
 * exit code.  The fork happens before the journal is opened because
 * LevelDB's background thread would not survive it; the parent waits on a
 * pipe for the child's verdict.
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuse/fuse_ops.h"
#include "fuse/inval.h"
#include "lib/log.h"
#include "node/node.h"
#include "repl/repl.h"

/* Worker threads when -o max_threads is not given. */
#define DEFAULT_MAX_THREADS 4

struct opts {
	char *node_dir;
	int show_help;
	int show_version;
	double entry_timeout;
	double attr_timeout;
};

static const struct fuse_opt opt_spec[] = {
    {"-h", offsetof(struct opts, show_help), 1},
    {"--help", offsetof(struct opts, show_help), 1},
    {"-V", offsetof(struct opts, show_version), 1},
    {"--version", offsetof(struct opts, show_version), 1},
    {"entry_timeout=%lf", offsetof(struct opts, entry_timeout), 0},
    {"attr_timeout=%lf", offsetof(struct opts, attr_timeout), 0},
    FUSE_OPT_END,
};

/* The first non-option argument is the node directory; the rest goes to libfuse. */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct opts *o = data;

	if (key == FUSE_OPT_KEY_NONOPT && !o->node_dir) {
		o->node_dir = strdup(arg);
		return o->node_dir ? 0 : -1;
	}
	return 1;
}

static void usage(void)
{
	printf("usage: ledgerfs NODE_DIR MOUNTPOINT [-f] [-o OPTIONS]\n"
	       "       ledgerfs --serve NODE_DIR [-f]\n"
	       "\n"
	       "Mount the ledgerfs node in NODE_DIR (made by 'ledgerctl init') at MOUNTPOINT.\n"
	       "Every change through the mount is journaled in NODE_DIR/journal before it\n"
	       "reaches NODE_DIR/store, and the same process replicates with the peers in\n"
	       "NODE_DIR/ledgerfs.conf.  With --serve the node replicates without a mount:\n"
	       "a backup or relay node that journals, applies and serves events.\n"
	       "A replica's mount is read-only (EROFS); 'ledgerctl status NODE_DIR' shows\n"
	       "the links.\n"
	       "\n"
	       "  -f               stay in the foreground, log to stderr\n"
	       "  -d               foreground with FUSE debug output\n"
	       "  -s               single-threaded\n"
	       "  -o OPTIONS       mount options: allow_other, entry_timeout=S and\n"
	       "                   attr_timeout=S (kernel cache times, default 1 day:\n"
	       "                   only this node changes its store),\n"
	       "                   max_idle_threads=N and the other libfuse options below\n"
	       "  -h, --help       this help\n"
	       "  -V, --version    version\n"
	       "\n"
	       "default_permissions is always on: the kernel checks modes and owners as on a\n"
	       "local filesystem.  Unmount with 'fusermount3 -u MOUNTPOINT' or 'umount'.\n"
	       "\n");
}

/*
 * The sysfs readahead knob of our mount's backing device, found through
 * mountinfo: a stat of the mountpoint would wait for this very process.
 */
static void find_readahead_knob(const char *mountpoint, char *knob, size_t len)
{
	char line[4096], mnt[PATH_MAX], dev[64];
	FILE *f = fopen("/proc/self/mountinfo", "r");

	knob[0] = '\0';
	if (!f)
		return;
	if (realpath(mountpoint, mnt)) {
		while (fgets(line, sizeof(line), f)) {
			char point[4096];

			if (sscanf(line, "%*s %*s %63s %*s %4095s", dev, point) == 2 &&
			    !strcmp(point, mnt) && strstr(line, " - fuse.ledgerfs ")) {
				snprintf(knob, len, "/sys/class/bdi/%s/read_ahead_kb", dev);
				break;
			}
		}
	}
	fclose(f);
}

/* Report the result to the waiting parent (or nobody, in the foreground). */
static void tell_parent(int fd, int status)
{
	unsigned char b = (unsigned char)status;

	if (fd < 0)
		return;
	if (write(fd, &b, 1) != 1)
		log_warn("cannot report start-up to the parent process: %s", strerror(errno));
	close(fd);
}

/* Detach from the terminal: the child continues, the parent exits with its verdict. */
static int detach(int *report_fd)
{
	int pfd[2];
	pid_t pid;
	unsigned char b = 1;

	if (pipe(pfd) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(pfd[1]);
		if (read(pfd[0], &b, 1) != 1)
			b = 1;
		_exit(b);
	}
	close(pfd[0]);
	*report_fd = pfd[1];
	if (setsid() < 0)
		return -errno;
	return 0;
}

/* Repl hooks: invalidate the kernel's caches for what each remote event touches. */
static void hook_before(void *arg, const struct event *ev, void **cookie)
{
	inval_before(arg, ev, (struct inval_note **)cookie);
}

static void hook_after(void *arg, const struct event *ev, int result, void *cookie)
{
	inval_after(arg, cookie);
}

static void quiet_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/*
 * The inode table keeps a descriptor per object the kernel has looked up,
 * so the usual soft limit of 1024 open files would be reached by a modest
 * tree: take the hard limit.
 */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open files limit: %s", strerror(errno));
	}
}

/*
 * A receiver frees a frame's decoded events and LevelDB a flushed
 * memtable, megabytes at a time, and takes as much again at once: left
 * to its defaults, malloc gives that memory back and every page of it
 * faults in anew, which costs more than the apply itself on these VMs.
 * Keep up to 64 MiB free, and keep blocks of up to 32 MiB (LevelDB's
 * write batches) on the heap instead of in fresh mappings.
 */
static void keep_heap(void)
{
	if (!mallopt(M_TRIM_THRESHOLD, 64 << 20) || !mallopt(M_MMAP_THRESHOLD, 32 << 20))
		log_warn("cannot tune malloc's trim and mmap thresholds");
}

/* Leave the terminal for syslog once start-up succeeded. */
static void go_background(int *report)
{
	if (chdir("/") < 0)
		log_warn("chdir /: %s", strerror(errno));
	log_to_syslog();
	quiet_stdio();
	tell_parent(*report, 0);
	*report = -1;
}

/* ledgerfs --serve NODE_DIR [-f]: replicate until SIGINT, SIGTERM or SIGHUP. */
static int serve_main(int argc, char **argv)
{
	const char *dir = NULL;
	char real[PATH_MAX], err[1024];
	struct node *n = NULL;
	struct repl *repl = NULL;
	int foreground = 0, report = -1, rc = 1, r, sig, i;
	sigset_t set;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--serve"))
			continue;
		if (!strcmp(argv[i], "-f"))
			foreground = 1;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage();
			return 0;
		} else if (argv[i][0] != '-' && !dir)
			dir = argv[i];
		else {
			fprintf(stderr, "ledgerfs: usage: ledgerfs --serve NODE_DIR [-f]\n");
			return 2;
		}
	}
	if (!dir) {
		fprintf(stderr, "ledgerfs: usage: ledgerfs --serve NODE_DIR [-f]\n");
		return 2;
	}
	if (!realpath(dir, real)) {
		fprintf(stderr, "ledgerfs: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	umask(0);
	raise_nofile();
	keep_heap();
	if (!foreground && (r = detach(&report)) < 0) {
		fprintf(stderr, "ledgerfs: cannot detach: %s\n", strerror(-r));
		return 1;
	}
	/* Threads inherit the mask, so the signals reach sigwait() below. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	r = node_open(real, NODE_OPEN_MOUNT | NODE_OPEN_REPLAY | NODE_OPEN_REBUILD, &n, err,
		      sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerfs: %s\n", err);
		goto out;
	}
	log_init("ledgerfs", node_cfg(n)->name);
	r = repl_start(n, NULL, &repl);
	if (r < 0) {
		fprintf(stderr, "ledgerfs: %s: cannot start replication: %s\n", real, strerror(-r));
		goto out;
	}
	if (!foreground)
		go_background(&report);
	log_info("%s serving (no mount)", real);
	sigwait(&set, &sig);
	log_info("stopping on signal %d", sig);
	rc = 0;
out:
	repl_stop(repl);
	if (n)
		node_close(n, rc == 0);
	tell_parent(report, rc ? rc : 1);
	return rc;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts cmd = {0};
	struct fuse_loop_config *loop = NULL;
	struct opts o = {.entry_timeout = LFS_CACHE_TIMEOUT, .attr_timeout = LFS_CACHE_TIMEOUT};
	struct node *n = NULL;
	struct fuse_session *se = NULL;
	struct repl *repl = NULL;
	struct repl_hooks hooks;
	struct lfs_fs fs;
	int fs_ready = 0;
	char real[PATH_MAX], err[1024], fsname[PATH_MAX + 16];
	int report = -1, mounted = 0, rc = 1, r;

	log_init("ledgerfs", NULL);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--serve"))
			return serve_main(argc, argv);
	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) < 0)
		goto out;
	if (o.show_help) {
		usage();
		fuse_cmdline_help();
		fuse_lowlevel_help();
		rc = 0;
		goto out;
	}
	if (o.show_version) {
		printf("ledgerfs %s (libfuse %s)\n", LEDGERFS_VERSION, fuse_pkgversion());
		rc = 0;
		goto out;
	}
	if (fuse_parse_cmdline(&args, &cmd) < 0)
		goto out;
	if (!o.node_dir || !cmd.mountpoint) {
		fprintf(stderr,
			"ledgerfs: usage: ledgerfs NODE_DIR MOUNTPOINT [-f] [-o OPTIONS]\n");
		rc = 2;
		goto out;
	}
	if (!realpath(o.node_dir, real)) {
		fprintf(stderr, "ledgerfs: %s: %s\n", o.node_dir, strerror(errno));
		goto out;
	}
	snprintf(fsname, sizeof(fsname), "-ofsname=%s", real);
	if (fuse_opt_add_arg(&args, "-odefault_permissions,subtype=ledgerfs") < 0 ||
	    fuse_opt_add_arg(&args, fsname) < 0)
		goto out;
	/* The node's files keep exactly the modes their events carry. */
	umask(0);
	raise_nofile();
	keep_heap();
	if (!cmd.foreground) {
		r = detach(&report);
		if (r < 0) {
			fprintf(stderr, "ledgerfs: cannot detach: %s\n", strerror(-r));
			goto out;
		}
	}
	r = node_open(real, NODE_OPEN_MOUNT | NODE_OPEN_REPLAY | NODE_OPEN_REBUILD, &n, err,
		      sizeof(err));
	if (r < 0) {
		fprintf(stderr, "ledgerfs: %s\n", err);
		goto out;
	}
	log_init("ledgerfs", node_cfg(n)->name);
	r = lfs_fs_init(&fs, n);
	if (r < 0) {
		fprintf(stderr, "ledgerfs: %s: %s\n", real, strerror(-r));
		goto out;
	}
	fs_ready = 1;
	fs.entry_timeout = o.entry_timeout;
	fs.attr_timeout = o.attr_timeout;
	se = fuse_session_new(&args, lfs_fuse_operations(), sizeof(struct fuse_lowlevel_ops), &fs);
	if (!se)
		goto out;
	if (fuse_session_mount(se, cmd.mountpoint) < 0)
		goto out;
	mounted = 1;
	find_readahead_knob(cmd.mountpoint, fs.readahead_knob, sizeof(fs.readahead_knob));
	if (fuse_set_signal_handlers(se) < 0)
		goto out;
	signal(SIGPIPE, SIG_IGN);
	fs.se = se;
	hooks = (struct repl_hooks){.arg = &fs, .before = hook_before, .after = hook_after};
	r = repl_start(n, &hooks, &repl);
	if (r < 0) {
		fprintf(stderr, "ledgerfs: %s: cannot start replication: %s\n", real, strerror(-r));
		goto out;
	}
	if (!cmd.foreground)
		go_background(&report);
	log_info("%s mounted at %s", real, cmd.mountpoint);
	if (cmd.singlethread) {
		r = fuse_session_loop(se);
	} else {
		loop = fuse_loop_cfg_create();
		if (!loop)
			goto out;
		fuse_loop_cfg_set_clone_fd(loop, cmd.clone_fd);
		/*
		 * Mutations serialise on the node lock, so threads beyond a
		 * few only add wake-ups and lock contention (measured: 4
		 * threads write 3 times faster than libfuse's default 10).
		 */
		fuse_loop_cfg_set_max_threads(loop, cmd.max_threads > 0 && cmd.max_threads <= 1024
							? cmd.max_threads
							: DEFAULT_MAX_THREADS);
		if (cmd.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(loop, cmd.max_idle_threads);
		r = fuse_session_loop_mt(se, loop);
	}
	fuse_remove_signal_handlers(se);
	rc = r == 0 ? 0 : 1;
out:
	repl_stop(repl);
	if (mounted)
		fuse_session_unmount(se);
	if (se)
		fuse_session_destroy(se);
	if (fs_ready)
		lfs_fs_destroy(&fs);
	if (n) {
		node_close(n, rc == 0);
		log_info("%s unmounted%s", real, rc == 0 ? " cleanly" : "");
	}
	tell_parent(report, rc ? rc : 1);
	fuse_loop_cfg_destroy(loop);
	free(cmd.mountpoint);
	free(o.node_dir);
	fuse_opt_free_args(&args);
	return rc;
}
