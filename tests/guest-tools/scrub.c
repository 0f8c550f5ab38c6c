/*
 * scrub: writes N MiB of fresh memory, 2 MiB (one transparent hugepage) at a time, and frees
 * it. Built with `gcc -static -O2`; run in the test host (L2) before each measured VM start
 * (benches/src/plan.rs).
 *
 *   scrub MIB
 *
 * Why: L1 is QEMU-TCG, which keeps the code it translated for L2's CPUs, keyed by L2's
 * physical pages. Memory a finished VM held its guest's code in goes back to L2's free lists
 * with those translations, and the first writes to such a page, by whoever gets it next, take
 * TCG's slow path (each one invalidates translated code): up to 0.9 s per 2 MiB page. L2
 * hands recently freed hugepages out first, so the next VM paid for the last one's code, in
 * its kernel load or its first touches of RAM (tests/testhost/README.md, "Timing"). Taking
 * that memory here first pays that cost outside the measurement. Prints one line: MiB,
 * seconds, the slowest 2 MiB. Exit status 1 if the memory cannot be had.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define HUGE (2UL << 20)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	char *end;
	unsigned long mib = argc == 2 ? strtoul(argv[1], &end, 10) : 0;
	if (argc != 2 || *end || mib == 0 || mib % 2) {
		fprintf(stderr, "usage: scrub MIB (an even number)\n");
		return 1;
	}
	size_t len = mib << 20;
	char *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED) {
		perror("scrub: mmap");
		return 1;
	}
	char *p = (char *)(((unsigned long)raw + HUGE - 1) & ~(HUGE - 1));
	madvise(p, len, MADV_HUGEPAGE);
	double start = now(), slowest = 0;
	for (size_t off = 0; off < len; off += HUGE) {
		double t = now();
		/* The first write faults in the whole hugepage (the kernel zeroes all 2 MiB of
		 * it); one per 4 KiB page covers a fallback to small pages too. */
		for (size_t page = 0; page < HUGE; page += 4096)
			*(volatile char *)(p + off + page) = 1;
		t = now() - t;
		if (t > slowest)
			slowest = t;
	}
	printf("SCRUB mib=%lu seconds=%.3f slowest=%.3f\n", mib, now() - start, slowest);
	munmap(raw, len + HUGE);
	return 0;
}
