#!/bin/sh
# Build, once, the Debian 12 root file system the systemd tests boot with systemd-nspawn
# (tests/deploy/test_systemd_nspawn.py, bench/bench_systemd.py), and a wheelhouse of
# wattmux's pinned dependencies so that deploy/install.sh runs inside it without the network.
#
#   tests/deploy/nspawn_root.sh [DIR]      (default /var/tmp/wattmux-nspawn; run as root)
#
# DIR/bookworm is the root (about 310 MB, 2.5 min; kept while DIR/bookworm.stamp exists),
# DIR/wheels the wheelhouse (rebuilt when constraints.txt or pyproject.toml changes).
set -eu
DIR=${1:-/var/tmp/wattmux-nspawn}
ROOT=$DIR/bookworm
SOURCE=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$SOURCE/.venv/bin/python}

if [ "$(id -u)" != 0 ]; then
    echo "nspawn_root.sh: needs root (debootstrap, systemd-nspawn); the systemd tests skip without it" >&2
    exit 1
fi
if ! command -v systemd-nspawn >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    echo "nspawn_root.sh: installing systemd-container and debootstrap with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container debootstrap >/dev/null
fi
mkdir -p "$DIR"

if [ ! -e "$DIR/bookworm.stamp" ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    echo "nspawn_root.sh: debootstrap bookworm into $ROOT from $MIRROR (once, about 2.5 min)"
    rm -rf "$ROOT"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,python3,python3-venv \
        bookworm "$ROOT" "$MIRROR" > "$DIR/debootstrap.log" 2>&1 \
        || { echo "nspawn_root.sh: debootstrap failed, see $DIR/debootstrap.log" >&2; exit 1; }
    touch "$DIR/bookworm.stamp"
fi

# The wheelhouse follows the pins and the dependencies pyproject.toml names.
if ! cat "$SOURCE/constraints.txt" "$SOURCE/pyproject.toml" | cmp -s - "$DIR/wheels/inputs" 2>/dev/null; then
    echo "nspawn_root.sh: wheelhouse of the pinned dependencies in $DIR/wheels"
    rm -rf "$DIR/wheels"
    mkdir -p "$DIR/wheels"
    "$PY" -m pip download --quiet -c "$SOURCE/constraints.txt" -d "$DIR/wheels" \
        "$SOURCE[fast]" pip hatchling
    rm -f "$DIR"/wheels/wattmux-*
    cat "$SOURCE/constraints.txt" "$SOURCE/pyproject.toml" > "$DIR/wheels/inputs"
fi
