#!/usr/bin/env bash
# Install the local LiveKit dev stack: Debian packages + livekit-server and
# livekit-sip built from the Go module proxy at the versions pinned in
# devstack/versions.env. Binaries go to <repo>/.devstack/bin/ (git-ignored).
# Idempotent: apt runs only when a package is missing, and a binary is rebuilt
# only when its pinned version differs from the one recorded in its stamp file.
set -euo pipefail

DEVSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEVSTACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$DEVSTACK_DIR/versions.env"

CACHE_DIR="$REPO_ROOT/.devstack"
BIN_DIR="$CACHE_DIR/bin"
BUILD_LOG_DIR="$CACHE_DIR/build"
mkdir -p "$BIN_DIR" "$BUILD_LOG_DIR"

die() { echo "devstack/install.sh: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- apt packages
# redis-server (+redis-tools for redis-cli), cgo toolchain and the C libraries
# livekit-sip links against (opus, opusfile, soxr); curl/iproute2 for up.sh and
# check_loopback.sh; nftables (nft) for the e2e media faults (tests/e2e/support/faults.py
# drops a caller's RTP in the kernel); espeak-ng for assets/make_announcement.sh (the
# default announcement, committed; the e2e store tests speak their own with it);
# the shellcheck package for `make lint` (every shell script of the project);
# chromium and chromium-driver for the agents' console's browser tests
# (tests/browser: Playwright drives /usr/bin/chromium; no browser is downloaded);
# nodejs and npm only where no Node.js is installed already (the console's
# build, `make console`: npm ci + esbuild).
APT_PKGS=(redis-server redis-tools pkg-config gcc libc6-dev
          libopus-dev libopusfile-dev libsoxr-dev curl iproute2 ca-certificates nftables
          espeak-ng shellcheck chromium chromium-driver)
command -v npm >/dev/null || APT_PKGS+=(nodejs npm)
missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    SUDO=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "apt packages missing (${missing[*]}) and not root/no sudo"
        SUDO=(sudo)
    fi
    echo "devstack: installing apt packages: ${missing[*]}"
    apt_log="$BUILD_LOG_DIR/apt.log"
    "${SUDO[@]}" apt-get update >"$apt_log" 2>&1 \
        || { tail -n 20 "$apt_log" >&2; die "apt-get update failed (log: $apt_log)"; }
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends \
        "${missing[@]}" >>"$apt_log" 2>&1 \
        || { tail -n 20 "$apt_log" >&2; die "apt-get install ${missing[*]} failed (log: $apt_log)"; }
else
    echo "devstack: apt packages already installed"
fi

# ------------------------------------------------------------------------- Go
GO="$(command -v go || true)"
[[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
[[ -n "$GO" ]] || die "go not found (PATH or /usr/local/go/bin/go)"
# Never let the go command fetch another toolchain behind our back.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# GOMODCACHE/GOCACHE: the user's defaults (shared, survive a fresh work tree).

# Build each release from its module source fetched through the Go module
# proxy (`go mod download MODULE@VERSION`), copied to a writable dir under
# .devstack/src/ and built there with `go build` as the main module, so the
# release's own go.mod/go.sum pin every dependency.
# Why not `go install MODULE/cmd/X@VERSION`: (1) it refuses modules whose go.mod
# has `replace` directives (livekit-server >= v1.13.6), and (2) it looks up the
# module's version list to check for deprecation, which the module proxy
# reachable here refuses for github.com/livekit/sip (403) -- see README.
#
# build NAME MODULE VERSION CMD_SUBDIR
build() {
    local name=$1 mod=$2 ver=$3 cmd=$4
    local stamp="$BIN_DIR/.$name.version" log="$BUILD_LOG_DIR/$name.log"
    if [[ -x "$BIN_DIR/$name" && -f "$stamp" && "$(cat "$stamp")" == "$mod@$ver" ]]; then
        echo "devstack: $name $ver already built (stamp $stamp)"
        return 0
    fi
    local start secs moddir src="$CACHE_DIR/src/$name"
    echo "devstack: building $name $ver (log: $log) ..."
    start=$(date +%s)
    : >"$log"
    moddir="$("$GO" mod download -json "$mod@$ver" 2>>"$log" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" || true
    [[ -n "$moddir" && -d "$moddir" ]] \
        || { tail -n 20 "$log" >&2; die "go mod download $mod@$ver failed (log: $log)"; }
    rm -rf "$src"
    mkdir -p "$(dirname "$src")"
    cp -R "$moddir" "$src"
    chmod -R u+w "$src"
    if ! (cd "$src" && CGO_ENABLED=1 "$GO" build -trimpath -o "$BIN_DIR/$name.tmp" "./$cmd") >>"$log" 2>&1; then
        rm -f "$BIN_DIR/$name.tmp"
        tail -n 20 "$log" >&2
        die "go build of $name $ver failed (log: $log)"
    fi
    mv -f "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
    rm -rf "$src"
    echo "$mod@$ver" >"$stamp"
    secs=$(( $(date +%s) - start ))
    echo "devstack: built $name $ver in ${secs}s"
}

build livekit-server github.com/livekit/livekit-server "$LIVEKIT_SERVER_VERSION" cmd/server
build livekit-sip    github.com/livekit/sip            "$LIVEKIT_SIP_VERSION"    cmd/livekit-sip

echo "devstack: install OK ($BIN_DIR)"
