// SPDX-License-Identifier: GPL-2.0
/* Loads ortprof.bpf.c (through its libbpf skeleton), and writes what it records as the
 * bpftrace program would (`bpftrace -f json`: one JSON object a line), so one reader
 * (signals/futex/counts.py, signals/sched/events.py) reads either producer:
 *   printf lines "S ...", "H ...", "P ..." (signals/sched/bpf.py) from the ring buffer,
 *   drained every DRAIN_MS (the program wakes no one per record);
 *   the futex maps (@t, @before, the window) every second and at exit;
 *   at exit the episodes still open (@out, @wake_ns, @waker, @wcpu), @start, lost events.
 *
 *   ortprof-bpf [--sched] -o OUTPUT RECORDER_PID
 *
 * --sched attaches the scheduler programs too (else only futex counts and the marks).
 * Stops on SIGINT or SIGTERM: detaches, drains the ring buffer, prints the maps and
 * END_LINE, then exits 0. Errors: one "ERROR: ..." line on stderr, exit 1. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "ortprof.bpf.h"
#include "ortprof.skel.h"

#define ATTACHED_LINE "ortprof-futex-attached"    /* as signals/futex/bpf.py */
#define END_LINE "ortprof-futex-end"
#define DRAIN_MS 100
#define PRINT_EVERY (1000 / DRAIN_MS)

static volatile sig_atomic_t stopping;
static FILE *out;

static void on_signal(int signo) { (void)signo; stopping = 1; }

static int complain(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	fputs("ERROR: ", stderr);
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
	va_end(args);
	return 1;
}

static int libbpf_log(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, format, args);
}

/* A comm as a JSON string's characters (it may hold quotes, backslashes, control bytes). */
static void put_comm(const char *comm)
{
	for (int i = 0; i < 16 && comm[i]; i++) {
		unsigned char c = (unsigned char)comm[i];
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
}

static int on_record(void *context, void *data, size_t size)
{
	const struct ortprof_record *r = data;
	(void)context;
	if (size < sizeof(*r))
		return 0;
	switch (r->type) {
	case RECORD_EPISODE:
		fprintf(out, "{\"type\": \"printf\", \"data\": \"S %u %llu %u %llu %u %d %llu %d ", r->tid, r->out_ns,
			r->kind, r->wake_ns, r->other, r->wake_cpu, r->in_ns, r->cpu);
		break;
	case RECORD_HOLDER:
		fprintf(out, "{\"type\": \"printf\", \"data\": \"H %d %u %u %llu %llu ", r->cpu, r->other, r->tid,
			r->out_ns, r->in_ns);
		break;
	case RECORD_PERIOD:
		fprintf(out, "{\"type\": \"printf\", \"data\": \"P %llu\\n\"}\n", r->in_ns);
		return 0;
	default:
		return 0;
	}
	put_comm(r->comm);
	fputs("\\n\"}\n", out);
	return 0;
}

static void print_line(const char *text) { fprintf(out, "{\"type\": \"printf\", \"data\": \"%s\\n\"}\n", text); }

static void print_value(const char *name, unsigned long long value)
{
	fprintf(out, "{\"type\": \"map\", \"data\": {\"%s\": %llu}}\n", name, value);
}

/* @t (bpftrace's stats(): count, average, total) and @before (sum), keyed "tid,wait". */
static void print_futex_maps(struct ortprof_bpf *skel)
{
	struct ortprof_futex_key key, next;
	int fd = bpf_map__fd(skel->maps.futex_calls);
	const char *separator = "";
	fputs("{\"type\": \"stats\", \"data\": {\"@t\": {", out);
	for (int found = bpf_map_get_next_key(fd, NULL, &next); found == 0;
	     key = next, found = bpf_map_get_next_key(fd, &key, &next)) {
		struct ortprof_futex_stats stats;
		if (bpf_map_lookup_elem(fd, &next, &stats) != 0)
			continue;
		fprintf(out, "%s\"%u,%u\": {\"count\": %llu, \"average\": %llu, \"total\": %llu}", separator, next.tid,
			next.wait, stats.count, stats.count ? stats.total / stats.count : 0, stats.total);
		separator = ", ";
	}
	fputs("}}}\n{\"type\": \"map\", \"data\": {\"@before\": {", out);
	fd = bpf_map__fd(skel->maps.futex_before);
	separator = "";
	for (int found = bpf_map_get_next_key(fd, NULL, &next); found == 0;
	     key = next, found = bpf_map_get_next_key(fd, &key, &next)) {
		unsigned long long sum;
		if (bpf_map_lookup_elem(fd, &next, &sum) != 0)
			continue;
		fprintf(out, "%s\"%u,%u\": %llu", separator, next.tid, next.wait, sum);
		separator = ", ";
	}
	fputs("}}}\n", out);
	print_value("@window_open_ns", skel->bss->window_open_ns);
	print_value("@window_close_ns", skel->bss->window_close_ns);
}

/* The futex calls and off-CPU episodes still open at exit, as bpftrace prints its maps. */
static void print_open_maps(struct ortprof_bpf *skel)
{
	unsigned int key, next;
	int fd = bpf_map__fd(skel->maps.futex_start);
	const char *separator = "";
	fputs("{\"type\": \"map\", \"data\": {\"@start\": {", out);
	for (int found = bpf_map_get_next_key(fd, NULL, &next); found == 0;
	     key = next, found = bpf_map_get_next_key(fd, &key, &next)) {
		unsigned long long start;
		if (bpf_map_lookup_elem(fd, &next, &start) == 0) {
			fprintf(out, "%s\"%u\": %llu", separator, next, start);
			separator = ", ";
		}
	}
	fputs("}}}\n", out);
	if (!bpf_program__autoload(skel->progs.on_switch))
		return;
	static const char *names[] = {"@out", "@wake_ns", "@waker", "@wcpu"};
	fd = bpf_map__fd(skel->maps.episodes);
	for (int field = 0; field < 4; field++) {
		separator = "";
		fprintf(out, "{\"type\": \"map\", \"data\": {\"%s\": {", names[field]);
		for (int found = bpf_map_get_next_key(fd, NULL, &next); found == 0;
		     key = next, found = bpf_map_get_next_key(fd, &key, &next)) {
			struct ortprof_episode episode;
			if (bpf_map_lookup_elem(fd, &next, &episode) != 0)
				continue;
			unsigned long long value = field == 0 ? episode.out : field == 1 ? episode.wake_ns :
						   field == 2 ? episode.waker : episode.wcpu;
			if (value == 0)
				continue;     /* bpftrace's maps hold only what was set */
			fprintf(out, "%s\"%u\": %llu", separator, next, value);
			separator = ", ";
		}
		fputs("}}}\n", out);
	}
	print_value("@tg", skel->bss->throttled_group);
}

static void sleep_ms(long ms)
{
	struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&pause, NULL);     /* a signal cuts it short: the loop then stops */
}

