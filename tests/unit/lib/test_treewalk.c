/*
 * test_treewalk.c - lib/treewalk.c: visiting order, symlinks left alone,
 * trees deeper than PATH_MAX on one descriptor, a moved subtree caught on
 * the way up, and errors that stop the walk where they happen.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/treewalk.h"
#include "tree.h"

static char root[] = "/tmp/test_treewalk.XXXXXX";

static void setup(void)
{
	cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
	tree_remove(root);
}

TestSuite(treewalk, .init = setup, .fini = teardown);

/* What a walk saw, one line per callback: "enter PATH", "entry PATH", "leave PATH" ("." the root).
 */
struct log {
	char text[4096];
	size_t len;
	const char *fail_at; /* the entry callback fails with -EIO here; NULL: never */
	int open_fds_max;    /* the most descriptors open at an enter callback */
	size_t path_max;     /* the longest path seen */
	size_t entries;
	bool quiet; /* count only */
};

static void note(struct treewalk *tw, const char *what)
{
	struct log *l = tw->arg;
	int n;

	if (tw->path.len > l->path_max)
		l->path_max = tw->path.len;
	if (l->quiet)
		return;
	n = snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s %s\n", what,
		     relpath_str(&tw->path));
	cr_assert_lt((size_t)n, sizeof(l->text) - l->len, "log full");
	l->len += (size_t)n;
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	cr_assert_not_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int log_enter(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	struct log *l = tw->arg;
	int n = open_fds();

	cr_assert(S_ISDIR(st->st_mode));
	if (n > l->open_fds_max)
		l->open_fds_max = n;
	note(tw, "enter");
	return 0;
}

static int log_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		     size_t index, size_t count, void *dir, void **sub)
{
	struct log *l = tw->arg;

	cr_assert_lt(index, count);
	cr_assert_eq(dfd, tw->fd);
	l->entries++;
	note(tw, "entry");
	if (l->fail_at && !strcmp(relpath_str(&tw->path), l->fail_at))
		return -EIO;
	return S_ISDIR(st->st_mode) ? TREEWALK_DESCEND : 0;
}

static int log_leave(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	note(tw, "leave");
	return 0;
}

static const struct treewalk_ops log_ops = {
    .enter = log_enter,
    .entry = log_entry,
    .leave = log_leave,
};

static int walk(struct log *l, const struct treewalk_ops *ops)
{
	struct treewalk tw;
	int err;

	cr_assert_eq(treewalk_open(&tw, AT_FDCWD, root, 0), 0);
	err = treewalk_run(&tw, ops, l, NULL);
	if (!err) {
		cr_expect_eq(tw.depth, 0);
		cr_expect_eq(tw.path.len, 0);
	}
	treewalk_close(&tw);
	return err;
}

Test(treewalk, visits_sorted_entries_each_directory_right_after_itself)
{
	struct log l = {0};

	tree_make_dir(root, "b", 0755);
	tree_put_file(root, "b/x", "x");
	tree_make_dir(root, "b/empty", 0755);
	tree_put_file(root, "a", "a");
	tree_put_file(root, "B", "B");
	tree_make_dir(root, "c", 0755);
	tree_make_dir(root, "c/d", 0755);
	tree_put_file(root, "c/d/e", "e");
	cr_assert_eq(walk(&l, &log_ops), 0);
	cr_expect_str_eq(l.text, "enter .\n"
				 "entry B\n"
				 "entry a\n"
				 "entry b\n"
				 "enter b\n"
				 "entry b/empty\n"
				 "enter b/empty\n"
				 "leave b/empty\n"
				 "entry b/x\n"
				 "leave b\n"
				 "entry c\n"
				 "enter c\n"
				 "entry c/d\n"
				 "enter c/d\n"
				 "entry c/d/e\n"
				 "leave c/d\n"
				 "leave c\n"
				 "leave .\n");
}

Test(treewalk, leaves_symlinks_unfollowed)
{
	struct log l = {0};

	tree_make_dir(root, "d", 0755);
	tree_put_file(root, "d/f", "f");
	tree_make_symlink(root, "to_d", "d");
	tree_make_symlink(root, "to_outside", "/");
	cr_assert_eq(walk(&l, &log_ops), 0);
	cr_expect_str_eq(l.text, "enter .\n"
				 "entry d\n"
				 "enter d\n"
				 "entry d/f\n"
				 "leave d\n"
				 "entry to_d\n"
				 "entry to_outside\n"
				 "leave .\n");
}

static void *dir_of(const char *name)
{
	return (void *)name;
}

static int data_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
		      size_t index, size_t count, void *dir, void **sub)
{
	cr_assert_eq(*sub, dir);
	if (!strcmp(name, "sub"))
		*sub = dir_of("sub's");
	return S_ISDIR(st->st_mode) ? TREEWALK_DESCEND : 0;
}

static int data_leave(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	int *seen = tw->arg;

	if (!strcmp(relpath_str(&tw->path), "."))
		cr_expect_str_eq(dir, "root's");
	else if (!strcmp(relpath_str(&tw->path), "sub"))
		cr_expect_str_eq(dir, "sub's");
	else
		cr_expect_str_eq(dir, "sub's", "%s inherits its parent's", relpath_str(&tw->path));
	(*seen)++;
	return 0;
}

Test(treewalk, gives_each_directory_the_pointer_its_entry_chose)
{
	static const struct treewalk_ops ops = {.entry = data_entry, .leave = data_leave};
	struct treewalk tw;
	int seen = 0;

	tree_make_dir(root, "sub", 0755);
	tree_make_dir(root, "sub/inner", 0755);
	cr_assert_eq(treewalk_open(&tw, AT_FDCWD, root, 0), 0);
	cr_assert_eq(treewalk_run(&tw, &ops, &seen, dir_of("root's")), 0);
	treewalk_close(&tw);
	cr_expect_eq(seen, 3);
}

