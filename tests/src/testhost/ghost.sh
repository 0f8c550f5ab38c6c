# /lib/ghost.sh: helpers for test-host (L2) scenarios, sourced before every scenario script.
# (Source: tests/src/testhost/ghost.sh in the ghost-vmm repository.)

# The L2 file layout (see tests/src/testhost/host.rs).
GHOST_VMM=/usr/bin/ghost-vmm                      # present when the harness was given one
QEMU=/usr/bin/qemu-system-x86_64                  # the reference VMM
GHOST_KERNEL=/ghost/kernel/cloud/bzImage          # L3 kernel (bzImage)
GHOST_VMLINUX=/ghost/kernel/cloud/vmlinux         # the same kernel as an ELF vmlinux
GHOST_GENERIC_KERNEL=/ghost/kernel/generic/bzImage  # present when asked for
GHOST_INITRD_DIR=/ghost/initrd                    # L3 initramfs images, <name>.cpio.gz
GHOST_DEBIAN_KERNEL=/ghost/debian/vmlinuz         # the Debian image's kernel, when asked for
GHOST_DEBIAN_INITRD=/ghost/debian/initrd.img      # and its initramfs
GHOST_OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd   # Debian's OVMF, when asked for (with_ovmf)
GHOST_OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd   # its variable store template: copy it per VM
GHOST_VM_DIR=/run/ghost/vm                        # vm_* state: <name>.in .log .rc .pid
export GHOST_VMM QEMU GHOST_KERNEL GHOST_VMLINUX GHOST_GENERIC_KERNEL GHOST_INITRD_DIR GHOST_VM_DIR
export GHOST_DEBIAN_KERNEL GHOST_DEBIAN_INITRD GHOST_OVMF_CODE GHOST_OVMF_VARS

# Hundredths of a second since boot, in $_ghost_now, without forking (/proc/uptime has two
# decimals).
_ghost_now() {
    read -r _ghost_up _ghost_rest </proc/uptime
    _ghost_now=${_ghost_up%.*}${_ghost_up#*.}
    _ghost_now=${_ghost_now#0}
}

# ghost_mark TEXT: print a "@@GHOST-MARK TEXT" line (the host timestamps every line).
ghost_mark() {
    printf '@@GHOST-MARK %s\n' "$*"
}

# Timeouts below are whole seconds.

# wait_for_line FILE STRING [TIMEOUT_S=30]: wait until a line of FILE contains STRING (a fixed
# string, not a pattern). Returns 0 when found, 1 (with a message on stderr) after TIMEOUT_S.
wait_for_line() {
    _ghost_now
    _wfl_end=$((_ghost_now + ${3:-30} * 100))
    while :; do
        if [ -f "$1" ] && grep -qF -- "$2" "$1"; then
            return 0
        fi
        _ghost_now
        if [ "$_ghost_now" -ge "$_wfl_end" ]; then
            echo "wait_for_line: '$2' did not appear in $1 within ${3:-30}s" >&2
            return 1
        fi
        sleep 0.05
    done
}

# vm_start NAME COMMAND [ARGS...]: run COMMAND (a VMM) in the background, with
#   stdin   the FIFO $GHOST_VM_DIR/NAME.in (write lines to it with vm_send; never EOF),
#   output  (stdout and stderr) echoed to the console, so the host sees and timestamps it,
#           and appended to $GHOST_VM_DIR/NAME.log (for vm_wait_for),
#   status  written to $GHOST_VM_DIR/NAME.rc when it exits (see vm_wait).
vm_start() {
    _vm=$GHOST_VM_DIR/$1
    shift
    mkdir -p "$GHOST_VM_DIR"
    rm -f "$_vm.in" "$_vm.rc" "$_vm.pid"
    : >"$_vm.log"
    mkfifo "$_vm.in"
    (
        # Read-write: the open does not block, and the VMM never sees EOF on its stdin.
        "$@" 0<>"$_vm.in" 2>&1 &
        echo $! >"$_vm.pid"
        wait $!
        echo $? >"$_vm.rc"
    ) | tee -a "$_vm.log" &
    echo $! >"$_vm.tee"
}

# vm_send NAME TEXT: write the line TEXT to the VM's stdin (its serial console).
vm_send() {
    # Read-write open: does not block even if the VM has gone.
    printf '%s\n' "$2" 1<>"$GHOST_VM_DIR/$1.in"
}

# vm_wait_for NAME STRING [TIMEOUT_S=30]: wait until the VM's output contains STRING.
# Fails at once if the VM exits first.
vm_wait_for() {
    _vm=$GHOST_VM_DIR/$1
    _ghost_now
    _vwf_end=$((_ghost_now + ${3:-30} * 100))
    while :; do
        if grep -qF -- "$2" "$_vm.log"; then
            return 0
        fi
        if [ -f "$_vm.rc" ]; then
            grep -qF -- "$2" "$_vm.log" && return 0
            echo "vm_wait_for: $1 exited (status $(cat "$_vm.rc")) before printing '$2'" >&2
            return 1
        fi
        _ghost_now
        if [ "$_ghost_now" -ge "$_vwf_end" ]; then
            echo "vm_wait_for: '$2' did not appear in $1's output within ${3:-30}s" >&2
            return 1
        fi
        sleep 0.05
    done
}

# vm_wait NAME [TIMEOUT_S=30]: wait for the VM to exit; returns its exit status, or kills it and
# returns 124 after TIMEOUT_S. Its output has reached the console when this returns.
vm_wait() {
    _vm=$GHOST_VM_DIR/$1
    _ghost_now
    _vw_end=$((_ghost_now + ${2:-30} * 100))
    while [ ! -f "$_vm.rc" ]; do
        _ghost_now
        if [ "$_ghost_now" -ge "$_vw_end" ]; then
            echo "vm_wait: $1 still running after ${2:-30}s; killing it" >&2
            vm_kill "$1"
            return 124
        fi
        sleep 0.05
    done
    wait "$(cat "$_vm.tee")" 2>/dev/null
    return "$(cat "$_vm.rc")"
}

# vm_kill NAME: stop the VM hard: two SIGTERMs (ghost-vmm presses the guest's power button on
# the first and stops hard on the second, logging where its vCPUs were at GHOST_LOG=info; QEMU
# exits on the first), then SIGKILL after 3 s; wait for its output to drain.
vm_kill() {
    _vm=$GHOST_VM_DIR/$1
    if [ -f "$_vm.pid" ]; then
        _pid=$(cat "$_vm.pid")
        kill -TERM "$_pid" 2>/dev/null
        sleep 0.2
        kill -TERM "$_pid" 2>/dev/null
        _n=0
        while [ ! -f "$_vm.rc" ] && [ $_n -lt 30 ]; do
            sleep 0.1
            _n=$((_n + 1))
        done
        kill -KILL "$_pid" 2>/dev/null
    fi
    [ -f "$_vm.tee" ] && wait "$(cat "$_vm.tee")" 2>/dev/null
    return 0
}

# hugepages_free: the number of free huge pages (default size).
hugepages_free() {
    sed -n 's/^HugePages_Free: *//p' /proc/meminfo
}

# pci_driver BDF: the driver PCI function BDF is bound to, or "none".
pci_driver() {
    _d=$(readlink "/sys/bus/pci/devices/$1/driver")
    echo "${_d##*/}" | sed 's/^$/none/'
}
