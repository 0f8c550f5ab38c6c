# Sourced by the test-host scripts (bash): the Debian mirror apt uses on this machine.
#
#   apt_suites           prints "URI SUITE" for each deb suite of the deb822 sources files
#                        (/etc/apt/sources.list.d/*.sources) and one-line sources lists
#   apt_suite_uri SUITE  prints the URI of SUITE (bookworm, bookworm-security, ...), or nothing
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
