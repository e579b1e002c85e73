/*
 * grow.c - growing a heap array by doubling (see grow.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "lib/grow.h"

int grow_array_sized(void *pp, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 64;
	void *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
	if (elem && ncap > SIZE_MAX / elem)
		return -ENOMEM;
	p = realloc(*(void **)pp, ncap * elem);
	if (!p)
		return -ENOMEM;
	*(void **)pp = p;
	*cap = ncap;
	return 0;
}
