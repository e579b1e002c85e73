/*
 * evtool.c - ledgerfs-evtool: event records made by the journal's own codec.
 *
 * Tests that play a peer send event records: odd ones, hostile ones (a
 * path that escapes the store) with a correct CRC.  Instead of a second
 * implementation of the record format in the tests' language, they ask
 * this tool, which fills a struct event from its arguments and prints
 * what event_encode() makes of it, so the format stays in journal/event.c
 * alone.  The encoder's own checks apply: a record it refuses cannot be
 * made here.  To read records, ledgerctl log --json decodes a journal.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal/event.h"

/* How the value of a FIELD=VALUE argument is read. */
enum kind {
	K_U64, /* one integer */
	K_U32,
	K_U16,
	K_PAIR, /* ORIGIN:N, two u64: a fid or an evid */
	K_TIME, /* SEC:NSEC, i64 and u32 */
	K_VREF, /* SEGMENT:OFFSET:LEN:CRC */
	K_STR,	/* bytes as given: path, path2, name, data */
	K_HEX,	/* the same bytes in hex */
};

/* Which string field a K_STR or K_HEX argument sets. */
enum str_field { S_PATH, S_PATH2, S_NAME, S_DATA };

struct field {
	const char *key;
	enum kind kind;
	size_t off; /* in struct event; for K_STR and K_HEX an enum str_field */
};

#define AT(member) offsetof(struct event, member)

static const struct field fields[] = {
    {"origin", K_U64, AT(origin)},     {"seq", K_U64, AT(seq)},
    {"hlc", K_U64, AT(hlc)},	       {"term", K_U64, AT(term)},
    {"flags", K_U16, AT(flags)},       {"fid", K_PAIR, AT(fid)},
    {"fid2", K_PAIR, AT(fid2)},	       {"base", K_PAIR, AT(base)},
    {"offset", K_U64, AT(offset)},     {"length", K_U64, AT(length)},
    {"rdev", K_U64, AT(rdev)},	       {"mode", K_U32, AT(mode)},
    {"uid", K_U32, AT(uid)},	       {"gid", K_U32, AT(gid)},
    {"op_flags", K_U32, AT(op_flags)}, {"atime", K_TIME, AT(atime_sec)},
    {"mtime", K_TIME, AT(mtime_sec)},  {"vref", K_VREF, AT(vref)},
    {"path", K_STR, S_PATH},	       {"path2", K_STR, S_PATH2},
    {"name", K_STR, S_NAME},	       {"data", K_STR, S_DATA},
    {"path-hex", K_HEX, S_PATH},       {"path2-hex", K_HEX, S_PATH2},
    {"name-hex", K_HEX, S_NAME},       {"data-hex", K_HEX, S_DATA},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: ledgerfs-evtool encode TYPE [FIELD=VALUE ...]\n"
		     "\n"
		     "Print, in hex on one line, the event record the journal's codec makes of\n"
		     "an event of TYPE with the given fields (the others 0 or empty).\n"
		     "\n"
		     "TYPE: one of");
	for (unsigned t = 0; t < 256; t++)
		if (event_type_info(t))
			fprintf(out, " %s", event_type_name(t));
	fprintf(out, "\n"
		     "FIELD: origin seq hlc term flags offset length rdev mode uid gid op_flags\n"
		     "         integers: decimal, 0x hex or 0 octal\n"
		     "       fid fid2 base   ORIGIN:N\n"
		     "       atime mtime     SEC:NSEC\n"
		     "       vref            SEGMENT:OFFSET:LEN:CRC\n"
		     "       path path2 name data            bytes as given\n"
		     "       path-hex path2-hex name-hex data-hex   the same in hex\n");
}

/* One unsigned integer up to max at s, which the char stop ends ('\0': the string). */
static int parse_uint(const char *s, uint64_t max, char stop, uint64_t *v, const char **end)
{
	char *e;

	if (*s == '-' || *s == '\0')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &e, 0);
	if (errno || e == s || *v > max || *e != stop)
		return -EINVAL;
	*end = e;
	return 0;
}

/* count unsigned integers separated by ':', each up to its max, the whole of s. */
static int parse_uints(const char *s, unsigned count, const uint64_t *max, uint64_t *v)
{
	for (unsigned i = 0; i < count; i++) {
		const char *end;

		if (parse_uint(s, max[i], i + 1 < count ? ':' : '\0', &v[i], &end) < 0)
			return -EINVAL;
		s = end + (i + 1 < count);
	}
	return 0;
}

static int parse_time(const char *s, int64_t *sec, uint32_t *nsec)
{
	uint64_t n;
	const char *end;
	char *e;

	errno = 0;
	*sec = strtoll(s, &e, 0);
	if (errno || e == s || *e != ':' || parse_uint(e + 1, UINT32_MAX, '\0', &n, &end) < 0)
		return -EINVAL;
	*nsec = (uint32_t)n;
	return 0;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The bytes hex spells, in a malloc'd buffer the caller frees (with a NUL after them). */
static int parse_hex(const char *hex, uint8_t **out, size_t *len)
{
	size_t n = strlen(hex);

	if (n % 2)
		return -EINVAL;
	*out = malloc(n / 2 + 1);
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(*out);
			*out = NULL;
			return -EINVAL;
		}
		(*out)[i] = (uint8_t)(hi << 4 | lo);
	}
	(*out)[n / 2] = '\0';
	*len = n / 2;
	return 0;
}

