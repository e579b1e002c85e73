/*
 * journal.c - the node's journal: events, applied marks, checkpoints and
 * metadata in LevelDB, large write payloads in the value log (journal.h).
 *
 * Every change goes through one LevelDB write batch, so an event and the
 * next seq that follows it are journaled together or not at all.  Writes
 * are not synced; journal_sync() makes everything before it durable with
 * one flush of LevelDB's log (journal_sync_log()), which lets the caller
 * group fsync(2)s into one disk flush.  Applied marks are kept in memory and ride along on
 * whatever the journal writes next, so marking an event applied costs no
 * write of its own.  Before any synced write the value log is synced first:
 * a durable event must never reference a payload that a crash could lose.
 *
 * Trimming deletes keys in bounded batches, each raising the trimmed mark,
 * because one batch per trim would hold every deleted key in memory at
 * once.  Scans start past the trimmed mark: LevelDB keeps deleted keys as
 * tombstones until a compaction, and a scan from seq 0 would wade through
 * them.  Value-log segments are reclaimed whole, by a per-segment list of
 * the highest seq per origin they hold (journal.h): a reference count would
 * need every trim, void and delete to decode the event it drops, while the
 * highest seq only grows at append time and is checked against marks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <leveldb/c.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "journal/journal.h"
#include "journal/vlog.h"
#include "lib/bytes.h"
#include "lib/dirscan.h"
#include "lib/grow.h"
#include "lib/log.h"

/*
 * LevelDB's memtable.  A flush writes it to a table file and syncs that,
 * and every journal fdatasync() queued behind it on the disk: with 32 MiB
 * of inline 4 KiB pages that took 0.15-0.4 s, and was most of the primary's
 * replication lag p99 (67 -> 32 ms at 8 MiB, 42 ms at 4 MiB, where the
 * compactions of more and smaller tables take over).  Smaller is also less
 * to replay after a crash.
 */
#define JOURNAL_WRITE_BUFFER   (8u << 20)
#define JOURNAL_BLOCK_CACHE    (8u << 20)
#define JOURNAL_MAX_OPEN_FILES 256
/* Inline payload bytes up to which journal_put_remote_batch() keeps its batch. */
#define JOURNAL_BATCH_KEEP (8u << 20)
/* Bloom filters make the point lookups of journal_get and put_remote cheap. */
#define JOURNAL_BLOOM_BITS 10

#define KEY_EVENT_LEN	18 /* e/ origin seq */
#define KEY_APPLIED_LEN 10 /* a/ origin */
#define KEY_CKPT_LEN	19 /* c/ peer / origin */
#define META_NAME_MAX	64
/* Meta names the journal keeps itself; journal_meta_put() refuses them. */
#define META_TRIMMED "trimmed/"
#define META_VSEG    "vseg/"
#define VSEG_ENTRY   16 /* u64 origin, u64 highest seq, little-endian */

/* What the journal remembers per origin; both marks only rise. */
struct origin_mark {
	uint64_t origin;
	uint64_t applied; /* a/<origin> */
	int pending;	  /* applied not yet written to LevelDB */
	uint64_t trimmed; /* m/trimmed/<origin>, always written at once */
};

struct journal {
	/*
	 * Guards every field below that changes after open, and the value
	 * log's: taken inside each journal_*() call that reads or writes them,
	 * never held across a call out of the journal.  The innermost lock of
	 * the process: a caller may hold its node lock or a peer lock, never
	 * the other way round.  Recursive, because some calls use others.
	 * Not taken for LevelDB itself (thread-safe), for iterators (LevelDB
	 * snapshots), by journal_sync_log() while the disk flushes, nor by
	 * journal_compact_events().
	 */
	pthread_mutex_t mu;
	char *dir;
	leveldb_t *db;
	leveldb_options_t *opts;
	leveldb_cache_t *cache;
	leveldb_filterpolicy_t *filter;
	leveldb_readoptions_t *ropts;
	leveldb_readoptions_t *scan_opts; /* iterators: do not evict hot blocks */
	leveldb_writeoptions_t *wopts;
	leveldb_writeoptions_t *wopts_sync;
	struct vlog *vlog;
	uint64_t node_id;
	uint64_t next_seq;
	uint64_t term;
	uint64_t hlc_last; /* hlc of the newest local event */
	int unsynced;	   /* LevelDB holds writes no synced write has covered yet */
	uint64_t writes;   /* LevelDB writes made, to tell whether a sync covered them all */
	struct origin_mark *marks;
	size_t nmarks;
	size_t marks_cap;
	uint8_t *buf; /* encode buffer, reused so appends do not allocate */
	size_t buf_cap;
	/*
	 * The write batch of journal_put_remote_batch(), kept so that its
	 * buffer does not grow afresh (copies, page faults) for every run;
	 * NULL until the first run and after one over JOURNAL_BATCH_KEEP.
	 */
	leveldb_writebatch_t *rbatch;
	/*
	 * The m/vseg/ list of the segment appends go to, as stored: 16-byte
	 * (origin, highest seq) entries.  Rewritten whole with each event whose
	 * payload goes there, so appending never reads it back.
	 */
	uint32_t vseg; /* segment vseg_list describes, 0 before the first payload */
	uint8_t *vseg_list;
	size_t vseg_len;
	size_t vseg_cap;
};

struct journal_iter {
	struct journal *j;
	leveldb_iterator_t *it;
	char kind;
	int started;
	int done;
};

static void key_event(uint8_t *k, uint64_t origin, uint64_t seq)
{
	k[0] = 'e';
	k[1] = '/';
	put_be64(k + 2, origin);
	put_be64(k + 10, seq);
}

static void key_applied(uint8_t *k, uint64_t origin)
{
	k[0] = 'a';
	k[1] = '/';
	put_be64(k + 2, origin);
}

static void key_ckpt(uint8_t *k, uint64_t peer, uint64_t origin)
{
	k[0] = 'c';
	k[1] = '/';
	put_be64(k + 2, peer);
	k[10] = '/';
	put_be64(k + 11, origin);
}

/* Key of meta name in k (2 + META_NAME_MAX bytes); its length, 0 for a bad name. */
static size_t key_meta(char *k, const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > META_NAME_MAX)
		return 0;
	k[0] = 'm';
	k[1] = '/';
	memcpy(k + 2, name, n);
	return n + 2;
}

static size_t key_trimmed(char *k, uint64_t origin)
{
	char name[32];

	snprintf(name, sizeof(name), META_TRIMMED "%016" PRIx64, origin);
	return key_meta(k, name);
}

static size_t key_vseg(char *k, uint32_t segment)
{
	char name[32];

	snprintf(name, sizeof(name), META_VSEG "%08" PRIu32, segment);
	return key_meta(k, name);
}

/* The number in len bytes of s (a key's name, not terminated); 0 or -EINVAL. */
static int name_number(const char *s, size_t len, int base, uint64_t *out)
{
	char buf[24], *end;

	if (len == 0 || len >= sizeof(buf) ||
	    !((s[0] >= '0' && s[0] <= '9') || (base == 16 && s[0] >= 'a' && s[0] <= 'f')))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	*out = strtoull(buf, &end, base);
	return errno || *end ? -EINVAL : 0;
}

/* Log a LevelDB error with its message, which the static *why cannot carry. */
static int db_fail(const struct journal *j, const char *what, char *err)
{
	log_err("journal %s: %s: %s", j->dir, what, err);
	leveldb_free(err);
	return -EIO;
}

/* The marks of origin, or NULL. */
static struct origin_mark *mark_find(struct journal *j, uint64_t origin)
{
	for (size_t i = 0; i < j->nmarks; i++)
		if (j->marks[i].origin == origin)
			return &j->marks[i];
	return NULL;
}

/* The marks of origin, made (all 0) if there are none yet; NULL if out of memory. */
static struct origin_mark *mark_get(struct journal *j, uint64_t origin)
{
	struct origin_mark *m = mark_find(j, origin);

	if (m)
		return m;
	if (grow_array(&j->marks, &j->marks_cap, j->nmarks + 1) < 0)
		return NULL;
	m = &j->marks[j->nmarks++];
	*m = (struct origin_mark){.origin = origin};
	return m;
}

static int mark_set(struct journal *j, uint64_t origin, uint64_t seq, int pending)
{
	struct origin_mark *m = mark_get(j, origin);

	if (!m)
		return -ENOMEM;
	if (seq > m->applied) {
		m->applied = seq;
		m->pending = pending;
	}
	return 0;
}

static uint64_t mark_trimmed(struct journal *j, uint64_t origin)
{
	struct origin_mark *m = mark_find(j, origin);

	return m ? m->trimmed : 0;
}

static int marks_pending(const struct journal *j)
{
	for (size_t i = 0; i < j->nmarks; i++)
		if (j->marks[i].pending)
			return 1;
	return 0;
}

