/*
 * config.c - load and save the node's INI configuration (see config.h).
 *
 * The file is small and edited by people, so parsing is strict: anything
 * unknown, repeated or malformed is an error that names the file, the line
 * and the key, and parsing stops at the first one.
 *
 * libinih does the key = value splitting, but it truncates section names to
 * 49 bytes and never reports a section that has no keys.  So the line reader
 * handed to inih also looks at each raw line: it counts lines (the packaged
 * inih does not pass line numbers to the handler), recognises section
 * headers itself, and rejects lines too long for inih's fixed line buffer
 * and indented lines (which inih would silently join to the previous value).
 *
 * Keys are described once, in config_keys[], which drives parsing, the
 * required-key check and saving, so the three cannot drift apart.  Saving
 * parses its own output back and compares it with the input before
 * touching the disk, which guarantees an exact round trip.
 */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/files.h"

#define DEFAULT_BATCH_EVENTS 256
#define DEFAULT_BATCH_BYTES  1048576
#define DEFAULT_BATCH_MS     5
#define DEFAULT_SYNC_TIMEOUT 5000  /* ms */
#define DEFAULT_RETAIN_AGE   86400 /* seconds: one day */
#define DEFAULT_CHECKPOINT   30	   /* seconds */

#define CHECKPOINT_MAX 3600
/* A century; also keeps retain_age in milliseconds far from overflowing. */
#define RETAIN_AGE_MAX 3153600000u

enum config_section {
	SEC_NONE,
	SEC_NODE,
	SEC_REPL,
	SEC_JOURNAL,
	SEC_ARCHIVE,
	SEC_PEER,
};

/* Names of the sections that appear once, indexed by enum config_section. */
static const char *const section_names[] = {
    [SEC_NODE] = "node",
    [SEC_REPL] = "replication",
    [SEC_JOURNAL] = "journal",
    [SEC_ARCHIVE] = "archive",
};

enum config_kind {
	KIND_NAME,    /* char[CONFIG_NAME_MAX] */
	KIND_ID,      /* uint64_t, never 0 */
	KIND_CLUSTER, /* uint8_t[16], not all zero */
	KIND_ADDR,    /* char[CONFIG_ADDR_MAX], HOST:PORT */
	KIND_U32,     /* uint32_t within [min, max] */
	KIND_BOOL,    /* bool, "yes" or "no" */
	KIND_SIZE,    /* uint64_t bytes, optional K/M/G/T suffix (powers of 1024), <= max */
	KIND_SECONDS, /* uint64_t seconds, optional s/m/h/d suffix, <= max */
	KIND_PATH,    /* char[CONFIG_PATH_MAX], an absolute path */
};

struct config_key {
	enum config_section sec;
	const char *name;
	enum config_kind kind;
	size_t offset; /* into struct config, or struct config_peer for SEC_PEER */
	uint64_t min, max;
	bool required;
};

