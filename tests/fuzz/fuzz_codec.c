/*
 * fuzz_codec.c - libFuzzer target for the event codec (journal/event.c).
 *
 * Any input must be rejected cleanly or decode to an event that encodes
 * back to exactly the bytes it came from and decodes again to the same
 * bytes, and whatever decodes must peek (event_peek_header()) to the same
 * header; anything else is a codec bug and abort()s.  Random bytes almost
 * never carry a valid CRC, which would leave the fuzzer stuck at the
 * checksum, so every input is also tried a second time with its record
 * length set to the input size and its CRC made right: that copy reaches
 * the length, type and per-field checks behind the checksum.
 *
 * Built with -DFUZZ_WRITE_SEEDS instead, the file is a small program that
 * writes a few valid records into the directory given as its argument, the
 * seed corpus tools/fuzz starts from.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/crc32c.h"
#include "journal/event.h"

static void put_u32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Encodes ev into a malloc'd buffer; aborts if the codec refuses its own output. */
static uint8_t *encode_or_abort(const struct event *ev, size_t *len)
{
	size_t cap = event_encoded_len(ev);
	uint8_t *buf = malloc(cap);

	if (!buf || event_encode(ev, buf, cap, len) != 0 || *len != cap)
		abort();
	return buf;
}

/* The header a peek read is the decoded event's. */
static int same_head(const struct event_head *h, const struct event *ev, size_t used)
{
	return h->len == used && h->type == ev->type && h->flags == ev->flags &&
	       h->origin == ev->origin && h->seq == ev->seq && h->hlc == ev->hlc &&
	       h->term == ev->term;
}

static void check_round_trip(const uint8_t *data, size_t size)
{
	struct event ev, again;
	struct event_head h;
	const char *why = NULL;
	size_t used = 0, len, len2, used2 = 0;
	uint8_t *buf, *buf2;
	int peeked = event_peek_header(data, size, &h, NULL) == 0;

	if (event_decode(data, size, &ev, &used, &why) != 0) {
		if (!why)
			abort();
		return;
	}
	if (used > size || !peeked || !same_head(&h, &ev, used))
		abort();
	buf = encode_or_abort(&ev, &len);
	if (len != used || memcmp(buf, data, len) != 0)
		abort();
	if (event_decode(buf, len, &again, &used2, &why) != 0 || used2 != len)
		abort();
	buf2 = encode_or_abort(&again, &len2);
	if (len2 != len || memcmp(buf2, buf, len) != 0)
		abort();
	free(buf2);
	free(buf);
	event_free(&again);
	event_free(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *sealed;

	check_round_trip(data, size);
	if (size < 8 || size > EVENT_MAX_RECORD)
		return 0;
	sealed = malloc(size);
	if (!sealed)
		abort();
	memcpy(sealed, data, size);
	put_u32le(sealed, (uint32_t)size);
	put_u32le(sealed + 4, crc32c(0, sealed + 8, size - 8));
	check_round_trip(sealed, size);
	free(sealed);
	return 0;
}

#ifdef FUZZ_WRITE_SEEDS
static int write_seed(const char *dir, int n, const struct event *ev)
{
	char path[4096];
	size_t len;
	uint8_t *buf = encode_or_abort(ev, &len);
	FILE *f;
	int ret = -1;

	snprintf(path, sizeof(path), "%s/seed-%02d", dir, n);
	f = fopen(path, "wb");
	if (!f)
		goto out;
	if (fwrite(buf, 1, len, f) == len)
		ret = 0;
	if (fclose(f) != 0)
		ret = -1;
out:
	if (ret < 0)
		perror(path);
	free(buf);
	return ret;
}

int main(int argc, char **argv)
{
	static const unsigned types[] = {EV_CREATE,   EV_SYMLINK, EV_RENAME, EV_WRITE,
					 EV_SETXATTR, EV_UTIMENS, EV_VOID,   EV_ROLE};
	int ret = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct event ev = {.type = (uint8_t)types[i], .origin = 1, .seq = i + 1};

		ev.hlc = (uint64_t)1700000000000 << 16;
		ev.fid = (struct fid){1, 100 + i};
		ev.mode = 0100644;
		if (event_set_path(&ev, "dir/file") || event_set_path2(&ev, "dir/other") ||
		    event_set_name(&ev, "user.tag") || event_set_data(&ev, "target", 6))
			abort();
		ret |= write_seed(argv[1], (int)i, &ev);
		event_free(&ev);
	}
	{
		/* A write whose payload sits in the value log: no inline data. */
		struct event ev = {.type = EV_WRITE, .flags = EVENT_F_VREF, .seq = 99};

		ev.vref = (struct vref){3, 65536, 1 << 20, 0x12345678};
		ret |= write_seed(argv[1], 99, &ev);
	}
	return ret ? 1 : 0;
}
#endif
