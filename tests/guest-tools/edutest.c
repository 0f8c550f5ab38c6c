/*
 * edutest: drives QEMU's `edu` device (docs/specs/edu.rst) from guest userspace, through
 * sysfs, as a passed-through device (tests/tests/vfio.rs). Built with `gcc -static -O2`.
 *
 *   edutest DEVDIR regs          ID, liveness and factorial registers through BAR0
 *   edutest DEVDIR latency N     mean ns of N BAR0 register reads -> BAR_READ_NS=
 *   edutest DEVDIR msi VECTOR    program the MSI capability (address 0xfee00000, data
 *                                VECTOR) through the config file, turn MSI and bus mastering
 *                                on, and have the device raise its interrupt; the guest
 *                                kernel then logs "No irq handler for vector" for VECTOR
 *   edutest DEVDIR intx UIODEV   MSI off, then three times: unmask INTx (the command register's
 *                                INTx-disable bit, which uio_pci_generic sets when it takes
 *                                the interrupt), raise the device's interrupt, wait on UIODEV
 *                                (e.g. /dev/uio0) for the guest kernel to take it, lower it
 *                                -> INTX_TAKEN=<n>
 *   edutest DEVDIR dma           2 KiB of a page to the device's buffer and back into another
 *                                page by DMA (guest physical addresses from /proc/self/pagemap)
 *
 * DEVDIR is /sys/bus/pci/devices/<addr>, already enabled (`echo 1 > enable`). Results are
 * "<KEY>=<value>" lines; errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

#define BAR0_SIZE (1 << 20)
#define DMA_BUFFER 0x40000
/* Less than the whole 4 KiB buffer: QEMU 7.2's edu aborts on a transfer that ends exactly at
 * the buffer's end (an off-by-one in its range check). */
#define DMA_LEN 2048

static volatile uint32_t *bar;

static uint32_t r32(unsigned off) { return bar[off / 4]; }
static void w32(unsigned off, uint32_t v) { bar[off / 4] = v; }
static void w64(unsigned off, uint64_t v) { *(volatile uint64_t *)((char *)bar + off) = v; }
static uint64_t r64(unsigned off) { return *(volatile uint64_t *)((char *)bar + off); }

static int cfg_fd;

static void cfg_read(unsigned off, void *buf, size_t len) {
    if (pread(cfg_fd, buf, len, off) != (ssize_t)len) die("config read");
}

static void cfg_write(unsigned off, const void *buf, size_t len) {
    if (pwrite(cfg_fd, buf, len, off) != (ssize_t)len) die("config write");
}

static unsigned find_cap(uint8_t id) {
    uint8_t at;
    cfg_read(0x34, &at, 1);
    for (int n = 0; at >= 0x40 && n < 48; n++) {
        uint8_t head[2];
        cfg_read(at & ~3u, head, 2);
        if (head[0] == id) return at & ~3u;
        at = head[1];
    }
    return 0;
}

static int wait_clear(unsigned off, uint32_t mask, double seconds) {
    double end = now() + seconds;
    while (r32(off) & mask)
        if (now() > end) return -1;
    return 0;
}

static uint64_t phys(void *page) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) die("pagemap");
    uint64_t entry;
    off_t at = (off_t)((uintptr_t)page / 4096) * 8;
    if (pread(fd, &entry, 8, at) != 8) die("pagemap read");
    close(fd);
    if (!(entry & (1ULL << 63)) || (entry & ((1ULL << 55) - 1)) == 0) {
        fprintf(stderr, "page not present or PFN hidden\n");
        exit(1);
    }
    return (entry & ((1ULL << 55) - 1)) * 4096;
}

static void bus_master_on(void) {
    uint16_t cmd;
    cfg_read(4, &cmd, 2);
    cmd |= 0x6; /* memory + bus master */
    cfg_write(4, &cmd, 2);
}