/* Also the order in which config_save() writes the keys. */
static const struct config_key config_keys[] = {
    {SEC_NODE, "name", KIND_NAME, offsetof(struct config, name), 0, 0, true},
    {SEC_NODE, "id", KIND_ID, offsetof(struct config, node_id), 0, 0, true},
    {SEC_NODE, "cluster", KIND_CLUSTER, offsetof(struct config, cluster_id), 0, 0, true},
    {SEC_REPL, "listen", KIND_ADDR, offsetof(struct config, listen), 0, 0, false},
    {SEC_REPL, "batch_events", KIND_U32, offsetof(struct config, batch_events), 1, UINT32_MAX,
     false},
    {SEC_REPL, "batch_bytes", KIND_U32, offsetof(struct config, batch_bytes), 4096, UINT32_MAX,
     false},
    {SEC_REPL, "batch_ms", KIND_U32, offsetof(struct config, batch_ms), 0, 60000, false},
    {SEC_REPL, "sync_peers", KIND_U32, offsetof(struct config, sync_peers), 0, CONFIG_MAX_PEERS,
     false},
    {SEC_REPL, "sync_timeout", KIND_U32, offsetof(struct config, sync_timeout_ms), 1, 3600000,
     false},
    {SEC_REPL, "sync_degrade", KIND_BOOL, offsetof(struct config, sync_degrade), 0, 0, false},
    {SEC_JOURNAL, "retain_bytes", KIND_SIZE, offsetof(struct config, retain_bytes), 0, UINT64_MAX,
     false},
    {SEC_JOURNAL, "retain_age", KIND_SECONDS, offsetof(struct config, retain_age_sec), 0,
     RETAIN_AGE_MAX, false},
    {SEC_JOURNAL, "retain_max_age", KIND_SECONDS, offsetof(struct config, retain_max_age_sec), 0,
     RETAIN_AGE_MAX, false},
    {SEC_JOURNAL, "checkpoint", KIND_SECONDS, offsetof(struct config, checkpoint_sec), 1,
     CHECKPOINT_MAX, false},
    {SEC_ARCHIVE, "repository", KIND_PATH, offsetof(struct config, archive_repo), 0, 0, false},
    {SEC_PEER, "address", KIND_ADDR, offsetof(struct config_peer, address), 0, 0, true},
    {SEC_PEER, "id", KIND_ID, offsetof(struct config_peer, id), 0, 0, false},
};

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* inih's line buffer holds INI_MAX_LINE bytes including the newline and NUL. */
#define LINE_MAX_CHARS (INI_MAX_LINE - 2)

struct config_parse {
	struct config *cfg;
	FILE *f;
	unsigned line;		  /* number of the line last handed to inih */
	enum config_section sec;  /* section of the lines being read */
	struct config_peer *peer; /* the current peer when sec == SEC_PEER */
	char section[INI_MAX_LINE];
	unsigned sections_seen; /* bit (1 << SEC_*) for [node], [replication] and [journal] */
	/* Bit i set when config_keys[i] was given: [0] the single sections, [1 + p] peer p. */
	unsigned keys_seen[1 + CONFIG_MAX_PEERS];
	unsigned peer_line[CONFIG_MAX_PEERS];
	bool failed;
	unsigned err_line; /* line of the error, 0 for whole-file problems */
	char err[512];
};

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->batch_events = DEFAULT_BATCH_EVENTS;
	cfg->batch_bytes = DEFAULT_BATCH_BYTES;
	cfg->batch_ms = DEFAULT_BATCH_MS;
	cfg->sync_peers = 0;
	cfg->sync_timeout_ms = DEFAULT_SYNC_TIMEOUT;
	cfg->sync_degrade = false;
	cfg->retain_bytes = 0;
	cfg->retain_age_sec = DEFAULT_RETAIN_AGE;
	cfg->checkpoint_sec = DEFAULT_CHECKPOINT;
}

uint64_t config_retain_bound(const struct config *cfg, uint64_t fs_bytes)
{
	uint64_t share = fs_bytes / 100 * CONFIG_RETAIN_AUTO_PERCENT;

	if (cfg->retain_bytes)
		return cfg->retain_bytes;
	return share && share < CONFIG_RETAIN_AUTO_MAX ? share : CONFIG_RETAIN_AUTO_MAX;
}

int config_name_valid(const char *name)
{
	size_t i, len = strnlen(name, CONFIG_NAME_MAX);

	if (len == 0 || len >= CONFIG_NAME_MAX)
		return 0;
	/* Names become file names (certificates, logs): never "." or "..". */
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return 0;
	for (i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Exactly 2 * n hex digits into out[n], not all zero; 0 or -EINVAL. */
int config_parse_hex(const char *s, size_t len, uint8_t *out, size_t n)
{
	uint8_t any = 0;
	size_t i;

	if (len != 2 * n)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
		any |= out[i];
	}
	return any ? 0 : -EINVAL;
}

int config_parse_id(const char *s, uint64_t *id)
{
	uint8_t b[8];
	uint64_t v = 0;
	int i, err;

	err = config_parse_hex(s, strlen(s), b, sizeof(b));
	if (err)
		return err;
	for (i = 0; i < 8; i++)
		v = v << 8 | b[i];
	*id = v;
	return 0;
}

/* Plain decimal digits only: no sign, no spaces, no 0x. */
static int parse_u32(const char *s, uint32_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -ERANGE;
	}
	*out = (uint32_t)v;
	return 0;
}

