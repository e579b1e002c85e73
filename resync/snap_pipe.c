/*
 * snap_pipe.c - a worker thread that stages a resync's objects (see
 * snap_pipe.h).
 *
 * A resync to an empty node spends most of its receiving time in the
 * filesystem: creating each staging file, copying the contents into the
 * page cache, setting its metadata.  Done by the thread that also reads
 * and decrypts the frames, each entry waited for the one before it; with
 * the staging on its own thread the two overlap, as rsync's receiver and
 * generator do.
 *
 * Each worker (a lane) has a FIFO of operations guarded by the pipe's
 * lock, takes one at a time and runs it without the lock.  An object goes
 * whole to the lane with the fewest bytes queued, so a small file does not
 * wait behind a large one, and one lane's syncfs (which waits for the
 * disk) does not stop the other.  Durability is unchanged: an object is
 * renamed to its final name only by snap_stage_flush(), after a syncfs,
 * and the reader flushes once more after snap_pipe_drain().
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/clock.h"
#include "resync/snap_pipe.h"

enum pipe_op_type { OP_BEGIN, OP_WRITE, OP_COMMIT };

struct pipe_op {
	struct pipe_op *next;
	enum pipe_op_type type;
	uint8_t digest[SNAP_DIGEST_LEN]; /* BEGIN */
	struct snap_meta m;		 /* BEGIN: owned copy */
	char *path;			 /* BEGIN: for messages */
	uint64_t off;			 /* WRITE */
	size_t len;			 /* WRITE: bytes in data */
	uint8_t data[];			 /* WRITE */
};

struct pipe_lane {
	struct snap_pipe *p;
	pthread_t thread;
	pthread_cond_t work;	     /* signalled when an op is queued or stop is set */
	struct pipe_op *head, *tail; /* guarded by p->lock */
	size_t queued_bytes;	     /* WRITE bytes in this lane's queue; guarded by p->lock */
	/* The worker's own. */
	struct snap_obj *obj;
	char *obj_path;
	int flushing; /* a batch flush failed, not obj_path's entry */
};

struct snap_pipe {
	struct snap_stage *s;
	struct snap_pipe_limits lim;
	struct pipe_lane lane[SNAP_PIPE_MAX_WORKERS];
	size_t nlanes;
	size_t cur; /* the reader's: lane of the object being queued */
	pthread_mutex_t lock;
	pthread_cond_t room; /* signalled when an op is done */
	/* Guarded by lock. */
	size_t queued_bytes; /* WRITE bytes in all queues */
	size_t busy;	     /* ops queued or running */
	int stop;
	int err;
	char why[512];
	uint64_t written; /* content bytes written */
	uint64_t flushed_bytes;
	int64_t flushed_ms;
};

static void op_free(struct pipe_op *op)
{
	if (!op)
		return;
	snap_meta_free(&op->m);
	free(op->path);
	free(op);
}

/* Worker: record the first error, with the entry it concerns. */
static void set_error(struct pipe_lane *l, int err, const char *what)
{
	struct snap_pipe *p = l->p;

	pthread_mutex_lock(&p->lock);
	if (!p->err) {
		p->err = err;
		if (l->obj_path && !l->flushing)
			snprintf(p->why, sizeof(p->why), "cannot stage %.200s: %s: %s", l->obj_path,
				 what ? what : "", strerror(-err));
		else
			snprintf(p->why, sizeof(p->why), "staging area: %s: %s", what ? what : "",
				 strerror(-err));
	}
	pthread_cond_broadcast(&p->room);
	pthread_mutex_unlock(&p->lock);
}

/* Worker: flush when a limit is reached. */
static int maybe_flush(struct pipe_lane *l, const char **why)
{
	struct snap_pipe *p = l->p;
	int64_t now = clock_mono_ms();
	int err, due;

	pthread_mutex_lock(&p->lock);
	due = snap_stage_pending(p->s) >= p->lim.objs ||
	      p->written - p->flushed_bytes >= p->lim.bytes || now - p->flushed_ms >= p->lim.ms;
	if (due) {
		p->flushed_bytes = p->written;
		p->flushed_ms = now;
	}
	pthread_mutex_unlock(&p->lock);
	if (!due)
		return 0;
	err = snap_stage_flush(p->s);
	if (err) {
		*why = "cannot make staged entries durable";
		l->flushing = 1;
	}
	return err;
}

/* Worker: one operation; 0 or a negative errno with *why. */
static int run_op(struct pipe_lane *l, struct pipe_op *op, const char **why)
{
	struct snap_pipe *p = l->p;
	int err;

	switch (op->type) {
	case OP_BEGIN:
		free(l->obj_path);
		l->obj_path = op->path;
		op->path = NULL;
		return snap_obj_begin(p->s, op->digest, &op->m, &l->obj, why);
	case OP_WRITE:
		if (!l->obj) {
			*why = "contents without an entry";
			return -EINVAL;
		}
		return snap_obj_write(l->obj, op->off, op->data, op->len, why);
	default:
		if (!l->obj) {
			*why = "no entry to finish";
			return -EINVAL;
		}
		err = snap_obj_commit(l->obj, why);
		l->obj = NULL;
		return err ? err : maybe_flush(l, why);
	}
}

