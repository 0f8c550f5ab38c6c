#!/bin/bash
# Prepare the assets of the nested test host (see /work/shared/docs/testhost.md).
#
#   tests/testhost/setup.sh [--refresh]
#
# Idempotent. On a fresh Debian 12 machine it:
#   1. installs (apt) the host tools the harness needs, only those missing;
#   2. downloads (apt-get download) the kernel packages that linux-image-cloud-amd64 and
#      linux-image-amd64 depend on, and unpacks them (dpkg -x) into
#        $CACHE/kernel-cloud/   and   $CACHE/kernel-generic/
#      each with stable names:  vmlinuz -> bzImage,  modules -> lib/modules/<version>,
#      version (a text file),   vmlinux (ELF64 extracted from the bzImage);
#   3. builds the Debian 12 guest image (debian-image.sh) into $CACHE/debian-bookworm-<hash>/;
#   4. downloads Debian's OVMF (package ovmf, apt-get download + dpkg -x) into $CACHE/ovmf/:
#        OVMF_CODE_4M.fd, OVMF_VARS_4M.fd, OVMF_CODE_4M.secboot.fd, OVMF_VARS_4M.ms.fd
#      (links into root/usr/share/OVMF/, which holds the whole package), version;
#   5. builds L1's QEMU (l1-qemu.sh: Debian's qemu source with the CR8 fix) into
#        $CACHE/qemu-l1-<hash>/qemu-system-x86_64   (about 10 minutes once, then cached);
# and prints nothing but a one-line summary when everything is already there.
#
# CACHE is $GHOST_TESTHOST_CACHE, or <workspace>/.cache/testhost.
# --refresh re-resolves the kernel package names with apt (picks up a newer Debian kernel) and
# downloads OVMF again when apt has a newer one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(cd "$here/../.." && pwd)
cache=${GHOST_TESTHOST_CACHE:-$workspace/.cache/testhost}
refresh=0
case "${1:-}" in
    --refresh) refresh=1 ;;
    "") ;;
    *) echo "usage: $0 [--refresh]" >&2; exit 2 ;;
esac

log() { echo "testhost-setup: $*" >&2; }
die() { echo "testhost-setup: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# 1. Host packages.
# ---------------------------------------------------------------------------
packages=(qemu-system-x86 ipxe-qemu busybox-static cpio gzip xz-utils zstd lz4 kmod e2fsprogs
    acpica-tools systemd dmidecode) # acpica-tools: iasl, which the ACPI unit tests disassemble
# the DSDT with; systemd: systemd-analyze, which verifies the shipped unit file; dmidecode: the
# SMBIOS unit tests decode ghost-boot's tables with it
sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
apt_update() { $sudo apt-get -q -o DPkg::Lock::Timeout=600 update >&2; }
lists_updated=0
apt_update_once() {
    [[ $lists_updated == 1 ]] || { apt_update || true; lists_updated=1; }
}
apt_install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q \
        install --no-install-recommends "$@" >&2
}

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    # (DPkg::Lock::Timeout: wait for a concurrent apt/dpkg run instead of failing on its lock.)
    if ! apt_install "${missing[@]}"; then
        apt_update
        apt_install "${missing[@]}"
    fi
fi

# ---------------------------------------------------------------------------
# 2. Kernels.
# ---------------------------------------------------------------------------