/*
 * Write batch b together with the pending applied marks.  A synced write
 * syncs the value log first so that no durable event references a payload
 * that is not.
 */
static int journal_write(struct journal *j, leveldb_writebatch_t *b, int sync, const char *what)
{
	uint8_t k[KEY_APPLIED_LEN], v[8];
	char *err = NULL;
	int ret;

	if (sync) {
		ret = vlog_sync(j->vlog);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; i < j->nmarks; i++) {
		if (!j->marks[i].pending)
			continue;
		key_applied(k, j->marks[i].origin);
		put_le64(v, j->marks[i].applied);
		leveldb_writebatch_put(b, (const char *)k, sizeof(k), (const char *)v, sizeof(v));
	}
	leveldb_write(j->db, sync ? j->wopts_sync : j->wopts, b, &err);
	if (err)
		return db_fail(j, what, err);
	for (size_t i = 0; i < j->nmarks; i++)
		j->marks[i].pending = 0;
	j->unsynced = !sync;
	j->writes++;
	return 0;
}

/*
 * Raw value under key.  *val is LevelDB's allocation: leveldb_free().
 * -ENOENT if absent.
 */
static int db_get(struct journal *j, const void *key, size_t klen, char **val, size_t *len)
{
	char *err = NULL;

	*val = leveldb_get(j->db, j->ropts, key, klen, len, &err);
	if (err)
		return db_fail(j, "read", err);
	return *val ? 0 : -ENOENT;
}

static int db_get_u64(struct journal *j, const void *key, size_t klen, uint64_t *out)
{
	char *val;
	size_t len;
	int ret;

	ret = db_get(j, key, klen, &val, &len);
	if (ret < 0)
		return ret;
	if (len == 8)
		*out = get_le64((const uint8_t *)val);
	else
		ret = -EBADMSG;
	leveldb_free(val);
	return ret;
}

/*
 * Called by meta_each() with the rest of a matching name (not terminated)
 * and the raw value.  Nonzero stops the scan and is what meta_each returns.
 */
typedef int (*meta_fn)(struct journal *j, const char *rest, size_t rest_len, const uint8_t *val,
		       size_t len, void *arg);

/* Call fn for each meta key whose name starts with prefix, in key order. */
static int meta_each(struct journal *j, const char *prefix, meta_fn fn, void *arg)
{
	leveldb_iterator_t *it = leveldb_create_iterator(j->db, j->scan_opts);
	char k[2 + META_NAME_MAX];
	size_t klen = key_meta(k, prefix), len, vlen;
	const char *key, *val;
	char *err = NULL;
	int ret = 0;

	for (leveldb_iter_seek(it, k, klen); leveldb_iter_valid(it); leveldb_iter_next(it)) {
		key = leveldb_iter_key(it, &len);
		if (len < klen || memcmp(key, k, klen) != 0)
			break;
		val = leveldb_iter_value(it, &vlen);
		ret = fn(j, key + klen, len - klen, (const uint8_t *)val, vlen, arg);
		if (ret)
			goto out;
	}
	leveldb_iter_get_error(it, &err);
	if (err)
		ret = db_fail(j, "scan metadata", err);
out:
	leveldb_iter_destroy(it);
	return ret;
}

static uint64_t hlc_next(const struct journal *j)
{
	struct timespec ts;
	uint64_t phys;

	/* Without a clock the logical counter alone keeps hlc increasing. */
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		return j->hlc_last + 1;
	phys = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) << 16;
	return phys > j->hlc_last ? phys : j->hlc_last + 1;
}

/*
 * Move a large write payload to the value log.  An event that arrives with
 * a vref must carry its payload (journal_get with payload set): a vref into
 * some other journal's value log means nothing here.
 */
static int payload_place(struct journal *j, struct event *ev, uint32_t inline_max)
{
	int ret;

	if (ev->flags & EVENT_F_VREF) {
		if (ev->data_len != ev->vref.len || (ev->data_len && !ev->data))
			return -EINVAL;
		ev->flags &= (uint16_t)~EVENT_F_VREF;
		ev->vref = (struct vref){0};
	}
	if (!event_type_is(ev->type, EVENT_T_VREF) || ev->data_len <= inline_max)
		return 0;
	ret = vlog_append(j->vlog, ev->origin, ev->seq, ev->data, ev->data_len, &ev->vref);
	if (ret < 0)
		return ret;
	ev->flags |= EVENT_F_VREF;
	return 0;
}

/* Encode ev into j->buf, leaving out a payload that sits in the value log. */
static int encode(struct journal *j, struct event *ev, size_t *len)
{
	uint8_t *data = ev->data;
	uint32_t data_len = ev->data_len;
	size_t need;
	int ret;

	if (ev->flags & EVENT_F_VREF) {
		ev->data = NULL;
		ev->data_len = 0;
	}
	need = event_encoded_len(ev);
	if (need > j->buf_cap) {
		uint8_t *n = realloc(j->buf, need);

		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		j->buf = n;
		j->buf_cap = need;
	}
	ret = event_encode(ev, j->buf, j->buf_cap, len);
out:
	ev->data = data;
	ev->data_len = data_len;
	return ret;
}

/*
 * Raise ev's entry in the m/vseg/ list of the segment its payload just went
 * to, and put the list in batch b.  If b is then not written, the entry
 * stays raised in memory: that only keeps the segment until that seq is
 * trimmed too.
 */
static int vseg_note(struct journal *j, leveldb_writebatch_t *b, const struct event *ev)
{
	char k[2 + META_NAME_MAX];
	size_t i, klen;

	if (ev->vref.segment != j->vseg) {
		j->vseg = ev->vref.segment;
		j->vseg_len = 0;
	}
	for (i = 0; i < j->vseg_len; i += VSEG_ENTRY)
		if (get_le64(j->vseg_list + i) == ev->origin)
			break;
	if (i == j->vseg_len) {
		if (grow_array(&j->vseg_list, &j->vseg_cap, j->vseg_len + VSEG_ENTRY) < 0)
			return -ENOMEM;
		put_le64(j->vseg_list + i, ev->origin);
		put_le64(j->vseg_list + i + 8, 0);
		j->vseg_len += VSEG_ENTRY;
	}
	if (ev->seq > get_le64(j->vseg_list + i + 8))
		put_le64(j->vseg_list + i + 8, ev->seq);
	klen = key_vseg(k, j->vseg);
	leveldb_writebatch_put(b, k, klen, (const char *)j->vseg_list, j->vseg_len);
	return 0;
}

/*
 * Put ev under its (origin, seq) into batch b, its payload in the value
 * log if larger than inline_max; with next_seq nonzero, m/next_seq is set
 * to it too, and so is the m/vseg/ list of the segment that took its
 * payload.
 */
static int event_stage(struct journal *j, leveldb_writebatch_t *b, struct event *ev,
		       uint64_t next_seq, uint32_t inline_max)
{
	uint8_t k[KEY_EVENT_LEN], v[8];
	char mk[2 + META_NAME_MAX];
	size_t len, mklen;
	int ret;

	ret = payload_place(j, ev, inline_max);
	if (ret < 0)
		return ret;
	ret = encode(j, ev, &len);
	if (ret < 0) {
		log_err("journal %s: cannot encode %s event %llu/%llu: %s", j->dir,
			event_type_name(ev->type), (unsigned long long)ev->origin,
			(unsigned long long)ev->seq, strerror(-ret));
		return ret;
	}
	key_event(k, ev->origin, ev->seq);
	leveldb_writebatch_put(b, (const char *)k, sizeof(k), (const char *)j->buf, len);
	if (next_seq) {
		mklen = key_meta(mk, JOURNAL_META_NEXT_SEQ);
		put_le64(v, next_seq);
		leveldb_writebatch_put(b, mk, mklen, (const char *)v, sizeof(v));
	}
	if (ev->flags & EVENT_F_VREF)
		return vseg_note(j, b, ev);
	return 0;
}

/* Journal ev alone, as event_stage() puts it. */
static int event_store(struct journal *j, struct event *ev, uint64_t next_seq)
{
	leveldb_writebatch_t *b = leveldb_writebatch_create();
	int ret;

	ret = event_stage(j, b, ev, next_seq, JOURNAL_INLINE_MAX);
	if (ret == 0)
		ret = journal_write(j, b, 0, "write event");
	leveldb_writebatch_destroy(b);
	return ret;
}

static int open_meta_u64(struct journal *j, const char *name, uint64_t *val, const char **why,
			 const char *why_missing)
{
	char k[2 + META_NAME_MAX];
	size_t klen;
	int ret;

	klen = key_meta(k, name);
	ret = db_get_u64(j, k, klen, val);
	if (ret == -ENOENT || ret == -EBADMSG) {
		*why = why_missing;
		return -EBADMSG;
	}
	if (ret < 0)
		*why = "cannot read journal metadata";
	return ret;
}

