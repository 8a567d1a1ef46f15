#!/bin/sh
# install-deps.sh: install the Debian/Ubuntu packages gqa.c needs, only those
# missing. Runs apt-get as root (or through sudo). Extra package names given
# as arguments are installed too (e.g. python3-torch for `make fixtures`).
set -e
PKGS="gcc make pkg-config libopenblas-dev libopenblas0-openmp check gnuplot-nox $*"
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
