#!/bin/bash
# Build the Debian 12 guest image of the real-distribution tests (issues 13 and 14): a minbase
# bookworm with systemd, dbus and udev, root on ext4, as a bare file system for a direct kernel
# boot from its own kernel and initramfs, and as an installed system on a GPT disk with an EFI
# system partition (systemd-boot) for a firmware boot (OVMF).
#
#   tests/testhost/debian-image.sh [-q]
#
# Output, cached by content (the hash covers this script, which holds the package list and every
# setting; not the date):
#   $CACHE/debian-bookworm-<hash>/
#     root.img        raw ext4 image (label ghost-root, sparse): the root file system, /dev/vda
#     efi.img         raw GPT disk (sparse): partition 1 the ESP (FAT32, systemd-boot as
#                     \EFI\BOOT\BOOTX64.EFI and \EFI\systemd\systemd-bootx64.efi, the kernel and
#                     initramfs, loader/entries/debian.conf), partition 2 a copy of root.img
#     efi-root-partuuid  the PARTUUID of efi.img's root partition (root=PARTUUID=... in the entry)
#     efi-cmdline     the kernel command line of the loader entry
#     vmlinuz         the image's kernel (a copy of its /boot/vmlinuz-<version>)
#     initrd.img      the image's initramfs (a copy of its /boot/initrd.img-<version>)
#     kernel-version  <version> (uname -r in the guest)
#     build-info      key=value: build time, sizes, package versions
#     .complete       written last; a directory without it is rebuilt
# and prints the directory's path on stdout (everything else goes to stderr). A complete
# directory is reused (one line, none with -q; ~0 s). CACHE is $GHOST_TESTHOST_CACHE, or
# <workspace>/.cache/testhost.
#
# In the image:
#   - /etc/fstab: LABEL=ghost-root on / (ext4, pass 1): the bare image (/dev/vda) and efi.img's
#     partition (/dev/vda2 on virtio-blk, /dev/nvme0n1p2 on NVMe) alike; hostname ghost-guest,
#     root's password locked; efibootmgr (UEFI variables from the guest);
#   - serial-getty@ttyS0 logs root in automatically; a login shell on ttyS0 prints
#     "GHOST-SHELL-READY" (after that, commands typed on the serial console run as root);
#   - ghost-ready.service (wanted by and ordered after multi-user.target) prints
#     "GHOST-READY uptime=<s>" on ttyS0 once multi-user.target is reached;
#   - nothing that waits for a network or a time server; apt's timers masked; systemd-logind
#     kept (HandlePowerKey=poweroff, the default: the ACPI power button powers off).
#
# Needs root (mmdebstrap's root mode installs the packages into a directory; no loop devices
# and no mounts of the image: mkfs.ext4 -d builds it from the directory; sgdisk, mkfs.vfat -C
# and mtools build the GPT disk from files, dd places the partitions) and the Debian mirror apt
# already uses on this machine.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
# shellcheck source=apt-suites.sh
. "$here/apt-suites.sh"

log() { echo "debian-image: $*" >&2; }
die() { echo "debian-image: error: $*" >&2; exit 1; }

# What goes into the image (with their hard dependencies; no Recommends).
packages=(
    systemd-sysv dbus libpam-systemd udev kmod
    linux-image-cloud-amd64 initramfs-tools zstd
    e2fsprogs util-linux procps
    util-linux-extra # hwclock (bookworm moved it out of util-linux)
    efibootmgr       # the firmware tests' UEFI variables
    systemd-boot-efi # systemd-bootx64.efi for efi.img's ESP (just the file; no hooks)
)
image_size=1536M
esp_mib=128
efi_cmdline_tail="rw console=ttyS0 quiet loglevel=6 panic=-1"
hostname=ghost-guest

# ---------------------------------------------------------------------------
# Hooks, run by mmdebstrap as `debian-image.sh --hook NAME ROOTDIR`: they write files into
# the tree from the outside (no chroot).
# ---------------------------------------------------------------------------

# Before the kernel and initramfs-tools are installed, so that the initramfs they build knows
# the root file system and does not look for a resume device. (initramfs-tools probes the
# device of / for its type, and /dev/vda is not there at build time: FSTYPE says it, so that
# fsck.ext4 goes into the initramfs and checks root before it is mounted.)
hook_essential() {
    local root=$1
    printf 'LABEL=ghost-root / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
    mkdir -p "$root/etc/initramfs-tools/conf.d"
    printf 'RESUME=none\n' >"$root/etc/initramfs-tools/conf.d/resume"
    printf 'FSTYPE=ext4\n' >"$root/etc/initramfs-tools/conf.d/fstype"
}

