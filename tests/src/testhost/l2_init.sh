#!/bin/sh
# /init of the test host (L2). Source: tests/src/testhost/l2_init.sh in the ghost-vmm repository.
# Loads the modules of /etc/ghost/modules, runs each scenario of /ghost/scenarios.list between
# framing markers (see tests/src/testhost/console.rs), then powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/hugepages /run /tmp /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t hugetlbfs hugetlbfs /dev/hugepages
hostname ghost-l2
ip link set lo up 2>/dev/null

loaded=
skipped=
while read -r name path; do
    if [ "$path" = - ]; then
        echo "ghost-l2: module $name is not in the kernel package, skipped"
        skipped="$skipped,$name"
    elif insmod "$path"; then
        loaded="$loaded,$name"
    else
        echo "ghost-l2: insmod $name failed, skipped"
        skipped="$skipped,$name"
    fi
done </etc/ghost/modules
# The scenarios (this shell's children) run on CPUs 1 and up: CPU 0 takes the device
# interrupts (irqaffinity=0), the serial console's above all, and L1's emulated CPU corrupts
# L2 now and then when such an interrupt meets a CPU running an L3 guest (host.rs,
# L2_BASE_CMDLINE).
cpus=$(nproc)
workload=0
if [ "$cpus" -gt 1 ]; then
    if taskset -p "$(printf '%x' $(((1 << cpus) - 2)))" $$ >/dev/null; then
        workload=1-$((cpus - 1))
    else
        echo "ghost-l2: taskset failed; the scenarios share CPU 0"
    fi
fi
printf '\n@@GHOST-L2-UP kernel=%s cpus=%s workload=%s modules=%s skipped=%s\n' \
    "$(uname -r)" "$cpus" "$workload" "${loaded#,}" "${skipped#,}"

# run_scenario INDEX TIMEOUT_S NAME
run_scenario() {
    dir=/run/ghost/scenario/$1
    mkdir -p "$dir"
    printf '\n@@GHOST-BEGIN %s\n' "$3"
    # Its own session and process group (setsid does not fork: a background job is no group
    # leader), so that a timeout or the end of the scenario kills everything it started.
    (cd "$dir" && exec setsid sh "/ghost/scenarios/$1.sh") </dev/null &
    pid=$!
    (exec setsid sh -c 'sleep "$1"; : >"$2"; kill -KILL -"$3"' watchdog "$2" "$dir/timed-out" "$pid") \
        </dev/null >/dev/null 2>&1 &
    watchdog=$!
    wait "$pid"
    rc=$?
    kill -KILL -"$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    kill -KILL -"$pid" 2>/dev/null
    if [ -e "$dir/timed-out" ]; then
        printf '\n@@GHOST-END %s rc=%s timeout\n' "$3" "$rc"
    else
        printf '\n@@GHOST-END %s rc=%s\n' "$3" "$rc"
    fi
}

# The interactive demo: one script with L2's console as its terminal (no framing, no timeout).
if [ -f /ghost/interactive.sh ]; then
    (. /lib/ghost.sh; . /ghost/interactive.sh) </dev/ttyS0 >/dev/ttyS0 2>&1
fi

while read -r index timeout name; do
    run_scenario "$index" "$timeout" "$name"
done </ghost/scenarios.list

printf '\n@@GHOST-DONE\n'
sync
poweroff -f
# PID 1 must never exit.
while :; do sleep 60; done
