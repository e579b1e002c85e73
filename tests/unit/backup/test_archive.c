/*
 * test_archive.c - archived journal segments: what is written reads back
 * event for event, a value-log payload comes back inline, and a damaged
 * segment is refused naming the file.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/events.h"
#include "tree.h"

#define NODE 0x42ull

static char tmp[64];
static char jdir[96], rdir[96];

static void setup(void)
{
	strcpy(tmp, "/tmp/test_archive.XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(jdir, sizeof(jdir), "%s/journal", tmp);
	snprintf(rdir, sizeof(rdir), "%s/repo", tmp);
}

static void teardown(void)
{
	tree_remove(tmp);
}

TestSuite(archive, .init = setup, .fini = teardown);

/* n write events, the i-th of i*1000 bytes (the large ones go to the value log). */
static struct journal *history(unsigned n)
{
	struct journal *j = NULL;
	const char *why = NULL;
	unsigned i;

	cr_assert_eq(journal_open(jdir, 1, NODE, &j, &why), 0, "%s", why ? why : "");
	for (i = 1; i <= n; i++) {
		uint8_t *buf = malloc(i * 1000);
		struct event ev = {.type = EV_WRITE,
				   .fid = {NODE, 7},
				   .offset = i,
				   .data = buf,
				   .data_len = i * 1000,
				   .mtime_sec = 1700000000,
				   .term = 1};

		memset(buf, (int)i, i * 1000);
		cr_assert_eq(journal_append(j, &ev), 0);
		cr_assert_eq(ev.seq, i);
		free(buf);
	}
	return j;
}

Test(archive, a_segment_reads_back_event_for_event)
{
	struct journal *j = history(20);
	struct repo *r = NULL;
	char err[1024], path[256];
	struct archive_seg h;
	struct event *evs;
	uint64_t last = 0;
	size_t n, i, k;

	cr_assert_eq(repo_open(rdir, 1, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(archive_segment_write(r, j, NODE, 3, 17, &last, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(last, 17);
	snprintf(path, sizeof(path), "%s/archive/%016llx/%020d-%020d", rdir,
		 (unsigned long long)NODE, 3, 17);
	cr_assert_eq(archive_segment_read(path, &h, &evs, &n, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(h.origin, NODE);
	cr_assert_eq(h.first, 3);
	cr_assert_eq(h.last, 17);
	cr_assert_eq(h.count, 15);
	cr_assert(h.hlc_first <= h.hlc_last);
	cr_assert_eq(n, 15);
	cr_assert_eq(h.term_first, evs[0].term);
	cr_assert_eq(h.hlc_last, evs[14].hlc);
	for (i = 0; i < n; i++) {
		cr_assert_eq(evs[i].seq, 3 + i);
		cr_assert_eq(evs[i].flags & EVENT_F_VREF, 0, "payload inline");
		cr_assert_eq(evs[i].data_len, (3 + i) * 1000);
		for (k = 0; k < evs[i].data_len; k++)
			cr_assert_eq(evs[i].data[k], (uint8_t)(3 + i));
	}
	backup_events_free(evs, n);
	repo_close(r);
	journal_close(j);
}

Test(archive, a_damaged_segment_is_refused_naming_it)
{
	struct journal *j = history(5);
	struct repo *r = NULL;
	char err[1024], path[256];
	struct archive_seg h;
	struct event *evs;
	uint64_t last = 0;
	size_t n;
	FILE *f;
	int c;

	cr_assert_eq(repo_open(rdir, 1, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(archive_segment_write(r, j, NODE, 1, 5, &last, err, sizeof(err)), 0, "%s",
		     err);
	snprintf(path, sizeof(path), "%s/archive/%016llx/%020d-%020d", rdir,
		 (unsigned long long)NODE, 1, 5);
	f = fopen(path, "r+b");
	cr_assert_not_null(f);
	fseek(f, 200, SEEK_SET);
	c = fgetc(f);
	fseek(f, 200, SEEK_SET);
	fputc(c ^ 0x20, f);
	fclose(f);
	cr_assert_eq(archive_segment_read(path, &h, &evs, &n, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, path) && strstr(err, "checksum mismatch"), "%s", err);
	/* A trimmed event cannot be archived: -ESTALE, named. */
	journal_mark_applied(j, NODE, 5);
	cr_assert_eq(journal_trim(j, NODE, 2, NULL), 0);
	cr_assert_eq(archive_segment_write(r, j, NODE, 1, 5, &last, err, sizeof(err)), -ESTALE);
	cr_assert(strstr(err, ":1: trimmed"), "%s", err);
	repo_close(r);
	journal_close(j);
}