hook_customize() {
    local root=$1
    echo "$hostname" >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        "$hostname" >"$root/etc/hosts"
    rm -f "$root/etc/resolv.conf"
    # No locales package: the C locale, said explicitly (pam_env warns when the file is missing).
    echo 'LANG=C.UTF-8' >"$root/etc/default/locale"

    # Root logs in on the serial console without a password (its password stays locked).
    local getty=$root/etc/systemd/system/serial-getty@ttyS0.service.d
    mkdir -p "$getty"
    cat >"$getty/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 ttyS0 $TERM
EOF
    # The serial console exists whatever the kernel command line says.
    mkdir -p "$root/etc/systemd/system/getty.target.wants"
    ln -sf /lib/systemd/system/serial-getty@.service \
        "$root/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"

    # Markers for the tests.
    cat >"$root/etc/profile.d/ghost-shell.sh" <<'EOF'
# ghost-vmm tests: a login shell on the serial console says it is ready for commands.
if [ "$(tty 2>/dev/null)" = /dev/ttyS0 ]; then
    echo "GHOST-SHELL-READY user=$(id -un)"
fi
EOF
    mkdir -p "$root/usr/local/sbin"
    cat >"$root/usr/local/sbin/ghost-ready" <<'EOF'
#!/bin/sh
# ghost-vmm tests: multi-user.target is reached (run by ghost-ready.service).
read -r up _ </proc/uptime
printf '\nGHOST-READY uptime=%s\n' "$up" >/dev/ttyS0
EOF
    chmod 755 "$root/usr/local/sbin/ghost-ready"
    cat >"$root/etc/systemd/system/ghost-ready.service" <<'EOF'
[Unit]
Description=Say on the serial console that multi-user.target is reached (ghost-vmm tests)
After=multi-user.target systemd-logind.service systemd-user-sessions.service dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ghost-ready

[Install]
WantedBy=multi-user.target
EOF
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    ln -sf /etc/systemd/system/ghost-ready.service \
        "$root/etc/systemd/system/multi-user.target.wants/ghost-ready.service"

    # Nothing that reaches for the network on a timer (there is no network).
    local unit
    for unit in apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
        apt-daily-upgrade.service systemd-networkd-wait-online.service; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
}

if [[ ${1:-} == --hook ]]; then
    case "${2:-}" in
        essential) hook_essential "$3" ;;
        customize) hook_customize "$3" ;;
        *) die "unknown hook ${2:-}" ;;
    esac
    exit 0
fi
quiet=0
case "${1:-}" in
    -q) quiet=1 ;;
    "") ;;
    *) echo "usage: $0 [-q]" >&2; exit 2 ;;
esac

workspace=$(cd "$here/../.." && pwd)
cache=${GHOST_TESTHOST_CACHE:-$workspace/.cache/testhost}
hash=$(cat "$self" "$here/apt-suites.sh" | sha256sum | cut -c1-16)
out=$cache/debian-bookworm-$hash

complete() {
    [[ -f $out/.complete && -s $out/root.img && -s $out/vmlinuz && -s $out/initrd.img &&
        -s $out/kernel-version && -s $out/efi.img && -s $out/efi-root-partuuid ]]
}
if complete; then
    [[ $quiet == 1 ]] || log "cached: $out ($(cat "$out/kernel-version"))"
    echo "$out"
    exit 0
fi

mkdir -p "$cache"
# One build at a time (another worktree or test process may be building the same image).
exec 9>"$cache/debian-bookworm.lock"
flock 9
if complete; then
    log "cached: $out (built meanwhile)"
    echo "$out"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "run as root (mmdebstrap's root mode)"

# ---------------------------------------------------------------------------
# Host tools, only those missing.
# ---------------------------------------------------------------------------
apt_install_missing debian-image mmdebstrap e2fsprogs gdisk dosfstools mtools

# ---------------------------------------------------------------------------
# The mirror: the one apt uses here for bookworm (and its security suite, if apt has one), so
# that the guest gets the same packages as `apt-get install` on this machine would.
# ---------------------------------------------------------------------------

