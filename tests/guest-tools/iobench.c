/*
 * iobench: the guest-side workloads of the virtio figures (tests/tests/virtio.rs).
 * Built by the test with `gcc -static -O2` and put into the L3 guest's initramfs.
 *
 *   iobench seqread  DEV MIB          sequential 1 MiB O_DIRECT reads   -> NAME_MBS=<MB/s>
 *   iobench seqwrite DEV MIB          sequential 1 MiB O_DIRECT writes (then fdatasync)
 *   iobench randread DEV SECONDS      4 KiB O_DIRECT reads at random offsets, QD1 -> IOPS=
 *   iobench tcpsend  IP PORT MIB      connect, send MIB MiB, close   -> MB/s
 *   iobench nvmertt  CTRL N           N NVMe admin commands (Get Features, Number of Queues:
 *                                     no data) on CTRL (/dev/nvme0), each completed by the
 *                                     controller's MSI-X interrupt -> NVME_ADMIN_RTT_US=
 *
 * Every result is one line "<KEY>=<value>"; errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <linux/nvme_ioctl.h>

#include "tool.h"

#define MIB (1024L * 1024L)

static void *aligned(size_t len) {
    void *p;
    if (posix_memalign(&p, 4096, len) != 0) die("posix_memalign");
    memset(p, 0xa5, len);
    return p;
}

static int seq(const char *dev, long mib, int write) {
    int fd = open(dev, (write ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) die(dev);
    char *buf = aligned(MIB);
    double t0 = now();
    for (long i = 0; i < mib; i++) {
        ssize_t n = write ? pwrite(fd, buf, MIB, i * MIB) : pread(fd, buf, MIB, i * MIB);
        if (n != MIB) die(write ? "pwrite" : "pread");
    }
    if (write && fdatasync(fd) != 0) die("fdatasync");
    double dt = now() - t0;
    printf("%s_MBS=%.1f\n", write ? "SEQ_WRITE" : "SEQ_READ", mib * MIB / dt / 1e6);
    close(fd);
    return 0;
}

static int randread(const char *dev, double seconds) {
    int fd = open(dev, O_RDONLY | O_DIRECT);
    if (fd < 0) die(dev);
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) die("BLKGETSIZE64");
    uint64_t blocks = size / 4096;
    if (blocks == 0) { fprintf(stderr, "device too small\n"); return 1; }
    char *buf = aligned(4096);
    uint64_t x = 88172645463325252ULL, ios = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (pread(fd, buf, 4096, (off_t)((x % blocks) * 4096)) != 4096) die("pread");
            ios++;
        }
        t = now();
    } while (t - t0 < seconds);
    printf("RAND_READ_IOPS=%.0f\n", ios / (t - t0));
    close(fd);
    return 0;
}

static int tcpsend(const char *ip, int port, long mib) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) { fprintf(stderr, "bad ip\n"); return 1; }
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    char *buf = aligned(MIB);
    double t0 = now();
    for (long i = 0; i < mib; i++) {
        size_t off = 0;
        while (off < MIB) {
            ssize_t n = send(s, buf + off, MIB - off, 0);
            if (n <= 0) die("send");
            off += n;
        }
    }
    shutdown(s, SHUT_WR);
    /* Wait for the receiver to close: then every byte has been taken. */
    char c;
    while (recv(s, &c, 1, 0) > 0) {}
    double dt = now() - t0;
    printf("TCP_SEND_MBS=%.1f\n", mib * MIB / dt / 1e6);
    close(s);
    return 0;
}

static int nvmertt(const char *ctrl, long n) {
    if (n <= 0) return 2;
    int fd = open(ctrl, O_RDONLY);
    if (fd < 0) die(ctrl);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        struct nvme_admin_cmd cmd = { .opcode = 0x0a /* Get Features */, .cdw10 = 0x07 };
        if (ioctl(fd, NVME_IOCTL_ADMIN_CMD, &cmd) != 0) die("NVME_IOCTL_ADMIN_CMD");
    }
    printf("NVME_ADMIN_RTT_US=%.1f\n", (now() - t0) * 1e6 / n);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "seqread")) return seq(argv[2], atol(argv[3]), 0);
    if (argc == 4 && !strcmp(argv[1], "seqwrite")) return seq(argv[2], atol(argv[3]), 1);
    if (argc == 4 && !strcmp(argv[1], "randread")) return randread(argv[2], atof(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "nvmertt")) return nvmertt(argv[2], atol(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "tcpsend")) return tcpsend(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: see the comment at the top of iobench.c\n");
    return 2;
}