static void *worker(void *arg)
{
	struct pipe_lane *l = arg;
	struct snap_pipe *p = l->p;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct pipe_op *op;
		const char *why = NULL;
		size_t len;
		int err = 0;

		while (!l->head && !p->stop)
			pthread_cond_wait(&l->work, &p->lock);
		if (p->stop)
			break;
		op = l->head;
		l->head = op->next;
		if (!l->head)
			l->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		/* After an error, what is queued is only dropped. */
		if (!snap_pipe_error(p, NULL) && (err = run_op(l, op, &why)) < 0)
			set_error(l, err, why);
		len = op->len;
		op_free(op);
		pthread_mutex_lock(&p->lock);
		l->queued_bytes -= len;
		p->queued_bytes -= len;
		p->written += len;
		p->busy--;
		pthread_cond_broadcast(&p->room);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int snap_pipe_start(struct snap_stage *s, const struct snap_pipe_limits *lim,
		    struct snap_pipe **out)
{
	struct snap_pipe *p = calloc(1, sizeof(*p));
	size_t want = lim->workers < 1			     ? 1
		      : lim->workers > SNAP_PIPE_MAX_WORKERS ? SNAP_PIPE_MAX_WORKERS
							     : lim->workers;
	int err = 0;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->lim = *lim;
	p->flushed_ms = clock_mono_ms();
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->room, NULL);
	while (p->nlanes < want && !err) {
		struct pipe_lane *l = &p->lane[p->nlanes];

		l->p = p;
		pthread_cond_init(&l->work, NULL);
		err = -pthread_create(&l->thread, NULL, worker, l);
		if (err)
			pthread_cond_destroy(&l->work);
		else
			p->nlanes++;
	}
	if (err) {
		snap_pipe_stop(p);
		return err;
	}
	*out = p;
	return 0;
}

/* The lane with the fewest bytes queued, for a new object.  Lock held. */
static size_t quietest_lane(const struct snap_pipe *p)
{
	size_t i, best = 0;

	for (i = 1; i < p->nlanes; i++)
		if (p->lane[i].queued_bytes < p->lane[best].queued_bytes)
			best = i;
	return best;
}

/*
 * Queue op (taken over whatever happens) on the current object's lane, or
 * for a BEGIN on the quietest one, waiting while the queues hold max_bytes.
 */
static int enqueue(struct snap_pipe *p, struct pipe_op *op)
{
	struct pipe_lane *l;
	int err;

	pthread_mutex_lock(&p->lock);
	/* One write larger than the bound still goes through once the queue is empty. */
	while (!p->err && op->len && p->queued_bytes &&
	       p->queued_bytes + op->len > p->lim.max_bytes)
		pthread_cond_wait(&p->room, &p->lock);
	err = p->err;
	if (!err) {
		if (op->type == OP_BEGIN)
			p->cur = quietest_lane(p);
		l = &p->lane[p->cur];
		if (l->tail)
			l->tail->next = op;
		else
			l->head = op;
		l->tail = op;
		l->queued_bytes += op->len;
		p->queued_bytes += op->len;
		p->busy++;
		op = NULL;
		pthread_cond_signal(&l->work);
	}
	pthread_mutex_unlock(&p->lock);
	op_free(op);
	return err;
}

int snap_pipe_begin(struct snap_pipe *p, const uint8_t digest[SNAP_DIGEST_LEN],
		    const struct snap_meta *m, const char *path)
{
	struct pipe_op *op = calloc(1, sizeof(*op));
	int err;

	if (!op)
		return -ENOMEM;
	op->type = OP_BEGIN;
	memcpy(op->digest, digest, SNAP_DIGEST_LEN);
	err = snap_meta_copy(&op->m, m);
	if (!err && !(op->path = strdup(path)))
		err = -ENOMEM;
	if (err) {
		op_free(op);
		return err;
	}
	return enqueue(p, op);
}

int snap_pipe_write(struct snap_pipe *p, uint64_t off, const void *buf, size_t len)
{
	struct pipe_op *op = malloc(sizeof(*op) + len);

	if (!op)
		return -ENOMEM;
	memset(op, 0, sizeof(*op));
	op->type = OP_WRITE;
	op->off = off;
	op->len = len;
	memcpy(op->data, buf, len);
	return enqueue(p, op);
}

int snap_pipe_commit(struct snap_pipe *p)
{
	struct pipe_op *op = calloc(1, sizeof(*op));

	if (!op)
		return -ENOMEM;
	op->type = OP_COMMIT;
	return enqueue(p, op);
}

int snap_pipe_drain(struct snap_pipe *p, const char **why)
{
	pthread_mutex_lock(&p->lock);
	while (p->busy && !p->err)
		pthread_cond_wait(&p->room, &p->lock);
	pthread_mutex_unlock(&p->lock);
	return snap_pipe_error(p, why);
}

int snap_pipe_error(struct snap_pipe *p, const char **why)
{
	int err;

	pthread_mutex_lock(&p->lock);
	err = p->err;
	pthread_mutex_unlock(&p->lock);
	if (why)
		*why = err ? p->why : NULL;
	return err;
}

void snap_pipe_stop(struct snap_pipe *p)
{
	struct pipe_op *op;
	size_t i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	for (i = 0; i < p->nlanes; i++)
		pthread_cond_signal(&p->lane[i].work);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->nlanes; i++) {
		struct pipe_lane *l = &p->lane[i];

		pthread_join(l->thread, NULL);
		while ((op = l->head)) {
			l->head = op->next;
			op_free(op);
		}
		snap_obj_abort(l->obj);
		free(l->obj_path);
		pthread_cond_destroy(&l->work);
	}
	pthread_cond_destroy(&p->room);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