static int open_create_meta(struct journal *j, uint64_t node_id, const char **why)
{
	const struct {
		const char *name;
		uint64_t val;
	} fields[] = {
	    {JOURNAL_META_NODE_ID, node_id},
	    {JOURNAL_META_FORMAT, JOURNAL_FORMAT},
	    {JOURNAL_META_NEXT_SEQ, 1},
	    {JOURNAL_META_TERM, 0},
	};
	leveldb_writebatch_t *b = leveldb_writebatch_create();
	char k[2 + META_NAME_MAX];
	uint8_t v[8];
	size_t klen;
	int ret;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		klen = key_meta(k, fields[i].name);
		put_le64(v, fields[i].val);
		leveldb_writebatch_put(b, k, klen, (const char *)v, sizeof(v));
	}
	ret = journal_write(j, b, 1, "write initial metadata");
	leveldb_writebatch_destroy(b);
	if (ret < 0)
		*why = "cannot write journal metadata";
	return ret;
}

static int open_load_marks(struct journal *j, const char **why)
{
	struct journal_iter *it;
	const uint8_t *val;
	uint64_t origin;
	size_t len;
	int ret;

	ret = journal_iter_new(j, JOURNAL_APPLIED, 0, 0, &it);
	if (ret < 0)
		goto out;
	while ((ret = journal_iter_next(it, &origin, NULL, NULL, NULL, &val, &len)) > 0) {
		if (len != 8) {
			log_err("journal %s: applied mark of origin %llu has %zu bytes", j->dir,
				(unsigned long long)origin, len);
			ret = -EBADMSG;
			break;
		}
		ret = mark_set(j, origin, get_le64(val), 0);
		if (ret < 0)
			break;
	}
	journal_iter_free(it);
out:
	if (ret < 0)
		*why = "cannot load applied marks";
	return ret;
}

static int load_trimmed_one(struct journal *j, const char *rest, size_t rest_len,
			    const uint8_t *val, size_t len, void *arg)
{
	struct origin_mark *m;
	uint64_t origin;

	(void)arg;
	if (rest_len != 16 || name_number(rest, rest_len, 16, &origin) < 0 || len != 8) {
		log_err("journal %s: trimmed mark \"%.*s\" is damaged", j->dir, (int)rest_len,
			rest);
		return -EBADMSG;
	}
	m = mark_get(j, origin);
	if (!m)
		return -ENOMEM;
	m->trimmed = get_le64(val);
	return 0;
}

static int open_load_trimmed(struct journal *j, const char **why)
{
	int ret = meta_each(j, META_TRIMMED, load_trimmed_one, NULL);

	if (ret < 0)
		*why = "cannot load trimmed marks";
	return ret;
}

/*
 * Take the hlc and seq of the newest local event into account, so that
 * hlc stays increasing across a reboot with a clock that went back, and a
 * seq is never handed out twice even if m/next_seq were stale.
 */
static int open_load_last_local(struct journal *j)
{
	leveldb_iterator_t *it = leveldb_create_iterator(j->db, j->scan_opts);
	uint8_t k[KEY_EVENT_LEN];
	const char *key, *val;
	const char *why;
	struct event ev;
	size_t klen, vlen;
	char *err = NULL;
	int ret = 0;

	key_event(k, j->node_id, UINT64_MAX);
	leveldb_iter_seek(it, (const char *)k, sizeof(k));
	if (!leveldb_iter_valid(it))
		leveldb_iter_seek_to_last(it);
	else if (memcmp(leveldb_iter_key(it, &klen), k, sizeof(k)) != 0)
		leveldb_iter_prev(it);
	if (!leveldb_iter_valid(it)) {
		leveldb_iter_get_error(it, &err);
		if (err)
			ret = db_fail(j, "find the last local event", err);
		goto out;
	}
	key = leveldb_iter_key(it, &klen);
	if (klen != KEY_EVENT_LEN || memcmp(key, k, 10) != 0)
		goto out;
	val = leveldb_iter_value(it, &vlen);
	if (event_decode((const uint8_t *)val, vlen, &ev, NULL, &why) < 0) {
		log_warn("journal %s: last local event does not decode (%s)", j->dir, why);
		goto out;
	}
	if (ev.hlc > j->hlc_last)
		j->hlc_last = ev.hlc;
	if (ev.seq >= j->next_seq) {
		log_warn("journal %s: next seq %llu is not past local event %llu, using %llu",
			 j->dir, (unsigned long long)j->next_seq, (unsigned long long)ev.seq,
			 (unsigned long long)ev.seq + 1);
		j->next_seq = ev.seq + 1;
	}
	event_free(&ev);
out:
	leveldb_iter_destroy(it);
	return ret;
}