/* Unit letters of sizes and durations and what each multiplies by. */
static const char size_units[] = "KMGT";
static const uint64_t size_scale[] = {1ull << 10, 1ull << 20, 1ull << 30, 1ull << 40};
static const char time_units[] = "smhd";
static const uint64_t time_scale[] = {1, 60, 3600, 86400};

/*
 * Decimal digits, then at most one letter of units (scale[i] for units[i]).
 * -EINVAL if malformed, -ERANGE past UINT64_MAX.
 */
static int parse_scaled(const char *s, const char *units, const uint64_t *scale, uint64_t *out)
{
	const char *u;
	uint64_t v = 0, d;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		d = (uint64_t)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (*s) {
		u = strchr(units, *s);
		if (!u || s[1])
			return -EINVAL;
		if (v > UINT64_MAX / scale[u - units])
			return -ERANGE;
		v *= scale[u - units];
	}
	*out = v;
	return 0;
}

/* v with the largest unit (scale above 1) that divides it exactly; plain digits otherwise. */
static void write_scaled(FILE *f, uint64_t v, const char *units, const uint64_t *scale)
{
	size_t i = strlen(units);

	while (i-- > 0) {
		if (scale[i] > 1 && v && v % scale[i] == 0) {
			fprintf(f, "%" PRIu64 "%c\n", v / scale[i], units[i]);
			return;
		}
	}
	fprintf(f, "%" PRIu64 "\n", v);
}

/*
 * HOST:PORT with a port 1..65535; an IPv6 host is bracketed ("[::1]:7001").
 * The host is resolved later; here it only must not contain what would
 * change the meaning of the line (spaces, comment characters, controls).
 */
static int addr_valid(const char *s)
{
	const char *colon = strrchr(s, ':');
	size_t i, hostlen;
	uint32_t port;

	if (strlen(s) >= CONFIG_ADDR_MAX || !colon || colon == s)
		return 0;
	if (parse_u32(colon + 1, &port) || port == 0 || port > 65535)
		return 0;
	hostlen = (size_t)(colon - s);
	for (i = 0; i < hostlen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= ' ' || c >= 0x7f || c == ';' || c == '#' || c == '=')
			return 0;
	}
	if (s[0] == '[' && (hostlen < 3 || s[hostlen - 1] != ']'))
		return 0;
	if (s[0] != '[' && memchr(s, ':', hostlen))
		return 0;
	return 1;
}

