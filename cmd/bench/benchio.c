/*
 * ledgerfs-benchio: the workload driver behind tools/bench.
 *
 *   ledgerfs-benchio WORKLOAD DIR [--size BYTES] [--bs BYTES] [--secs S] [--files N]
 *                    [--jobs N] [--futimens]
 *
 * Each workload runs against DIR and prints one machine-readable line,
 * "result WORKLOAD key=value ...", so that tools/bench can run exactly the
 * same code on the native filesystem, on libfuse's passthrough_ll and on
 * ledgerfs and compare the three. It is C rather than a shell loop or dd so
 * that the figures measure the filesystem, not fork/exec or a tool's own
 * buffering.
 *
 * Each workload uses one page-aligned buffer, allocated once: on these
 * machines an allocation of 128 KiB or more is an mmap/munmap pair with a TLB
 * shootdown, which would be measured instead of the filesystem. Every 4 KiB
 * page written is stamped with a unique counter and the buffer is filled with
 * pseudo-random bytes, so neither compression (LevelDB's snappy) nor
 * deduplication makes a store look cheaper than it is. Every return value is
 * checked; errors name the path and go to stderr, and the exit code is 1
 * (2 for a usage error).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE	  4096u
#define MIB	  (1024u * 1024u)
#define NAME_FMT  "%s/files/f%07u"
#define RNAME_FMT "%s/files/r%07u"

struct opts {
	uint64_t size;	 /* file size in bytes (seqwrite, randwrite) */
	uint64_t bs;	 /* block size in bytes (seqwrite, seqread) */
	double secs;	 /* duration (randwrite, fsyncwrite) */
	unsigned files;	 /* file count (create, meta) */
	const char *dir; /* directory the workload runs in */
	unsigned jobs;	 /* processes running the workload at once (randwrite, create) */
	int futimens;	 /* create: set each file's times before its close */
};

/*
 * With --jobs, called by each process when its timed part is about to
 * begin: it waits there until every process got that far, so that the
 * timed parts run together.  NULL for one process.
 */
static void (*start_barrier)(void);

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

/* xorshift64*: fast, fixed seed, so every setup sees the same offsets. */
static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1du;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "ledgerfs-benchio: %s %s: %s\n", what, path, strerror(errno));
	return -1;
}

/* One aligned buffer of len bytes filled with pseudo-random data; the caller frees it. */
static unsigned char *buf_new(size_t len)
{
	unsigned char *buf = aligned_alloc(PAGE, len);

	if (!buf) {
		fprintf(stderr, "ledgerfs-benchio: cannot allocate %zu bytes\n", len);
		return NULL;
	}
	for (size_t i = 0; i + sizeof(uint64_t) <= len; i += sizeof(uint64_t)) {
		uint64_t r = rng_next();

		memcpy(buf + i, &r, sizeof(r));
	}
	return buf;
}

/* Make every page of buf unique by writing a running counter at its start. */
static void buf_stamp(unsigned char *buf, size_t len, uint64_t *counter)
{
	for (size_t i = 0; i < len; i += PAGE) {
		memcpy(buf + i, counter, sizeof(*counter));
		(*counter)++;
	}
}

static int write_full(int fd, const unsigned char *buf, size_t len, off_t off, const char *path)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, buf, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("write", path);
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static int close_checked(int fd, const char *path)
{
	if (close(fd) < 0)
		return fail("close", path);
	return 0;
}

static void print_rate(const char *name, uint64_t bytes, double secs)
{
	printf("result %s bytes=%" PRIu64 " secs=%.3f mbps=%.1f\n", name, bytes, secs,
	       (double)bytes / secs / 1e6);
}