/* Make the new journal directory's own name durable. */
static int sync_parent(const char *dir)
{
	char *copy = strdup(dir), *slash;
	int fd, ret = 0;

	if (!copy)
		return -ENOMEM;
	slash = strrchr(copy, '/');
	if (!slash)
		strcpy(copy, ".");
	else if (slash == copy)
		slash[1] = 0;
	else
		*slash = 0;
	fd = open(copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	free(copy);
	return ret;
}

/* Check dir for a journal (its CURRENT file) before LevelDB is asked to open it. */
static int dir_has_journal(const char *dir, int *has)
{
	char *p;
	int ret = 0;

	if (asprintf(&p, "%s/CURRENT", dir) < 0)
		return -ENOMEM;
	*has = access(p, F_OK) == 0;
	if (!*has && errno != ENOENT && errno != ENOTDIR)
		ret = -errno;
	free(p);
	return ret;
}

static int open_prepare_dir(const char *dir, int create, const char **why)
{
	int has, ret;

	if (create && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		log_err("journal %s: mkdir: %s", dir, strerror(errno));
		*why = "cannot make the journal directory";
		return ret;
	}
	ret = dir_has_journal(dir, &has);
	if (ret < 0) {
		log_err("journal %s: %s", dir, strerror(-ret));
		*why = "cannot look into the journal directory";
		return ret;
	}
	if (create && has) {
		*why = "directory already holds a journal";
		return -EEXIST;
	}
	if (!create && !has) {
		*why = "no journal in this directory";
		return -ENOENT;
	}
	return 0;
}

static int open_db(struct journal *j, int create, const char **why)
{
	char *err = NULL;

	j->opts = leveldb_options_create();
	j->cache = leveldb_cache_create_lru(JOURNAL_BLOCK_CACHE);
	j->filter = leveldb_filterpolicy_create_bloom(JOURNAL_BLOOM_BITS);
	j->ropts = leveldb_readoptions_create();
	j->scan_opts = leveldb_readoptions_create();
	j->wopts = leveldb_writeoptions_create();
	j->wopts_sync = leveldb_writeoptions_create();
	leveldb_options_set_create_if_missing(j->opts, create);
	leveldb_options_set_error_if_exists(j->opts, create);
	leveldb_options_set_paranoid_checks(j->opts, 0);
	leveldb_options_set_write_buffer_size(j->opts, JOURNAL_WRITE_BUFFER);
	leveldb_options_set_max_open_files(j->opts, JOURNAL_MAX_OPEN_FILES);
	leveldb_options_set_cache(j->opts, j->cache);
	leveldb_options_set_filter_policy(j->opts, j->filter);
	leveldb_readoptions_set_fill_cache(j->scan_opts, 0);
	leveldb_writeoptions_set_sync(j->wopts, 0);
	leveldb_writeoptions_set_sync(j->wopts_sync, 1);

	j->db = leveldb_open(j->opts, j->dir, &err);
	if (!err)
		return 0;
	/* LevelDB 1.23 says "IO error: lock <dir>/LOCK: <reason>" for a held lock. */
	if (strstr(err, "lock ") && strstr(err, "/LOCK")) {
		leveldb_free(err);
		*why = "journal is in use by another process (is the node mounted?)";
		return -EBUSY;
	}
	*why = "cannot open the journal database";
	return db_fail(j, "open", err);
}

int journal_lock_holder(const char *dir, pid_t *pid)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	char path[PATH_MAX];
	int fd, r;

	if ((size_t)snprintf(path, sizeof(path), "%s/LOCK", dir) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	r = fcntl(fd, F_GETLK, &fl) < 0 ? -errno : fl.l_type != F_UNLCK;
	if (r > 0 && pid)
		*pid = fl.l_pid;
	close(fd);
	return r;
}

static int journal_mutex_init(struct journal *j)
{
	pthread_mutexattr_t a;
	int r;

	if (pthread_mutexattr_init(&a) != 0)
		return -ENOMEM;
	r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	if (r == 0)
		r = pthread_mutex_init(&j->mu, &a);
	pthread_mutexattr_destroy(&a);
	return -r;
}

static void journal_lock(struct journal *j)
{
	pthread_mutex_lock(&j->mu);
}

static void journal_unlock(struct journal *j)
{
	pthread_mutex_unlock(&j->mu);
}

int journal_open(const char *dir, int create, uint64_t node_id, struct journal **out,
		 const char **why)
{
	struct journal *j = NULL;
	const char *dummy;
	uint64_t format;
	char *vdir = NULL;
	int ret;

	if (!why)
		why = &dummy;
	*out = NULL;
	if (create && node_id == 0) {
		*why = "node id 0 is not valid";
		return -EINVAL;
	}
	ret = open_prepare_dir(dir, create, why);
	if (ret < 0)
		return ret;
	j = calloc(1, sizeof(*j));
	if (j && journal_mutex_init(j) < 0) {
		free(j);
		j = NULL;
	}
	if (!j || !(j->dir = strdup(dir)) || asprintf(&vdir, "%s/vlog", dir) < 0) {
		vdir = NULL;
		ret = -ENOMEM;
		*why = "out of memory";
		goto out;
	}
	ret = open_db(j, create, why);
	if (ret < 0)
		goto out;
	ret = vlog_open(vdir, VLOG_SEGMENT_MAX, &j->vlog, why);
	if (ret < 0)
		goto out;
	if (create) {
		ret = open_create_meta(j, node_id, why);
		if (ret < 0)
			goto out;
		ret = sync_parent(dir);
		if (ret < 0) {
			log_err("journal %s: sync parent directory: %s", dir, strerror(-ret));
			*why = "cannot sync the journal's parent directory";
			goto out;
		}
	}
	ret = open_meta_u64(j, JOURNAL_META_FORMAT, &format, why, "journal has no format version");
	if (ret < 0)
		goto out;
	if (format != JOURNAL_FORMAT) {
		log_err("journal %s: format %llu, this program reads %d", dir,
			(unsigned long long)format, JOURNAL_FORMAT);
		*why = "journal format version not supported";
		ret = -EPROTO;
		goto out;
	}
	ret = open_meta_u64(j, JOURNAL_META_NODE_ID, &j->node_id, why, "journal has no node id");
	if (ret < 0)
		goto out;
	if (j->node_id == 0) {
		*why = "journal has no node id";
		ret = -EBADMSG;
		goto out;
	}
	ret = open_meta_u64(j, JOURNAL_META_NEXT_SEQ, &j->next_seq, why, "journal has no next seq");
	if (ret < 0)
		goto out;
	ret = open_meta_u64(j, JOURNAL_META_TERM, &j->term, why, "journal has no term");
	if (ret < 0)
		goto out;
	ret = open_load_marks(j, why);
	if (ret < 0)
		goto out;
	ret = open_load_trimmed(j, why);
	if (ret < 0)
		goto out;
	ret = open_load_last_local(j);
	if (ret < 0) {
		*why = "cannot read the journal";
		goto out;
	}
	/* Recovered unsynced writes may still be only in the page cache. */
	j->unsynced = 1;
	*out = j;
	j = NULL;
out:
	free(vdir);
	if (j) {
		/* Do not write marks or syncs into a journal we refused. */
		j->nmarks = 0;
		j->unsynced = 0;
		journal_close(j);
	}
	return ret;
}

/*
 * Write LevelDB's memtable out to a table file, so that the next open does not
 * replay up to JOURNAL_WRITE_BUFFER bytes of log: a replica restarted for a
 * catch-up spent 0.2 s of it there. A compaction of a range past every key
 * (all keys start with a letter) does only that first step. LevelDB runs it on
 * its background thread, which a child forked from a process that has used
 * LevelDB does not have, so such a child must not close a journal.
 */
static void journal_flush_memtable(struct journal *j)
{
	static const char past_all[] = {'\xff', '\xff'};

	leveldb_compact_range(j->db, past_all, sizeof(past_all), past_all, sizeof(past_all));
}

void journal_close(struct journal *j)
{
	int ret;

	if (!j)
		return;
	if (j->db && j->vlog) {
		ret = journal_sync(j);
		if (ret < 0)
			log_err("journal %s: final sync failed: %s", j->dir, strerror(-ret));
		else
			journal_flush_memtable(j);
	}
	if (j->db)
		leveldb_close(j->db);
	vlog_close(j->vlog);
	if (j->opts)
		leveldb_options_destroy(j->opts);
	if (j->cache)
		leveldb_cache_destroy(j->cache);
	if (j->filter)
		leveldb_filterpolicy_destroy(j->filter);
	if (j->ropts)
		leveldb_readoptions_destroy(j->ropts);
	if (j->scan_opts)
		leveldb_readoptions_destroy(j->scan_opts);
	if (j->wopts)
		leveldb_writeoptions_destroy(j->wopts);
	if (j->wopts_sync)
		leveldb_writeoptions_destroy(j->wopts_sync);
	if (j->rbatch)
		leveldb_writebatch_destroy(j->rbatch);
	free(j->marks);
	free(j->buf);
	free(j->vseg_list);
	free(j->dir);
	pthread_mutex_destroy(&j->mu);
	free(j);
}

uint64_t journal_node_id(const struct journal *j)
{
	return j->node_id;
}

static uint64_t journal_next_seq_locked(const struct journal *j)
{
	return j->next_seq;
}

uint64_t journal_next_seq(const struct journal *j)
{
	uint64_t r;

	journal_lock((struct journal *)j);
	r = journal_next_seq_locked(j);
	journal_unlock((struct journal *)j);
	return r;
}

static int journal_meta_get_locked(struct journal *j, const char *name, void **val, size_t *len)
{
	char k[2 + META_NAME_MAX];
	char *raw;
	size_t klen;
	int ret;

	*val = NULL;
	*len = 0;
	klen = key_meta(k, name);
	if (!klen)
		return -EINVAL;
	ret = db_get(j, k, klen, &raw, len);
	if (ret < 0)
		return ret;
	/* Copied so that the caller frees with plain free(). */
	*val = malloc(*len ? *len : 1);
	if (*val)
		memcpy(*val, raw, *len);
	else
		ret = -ENOMEM;
	leveldb_free(raw);
	return ret;
}

int journal_meta_get(struct journal *j, const char *name, void **val, size_t *len)
{
	int r;

	journal_lock(j);
	r = journal_meta_get_locked(j, name, val, len);
	journal_unlock(j);
	return r;
}

/*
 * node_id and format describe the journal itself and are fixed at creation;
 * next_seq and term are cached here, so a put of them updates the cache.
 * Trimmed marks and segment lists change only through trimming and appends.
 */
static int journal_meta_put_locked(struct journal *j, const char *name, const void *val, size_t len, int sync)
{
	leveldb_writebatch_t *b;
	char k[2 + META_NAME_MAX];
	int is_seq = !strcmp(name, JOURNAL_META_NEXT_SEQ);
	int is_term = !strcmp(name, JOURNAL_META_TERM);
	size_t klen;
	int ret;

	if (!strcmp(name, JOURNAL_META_NODE_ID) || !strcmp(name, JOURNAL_META_FORMAT) ||
	    !strncmp(name, META_TRIMMED, strlen(META_TRIMMED)) ||
	    !strncmp(name, META_VSEG, strlen(META_VSEG)))
		return -EPERM;
	if ((is_seq || is_term) && len != 8)
		return -EINVAL;
	if (is_seq && get_le64(val) == 0)
		return -EINVAL;
	klen = key_meta(k, name);
	if (!klen)
		return -EINVAL;
	b = leveldb_writebatch_create();
	leveldb_writebatch_put(b, k, klen, val, len);
	ret = journal_write(j, b, sync, "write metadata");
	leveldb_writebatch_destroy(b);
	if (ret < 0)
		return ret;
	if (is_seq)
		j->next_seq = get_le64(val);
	if (is_term)
		j->term = get_le64(val);
	return 0;
}

int journal_meta_put(struct journal *j, const char *name, const void *val, size_t len, int sync)
{
	int r;

	journal_lock(j);
	r = journal_meta_put_locked(j, name, val, len, sync);
	journal_unlock(j);
	return r;
}

static int journal_meta_get_u64_locked(struct journal *j, const char *name, uint64_t *val)
{
	char k[2 + META_NAME_MAX];
	size_t klen = key_meta(k, name);

	if (!klen)
		return -EINVAL;
	return db_get_u64(j, k, klen, val);
}

int journal_meta_get_u64(struct journal *j, const char *name, uint64_t *val)
{
	int r;

	journal_lock(j);
	r = journal_meta_get_u64_locked(j, name, val);
	journal_unlock(j);
	return r;
}

static int journal_meta_put_u64_locked(struct journal *j, const char *name, uint64_t val, int sync)
{
	uint8_t v[8];

	put_le64(v, val);
	return journal_meta_put(j, name, v, sizeof(v), sync);
}

int journal_meta_put_u64(struct journal *j, const char *name, uint64_t val, int sync)
{
	int r;

	journal_lock(j);
	r = journal_meta_put_u64_locked(j, name, val, sync);
	journal_unlock(j);
	return r;
}

static int journal_append_locked(struct journal *j, struct event *ev)
{
	uint64_t hlc = hlc_next(j);
	int ret;

	ev->origin = j->node_id;
	ev->seq = j->next_seq;
	ev->hlc = hlc;
	ev->term = j->term;
	ret = event_store(j, ev, j->next_seq + 1);
	if (ret < 0)
		return ret;
	j->next_seq++;
	j->hlc_last = hlc;
	return 0;
}

int journal_append(struct journal *j, struct event *ev)
{
	int r;

	journal_lock(j);
	r = journal_append_locked(j, ev);
	journal_unlock(j);
	return r;
}

/*
 * May remote event ev be journaled?  -EEXIST if it is already, or was
 * trimmed; otherwise 0, with *next the next_seq to record (0: unchanged).
 * An event of this node's own origin can come back from a peer when this
 * node lost its unsynced tail; next_seq then moves past it so that the
 * number is not given to a different event.
 */
static int remote_check(struct journal *j, const struct event *ev, uint64_t *next)
{
	uint8_t k[KEY_EVENT_LEN];
	char *val;
	size_t len;
	int ret;

	*next = 0;
	if (ev->origin == 0 || ev->seq == 0 || ev->seq == UINT64_MAX)
		return -EINVAL;
	/* Only applied events are trimmed, so this one was had and applied before. */
	if (ev->seq <= mark_trimmed(j, ev->origin))
		return -EEXIST;
	key_event(k, ev->origin, ev->seq);
	ret = db_get(j, k, sizeof(k), &val, &len);
	if (ret == 0) {
		leveldb_free(val);
		return -EEXIST;
	}
	if (ret != -ENOENT)
		return ret;
	if (ev->origin == j->node_id && ev->seq >= j->next_seq)
		*next = ev->seq + 1;
	return 0;
}

/* next_seq moved past a returning event of our own origin: keep hlc ahead too. */
static void remote_took(struct journal *j, const struct event *ev, uint64_t next)
{
	if (next <= j->next_seq)
		return;
	j->next_seq = next;
	if (ev->hlc > j->hlc_last)
		j->hlc_last = ev->hlc;
}

static int journal_put_remote_locked(struct journal *j, struct event *ev)
{
	uint64_t next;
	int ret;

	ret = remote_check(j, ev, &next);
	if (ret == 0)
		ret = event_store(j, ev, next);
	if (ret == 0)
		remote_took(j, ev, next);
	return ret;
}

int journal_put_remote(struct journal *j, struct event *ev)
{
	int r;

	journal_lock(j);
	r = journal_put_remote_locked(j, ev);
	journal_unlock(j);
	return r;
}

static int journal_put_remote_batch_locked(struct journal *j, const struct event *evs, size_t n, const int *skip)
{
	uint32_t inline_max = n >= JOURNAL_BULK_RUN ? JOURNAL_BULK_INLINE_MAX : JOURNAL_INLINE_MAX;
	uint64_t next, top = 0, staged = 0;
	const struct event *last = NULL;
	size_t i;
	int ret = 0;

	if (!j->rbatch)
		j->rbatch = leveldb_writebatch_create();
	leveldb_writebatch_clear(j->rbatch);
	for (i = 0; i < n && ret == 0; i++) {
		/* A copy, as event_stage() may point it at the value log. */
		struct event copy = evs[i];

		if (skip && skip[i])
			continue;
		ret = remote_check(j, &copy, &next);
		if (ret == -EEXIST) {
			ret = 0;
			continue;
		}
		if (ret == 0)
			ret = event_stage(j, j->rbatch, &copy, next > top ? next : 0, inline_max);
		if (ret == 0 && next > top) {
			top = next;
			last = &evs[i];
		}
		if (!(copy.flags & EVENT_F_VREF))
			staged += copy.data_len;
	}
	if (ret == 0)
		ret = journal_write(j, j->rbatch, 0, "write events");
	if (ret == 0 && last)
		remote_took(j, last, top);
	/* A batch of huge records is not worth its memory until the next one. */
	if (staged > JOURNAL_BATCH_KEEP) {
		leveldb_writebatch_destroy(j->rbatch);
		j->rbatch = NULL;
	}
	return ret;
}

int journal_put_remote_batch(struct journal *j, const struct event *evs, size_t n, const int *skip)
{
	int r;

	journal_lock(j);
	r = journal_put_remote_batch_locked(j, evs, n, skip);
	journal_unlock(j);
	return r;
}

/*
 * A record that no longer decodes can still be voided (fsck does that);
 * its hlc and term are then unknown and left 0.
 */
static int journal_void_locked(struct journal *j, uint64_t origin, uint64_t seq)
{
	struct event old, v = {.type = EV_VOID, .origin = origin, .seq = seq};
	uint8_t k[KEY_EVENT_LEN];
	const char *why;
	char *val;
	size_t len;
	int ret;

	key_event(k, origin, seq);
	ret = db_get(j, k, sizeof(k), &val, &len);
	if (ret < 0)
		return ret;
	if (event_decode((const uint8_t *)val, len, &old, NULL, &why) == 0) {
		v.hlc = old.hlc;
		v.term = old.term;
		event_free(&old);
	} else {
		log_warn("journal %s: voiding event %llu/%llu that does not decode (%s)", j->dir,
			 (unsigned long long)origin, (unsigned long long)seq, why);
	}
	leveldb_free(val);
	return event_store(j, &v, 0);
}

int journal_void(struct journal *j, uint64_t origin, uint64_t seq)
{
	int r;

	journal_lock(j);
	r = journal_void_locked(j, origin, seq);
	journal_unlock(j);
	return r;
}

static int journal_delete_locked(struct journal *j, uint64_t origin, uint64_t seq)
{
	leveldb_writebatch_t *b = leveldb_writebatch_create();
	uint8_t k[KEY_EVENT_LEN];
	int ret;

	key_event(k, origin, seq);
	leveldb_writebatch_delete(b, (const char *)k, sizeof(k));
	ret = journal_write(j, b, 0, "delete event");
	leveldb_writebatch_destroy(b);
	return ret;
}

int journal_delete(struct journal *j, uint64_t origin, uint64_t seq)
{
	int r;

	journal_lock(j);
	r = journal_delete_locked(j, origin, seq);
	journal_unlock(j);
	return r;
}

static int journal_get_locked(struct journal *j, uint64_t origin, uint64_t seq, int payload, struct event *ev,
		const char **why)
{
	uint8_t k[KEY_EVENT_LEN];
	const char *dummy;
	size_t len, used;
	char *val;
	int ret;

	if (!why)
		why = &dummy;
	memset(ev, 0, sizeof(*ev));
	if (seq > 0 && seq <= mark_trimmed(j, origin)) {
		*why = "event was trimmed";
		return -ESTALE;
	}
	key_event(k, origin, seq);
	ret = db_get(j, k, sizeof(k), &val, &len);
	if (ret < 0) {
		*why = ret == -ENOENT ? "no such event" : "journal read failed";
		return ret;
	}
	ret = event_decode((const uint8_t *)val, len, ev, &used, why);
	leveldb_free(val);
	if (ret < 0)
		return ret;
	if (used != len) {
		*why = "journal record has trailing bytes";
		ret = -EBADMSG;
	} else if (ev->origin != origin || ev->seq != seq) {
		*why = "journal record does not match its key";
		ret = -EBADMSG;
	} else if (payload) {
		ret = journal_load_payload(j, ev, why);
	}
	if (ret < 0)
		event_free(ev);
	return ret;
}

int journal_get(struct journal *j, uint64_t origin, uint64_t seq, int payload, struct event *ev,
		const char **why)
{
	int r;

	journal_lock(j);
	r = journal_get_locked(j, origin, seq, payload, ev, why);
	journal_unlock(j);
	return r;
}

static int journal_load_payload_locked(struct journal *j, struct event *ev, const char **why)
{
	uint8_t *buf;
	int ret;

	if (!(ev->flags & EVENT_F_VREF) || ev->data)
		return 0;
	buf = malloc(ev->vref.len ? ev->vref.len : 1);
	if (!buf) {
		if (why)
			*why = "out of memory";
		return -ENOMEM;
	}
	ret = vlog_read(j->vlog, &ev->vref, ev->origin, ev->seq, buf, why);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	ev->data = buf;
	ev->data_len = ev->vref.len;
	return 0;
}

int journal_load_payload(struct journal *j, struct event *ev, const char **why)
{
	int r;

	journal_lock(j);
	r = journal_load_payload_locked(j, ev, why);
	journal_unlock(j);
	return r;
}

static int journal_payload_fd_locked(struct journal *j, uint32_t segment, int *fd, const char **why)
{
	return vlog_dup_segment(j->vlog, segment, fd, why);
}

int journal_payload_fd(struct journal *j, uint32_t segment, int *fd, const char **why)
{
	int r;

	journal_lock(j);
	r = journal_payload_fd_locked(j, segment, fd, why);
	journal_unlock(j);
	return r;
}

/* A mark that cannot be recorded (out of memory) is only lost work: apply is idempotent. */
static void journal_mark_applied_locked(struct journal *j, uint64_t origin, uint64_t seq)
{
	if (mark_set(j, origin, seq, 1) < 0)
		log_warn("journal %s: out of memory recording applied %llu/%llu", j->dir,
			 (unsigned long long)origin, (unsigned long long)seq);
}

void journal_mark_applied(struct journal *j, uint64_t origin, uint64_t seq)
{
	journal_lock(j);
	journal_mark_applied_locked(j, origin, seq);
	journal_unlock(j);
}

/* Every persisted mark was loaded at open, so memory is never behind the disk. */
static uint64_t journal_applied_locked(struct journal *j, uint64_t origin)
{
	struct origin_mark *m = mark_find(j, origin);

	return m ? m->applied : 0;
}

uint64_t journal_applied(struct journal *j, uint64_t origin)
{
	uint64_t r;

	journal_lock(j);
	r = journal_applied_locked(j, origin);
	journal_unlock(j);
	return r;
}

int journal_applied_marks(struct journal *j, struct evid **v, size_t *n)
{
	int r = 0;

	*v = NULL;
	*n = 0;
	journal_lock(j);
	if (j->nmarks && !(*v = malloc(j->nmarks * sizeof(**v))))
		r = -ENOMEM;
	for (size_t i = 0; r == 0 && i < j->nmarks; i++)
		(*v)[(*n)++] = (struct evid){j->marks[i].origin, j->marks[i].applied};
	journal_unlock(j);
	return r;
}

static int journal_sync_begin_locked(struct journal *j, struct journal_sync *s)
{
	leveldb_writebatch_t *b;
	int ret, vlog;

	vlog = vlog_sync_begin(j->vlog, &s->vs);
	if (vlog < 0)
		return vlog;
	if (!vlog && !j->unsynced && !marks_pending(j))
		return 0;
	if (marks_pending(j)) {
		b = leveldb_writebatch_create();
		ret = journal_write(j, b, 0, "write applied marks");
		leveldb_writebatch_destroy(b);
		if (ret < 0) {
			vlog_sync_cancel(&s->vs);
			return ret;
		}
	}
	s->gen = j->writes;
	return 1;
}

int journal_sync_begin(struct journal *j, struct journal_sync *s)
{
	int r;

	journal_lock(j);
	r = journal_sync_begin_locked(j, s);
	journal_unlock(j);
	return r;
}

/* fdatasync the LevelDB log file name in dfd, if it is one and still there. */
static int sync_log_file(int dfd, const char *name, void *arg)
{
	struct journal *j = arg;
	size_t n = strlen(name);
	int fd, ret = 0;

	if (n < 5 || strcmp(name + n - 4, ".log") != 0 || strspn(name, "0123456789") != n - 4)
		return 0;
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fdatasync(fd) < 0) {
		ret = -errno;
		log_err("journal %s: cannot sync %s: %s", j->dir, name, strerror(errno));
	}
	close(fd);
	return ret;
}

