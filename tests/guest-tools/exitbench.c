/*
 * exitbench: guest-side exit micro-benchmarks and the boot-timer write, for the benchmark
 * harness (benches/). Built with `gcc -static -O2` and put into the L3 guest's initramfs.
 *
 *   exitbench mark PORT VALUE      write the byte VALUE to I/O port PORT once, from user
 *                                  space with ioperm (the boot timer: ghost-vmm logs the
 *                                  time since its start)
 *   exitbench cfg DEVDIR N         N reads of the dword at offset 0 of DEVDIR/config: the
 *                                  kernel's 0xCF8 write and 0xCFC read, two PIO exits each
 *                                  -> PIO_EXIT_NS=<mean ns per exit>
 *   exitbench mmio DEVDIR N        N 32-bit reads of the virtio-pci common configuration
 *                                  (found through DEVDIR/config's vendor capability, mapped
 *                                  through DEVDIR/resource<bar>) -> MMIO_EXIT_NS=<mean ns>
 *
 * DEVDIR is /sys/bus/pci/devices/<addr>; for mmio, a virtio-pci function with no driver bound
 * (the kernel refuses to map a BAR a driver holds). Every access is an exit to the VMM, which
 * emulates both config space and the virtio common configuration in userspace. PIO is timed
 * through config space because a stock kernel offers no other port I/O to user space
 * without the I/O permission bitmap (no /dev/port in Debian's cloud kernel).
 * Results are "<KEY>=<value>" lines; errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"


/* The virtio-pci common configuration: (BAR, offset) from the vendor capability with
 * cfg_type 1, walking the capability list of the config file. */
static int common_cfg(const char *dev, unsigned *bar, uint32_t *offset) {
    char path[512];
    snprintf(path, sizeof path, "%s/config", dev);
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path);
    uint8_t cfg[256];
    if (pread(fd, cfg, sizeof cfg, 0) != (ssize_t)sizeof cfg) die("config (as root?)");
    close(fd);
    unsigned at = cfg[0x34] & 0xfc;
    for (int hops = 0; at && hops < 48; hops++) {
        if (at > 256 - 16) break;
        if (cfg[at] == 0x09 && cfg[at + 3] == 1) {
            *bar = cfg[at + 4];
            memcpy(offset, &cfg[at + 8], 4);
            return 0;
        }
        at = cfg[at + 1] & 0xfc;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "mark")) {
        unsigned port = (unsigned)strtoul(argv[2], NULL, 0);
        if (port > 0xffff || ioperm(port, 1, 1) != 0) die("ioperm");
        outb((unsigned char)strtoul(argv[3], NULL, 0), port);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "cfg")) {
        long n = atol(argv[3]);
        if (n <= 0) return 2;
        char path[512];
        snprintf(path, sizeof path, "%s/config", argv[2]);
        int fd = open(path, O_RDONLY);
        if (fd < 0) die(path);
        uint32_t id;
        double t0 = now();
        for (long i = 0; i < n; i++)
            if (pread(fd, &id, 4, 0) != 4) die("pread config");
        printf("PIO_EXIT_NS=%.0f\n", (now() - t0) * 1e9 / (2.0 * n));
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "mmio")) {
        long n = atol(argv[3]);
        unsigned bar;
        uint32_t offset;
        if (n <= 0) return 2;
        if (common_cfg(argv[2], &bar, &offset) != 0 || bar > 5) {
            fprintf(stderr, "%s: no virtio common configuration capability\n", argv[2]);
            return 1;
        }
        char path[512];
        snprintf(path, sizeof path, "%s/resource%u", argv[2], bar);
        int fd = open(path, O_RDWR | O_SYNC);
        if (fd < 0) die(path);
        long page = sysconf(_SC_PAGESIZE);
        off_t base = offset & ~(uint32_t)(page - 1);
        char *map = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, base);
        if (map == MAP_FAILED) die("mmap BAR");
        volatile uint32_t *reg = (volatile uint32_t *)(map + (offset - base));
        uint32_t sink = 0;
        double t0 = now();
        for (long i = 0; i < n; i++) sink += *reg; /* device_feature_select */
        double dt = now() - t0;
        (void)sink;
        printf("MMIO_EXIT_NS=%.0f\n", dt * 1e9 / n);
        return 0;
    }
    fprintf(stderr, "usage: see the comment at the top of exitbench.c\n");
    return 2;
}
