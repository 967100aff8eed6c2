#!/usr/bin/env bash
# Gatehouse benchmark (issue 2, "Benchmark (not a timed test)"). Builds release, then reports in
# one run:
#   (a) /healthz requests/s and p99 over HTTPS keep-alive (wrk), for Gatehouse and for the ceiling
#       (tests/bench/ceiling.rs, a bare poem HTTPS hello-world from the same dependencies),
#       measured alternately, never at the same time; the median of the rounds and the ratio
#       gatehouse / ceiling (target >= 0.7);
#       Beside them, in the same rounds, the calibration: the ceiling sending Gatehouse's headers
#       (bench-ceiling --headers), and the same spending N more µs of CPU per request
#       (--cpu-us N, for each N in BENCH_CALIBRATION); their ratios to the ceiling say how many µs
#       of work per request Gatehouse's ratio corresponds to on this machine, and where 0.7 lies.
#       The CPU time (user, system) each server spent per request is read from /proc.
#   (b) idle RSS of Gatehouse after start and a few requests (target <= 25 MB);
#   (c) time from process start to sd_notify READY=1 on an existing data folder (target <= 200 ms);
#   (d) release binary size;
#   (e) accounts (issue 3), on a second server with the sign-in rate limit lifted: GET /v1/me
#       with a session JWT and with a personal access token, each as a ratio of /healthz
#       throughput measured alternately in the same rounds (targets >= 0.6 and >= 0.5); password
#       logins per second as a ratio of cores / (one argon2 verification, timed here by
#       bench-argon2) (target >= 0.85); p99 of GET /v1/me during a login flood as a ratio of its
#       p99 without one (target <= 3).
#   (f) authorization (issue 4), on the accounts server: decisions per second from the batch form
#       of POST /v1/workspaces/{ws}/authorize about a member holding 50 custom roles of 20 rules
#       (target >= 20,000), and GET /v1/workspaces/{ws} with an API key as a ratio of the same
#       with a session JWT, alternating in the same rounds (target >= 0.9).
#   (g) vault (issue 5), on the accounts server: PUT of a secret (a new version each time) and its
#       reveal, each as a ratio of /healthz in the same rounds; `keys rotate-master` over the data
#       keys of BENCH_VAULT_WORKSPACES (10000) workspaces, in seconds, the server running.
#   (h) audit (issue 6), bench-audit (tests/bench/audit.rs) in-process: chained appends per second
#       by 64 concurrent writers (group commit; target >= 20,000), the audit indexer running in the
#       same process (how far behind it fell is reported), and as a ratio of one-at-a-time
#       appends; then, over BENCH_AUDIT_RECORDS (1,000,000) records, the p99 of a query by actor and
#       one-day range over HTTPS (target <= 50 ms) and of the unfiltered newest page (baseline);
#       the NDJSON export of every record and the growth of resident memory (target <= 20 MB).
#   (i) SAML ACS (issue 8): bench-saml (tests/bench/saml.rs) in-process: SamlProvider::verify
#       calls per second on a valid signed response, one thread and one per core, as a ratio of
#       plain RSA-2048/SHA-256 verifications measured in the same rounds; then, a fresh server
#       (one [[sso.saml]] provider) per phase, the peak resident memory while 64 clients POST
#       1 MB junk bodies at the ACS (capped at 512 KiB), with and without Content-Length
#       (saml_flood.py), against the same junk at POST /v1/auth/login (capped at 1 MiB).
# Prints a table and writes tests/bench/out/results.md. Loopback addresses only.
#
# Knobs (environment): BENCH_ROUNDS (default 3), BENCH_DURATION (wrk -d, default 10s),
# BENCH_READY_RUNS (default 7), BENCH_SKIP_BUILD=1 (use the binaries already built),
# BENCH_ONLY=saml (build and run section (i) alone), BENCH_ONLY=healthz (sections (a) to (d) alone:
# the /healthz ratio, idle RSS, start to READY, binary size); unset: every section,
# BENCH_SAML_FLOOD_SECONDS (default 10; bench-saml reads BENCH_SAML_ROUNDS and BENCH_SAML_SECONDS),
# BENCH_CALIBRATION (default "0 3 6 9": the µs of CPU each calibration server adds; "none": none).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/out"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/gatehouse"
CEIL="$TARGET/release/examples/bench-ceiling"
ARGON="$TARGET/release/examples/bench-argon2"
ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-10s}"
READY_RUNS="${BENCH_READY_RUNS:-7}"
ONLY="${BENCH_ONLY:-}"
CALIBRATION="${BENCH_CALIBRATION:-0 3 6 9}"
[ "$CALIBRATION" = none ] && CALIBRATION=""
for us in $CALIBRATION; do
    [[ "$us" =~ ^[0-9]+$ ]] || { printf 'bench: BENCH_CALIBRATION=%s: whole µs, space-separated, or none\n' "$CALIBRATION" >&2; exit 2; }