/*
 * LevelDB hands every write to its log file with write(2) before the write
 * returns, so an fdatasync of its log files makes every earlier write
 * durable.  Not an empty synced write: LevelDB's writers queue behind one,
 * so the disk flush would stall every journal write meanwhile.  A log file
 * that LevelDB removed since its write had its memtable saved in a table
 * file, which LevelDB syncs, with its synced manifest, first.
 */
int journal_sync_log(struct journal *j, struct journal_sync *s)
{
	int dfd, ret;

	/* A synced event must never reference a payload that is not. */
	ret = vlog_sync_fd(j->vlog, &s->vs);
	if (ret < 0)
		return ret;
	dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		ret = -errno;
		log_err("journal %s: cannot open it to sync: %s", j->dir, strerror(errno));
		return ret;
	}
	ret = dir_scan(dfd, sync_log_file, j);
	close(dfd);
	return ret;
}

static void journal_sync_end_locked(struct journal *j, struct journal_sync *s, int result)
{
	vlog_sync_end(j->vlog, &s->vs);
	if (result == 0 && j->writes == s->gen)
		j->unsynced = 0;
}

void journal_sync_end(struct journal *j, struct journal_sync *s, int result)
{
	journal_lock(j);
	journal_sync_end_locked(j, s, result);
	journal_unlock(j);
}

