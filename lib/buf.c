/*
 * buf.c - a growable byte buffer to append encoded data to (see buf.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/grow.h"

int buf_reserve(struct buf *b, size_t extra)
{
	if (extra > SIZE_MAX - b->len)
		return -EOVERFLOW;
	return grow_array(&b->data, &b->cap, b->len + extra);
}

int buf_put(struct buf *b, const void *p, size_t n)
{
	int err = buf_reserve(b, n);

	if (err)
		return err;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_put16(struct buf *b, uint16_t v)
{
	uint8_t x[2];

	put_le16(x, v);
	return buf_put(b, x, sizeof(x));
}

int buf_put32(struct buf *b, uint32_t v)
{
	uint8_t x[4];

	put_le32(x, v);
	return buf_put(b, x, sizeof(x));
}

int buf_put64(struct buf *b, uint64_t v)
{
	uint8_t x[8];

	put_le64(x, v);
	return buf_put(b, x, sizeof(x));
}

void buf_reset(struct buf *b)
{
	b->len = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf)BUF_INIT;
}
