/*
 * test_relpath.c - lib/relpath.c: going down appends "/name" at the
 * parent's length, going up cuts back, the top shows as ".", and a path
 * grows past PATH_MAX.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lib/relpath.h"

Test(relpath, goes_down_and_back_up)
{
	struct relpath rp = {0};
	size_t a;

	cr_expect_str_eq(relpath_str(&rp), ".");
	relpath_cut(&rp, 0);
	cr_assert_eq(relpath_set(&rp, 0, "a"), 0);
	cr_expect_str_eq(rp.p, "a");
	a = rp.len;
	cr_assert_eq(relpath_set(&rp, a, "bb"), 0);
	cr_expect_str_eq(rp.p, "a/bb");
	cr_expect_eq(rp.len, 4);
	cr_assert_eq(relpath_set(&rp, a, "c"), 0);
	cr_expect_str_eq(relpath_str(&rp), "a/c", "a sibling replaces the name at its length");
	relpath_cut(&rp, a);
	cr_expect_str_eq(rp.p, "a");
	cr_assert_eq(relpath_set(&rp, 0, "z"), 0);
	cr_expect_str_eq(rp.p, "z");
	relpath_cut(&rp, 0);
	cr_expect_str_eq(rp.p, "");
	cr_expect_str_eq(relpath_str(&rp), ".");
	free(rp.p);
}

Test(relpath, grows_past_path_max)
{
	static const char name[] = "0123456789abcdef";
	struct relpath rp = {0};
	int i, levels = 2 * PATH_MAX / (int)sizeof(name);

	for (i = 0; i < levels; i++)
		cr_assert_eq(relpath_set(&rp, rp.len, name), 0);
	cr_expect_eq(rp.len, (size_t)levels * sizeof(name) - 1);
	cr_expect_eq(strlen(rp.p), rp.len);
	cr_expect_gt(rp.len, PATH_MAX);
	free(rp.p);
}