int journal_sync(struct journal *j)
{
	struct journal_sync s;
	int ret;

	ret = journal_sync_begin(j, &s);
	if (ret <= 0)
		return ret;
	ret = journal_sync_log(j, &s);
	journal_sync_end(j, &s, ret);
	return ret;
}

static int journal_checkpoint_get_locked(struct journal *j, uint64_t peer, uint64_t origin, uint64_t *seq)
{
	uint8_t k[KEY_CKPT_LEN];
	int ret;

	key_ckpt(k, peer, origin);
	ret = db_get_u64(j, k, sizeof(k), seq);
	if (ret == -ENOENT) {
		*seq = 0;
		return 0;
	}
	if (ret == -EBADMSG)
		log_err("journal %s: checkpoint of peer %llu origin %llu is damaged", j->dir,
			(unsigned long long)peer, (unsigned long long)origin);
	return ret;
}

int journal_checkpoint_get(struct journal *j, uint64_t peer, uint64_t origin, uint64_t *seq)
{
	int r;

	journal_lock(j);
	r = journal_checkpoint_get_locked(j, peer, origin, seq);
	journal_unlock(j);
	return r;
}

static int journal_checkpoint_put_locked(struct journal *j, uint64_t peer, uint64_t origin, uint64_t seq)
{
	leveldb_writebatch_t *b;
	uint8_t k[KEY_CKPT_LEN], v[8];
	uint64_t cur;
	int ret;

	ret = journal_checkpoint_get(j, peer, origin, &cur);
	if (ret < 0)
		return ret;
	if (seq <= cur)
		return 0;
	key_ckpt(k, peer, origin);
	put_le64(v, seq);
	b = leveldb_writebatch_create();
	leveldb_writebatch_put(b, (const char *)k, sizeof(k), (const char *)v, sizeof(v));
	ret = journal_write(j, b, 0, "write checkpoint");
	leveldb_writebatch_destroy(b);
	return ret;
}

int journal_checkpoint_put(struct journal *j, uint64_t peer, uint64_t origin, uint64_t seq)
{
	int r;

	journal_lock(j);
	r = journal_checkpoint_put_locked(j, peer, origin, seq);
	journal_unlock(j);
	return r;
}

static int journal_checkpoint_forget_locked(struct journal *j, uint64_t peer)
{
	leveldb_iterator_t *it = leveldb_create_iterator(j->db, j->scan_opts);
	leveldb_writebatch_t *b = leveldb_writebatch_create();
	uint8_t k[KEY_CKPT_LEN];
	const char *key;
	size_t klen;
	char *err = NULL;
	int ret = 0;

	key_ckpt(k, peer, 0);
	/* Checkpoints are few per peer (one per origin): one batch holds them all. */
	for (leveldb_iter_seek(it, (const char *)k, sizeof(k)); leveldb_iter_valid(it);
	     leveldb_iter_next(it)) {
		key = leveldb_iter_key(it, &klen);
		if (klen < 11 || memcmp(key, k, 11) != 0)
			break;
		leveldb_writebatch_delete(b, key, klen);
	}
	leveldb_iter_get_error(it, &err);
	if (err)
		ret = db_fail(j, "iterate", err);
	if (ret == 0)
		ret = journal_write(j, b, 0, "forget checkpoints");
	leveldb_writebatch_destroy(b);
	leveldb_iter_destroy(it);
	return ret;
}

int journal_checkpoint_forget(struct journal *j, uint64_t peer)
{
	int r;

	journal_lock(j);
	r = journal_checkpoint_forget_locked(j, peer);
	journal_unlock(j);
	return r;
}

int journal_iter_new(struct journal *j, enum journal_kind kind, uint64_t origin, uint64_t seq,
		     struct journal_iter **out)
{
	struct journal_iter *it;
	uint8_t k[KEY_EVENT_LEN];
	size_t klen;

