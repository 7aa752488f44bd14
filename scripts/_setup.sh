# shellcheck shell=bash
# Shared setup, sourced by scripts/test and scripts/demo: system packages, /dev/fuse, the venv.
# Idempotent: does nothing (but print) when everything is already in place.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON="${PYTHON:-python3}"

_setup_say() { printf 'setup: %s\n' "$*"; }

# Run as root directly, else through sudo when there is one.
_setup_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        _setup_say "need root for: $* (no sudo); install it yourself" >&2
        return 1
    fi
}

_setup_packages() {
    # php-*: SabreDAV 1.8, the third test server (tests/sabredav/server.php).
    local wanted=(fuse3 libfuse3-3 libfuse2 rsync attr vim php-cli php-sqlite3 php-sabre-dav) missing=() pkg
    if ! command -v dpkg-query >/dev/null 2>&1; then
        _setup_say "not a Debian system: make sure ${wanted[*]} (or equivalents) are installed"
        return 0
    fi
    for pkg in "${wanted[@]}"; do
        # libfuse2 is libfuse2t64 on Debian 13 / Ubuntu 24.04; either satisfies it.
        if [ "$pkg" = libfuse2 ] && dpkg-query -W -f='${Status}' libfuse2t64 2>/dev/null | grep -q 'ok installed'; then
            continue
        fi
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        _setup_say "system packages present (${wanted[*]})"
        return 0
    fi
    _setup_say "installing ${missing[*]}"
    _setup_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    if ! _setup_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        # Newer releases renamed libfuse2 (t64 transition).
        missing=("${missing[@]/#libfuse2/libfuse2t64}")
        _setup_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

_setup_dev_fuse() {
    if [ -c /dev/fuse ]; then
        _setup_say "/dev/fuse present"
        return 0
    fi
    _setup_root modprobe fuse 2>/dev/null || true
    if [ ! -c /dev/fuse ]; then
        _setup_root mknod -m 0666 /dev/fuse c 10 229 || true
    fi
    if [ -c /dev/fuse ]; then
        _setup_say "/dev/fuse created"
    else
        # Not fatal: unit and integration tests need no FUSE; mount tests skip without it.
        _setup_say "WARNING: /dev/fuse missing and could not be created (container without the device?)" >&2
    fi
}

_setup_venv() {
    local stamp="$VENV/.caldavfs-setup-stamp" want
    if [ ! -x "$VENV/bin/python" ]; then
        _setup_say "creating $VENV"
        if ! "$PYTHON" -m venv "$VENV"; then
            # Debian ships venv/ensurepip separately.
            rm -rf "$VENV"
            _setup_say "installing python3-venv"
            _setup_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            _setup_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        fi
    fi
    # Reinstall only when pyproject.toml changed (or the venv's Python did).
    want="$(cat "$REPO_ROOT/pyproject.toml" "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        _setup_say "venv up to date ($VENV)"
        return 0
    fi
    _setup_say "installing caldavfs[test,dev,demo] into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO_ROOT[test,dev,demo]"
    printf '%s\n' "$want" >"$stamp"
}

_setup_packages
_setup_dev_fuse
_setup_venv
cd "$REPO_ROOT"
