/*
 * archive.c - journal segments pushed into a backup repository by a
 * background thread, and read back for point-in-time restores
 * (archive.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/archive.h"
#include "backup/events.h"
#include "lib/buf.h"
#include "lib/bytes.h"
#include "lib/clock.h"
#include "lib/files.h"
#include "lib/log.h"
#include "lib/grow.h"

#define HEADER_LEN (8 + 4 + 7 * 8 + 4)

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t archive_done(struct journal *j, uint64_t origin)
{
	uint64_t seq = 0;

	if (journal_checkpoint_get(j, ARCHIVE_PEER_ID, origin, &seq) < 0)
		return 0;
	return seq;
}

int archive_segment_write(struct repo *r, struct journal *j, uint64_t origin, uint64_t first,
			  uint64_t last, uint64_t *last_out, char *err, size_t errlen)
{
	struct buf b = BUF_INIT;
	struct archive_seg h = {.origin = origin, .first = first};
	uint8_t sum[32];
	char path[PATH_MAX + 128];
	uint64_t seq;
	unsigned olen;
	int ret = 0;

	ret = buf_reserve(&b, HEADER_LEN);
	if (ret < 0)
		goto nomem;
	b.len = HEADER_LEN; /* filled in at the end */
	for (seq = first; seq <= last; seq++) {
		struct event hdr;

		ret = backup_event_append(j, origin, seq, &b, &hdr, err, errlen);
		if (ret < 0)
			goto out;
		if (h.count == 0) {
			h.term_first = hdr.term;
			h.hlc_first = hdr.hlc;
		}
		h.term_last = hdr.term;
		h.hlc_last = hdr.hlc;
		h.count++;
		h.last = seq;
		if (b.len >= ARCHIVE_SEG_BYTES)
			break;
	}
	memcpy(b.data, ARCHIVE_MAGIC, 8);
	put_le32(b.data + 8, ARCHIVE_FORMAT);
	put_le64(b.data + 12, h.origin);
	put_le64(b.data + 20, h.first);
	put_le64(b.data + 28, h.last);
	put_le64(b.data + 36, h.term_first);
	put_le64(b.data + 44, h.term_last);
	put_le64(b.data + 52, h.hlc_first);
	put_le64(b.data + 60, h.hlc_last);
	put_le32(b.data + 68, h.count);
	if (EVP_Digest(b.data, b.len, sum, &olen, EVP_sha256(), NULL) != 1 ||
	    buf_put(&b, sum, sizeof(sum)) < 0)
		goto nomem;
	snprintf(path, sizeof(path), "%s/%s", r->dir, ARCHIVE_DIR);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		goto syserr;
	snprintf(path, sizeof(path), "%s/%s/%016" PRIx64, r->dir, ARCHIVE_DIR, origin);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		goto syserr;
	snprintf(path, sizeof(path), "%s/%s/%016" PRIx64 "/%020" PRIu64 "-%020" PRIu64, r->dir,
		 ARCHIVE_DIR, origin, h.first, h.last);
	ret = file_write_atomic(path, b.data, b.len, 0600);
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		goto out;
	}
	*last_out = h.last;
	goto out;
syserr:
	ret = -errno;
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	goto out;
nomem:
	ret = -ENOMEM;
	snprintf(err, errlen, "out of memory");
out:
	buf_free(&b);
	return ret;
}

