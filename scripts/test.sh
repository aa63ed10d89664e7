#!/usr/bin/env bash
# `npm test`: install what the tests need, then type-check, build and run every test.
# Needs: npm packages (Bun comes from npm), and Debian's swaks, postfix (for smtp-source),
# openssl, dnsmasq (the tests' DNS server), spamd, clamd, apparmor_parser, curl, pebble
# (Let's Encrypt's ACME test server), strace (the fsync-order test traces the relay), prometheus
# (promtool checks the alert rules, and a Prometheus evaluates the dashboard's queries),
# redis-server and haproxy (several nodes sharing Redis behind a load balancer), and
# for the system test (tests/system: a Debian root booted with systemd, run as root only)
# debootstrap and systemd-nspawn; missing Debian packages are installed with apt-get (as root,
# or with sudo). None of their services is started by the install; the tests run their own
# instances on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

need=()
command -v swaks >/dev/null || need+=(swaks)
command -v smtp-source >/dev/null || need+=(postfix)
command -v openssl >/dev/null || need+=(openssl)
command -v /usr/sbin/spamd >/dev/null || need+=(spamd)
command -v /usr/sbin/clamd >/dev/null || need+=(clamav-daemon)
command -v /usr/sbin/apparmor_parser >/dev/null || need+=(apparmor)
command -v /usr/sbin/dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v curl >/dev/null || need+=(curl)
command -v pebble >/dev/null || need+=(pebble)
command -v strace >/dev/null || need+=(strace)
command -v redis-server >/dev/null || need+=(redis-server)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  # "No configuration": the package brings smtp-source and starts no mail system.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -q
  # On a host with systemd, installing spamd, clamav-daemon or prometheus would start their
  # services (prometheus on port 9090). The tests run their own instances on loopback, so
  # the install is told not to start any (Debian's policy-rc.d, honoured by invoke-rc.d and
  # deb-systemd-invoke), unless the host already has a policy of its own.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# mailraven test install: start no services\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 0755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
  if [ -n "$policy" ]; then $sudo rm -f "$policy"; trap - EXIT; fi
fi

export PATH="$PWD/node_modules/.bin:$PATH"
echo "== type check"; tsc --noEmit -p .
echo "== build";      npm run --silent build
echo "== tests"
report=$(mktemp)
status=0
# --timeout: Bun 1.4 ignores bunfig's [test] timeout, and its 5 s default also cuts off
# beforeAll hooks that start spamd, clamd or a relay on a busy first run.
bun test --timeout 60000 --reporter=junit --reporter-outfile="$report" "$@" || status=$?
# A closing line CI can read whatever the runner: "N passed, N failed".
node -e '
  const x = require("fs").readFileSync(process.argv[1], "utf8");
  const m = /<testsuites[^>]*tests="(\d+)"[^>]*failures="(\d+)"(?:[^>]*skipped="(\d+)")?/.exec(x);
  if (m) console.log(`tests: ${m[1] - m[2] - (m[3] || 0)} passed, ${m[2]} failed` + (m[3] ? `, ${m[3]} skipped` : ""));
' "$report" || true
rm -f "$report"
exit $status
