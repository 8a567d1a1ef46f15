#!/bin/sh
# install-deps.sh: install the Debian/Ubuntu packages gqa.c needs, only those
# missing. Runs apt-get as root (or through sudo). Extra package names given
# as arguments are installed too (e.g. python3-torch for `make fixtures`).
#
# install-deps.sh --check: install nothing; check that a C compiler, OpenBLAS
# and Check can be built against (by compiling, so any OS and any install
# prefix known to the compiler or pkg-config will do), print one line per
# missing piece with the Debian package that brings it, and exit 1 if any is.
set -e
CC=${CC:-cc}

if [ "${1:-}" = "--check" ]; then
    missing=0
    tmp=$(mktemp -d /tmp/gqa_deps_XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    # have WHAT PACKAGE HEADER LIB: compile and link a program that includes
    # HEADER and links LIB (with pkg-config's flags for LIB when it has them)
    have() {
        flags=$(pkg-config --cflags --libs "$4" 2>/dev/null || echo "-l$4")
        printf '#include <%s>\nint main(void) { return 0; }\n' "$3" > "$tmp/t.c"
        # shellcheck disable=SC2086
        if ! "$CC" "$tmp/t.c" -o "$tmp/t" $flags > /dev/null 2>&1; then
            echo "missing: $1 (<$3>, -l$4); on Debian/Ubuntu: apt-get install $2  (or: make test)" >&2
            missing=1
        fi
    }
    if ! command -v "$CC" > /dev/null 2>&1; then
        echo "missing: a C compiler '$CC'; on Debian/Ubuntu: apt-get install gcc" >&2
        exit 1
    fi
    have OpenBLAS libopenblas-dev cblas.h openblas
    have "Check (unit tests)" check check.h check
    command -v pkg-config > /dev/null 2>&1 ||
        echo "note: pkg-config is not installed (apt-get install pkg-config); building with default paths" >&2
    exit $missing
fi

PKGS="gcc make pkg-config libopenblas-dev libopenblas0-openmp check gnuplot-nox python3 $*"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
