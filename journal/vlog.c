/*
 * vlog.c - append-only value log for large write payloads (see vlog.h).
 *
 * Appends go through one pwritev() per record at an offset tracked here
 * rather than O_APPEND, so that after a failed or short write (ENOSPC) the
 * next record overwrites the partial one instead of landing after it.
 * Reads use pread on a few cached descriptors: the shipper and the apply
 * engine read payloads back often, and an open() per read would cost more
 * than the read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lib/bytes.h"
#include "lib/crc32c.h"
#include "lib/dirscan.h"
#include "lib/log.h"
#include "journal/vlog.h"

/* Read-only descriptors kept open for segments other than the current one. */
#define VLOG_READ_FDS 16

struct vlog_rfd {
	uint32_t segment; /* 0: slot unused (segments start at 1) */
	int fd;
};

struct vlog {
	char *dir;
	int dirfd;
	uint64_t segment_max;
	uint32_t segment;  /* segment appends go to; its file exists once fd >= 0 */
	int fd;		   /* -1 until the first append after open or roll-over */
	uint64_t off;	   /* where the next record starts in segment */
	uint64_t appended; /* records appended since open */
	uint64_t synced;   /* of which fdatasync made durable */
	int failed;	   /* sticky negative errno after a failed fdatasync */
	struct vlog_rfd rfd[VLOG_READ_FDS];
	unsigned rfd_next; /* slot reused next, round robin */
};

/* Segment number of a file name "%08u.vlog", or 0 if it is not one. */
static uint32_t segment_of_name(const char *name)
{
	char *end;
	unsigned long n;

	if (strlen(name) != 13 || strcmp(name + 8, ".vlog") != 0)
		return 0;
	errno = 0;
	n = strtoul(name, &end, 10);
	if (errno || end != name + 8 || n > UINT32_MAX)
		return 0;
	return (uint32_t)n;
}

static int note_segment(int dirfd, const char *name, void *arg)
{
	uint32_t *last = arg, n = segment_of_name(name);

	(void)dirfd;
	if (n > *last)
		*last = n;
	return 0;
}

/* Highest segment number present in the directory, 0 if none. */
static int find_last_segment(struct vlog *v, uint32_t *last)
{
	*last = 0;
	return dir_scan(v->dirfd, note_segment, last);
}

int vlog_open(const char *dir, uint64_t segment_max, struct vlog **out, const char **why)
{
	struct vlog *v;
	uint32_t last;
	int r;

	*out = NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->dirfd = -1;
	v->fd = -1;
	v->segment_max = segment_max;
	v->dir = strdup(dir);
	if (!v->dir) {
		r = -ENOMEM;
		goto out;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_err("value log %s: mkdir: %s", dir, strerror(errno));
		if (why)
			*why = "cannot make the value log directory";
		goto out;
	}
	v->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (v->dirfd < 0) {
		r = -errno;
		log_err("value log %s: open: %s", dir, strerror(errno));
		if (why)
			*why = "cannot open the value log directory";
		goto out;
	}
	r = find_last_segment(v, &last);
	if (r < 0) {
		log_err("value log %s: list: %s", dir, strerror(-r));
		if (why)
			*why = "cannot list the value log directory";
		goto out;
	}
	if (last == UINT32_MAX) {
		r = -EOVERFLOW;
		if (why)
			*why = "value log segment numbers exhausted";
		goto out;
	}
	v->segment = last + 1;
	*out = v;
	v = NULL;
out:
	vlog_close(v);
	return r;
}

void vlog_close(struct vlog *v)
{
	if (!v)
		return;
	for (int i = 0; i < VLOG_READ_FDS; i++)
		if (v->rfd[i].segment)
			close(v->rfd[i].fd);
	if (v->fd >= 0)
		close(v->fd);
	if (v->dirfd >= 0)
		close(v->dirfd);
	free(v->dir);
	free(v);
}

/*
 * Create the file of v->segment.  The directory is synced so that the new
 * name survives a crash once records in it have been synced.
 */
static int segment_create(struct vlog *v)
{
	char name[32];
	int fd;

	snprintf(name, sizeof(name), "%08u.vlog", v->segment);
	fd = openat(v->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int r = -errno;

		log_err("value log %s/%s: create: %s", v->dir, name, strerror(errno));
		return r;
	}
	if (fsync(v->dirfd) < 0) {
		int r = -errno;

		log_err("value log %s: fsync directory: %s", v->dir, strerror(errno));
		close(fd);
		unlinkat(v->dirfd, name, 0);
		return r;
	}
	v->fd = fd;
	v->off = 0;
	return 0;
}

void vlog_set_segment_max(struct vlog *v, uint64_t bytes)
{
	if (bytes < VLOG_SEGMENT_MIN)
		bytes = VLOG_SEGMENT_MIN;
	if (bytes > VLOG_SEGMENT_MAX)
		bytes = VLOG_SEGMENT_MAX;
	v->segment_max = bytes;
}

