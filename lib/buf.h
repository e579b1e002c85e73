/*
 * buf.h - a growable byte buffer to append encoded data to.
 *
 * Frames, plans and xattr blobs are built by appending to one: fixed-width
 * integers go in little-endian (lib/bytes.h), like everything on disk and
 * on the wire.  Keep a buffer and buf_reset() it between uses, so its
 * memory is reused instead of faulted in again.
 */
#ifndef LEDGERFS_BUF_H
#define LEDGERFS_BUF_H

#include <stddef.h>
#include <stdint.h>

/*
 * Start from BUF_INIT (all zero).  data is malloc'd and owned by the
 * buffer, released with buf_free(); a caller may take it instead and
 * start the buffer again from BUF_INIT.
 */
struct buf {
	uint8_t *data;
	size_t len; /* bytes in use */
	size_t cap; /* bytes allocated */
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		0                                                                                  \
	}

/*
 * Make room for extra more bytes after len, doubling.  0, -ENOMEM, or
 * -EOVERFLOW when len + extra is past SIZE_MAX; the buffer is unchanged
 * on error.
 */
int buf_reserve(struct buf *b, size_t extra);

/* Append n bytes at p (p may be NULL when n is 0).  0, -ENOMEM or -EOVERFLOW. */
int buf_put(struct buf *b, const void *p, size_t n);

/* Append v little-endian.  0, -ENOMEM or -EOVERFLOW. */
int buf_put16(struct buf *b, uint16_t v);
int buf_put32(struct buf *b, uint32_t v);
int buf_put64(struct buf *b, uint64_t v);

/* Forget the contents, keep the memory. */
void buf_reset(struct buf *b);

/* Free the memory; *b is BUF_INIT again. */
void buf_free(struct buf *b);

#endif
