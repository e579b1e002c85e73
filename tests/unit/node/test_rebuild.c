/*
 * test_rebuild.c - rebuilding a store without its kept-aside events
 * (node/rebuild.c).
 *
 * Each test makes a real node in its own mkdtemp directory, commits a few
 * local events, then declares the last two a kept-aside tail (as applying
 * a peer's promotion would) and rebuilds.  The states a crash leaves
 * between the renames are made by hand.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/node_int.h"
#include "node/rebuild.h"
#include "tree.h"

static char tmp[64];
static char dir[128];
static struct node *n;
static uint64_t self;

static void commit(struct event ev)
{
	struct apply_ctx ctx = APPLY_CTX_INIT;

	pthread_mutex_lock(&n->lock);
	cr_assert_eq(node_commit_locked(n, &ev, &ctx), 0);
	pthread_mutex_unlock(&n->lock);
}

static void write_keep(const char *data, uint64_t off)
{
	commit((struct event){.type = EV_WRITE,
			      .fid = {self, 1},
			      .path = "keep",
			      .offset = off,
			      .data = (uint8_t *)data,
			      .data_len = (uint32_t)strlen(data)});
}

/* Events 1-2 stay; 3-4 are the tail: a new file and a change to a kept one. */
static void setup(void)
{
	struct config cfg;
	char err[512];

	strcpy(tmp, "/tmp/test_rebuild.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(dir, sizeof(dir), "%s/node", tmp);
	config_defaults(&cfg);
	strcpy(cfg.name, "a");
	cr_assert_eq(node_create(dir, &cfg, 1, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(node_open(dir, 0, &n, err, sizeof(err)), 0, "%s", err);
	self = cfg.node_id;
	commit((struct event){.type = EV_CREATE, .mode = S_IFREG | 0644, .path = "keep"});
	write_keep("base", 0);
	commit((struct event){.type = EV_CREATE, .mode = S_IFREG | 0600, .path = "tail"});
	write_keep("+tail", 4);
	n->tails[0] = (struct node_tail){self, 3, 4, 2};
	n->ntails = 1;
	n->rebuild_needed = 1;
	cr_assert_eq(journal_meta_put_u64(n->journal, JOURNAL_META_REBUILD, 1, 1), 0);
}

static void teardown(void)
{
	node_close(n, 0);
	tree_remove(tmp);
}

TestSuite(rebuild, .init = setup, .fini = teardown);

static void read_at(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	r = read(fd, buf, len - 1);
	close(fd);
	cr_assert_geq(r, 0);
	buf[r] = 0;
}

static int exists(const char *rel)
{
	char p[PATH_MAX];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	return lstat(p, &st) == 0;
}

/* Names in the node directory starting with store.fenced-; the last one in name. */
static int fenced_copies(char *name, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int k = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, REBUILD_FENCED_PREFIX, strlen(REBUILD_FENCED_PREFIX)))
			continue;
		snprintf(name, len, "%s", de->d_name);
		k++;
	}
	closedir(d);
	return k;
}

static void check_rebuilt(void)
{
	char p[PATH_MAX], buf[64], fenced[NAME_MAX + 1];
	uint64_t flag = 1;
	struct stat st;

	snprintf(p, sizeof(p), "%s/store/keep", dir);
	read_at(p, buf, sizeof(buf));
	cr_assert_str_eq(buf, "base");
	cr_assert(!exists("store/tail"));
	cr_assert(!exists(REBUILD_WORK_DIR));
	cr_assert_eq(fenced_copies(fenced, sizeof(fenced)), 1);
	cr_assert_eq(strncmp(fenced, "store.fenced-2-", 15), 0, "%s", fenced);
	snprintf(p, sizeof(p), "%s/%s/keep", dir, fenced);
	read_at(p, buf, sizeof(buf));
	cr_assert_str_eq(buf, "base+tail");
	snprintf(p, sizeof(p), "%s/%s/tail", dir, fenced);
	cr_assert_eq(lstat(p, &st), 0);
	cr_assert_eq(n->rebuild_needed, 0);
	cr_assert_eq(journal_meta_get_u64(n->journal, JOURNAL_META_REBUILD, &flag), 0);
	cr_assert_eq(flag, 0);
	/* n->store is the new store. */
	cr_assert_eq(fstatat(n->store->root, "keep", &st, 0), 0);
	cr_assert_eq(st.st_size, 4);
	cr_assert_eq(store_check_stamp(n->store, n->cfg.cluster_id), 0);
}

Test(rebuild, store_without_tail_and_old_one_kept)
{
	char err[512];

	cr_assert_eq(rebuild_store(n, err, sizeof(err)), 0, "%s", err);
	check_rebuilt();
	/* Nothing to do a second time. */
	cr_assert_eq(rebuild_store(n, err, sizeof(err)), 0, "%s", err);
	check_rebuilt();
}

Test(rebuild, unfinished_build_is_removed_and_made_again)
{
	char p[PATH_MAX], err[512];

	snprintf(p, sizeof(p), "%s/%s", dir, REBUILD_WORK_DIR);
	cr_assert_eq(mkdir(p, 0755), 0);
	snprintf(p, sizeof(p), "%s/%s/junk", dir, REBUILD_WORK_DIR);
	cr_assert_eq(mkdir(p, 0755), 0);
	cr_assert_eq(rebuild_store(n, err, sizeof(err)), 0, "%s", err);
	check_rebuilt();
	cr_assert(!exists("store/junk"));
}

