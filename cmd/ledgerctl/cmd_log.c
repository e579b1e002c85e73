/*
 * cmd_log.c - ledgerctl log NODE_DIR: the journal as a person reads it.
 *
 * One line per event, oldest first: seq, origin, wall-clock time from the
 * HLC, type, path(s) and the sizes that matter for the type.  --json gives
 * one object per line for scripts and tests.  Records that do not decode
 * are listed as such rather than stopping the listing.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cmd.h"
#include "lib/config.h"
#include "journal/journal_copy.h"

struct log_opts {
	int json;
	int have_origin;
	uint64_t origin;
	uint64_t from;
};

static void log_usage(FILE *out)
{
	fprintf(out, "usage: ledgerctl log NODE_DIR [--origin ID] [--from SEQ] [--json]\n"
		     "\n"
		     "List the events in NODE_DIR's journal, oldest first.\n"
		     "\n"
		     "  --origin ID   only events made on node ID (16 hex digits)\n"
		     "  --from SEQ    only events numbered SEQ or above\n"
		     "  --json        one JSON object per line\n"
		     "  -h, --help    this help\n");
}

/* len bytes as a JSON string: control bytes and bytes >= 0x80 escaped so output stays ASCII. */
static void json_bytes(FILE *out, const uint8_t *s, size_t len)
{
	fputc('"', out);
	for (const unsigned char *p = s; p < s + len; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void json_str(FILE *out, const char *s)
{
	json_bytes(out, (const uint8_t *)s, strlen(s));
}

/* A path for a terminal: non-printable bytes as \xNN. */
static void text_str(FILE *out, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p >= 0x7f || *p == '\\')
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
}

static void hlc_time(uint64_t hlc, char *buf, size_t len)
{
	uint64_t ms = hlc >> 16;
	time_t sec = (time_t)(ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03uZ", base, (unsigned)(ms % 1000));
}

/*
 * The fields event_type_info() says a change to the store carries, those
 * worth listing (not its mtime stamp or base version); 0 for node-state
 * events, whose fields mean other things and are listed by their type.
 */
static uint32_t change_fields(unsigned type)
{
	const struct event_type_info *ti = event_type_info(type);

	return ti && (ti->props & EVENT_T_MUTATES) ? ti->fields : 0;
}

/* A time as seconds with nanoseconds, or null when the event leaves it alone. */
static void print_time_json(FILE *out, const char *key, int64_t sec, uint32_t nsec)
{
	if (nsec == UTIME_OMIT)
		fprintf(out, ",\"%s\":null", key);
	else
		fprintf(out, ",\"%s\":%" PRId64 ".%09" PRIu32, key, sec, nsec);
}

/* The lines of an EV_HEALED's list as a JSON array of strings. */
static void json_lines(FILE *out, const uint8_t *s, size_t len)
{
	size_t i = 0, n = 0;

	fputc('[', out);
	while (i < len) {
		const uint8_t *nl = memchr(s + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - s) : len;

		fputs(n++ ? "," : "", out);
		json_bytes(out, s + i, end - i);
		i = end + 1;
	}
	fputc(']', out);
}

/* What a divergence or a heal says, after the common fields of a JSON line. */
static void print_json_heal(FILE *out, const struct event *ev)
{
	fprintf(out, ",\"event_origin\":\"%016" PRIx64 "\",\"event_seq\":%" PRIu64, ev->base.origin,
		ev->base.seq);
	if (ev->type == EV_DIVERGED) {
		fprintf(out, ",\"stopped\":%s,\"why\":",
			ev->op_flags == EVENT_DIVERGED_STOPPED ? "true" : "false");
		json_bytes(out, ev->data, ev->data_len);
		return;
	}
	fprintf(out, ",\"position\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"replaced\":", ev->offset,
		ev->length);
	json_lines(out, ev->data, ev->data_len);
}

/* The fields f (EVENT_FIELD_*) of a change, as JSON members. */
static void print_json_fields(FILE *out, const struct event *ev, uint32_t f)
{
	if (f & EVENT_FIELD_OFFSET)
		fprintf(out, ",\"offset\":%" PRIu64, ev->offset);
	if (f & EVENT_FIELD_PAYLOAD)
		fprintf(out, ",\"length\":%" PRIu32 ",\"vlog\":%s",
			(ev->flags & EVENT_F_VREF) ? ev->vref.len : ev->data_len,
			(ev->flags & EVENT_F_VREF) ? "true" : "false");
	if (f & EVENT_FIELD_SIZE)
		fprintf(out, ",\"size\":%" PRIu64, ev->length);
	if (f & EVENT_FIELD_LENGTH)
		fprintf(out, ",\"length\":%" PRIu64, ev->length);
	if (f & EVENT_FIELD_FLAGS)
		fprintf(out, ",\"flags\":%" PRIu32, ev->op_flags);
	if (f & EVENT_FIELD_MODE)
		fprintf(out, ",\"mode\":\"%04o\"", ev->mode & 07777);
	if (f & EVENT_FIELD_RDEV)
		fprintf(out, ",\"rdev\":%" PRIu64, ev->rdev);
	if (f & EVENT_FIELD_OWNER)
		fprintf(out, ",\"uid\":%" PRIu32 ",\"gid\":%" PRIu32, ev->uid, ev->gid);
	if ((f & EVENT_FIELD_TARGET) && ev->data) {
		fprintf(out, ",\"target\":");
		json_bytes(out, ev->data, ev->data_len);
	}
	if (f & EVENT_FIELD_TIMES) {
		print_time_json(out, "atime", ev->atime_sec, ev->atime_nsec);
		print_time_json(out, "mtime", ev->mtime_sec, ev->mtime_nsec);
	}
	if (f & EVENT_FIELD_VALUE)
		fprintf(out, ",\"length\":%" PRIu32, ev->data_len);
}

static void print_json(FILE *out, const struct event *ev)
{
	char when[48];

	hlc_time(ev->hlc, when, sizeof(when));
	fprintf(out,
		"{\"origin\":\"%016" PRIx64 "\",\"seq\":%" PRIu64 ",\"hlc\":%" PRIu64
		",\"time\":\"%s\",\"term\":%" PRIu64 ",\"type\":\"%s\"",
		ev->origin, ev->seq, ev->hlc, when, ev->term, event_type_name(ev->type));
	if (ev->path) {
		fprintf(out, ",\"path\":");
		json_str(out, ev->path);
	}
	if (ev->path2) {
		fprintf(out, ",\"path2\":");
		json_str(out, ev->path2);
	}
	if (ev->name) {
		fprintf(out, ",\"name\":");
		json_str(out, ev->name);
	}
	fprintf(out, ",\"fid\":\"%016" PRIx64 ":%" PRIu64 "\"", ev->fid.origin, ev->fid.counter);
	if (ev->fid2.origin || ev->fid2.counter)
		fprintf(out, ",\"fid2\":\"%016" PRIx64 ":%" PRIu64 "\"", ev->fid2.origin,
			ev->fid2.counter);
	print_json_fields(out, ev, change_fields(ev->type));
	if (ev->type == EV_RECOVERED)
		fprintf(out,
			",\"first_origin\":\"%016" PRIx64 "\",\"first_seq\":%" PRIu64
			",\"last_seq\":%" PRIu64,
			ev->base.origin, ev->base.seq, ev->length);
	if (ev->type == EV_DIVERGED || ev->type == EV_HEALED)
		print_json_heal(out, ev);
	fprintf(out, "}\n");
}

void cmd_log_json_record(FILE *out, uint64_t origin, uint64_t seq, const uint8_t *val, size_t len)
{
	const char *why = NULL;
	struct event ev;

	if (event_decode(val, len, &ev, NULL, &why) < 0) {
		fprintf(out,
			"{\"origin\":\"%016" PRIx64 "\",\"seq\":%" PRIu64
			",\"type\":\"corrupt\",\"error\":\"%s\"}\n",
			origin, seq, why);
		return;
	}
	print_json(out, &ev);
	event_free(&ev);
}

/* A divergence or a heal on one line, the replaced entries listed after it. */
static void print_text_heal(const struct event *ev)
{
	size_t i = 0;

	printf("event %016" PRIx64 ":%" PRIu64, ev->base.origin, ev->base.seq);
	if (ev->path2) {
		printf(" (");
		text_str(stdout, ev->path2);
		printf(")");
	}
	printf(", subtree ");
	text_str(stdout, ev->path ? ev->path : ".");
	printf(" from ");
	text_str(stdout, ev->name ? ev->name : "?");
	if (ev->type == EV_HEALED) {
		printf(" at %" PRIu64 ": %" PRIu64 " entr%s replaced\n", ev->offset, ev->length,
		       ev->length == 1 ? "y" : "ies");
		while (i < ev->data_len) {
			const uint8_t *nl = memchr(ev->data + i, '\n', ev->data_len - i);
			size_t end = nl ? (size_t)(nl - ev->data) : ev->data_len;
			char line[PATH_MAX + 16];

			snprintf(line, sizeof(line), "%.*s", (int)(end - i), ev->data + i);
			printf("%50s", "");
			text_str(stdout, line);
			printf("\n");
			i = end + 1;
		}
		return;
	}
	printf("%s: ", ev->op_flags == EVENT_DIVERGED_STOPPED ? "; heal stopped" : "");
	if (ev->data_len) {
		char why[1024];

		snprintf(why, sizeof(why), "%.*s", (int)ev->data_len, ev->data);
		text_str(stdout, why);
	}
	printf("\n");
}

static void print_text(const struct event *ev)
{
	uint32_t f = change_fields(ev->type);
	int creates = event_type_is(ev->type, EVENT_T_CREATES);
	char when[48];

	hlc_time(ev->hlc, when, sizeof(when));
	printf("%8" PRIu64 "  %016" PRIx64 "  %s  %-11s ", ev->seq, ev->origin, when,
	       event_type_name(ev->type));
	if (ev->type == EV_DIVERGED || ev->type == EV_HEALED) {
		print_text_heal(ev);
		return;
	}
	if (ev->type == EV_RECOVERED)
		printf("fetched %016" PRIx64 ":%" PRIu64 "..%" PRIu64, ev->base.origin,
		       ev->base.seq, ev->length);
	else if (event_type_mutates(ev->type))
		text_str(stdout, ev->path ? ev->path : "(unlinked file)");
	if (ev->path2) {
		printf(" -> ");
		text_str(stdout, ev->path2);
	}
	/*
	 * What a line has room for: one size, and a new object's mode or a
	 * changed owner (a chown's mode is only what the change left).
	 */
	if (f & EVENT_FIELD_PAYLOAD)
		printf("  %" PRIu32 " bytes at %" PRIu64,
		       (ev->flags & EVENT_F_VREF) ? ev->vref.len : ev->data_len, ev->offset);
	else if (f & (EVENT_FIELD_SIZE | EVENT_FIELD_LENGTH))
		printf("  size %" PRIu64, ev->length);
	else if ((f & EVENT_FIELD_MODE) && (creates || !(f & EVENT_FIELD_OWNER)))
		printf("  mode %04o", ev->mode & 07777);
	if ((f & EVENT_FIELD_OWNER) && !creates)
		printf("  %" PRIu32 ":%" PRIu32, ev->uid, ev->gid);
	if (ev->name) {
		printf("  ");
		text_str(stdout, ev->name);
	}
	printf("\n");
}

static int log_list(struct journal *j, const struct log_opts *o)
{
	struct journal_iter *it = NULL;
	const uint8_t *val;
	uint64_t origin, seq;
	size_t len;
	int r;

	r = journal_iter_new(j, JOURNAL_EVENTS, o->have_origin ? o->origin : 0, 0, &it);
	while (r == 0 && (r = journal_iter_next(it, &origin, &seq, NULL, NULL, &val, &len)) == 1) {
		struct event ev;
		const char *why = NULL;

		r = 0;
		if (o->have_origin && origin != o->origin)
			break;
		if (seq < o->from)
			continue;
		if (o->json) {
			cmd_log_json_record(stdout, origin, seq, val, len);
			continue;
		}
		if (event_decode(val, len, &ev, NULL, &why) < 0) {
			printf("%8" PRIu64 "  %016" PRIx64 "  corrupt record: %s\n", seq, origin,
			       why);
			continue;
		}
		print_text(&ev);
		event_free(&ev);
	}
	journal_iter_free(it);
	return r < 0 ? r : 0;
}

int cmd_log(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"origin", required_argument, NULL, 'o'},
	    {"from", required_argument, NULL, 'f'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct log_opts o = {0};
	char path[PATH_MAX], err[1024], *end;
	struct config cfg;
	struct journal_copy snap = {0};
	const char *why = NULL;
	int c, r, rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			if (config_parse_id(optarg, &o.origin) < 0) {
				fprintf(stderr, "ledgerctl: log: --origin %s: not 16 hex digits\n",
					optarg);
				return 2;
			}
			o.have_origin = 1;
			break;
		case 'f':
			errno = 0;
			o.from = strtoull(optarg, &end, 10);
			if (errno || *end || end == optarg) {
				fprintf(stderr, "ledgerctl: log: --from %s: not a number\n",
					optarg);
				return 2;
			}
			break;
		case 'j':
			o.json = 1;
			break;
		case 'h':
			log_usage(stdout);
			return 0;
		default:
			log_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		log_usage(stderr);
		return 2;
	}
	snprintf(path, sizeof(path), "%s/%s", argv[optind], CONFIG_FILE);
	if (config_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ledgerctl: log: %s\n", err);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/journal", argv[optind]);
	r = journal_copy_open(path, JOURNAL_COPY_IF_BUSY, &snap, &why);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: log: %s: %s\n", path, why ? why : strerror(-r));
		goto out;
	}
	r = log_list(snap.journal, &o);
	if (r < 0) {
		fprintf(stderr, "ledgerctl: log: %s: %s\n", path, strerror(-r));
		goto out;
	}
	rc = 0;
out:
	journal_copy_close(&snap);
	return rc;
}
