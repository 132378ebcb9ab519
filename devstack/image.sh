#!/usr/bin/env bash
# Build the worker's container image for real on this machine (issue 6), for
# tests/e2e/test_image.py. Runs OUTSIDE the tests' network namespace (it needs
# Debian's mirror and PyPI); `make test` calls it before the tests.
#
#   1. podman and debootstrap from Debian's packages (installed when missing);
#   2. a local base image, because no container registry is reachable here:
#      debootstrap of this machine's Debian release with python3 + venv,
#      imported as localhost/hold-base:<release> (built once, then reused);
#   3. podman build --isolation=chroot of ./Dockerfile with
#      BASE_IMAGE=that base -> localhost/hold-worker:test.
#
# It never fails `make test` for a missing prerequisite: it writes the reason
# to .devstack/image/skip-reason, and the test skips with that reason (under
# CI=true it fails with it instead: tests/e2e/support/ci.py). A
# Dockerfile that does not build IS a failure (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.devstack/image
mkdir -p "$OUT"
rm -f "$OUT/skip-reason" "$OUT/image-id"
log="$OUT/build.log"
: >"$log"

skip() {
    echo "$*" >"$OUT/skip-reason"
    echo "image: SKIPPED: $*" >&2
    exit 0
}

SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo -n)

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    echo "image: installing ${missing[*]} from Debian's packages"
    if ! { "${SUDO[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" \
        apt-get install -y --no-install-recommends "${missing[@]}"; } >>"$log" 2>&1; then
        skip "could not install ${missing[*]} with apt-get (see $log); install them and re-run make test"
    fi
fi

# The host's file, not the project's: not followed by shellcheck.
# shellcheck source=/dev/null
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n "$release" ]] || skip "cannot tell this machine's Debian release from /etc/os-release"
mirror=$(grep -hoE '^(URIs:|deb) *https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | grep -v security | head -n1 | awk '{print $NF}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
BASE=localhost/hold-base:$release
IMAGE=localhost/hold-worker:test
PODMAN=("${SUDO[@]}" podman)

t0=$(date +%s)
if ! "${PODMAN[@]}" image exists "$BASE" 2>>"$log"; then
    root=$(mktemp -d /var/tmp/hold-base.XXXXXX)
    trap '"${SUDO[@]}" rm -rf "$root"' EXIT
    echo "image: debootstrap $release from $mirror (a few minutes, once)"
    "${SUDO[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$release" "$root" "$mirror" >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; skip "debootstrap $release from $mirror failed (see $log)"; }
    "${SUDO[@]}" rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    "${SUDO[@]}" tar -C "$root" -c . | "${PODMAN[@]}" import - "$BASE" >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; skip "podman import of the debootstrap base failed (see $log)"; }
fi
t1=$(date +%s)

# --format docker: the OCI format has no HEALTHCHECK (podman would drop it).
# This machine reaches PyPI through a TLS-inspecting proxy whose CA is in the
# system bundle; the build gets that bundle as a build secret (not kept).
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
echo "image: podman build --isolation=chroot (BASE_IMAGE=$BASE)"
if ! "${PODMAN[@]}" build --format docker --isolation=chroot --network=host \
    --build-arg "BASE_IMAGE=$BASE" --secret "id=pip_ca,src=$ca" \
    -t "$IMAGE" -f Dockerfile . >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "image: podman build FAILED (log: $log)" >&2
    exit 1
fi
t2=$(date +%s)
"${PODMAN[@]}" image prune -f >>"$log" 2>&1 || true  # the previous builds' untagged images
"${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" >"$OUT/image-id"
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
echo "image: $IMAGE built: base $((t1 - t0)) s, image $((t2 - t1)) s, size $((size / 1000000)) MB" \
    | tee "$OUT/summary"
