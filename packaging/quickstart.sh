#!/usr/bin/env bash
# Build Gatehouse and start it with zero configuration on https://127.0.0.1:8443.
#
# For a fresh Debian or Ubuntu machine that already has the Rust toolchain (rustup).
# Installs the missing build packages with apt-get (through sudo unless run as root),
# builds in release mode, then runs `gatehouse serve` in the foreground. Arguments are
# passed to `serve`, e.g.: packaging/quickstart.sh --listen 127.0.0.1:9443 --data-dir /tmp/gh
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "quickstart: cargo not found; install Rust first: https://rustup.rs" >&2
    exit 1
fi

# The C compiler and C library headers build the bundled SQLite and the TLS crypto
# library (aws-lc, built with cc; cmake is not needed). SAML signatures are checked by
# xmlsec through samael: its bindings are generated with libclang against the libxml2,
# xmlsec1 and OpenSSL headers, found with pkg-config.
needed=(gcc libc6-dev pkg-config libclang-dev libxml2-dev libxmlsec1-dev libxslt1-dev libssl-dev)
missing=()
for pkg in "${needed[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "quickstart: installing ${missing[*]}"
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cargo build --release --locked
exec ./target/release/gatehouse serve "$@"
