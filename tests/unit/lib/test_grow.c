/*
 * test_grow.c - lib/grow.c: first size, doubling, contents kept, the
 * element size taken from the pointer, and sizes past SIZE_MAX refused.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/grow.h"

struct triple {
	uint64_t a, b, c;
};

Test(grow, starts_at_64_then_doubles_to_fit)
{
	uint32_t *v = NULL;
	size_t cap = 0;

	cr_assert_eq(grow_array(&v, &cap, 1), 0);
	cr_expect_eq(cap, 64);
	cr_assert_eq(grow_array(&v, &cap, 65), 0);
	cr_expect_eq(cap, 128);
	cr_assert_eq(grow_array(&v, &cap, 1000), 0);
	cr_expect_eq(cap, 1024);
	free(v);
}

Test(grow, does_nothing_while_the_array_is_big_enough)
{
	char *v = NULL, *before;
	size_t cap = 0;

	cr_assert_eq(grow_array(&v, &cap, 10), 0);
	before = v;
	cr_expect_eq(grow_array(&v, &cap, 64), 0);
	cr_expect_eq(grow_array(&v, &cap, 0), 0);
	cr_expect_eq(v, before);
	cr_expect_eq(cap, 64);
	free(v);
}

Test(grow, keeps_the_elements_and_sizes_them_by_type)
{
	struct triple *v = NULL;
	size_t cap = 0, i;

	for (i = 0; i < 5000; i++) {
		cr_assert_eq(grow_array(&v, &cap, i + 1), 0);
		v[i] = (struct triple){i, 2 * i, 3 * i};
	}
	cr_expect_eq(cap, 8192);
	for (i = 0; i < 5000; i++)
		cr_assert(v[i].a == i && v[i].b == 2 * i && v[i].c == 3 * i, "element %zu", i);
	free(v);
}

Test(grow, refuses_a_size_past_size_max_and_leaves_the_array)
{
	struct triple *v = NULL, *before;
	size_t cap = 0;

	cr_assert_eq(grow_array(&v, &cap, 3), 0);
	v[2].c = 42;
	before = v;
	cr_expect_eq(grow_array(&v, &cap, SIZE_MAX / sizeof(*v) + 1), -ENOMEM);
	cr_expect_eq(grow_array(&v, &cap, SIZE_MAX), -ENOMEM);
	cr_expect_eq(v, before);
	cr_expect_eq(cap, 64);
	cr_expect_eq(v[2].c, 42);
	free(v);
}

Test(grow, takes_an_explicit_element_size)
{
	void *v = NULL;
	size_t cap = 0;

	cr_assert_eq(grow_array_sized(&v, &cap, 100, 3), 0);
	cr_expect_eq(cap, 128);
	memset(v, 1, cap * 3);
	free(v);
}
