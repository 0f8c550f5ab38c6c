/*
 * ptyrun: runs a program on a new pseudo-terminal and relays between it and ptyrun's own
 * stdin/stdout. Built with `gcc -static -O2`; used in the test host (L2) for a VMM that takes
 * console input only from an interactive terminal (Cloud Hypervisor's `--serial tty`), where
 * the harness's VM stdin is a FIFO (benches/src/vmms.rs).
 *
 *   ptyrun PROGRAM [ARG...]
 *
 * ptyrun becomes the program (exec), so its pid, signals, memory and exit status are the
 * program's; a child relays until the terminal closes. The terminal is raw (no echo, no line
 * discipline), so bytes pass through as written. Exit status 1 on ptyrun's own errors before
 * the exec, 127 if the exec fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

/* Writes all of buf[0..len) to fd; 0 on success. */
static int write_all(int fd, const char *buf, ssize_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, (size_t)len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= n;
    }
    return 0;
}

/* Relays until the terminal's last user has closed it: ptyrun's input to the terminal, the
 * terminal's output to ptyrun's output. */
static void relay(int master)
{
    struct pollfd fds[2] = {{.fd = master, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    char buf[4096];
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("ptyrun: poll");
            return;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(master, buf, sizeof(buf));
            if (n <= 0)
                return; /* EIO: the program has exited, the terminal is closed */
            if (write_all(1, buf, n) != 0)
                return;
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0)
                fds[1].fd = -1; /* our input ended: keep relaying the output */
            else if (write_all(master, buf, n) != 0)
                return;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: ptyrun PROGRAM [ARG...]\n");
        return 1;
    }
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        perror("ptyrun: posix_openpt");
        return 1;
    }
    char *name = ptsname(master);
    int slave = name ? open(name, O_RDWR | O_NOCTTY) : -1;
    if (slave < 0) {
        perror("ptyrun: open the terminal");
        return 1;
    }
    struct termios t;
    if (tcgetattr(slave, &t) != 0) {
        perror("ptyrun: tcgetattr");
        return 1;
    }
    cfmakeraw(&t);
    if (tcsetattr(slave, TCSANOW, &t) != 0) {
        perror("ptyrun: tcsetattr");
        return 1;
    }
    /* The relay is the child; this process becomes the program, so that its pid, signals,
     * memory and exit status are the program's own. */
    pid_t child = fork();
    if (child < 0) {
        perror("ptyrun: fork");
        return 1;
    }
    if (child == 0) {
        close(slave);
        relay(master);
        _exit(0);
    }
    close(master);
    if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0) {
        perror("ptyrun: dup2");
        return 1;
    }
    if (slave > 2)
        close(slave);
    execvp(argv[1], argv + 1);
    perror("ptyrun: exec");
    return 127;
}
