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
 * The queue is a FIFO of operations guarded by lock; the worker takes one
 * at a time and runs it without the lock.  Durability is unchanged: an
 * object is renamed to its final name only by snap_stage_flush(), after a
 * syncfs, and the reader flushes once more after snap_pipe_drain().
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ledgerfs/snap_pipe.h"

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

struct snap_pipe {
	struct snap_stage *s;
	struct snap_pipe_limits lim;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work; /* signalled when an op is queued or stop is set */
	pthread_cond_t room; /* signalled when an op is done */
	/* Guarded by lock. */
	struct pipe_op *head, *tail;
	size_t queued_bytes; /* WRITE bytes in the queue */
	size_t busy;	     /* ops queued or running */
	int stop;
	int err;
	char why[512];
	/* The worker's own. */
	struct snap_obj *obj;
	char *obj_path;
	uint64_t flushed_bytes, written;
	int64_t flushed_ms;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void op_free(struct pipe_op *op)
{
	if (!op)
		return;
	snap_meta_free(&op->m);
	free(op->path);
	free(op);
}

/* Worker: record the first error, with the entry it concerns. */
static void set_error(struct snap_pipe *p, int err, const char *what)
{
	pthread_mutex_lock(&p->lock);
	if (!p->err) {
		p->err = err;
		snprintf(p->why, sizeof(p->why), "cannot stage %.200s: %s: %s",
			 p->obj_path ? p->obj_path : "(staging area)", what ? what : "",
			 strerror(-err));
	}
	pthread_mutex_unlock(&p->lock);
}

/* Worker: flush when a limit is reached. */
static int maybe_flush(struct snap_pipe *p, const char **why)
{
	int64_t now = now_ms();
	int err;

	if (snap_stage_pending(p->s) < p->lim.objs &&
	    p->written - p->flushed_bytes < p->lim.bytes && now - p->flushed_ms < p->lim.ms)
		return 0;
	p->flushed_bytes = p->written;
	p->flushed_ms = now;
	err = snap_stage_flush(p->s);
	if (err)
		*why = "cannot make staged entries durable";
	return err;
}

/* Worker: one operation; 0 or a negative errno with *why. */
static int run_op(struct snap_pipe *p, struct pipe_op *op, const char **why)
{
	int err;

	switch (op->type) {
	case OP_BEGIN:
		free(p->obj_path);
		p->obj_path = op->path;
		op->path = NULL;
		return snap_obj_begin(p->s, op->digest, &op->m, &p->obj, why);
	case OP_WRITE:
		if (!p->obj) {
			*why = "contents without an entry";
			return -EINVAL;
		}
		err = snap_obj_write(p->obj, op->off, op->data, op->len, why);
		if (!err)
			p->written += op->len;
		return err;
	default:
		if (!p->obj) {
			*why = "no entry to finish";
			return -EINVAL;
		}
		err = snap_obj_commit(p->obj, why);
		p->obj = NULL;
		return err ? err : maybe_flush(p, why);
	}
}

static void *worker(void *arg)
{
	struct snap_pipe *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct pipe_op *op;
		const char *why = NULL;
		int err = 0;

		while (!p->head && !p->stop)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->stop)
			break;
		op = p->head;
		p->head = op->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		/* After an error, what is queued is only dropped. */
		if (!snap_pipe_error(p, NULL) && (err = run_op(p, op, &why)) < 0)
			set_error(p, err, why);
		pthread_mutex_lock(&p->lock);
		if (op->type == OP_WRITE)
			p->queued_bytes -= op->len;
		p->busy--;
		pthread_cond_broadcast(&p->room);
		op_free(op);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int snap_pipe_start(struct snap_stage *s, const struct snap_pipe_limits *lim,
		    struct snap_pipe **out)
{
	struct snap_pipe *p = calloc(1, sizeof(*p));
	int err;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->lim = *lim;
	p->flushed_ms = now_ms();
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->room, NULL);
	err = -pthread_create(&p->thread, NULL, worker, p);
	if (err) {
		pthread_cond_destroy(&p->room);
		pthread_cond_destroy(&p->work);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return err;
	}
	*out = p;
	return 0;
}

/* Queue op (taken over whatever happens), waiting while the queue holds max_bytes. */
static int enqueue(struct snap_pipe *p, struct pipe_op *op)
{
	int err;

	pthread_mutex_lock(&p->lock);
	/* One write larger than the bound still goes through once the queue is empty. */
	while (!p->err && op->len && p->queued_bytes &&
	       p->queued_bytes + op->len > p->lim.max_bytes)
		pthread_cond_wait(&p->room, &p->lock);
	err = p->err;
	if (!err) {
		if (p->tail)
			p->tail->next = op;
		else
			p->head = op;
		p->tail = op;
		p->queued_bytes += op->len;
		p->busy++;
		op = NULL;
		pthread_cond_signal(&p->work);
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

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	while ((op = p->head)) {
		p->head = op->next;
		op_free(op);
	}
	snap_obj_abort(p->obj);
	free(p->obj_path);
	pthread_cond_destroy(&p->room);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
