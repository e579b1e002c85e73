/*
 * test_snap_pipe.c - resync/snap_pipe.c: objects queued to the workers are
 * staged whole with their contents and metadata, through a queue
 * smaller than one file; they become visible under their final names only
 * by a flush, the worker's own when a limit is reached; a bad entry stops
 * the pipe with an error naming it, and stopping mid-object leaves no
 * staged object.  Runs as root (chown).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/snap_pipe.h"
#include "resync/snapshot.h"

static char node_dir[PATH_MAX];

static void setup(void)
{
	snprintf(node_dir, sizeof(node_dir), "/tmp/test_snap_pipe.XXXXXX");
	cr_assert_not_null(mkdtemp(node_dir));
}

static void teardown(void)
{
	char cmd[PATH_MAX + 32];

	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", node_dir);
	cr_expect_eq(system(cmd), 0);
}

TestSuite(snap_pipe, .init = setup, .fini = teardown);

static void digest_of(int n, uint8_t d[SNAP_DIGEST_LEN])
{
	memset(d, 0, SNAP_DIGEST_LEN);
	d[0] = (uint8_t)n;
	d[1] = 0xab;
}

/* The staged object of digest n, opened read-only, or -1. */
static int open_obj(int n)
{
	uint8_t d[SNAP_DIGEST_LEN];
	char path[PATH_MAX];
	int len, i;

	digest_of(n, d);
	len = snprintf(path, sizeof(path), "%s/%s/obj/", node_dir, SNAP_DIR);
	for (i = 0; i < SNAP_DIGEST_LEN; i++)
		len += snprintf(path + len, sizeof(path) - (size_t)len, "%02x", d[i]);
	return open(path, O_RDONLY);
}

static struct snap_meta file_meta(uint64_t size)
{
	return (struct snap_meta){
	    .mode = S_IFREG | 0640,
	    .uid = 1234,
	    .gid = 5678,
	    .size = size,
	    .mtime_sec = 1700000000,
	    .mtime_nsec = 42,
	};
}

static const struct snap_pipe_limits roomy = {
    .objs = 1000, .bytes = 1u << 30, .ms = 3600000, .max_bytes = 4096, .workers = 2};

Test(snap_pipe, two_workers_stage_whole_files_through_a_small_queue)
{
	struct snap_stage *s;
	struct snap_pipe *p;
	struct snap_meta m = file_meta(100000);
	uint8_t d[SNAP_DIGEST_LEN], *buf = malloc(m.size), *back = malloc(m.size);
	struct stat st;
	uint64_t off;
	int n, fd;

	for (off = 0; off < m.size; off++)
		buf[off] = (uint8_t)(off * 7);
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_pipe_start(s, &roomy, &p), 0);
	for (n = 1; n <= 3; n++) {
		digest_of(n, d);
		buf[0] = (uint8_t)n;
		cr_assert_eq(snap_pipe_begin(p, d, &m, "a/file"), 0);
		/* Pieces of 3000 bytes through a queue of 4096. */
		for (off = 0; off < m.size; off += 3000)
			cr_assert_eq(snap_pipe_write(p, off, buf + off,
						     m.size - off < 3000 ? m.size - off : 3000),
				     0);
		cr_assert_eq(snap_pipe_commit(p), 0);
	}
	cr_assert_eq(snap_pipe_drain(p, NULL), 0);
	/* Committed, not flushed: not under a final name yet. */
	cr_assert_eq(open_obj(1), -1);
	cr_assert_eq(snap_stage_flush(s), 0);
	for (n = 1; n <= 3; n++) {
		fd = open_obj(n);
		cr_assert_geq(fd, 0, "object %d", n);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_expect_eq(st.st_size, (off_t)m.size);
		cr_expect_eq(st.st_mode, m.mode);
		cr_expect_eq(st.st_uid, m.uid);
		cr_expect_eq(st.st_gid, m.gid);
		cr_expect_eq(st.st_mtim.tv_sec, m.mtime_sec);
		cr_expect_eq(st.st_mtim.tv_nsec, m.mtime_nsec);
		cr_assert_eq(pread(fd, back, m.size, 0), (ssize_t)m.size);
		buf[0] = (uint8_t)n;
		cr_expect_eq(memcmp(back, buf, m.size), 0, "contents of object %d", n);
		close(fd);
	}
	snap_pipe_stop(p);
	snap_stage_close(s);
	free(buf);
	free(back);
}

Test(snap_pipe, worker_flushes_when_a_limit_is_reached)
{
	const struct snap_pipe_limits two = {
	    .objs = 2, .bytes = 1u << 30, .ms = 3600000, .max_bytes = 1 << 20, .workers = 1};
	struct snap_stage *s;
	struct snap_pipe *p;
	struct snap_meta m = file_meta(0);
	uint8_t d[SNAP_DIGEST_LEN];
	int n, fd;

	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_pipe_start(s, &two, &p), 0);
	for (n = 1; n <= 3; n++) {
		digest_of(n, d);
		cr_assert_eq(snap_pipe_begin(p, d, &m, "empty"), 0);
		cr_assert_eq(snap_pipe_commit(p), 0);
	}
	cr_assert_eq(snap_pipe_drain(p, NULL), 0);
	for (n = 1; n <= 2; n++) {
		fd = open_obj(n);
		cr_expect_geq(fd, 0, "object %d flushed by the worker", n);
		if (fd >= 0)
			close(fd);
	}
	cr_expect_eq(open_obj(3), -1, "object 3 waits for the next flush");
	snap_pipe_stop(p);
	snap_stage_close(s);
}

Test(snap_pipe, bad_entry_stops_the_pipe_with_its_path)
{
	struct snap_stage *s;
	struct snap_pipe *p;
	struct snap_meta m = file_meta(10);
	uint8_t d[SNAP_DIGEST_LEN];
	const char *why = NULL;
	int rv;

	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_pipe_start(s, &roomy, &p), 0);
	digest_of(1, d);
	m.mode = S_IFDIR | 0755;
	cr_assert_eq(snap_pipe_begin(p, d, &m, "dir/bad"), 0);
	rv = snap_pipe_drain(p, &why);
	cr_assert_eq(rv, -EINVAL);
	cr_assert_not_null(why);
	cr_expect_not_null(strstr(why, "dir/bad"), "%s", why);
	/* It sticks: later calls fail too. */
	cr_expect_eq(snap_pipe_write(p, 0, "0123456789", 10), -EINVAL);
	cr_expect_eq(snap_pipe_commit(p), -EINVAL);
	snap_pipe_stop(p);
	snap_stage_close(s);
}

Test(snap_pipe, stop_mid_object_leaves_nothing_staged)
{
	struct snap_stage *s;
	struct snap_pipe *p;
	struct snap_meta m = file_meta(10);
	uint8_t d[SNAP_DIGEST_LEN];

	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_assert_eq(snap_pipe_start(s, &roomy, &p), 0);
	digest_of(1, d);
	cr_assert_eq(snap_pipe_begin(p, d, &m, "half"), 0);
	cr_assert_eq(snap_pipe_write(p, 0, "01234", 5), 0);
	cr_assert_eq(snap_pipe_drain(p, NULL), 0);
	snap_pipe_stop(p);
	cr_assert_eq(snap_stage_flush(s), 0);
	cr_expect_eq(open_obj(1), -1);
	snap_stage_close(s);
	/* Nor any temporary file: the next attempt starts clean. */
	cr_assert_eq(snap_stage_open(node_dir, &s), 0);
	cr_expect_eq(snap_stage_bytes(s), 0);
	snap_stage_close(s);
}
