/*
 * grow.h - growing a heap array by doubling.
 */
#ifndef LEDGERFS_GROW_H
#define LEDGERFS_GROW_H

#include <stddef.h>

/*
 * Make the array at *pp (a pointer to any element type, *cap elements of
 * elem bytes) hold at least need elements, doubling from 64.  0, or
 * -ENOMEM with the array as it was.  The caller owns and frees *pp.
 */
int grow_array(void *pp, size_t *cap, size_t need, size_t elem);

#endif