static void parse_fail(struct config_parse *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Record the first error only: later ones are usually its consequences. */
static void parse_fail(struct config_parse *p, const char *fmt, ...)
{
	va_list ap;

	if (p->failed)
		return;
	p->failed = true;
	p->err_line = p->line;
	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
}

static void begin_section(struct config_parse *p, const char *name)
{
	struct config *cfg = p->cfg;
	const char *peer;
	unsigned i;

	snprintf(p->section, sizeof(p->section), "%s", name);
	p->peer = NULL;
	for (i = SEC_NODE; i < SEC_PEER; i++) {
		if (strcmp(name, section_names[i]))
			continue;
		p->sec = (enum config_section)i;
		if (p->sections_seen & (1u << p->sec))
			parse_fail(p, "[%s]: section appears twice", name);
		p->sections_seen |= 1u << p->sec;
		return;
	}
	if (strncmp(name, "peer ", 5)) {
		p->sec = SEC_NONE;
		parse_fail(
		    p,
		    "[%s]: unknown section (expected node, replication, journal, archive or peer "
		    "NAME)",
		    name);
		return;
	}
	p->sec = SEC_PEER;
	peer = name + 5;
	if (!config_name_valid(peer)) {
		parse_fail(p, "[%s]: invalid peer name (1-63 characters of A-Za-z0-9._-)", name);
		return;
	}
	for (i = 0; i < cfg->npeers; i++) {
		if (!strcmp(cfg->peers[i].name, peer)) {
			parse_fail(p, "[%s]: duplicate peer (first at line %u)", name,
				   p->peer_line[i]);
			return;
		}
	}
	if (cfg->npeers == CONFIG_MAX_PEERS) {
		parse_fail(p, "[%s]: too many peers (at most %d)", name, CONFIG_MAX_PEERS);
		return;
	}
	p->peer = &cfg->peers[cfg->npeers];
	snprintf(p->peer->name, sizeof(p->peer->name), "%s", peer);
	p->peer_line[cfg->npeers] = p->line;
	cfg->npeers++;
}

/* Look at a raw line before inih does; see the comment at the top of the file. */
static void scan_line(struct config_parse *p, char *s)
{
	char *end, *rest;

	if (p->line == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
		s += 3;
	if (*s == ' ' || *s == '\t') {
		s += strspn(s, " \t\r\n");
		if (*s && *s != ';' && *s != '#')
			parse_fail(p, "indented line (continuation lines are not supported)");
		return;
	}
	if (*s != '[')
		return;
	end = strchr(s, ']');
	if (!end) {
		parse_fail(p, "section header without ']'");
		return;
	}
	rest = end + 1 + strspn(end + 1, " \t\r\n");
	if (*rest && *rest != ';' && *rest != '#') {
		parse_fail(p, "text after the section header");
		return;
	}
	*end = '\0';
	begin_section(p, s + 1);
	*end = ']';
}

static char *read_line(char *str, int num, void *stream)
{
	struct config_parse *p = stream;
	size_t len;
	int c;

	/* Returning NULL ends the parse: stop at the first error. */
	if (p->failed || !fgets(str, num, p->f))
		return NULL;
	p->line++;
	len = strlen(str);
	if (len == 0 || str[len - 1] != '\n') {
		c = getc(p->f);
		if (c != EOF) {
			parse_fail(p, "line longer than %d characters", LINE_MAX_CHARS);
			return NULL;
		}
	}
	scan_line(p, str);
	return p->failed ? NULL : str;
}

static const struct config_key *find_key(enum config_section sec, const char *name)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (config_keys[i].sec == sec && !strcmp(config_keys[i].name, name))
			return &config_keys[i];
	return NULL;
}

/* Parse value into base + k->offset; on failure a message (without the key) in what. */
static int parse_value(const struct config_key *k, const char *value, char *base, char *what,
		       size_t whatlen)
{
	void *dst = base + k->offset;
	uint64_t v64;
	uint32_t v;
	bool yes;
	int err;

	switch (k->kind) {
	case KIND_NAME:
		if (!config_name_valid(value)) {
			snprintf(what, whatlen,
				 "invalid name \"%s\" (1-63 characters of A-Za-z0-9._-)", value);
			return -EINVAL;
		}
		snprintf(dst, CONFIG_NAME_MAX, "%s", value);
		return 0;
	case KIND_ID:
		if (config_parse_id(value, dst)) {
			snprintf(what, whatlen, "invalid id \"%s\" (16 hex digits, not all zero)",
				 value);
			return -EINVAL;
		}
		return 0;
	case KIND_CLUSTER:
		if (config_parse_hex(value, strlen(value), dst, 16)) {
			snprintf(what, whatlen,
				 "invalid cluster id \"%s\" (32 hex digits, not all zero)", value);
			return -EINVAL;
		}
		return 0;
	case KIND_PATH:
		if (value[0] != '/' || strlen(value) >= CONFIG_PATH_MAX) {
			snprintf(what, whatlen,
				 "invalid path \"%s\" (an absolute path, under %d bytes)", value,
				 CONFIG_PATH_MAX);
			return -EINVAL;
		}
		snprintf(dst, CONFIG_PATH_MAX, "%s", value);
		return 0;
	case KIND_ADDR:
		if (!addr_valid(value)) {
			snprintf(what, whatlen, "invalid address \"%s\" (HOST:PORT, port 1-65535)",
				 value);
			return -EINVAL;
		}
		snprintf(dst, CONFIG_ADDR_MAX, "%s", value);
		return 0;
	case KIND_U32:
		err = parse_u32(value, &v);
		if (err == -EINVAL) {
			snprintf(what, whatlen, "\"%s\" is not a decimal number", value);
			return err;
		}
		if (err || v < k->min || v > k->max) {
			snprintf(what, whatlen, "%s is out of range (%" PRIu64 " to %" PRIu64 ")",
				 value, k->min, k->max);
			return -ERANGE;
		}
		memcpy(dst, &v, sizeof(v));
		return 0;
	case KIND_BOOL:
		if (strcmp(value, "yes") && strcmp(value, "no")) {
			snprintf(what, whatlen, "\"%s\" is not yes or no", value);
			return -EINVAL;
		}
		yes = value[0] == 'y';
		memcpy(dst, &yes, sizeof(yes));
		return 0;
	case KIND_SIZE:
	case KIND_SECONDS:
		if (k->kind == KIND_SIZE)
			err = parse_scaled(value, size_units, size_scale, &v64);
		else
			err = parse_scaled(value, time_units, time_scale, &v64);
		if (err == -EINVAL) {
			snprintf(
			    what, whatlen, "\"%s\" is not %s", value,
			    k->kind == KIND_SIZE
				? "a size (a number of bytes, optionally followed by K, M, G or T)"
				: "a duration (seconds, optionally followed by s, m, h or d)");
			return err;
		}
		if (err || v64 < k->min || v64 > k->max) {
			snprintf(what, whatlen, "%s is out of range (%" PRIu64 " to %" PRIu64 "%s)",
				 value, k->min, k->max, k->kind == KIND_SECONDS ? " seconds" : "");
			return -ERANGE;
		}
		memcpy(dst, &v64, sizeof(v64));
		return 0;
	}
	return -EINVAL;
}

static int handle_key(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse *p = user;
	const struct config_key *k;
	unsigned owner, bit;
	char *base;
	char what[320];

	/* section is inih's copy, possibly truncated: p->section is the real one. */
	(void)section;
	if (p->sec == SEC_NONE) {
		parse_fail(p, "%s: key outside any [section]", name);
		return 0;
	}
	k = find_key(p->sec, name);
	if (!k) {
		parse_fail(p, "[%s] %s: unknown key", p->section, name);
		return 0;
	}
	owner = p->sec == SEC_PEER ? 1 + (unsigned)(p->peer - p->cfg->peers) : 0;
	bit = 1u << (k - config_keys);
	if (p->keys_seen[owner] & bit) {
		parse_fail(p, "[%s] %s: duplicate key", p->section, name);
		return 0;
	}
	p->keys_seen[owner] |= bit;
	base = p->sec == SEC_PEER ? (char *)p->peer : (char *)p->cfg;
	if (parse_value(k, value, base, what, sizeof(what))) {
		parse_fail(p, "[%s] %s: %s", p->section, name, what);
		return 0;
	}
	return 1;
}

/* Checks that need the whole file: required keys and peers against the node. */
static void check_complete(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	unsigned i, j;
	size_t k;

	/* A missing key has no line of its own. */
	p->line = 0;
	for (k = 0; k < NKEYS; k++) {
		if (!config_keys[k].required || config_keys[k].sec == SEC_PEER)
			continue;
		if (!(p->keys_seen[0] & (1u << k))) {
			parse_fail(p, "[%s] %s: missing (required)",
				   section_names[config_keys[k].sec], config_keys[k].name);
			return;
		}
	}
	for (i = 0; i < cfg->npeers; i++) {
		const struct config_peer *peer = &cfg->peers[i];

		p->line = p->peer_line[i];
		for (k = 0; k < NKEYS; k++) {
			if (config_keys[k].required && config_keys[k].sec == SEC_PEER &&
			    !(p->keys_seen[1 + i] & (1u << k))) {
				parse_fail(p, "[peer %s] %s: missing (required)", peer->name,
					   config_keys[k].name);
				return;
			}
		}
		if (!strcmp(peer->name, cfg->name))
			parse_fail(p, "[peer %s]: a peer cannot have this node's name", peer->name);
		if (peer->id && peer->id == cfg->node_id)
			parse_fail(p, "[peer %s] id: this node's own id", peer->name);
		for (j = 0; j < i; j++)
			if (peer->id && peer->id == cfg->peers[j].id)
				parse_fail(p, "[peer %s] id: same id as peer %s", peer->name,
					   cfg->peers[j].name);
	}
}

/* Parse f into cfg; name is used in messages only. */
static int parse_stream(FILE *f, const char *name, struct config *cfg, char *err, size_t errlen)
{
	struct config_parse *p;
	int ret, rc = 0;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	config_defaults(cfg);
	p->cfg = cfg;
	p->f = f;
	ret = ini_parse_stream(read_line, p, handle_key, p);
	if (ret < 0) {
		rc = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", name);
		goto out;
	}
	if (ferror(f)) {
		rc = -EIO;
		snprintf(err, errlen, "%s: read error", name);
		goto out;
	}
	/* inih reports lines it could not split into key = value by number only. */
	if (ret > 0 && (!p->failed || (unsigned)ret < p->err_line)) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
			 name, ret);
		goto out;
	}
	if (!p->failed)
		check_complete(p);
	if (p->failed) {
		rc = -EINVAL;
		if (p->err_line)
			snprintf(err, errlen, "%s:%u: %s", name, p->err_line, p->err);
		else
			snprintf(err, errlen, "%s: %s", name, p->err);
	}