/*
 * Set a string field to len bytes.  The event's strings are C strings, so
 * a path or name with a NUL inside cannot be given; the encoder would
 * refuse it anyway.
 */
static int set_bytes(struct event *ev, enum str_field which, const uint8_t *p, size_t len)
{
	if (which == S_DATA)
		return len > UINT32_MAX ? -EINVAL : event_set_data(ev, p, (uint32_t)len);
	if (memchr(p, 0, len))
		return -EINVAL;
	if (which == S_PATH)
		return event_set_path(ev, (const char *)p);
	if (which == S_PATH2)
		return event_set_path2(ev, (const char *)p);
	return event_set_name(ev, (const char *)p);
}

static int set_field(struct event *ev, const struct field *f, const char *val)
{
	static const uint64_t pair_max[] = {UINT64_MAX, UINT64_MAX};
	static const uint64_t vref_max[] = {UINT32_MAX, UINT64_MAX, UINT32_MAX, UINT32_MAX};
	char *base = (char *)ev + f->off;
	uint64_t v[4];
	const char *end;
	uint8_t *bytes;
	size_t len;
	int r;

	uint32_t u32;
	uint16_t u16;

	switch (f->kind) {
	case K_U64:
		r = parse_uint(val, UINT64_MAX, '\0', &v[0], &end);
		if (r == 0)
			memcpy(base, &v[0], sizeof(v[0]));
		return r;
	case K_U32:
		r = parse_uint(val, UINT32_MAX, '\0', &v[0], &end);
		u32 = (uint32_t)v[0];
		if (r == 0)
			memcpy(base, &u32, sizeof(u32));
		return r;
	case K_U16:
		r = parse_uint(val, UINT16_MAX, '\0', &v[0], &end);
		u16 = (uint16_t)v[0];
		if (r == 0)
			memcpy(base, &u16, sizeof(u16));
		return r;
	case K_PAIR:
		/* struct fid and struct evid are both two u64. */
		r = parse_uints(val, 2, pair_max, v);
		if (r == 0)
			memcpy(base, v, 2 * sizeof(uint64_t));
		return r;
	case K_TIME:
		/* atime_nsec follows atime_sec, as mtime_nsec follows mtime_sec. */
		return parse_time(val, (int64_t *)(void *)base,
				  (uint32_t *)(void *)(base + sizeof(int64_t)));
	case K_VREF:
		r = parse_uints(val, 4, vref_max, v);
		if (r == 0)
			ev->vref =
			    (struct vref){(uint32_t)v[0], v[1], (uint32_t)v[2], (uint32_t)v[3]};
		return r;
	case K_STR:
		return set_bytes(ev, (enum str_field)f->off, (const uint8_t *)val, strlen(val));
	case K_HEX:
		r = parse_hex(val, &bytes, &len);
		if (r == 0)
			r = set_bytes(ev, (enum str_field)f->off, bytes, len);
		free(bytes);
		return r;
	}
	return -EINVAL;
}

_Static_assert(offsetof(struct event, atime_nsec) == offsetof(struct event, atime_sec) + 8 &&
		   offsetof(struct event, mtime_nsec) == offsetof(struct event, mtime_sec) + 8,
	       "K_TIME finds the nsec right after the seconds");
_Static_assert(sizeof(struct fid) == 16 && sizeof(struct evid) == 16, "K_PAIR is two u64");

static const struct field *find_field(const char *arg, size_t keylen)
{
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (strlen(fields[i].key) == keylen && memcmp(fields[i].key, arg, keylen) == 0)
			return &fields[i];
	return NULL;
}

static int find_type(const char *name)
{
	for (unsigned t = 0; t < 256; t++)
		if (event_type_info(t) && strcmp(event_type_name(t), name) == 0)
			return (int)t;
	return -1;
}

static int encode(int argc, char **argv)
{
	struct event ev = {0};
	uint8_t *buf = NULL;
	size_t len = 0;
	int type, r, rc = 2;

	type = find_type(argv[0]);
	if (type < 0) {
		fprintf(stderr, "ledgerfs-evtool: unknown event type: %s\n", argv[0]);
		goto out;
	}
	ev.type = (uint8_t)type;
	for (int i = 1; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		const struct field *f = eq ? find_field(argv[i], (size_t)(eq - argv[i])) : NULL;

		if (!f) {
			fprintf(stderr, "ledgerfs-evtool: not a FIELD=VALUE: %s\n", argv[i]);
			goto out;
		}
		r = set_field(&ev, f, eq + 1);
		if (r < 0) {
			fprintf(stderr, "ledgerfs-evtool: %s: %s\n", argv[i],
				r == -ENOMEM ? strerror(ENOMEM) : "bad value");
			goto out;
		}
	}
	rc = 1;
	len = event_encoded_len(&ev);
	buf = malloc(len);
	if (!buf) {
		fprintf(stderr, "ledgerfs-evtool: %s\n", strerror(ENOMEM));
		goto out;
	}
	r = event_encode(&ev, buf, len, &len);
	if (r < 0) {
		fprintf(stderr, "ledgerfs-evtool: the codec refuses this %s event: %s\n", argv[0],
			strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		printf("%02x", buf[i]);
	printf("\n");
	rc = fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
	if (rc)
		fprintf(stderr, "ledgerfs-evtool: cannot write the record\n");
out:
	free(buf);
	event_free(&ev);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc < 3 || strcmp(argv[1], "encode") != 0) {
		usage(stderr);
		return 2;
	}
	return encode(argc - 2, argv + 2);
}