static int dma(unsigned src_is_ram, uint64_t src, uint64_t dst) {
    w64(0x80, src);
    w64(0x88, dst);
    w64(0x90, DMA_LEN);
    w64(0x98, 1 | (src_is_ram ? 0 : 2));
    double end = now() + 10;
    while (r64(0x98) & 1)
        if (now() > end) return -1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: edutest DEVDIR regs|latency N|msi VECTOR|dma\n");
        return 1;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/resource0", argv[1]);
    int fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) die(path);
    bar = mmap(NULL, BAR0_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (bar == MAP_FAILED) die("mmap resource0");
    snprintf(path, sizeof path, "%s/config", argv[1]);
    cfg_fd = open(path, O_RDWR);
    if (cfg_fd < 0) die(path);

    if (!strcmp(argv[2], "regs")) {
        printf("EDU_ID=0x%08x\n", r32(0x00));
        w32(0x04, 0x12345678);
        printf("EDU_LIVENESS=0x%08x\n", r32(0x04));
        w32(0x08, 10);
        if (wait_clear(0x20, 1, 5)) {
            fprintf(stderr, "factorial never finished\n");
            return 1;
        }
        printf("EDU_FACTORIAL=0x%x\n", r32(0x08));
    } else if (!strcmp(argv[2], "latency") && argc > 3) {
        long n = atol(argv[3]);
        volatile uint32_t sink = 0;
        double t0 = now();
        for (long i = 0; i < n; i++) sink += r32(0x00);
        double t = now() - t0;
        (void)sink;
        printf("BAR_READ_NS=%.1f\n", t * 1e9 / n);
    } else if (!strcmp(argv[2], "msi") && argc > 3) {
        unsigned vector = (unsigned)strtoul(argv[3], NULL, 0);
        unsigned cap = find_cap(0x05);
        if (!cap) {
            fprintf(stderr, "no MSI capability\n");
            return 1;
        }
        uint16_t control;
        cfg_read(cap + 2, &control, 2);
        uint32_t addr = 0xfee00000, hi = 0;
        uint16_t data = (uint16_t)vector;
        cfg_write(cap + 4, &addr, 4);
        if (control & 0x80) {
            cfg_write(cap + 8, &hi, 4);
            cfg_write(cap + 12, &data, 2);
        } else {
            cfg_write(cap + 8, &data, 2);
        }
        control = (control & ~0x70) | 1;
        cfg_write(cap + 2, &control, 2);
        bus_master_on();
        cfg_read(cap + 2, &control, 2);
        printf("MSI_ENABLED=%d\n", control & 1);
        w32(0x60, 1);
        usleep(200000);
        printf("EDU_IRQ_STATUS=0x%x\n", r32(0x24));
        w32(0x64, 1);
    } else if (!strcmp(argv[2], "intx") && argc > 3) {
        unsigned cap = find_cap(0x05);
        if (cap) {
            uint16_t control;
            cfg_read(cap + 2, &control, 2);
            control &= ~1;
            cfg_write(cap + 2, &control, 2);
        }
        int u = open(argv[3], O_RDWR);
        if (u < 0) die(argv[3]);
        int taken = 0;
        for (int i = 0; i < 3; i++) {
            /* uio_pci_generic masks INTx with the command register's INTx-disable bit when
             * it takes the interrupt; userspace unmasks through config space. */
            uint32_t count;
            uint16_t cmd;
            cfg_read(4, &cmd, 2);
            cmd &= ~0x400;
            cfg_write(4, &cmd, 2);
            w32(0x60, 0x10u << i);
            struct pollfd p = {.fd = u, .events = POLLIN};
            if (poll(&p, 1, 5000) == 1 && read(u, &count, 4) == 4) taken++;
            w32(0x64, 0x10u << i);
        }
        printf("INTX_TAKEN=%d\n", taken);
    } else if (!strcmp(argv[2], "dma")) {
        uint8_t *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (pages == MAP_FAILED || mlock(pages, 8192)) die("pages");
        for (int i = 0; i < 4096; i++) {
            pages[i] = (uint8_t)(i * 7 + 3);
            pages[4096 + i] = 0;
        }
        uint64_t a = phys(pages), b = phys(pages + 4096);
        bus_master_on();
        if (dma(1, a, DMA_BUFFER) || dma(0, DMA_BUFFER, b)) {
            fprintf(stderr, "DMA never finished\n");
            return 1;
        }
        printf("DMA_SAME=%s\n", memcmp(pages, pages + 4096, DMA_LEN) ? "no" : "yes");
    } else {
        fprintf(stderr, "unknown command %s\n", argv[2]);
        return 1;
    }
    return 0;
}