/* Write o->size bytes in o->bs blocks to DIR/seq.dat, then fsync; time both. */
static int run_seqwrite(const struct opts *o)
{
	char path[PATH_MAX];
	unsigned char *buf;
	uint64_t counter = 0, done = 0;
	int fd, r = -1;
	double t0;

	snprintf(path, sizeof(path), "%s/seq.dat", o->dir);
	buf = buf_new(o->bs);
	if (!buf)
		return -1;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		fail("open", path);
		goto out_buf;
	}
	t0 = now();
	while (done < o->size) {
		size_t len = o->size - done < o->bs ? o->size - done : o->bs;

		buf_stamp(buf, len, &counter);
		if (write_full(fd, buf, len, (off_t)done, path) < 0)
			goto out_fd;
		done += len;
	}
	if (fsync(fd) < 0) {
		fail("fsync", path);
		goto out_fd;
	}
	print_rate("seqwrite", done, now() - t0);
	r = 0;
out_fd:
	if (close_checked(fd, path) < 0)
		r = -1;
out_buf:
	free(buf);
	return r;
}

/*
 * Read DIR/seq.dat to its end in o->bs blocks. The file's clean pages are
 * dropped first with POSIX_FADV_DONTNEED; on a FUSE mount that empties only the
 * mount's cache, so tools/bench also drops the kernel's caches (drop_caches).
 */
static int run_seqread(const struct opts *o)
{
	char path[PATH_MAX];
	unsigned char *buf;
	uint64_t done = 0;
	int fd, err, r = -1;
	double t0;

	snprintf(path, sizeof(path), "%s/seq.dat", o->dir);
	buf = buf_new(o->bs);
	if (!buf)
		return -1;
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		fail("open", path);
		goto out_buf;
	}
	err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (err) {
		errno = err;
		fail("posix_fadvise", path);
		goto out_fd;
	}
	t0 = now();
	for (;;) {
		ssize_t n = read(fd, buf, o->bs);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail("read", path);
			goto out_fd;
		}
		if (n == 0)
			break;
		done += (uint64_t)n;
	}
	print_rate("seqread", done, now() - t0);
	r = 0;
out_fd:
	if (close_checked(fd, path) < 0)
		r = -1;
out_buf:
	free(buf);
	return r;
}

/*
 * Fill DIR/rand.dat (o->size bytes) and fsync it, untimed; then overwrite
 * random 4 KiB pages for o->secs and fsync. The rate counts the final fsync,
 * so a filesystem cannot win by leaving the writes in memory.
 */
static int run_randwrite(const struct opts *o)
{
	char path[PATH_MAX];
	unsigned char *buf;
	uint64_t counter = 0, ops = 0, pages = o->size / PAGE;
	int fd, r = -1;
	double t0, end, secs;

	snprintf(path, sizeof(path), "%s/rand.dat", o->dir);
	if (pages == 0) {
		fprintf(stderr, "ledgerfs-benchio: randwrite: --size below %u\n", PAGE);
		return -1;
	}
	buf = buf_new(MIB);
	if (!buf)
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		fail("open", path);
		goto out_buf;
	}
	for (uint64_t off = 0; off < pages * PAGE; off += MIB) {
		size_t len = pages * PAGE - off < MIB ? pages * PAGE - off : MIB;

		buf_stamp(buf, len, &counter);
		if (write_full(fd, buf, len, (off_t)off, path) < 0)
			goto out_fd;
	}
	if (fsync(fd) < 0) {
		fail("fsync", path);
		goto out_fd;
	}
	if (start_barrier)
		start_barrier();
	t0 = now();
	end = t0 + o->secs;
	do {
		/* Read the clock every 64 writes: cheap, and precise enough for seconds. */
		for (int i = 0; i < 64; i++, ops++) {
			off_t off = (off_t)(rng_next() % pages * PAGE);

			buf_stamp(buf, PAGE, &counter);
			if (write_full(fd, buf, PAGE, off, path) < 0)
				goto out_fd;
		}
	} while (now() < end);
	if (fsync(fd) < 0) {
		fail("fsync", path);
		goto out_fd;
	}
	secs = now() - t0;
	printf("result randwrite ops=%" PRIu64 " secs=%.3f iops=%.0f\n", ops, secs,
	       (double)ops / secs);
	r = 0;
out_fd:
	if (close_checked(fd, path) < 0)
		r = -1;
out_buf:
	free(buf);
	return r;
}

