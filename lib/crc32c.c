/*
 * crc32c.c - CRC32C (Castagnoli), the checksum of every journal record and
 * value-log payload.
 *
 * Every event is checksummed when it is written, read back, sent and
 * received, and write payloads can be megabytes, so the checksum sits on
 * the hot path.  On x86-64 with SSE4.2 the crc32 instruction does eight
 * bytes per step; elsewhere a 256-entry table does one byte per step.
 * Both compute the same function: reflected polynomial 0x82F63B78, state
 * inverted on entry and exit, so crc32c(crc32c(0, a), b) == crc32c(0, ab).
 *
 * The table and the choice of path are made once, on first use, under
 * pthread_once, so callers need no init call and any thread may go first.
 */
#include <pthread.h>
#include <string.h>

#include "lib/crc32c.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[256];
static uint32_t (*crc_update)(uint32_t state, const uint8_t *p, size_t len);
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static uint32_t crc32c_soft(uint32_t state, const uint8_t *p, size_t len)
{
	for (; len > 0; len--)
		state = crc_table[(state ^ *p++) & 0xff] ^ (state >> 8);
	return state;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t state, const uint8_t *p,
							       size_t len)
{
	uint64_t s = state;
	uint64_t word;

	/* memcpy keeps the load legal at any alignment; it compiles to one mov. */
	while (len >= 8) {
		memcpy(&word, p, 8);
		s = _mm_crc32_u64(s, word);
		p += 8;
		len -= 8;
	}
	state = (uint32_t)s;
	for (; len > 0; len--)
		state = _mm_crc32_u8(state, *p++);
	return state;
}
#endif

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[i] = c;
	}
	crc_update = crc32c_soft;
#if defined(__x86_64__)
	/* Needed when the first checksum is taken from a constructor. */
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2"))
		crc_update = crc32c_sse42;
#endif
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc32c_init);
	if (len == 0)
		return crc;
	return ~crc_update(~crc, buf, len);
}