int main(int argc, char **argv)
{
	const char *output = NULL;
	int sched = 0;
	int opt;
	while ((opt = getopt(argc, argv, "o:s")) != -1) {
		if (opt == 'o')
			output = optarg;
		else if (opt == 's')
			sched = 1;
		else
			return complain("usage: %s [-s] -o OUTPUT RECORDER_PID", argv[0]);
	}
	if (!output || optind != argc - 1)
		return complain("usage: %s [-s] -o OUTPUT RECORDER_PID", argv[0]);
	char *end;
	long recorder = strtol(argv[optind], &end, 10);
	if (*end || recorder <= 0)
		return complain("RECORDER_PID must be a process id, not %s", argv[optind]);

	/* ortprof's own tool: the scheduler report names it as the recording's (a profiler), by comm */
	prctl(PR_SET_NAME, "ortprof", 0, 0, 0);
	libbpf_set_print(libbpf_log);
	struct sigaction action = {.sa_handler = on_signal};
	sigaction(SIGINT, &action, NULL);
	sigaction(SIGTERM, &action, NULL);

	struct ortprof_bpf *skel = ortprof_bpf__open();
	if (!skel)
		return complain("cannot open the BPF program: %s", strerror(errno));
	skel->rodata->recorder_tgid = (unsigned int)recorder;
	skel->rodata->nr_futex = SYS_futex;
	skel->rodata->nr_getpriority = SYS_getpriority;
	if (!sched) {
		struct bpf_program *programs[] = {skel->progs.on_switch, skel->progs.on_waking, skel->progs.on_wakeup,
						  skel->progs.on_migrate, skel->progs.on_fork, skel->progs.on_hrtimer};
		for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++)
			bpf_program__set_autoload(programs[i], false);
	}
	int error = ortprof_bpf__load(skel);
	if (error) {
		ortprof_bpf__destroy(skel);
		return complain("the kernel refused the BPF program: %s", strerror(-error));
	}
	error = ortprof_bpf__attach(skel);
	if (error) {
		ortprof_bpf__destroy(skel);
		return complain("cannot attach the BPF program: %s", strerror(-error));
	}
	struct ring_buffer *ring = ring_buffer__new(bpf_map__fd(skel->maps.records), on_record, NULL, NULL);
	out = fopen(output, "w");
	if (!ring || !out) {
		ortprof_bpf__destroy(skel);
		return complain("%s: %s", out ? "ring buffer" : output, strerror(errno));
	}
	static char buffer[1 << 20];
	setvbuf(out, buffer, _IOFBF, sizeof(buffer));
	print_line(ATTACHED_LINE);
	fflush(out);

	for (unsigned long tick = 1; !stopping; tick++) {
		sleep_ms(DRAIN_MS);
		ring_buffer__consume(ring);
		if (tick % PRINT_EVERY == 0) {
			print_futex_maps(skel);
			fflush(out);
		}
	}
	ortprof_bpf__detach(skel);        /* nothing runs any more: what is left is whole */
	ring_buffer__consume(ring);
	print_futex_maps(skel);
	print_open_maps(skel);
	print_value("@target", skel->bss->target);
	if (skel->bss->lost_records)
		fprintf(out, "{\"type\": \"lost_events\", \"data\": {\"events\": %llu}}\n", skel->bss->lost_records);
	print_line(END_LINE);
	int failed = fclose(out) != 0;
	ring_buffer__free(ring);
	ortprof_bpf__destroy(skel);
	return failed ? complain("%s: %s", output, strerror(errno)) : 0;
}