int archive_segment_read(const char *path, struct archive_seg *h, struct event **evs, size_t *n,
			 char *err, size_t errlen)
{
	uint8_t *data = NULL, sum[32];
	struct event *v = NULL;
	size_t got = 0, at, count = 0;
	const char *why;
	struct stat st;
	unsigned olen;
	ssize_t k;
	int fd, r = -EBADMSG;

	*evs = NULL;
	*n = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(err, errlen, "segment %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return r;
	}
	data = malloc(st.st_size ? (size_t)st.st_size : 1);
	while (data && got < (size_t)st.st_size) {
		k = read(fd, data + got, (size_t)st.st_size - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	if (!data) {
		snprintf(err, errlen, "segment %s: out of memory", path);
		return -ENOMEM;
	}
	if (got < HEADER_LEN + 32 || memcmp(data, ARCHIVE_MAGIC, 8)) {
		snprintf(err, errlen, "segment %s is corrupt: not a segment (bad magic or short)",
			 path);
		goto out;
	}
	if (EVP_Digest(data, got - 32, sum, &olen, EVP_sha256(), NULL) != 1 ||
	    memcmp(sum, data + got - 32, 32)) {
		snprintf(err, errlen, "segment %s is corrupt: checksum mismatch", path);
		goto out;
	}
	if (get_le32(data + 8) != ARCHIVE_FORMAT) {
		snprintf(err, errlen, "segment %s: unknown format %u", path, get_le32(data + 8));
		r = -EPROTO;
		goto out;
	}
	h->origin = get_le64(data + 12);
	h->first = get_le64(data + 20);
	h->last = get_le64(data + 28);
	h->term_first = get_le64(data + 36);
	h->term_last = get_le64(data + 44);
	h->hlc_first = get_le64(data + 52);
	h->hlc_last = get_le64(data + 60);
	h->count = get_le32(data + 68);
	if (h->count != h->last - h->first + 1 || h->count > (got - HEADER_LEN) / 4) {
		snprintf(err, errlen, "segment %s is corrupt: count and range disagree", path);
		goto out;
	}
	v = calloc(h->count ? h->count : 1, sizeof(*v));
	if (!v) {
		r = -ENOMEM;
		snprintf(err, errlen, "segment %s: out of memory", path);
		goto out;
	}
	for (at = HEADER_LEN; count < h->count; count++) {
		uint32_t l;

		if (got - 32 - at < 4 || (l = get_le32(data + at)) > got - 32 - at - 4) {
			snprintf(err, errlen, "segment %s is corrupt: record %zu truncated", path,
				 count + 1);
			goto out;
		}
		why = NULL;
		if (event_decode(data + at + 4, l, &v[count], NULL, &why) < 0 ||
		    v[count].origin != h->origin || v[count].seq != h->first + count) {
			snprintf(err, errlen, "segment %s is corrupt: record %zu: %s", path,
				 count + 1, why ? why : "not the event the header says");
			if (!why)
				count++;
			goto out;
		}
		at += 4 + (size_t)l;
	}
	if (at != got - 32) {
		snprintf(err, errlen, "segment %s is corrupt: bytes after the last record", path);
		goto out;
	}
	*evs = v;
	*n = count;
	v = NULL;
	r = 0;
out:
	if (v)
		backup_events_free(v, count);
	free(data);
	return r;
}

/* A segment's name: %020u-%020u. */
static int is_segment(const char *name)
{
	return strlen(name) == 41 && name[20] == '-';
}

int archive_list(struct repo *r, uint64_t origin, char ***paths, size_t *n)
{
	char dir[PATH_MAX + 64], prefix[PATH_MAX + 66];
	int ret;

	snprintf(dir, sizeof(dir), "%s/%s/%016" PRIx64, r->dir, ARCHIVE_DIR, origin);
	snprintf(prefix, sizeof(prefix), "%s/", dir);
	ret = repo_dir_list(AT_FDCWD, dir, prefix, is_segment, paths, n);
	return ret == -ENOENT ? 0 : ret;
}

int archive_origins(struct repo *r, uint64_t **origins, size_t *n)
{
	char dir[PATH_MAX + 64];
	uint64_t *v = NULL;
	size_t count = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	*origins = NULL;
	*n = 0;
	snprintf(dir, sizeof(dir), "%s/%s", r->dir, ARCHIVE_DIR);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		uint64_t id;

		if (strlen(de->d_name) != 16 || config_parse_id(de->d_name, &id) < 0)
			continue;
		if (grow_array(&v, &cap, count + 1) < 0) {
			closedir(d);
			free(v);
			return -ENOMEM;
		}
		v[count++] = id;
	}
	closedir(d);
	*origins = v;
	*n = count;
	return 0;
}

/* ---- the archiver thread ---------------------------------------------------- */

struct archiver {
	struct node *n;
	struct repo *repo;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int stopping;		  /* guarded by lock */
	struct archive_status st; /* guarded by lock */
	int64_t caught_up_ms;	  /* guarded by lock: when nothing was left last */
	int warned;		  /* a failure was logged: log the recovery */
};

/* The origins n's journal knows: its own and those with applied marks. */
static size_t known_origins(struct journal *j, uint64_t *v, size_t cap)
{
	struct journal_iter *it = NULL;
	const uint8_t *val;
	uint64_t a, b;
	size_t n = 0, len;

	v[n++] = journal_node_id(j);
	if (journal_iter_new(j, JOURNAL_APPLIED, 0, 0, &it) < 0)
		return n;
	while (n < cap && journal_iter_next(it, &a, &b, NULL, NULL, &val, &len) > 0)
		if (a != journal_node_id(j))
			v[n++] = a;
	journal_iter_free(it);
	return n;
}

/* One pass: archive everything applied.  0, or -errno with err. */
static int archive_pass(struct archiver *a, uint64_t *left, char *err, size_t errlen)
{
	struct journal *j = node_journal(a->n);
	uint64_t origins[CONFIG_MAX_PEERS + 1], done, upto, trimmed, reached;
	size_t no, i;
	int r = 0;

	*left = 0;
	no = known_origins(j, origins, CONFIG_MAX_PEERS + 1);
	for (i = 0; i < no && r == 0; i++) {
		upto = origins[i] == journal_node_id(j) ? node_synced_seq(a->n)
							: journal_applied(j, origins[i]);
		done = archive_done(j, origins[i]);
		trimmed = 0;
		if (journal_trimmed(j, origins[i], &trimmed) == 0 && trimmed > done) {
			/* Archiving began after these were trimmed: the archive starts here. */
			log_info("archive %s: events of %016" PRIx64 " up to %" PRIu64
				 " were trimmed before archiving began; it starts after them",
				 a->repo->dir, origins[i], trimmed);
			done = trimmed;
			r = journal_checkpoint_put(j, ARCHIVE_PEER_ID, origins[i], done);
		}
		while (r == 0 && done < upto) {
			uint64_t last =
			    upto - done > ARCHIVE_SEG_EVENTS ? done + ARCHIVE_SEG_EVENTS : upto;

			r = archive_segment_write(a->repo, j, origins[i], done + 1, last, &reached,
						  err, errlen);
			if (r == 0)
				r = journal_checkpoint_put(j, ARCHIVE_PEER_ID, origins[i], reached);
			if (r < 0 && !err[0])
				snprintf(err, errlen, "recording the archived seq: %s",
					 strerror(-r));
			if (r == 0)
				done = reached;
		}
		if (upto > done)
			*left += upto - done;
	}
	return r;
}

static void *archiver_main(void *arg)
{
	struct archiver *a = arg;

	pthread_mutex_lock(&a->lock);
	while (!a->stopping) {
		struct timespec until;
		char err[sizeof(a->st.error) + PATH_MAX] = "";
		uint64_t left = 0;
		int r;

		pthread_mutex_unlock(&a->lock);
		r = archive_pass(a, &left, err, sizeof(err));
		if (r < 0 && !a->warned++)
			log_err("archive %s: %s (retrying every %d ms; trimming waits)",
				a->repo->dir, err, ARCHIVE_INTERVAL_MS);
		else if (r == 0 && a->warned) {
			log_info("archive %s: archiving again", a->repo->dir);
			a->warned = 0;
		}
		pthread_mutex_lock(&a->lock);
		snprintf(a->st.error, sizeof(a->st.error), "%s", r < 0 ? err : "");
		if (r == 0 && left == 0) {
			a->caught_up_ms = wall_ms();
			a->st.last_ok_ms = a->caught_up_ms;
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (ARCHIVE_INTERVAL_MS % 1000) * 1000000L;
		until.tv_sec += ARCHIVE_INTERVAL_MS / 1000 + until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		if (!a->stopping)
			pthread_cond_timedwait(&a->wake, &a->lock, &until);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int archiver_start(struct node *n, const char *path, struct archiver **out)
{
	struct archiver *a = calloc(1, sizeof(*a));
	char err[PATH_MAX + 256];
	int r;

	if (!a)
		return -ENOMEM;
	r = repo_open(path, 1, &a->repo, err, sizeof(err));
	if (r < 0) {
		log_err("archive: %s", err);
		free(a);
		return r;
	}
	a->n = n;
	a->st.on = 1;
	a->caught_up_ms = wall_ms();
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->wake, NULL);
	r = -pthread_create(&a->thread, NULL, archiver_main, a);
	if (r < 0) {
		log_err("archive %s: cannot start its thread: %s", path, strerror(-r));
		repo_close(a->repo);
		free(a);
		return r;
	}
	log_info("archiving the journal into %s", path);
	*out = a;
	return 0;
}

void archiver_stop(struct archiver *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->stopping = 1;
	pthread_cond_signal(&a->wake);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->thread, NULL);
	pthread_cond_destroy(&a->wake);
	pthread_mutex_destroy(&a->lock);
	repo_close(a->repo);
	free(a);
}

void archiver_status(struct archiver *a, struct archive_status *st)
{
	struct journal *j = node_journal(a->n);
	uint64_t origins[CONFIG_MAX_PEERS + 1], upto, done, lag = 0;
	size_t no, i;

	no = known_origins(j, origins, CONFIG_MAX_PEERS + 1);
	for (i = 0; i < no; i++) {
		upto = origins[i] == journal_node_id(j) ? node_synced_seq(a->n)
							: journal_applied(j, origins[i]);
		done = archive_done(j, origins[i]);
		if (upto > done)
			lag += upto - done;
	}
	pthread_mutex_lock(&a->lock);
	*st = a->st;
	st->lag_events = lag;
	st->lag_ms = lag ? wall_ms() - a->caught_up_ms : 0;
	pthread_mutex_unlock(&a->lock);
}