done
case "$ONLY" in
    "" | saml | healthz) ;;
    *) printf 'bench: BENCH_ONLY=%s: unknown section (known: saml, healthz)\n' "$ONLY" >&2; exit 2 ;;
esac
WRK_ARGS=(--latency -t2 -c32 -d"$DURATION")

mkdir -p "$OUT"
# Two benchmarks at once would load the same two cores and overwrite each other's files: wait.
exec 9>"$OUT/.lock"
if ! flock -n 9; then
    printf '==> another benchmark holds %s; waiting for it\n' "$OUT/.lock" >&2
    flock 9
fi
rm -f "$OUT"/wrk-*.txt "$OUT"/cpu-*.txt "$OUT"/*.log "$OUT"/saml-*.json "$OUT/results.md"
WORK="$(mktemp -d /tmp/gatehouse-bench.XXXXXX)"
DATA="$WORK/data"
GH_PID=""
CEIL_PID=""
ACC_PID=""
SAML_PID=""
CAL_PIDS=()

stop_pid() { # stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL. Only our own children.
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$GH_PID"; GH_PID=""
    stop_pid "$CEIL_PID"; CEIL_PID=""
    stop_pid "$ACC_PID"; ACC_PID=""
    stop_pid "$SAML_PID"; SAML_PID=""
    for pid in "${CAL_PIDS[@]}"; do stop_pid "$pid"; done
    CAL_PIDS=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_healthy() { # wait_healthy URL PID SECONDS
    local url="$1" pid="$2" secs="$3"
    for _ in $(seq $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -fsk -o /dev/null "$url" && return 0
        sleep 0.1
    done
    return 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # user and system time, in clock ticks

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools ---------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v xmlsec1 >/dev/null || need+=(xmlsec1)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]} with apt-get"
    as_root apt-get install -y "${need[@]}" >/dev/null 2>&1 \
        || { as_root apt-get update >/dev/null && as_root apt-get install -y "${need[@]}" >/dev/null; }
fi

# Which source was measured: the commit, and whether the build inputs had uncommitted changes.
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    GIT_REV="$GIT_REV + uncommitted changes in src/ or Cargo.*"
fi

# --- build ---------------------------------------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building release (cargo waits if another build holds the target dir)"
    if [ "$ONLY" = saml ]; then
        (cd "$ROOT" && cargo build --release --locked --bin gatehouse --example bench-saml)
    elif [ "$ONLY" = healthz ]; then
        (cd "$ROOT" && cargo build --release --locked --bin gatehouse --example bench-ceiling)
    else
        (cd "$ROOT" && cargo build --release --locked --bin gatehouse --example bench-ceiling --example bench-argon2 --example bench-audit --example bench-saml)
    fi
fi
[ -x "$BIN" ] || die "$BIN is missing"
[ "$ONLY" = saml ] || [ -x "$CEIL" ] || die "$CEIL is missing"

# --- (i) SAML ACS (issue 8), a function: the full run calls it after (h), BENCH_ONLY=saml alone ---
saml_section() {
    log "SAML: verify() calls per second in-process, against plain RSA verifications (bench-saml)"
    SAML_JSON="$("$TARGET/release/examples/bench-saml" 2>"$OUT/saml.log" 9>&-)" || die "bench-saml failed (see $OUT/saml.log)"
    export SAML_JSON
    # A server with one [[sso.saml]] provider; its IdP certificate is made here (the junk never
    # reaches a signature check, but the provider and its ACS are real).
    local dir="$WORK/saml" flood_s="${BENCH_SAML_FLOOD_SECONDS:-10}" cert i name path mode port base
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/idp-key.pem" -out "$dir/idp-cert.pem" -days 2 \
        -subj /CN=bench-idp >/dev/null 2>&1 || die "openssl req failed"
    cert="$(grep -v -- '-----' "$dir/idp-cert.pem" | tr -d '\n')"
    cat >"$dir/idp.xml" <<XML
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.bench.example/saml"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>$cert</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.bench.example/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>
XML
    cat >"$dir/gatehouse.toml" <<TOML
[[sso.saml]]
id = "bench"
display_name = "Bench IdP"
idp_metadata_file = "$dir/idp.xml"
TOML
    "$BIN" init --config "$dir/gatehouse.toml" --data-dir "$dir/data" >/dev/null 2>&1 || die "gatehouse init (SAML) failed"
    saml_start() { # saml_start: a fresh server on the SAML folder; sets SAML_PID and SAML_BASE
        port="$(free_port)"
        SAML_BASE="https://127.0.0.1:$port"
        "$BIN" serve --config "$dir/gatehouse.toml" --data-dir "$dir/data" --listen "127.0.0.1:$port" \
            >/dev/null 2>>"$OUT/saml-server.log" 9>&- &
        SAML_PID=$!
        wait_healthy "$SAML_BASE/healthz" "$SAML_PID" 60 || die "the SAML server did not start (see $OUT/saml-server.log)"
    }
    # The first start generates the provider's SP keys; check the provider answers, then stop.
    saml_start
    [ "$(curl -fsk -o /dev/null -w '%{http_code}' "$SAML_BASE/v1/sso/saml/bench/metadata")" = 200 ] \
        || die "the SAML provider's metadata is not served"
    stop_pid "$SAML_PID"; SAML_PID=""
    for i in $(seq "$ROUNDS"); do
        local phases="acs-length login-length acs-chunked login-chunked"
        [ $((i % 2)) -eq 1 ] || phases="login-chunked acs-chunked login-length acs-length"
        for name in $phases; do
            case "$name" in acs-*) path=/v1/sso/saml/bench/acs ;; *) path=/v1/auth/login ;; esac
            mode="${name#*-}"
            saml_start
            # Idle as in (b): a few requests, then quiet.
            for _ in $(seq 10); do curl -fsk -o /dev/null "$SAML_BASE/healthz"; done
            sleep 2
            log "round $i/$ROUNDS: 64 clients POST 1 MB junk at $path ($mode) for ${flood_s}s"
            python3 "$HERE/saml_flood.py" "$SAML_BASE" "$path" "$SAML_PID" "$mode" "$flood_s" 64 1000000 \
                >"$OUT/saml-$name-$i.json" || die "saml_flood.py failed ($name)"
            stop_pid "$SAML_PID"; SAML_PID=""
        done
    done
    { head -n 20 "$OUT/saml-server.log"; echo "..."; tail -n 20 "$OUT/saml-server.log"; } >"$OUT/saml-server.log.short"
    mv "$OUT/saml-server.log.short" "$OUT/saml-server.log"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$ONLY" = saml ]; then
    saml_section
    LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
    export GIT_REV OUT ROUNDS LOAD_BEFORE LOAD_AFTER BENCH_ONLY=saml
    python3 "$HERE/report.py"
    exit 0
fi

# --- start Gatehouse on a fresh data folder -----------------------------------------------------
GH_PORT="$(free_port)"
GH_URL="https://127.0.0.1:$GH_PORT/healthz"
log "starting gatehouse on 127.0.0.1:$GH_PORT (fresh data folder $DATA)"
# stdout (which carries the one-time admin password of this throwaway folder) is discarded; the
# log (one access line per request, as in production) goes to a file.
"$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$GH_PORT" >/dev/null 2>"$OUT/gatehouse.log" 9>&- &
GH_PID=$!
wait_healthy "$GH_URL" "$GH_PID" 60 || die "gatehouse did not answer $GH_URL (see $OUT/gatehouse.log)"

# (b) idle RSS after start and a few requests.
for _ in $(seq 10); do curl -fsk -o /dev/null "$GH_URL"; done
sleep 2
IDLE_RSS_KB="$(rss_kb "$GH_PID")"
log "gatehouse idle RSS: ${IDLE_RSS_KB} kB"

# --- start the ceiling with the same certificate --------------------------------------------------
CEIL_PORT="$(free_port)"
CEIL_URL="https://127.0.0.1:$CEIL_PORT/healthz"
log "starting the ceiling on 127.0.0.1:$CEIL_PORT"
"$CEIL" "$DATA/tls/cert.pem" "$DATA/tls/key.pem" "127.0.0.1:$CEIL_PORT" >"$OUT/ceiling.log" 2>&1 9>&- &
CEIL_PID=$!
wait_healthy "$CEIL_URL" "$CEIL_PID" 30 || die "the ceiling did not answer $CEIL_URL (see $OUT/ceiling.log)"
body="$(curl -fsk "$CEIL_URL")"
[ "$body" = '{"status":"ok"}' ] || die "the ceiling answered $body"
body="$(curl -fsk "$GH_URL")"
[ "$body" = '{"status":"ok"}' ] || die "gatehouse answered $body"

# --- (a) calibration servers: the ceiling with Gatehouse's headers, and N µs more CPU ---------------
declare -A URLS=([gatehouse]="$GH_URL" [ceiling]="$CEIL_URL")
declare -A PIDS=([gatehouse]="$GH_PID" [ceiling]="$CEIL_PID")
TARGETS=(gatehouse ceiling)
for us in $CALIBRATION; do
    name="cal-$us"
    port="$(free_port)"
    log "starting the calibration server $name (the ceiling, --headers --cpu-us $us) on 127.0.0.1:$port"
    "$CEIL" "$DATA/tls/cert.pem" "$DATA/tls/key.pem" "127.0.0.1:$port" --headers --cpu-us "$us" \
        >"$OUT/$name.log" 2>&1 9>&- &
    pid=$!
    CAL_PIDS+=("$pid")
    wait_healthy "https://127.0.0.1:$port/healthz" "$pid" 30 || die "$name did not answer (see $OUT/$name.log)"
    URLS[$name]="https://127.0.0.1:$port/healthz"
    PIDS[$name]="$pid"
    TARGETS+=("$name")
done

# --- (a) throughput and p99, alternately ---------------------------------------------------------
run_wrk() { # run_wrk NAME URL FILE: one wrk run, fails on errors or non-2xx answers
    local name="$1" url="$2" file="$3"
    wrk "${WRK_ARGS[@]}" "$url" >"$file" 2>&1 || die "wrk failed against $name (see $file)"
    if grep -q 'Non-2xx or 3xx responses' "$file"; then die "$name gave non-2xx answers (see $file)"; fi
    if grep -q 'Socket errors' "$file"; then log "warning: socket errors against $name: $(grep 'Socket errors' "$file")"; fi
}
log "warm-up: 3 s each"
for name in "${TARGETS[@]}"; do wrk --latency -t2 -c32 -d3s "${URLS[$name]}" >/dev/null 2>&1 || true; done
for i in $(seq "$ROUNDS"); do
    # Every server once per round, one after the other; the order is reversed every other round
    # so that none always follows another. Gatehouse and the ceiling are always next to each other.
    order=("${TARGETS[@]}")
    if [ $((i % 2)) -eq 0 ]; then
        order=(); for ((k = ${#TARGETS[@]} - 1; k >= 0; k--)); do order+=("${TARGETS[$k]}"); done
    fi
    for name in "${order[@]}"; do
        log "round $i/$ROUNDS: $name (wrk ${WRK_ARGS[*]})"
        before="$(cpu_ticks "${PIDS[$name]}")"
        run_wrk "$name" "${URLS[$name]}" "$OUT/wrk-$name-$i.txt"
        echo "$before $(cpu_ticks "${PIDS[$name]}")" >"$OUT/cpu-$name-$i.txt"
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
LOADED_RSS_KB="$(rss_kb "$GH_PID")"

stop_pid "$CEIL_PID"; CEIL_PID=""
for pid in "${CAL_PIDS[@]}"; do stop_pid "$pid"; done
CAL_PIDS=()
stop_pid "$GH_PID"; GH_PID=""
LOG_LINES="$(wc -l <"$OUT/gatehouse.log")"
# Keep the log small: its head and tail are enough to see what went on.
{ head -n 40 "$OUT/gatehouse.log"; echo "... ($LOG_LINES lines in all) ..."; tail -n 40 "$OUT/gatehouse.log"; } >"$OUT/gatehouse.log.short"
mv "$OUT/gatehouse.log.short" "$OUT/gatehouse.log"

if [ "$ONLY" != healthz ]; then
# --- (e) accounts ------------------------------------------------------------------------------
# A second server on its own data folder: a bench account made with `users add-admin`, the
# sign-in rate limit lifted (the per-address limit would otherwise be what is measured).
ACC_DATA="$WORK/accounts"
ACC_PORT="$(free_port)"
ACC_BASE="https://127.0.0.1:$ACC_PORT"
BENCH_EMAIL="bench@example.com"
BENCH_PW="bench passphrase for logins 42"
printf '%s\n' "$BENCH_PW" >"$WORK/pw"
"$BIN" init --data-dir "$ACC_DATA" >/dev/null 2>&1 || die "gatehouse init failed"
"$BIN" users add-admin --data-dir "$ACC_DATA" --email "$BENCH_EMAIL" --password-file "$WORK/pw" >/dev/null \
    || die "users add-admin failed"
log "starting the accounts server on 127.0.0.1:$ACC_PORT"
GATEHOUSE_AUTH__RATE_LIMIT__PER_MINUTE=100000000 GATEHOUSE_AUTH__RATE_LIMIT__BURST=100000000 \
    "$BIN" serve --data-dir "$ACC_DATA" --listen "127.0.0.1:$ACC_PORT" >/dev/null 2>"$OUT/accounts.log" 9>&- &
ACC_PID=$!
wait_healthy "$ACC_BASE/healthz" "$ACC_PID" 60 || die "the accounts server did not start (see $OUT/accounts.log)"
LOGIN_BODY="{\"email\":\"$BENCH_EMAIL\",\"password\":\"$BENCH_PW\"}"
JWT="$(curl -fsk "$ACC_BASE/v1/auth/login" -H 'content-type: application/json' -d "$LOGIN_BODY" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')" || die "bench login failed"
PAT_EXP="$(python3 -c 'import datetime; print((datetime.datetime.now(datetime.timezone.utc)+datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))')"
PAT="$(curl -fsk "$ACC_BASE/v1/me/tokens" -H "authorization: Bearer $JWT" -H 'content-type: application/json' \
    -d "{\"name\":\"bench\",\"expires_at\":\"$PAT_EXP\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')" || die "bench token failed"
[ "$(curl -fsk -o /dev/null -w '%{http_code}' "$ACC_BASE/v1/me" -H "authorization: Bearer $PAT")" = 200 ] \
    || die "GET /v1/me with the token failed"
cat >"$WORK/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$LOGIN_BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
log "warm-up: accounts server"
wrk -t2 -c32 -d3s "$ACC_BASE/v1/me" -H "authorization: Bearer $JWT" >/dev/null 2>&1 || true
for i in $(seq "$ROUNDS"); do
    for name in acc-healthz me-jwt me-pat; do
        case "$name" in
            acc-healthz) extra=(); url="$ACC_BASE/healthz" ;;
            me-jwt) extra=(-H "authorization: Bearer $JWT"); url="$ACC_BASE/v1/me" ;;
            me-pat) extra=(-H "authorization: Bearer $PAT"); url="$ACC_BASE/v1/me" ;;
        esac
        log "round $i/$ROUNDS: $name"
        wrk "${WRK_ARGS[@]}" "${extra[@]}" "$url" >"$OUT/wrk-$name-$i.txt" 2>&1 || die "wrk failed ($name)"
        if grep -q 'Non-2xx or 3xx responses' "$OUT/wrk-$name-$i.txt"; then die "$name gave non-2xx answers"; fi
    done
done
# Logins per second against cores / argon2 time, both measured now.
ARGON_MS="$("$ARGON" 30)"
log "one argon2 verification: $ARGON_MS ms"
log "password logins: wrk -t2 -c8 -d$DURATION"
wrk --latency -t2 -c8 -d"$DURATION" -s "$WORK/login.lua" "$ACC_BASE/v1/auth/login" >"$OUT/wrk-logins.txt" 2>&1 \
    || die "wrk failed (logins)"
if grep -q 'Non-2xx or 3xx responses' "$OUT/wrk-logins.txt"; then die "logins gave non-2xx answers (see $OUT/wrk-logins.txt)"; fi
# p99 of GET /v1/me alone, then during a login flood.
ME_ARGS=(--latency -t1 -c8 -d10s -H "authorization: Bearer $JWT" "$ACC_BASE/v1/me")
log "GET /v1/me p99 without a flood"
wrk "${ME_ARGS[@]}" >"$OUT/wrk-me-calm.txt" 2>&1 || die "wrk failed (calm)"
log "GET /v1/me p99 during a login flood"
wrk -t1 -c16 -d14s -s "$WORK/login.lua" "$ACC_BASE/v1/auth/login" >"$OUT/wrk-flood.txt" 2>&1 &
FLOOD_PID=$!
sleep 2
wrk "${ME_ARGS[@]}" >"$OUT/wrk-me-flood.txt" 2>&1 || die "wrk failed (flood)"
wait "$FLOOD_PID" || true
# --- (f) authorization (issue 4), on the same server --------------------------------------------
log "authorization: 50 custom roles of 20 rules, a member holding them all, an API key"
python3 "$HERE/authz_setup.py" "$ACC_BASE" "$JWT" "$WORK" >"$OUT/authz-setup.json" || die "authz setup failed"
WS_ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ws"])' "$WORK/setup.json")"
API_KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$WORK/setup.json")"
[ "$(curl -fsk -o /dev/null -w '%{http_code}' "$ACC_BASE/v1/workspaces/$WS_ID" -H "x-api-key: $API_KEY")" = 200 ] \
    || die "GET the workspace with the API key failed"
wrk -t2 -c8 -d3s -s "$WORK/authorize.lua" "$ACC_BASE/v1/workspaces/$WS_ID/authorize" \
    -H "authorization: Bearer $JWT" >/dev/null 2>&1 || true
for i in $(seq "$ROUNDS"); do
    for name in ws-jwt ws-key decide; do
        case "$name" in
            ws-jwt) args=("${WRK_ARGS[@]}" -H "authorization: Bearer $JWT" "$ACC_BASE/v1/workspaces/$WS_ID") ;;
            ws-key) args=("${WRK_ARGS[@]}" -H "x-api-key: $API_KEY" "$ACC_BASE/v1/workspaces/$WS_ID") ;;
            decide) args=(--latency -t2 -c8 -d"$DURATION" -s "$WORK/authorize.lua" -H "authorization: Bearer $JWT"
                "$ACC_BASE/v1/workspaces/$WS_ID/authorize") ;;
        esac
        log "round $i/$ROUNDS: $name"
        wrk "${args[@]}" >"$OUT/wrk-$name-$i.txt" 2>&1 || die "wrk failed ($name)"
        if grep -q 'Non-2xx or 3xx responses' "$OUT/wrk-$name-$i.txt"; then die "$name gave non-2xx answers"; fi
    done
done
export AUTHZ_CHECKS="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["checks"])' "$WORK/setup.json")"

# --- (g) vault (issue 5), on the same server -------------------------------------------------------
VAULT_WORKSPACES="${BENCH_VAULT_WORKSPACES:-10000}"
log "vault: a secret to write and reveal; $VAULT_WORKSPACES more workspaces (a data key each)"
VWS="$(python3 "$HERE/vault_setup.py" "$ACC_BASE" "$JWT" "$WORK" "$VAULT_WORKSPACES")" || die "vault setup failed"
VSECRET="$ACC_BASE/v1/workspaces/$VWS/secrets/BENCH_SECRET"
for i in $(seq "$ROUNDS"); do
    for name in vault-healthz secret-put secret-reveal; do
        case "$name" in
            vault-healthz) args=("${WRK_ARGS[@]}" "$ACC_BASE/healthz") ;;
            secret-put) args=("${WRK_ARGS[@]}" -s "$WORK/put.lua" -H "authorization: Bearer $JWT" "$VSECRET") ;;
            secret-reveal) args=("${WRK_ARGS[@]}" -s "$WORK/reveal.lua" -H "authorization: Bearer $JWT" "$VSECRET/reveal") ;;
        esac
        log "round $i/$ROUNDS: $name"
        wrk "${args[@]}" >"$OUT/wrk-$name-$i.txt" 2>&1 || die "wrk failed ($name)"
        if grep -q 'Non-2xx or 3xx responses' "$OUT/wrk-$name-$i.txt"; then die "$name gave non-2xx answers"; fi
    done
done
log "keys rotate-master over every data key, the server running"
ROT_START="$(date +%s.%N)"
"$BIN" keys rotate-master --data-dir "$ACC_DATA" >"$OUT/rotate-master.txt" 2>&1 9>&- || die "rotate-master failed (see $OUT/rotate-master.txt)"
ROT_END="$(date +%s.%N)"
export ROTATE_SECONDS="$(python3 -c "print(round($ROT_END - $ROT_START, 2))")"
export ROTATE_KEYS="$(grep -o '[0-9]* data keys re-wrapped' "$OUT/rotate-master.txt" | cut -d' ' -f1)"
export VAULT_WORKSPACES
[ "$(curl -fsk -o /dev/null -w '%{http_code}' -X POST "$VSECRET/reveal" -H "authorization: Bearer $JWT" \
    -H 'content-type: application/json' -d '{}')" = 200 ] || die "reveal after the rotation failed"

stop_pid "$ACC_PID"; ACC_PID=""
{ head -n 20 "$OUT/accounts.log"; echo "..."; tail -n 20 "$OUT/accounts.log"; } >"$OUT/accounts.log.short"
mv "$OUT/accounts.log.short" "$OUT/accounts.log"
export ARGON_MS CORES="$(nproc)"

fi # (e) to (g)

# --- (c) start to READY=1 on the existing data folder --------------------------------------------
READY_PORT="$(free_port)"
log "start to READY=1: $READY_RUNS starts on the existing data folder"
READY_JSON="$(python3 "$HERE/ready_time.py" "$READY_RUNS" "$OUT/ready.log" -- \
    "$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$READY_PORT" 9>&-)"

if [ "$ONLY" != healthz ]; then
# --- (h) audit (issue 6): appends, queries over 1,000,000 records, export memory -------------------
log "audit: appends, fill to ${BENCH_AUDIT_RECORDS:-1000000} records, queries, export (bench-audit)"
export AUDIT_JSON="$("$TARGET/release/examples/bench-audit" 2>"$OUT/audit.log" 9>&-)" || die "bench-audit failed (see $OUT/audit.log)"

# --- (i) SAML ACS (issue 8) -------------------------------------------------------------------------
saml_section
fi # (h) and (i)

# --- (d) binary size -----------------------------------------------------------------------------
BIN_BYTES="$(stat -c %s "$BIN")"
CEIL_BYTES="$(stat -c %s "$CEIL")"

# --- report --------------------------------------------------------------------------------------
export CALIBRATION GIT_REV OUT ROUNDS DURATION IDLE_RSS_KB LOADED_RSS_KB READY_JSON BIN_BYTES CEIL_BYTES LOAD_BEFORE LOAD_AFTER LOG_LINES
export WRK_LINE="wrk ${WRK_ARGS[*]}"
python3 "$HERE/report.py"
