#!/usr/bin/env bash
# Build the load generator into <repo>/.devstack/bin/loadgen (cgo: libopus).
# Skipped when the binary is newer than every .go, go.mod and go.sum file here.
# Build outside the stack's network namespace (the Go module proxy is needed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/.devstack/bin/loadgen"
go_bin="${GO:-}"
if [[ -z "$go_bin" ]]; then
    if command -v go >/dev/null 2>&1; then
        go_bin="$(command -v go)"
    else
        go_bin=/usr/local/go/bin/go
    fi
fi

if [[ -x "$out" ]]; then
    newer="$(find "$here" -maxdepth 1 -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$out" -print -quit)"
    if [[ -z "$newer" ]]; then
        echo "loadgen: $out is up to date"
        exit 0
    fi
fi

mkdir -p "$(dirname "$out")"
cd "$here"
CGO_ENABLED=1 "$go_bin" build -trimpath -o "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "loadgen: built $out"