/* Append 4 KiB to DIR/fsync.dat and fsync it, again and again for o->secs. */
static int run_fsyncwrite(const struct opts *o)
{
	char path[PATH_MAX];
	unsigned char *buf;
	uint64_t counter = 0, ops = 0;
	int fd, r = -1;
	double t0, end, secs;

	snprintf(path, sizeof(path), "%s/fsync.dat", o->dir);
	buf = buf_new(PAGE);
	if (!buf)
		return -1;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		fail("open", path);
		goto out_buf;
	}
	t0 = now();
	end = t0 + o->secs;
	do {
		buf_stamp(buf, PAGE, &counter);
		if (write_full(fd, buf, PAGE, (off_t)(ops * PAGE), path) < 0)
			goto out_fd;
		if (fsync(fd) < 0) {
			fail("fsync", path);
			goto out_fd;
		}
		ops++;
	} while (now() < end);
	secs = now() - t0;
	printf("result fsyncwrite ops=%" PRIu64 " secs=%.3f iops=%.0f\n", ops, secs,
	       (double)ops / secs);
	r = 0;
out_fd:
	if (close_checked(fd, path) < 0)
		r = -1;
out_buf:
	free(buf);
	return r;
}

/*
 * Create DIR/files/fNNNNNNN, o->files of them, each written with 4 KiB and closed.
 * With o->futimens, each file's access and modification times are also set with
 * futimens() before the close: what a replica's apply engine does for each file
 * of a catch-up (create, write, utimens), so that tools/bench repl can time it
 * on the bare disk as catch-up's native reference.
 */
static int run_create(const struct opts *o)
{
	char path[PATH_MAX];
	unsigned char *buf;
	uint64_t counter = 0;
	int r = -1;
	double t0, secs;
	/* A fixed past time, one second apart per file: explicit times, as an apply sets. */
	struct timespec times[2] = {{.tv_sec = 1700000000}, {.tv_sec = 1700000000}};

	snprintf(path, sizeof(path), "%s/files", o->dir);
	if (mkdir(path, 0755) < 0)
		return fail("mkdir", path);
	buf = buf_new(PAGE);
	if (!buf)
		return -1;
	if (start_barrier)
		start_barrier();
	t0 = now();
	for (unsigned i = 0; i < o->files; i++) {
		int fd;

		snprintf(path, sizeof(path), NAME_FMT, o->dir, i);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd < 0) {
			fail("create", path);
			goto out;
		}
		buf_stamp(buf, PAGE, &counter);
		if (write_full(fd, buf, PAGE, 0, path) < 0) {
			close_checked(fd, path);
			goto out;
		}
		if (o->futimens) {
			times[0].tv_sec = times[1].tv_sec = 1700000000 + (time_t)i;
			if (futimens(fd, times) < 0) {
				fail("futimens", path);
				close_checked(fd, path);
				goto out;
			}
		}
		if (close_checked(fd, path) < 0)
			goto out;
	}
	secs = now() - t0;
	printf("result create files=%u secs=%.3f ops=%.0f\n", o->files, secs,
	       (double)o->files / secs);
	r = 0;
out:
	free(buf);
	return r;
}

/*
 * On the files made by create: stat each, rename each (fN -> rN), unlink each;
 * each phase timed alone, then all three together. Removes DIR/files at the end.
 */
static int run_meta(const struct opts *o)
{
	char path[PATH_MAX], to[PATH_MAX];
	struct stat st;
	double t0, t_stat, t_rename, t_unlink;
	unsigned n = o->files;

	t0 = now();
	for (unsigned i = 0; i < n; i++) {
		snprintf(path, sizeof(path), NAME_FMT, o->dir, i);
		if (stat(path, &st) < 0)
			return fail("stat", path);
		if (st.st_size != PAGE) {
			fprintf(stderr, "ledgerfs-benchio: %s: size %jd, expected %u\n", path,
				(intmax_t)st.st_size, PAGE);
			return -1;
		}
	}
	t_stat = now();
	for (unsigned i = 0; i < n; i++) {
		snprintf(path, sizeof(path), NAME_FMT, o->dir, i);
		snprintf(to, sizeof(to), RNAME_FMT, o->dir, i);
		if (rename(path, to) < 0)
			return fail("rename", path);
	}
	t_rename = now();
	for (unsigned i = 0; i < n; i++) {
		snprintf(path, sizeof(path), RNAME_FMT, o->dir, i);
		if (unlink(path) < 0)
			return fail("unlink", path);
	}
	t_unlink = now();
	snprintf(path, sizeof(path), "%s/files", o->dir);
	if (rmdir(path) < 0)
		return fail("rmdir", path);
	printf("result meta files=%u stat=%.0f rename=%.0f unlink=%.0f ops=%.0f secs=%.3f\n", n,
	       n / (t_stat - t0), n / (t_rename - t_stat), n / (t_unlink - t_rename),
	       3.0 * n / (t_unlink - t0), t_unlink - t0);
	return 0;
}