out:
	free(p);
	return rc;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
	char dummy[1];
	FILE *f;
	int rc;

	if (!err || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	f = fopen(path, "re");
	if (!f) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	rc = parse_stream(f, path, cfg, err, errlen);
	fclose(f);
	return rc;
}

static void write_value(FILE *f, const struct config_key *k, const char *base)
{
	const void *src = base + k->offset;
	const uint8_t *b = src;
	uint64_t id, v64;
	uint32_t v;
	bool yes;
	int i;

	switch (k->kind) {
	case KIND_NAME:
		fprintf(f, "%s = %.*s\n", k->name, CONFIG_NAME_MAX, (const char *)src);
		break;
	case KIND_ADDR:
		fprintf(f, "%s = %.*s\n", k->name, CONFIG_ADDR_MAX, (const char *)src);
		break;
	case KIND_PATH:
		fprintf(f, "%s = %.*s\n", k->name, CONFIG_PATH_MAX, (const char *)src);
		break;
	case KIND_ID:
		memcpy(&id, src, sizeof(id));
		fprintf(f, "%s = %016llx\n", k->name, (unsigned long long)id);
		break;
	case KIND_CLUSTER:
		fprintf(f, "%s = ", k->name);
		for (i = 0; i < 16; i++)
			fprintf(f, "%02x", b[i]);
		fputc('\n', f);
		break;
	case KIND_U32:
		memcpy(&v, src, sizeof(v));
		fprintf(f, "%s = %u\n", k->name, v);
		break;
	case KIND_BOOL:
		memcpy(&yes, src, sizeof(yes));
		fprintf(f, "%s = %s\n", k->name, yes ? "yes" : "no");
		break;
	case KIND_SIZE:
		memcpy(&v64, src, sizeof(v64));
		fprintf(f, "%s = ", k->name);
		write_scaled(f, v64, size_units, size_scale);
		break;
	case KIND_SECONDS:
		memcpy(&v64, src, sizeof(v64));
		fprintf(f, "%s = ", k->name);
		write_scaled(f, v64, time_units, time_scale);
		break;
	}
}

