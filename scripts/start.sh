#!/usr/bin/env bash
# `npm start`: build mailraven and run it on the embedded trial configuration
# (SMTP on 127.0.0.1:2525, state in ./data), with `mailraven sink` on 127.0.0.1:2526 as the
# next hop for example.test, storing what it receives in ./data/sink.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/bun ] || npm ci --no-audit --no-fund
npm run --silent build
mkdir -p data
./build/mailraven sink --listen 127.0.0.1:2526 --dir data/sink > data/sink.log 2>&1 &
sink=$!
trap 'kill "$sink" 2>/dev/null || true' EXIT
cat >&2 <<'MSG'
mailraven: SMTP on 127.0.0.1:2525; mail for example.test goes to the sink (messages in data/sink/).
Send a test message from another terminal:   npx bun scripts/send-test.ts someone@example.test
Stop with Ctrl-C.
MSG
./build/mailraven serve --embedded-config
