#!/usr/bin/env bash
# Same-run comparison of mailraven with Postfix, using the shared SMTP relay benchmark
# (/work/shared/bench, see its README) as a `cmd` target. Nothing of that benchmark is kept in
# this repository: it is copied to /var/tmp/mr-bench and run from there.
#
#   bench/compare.sh per-connection     # ./run.sh postfix,cmd: one connection per message, 20 sessions
#   bench/compare.sh capacity           # SOURCE_OPTS=-d SESSIONS=100 LAT_MESSAGES=0 IDLE_CONNS=0
#
# Environment: ROUNDS (default 3), TARGETS (default postfix,cmd), SHARED_BENCH (default
# /work/shared/bench), LOG_LEVEL (mailraven's, default info: one line per event, like Postfix's
# per-message log), OUT (results directory; default /var/tmp/mr-bench/results/<workload>-<UTC time>).
# Every other knob of the shared harness (MESSAGES, WARMUP, PHASE_TIMEOUT_S, ...) passes through.
# Needs root (Postfix, smtp-sink -u, unshare) and build/mailraven (npm run build).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-/work/shared/bench}
WORK=/var/tmp/mr-bench
CONFIG=/var/tmp/mr-bench.yaml
STATE=/var/tmp/mr-bench-state
# The binary measured is a snapshot: build/mailraven may be rebuilt while a run is going on.
BIN=/var/tmp/mr-bench-mailraven
WORKLOAD=${1:-per-connection}

if [ "$(id -u)" != 0 ]; then echo "compare.sh needs root (the shared harness runs Postfix and unshare)" >&2; exit 1; fi
if [ ! -x "$REPO/build/mailraven" ]; then echo "build/mailraven is missing: run \`npm run build\` first" >&2; exit 1; fi
if [ ! -x "$SHARED/run.sh" ]; then echo "no shared benchmark at $SHARED" >&2; exit 1; fi

case $WORKLOAD in
  per-connection) ;;
  capacity)
    export SOURCE_OPTS=${SOURCE_OPTS--d} SESSIONS=${SESSIONS:-100} LAT_MESSAGES=${LAT_MESSAGES:-0} IDLE_CONNS=${IDLE_CONNS:-0} ;;
  *) echo "usage: $0 per-connection|capacity" >&2; exit 2 ;;
esac

# 1. the harness, copied to a scratch place (it installs its peers and writes results beside
#    itself); a later copy refreshes the code and keeps peers/node_modules and results/.
if [ -d "$WORK" ]; then cp -r "$SHARED/." "$WORK/"; else cp -r "$SHARED" "$WORK"; fi

# 2. the binary and its config: 127.0.0.1:2525, bench.test -> smtp://127.0.0.1:2600, no greeting
#    delay for 127.0.0.0/8, state in /var/tmp/mr-bench-state, no DNS (IP routes, explicit hostname,
#    no reverse lookups). All load comes from 127.0.0.1, so the per-IP and total connection limits
#    (defaults 10 and 100) are raised to cover 100 sessions and 2,000 idle connections.
cp "$REPO/build/mailraven" "$BIN.new" && mv -f "$BIN.new" "$BIN"
cat > "$CONFIG" <<EOF
hostname: mailraven.bench.localhost
state_dir: $STATE
log_level: ${LOG_LEVEL:-info}
smtp:
  listen: ["127.0.0.1:2525"]
  greeting_delay: 0s
  max_connections: 5000
  max_connections_per_ip: 5000
relay:
  domains:
    bench.test: smtp://127.0.0.1:2600
  relay_networks: [127.0.0.0/8]
delivery:
  # Sessions to the sink at once. Default 20 (like Postfix's default_destination_concurrency_limit);
  # the capacity workload is reported both ways (DELIVERY_CONCURRENCY=100).
  concurrency_per_route: ${DELIVERY_CONCURRENCY:-20}
EOF
"$BIN" check-config --config "$CONFIG" >/dev/null

# 3. run it: each round measures Postfix and mailraven back to back (order rotating).
export ROUNDS=${ROUNDS:-3}
export RELAY_NAME=mailraven
export RELAY_CMD="$BIN serve --config $CONFIG"
export RELAY_SETUP="rm -rf $STATE"
export RELAY_DURABILITY="SQLite WAL, synchronous=FULL: message row (4 KiB body inline) committed and the WAL fsync()ed before the 250 (group commit of the writes of one event-loop turn)"
OUT=${OUT:-$WORK/results/$WORKLOAD-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
{ echo "binary: $REPO/build/mailraven sha256 $(sha256sum "$BIN" | cut -d' ' -f1), built $(date -u -r "$REPO/build/mailraven" +%FT%TZ)"
  echo "repo: $(git -C "$REPO" log -1 --format='%h %ci %s' 2>/dev/null)$(git -C "$REPO" status --porcelain -- src 2>/dev/null | grep -q . && echo ' (+ uncommitted changes in src/)')"
  echo "config ($CONFIG):"; cat "$CONFIG"; } > "$OUT/mailraven.txt"
echo "compare.sh: $WORKLOAD, ROUNDS=$ROUNDS, results -> $OUT" >&2
exec "$WORK/run.sh" "${TARGETS:-postfix,cmd}" "$OUT"