suites=$(apt_suites)
main_uri=$(awk '$2 == "bookworm" { print $1; exit }' <<<"$suites")
[[ -n $main_uri ]] || die "apt has no source for the bookworm suite (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
mirrors=("deb $main_uri bookworm main" "deb $main_uri bookworm-updates main")
security_uri=$(awk '$2 == "bookworm-security" { print $1; exit }' <<<"$suites")
[[ -z $security_uri ]] || mirrors+=("deb $security_uri bookworm-security main")

# ---------------------------------------------------------------------------
# The firmware-boot disk: GPT, an ESP with systemd-boot, the kernel and initramfs, and the
# root file system, all from files (no loop devices, no mounts).
# ---------------------------------------------------------------------------

# A GUID derived from the image's hash and WHAT: the same build, the same GUIDs.
guid_of() { # WHAT
    local h
    h=$(printf '%s-%s' "$hash" "$1" | sha256sum)
    printf '%s-%s-4%s-a%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

build_efi_disk() { # ROOTDIR DIR (with root.img, vmlinuz, initrd.img)
    local root=$1 dir=$2
    local disk=$dir/efi.img esp=$dir/esp.img boot=$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi
    [[ -f $boot ]] || die "the image has no $boot (systemd-boot-efi)"
    local root_sectors=$(($(stat -c %s "$dir/root.img") / 512))
    local p1_start=2048 p1_sectors=$((esp_mib * 2048))
    local p2_start=$((p1_start + p1_sectors))
    local p2_end=$((p2_start + root_sectors - 1))
    # 1 MiB after the last partition: the backup GPT (33 sectors) and alignment.
    local total=$(((p2_end + 1 + 2048) * 512))
    local partuuid
    partuuid=$(guid_of root-partition)
    rm -f "$disk" "$esp"
    truncate -s "$total" "$disk"
    # (Not sgdisk -q: with it, sgdisk 1.0.9 writes nothing.)
    sgdisk -o -U "$(guid_of disk)" \
        -n "1:$p1_start:$((p2_start - 1))" -t 1:ef00 -c "1:EFI system partition" -u "1:$(guid_of esp)" \
        -n "2:$p2_start:$p2_end" -t 2:8304 -c 2:ghost-root -u "2:$partuuid" \
        "$disk" >/dev/null || die "sgdisk failed"
    sgdisk -v "$disk" >/dev/null || die "sgdisk -v found problems in $disk"
    sgdisk -i 2 "$disk" | grep -i "unique GUID: $partuuid" >/dev/null ||
        die "sgdisk wrote no partition table to $disk"

    local volid
    volid=$(printf '%s-esp' "$hash" | sha256sum | cut -c1-8)
    mkfs.vfat -C -F 32 -n GHOST-ESP -i "$volid" "$esp" $((esp_mib * 1024)) >&2 ||
        die "mkfs.vfat -C failed"
    local cmdline="root=PARTUUID=$partuuid $efi_cmdline_tail"
    local tmp=$dir/esp-files
    mkdir -p "$tmp"
    printf 'default debian.conf\ntimeout 0\neditor no\n' >"$tmp/loader.conf"
    printf 'title Debian GNU/Linux 12 (ghost-vmm tests)\nlinux /debian/vmlinuz\ninitrd /debian/initrd.img\noptions %s\n' \
        "$cmdline" >"$tmp/debian.conf"
    export MTOOLS_SKIP_CHECK=1
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries ::/debian ||
        die "mmd failed"
    mcopy -i "$esp" "$boot" ::/EFI/BOOT/BOOTX64.EFI &&
        mcopy -i "$esp" "$boot" ::/EFI/systemd/systemd-bootx64.efi &&
        mcopy -i "$esp" "$tmp/loader.conf" ::/loader/loader.conf &&
        mcopy -i "$esp" "$tmp/debian.conf" ::/loader/entries/debian.conf &&
        mcopy -i "$esp" "$dir/vmlinuz" ::/debian/vmlinuz &&
        mcopy -i "$esp" "$dir/initrd.img" ::/debian/initrd.img || die "mcopy failed"
    rm -rf "$tmp"
    dd if="$esp" of="$disk" bs=1M seek=$((p1_start / 2048)) conv=notrunc,sparse status=none ||
        die "dd (ESP) failed"
    dd if="$dir/root.img" of="$disk" bs=1M seek=$((p2_start / 2048)) conv=notrunc,sparse \
        status=none || die "dd (root) failed"
    rm -f "$esp"
    echo "$partuuid" >"$dir/efi-root-partuuid"
    echo "$cmdline" >"$dir/efi-cmdline"
}

# ---------------------------------------------------------------------------
# Build.
# ---------------------------------------------------------------------------
started=$(date +%s.%N)
new=$out.new
rm -rf "$new" "$cache"/debian-bookworm-*.new
mkdir -p "$new"
root=$new/root
include=$(IFS=,; echo "${packages[*]}")
log "building $out: mmdebstrap bookworm ($include)"
mmdebstrap --variant=minbase --mode=root --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --essential-hook="\"$self\" --hook essential \"\$1\"" \
    --customize-hook="\"$self\" --hook customize \"\$1\"" \
    bookworm "$root" "${mirrors[@]}" >&2 || die "mmdebstrap failed"
bootstrapped=$(date +%s.%N)

# mmdebstrap empties /etc/machine-id (first-boot semantics on every boot of a throwaway
# overlay); give the image a fixed one derived from the hash, so every boot is the same.
printf '%s\n' "$(printf '%s' "$hash" | sha256sum | cut -c1-32)" >"$root/etc/machine-id"

version=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
[[ -n $version && -f $root/boot/initrd.img-$version ]] ||
    die "the image has no /boot/vmlinuz-* with an initrd.img-*"
cp "$root/boot/vmlinuz-$version" "$new/vmlinuz"
cp "$root/boot/initrd.img-$version" "$new/initrd.img"
echo "$version" >"$new/kernel-version"
versions=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}=${Version}\n' \
    systemd dbus udev "linux-image-$version" initramfs-tools e2fsprogs)
