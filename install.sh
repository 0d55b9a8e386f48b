#!/usr/bin/env bash
# Set up converge on a fresh Debian/Ubuntu machine: the system packages it needs and a
# virtualenv in .venv with converge installed (.venv/bin/converge).
#   ./install.sh          converge itself
#   ./install.sh --dev    plus everything the test suite needs (tools, daemons, pytest, ruff, mypy)
set -euo pipefail
cd "$(dirname "$0")"
dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: please install as root: ${missing[*]}" >&2
        return 1
    fi
    if [ ! -f /var/lib/converge-install-apt-updated ] || [ -n "$(find /var/lib/apt/lists -maxdepth 0 -mmin +1440 2>/dev/null)" ]; then
        apt-get update -qq
        mkdir -p /var/lib && touch /var/lib/converge-install-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    apt_install python3
    PYTHON=/usr/bin/python3
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
fi

if [ "$dev" = 1 ]; then
    # Real tools the tests drive (no mocks): throwaway systemd test hosts (debootstrap +
    # systemd-nspawn), rpm/dnf/createrepo_c for the dnf provider, dpkg for apt, git, and
    # PostgreSQL (the tests start their own server with initdb; the packaged one stays off).
    apt_install git ca-certificates debootstrap systemd-container iproute2 openssh-client \
        util-linux rpm dnf createrepo-c postgresql redis-server
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$dev" = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
else
    .venv/bin/python -m pip install -q -e .
fi
echo "converge installed: $(.venv/bin/converge --version) at $(pwd)/.venv/bin/converge"
