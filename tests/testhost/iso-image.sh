#!/bin/bash
# Build the hybrid ISO of the firmware tests (issue 14): what a user attaches to install an OS,
# made as distributions make theirs, with grub-mkrescue (GRUB for UEFI and BIOS, xorriso's
# hybrid layout: an ISO 9660 file system, El Torito boot images, and an MBR whose EFI partition
# holds \EFI\BOOT\BOOTX64.EFI, so the same file boots as a CD and as a USB stick).
#
#   tests/testhost/iso-image.sh [-q]
#
# On the ISO:
#   /boot/grub/grub.cfg  a menu that waits (no timeout) on the firmware's console, titled
#                        "ghost-iso", with two entries:
#                          "ghost-iso live"  loads /live/vmlinuz and /live/initrd.img from the ISO
#                          "ghost-iso halt"  powers the machine off from GRUB
#   /live/vmlinuz        the Debian image's kernel (debian-image.sh: Debian's cloud kernel)
#   /live/initrd.img     busybox: prints "GHOST-ISO-LIVE kernel=<uname -r> efi=<yes|no>" and
#                        powers off
#
# Output, cached by content (the hash covers this script and the kernel):
#   $CACHE/iso-<hash>/ghost.iso   and   .complete (written last)
# and prints the ISO's path on stdout. CACHE is $GHOST_TESTHOST_CACHE, or
# <workspace>/.cache/testhost. Needs root the first time (apt installs grub-mkrescue's tools).
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
# shellcheck source=apt-suites.sh
. "$here/apt-suites.sh"
log() { echo "iso-image: $*" >&2; }
die() { echo "iso-image: error: $*" >&2; exit 1; }
quiet=0
case "${1:-}" in
    -q) quiet=1 ;;
    "") ;;
    *) echo "usage: $0 [-q]" >&2; exit 2 ;;
esac

workspace=$(cd "$here/../.." && pwd)
cache=${GHOST_TESTHOST_CACHE:-$workspace/.cache/testhost}
debian=$(bash "$here/debian-image.sh" -q) || die "the Debian image (debian-image.sh) failed"
kernel=$debian/vmlinuz
[[ -s $kernel ]] || die "no kernel at $kernel"
hash=$( (cat "$self"; sha256sum <"$kernel") | sha256sum | cut -c1-16)
out=$cache/iso-$hash
iso=$out/ghost.iso
if [[ -f $out/.complete && -s $iso ]]; then
    [[ $quiet == 1 ]] || log "cached: $iso"
    echo "$iso"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/iso-image.lock"
flock 9

# grub-mkrescue (grub-common), GRUB's UEFI and BIOS images, xorriso, mtools (the EFI image's
# FAT); busybox-static and cpio for the live initramfs.
apt_install_missing iso-image grub-common grub-efi-amd64-bin grub-pc-bin xorriso mtools \
    busybox-static cpio

SECONDS=0
rm -rf "$out"
tree=$out/tree
mkdir -p "$tree/boot/grub" "$tree/live" "$out/initrd/bin"

cat >"$tree/boot/grub/grub.cfg" <<'EOF'
# ghost-iso: the menu waits for the user.
set timeout=-1
set default=0
menuentry "ghost-iso live" {
    echo "ghost-iso: loading the live system"
    linux /live/vmlinuz console=ttyS0 panic=-1
    initrd /live/initrd.img
}
menuentry "ghost-iso halt" {
    halt
}
EOF
cp "$kernel" "$tree/live/vmlinuz"

# The live system: busybox as init.
cp /bin/busybox "$out/initrd/bin/busybox"
cat >"$out/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
[ -d /sys/firmware/efi ] && efi=yes || efi=no
echo "GHOST-ISO-LIVE kernel=$(uname -r) efi=$efi"
poweroff -f
EOF
chmod 755 "$out/initrd/init"
(cd "$out/initrd" && find . | cpio -o -H newc --quiet | gzip -9) >"$tree/live/initrd.img"

grub-mkrescue -o "$iso.tmp" "$tree" -- -volid GHOST_ISO >"$out/grub-mkrescue.log" 2>&1 ||
    { cat "$out/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
mv "$iso.tmp" "$iso"
rm -rf "$tree" "$out/initrd"
touch "$out/.complete"
log "built $iso in ${SECONDS} s: $(($(stat -c %s "$iso") >> 20)) MiB"
echo "$iso"
