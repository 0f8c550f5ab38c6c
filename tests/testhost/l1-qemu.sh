#!/bin/bash
# Build the test host's L1 QEMU: Debian 12's own qemu source package (the version of the
# installed qemu-system-x86) with one fix, patches/qemu-cr8-bql.patch (an L3 guest that writes
# CR8, as OVMF and Windows do, otherwise aborts L1 QEMU-TCG; /work/shared/docs/testhost.md,
# "Known L1 QEMU bug").
#
#   tests/testhost/l1-qemu.sh [-q | --cached]
#
# Output, cached by content (the hash covers this script, the patch and the Debian source
# version):
#   $CACHE/qemu-l1-<hash>/
#     qemu-system-x86_64   x86_64-softmmu only, TCG, slirp; no UI, docs or user mode
#     build-info           key=value: source version, patch checksum, build time, --version
#     .complete            written last; a directory without it is rebuilt
# and prints the directory on stdout (everything else goes to stderr). A complete directory is
# reused (one line, none with -q; ~0 s). A build takes about 15 minutes on 2 cores. --cached
# builds nothing: it prints the directory if it is complete, else exits 1 (the harness asks
# this way which binary to use).
#
# The binary finds Debian's firmware (SeaBIOS, the iPXE ROMs, linuxboot) in Debian's
# directories (the same --firmwarepath as Debian's build; the harness also passes
# -L /usr/share/qemu -L /usr/share/seabios -L /usr/lib/ipxe/qemu). Debian's own
# qemu-system-x86_64 stays the reference VMM inside L2; only L1 runs this one.
#
# How: a deb-src list of the mirror apt already uses (the suites of
# /etc/apt/sources.list.d/*.sources) in a private apt directory (nothing of the system's apt
# configuration or lists changes), `apt-get source qemu=<version>`, the build dependencies
# that are missing (apt-get install), the patch, configure, `ninja qemu-system-x86_64`. The
# source tree is deleted afterwards. One build at a time (flock). Needs root (or sudo) for
# the build dependencies.
set -euo pipefail

self=$(readlink -f "${BASH_SOURCE[0]}")
here=$(dirname "$self")
# shellcheck source=apt-suites.sh
. "$here/apt-suites.sh"

log() { echo "l1-qemu: $*" >&2; }
die() { echo "l1-qemu: error: $*" >&2; exit 1; }

quiet=0
cached_only=0
case "${1:-}" in
    -q) quiet=1 ;;
    --cached) quiet=1 cached_only=1 ;;
    "") ;;
    *) echo "usage: $0 [-q | --cached]" >&2; exit 2 ;;
esac

patch_file=$here/patches/qemu-cr8-bql.patch
build_deps=(dpkg-dev ninja-build meson libglib2.0-dev libpixman-1-dev pkg-config flex bison
    libfdt-dev libslirp-dev gcc make python3 patch xz-utils)
configure_flags=(--target-list=x86_64-softmmu --prefix=/usr
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
    --disable-docs --disable-user --enable-slirp --disable-gtk --disable-sdl --disable-vnc
    --disable-spice --disable-werror)

workspace=$(cd "$here/../.." && pwd)
cache=${GHOST_TESTHOST_CACHE:-$workspace/.cache/testhost}

# The source version of the installed Debian QEMU (1:7.2+dfsg-7+deb12u18 for the binary
# 1:7.2+dfsg-7+deb12u18+b2): L1 is built from the same source as the firmware blobs and the
# reference VMM it sits next to.
version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null || true)
[[ -n $version ]] || die "qemu-system-x86 is not installed (tests/testhost/setup.sh installs it)"
hash=$({
    sha256sum <"$self"
    sha256sum <"$patch_file"
    echo "$version"
} | sha256sum | cut -c1-16)
out=$cache/qemu-l1-$hash

complete() { [[ -f $out/.complete && -x $out/qemu-system-x86_64 ]]; }
if complete; then
    [[ $quiet == 1 ]] || log "cached: $out (qemu $version + $(basename "$patch_file"))"
    echo "$out"
    exit 0
fi
[[ $cached_only == 0 ]] || exit 1

mkdir -p "$cache"
exec 9>"$cache/qemu-l1.lock"
flock 9
if complete; then
    log "cached: $out (built meanwhile)"
    echo "$out"
    exit 0
fi

sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
apt_install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q \
        install --no-install-recommends "$@" >&2
}
missing=()
for p in "${build_deps[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing build dependencies: ${missing[*]}"
    if ! apt_install "${missing[@]}"; then
        $sudo apt-get -q -o DPkg::Lock::Timeout=600 update >&2
        apt_install "${missing[@]}"
    fi
fi

started=$(date +%s)
work=$out.build
rm -rf "$work" "$out.new"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/parts" \
    "$work/src"

# A private apt: deb-src lines for every suite apt uses, its own lists and cache.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[[ -f $keyring ]] && signed="[signed-by=$keyring] "
apt_suites | awk -v signed="$signed" '{ print "deb-src " signed $1, $2, "main" }' \
    >"$work/apt/sources.list"
[[ -s $work/apt/sources.list ]] || die "apt has no Debian source to read the mirror from"
apt_private=(-o "Dir::Etc::SourceList=$work/apt/sources.list"
    -o "Dir::Etc::SourceParts=$work/apt/parts"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Cache=$work/apt/cache")
# As root, apt's sandbox user (_apt) could not write into our directories.
[[ $(id -u) != 0 ]] || apt_private+=(-o APT::Sandbox::User=root)
log "fetching qemu $version (source) from the mirror apt uses"
apt-get -q "${apt_private[@]}" update >&2 || die "apt-get update (deb-src) failed"
(cd "$work/src" && apt-get -q "${apt_private[@]}" source --download-only "qemu=$version" >&2) ||
    die "apt-get source qemu=$version failed"
dsc=$(ls "$work/src"/qemu_*.dsc | head -n1)
dpkg-source --no-check -x "$dsc" "$work/src/qemu" >&2 || die "dpkg-source -x $dsc failed"

cd "$work/src/qemu"
patch -p1 --forward <"$patch_file" >&2 || die "$(basename "$patch_file") does not apply to qemu $version"
mkdir build
cd build
log "configure ${configure_flags[*]}"
../configure "${configure_flags[@]}" >configure.log 2>&1 ||
    { tail -n 40 configure.log >&2; die "configure failed (log above)"; }
log "ninja qemu-system-x86_64 (about 15 minutes on 2 cores)"
ninja qemu-system-x86_64 >ninja.log 2>&1 || { tail -n 40 ninja.log >&2; die "ninja failed (log above)"; }

mkdir -p "$out.new"
install -m 755 qemu-system-x86_64 "$out.new/qemu-system-x86_64"
reported=$("$out.new/qemu-system-x86_64" --version | head -n1)
finished=$(date +%s)
{
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "build_seconds=$((finished - started))"
    echo "source_version=$version"
    echo "patch=$(basename "$patch_file")"
    echo "patch_sha256=$(sha256sum <"$patch_file" | cut -d' ' -f1)"
    echo "version=$reported"
    echo "configure=${configure_flags[*]}"
} >"$out.new/build-info"
echo "$hash" >"$out.new/.complete"
cd /
rm -rf "$out" "$work"
mv "$out.new" "$out"
log "built $out in $((finished - started)) s: $reported + $(basename "$patch_file")"
echo "$out"