/* Optional keys are left out while they hold their "not set" value. */
static bool value_unset(const struct config_key *k, const char *base)
{
	const void *src = base + k->offset;
	uint64_t id;

	if (k->required)
		return false;
	if (k->kind == KIND_ADDR || k->kind == KIND_PATH)
		return ((const char *)src)[0] == '\0';
	if (k->kind == KIND_ID) {
		memcpy(&id, src, sizeof(id));
		return id == 0;
	}
	return false;
}

static void write_section(FILE *f, enum config_section sec, const char *base)
{
	size_t k;

	for (k = 0; k < NKEYS; k++)
		if (config_keys[k].sec == sec && !value_unset(&config_keys[k], base))
			write_value(f, &config_keys[k], base);
}

/*
 * Render cfg as file text.  On success *text is malloc'ed (caller frees
 * with free()) and *len is its length.
 */
static int render(const struct config *cfg, char **text, size_t *len)
{
	unsigned i, n = cfg->npeers < CONFIG_MAX_PEERS ? cfg->npeers : CONFIG_MAX_PEERS;
	FILE *f;

	*text = NULL;
	f = open_memstream(text, len);
	if (!f)
		return -errno;
	fputs("# ledgerfs node configuration.\n"
	      "# Read strictly: an unknown key or a malformed value stops the node with\n"
	      "# an error naming its line.\n",
	      f);
	fputs("\n[node]\n", f);
	write_section(f, SEC_NODE, (const char *)cfg);
	fputs("\n[replication]\n", f);
	write_section(f, SEC_REPL, (const char *)cfg);
	fputs("\n[journal]\n", f);
	write_section(f, SEC_JOURNAL, (const char *)cfg);
	if (cfg->archive_repo[0]) {
		fputs("\n[archive]\n", f);
		write_section(f, SEC_ARCHIVE, (const char *)cfg);
	}
	for (i = 0; i < n; i++) {
		fprintf(f, "\n[peer %.*s]\n", CONFIG_NAME_MAX, cfg->peers[i].name);
		write_section(f, SEC_PEER, (const char *)&cfg->peers[i]);
	}
	if (ferror(f)) {
		fclose(f);
		free(*text);
		*text = NULL;
		return -ENOMEM;
	}
	if (fclose(f)) {
		free(*text);
		*text = NULL;
		return -ENOMEM;
	}
	return 0;
}

