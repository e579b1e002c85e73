/*
 * progress.c - progress lines with rate and time left (progress.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/progress.h"

#define PROGRESS_DRAW_MS 200
#define PROGRESS_CELLS	 30

const char *progress_human(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

void progress_format(char *out, size_t len, uint64_t done, uint64_t total, double secs, int bytes)
{
	char cells[PROGRESS_CELLS + 1], a[32], b[32], r[32], eta[32] = ", ETA ?";
	double rate = secs > 0 ? (double)done / secs : 0;
	unsigned fill, pct, i;

	if (done > total)
		total = done;
	fill = total ? (unsigned)(done * PROGRESS_CELLS / total) : PROGRESS_CELLS;
	pct = total ? (unsigned)(done * 100 / total) : 100;
	for (i = 0; i < PROGRESS_CELLS; i++)
		cells[i] = i < fill ? '#' : '.';
	cells[PROGRESS_CELLS] = '\0';
	if (rate > 0) {
		uint64_t s = (uint64_t)((double)(total - done) / rate);

		snprintf(eta, sizeof(eta), ", ETA %" PRIu64 ":%02" PRIu64, s / 60, s % 60);
	}
	if (bytes)
		snprintf(out, len, "[%s] %3u%% %s of %s, %s/s%s", cells, pct,
			 progress_human(done, a, sizeof(a)), progress_human(total, b, sizeof(b)),
			 progress_human((uint64_t)rate, r, sizeof(r)), eta);
	else
		snprintf(out, len, "[%s] %3u%% %" PRIu64 " of %" PRIu64 ", %.0f/s%s", cells, pct,
			 done, total, rate, eta);
}

void progress_init(struct progress *p, const char *what, uint64_t total, int bytes)
{
	pthread_mutex_init(&p->lock, NULL);
	p->what = what;
	p->tty = isatty(STDERR_FILENO);
	p->bytes = bytes;
	p->started = clock_mono_ms();
	p->last_draw = 0;
	p->done = 0;
	p->total = total;
	p->drawn = 0;
}

double progress_seconds(const struct progress *p)
{
	return (double)(clock_mono_ms() - p->started) / 1000.0;
}

void progress_add_total(struct progress *p, uint64_t more)
{
	pthread_mutex_lock(&p->lock);
	p->total += more;
	pthread_mutex_unlock(&p->lock);
}

void progress_advance(struct progress *p, uint64_t n)
{
	char line[256];
	int64_t now;

	pthread_mutex_lock(&p->lock);
	p->done += n;
	now = clock_mono_ms();
	if (p->tty && now - p->last_draw >= PROGRESS_DRAW_MS) {
		p->last_draw = now;
		progress_format(line, sizeof(line), p->done, p->total,
				(double)(now - p->started) / 1000.0, p->bytes);
		fprintf(stderr, "\r\033[K%s %s", p->what, line);
		fflush(stderr);
		p->drawn = 1;
	}
	pthread_mutex_unlock(&p->lock);
}

void progress_end(struct progress *p)
{
	if (p->drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	pthread_mutex_destroy(&p->lock);
}