	*out = NULL;
	switch (kind) {
	case JOURNAL_EVENTS:
		key_event(k, origin, seq);
		klen = KEY_EVENT_LEN;
		break;
	case JOURNAL_APPLIED:
		key_applied(k, origin);
		klen = KEY_APPLIED_LEN;
		break;
	case JOURNAL_CHECKPOINTS:
		k[0] = 'c';
		k[1] = '/';
		/* origin carries the peer here: checkpoints are keyed peer first. */
		put_be64(k + 2, origin);
		klen = 10;
		break;
	case JOURNAL_META:
		k[0] = 'm';
		k[1] = '/';
		klen = 2;
		break;
	default:
		return -EINVAL;
	}
	it = calloc(1, sizeof(*it));
	if (!it)
		return -ENOMEM;
	it->j = j;
	it->kind = (char)kind;
	it->it = leveldb_create_iterator(j->db, j->scan_opts);
	leveldb_iter_seek(it->it, (const char *)k, klen);
	*out = it;
	return 0;
}

void journal_iter_free(struct journal_iter *it)
{
	if (!it)
		return;
	leveldb_iter_destroy(it->it);
	free(it);
}

static int iter_bad_key(struct journal_iter *it, size_t klen)
{
	log_err("journal %s: key of kind '%c' has bad length %zu", it->j->dir, it->kind, klen);
	return -EBADMSG;
}

int journal_iter_next(struct journal_iter *it, uint64_t *a, uint64_t *b, const char **name,
		      size_t *name_len, const uint8_t **val, size_t *len)
{
	const uint8_t *k, *v;
	uint64_t x = 0, y = 0;
	size_t klen, vlen;
	char *err = NULL;

	if (it->done)
		return 0;
	if (it->started)
		leveldb_iter_next(it->it);
	it->started = 1;
	if (!leveldb_iter_valid(it->it)) {
		it->done = 1;
		leveldb_iter_get_error(it->it, &err);
		return err ? db_fail(it->j, "iterate", err) : 0;
	}
	k = (const uint8_t *)leveldb_iter_key(it->it, &klen);
	if (klen < 2 || k[0] != (uint8_t)it->kind || k[1] != '/') {
		it->done = 1;
		return 0;
	}
	/* A bad key is reported; the next call moves past it. */
	switch (it->kind) {
	case JOURNAL_EVENTS:
		if (klen != KEY_EVENT_LEN)
			return iter_bad_key(it, klen);
		x = get_be64(k + 2);
		y = get_be64(k + 10);
		break;
	case JOURNAL_APPLIED:
		if (klen != KEY_APPLIED_LEN)
			return iter_bad_key(it, klen);
		x = get_be64(k + 2);
		break;
	case JOURNAL_CHECKPOINTS:
		if (klen != KEY_CKPT_LEN || k[10] != '/')
			return iter_bad_key(it, klen);
		x = get_be64(k + 2);
		y = get_be64(k + 11);
		break;
	default:
		break;
	}
	if (a)
		*a = x;
	if (b)
		*b = y;
	if (name)
		*name = it->kind == JOURNAL_META ? (const char *)k + 2 : NULL;
	if (name_len)
		*name_len = it->kind == JOURNAL_META ? klen - 2 : 0;
	v = (const uint8_t *)leveldb_iter_value(it->it, &vlen);
	if (val)
		*val = v;
	if (len)
		*len = vlen;
	return 1;
}

/* Sum the sizes of the regular files directly in dir (LevelDB keeps no subdirectories). */
static int dir_file_bytes(const char *dir, uint64_t *bytes)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct stat st;
	int ret = 0;

	*bytes = 0;
	if (!d)
		return -errno;
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				ret = -errno;
			break;
		}
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			ret = -errno;
			break;
		}
		if (S_ISREG(st.st_mode))
			*bytes += (uint64_t)st.st_size;
	}
	closedir(d);
	return ret;
}

static int journal_disk_usage_locked(struct journal *j, uint64_t *leveldb_bytes, uint64_t *vlog_bytes)
{
	int ret;

	ret = dir_file_bytes(j->dir, leveldb_bytes);
	if (ret < 0)
		return ret;
	return vlog_disk_usage(j->vlog, vlog_bytes);
}

int journal_disk_usage(struct journal *j, uint64_t *leveldb_bytes, uint64_t *vlog_bytes)
{
	int r;

	journal_lock(j);
	r = journal_disk_usage_locked(j, leveldb_bytes, vlog_bytes);
	journal_unlock(j);
	return r;
}

/*
 * Step it over keys under origin's prefix that are not event keys (only a
 * bug makes them; journal_iter_next() reports them), then: 1 with *seq when
 * it is at an event of origin, 0 past them, negative errno on an error.
 */
static int iter_origin_seq(struct journal *j, leveldb_iterator_t *it, uint64_t origin,
			   uint64_t *seq)
{
	uint8_t prefix[KEY_EVENT_LEN];
	const char *key;
	size_t klen;
	char *err = NULL;

	key_event(prefix, origin, 0);
	for (; leveldb_iter_valid(it); leveldb_iter_next(it)) {
		key = leveldb_iter_key(it, &klen);
		if (klen < 10 || memcmp(key, prefix, 10) != 0)
			return 0;
		if (klen == KEY_EVENT_LEN) {
			*seq = get_be64((const uint8_t *)key + 10);
			return 1;
		}
	}
	leveldb_iter_get_error(it, &err);
	return err ? db_fail(j, "iterate", err) : 0;
}

/* An iterator at origin's oldest event not trimmed, seeking past the trimmed tombstones. */
static leveldb_iterator_t *iter_oldest(struct journal *j, uint64_t origin)
{
	leveldb_iterator_t *it = leveldb_create_iterator(j->db, j->scan_opts);
	uint8_t k[KEY_EVENT_LEN];

	key_event(k, origin, mark_trimmed(j, origin) + 1);
	leveldb_iter_seek(it, (const char *)k, sizeof(k));
	return it;
}

/* Write b with m's trimmed mark raised to mark, then empty b for the next batch. */
static int trim_write(struct journal *j, leveldb_writebatch_t *b, struct origin_mark *m,
		      uint64_t mark)
{
	char k[2 + META_NAME_MAX];
	size_t klen = key_trimmed(k, m->origin);
	uint8_t v[8];
	int ret;

	put_le64(v, mark);
	leveldb_writebatch_put(b, k, klen, (const char *)v, sizeof(v));
	ret = journal_write(j, b, 0, "trim");
	leveldb_writebatch_clear(b);
	if (ret == 0)
		m->trimmed = mark;
	return ret;
}

/* Segments found deletable by vseg_check(); segs is malloc'd. */
struct vseg_dead {
	uint32_t *segs;
	size_t n;
	size_t cap;
};

/* Add the segment of one m/vseg/ key to the dead ones if no event can reference it. */
static int vseg_check(struct journal *j, const char *rest, size_t rest_len, const uint8_t *val,
		      size_t len, void *arg)
{
	struct vseg_dead *d = arg;
	uint64_t seg;

	if (name_number(rest, rest_len, 10, &seg) < 0 || seg == 0 || seg > UINT32_MAX ||
	    len % VSEG_ENTRY != 0) {
		log_warn("journal %s: value-log list \"%.*s\" is damaged: its segment is kept",
			 j->dir, (int)rest_len, rest);
		return 0;
	}
	if (seg == vlog_segment(j->vlog))
		return 0;
	for (size_t i = 0; i < len; i += VSEG_ENTRY)
		if (mark_trimmed(j, get_le64(val + i)) < get_le64(val + i + 8))
			return 0;
	if (grow_array(&d->segs, &d->cap, d->n + 1) < 0)
		return -ENOMEM;
	d->segs[d->n++] = (uint32_t)seg;
	return 0;
}

/* Make the removal of segs durable, then drop their m/vseg/ keys. */
static int vseg_forget(struct journal *j, const uint32_t *segs, size_t n)
{
	leveldb_writebatch_t *b;
	char k[2 + META_NAME_MAX];
	size_t klen;
	int ret;

	ret = vlog_sync_dir(j->vlog);
	if (ret < 0)
		return ret;
	b = leveldb_writebatch_create();
	for (size_t i = 0; i < n; i++) {
		klen = key_vseg(k, segs[i]);
		leveldb_writebatch_delete(b, k, klen);
	}
	ret = journal_write(j, b, 0, "forget value-log segments");
	leveldb_writebatch_destroy(b);
	return ret;
}

/*
 * Delete every value-log segment no journaled event can reference any
 * more.  Order makes a crash harmless: the trims are made durable first,
 * then the files go, then (once that is durable) their keys.
 */
