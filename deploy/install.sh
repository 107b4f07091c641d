#!/bin/sh
# Install wattmux on a Debian 12 site controller (run as root from a checkout of the repository).
#
#   deploy/install.sh [--prefix /opt/wattmux] [--root DIR] [--skip-user] [--skip-venv] [--no-systemctl]
#
# Creates the system user "wattmux", /etc/wattmux (config), /var/lib/wattmux (SQLite store),
# a virtualenv in PREFIX/venv with wattmux installed from this checkout, and the systemd units
# wattmux.service and wattmux-failsafe.service.  Idempotent: an existing config is never
# overwritten.  Does not start the daemon: edit the config, check it, then
#   systemctl enable --now wattmux.service
# --root installs into a staging tree (packaging, tests); --skip-user, --skip-venv and
# --no-systemctl leave out the steps that change the running system.
set -eu

PREFIX=/opt/wattmux
ROOT=
SKIP_USER=no
SKIP_VENV=no
SYSTEMCTL=yes
SOURCE=$(cd "$(dirname "$0")/.." && pwd)

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --root) ROOT=$2; shift 2 ;;
        --skip-user) SKIP_USER=yes; shift ;;
        --skip-venv) SKIP_VENV=yes; shift ;;
        --no-systemctl) SYSTEMCTL=no; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: --prefix must be an absolute path, got $PREFIX" >&2; exit 2 ;;
esac

if [ "$SKIP_USER" = no ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or use --root DIR --skip-user to stage the files)" >&2
    exit 1
fi

step() { echo "install.sh: $*"; }

if [ "$SKIP_USER" = no ]; then
    if ! getent group wattmux >/dev/null; then
        step "creating group wattmux"
        groupadd --system wattmux
    fi
    if ! getent passwd wattmux >/dev/null; then
        step "creating system user wattmux"
        useradd --system --gid wattmux --home-dir /var/lib/wattmux --no-create-home \
            --shell /usr/sbin/nologin --comment "wattmux daemon" wattmux
    fi
    OWNER=wattmux
else
    OWNER=$(id -un)
fi

step "directories under ${ROOT:-/}"
install -d -m 0755 "$ROOT$PREFIX" "$ROOT/etc/systemd/system"
install -d -m 0750 "$ROOT/etc/wattmux" "$ROOT/var/lib/wattmux"
if [ "$SKIP_USER" = no ]; then
    chown root:wattmux "$ROOT/etc/wattmux"
    chown wattmux:wattmux "$ROOT/var/lib/wattmux"
fi

if [ -e "$ROOT/etc/wattmux/wattmux.toml" ]; then
    step "keeping the existing /etc/wattmux/wattmux.toml"
else
    step "installing the example config as /etc/wattmux/wattmux.toml (edit it)"
    install -m 0640 "$SOURCE/deploy/wattmux.example.toml" "$ROOT/etc/wattmux/wattmux.toml"
    [ "$SKIP_USER" = yes ] || chown root:wattmux "$ROOT/etc/wattmux/wattmux.toml"
fi

if [ "$SKIP_VENV" = no ]; then
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "install.sh: wattmux needs Python >= 3.11" >&2; exit 1
    fi
    if ! python3 -m venv --help >/dev/null 2>&1; then
        step "installing python3-venv"
        apt-get install -y -qq python3-venv >/dev/null
    fi
    step "virtualenv $PREFIX/venv with wattmux from $SOURCE"
    python3 -m venv "$ROOT$PREFIX/venv"
    # the versions wattmux is tested with (constraints.txt), as for the development virtualenv
    "$ROOT$PREFIX/venv/bin/python" -m pip install --quiet --upgrade -c "$SOURCE/constraints.txt" pip
    "$ROOT$PREFIX/venv/bin/python" -m pip install --quiet -c "$SOURCE/constraints.txt" "$SOURCE[fast]"
fi

for unit in wattmux.service wattmux-failsafe.service; do
    step "systemd unit /etc/systemd/system/$unit"
    sed "s|/opt/wattmux/|$PREFIX/|g" "$SOURCE/deploy/$unit" > "$ROOT/etc/systemd/system/$unit.tmp"
    chmod 0644 "$ROOT/etc/systemd/system/$unit.tmp"
    mv "$ROOT/etc/systemd/system/$unit.tmp" "$ROOT/etc/systemd/system/$unit"
done

if [ "$SYSTEMCTL" = yes ]; then
    systemctl daemon-reload
fi

step "done; next: edit /etc/wattmux/wattmux.toml, then"
step "  $PREFIX/venv/bin/wattmux check-config /etc/wattmux/wattmux.toml"
step "  systemctl enable --now wattmux.service"
[ "$OWNER" = wattmux ] || step "(staged as $OWNER without the wattmux user)"
