/*
 * test_buf.c - lib/buf.c: appending bytes and little-endian integers,
 * memory reused after a reset, and sizes past SIZE_MAX refused.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

Test(buf, appends_bytes_and_little_endian_integers)
{
	static const uint8_t want[] = {'a',  'b',  0x34, 0x12, 0x78, 0x56, 0x34, 0x12,
				       0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01};
	struct buf b = BUF_INIT;

	cr_assert_eq(buf_put(&b, "ab", 2), 0);
	cr_assert_eq(buf_put(&b, NULL, 0), 0);
	cr_assert_eq(buf_put16(&b, 0x1234), 0);
	cr_assert_eq(buf_put32(&b, 0x12345678), 0);
	cr_assert_eq(buf_put64(&b, 0x0123456789abcdefull), 0);
	cr_assert_eq(b.len, sizeof(want));
	cr_assert_geq(b.cap, b.len);
	cr_expect_arr_eq(b.data, want, sizeof(want));
	buf_free(&b);
}

Test(buf, keeps_what_it_holds_while_growing)
{
	struct buf b = BUF_INIT;
	uint32_t i;

	for (i = 0; i < 100000; i++)
		cr_assert_eq(buf_put32(&b, i), 0);
	cr_assert_eq(b.len, 400000);
	for (i = 0; i < 100000; i++)
		cr_assert_eq(b.data[4 * i] | b.data[4 * i + 1] << 8 | b.data[4 * i + 2] << 16 |
				 (uint32_t)b.data[4 * i + 3] << 24,
			     i);
	buf_free(&b);
}

Test(buf, grows_and_is_reused)
{
	struct buf b = BUF_INIT;
	uint8_t *data;
	size_t cap;

	cr_assert_eq(buf_reserve(&b, 1000), 0);
	cr_assert_geq(b.cap, 1000);
	data = b.data;
	cap = b.cap;
	b.len = 1000;
	buf_reset(&b);
	cr_assert_eq(b.len, 0);
	cr_assert_eq(buf_reserve(&b, cap), 0);
	cr_assert_eq(b.data, data, "a reset buffer reallocated memory it already had");
	b.len = 1;
	cr_assert_eq(buf_reserve(&b, SIZE_MAX), -EOVERFLOW);
	cr_assert_eq(buf_put(&b, data, SIZE_MAX), -EOVERFLOW);
	cr_assert_eq(b.data, data, "a refused reserve left the buffer as it was");
	cr_assert_eq(b.len, 1);
	buf_free(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.cap, 0);
	cr_assert_eq(b.len, 0);
}

Test(buf, hands_its_memory_to_a_caller)
{
	struct buf b = BUF_INIT;
	uint8_t *taken;

	cr_assert_eq(buf_put(&b, "xyz", 3), 0);
	taken = b.data;
	b = (struct buf)BUF_INIT;
	cr_expect_arr_eq(taken, "xyz", 3);
	free(taken);
	buf_free(&b);
}
