# Sourced by the test-host scripts (bash): the Debian mirror apt uses on this machine.
#
#   apt_suites           prints "URI SUITE" for each deb suite of the deb822 sources files
#                        (/etc/apt/sources.list.d/*.sources) and one-line sources lists
#   apt_suite_uri SUITE  prints the URI of SUITE (bookworm, bookworm-security, ...), or nothing
#   apt_install_missing WHO PKG...
#                        installs those of the packages dpkg does not list as installed
#
# The mirror's host name is read from there, never written into the repository.

# (The scripts that source this run with these already; said again for a caller that does not.)
set -euo pipefail

apt_suites() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && uris != "")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                types = ""; uris = ""; nu = 0; ns = 0
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "types:" { types = $0; sub(/^[^:]*:[ \t]*/, "", types) }
            tolower($1) == "uris:" { uris = $0; nu = split(substr($0, index($0, ":") + 1), u, " ") }
            tolower($1) == "suites:" { ns = split(substr($0, index($0, ":") + 1), s, " ") }
            END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
    done
}

apt_suite_uri() { # SUITE
    apt_suites | awk -v s="$1" '$2 == s { print $1; exit }'
}

# apt_install_missing WHO PKG...: installs (apt-get, no Recommends, waiting for another apt's
# lock) those of PKG that dpkg does not list as installed, updating the package lists once if
# the first try fails. WHO names the caller in its log line. Needs root when anything is missing.
apt_install_missing() {
    local who=$1 p status
    shift
    local missing=()
    for p in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "$who: error: run as root to install ${missing[*]}" >&2
        return 1
    fi
    echo "$who: installing: ${missing[*]}" >&2
    _apt_get_install "${missing[@]}" || {
        apt-get -q -o DPkg::Lock::Timeout=600 update >&2
        _apt_get_install "${missing[@]}"
    }
}

_apt_get_install() {
    env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q \
        install --no-install-recommends "$@" >&2
}