npackages=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}\n' |
    grep -c 'install ok installed')
tree_kib=$(du -sk "$root" | cut -f1)
# NVMe boots (a passed-through disk) need the driver before root is mounted: built into the
# kernel (the cloud kernel) or in the initramfs (MODULES=most takes drivers/nvme).
if grep -q '/nvme/host/nvme\.ko' "$root/lib/modules/$version/modules.builtin"; then
    nvme=built-in
elif zstd -dcq "$new/initrd.img" 2>/dev/null | cpio -it --quiet 2>/dev/null | grep '/nvme\.ko' >/dev/null; then
    nvme=module
else
    die "the initramfs cannot mount root on NVMe: no nvme driver (built in or in the initramfs)"
fi

mkfs.ext4 -q -F -L ghost-root -d "$root" "$new/root.img" "$image_size" >&2 ||
    die "mkfs.ext4 -d failed"
e2fsck -fn "$new/root.img" >&2 || die "e2fsck -fn found problems in the new image"
build_efi_disk "$root" "$new"
rm -rf "$root"
finished=$(date +%s.%N)

apparent=$(stat -c %s "$new/root.img")
actual=$(($(stat -c %b "$new/root.img") * $(stat -c %B "$new/root.img")))
{
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_seconds=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", b - a }')"
    echo "mmdebstrap_seconds=$(awk -v a="$started" -v b="$bootstrapped" 'BEGIN { printf "%.1f", b - a }')"
    echo "packages_installed=$npackages"
    echo "tree_kib=$tree_kib"
    echo "image_apparent_bytes=$apparent"
    echo "image_actual_bytes=$actual"
    echo "vmlinuz_bytes=$(stat -c %s "$new/vmlinuz")"
    echo "initrd_bytes=$(stat -c %s "$new/initrd.img")"
    echo "efi_image_apparent_bytes=$(stat -c %s "$new/efi.img")"
    echo "efi_image_actual_bytes=$(($(stat -c %b "$new/efi.img") * $(stat -c %B "$new/efi.img")))"
    echo "efi_root_partuuid=$(cat "$new/efi-root-partuuid")"
    echo "nvme_in_initrd=$nvme"
    echo "kernel_version=$version"
    sed 's/^/package: /' <<<"$versions"
} >"$new/build-info"
echo "$hash" >"$new/.complete"
rm -rf "$out"
mv "$new" "$out"
log "built $out in $(sed -n 's/^build_seconds=//p' "$out/build-info") s: kernel $version," \
    "$npackages packages, image $((apparent >> 20)) MiB apparent, $((actual >> 20)) MiB on disk," \
    "initrd $(($(stat -c %s "$out/initrd.img") >> 20)) MiB"
echo "$out"