# The kernel package a meta package (linux-image-cloud-amd64) depends on.
kernel_package_of() {
    local dep
    dep=$(apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    if [[ -z $dep ]]; then
        apt_update || true
        dep=$(apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    fi
    [[ -n $dep ]] || die "cannot resolve the kernel package of $1 (apt-get update?)"
    echo "$dep"
}

# Print the offsets of a byte string inside a file, one a line (as scripts/extract-vmlinux).
find_magic() { # FILE PRINTF-ESCAPED-MAGIC
    LC_ALL=C grep -obUaP "$2" "$1" 2>/dev/null | cut -d: -f1 || true
}

is_elf64() { # FILE
    [[ -s $1 ]] && [[ $(head -c 5 "$1" | od -An -tx1 | tr -d ' \n') == 7f454c4602 ]]
}

# Extract the ELF vmlinux from a bzImage: find the compressed payload by its magic,
# decompress, keep the first result that is an ELF64 file.
extract_vmlinux() { # BZIMAGE OUT
    local img=$1 out=$2 tmp="$2.tmp" fmt magic pos
    local -A decoders=(
        [gzip]='gzip -dc' [xz]='xz -dc' [zstd]='zstd -dcq' [bzip2]='bzip2 -dc'
        [lzma]='xz -dc --format=lzma' [lz4]='lz4 -dc'
    )
    local -A magics=(
        [gzip]='\x1f\x8b\x08' [xz]='\xfd7zXZ\x00' [zstd]='\x28\xb5\x2f\xfd' [bzip2]='BZh'
        [lzma]='\x5d\x00\x00\x00' [lz4]='\x02\x21\x4c\x18'
    )
    for fmt in xz zstd gzip bzip2 lzma lz4; do
        magic=${magics[$fmt]}
        for pos in $(find_magic "$img" "$magic"); do
            command -v "${decoders[$fmt]%% *}" >/dev/null || continue
            tail -c "+$((pos + 1))" "$img" | ${decoders[$fmt]} >"$tmp" 2>/dev/null || true
            if is_elf64 "$tmp"; then
                mv "$tmp" "$out"
                log "extracted $(basename "$out") ($fmt payload at offset $pos, $(($(stat -c %s "$out") >> 20)) MiB)"
                return 0
            fi
        done
    done
    rm -f "$tmp"
    die "no ELF vmlinux found inside $img"
}

# Download and unpack the kernel that META depends on into $cache/kernel-FLAVOR.
prepare_kernel() { # META FLAVOR
    local meta=$1 flavor=$2
    local dir=$cache/kernel-$flavor
    local stamp=$dir/.complete
    # Complete means: every file the harness uses is there, and the stamp (written last) too.
    complete() {
        [[ -f $stamp && -e $dir/vmlinuz && -e $dir/modules/modules.dep && -f $dir/version ]] &&
            is_elf64 "$dir/vmlinux"
    }
    if [[ $refresh == 0 ]] && complete; then
        return 0
    fi
    # Resolve against fresh package lists: a machine whose lists are old would otherwise
    # cache an old kernel for good (seen: 6.1.0-48 where the mirror had 6.1.0-57), and two
    # machines would test on different test-host kernels.
    apt_update_once
    local pkg
    pkg=$(kernel_package_of "$meta")
    if complete && [[ $(cat "$stamp") == "$pkg" ]]; then
        return 0
    fi
    log "preparing $flavor kernel: $pkg"
    local debs=$cache/debs
    mkdir -p "$debs"
    local deb
    deb=$(ls "$debs/${pkg}_"*.deb 2>/dev/null | head -n1 || true)
    if [[ -z $deb ]]; then
        # As root, download as root: apt's sandbox user (_apt) cannot write into our cache.
        local sandbox=()
        [[ $(id -u) != 0 ]] || sandbox=(-o APT::Sandbox::User=root)
        (cd "$debs" && apt-get download -q "${sandbox[@]}" "$pkg" >&2) || die "apt-get download $pkg failed"
        deb=$(ls "$debs/${pkg}_"*.deb | head -n1)
    fi
    rm -rf "$dir.new"
    mkdir -p "$dir.new/root"
    dpkg -x "$deb" "$dir.new/root"
    local vmlinuz version
    vmlinuz=$(cd "$dir.new/root" && ls boot/vmlinuz-* | head -n1)
    [[ -n $vmlinuz ]] || die "$deb ships no boot/vmlinuz-*"
    version=${vmlinuz#boot/vmlinuz-}
    [[ -d $dir.new/root/lib/modules/$version ]] || die "$deb ships no lib/modules/$version"
    # The package's postinst would run depmod; we need modules.dep to resolve module dependencies.
    /sbin/depmod -b "$dir.new/root" "$version" || die "depmod failed for $version"
    ln -s "root/$vmlinuz" "$dir.new/vmlinuz"
    ln -s "root/lib/modules/$version" "$dir.new/modules"
    echo "$version" >"$dir.new/version"
    extract_vmlinux "$dir.new/vmlinuz" "$dir.new/vmlinux"
    echo "$pkg" >"$dir.new/.complete"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
}

mkdir -p "$cache"
prepare_kernel linux-image-cloud-amd64 cloud
prepare_kernel linux-image-amd64 generic

# ---------------------------------------------------------------------------
# 3. The Debian 12 guest image of the real-distribution tests (cached by its script's hash;
#    about a minute to build, ~0 s when cached).
# ---------------------------------------------------------------------------
debian=$($sudo env GHOST_TESTHOST_CACHE="$cache" "$here/debian-image.sh" -q) || die "debian-image.sh failed"

# ---------------------------------------------------------------------------
# 4. Debian's OVMF (UEFI firmware for the L3 guests; issue 14).
# ---------------------------------------------------------------------------
ovmf_files=(OVMF_CODE_4M.fd OVMF_VARS_4M.fd OVMF_CODE_4M.secboot.fd OVMF_VARS_4M.ms.fd)
prepare_ovmf() {
    local dir=$cache/ovmf
    local stamp=$dir/.complete
    complete() {
        [[ -f $stamp && -f $dir/version ]] || return 1
        local f
        for f in "${ovmf_files[@]}"; do [[ -s $dir/$f ]] || return 1; done
    }
    if [[ $refresh == 0 ]] && complete; then
        return 0
    fi
    local version
    version=$(apt-cache policy ovmf 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    if [[ -z $version || $version == "(none)" ]]; then
        apt_update || true
        version=$(apt-cache policy ovmf 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    fi
    [[ -n $version && $version != "(none)" ]] || die "apt has no ovmf package"
    if complete && [[ $(cat "$stamp") == "ovmf=$version" ]]; then
        return 0
    fi
    log "preparing OVMF: ovmf $version"
    local debs=$cache/debs
    mkdir -p "$debs"
    local deb=$debs/ovmf_${version#*:}_all.deb
    if [[ ! -f $deb ]]; then
        local sandbox=()
        [[ $(id -u) != 0 ]] || sandbox=(-o APT::Sandbox::User=root)
        (cd "$debs" && apt-get download -q "${sandbox[@]}" "ovmf=$version" >&2) ||
            die "apt-get download ovmf=$version failed"
        [[ -f $deb ]] || deb=$(ls "$debs"/ovmf_*"${version#*:}"*.deb | head -n1)
    fi
    rm -rf "$dir.new"
    mkdir -p "$dir.new/root"
    dpkg -x "$deb" "$dir.new/root"
    local f
    for f in "${ovmf_files[@]}"; do
        [[ -s $dir.new/root/usr/share/OVMF/$f ]] || die "$deb ships no usr/share/OVMF/$f"
        ln -s "root/usr/share/OVMF/$f" "$dir.new/$f"
    done
    echo "$version" >"$dir.new/version"
    echo "ovmf=$version" >"$dir.new/.complete"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
}
prepare_ovmf

# ---------------------------------------------------------------------------
# 5. L1's QEMU with the CR8 fix (cached by the script's, the patch's and the source's hash).
# ---------------------------------------------------------------------------
l1=$($sudo env GHOST_TESTHOST_CACHE="$cache" "$here/l1-qemu.sh" -q) || die "l1-qemu.sh failed"

log "ok: cloud $(cat "$cache/kernel-cloud/version"), generic $(cat "$cache/kernel-generic/version"), $(basename "$debian"), ovmf $(cat "$cache/ovmf/version"), $(basename "$l1") in $cache"