/* Close the current segment (synced) so the next append starts a new one. */
static int segment_roll(struct vlog *v)
{
	int r;

	r = vlog_sync(v);
	if (r < 0)
		return r;
	if (v->segment == UINT32_MAX)
		return -EOVERFLOW;
	close(v->fd);
	v->fd = -1;
	v->segment++;
	return 0;
}

/* Write all of iov at off, continuing after short writes. */
static int write_full(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
	while (iovcnt > 0) {
		ssize_t n = pwritev(fd, iov, iovcnt, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		off += (uint64_t)n;
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

int vlog_append(struct vlog *v, uint64_t origin, uint64_t seq, const void *data, uint32_t len,
		struct vref *ref)
{
	uint8_t hdr[VLOG_HEADER_LEN];
	struct iovec iov[2];
	uint64_t rec = VLOG_HEADER_LEN + (uint64_t)len;
	uint32_t crc;
	int r;

	if (v->failed)
		return v->failed;
	if (len > VLOG_MAX_PAYLOAD)
		return -EINVAL;
	if (v->fd >= 0 && v->off > 0 && v->off + rec > v->segment_max) {
		r = segment_roll(v);
		if (r < 0)
			return r;
	}
	if (v->fd < 0) {
		r = segment_create(v);
		if (r < 0)
			return r;
	}
	crc = crc32c(0, data, len);
	put_le32(hdr, len);
	put_le32(hdr + 4, crc);
	put_le64(hdr + 8, origin);
	put_le64(hdr + 16, seq);
	iov[0] = (struct iovec){.iov_base = hdr, .iov_len = sizeof(hdr)};
	iov[1] = (struct iovec){.iov_base = (void *)data, .iov_len = len};
	r = write_full(v->fd, iov, 2, v->off);
	if (r < 0) {
		log_err("value log %s/%08u.vlog: write at %llu: %s", v->dir, v->segment,
			(unsigned long long)v->off, strerror(-r));
		/* Drop the partial record; harmless if this fails, the next append overwrites it.
		 */
		if (ftruncate(v->fd, (off_t)v->off) < 0)
			log_warn("value log %s/%08u.vlog: truncate after failed write: %s", v->dir,
				 v->segment, strerror(errno));
		return r;
	}
	*ref = (struct vref){
	    .segment = v->segment,
	    .offset = v->off + VLOG_HEADER_LEN,
	    .len = len,
	    .crc = crc,
	};
	v->off += rec;
	v->appended++;
	return 0;
}

int vlog_sync(struct vlog *v)
{
	if (v->failed)
		return v->failed;
	if (v->synced == v->appended)
		return 0;
	if (fdatasync(v->fd) < 0) {
		v->failed = -errno;
		log_err("value log %s/%08u.vlog: fdatasync: %s", v->dir, v->segment,
			strerror(errno));
		return v->failed;
	}
	v->synced = v->appended;
	return 0;
}

/*
 * The descriptor is a duplicate, so that a roll-over meanwhile, which syncs
 * and closes the segment's own, leaves it usable; the count synced moves
 * only at the end, so that a sync begun meanwhile does not take records
 * still on their way to the disk for durable.
 */
int vlog_sync_begin(struct vlog *v, struct vlog_sync *s)
{
	s->fd = -1;
	s->upto = v->appended;
	s->result = 0;
	if (v->failed)
		return v->failed;
	if (v->synced == v->appended)
		return 0;
	s->fd = fcntl(v->fd, F_DUPFD_CLOEXEC, 0);
	if (s->fd < 0) {
		int r = -errno;

		log_err("value log %s/%08u.vlog: dup: %s", v->dir, v->segment, strerror(errno));
		return r;
	}
	return 1;
}

int vlog_sync_fd(const struct vlog *v, struct vlog_sync *s)
{
	if (s->fd < 0)
		return 0;
	if (fdatasync(s->fd) < 0) {
		s->result = -errno;
		log_err("value log %s: fdatasync: %s", v->dir, strerror(errno));
	}
	return s->result;
}

void vlog_sync_end(struct vlog *v, struct vlog_sync *s)
{
	if (s->fd < 0)
		return;
	close(s->fd);
	s->fd = -1;
	if (s->result < 0 && !v->failed)
		v->failed = s->result;
	else if (s->result == 0 && s->upto > v->synced)
		v->synced = s->upto;
}

void vlog_sync_cancel(struct vlog_sync *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/* A descriptor to read segment from: the append one or a cached read-only one. */
static int segment_read_fd(struct vlog *v, uint32_t segment, int *fd, const char **why)
{
	char name[32];
	struct vlog_rfd *slot;
	int nfd;

	if (segment == 0) {
		*why = "value log reference has no segment";
		return -EBADMSG;
	}
	if (segment == v->segment && v->fd >= 0) {
		*fd = v->fd;
		return 0;
	}
	for (int i = 0; i < VLOG_READ_FDS; i++) {
		if (v->rfd[i].segment == segment) {
			*fd = v->rfd[i].fd;
			return 0;
		}
	}
	snprintf(name, sizeof(name), "%08u.vlog", segment);
	nfd = openat(v->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (nfd < 0) {
		int r = -errno;

		if (errno == ENOENT) {
			*why = "value log segment missing";
			return -EBADMSG;
		}
		log_err("value log %s/%s: open: %s", v->dir, name, strerror(errno));
		*why = "cannot open value log segment";
		return r;
	}
	slot = &v->rfd[v->rfd_next];
	v->rfd_next = (v->rfd_next + 1) % VLOG_READ_FDS;
	if (slot->segment)
		close(slot->fd);
	slot->segment = segment;
	slot->fd = nfd;
	*fd = nfd;
	return 0;
}

int vlog_read_fd(int fd, const struct vref *ref, uint64_t origin, uint64_t seq, void *buf,
		 const char **why)
{
	uint8_t hdr[VLOG_HEADER_LEN];
	struct iovec iov[2];
	const char *dummy;
	uint64_t want = VLOG_HEADER_LEN + (uint64_t)ref->len;
	uint64_t got = 0;

	if (!why)
		why = &dummy;
	if (ref->len > VLOG_MAX_PAYLOAD || ref->offset < VLOG_HEADER_LEN) {
		*why = "value log reference out of range";
		return -EBADMSG;
	}
	while (got < want) {
		ssize_t n;
		int cnt = 0;

		if (got < VLOG_HEADER_LEN) {
			iov[cnt++] = (struct iovec){hdr + got, VLOG_HEADER_LEN - got};
			iov[cnt++] = (struct iovec){buf, ref->len};
		} else {
			iov[cnt++] =
			    (struct iovec){(uint8_t *)buf + (got - VLOG_HEADER_LEN), want - got};
		}
		n = preadv(fd, iov, cnt, (off_t)(ref->offset - VLOG_HEADER_LEN + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			*why = "value log read failed";
			return -errno;
		}
		if (n == 0) {
			*why = "value log record truncated";
			return -EBADMSG;
		}
		got += (uint64_t)n;
	}
	if (get_le32(hdr) != ref->len || get_le32(hdr + 4) != ref->crc ||
	    get_le64(hdr + 8) != origin || get_le64(hdr + 16) != seq) {
		*why = "value log record does not match its reference";
		return -EBADMSG;
	}
	if (crc32c(0, buf, ref->len) != ref->crc) {
		*why = "value log payload bad crc";
		return -EBADMSG;
	}
	return 0;
}

int vlog_read(struct vlog *v, const struct vref *ref, uint64_t origin, uint64_t seq, void *buf,
	      const char **why)
{
	const char *dummy;
	int fd = -1, r;

	if (!why)
		why = &dummy;
	r = segment_read_fd(v, ref->segment, &fd, why);
	if (r < 0)
		return r;
	r = vlog_read_fd(fd, ref, origin, seq, buf, why);
	if (r < 0 && r != -EBADMSG)
		log_err("value log %s/%08u.vlog: read at %llu: %s", v->dir, ref->segment,
			(unsigned long long)ref->offset, strerror(-r));
	return r;
}

int vlog_dup_segment(struct vlog *v, uint32_t segment, int *fd, const char **why)
{
	int rfd = -1, ret;

	ret = segment_read_fd(v, segment, &rfd, why);
	if (ret < 0)
		return ret;
	*fd = fcntl(rfd, F_DUPFD_CLOEXEC, 0);
	if (*fd < 0) {
		*why = "cannot duplicate a value log descriptor";
		return -errno;
	}
	return 0;
}

uint32_t vlog_segment(const struct vlog *v)
{
	return v->segment;
}

/*
 * The cached read descriptor goes too: it would keep the deleted file's
 * space allocated for as long as it stayed in the cache.
 */
int vlog_remove(struct vlog *v, uint32_t segment)
{
	char name[32];
	int r;

	if (segment == v->segment)
		return -EBUSY;
	for (int i = 0; i < VLOG_READ_FDS; i++) {
		if (v->rfd[i].segment == segment) {
			close(v->rfd[i].fd);
			v->rfd[i].segment = 0;
		}
	}
	snprintf(name, sizeof(name), "%08u.vlog", segment);
	if (unlinkat(v->dirfd, name, 0) < 0 && errno != ENOENT) {
		r = -errno;
		log_err("value log %s/%s: unlink: %s", v->dir, name, strerror(errno));
		return r;
	}
	return 0;
}

int vlog_sync_dir(struct vlog *v)
{
	int r;

	if (fsync(v->dirfd) < 0) {
		r = -errno;
		log_err("value log %s: fsync directory: %s", v->dir, strerror(errno));
		return r;
	}
	return 0;
}

/* One entry of vlog_disk_usage(): segments count, anything else is not ours. */
static int add_segment_size(int dirfd, const char *name, void *arg)
{
	uint64_t *bytes = arg;
	struct stat st;

	if (!segment_of_name(name))
		return 0;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	*bytes += (uint64_t)st.st_size;
	return 0;
}

int vlog_disk_usage(struct vlog *v, uint64_t *bytes)
{
	*bytes = 0;
	return dir_scan(v->dirfd, add_segment_size, bytes);
}