static int vseg_reclaim(struct journal *j)
{
	struct vseg_dead d = {0};
	size_t removed = 0;
	int ret, ret2;

	ret = meta_each(j, META_VSEG, vseg_check, &d);
	if (ret < 0 || d.n == 0)
		goto out;
	ret = journal_sync(j);
	if (ret < 0)
		goto out;
	for (; removed < d.n; removed++) {
		ret = vlog_remove(j->vlog, d.segs[removed]);
		if (ret < 0)
			break;
	}
	if (removed > 0) {
		ret2 = vseg_forget(j, d.segs, removed);
		if (ret == 0)
			ret = ret2;
		log_info("journal %s: deleted %zu value-log segment(s) no event references", j->dir,
			 removed);
	}
out:
	free(d.segs);
	return ret;
}

/* Delete m's events up to upto in bounded batches; *deleted counts what was written. */
static int trim_events(struct journal *j, struct origin_mark *m, uint64_t upto, uint64_t *deleted)
{
	leveldb_writebatch_t *b = leveldb_writebatch_create();
	leveldb_iterator_t *it = iter_oldest(j, m->origin);
	uint8_t k[KEY_EVENT_LEN];
	uint64_t seq = 0, n = 0;
	unsigned inbatch = 0;
	int ret, more = 1;

	while (more) {
		ret = iter_origin_seq(j, it, m->origin, &seq);
		if (ret < 0)
			goto out;
		more = ret > 0 && seq <= upto;
		if (more) {
			key_event(k, m->origin, seq);
			leveldb_writebatch_delete(b, (const char *)k, sizeof(k));
			inbatch++;
			n++;
			leveldb_iter_next(it);
		}
		if (!more || inbatch == JOURNAL_TRIM_BATCH) {
			ret = trim_write(j, b, m, more ? seq : upto);
			if (ret < 0)
				goto out;
			*deleted = n;
			inbatch = 0;
		}
	}
out:
	leveldb_iter_destroy(it);
	leveldb_writebatch_destroy(b);
	return ret;
}

static int journal_trim_locked(struct journal *j, uint64_t origin, uint64_t upto, uint64_t *trimmed)
{
	struct origin_mark *m;
	uint64_t deleted = 0;
	int ret;

	if (trimmed)
		*trimmed = 0;
	if (origin == 0 || upto == UINT64_MAX || upto > journal_applied(j, origin))
		return -EINVAL;
	m = mark_find(j, origin);
	if (m && upto > m->trimmed) {
		ret = trim_events(j, m, upto, &deleted);
		if (ret < 0)
			goto out;
	}
	ret = vseg_reclaim(j);
out:
	if (trimmed)
		*trimmed = deleted;
	return ret;
}

int journal_trim(struct journal *j, uint64_t origin, uint64_t upto, uint64_t *trimmed)
{
	int r;

	journal_lock(j);
	r = journal_trim_locked(j, origin, upto, trimmed);
	journal_unlock(j);
	return r;
}

static int journal_trimmed_locked(struct journal *j, uint64_t origin, uint64_t *seq)
{
	*seq = mark_trimmed(j, origin);
	return 0;
}

int journal_trimmed(struct journal *j, uint64_t origin, uint64_t *seq)
{
	int r;

	journal_lock(j);
	r = journal_trimmed_locked(j, origin, seq);
	journal_unlock(j);
	return r;
}

uint64_t journal_dead_bytes(struct journal *j)
{
	uint8_t(*keys)[2][KEY_EVENT_LEN] = NULL;
	const char **starts = NULL, **limits = NULL;
	size_t *lens = NULL, n = 0, i;
	uint64_t *sizes = NULL, total = 0;

	journal_lock(j);
	if (j->nmarks) {
		keys = calloc(j->nmarks, sizeof(*keys));
		starts = calloc(j->nmarks, sizeof(*starts));
		limits = calloc(j->nmarks, sizeof(*limits));
		lens = calloc(j->nmarks, sizeof(*lens));
		sizes = calloc(j->nmarks, sizeof(*sizes));
	}
	if (keys && starts && limits && lens && sizes) {
		for (i = 0; i < j->nmarks; i++) {
			if (!j->marks[i].trimmed)
				continue;
			key_event(keys[n][0], j->marks[i].origin, 0);
			key_event(keys[n][1], j->marks[i].origin, j->marks[i].trimmed + 1);
			starts[n] = (const char *)keys[n][0];
			limits[n] = (const char *)keys[n][1];
			lens[n] = KEY_EVENT_LEN;
			n++;
		}
	}
	journal_unlock(j);
	if (n)
		leveldb_approximate_sizes(j->db, (int)n, starts, lens, limits, lens, sizes);
	for (i = 0; i < n; i++)
		total += sizes[i];
	free(keys);
	free(starts);
	free(limits);
	free(lens);
	free(sizes);
	return total;
}

void journal_compact_events(struct journal *j, uint64_t origin, uint64_t upto)
{
	uint8_t from[KEY_EVENT_LEN], to[KEY_EVENT_LEN];

	key_event(from, origin, 0);
	key_event(to, origin, upto);
	leveldb_compact_range(j->db, (const char *)from, sizeof(from), (const char *)to,
			      sizeof(to));
}

static void journal_set_vlog_segment_max_locked(struct journal *j, uint64_t bytes)
{
	vlog_set_segment_max(j->vlog, bytes);
}

void journal_set_vlog_segment_max(struct journal *j, uint64_t bytes)
{
	journal_lock(j);
	journal_set_vlog_segment_max_locked(j, bytes);
	journal_unlock(j);
}

static int journal_oldest_locked(struct journal *j, uint64_t origin, uint64_t *seq)
{
	leveldb_iterator_t *it = iter_oldest(j, origin);
	int ret;

	ret = iter_origin_seq(j, it, origin, seq);
	if (ret == 0)
		*seq = 0;
	leveldb_iter_destroy(it);
	return ret < 0 ? ret : 0;
}

int journal_oldest(struct journal *j, uint64_t origin, uint64_t *seq)
{
	int r;

	journal_lock(j);
	r = journal_oldest_locked(j, origin, seq);
	journal_unlock(j);
	return r;
}

/*
 * Bytes event (the record at it) holds: key, record and value-log record;
 * *phys_ms its hlc's physical part.  -EBADMSG if it does not decode.
 */
static int trim_measure(struct journal *j, leveldb_iterator_t *it, uint64_t origin, uint64_t seq,
			uint64_t *bytes, uint64_t *phys_ms)
{
	struct event ev;
	const char *val, *why;
	size_t len;
	int ret;

	val = leveldb_iter_value(it, &len);
	ret = event_decode((const uint8_t *)val, len, &ev, NULL, &why);
	if (ret < 0) {
		log_warn("journal %s: event %016" PRIx64 ":%" PRIu64
			 " does not decode (%s): trimming stops before it",
			 j->dir, origin, seq, why);
		return ret;
	}
	*bytes = KEY_EVENT_LEN + len;
	if (ev.flags & EVENT_F_VREF)
		*bytes += VLOG_HEADER_LEN + (uint64_t)ev.vref.len;
	*phys_ms = ev.hlc >> 16;
	event_free(&ev);
	return 0;
}

static int journal_trim_point_locked(struct journal *j, uint64_t origin, uint64_t confirmed,
		       uint64_t retain_age_ms, uint64_t now_ms, uint64_t *excess, uint64_t *upto)
{
	leveldb_iterator_t *it = NULL;
	uint64_t limit = confirmed, applied = journal_applied(j, origin);
	uint64_t seq, bytes, phys;
	int ret = 0, young;

	*upto = mark_trimmed(j, origin);
	if (limit > applied)
		limit = applied;
	if (limit <= *upto)
		return 0;
	it = iter_oldest(j, origin);
	for (unsigned n = 0; n < JOURNAL_TRIM_SCAN_MAX; n++) {
		ret = iter_origin_seq(j, it, origin, &seq);
		if (ret < 0)
			goto out;
		if (ret == 0 || seq > limit) {
			/* No event left up to limit: all of it may go. */
			*upto = limit;
			ret = 0;
			goto out;
		}
		if (retain_age_ms || (excess && *excess)) {
			ret = trim_measure(j, it, origin, seq, &bytes, &phys);
			if (ret < 0) {
				ret = 0;
				goto out;
			}
			/* Nothing can be older than the epoch. */
			young = retain_age_ms &&
				(now_ms < retain_age_ms || phys > now_ms - retain_age_ms);
			if (young && !(excess && *excess))
				goto out;
			if (excess)
				*excess -= bytes < *excess ? bytes : *excess;
		}
		*upto = seq;
		leveldb_iter_next(it);
	}
	ret = 0;
out:
	leveldb_iter_destroy(it);
	return ret;
}

int journal_trim_point(struct journal *j, uint64_t origin, uint64_t confirmed,
		       uint64_t retain_age_ms, uint64_t now_ms, uint64_t *excess, uint64_t *upto)
{
	int r;

	journal_lock(j);
	r = journal_trim_point_locked(j, origin, confirmed, retain_age_ms, now_ms, excess, upto);
	journal_unlock(j);
	return r;
}