static bool config_equal(const struct config *a, const struct config *b)
{
	unsigned i;

	if (strncmp(a->name, b->name, CONFIG_NAME_MAX) || a->node_id != b->node_id ||
	    memcmp(a->cluster_id, b->cluster_id, sizeof(a->cluster_id)) ||
	    strncmp(a->listen, b->listen, CONFIG_ADDR_MAX) || a->batch_events != b->batch_events ||
	    a->batch_bytes != b->batch_bytes || a->batch_ms != b->batch_ms ||
	    a->sync_peers != b->sync_peers || a->sync_timeout_ms != b->sync_timeout_ms ||
	    a->sync_degrade != b->sync_degrade || a->retain_bytes != b->retain_bytes ||
	    a->retain_age_sec != b->retain_age_sec ||
	    a->retain_max_age_sec != b->retain_max_age_sec ||
	    a->checkpoint_sec != b->checkpoint_sec || a->npeers != b->npeers)
		return false;
	for (i = 0; i < a->npeers; i++)
		if (strncmp(a->peers[i].name, b->peers[i].name, CONFIG_NAME_MAX) ||
		    strncmp(a->peers[i].address, b->peers[i].address, CONFIG_ADDR_MAX) ||
		    a->peers[i].id != b->peers[i].id)
			return false;
	return true;
}

/* Whether text loads back into exactly cfg; anything else must not be saved. */
static int check_round_trip(const struct config *cfg, char *text, size_t len)
{
	struct config *back;
	char err[1];
	FILE *f;
	int rc;

	back = malloc(sizeof(*back));
	if (!back)
		return -ENOMEM;
	f = fmemopen(text, len, "r");
	if (!f) {
		rc = -errno;
		goto out;
	}
	rc = parse_stream(f, "", back, err, sizeof(err));
	fclose(f);
	if (rc == 0 && !config_equal(cfg, back))
		rc = -EINVAL;
out:
	free(back);
	return rc;
}

int config_save(const char *path, const struct config *cfg)
{
	char *text = NULL;
	size_t len;
	int rc;

	if (cfg->npeers > CONFIG_MAX_PEERS)
		return -EINVAL;
	rc = render(cfg, &text, &len);
	if (rc)
		return rc;
	rc = check_round_trip(cfg, text, len);
	if (rc)
		goto out;
	rc = file_write_atomic(path, text, len, 0644);
out:
	free(text);
	return rc;
}