/* Parse a count with an optional K/M/G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'G':
		v <<= 30;
		end++;
		break;
	}
	if (*end != '\0' || v == 0)
		return -1;
	*out = v;
	return 0;
}

static int ready_fd = -1, go_fd = -1;

/* A job is ready: tell the parent, then wait until it closes the go pipe. */
static void job_barrier(void)
{
	char c = 'r';

	if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) < 0)
		perror("ledgerfs-benchio: job barrier");
}

/* The value of key=... in a result line, or -1. */
static double result_field(const char *line, const char *key)
{
	char pat[32];
	const char *p;

	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

/*
 * Run workload o->jobs times at once, each in its own process and its own
 * directory DIR/jobN, the timed parts started together; print one result
 * line with the summed rate.  randwrite: each job's --size is --size/jobs.
 */
static int run_jobs(const char *name, int (*run)(const struct opts *o), const struct opts *o)
{
	int ready[2], go[2], out[2 * 64];
	pid_t pids[64];
	double rate = 0, secs = 0;
	uint64_t count = 0;
	unsigned j, started = 0;
	int r = 0;
	char c;

	if (o->jobs > 64 || pipe(ready) < 0 || pipe(go) < 0) {
		fprintf(stderr, "ledgerfs-benchio: cannot set up %u jobs\n", o->jobs);
		return -1;
	}
	fflush(stdout);
	for (j = 0; j < o->jobs; j++) {
		char dir[PATH_MAX];

		snprintf(dir, sizeof(dir), "%s/job%u", o->dir, j);
		if ((mkdir(dir, 0755) < 0 && errno != EEXIST) || pipe(out + 2 * j) < 0) {
			r = fail("mkdir", dir);
			break;
		}
		pids[j] = fork();
		if (pids[j] < 0) {
			r = fail("fork", dir);
			break;
		}
		if (pids[j] == 0) {
			struct opts mine = *o;

			mine.dir = dir;
			mine.size = o->size / o->jobs;
			rng_state += j;
			ready_fd = ready[1];
			go_fd = go[0];
			close(go[1]);
			start_barrier = job_barrier;
			if (dup2(out[2 * j + 1], STDOUT_FILENO) < 0)
				_exit(1);
			_exit(run(&mine) < 0 || fflush(stdout) != 0);
		}
		close(out[2 * j + 1]);
		started++;
	}
	close(ready[1]);
	for (j = 0; j < started; j++)
		if (read(ready[0], &c, 1) != 1)
			break; /* a job failed before its timed part */
	close(go[1]); /* every job that is ready starts now */
	for (j = 0; j < started; j++) {
		char line[512] = "";
		ssize_t n = read(out[2 * j], line, sizeof(line) - 1);
		int st;

		if (n > 0)
			line[n] = '\0';
		close(out[2 * j]);
		if (waitpid(pids[j], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
		    result_field(line, "secs") <= 0) {
			fprintf(stderr, "ledgerfs-benchio: %s job %u failed\n", name, j);
			r = -1;
			continue;
		}
		if (result_field(line, "secs") > secs)
			secs = result_field(line, "secs");
		if (!strcmp(name, "randwrite")) {
			count += (uint64_t)result_field(line, "ops");
			rate += result_field(line, "iops");
		} else {
			count += (uint64_t)result_field(line, "files");
		}
	}
	close(ready[0]);
	close(go[0]);
	if (r < 0 || started < o->jobs)
		return -1;
	if (!strcmp(name, "randwrite"))
		printf("result randwrite jobs=%u ops=%" PRIu64 " secs=%.3f iops=%.0f\n", o->jobs,
		       count, secs, rate);
	else
		printf("result create jobs=%u files=%" PRIu64 " secs=%.3f ops=%.0f\n", o->jobs,
		       count, secs, (double)count / secs);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ledgerfs-benchio WORKLOAD DIR [options]\n"
		"\n"
		"workloads (each prints one line: result WORKLOAD key=value ...):\n"
		"  seqwrite    write DIR/seq.dat, --size bytes in --bs blocks, then fsync\n"
		"  seqread     read DIR/seq.dat in --bs blocks (drops its cached pages first)\n"
		"  randwrite   fill DIR/rand.dat (--size), then random 4 KiB writes for --secs,\n"
		"              then fsync; the rate includes the fsync\n"
		"  fsyncwrite  append 4 KiB to DIR/fsync.dat and fsync, for --secs\n"
		"  create      create+write 4 KiB+close --files files in DIR/files\n"
		"              (--futimens: also futimens() each file before its close)\n"
		"  meta        stat, rename, unlink the files of create; removes DIR/files\n"
		"\n"
		"options (sizes take K, M, G suffixes):\n"
		"  --size BYTES   file size (default 1G)\n"
		"  --bs BYTES     block size (default 1M)\n"
		"  --secs S       duration (default 10)\n"
		"  --files N      number of files (default 10000)\n"
		"  --jobs N       randwrite and create: N processes at once, each in DIR/jobK\n"
		"                 (randwrite: --size/N each), one result line with the total\n"
		"  --futimens     create: set each file's times with futimens() before close,\n"
		"                 as a replica's apply does (tools/bench repl's native loop)\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"size", required_argument, NULL, 's'}, {"bs", required_argument, NULL, 'b'},
	    {"secs", required_argument, NULL, 't'}, {"files", required_argument, NULL, 'n'},
	    {"jobs", required_argument, NULL, 'j'}, {"futimens", no_argument, NULL, 'u'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	static const struct {
		const char *name;
		int (*run)(const struct opts *o);
	} workloads[] = {
	    {"seqwrite", run_seqwrite},	    {"seqread", run_seqread}, {"randwrite", run_randwrite},
	    {"fsyncwrite", run_fsyncwrite}, {"create", run_create},   {"meta", run_meta},
	};
	struct opts o = {.size = 1ull << 30, .bs = MIB, .secs = 10, .files = 10000, .jobs = 1};
	uint64_t v;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_size(optarg, &o.size) < 0)
				goto bad;
			break;
		case 'b':
			if (parse_size(optarg, &o.bs) < 0 || o.bs % PAGE != 0)
				goto bad;
			break;
		case 't':
			o.secs = strtod(optarg, &end);
			if (*end != '\0' || !(o.secs > 0))
				goto bad;
			break;
		case 'n':
			if (parse_size(optarg, &v) < 0 || v > 9999999)
				goto bad;
			o.files = (unsigned)v;
			break;
		case 'j':
			if (parse_size(optarg, &v) < 0 || v > 64)
				goto bad;
			o.jobs = (unsigned)v;
			break;
		case 'u':
			o.futimens = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	o.dir = argv[optind + 1];
	for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
		if (strcmp(argv[optind], workloads[i].name) == 0) {
			int parallel = o.jobs > 1 && (workloads[i].run == run_randwrite ||
						      workloads[i].run == run_create);

			if ((parallel ? run_jobs(workloads[i].name, workloads[i].run, &o)
				      : workloads[i].run(&o)) < 0)
				return 1;
			return fflush(stdout) == 0 ? 0 : 1;
		}
	}
	fprintf(stderr, "ledgerfs-benchio: unknown workload '%s'\n", argv[optind]);
	usage(stderr);
	return 2;
bad:
	fprintf(stderr,
		"ledgerfs-benchio: bad value '%s' (sizes must be positive; --bs a multiple of "
		"%u)\n",
		optarg, PAGE);
	return 2;
}
