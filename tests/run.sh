#!/usr/bin/env bash
# Gatehouse's one test command: install the real test peers, then lint and run every test.
#
# Runs on a fresh Debian 12 machine with the Rust toolchain, as root or with sudo. Idempotent:
# a second run installs nothing and goes straight to the checks.
#
#   apt:  chromium (headless playground test), openssl (TLS policy test), wrk (benchmark),
#         rsyslog and rsyslog-gnutls (SIEM forwarding tests: each test starts its own rsyslogd
#         with its own configuration, pid file and loopback ports; the system rsyslog service
#         the package may start listens on no network port and is left alone),
#         xmlsec1 (pysaml2 signs and encrypts with it: SAML IdP test peer; the attack tests sign
#         their own responses with it), libclang-dev libxml2-dev libxmlsec1-dev libxslt1-dev
#         libssl-dev (the build: samael's xmlsec feature),
#         node/npm and python3-venv if missing
#   npm:  tests/peers/node_modules from tests/peers/package-lock.json (playwright-core, no browser; oidc-provider, jose: tests/peers/oidc)
#   pip:  tests/peers/venv with schemathesis (OpenAPI fuzzer) and pysaml2 (SAML 2.0 IdP test peer:
#         tests/peers/saml/idp.py; self-check: tests/peers/venv/bin/python tests/peers/saml/smoke.py)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/tests/peers"
SCHEMATHESIS_VERSION="4.32.5"
PYSAML2_VERSION="7.5.5"

cd "$ROOT"

section() { printf '\n==> %s\n' "$*"; }

# Never let a package manager fetch a browser of its own, never prompt.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    fi
fi

# --- system packages -------------------------------------------------------------------------
section "system packages"
missing=()
need() { # need BINARY PACKAGE...
    local bin="$1"
    shift
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "$bin" ]; then
        missing+=("$@")
    fi
}
need cc build-essential
need pkg-config pkg-config
need /usr/bin/chromium chromium
need wrk wrk
need openssl openssl
need node nodejs
need npm npm
need /usr/sbin/rsyslogd rsyslog
need xmlsec1 xmlsec1
# Library packages: no binary to look for. rsyslog-gnutls for the SIEM tests; the rest build
# samael's xmlsec bindings (libclang generates them against the libxml2, xmlsec1 and OpenSSL
# headers, found with pkg-config).
for pkg in rsyslog-gnutls libclang-dev libxml2-dev libxmlsec1-dev libxslt1-dev libssl-dev; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
        echo "missing packages: ${missing[*]}; run as root or install sudo" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "all present"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "warning: node $(node --version) is older than playwright-core needs (>= 20)" >&2
fi

# --- npm peers -------------------------------------------------------------------------------
section "npm peers (tests/peers)"
stamp="$PEERS/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ ! "$PEERS/package-lock.json" -nt "$stamp" ] && [ ! "$PEERS/package.json" -nt "$stamp" ]; then
    echo "up to date"
else
    if [ -f "$PEERS/package-lock.json" ]; then
        (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$PEERS" && npm install --no-audit --no-fund --loglevel=error)
    fi
fi

# --- python peers ----------------------------------------------------------------------------
section "python peers (tests/peers/venv)"
VENV="$PEERS/venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
pyversion() { # pyversion DISTRIBUTION: its version in the venv, or nothing
    "$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || true
}
if [ "$(pyversion schemathesis)" = "$SCHEMATHESIS_VERSION" ] && [ "$(pyversion pysaml2)" = "$PYSAML2_VERSION" ]; then
    echo "schemathesis $SCHEMATHESIS_VERSION, pysaml2 $PYSAML2_VERSION"
else
    # One pip call, so that the two resolve together in the one venv.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "pysaml2==$PYSAML2_VERSION"
    echo "installed schemathesis $SCHEMATHESIS_VERSION, pysaml2 $PYSAML2_VERSION"
fi

# --- checks ----------------------------------------------------------------------------------
section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

section "cargo test --all-targets"
cargo test --all-targets --locked

section "all tests passed"
