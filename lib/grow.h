/*
 * grow.h - growing a heap array by doubling.
 */
#ifndef LEDGERFS_GROW_H
#define LEDGERFS_GROW_H

#include <stddef.h>

/*
 * Make the array *pp (of *cap elements, each the size of **pp) hold at
 * least need elements, doubling from 64.  0, or -ENOMEM (out of memory, or
 * a size past SIZE_MAX) with the array as it was.  Elements past the old
 * *cap are uninitialized.  The caller owns and frees *pp.
 */
#define grow_array(pp, cap, need) grow_array_sized((pp), (cap), (need), sizeof(**(pp)))

/* grow_array() with the element size given: pp points to a pointer to elements of elem bytes. */
int grow_array_sized(void *pp, size_t *cap, size_t need, size_t elem);

#endif