Test(rebuild, crash_after_moving_the_old_store_finishes_without_rebuilding)
{
	char p[PATH_MAX], q[PATH_MAX], err[512];

	cr_assert_eq(rebuild_store(n, err, sizeof(err)), 0, "%s", err);
	/* As if the crash came between the two renames: no store, a finished build. */
	snprintf(p, sizeof(p), "%s/store", dir);
	snprintf(q, sizeof(q), "%s/%s", dir, REBUILD_WORK_DIR);
	cr_assert_eq(rename(p, q), 0);
	n->rebuild_needed = 1;
	cr_assert_eq(rebuild_store(n, err, sizeof(err)), 0, "%s", err);
	check_rebuilt();
}

Test(rebuild, refuses_a_store_that_is_not_the_nodes)
{
	char p[PATH_MAX], q[PATH_MAX], err[512];
	uint64_t flag = 0;

	snprintf(p, sizeof(p), "%s/store", dir);
	snprintf(q, sizeof(q), "%s/stamped", tmp);
	cr_assert_eq(rename(p, q), 0);
	cr_assert_eq(mkdir(p, 0755), 0);
	cr_assert_eq(rebuild_store(n, err, sizeof(err)), -ENODATA);
	cr_assert_not_null(strstr(err, "not this node's store"), "%s", err);
	cr_assert_eq(n->rebuild_needed, 1);
	cr_assert_eq(journal_meta_get_u64(n->journal, JOURNAL_META_REBUILD, &flag), 0);
	cr_assert_eq(flag, 1);
	cr_assert(!exists(REBUILD_WORK_DIR));
}

Test(rebuild, refuses_a_missing_store_without_a_finished_build)
{
	char p[PATH_MAX], q[PATH_MAX], err[512];

	snprintf(p, sizeof(p), "%s/store", dir);
	snprintf(q, sizeof(q), "%s/elsewhere", tmp);
	cr_assert_eq(rename(p, q), 0);
	cr_assert_eq(rebuild_store(n, err, sizeof(err)), -ENOENT);
	cr_assert_not_null(strstr(err, "store missing"), "%s", err);
	cr_assert_eq(n->rebuild_needed, 1);
}

Test(rebuild, keep_links_copies_the_tree_by_hard_links_and_survives_a_leftover)
{
	char p[PATH_MAX], kept[PATH_MAX], fenced[NAME_MAX + 1], rel[NAME_MAX + 32], buf[64];
	struct stat live, copy;
	int fd;

	snprintf(p, sizeof(p), "%s/store/sub", dir);
	cr_assert_eq(mkdir(p, 0750), 0);
	snprintf(p, sizeof(p), "%s/store/sub/deep", dir);
	fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	snprintf(p, sizeof(p), "%s/store/link", dir);
	cr_assert_eq(symlink("keep", p), 0);
	/* What a crash mid-copy leaves is started over. */
	snprintf(p, sizeof(p), "%s/%s", dir, REBUILD_KEEP_WORK_DIR);
	cr_assert_eq(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/%s/junk", dir, REBUILD_KEEP_WORK_DIR);
	cr_assert_eq(mkdir(p, 0700), 0);

	pthread_mutex_lock(&n->lock);
	cr_assert_eq(rebuild_keep_links(n, kept, sizeof(kept)), 0);
	pthread_mutex_unlock(&n->lock);
	cr_assert(!exists(REBUILD_KEEP_WORK_DIR));
	cr_assert_eq(fenced_copies(fenced, sizeof(fenced)), 1);
	cr_assert_eq(strncmp(fenced, "store.fenced-2-", 15), 0, "%s", fenced);
	snprintf(p, sizeof(p), "%s/%s", dir, fenced);
	cr_assert_str_eq(kept, p);
	/* One inode for both names: the copy costs nothing and keeps the tail's bytes. */
	snprintf(p, sizeof(p), "%s/store/keep", dir);
	cr_assert_eq(stat(p, &live), 0);
	snprintf(p, sizeof(p), "%s/%s/keep", dir, fenced);
	cr_assert_eq(stat(p, &copy), 0);
	cr_assert_eq(live.st_ino, copy.st_ino);
	read_at(p, buf, sizeof(buf));
	cr_assert_str_eq(buf, "base+tail");
	snprintf(p, sizeof(p), "%s/%s/sub", dir, fenced);
	cr_assert_eq(lstat(p, &copy), 0);
	cr_assert(S_ISDIR(copy.st_mode));
	cr_assert_eq(copy.st_mode & 07777, 0750);
	cr_assert(exists("store/sub/deep"));
	snprintf(rel, sizeof(rel), "%s/sub/deep", fenced);
	cr_assert(exists(rel));
	snprintf(p, sizeof(p), "%s/%s/link", dir, fenced);
	cr_assert_eq(lstat(p, &copy), 0);
	cr_assert(S_ISLNK(copy.st_mode));
	snprintf(rel, sizeof(rel), "%s/junk", fenced);
	cr_assert(!exists(rel));
}
