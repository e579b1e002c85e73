/*
 * test_snap_links.c - resync/snap_links.c: a snapshot's new name of a file the
 * node already has, at a path the plan leaves alone, becomes a hard link
 * to it; anything else stays a copy.  Runs as root (trusted.* xattrs).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "resync/merkle.h"
#include "resync/snap_links.h"
#include "store/store.h"
#include "tree.h"

static char base[] = "/tmp/test_snap_links.XXXXXX";

static void setup(void)
{
	cr_assert_not_null(mkdtemp(base));
}

static void teardown(void)
{
	tree_remove(base);
}

TestSuite(snap_links, .init = setup, .fini = teardown);

static void file_with_fid(const char *rel, uint64_t counter)
{
	uint8_t v[16];

	tree_put_file(base, rel, "contents");
	put_le64(v, 1);
	put_le64(v + 8, counter);
	tree_xset(base, rel, STORE_XATTR_FID, v, sizeof(v));
}

static struct merkle *build(void)
{
	struct merkle *m = NULL;
	int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(merkle_build(fd, &m, NULL), 0);
	close(fd);
	return m;
}

static void add(struct snap_plan *p, uint8_t op, const char *path, uint64_t counter)
{
	struct snap_step st = {.op = op, .path = (char *)path};

	cr_assert_eq(snap_plan_add(p, &st), 0, "step %s", path);
	p->v[p->n - 1].fid = (struct fid){counter ? 1 : 0, counter};
}

Test(snap_links, new_name_of_an_untouched_file_becomes_a_link)
{
	struct snap_plan plan = {0};
	uint32_t named[] = {0, 2, 3, 4};
	struct merkle *mine;
	size_t linked = 99;

	tree_make_dir(base, "keep", 0755);
	tree_make_dir(base, "gone", 0755);
	file_with_fid("keep/p1", 5);
	file_with_fid("gone/q", 6);
	file_with_fid("keep/other", 7);
	mine = build();
	add(&plan, SNAP_OP_OBJ, "new/p2", 5);	  /* p1 stays: a link to it */
	add(&plan, SNAP_OP_DELETE, "gone", 0);	  /* q goes with its directory */
	add(&plan, SNAP_OP_OBJ, "new/q2", 6);	  /* so q2 stays a copy */
	add(&plan, SNAP_OP_OBJ, "keep/other", 7); /* the same path: replaced, not linked */
	add(&plan, SNAP_OP_OBJ, "new/nofid", 0);  /* no fid received: a copy */
	cr_assert_eq(snap_link_unchanged(&plan, named, 4, mine, &linked), 0);
	cr_assert_eq(linked, 1);
	cr_assert_eq(plan.v[0].op, SNAP_OP_LINK);
	cr_assert_str_eq(plan.v[0].link_to, "keep/p1");
	cr_assert_eq(plan.v[2].op, SNAP_OP_OBJ);
	cr_assert_eq(plan.v[3].op, SNAP_OP_OBJ);
	cr_assert_eq(plan.v[4].op, SNAP_OP_OBJ);
	snap_plan_free(&plan);
	merkle_free(mine);
}

Test(snap_links, a_file_the_plan_replaces_is_not_linked_to)
{
	struct snap_plan plan = {0};
	uint32_t named[] = {1};
	struct merkle *mine;
	size_t linked = 99;

	tree_make_dir(base, "d", 0755);
	file_with_fid("d/p1", 5);
	mine = build();
	add(&plan, SNAP_OP_OBJ, "d/p1", 9); /* p1 gets another file */
	add(&plan, SNAP_OP_OBJ, "p2", 5);
	cr_assert_eq(snap_link_unchanged(&plan, named, 1, mine, &linked), 0);
	cr_assert_eq(linked, 0);
	cr_assert_eq(plan.v[1].op, SNAP_OP_OBJ);
	snap_plan_free(&plan);
	merkle_free(mine);
}
