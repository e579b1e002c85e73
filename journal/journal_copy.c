/*
 * journal_copy.c - a private, read-only copy of a live journal (see
 * journal_copy.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal/journal_copy.h"

#define SNAPSHOT_TRIES 5

static int copy_file(int sdir, int ddir, const char *name)
{
	char buf[65536];
	int in = -1, out = -1, r = 0;
	ssize_t n;

	in = openat(sdir, name, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	out = openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		r = -errno;
		goto out;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		if (write(out, buf, (size_t)n) != n) {
			r = -EIO;
			goto out;
		}
	}
	if (n < 0)
		r = -errno;
out:
	if (out >= 0)
		close(out);
	close(in);
	return r;
}

/* LevelDB's table files never change once written: a hard link is a copy. */
static int is_table(const char *name)
{
	size_t n = strlen(name);

	return (n > 4 && !strcmp(name + n - 4, ".ldb")) || (n > 4 && !strcmp(name + n - 4, ".sst"));
}

static void remove_tree_flat(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d) {
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
}

/* One attempt at copying every LevelDB file of src into dst. */
static int copy_once(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *de;
	int ddir = -1, r = 0;

	if (!d)
		return -errno;
	ddir = open(dst, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ddir < 0) {
		r = -errno;
		goto out;
	}
	/* CURRENT first: any manifest it names is then at least as new. */
	r = copy_file(dirfd(d), ddir, "CURRENT");
	while (r == 0 && (de = readdir(d))) {
		const char *n = de->d_name;

		if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "LOCK") ||
		    !strcmp(n, "CURRENT") || !strcmp(n, "vlog") || !strncmp(n, "LOG", 3))
			continue;
		if (is_table(n) && linkat(dirfd(d), n, ddir, n, 0) == 0)
			continue;
		r = copy_file(dirfd(d), ddir, n);
	}
out:
	if (ddir >= 0)
		close(ddir);
	closedir(d);
	return r;
}

int journal_copy_open(const char *dir, int flags, struct journal_copy *s, const char **why)
{
	char vlog[PATH_MAX], link[PATH_MAX + 8], *abs = NULL;
	const char *tmp = getenv("TMPDIR");
	int r = -EIO;

	memset(s, 0, sizeof(*s));
	if (flags & JOURNAL_COPY_IF_BUSY) {
		r = journal_open(dir, 0, 0, &s->journal, why);
		if (r != -EBUSY)
			return r;
	}
	abs = realpath(dir, NULL);
	if (!abs) {
		*why = "journal directory not found";
		return -errno;
	}
	snprintf(vlog, sizeof(vlog), "%s/vlog", abs);
	for (int i = 0; i < SNAPSHOT_TRIES; i++) {
		snprintf(s->dir, sizeof(s->dir), "%s/ledgerfs-journal-XXXXXX",
			 tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(s->dir)) {
			r = -errno;
			*why = "cannot make a temporary directory for the journal copy";
			goto out;
		}
		r = copy_once(abs, s->dir);
		if (r == 0)
			break;
		remove_tree_flat(s->dir);
		s->dir[0] = '\0';
		if (r != -ENOENT) {
			*why = "cannot copy the journal";
			goto out;
		}
	}
	if (r < 0) {
		*why = "journal kept changing while it was copied";
		goto out;
	}
	snprintf(link, sizeof(link), "%s/vlog", s->dir);
	if (symlink(vlog, link) < 0) {
		r = -errno;
		*why = "cannot link the value log";
		goto out;
	}
	r = journal_open(s->dir, 0, 0, &s->journal, why);
out:
	if (r < 0)
		journal_copy_close(s);
	free(abs);
	return r;
}

void journal_copy_close(struct journal_copy *s)
{
	char link[PATH_MAX + 8];

	journal_close(s->journal);
	s->journal = NULL;
	if (!s->dir[0])
		return;
	snprintf(link, sizeof(link), "%s/vlog", s->dir);
	unlink(link);
	remove_tree_flat(s->dir);
	s->dir[0] = '\0';
}