Test(treewalk, walks_deeper_than_path_max_on_one_descriptor)
{
	static const char name[] = "a_directory_name_of_forty_characters_abc";
	const int levels = 2 * PATH_MAX / (int)sizeof(name);
	struct log l = {.quiet = true};
	int before;

	tree_make_chain(root, name, levels);
	before = open_fds();
	cr_assert_eq(walk(&l, &log_ops), 0);
	cr_expect_eq(l.entries, (size_t)levels);
	cr_expect_gt(l.path_max, PATH_MAX);
	/* The walk's own descriptor, and the one open_fds() reads with. */
	cr_expect_leq(l.open_fds_max, before + 1);
	cr_expect_eq(open_fds(), before);
}

static int error_fail(struct treewalk *tw, int err, const char *why)
{
	char *msg = tw->arg;

	snprintf(msg, 256, "%s: %d %s", relpath_str(&tw->path), err, why ? why : "-");
	return -ENOSYS;
}

Test(treewalk, stops_at_the_first_error_where_it_happened)
{
	struct log l = {.fail_at = "b/c"};
	struct treewalk tw;

	tree_make_dir(root, "b", 0755);
	tree_put_file(root, "b/c", "c");
	tree_put_file(root, "b/d", "d");
	tree_put_file(root, "e", "e");
	cr_assert_eq(treewalk_open(&tw, AT_FDCWD, root, 0), 0);
	cr_expect_eq(treewalk_run(&tw, &log_ops, &l, NULL), -EIO);
	cr_expect_str_eq(relpath_str(&tw.path), "b/c");
	cr_expect_eq(tw.depth, 1);
	treewalk_close(&tw);
	cr_expect_str_eq(l.text, "enter .\n"
				 "entry b\n"
				 "enter b\n"
				 "entry b/c\n");
}

/* Moves the directory being walked out from under the walk, to root/elsewhere. */
static int moving_enter(struct treewalk *tw, int fd, const struct stat *st, void *dir)
{
	char from[PATH_MAX], to[PATH_MAX];

	if (strcmp(relpath_str(&tw->path), "a/b"))
		return 0;
	tree_at(from, root, "a/b");
	tree_at(to, root, "elsewhere");
	cr_assert_eq(rename(from, to), 0);
	return 0;
}

static int descend_entry(struct treewalk *tw, int dfd, const char *name, const struct stat *st,
			 size_t index, size_t count, void *dir, void **sub)
{
	return S_ISDIR(st->st_mode) ? TREEWALK_DESCEND : 0;
}

Test(treewalk, run_fails_with_eagain_when_a_directory_moved_under_it)
{
	static const struct treewalk_ops ops = {
	    .enter = moving_enter, .entry = descend_entry, .fail = error_fail};
	char msg[256] = "";
	struct treewalk tw;

	tree_make_dir(root, "a", 0755);
	tree_make_dir(root, "a/b", 0755);
	tree_make_dir(root, "z", 0755);
	cr_assert_eq(treewalk_open(&tw, AT_FDCWD, root, 0), 0);
	cr_expect_eq(treewalk_run(&tw, &ops, msg, NULL), -ENOSYS);
	treewalk_close(&tw);
	cr_expect_str_eq(msg, "a/b: -11 moved while being read");
}

Test(treewalk, stepping_down_and_up_checks_the_way_back)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct treewalk tw;
	struct stat st;

	tree_make_dir(root, "a", 0755);
	tree_make_dir(root, "a/b", 0755);
	tree_make_symlink(root, "a/link", "b");
	cr_assert_eq(treewalk_open(&tw, AT_FDCWD, root, O_NOFOLLOW), 0);
	cr_expect_eq(treewalk_up(&tw), -EINVAL);
	cr_assert_eq(treewalk_down(&tw, "a"), 0);
	cr_expect_lt(treewalk_down(&tw, "link"), 0, "a symlink is not walked into");
	cr_expect_eq(treewalk_down(&tw, "missing"), -ENOENT);
	cr_expect_eq(tw.depth, 1);
	cr_assert_eq(treewalk_down(&tw, "b"), 0);
	tree_at(from, root, "a/b");
	cr_assert_eq(stat(from, &st), 0);
	cr_expect_eq(treewalk_stat(&tw)->st_ino, st.st_ino);
	cr_assert_eq(treewalk_up(&tw), 0);
	cr_assert_eq(treewalk_down(&tw, "b"), 0);
	tree_at(to, root, "b_moved");
	cr_assert_eq(rename(from, to), 0);
	cr_expect_eq(treewalk_up(&tw), -ESTALE);
	cr_expect_eq(tw.depth, 2, "the walk stays where it was");
	treewalk_close(&tw);
	cr_expect_eq(tw.fd, -1);
}

Test(treewalk, open_refuses_a_symlink_with_o_nofollow)
{
	char link[PATH_MAX];
	struct treewalk tw;

	tree_make_dir(root, "d", 0755);
	tree_make_symlink(root, "l", "d");
	tree_at(link, root, "l");
	cr_expect_eq(treewalk_open(&tw, AT_FDCWD, link, 0), 0);
	treewalk_close(&tw);
	cr_expect_lt(treewalk_open(&tw, AT_FDCWD, link, O_NOFOLLOW), 0);
	treewalk_close(&tw);
}
