/*
 * The system-wide benchmark's workload (tests/vm/bench-system.sh): memory work with no
 * IOMMU in it, of the kind every host does all the time, each page of which updates the
 * memory cgroup's statistics (lruvec_stat_mod_folio, the page-table hook of kernels whose
 * iommu-pages helpers are inline):
 *   - page-cache churn on tmpfs: PAGES shmem pages written, then truncated away;
 *   - an anonymous page-fault loop: PAGES pages mapped, touched, unmapped.
 * Prints one JSON line with the pages processed per second.
 *
 * Built static for the guest by the harness (xtask/src/vm/guest.rs).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { PAGES = 64, PAGE = 4096 };

static char buf[PAGES * PAGE];

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: memchurn ITERATIONS FILE_ON_TMPFS\n");
		return 2;
	}
	long iterations = strtol(argv[1], NULL, 10);
	int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		perror(argv[2]);
		return 1;
	}
	memset(buf, 1, sizeof(buf));
	struct timespec start, end;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < iterations; i++) {
		if (pwrite(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf)) {
			perror("pwrite");
			return 1;
		}
		if (ftruncate(fd, 0)) {
			perror("ftruncate");
			return 1;
		}
		char *p = mmap(NULL, sizeof(buf), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		for (int j = 0; j < PAGES; j++)
			p[j * PAGE] = 1;
		munmap(p, sizeof(buf));
	}
	clock_gettime(CLOCK_MONOTONIC, &end);
	long long ns = (end.tv_sec - start.tv_sec) * 1000000000LL +
		       (end.tv_nsec - start.tv_nsec);
	long long pages = (long long)iterations * PAGES * 2;
	printf("{\"iterations\": %ld, \"pages\": %lld, \"elapsed_ns\": %lld, "
	       "\"pages_per_sec\": %.1f}\n",
	       iterations, pages, ns, pages * 1e9 / (double)ns);
	close(fd);
	unlink(argv[2]);
	return 0;
}
