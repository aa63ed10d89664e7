#!/usr/bin/env bash
# Restores a backup made by backup.sh (or `mailraven backup`) into the relay's state directory.
#   scripts/restore.sh BACKUP_DIR [CONFIG]
# Stops the service if systemd runs it, restores (the current queue is kept aside in the state
# directory, nothing is deleted), and starts it again. Exits non-zero with the reason on failure.
set -euo pipefail
backup=${1:?usage: restore.sh BACKUP_DIR [CONFIG]}
config=${2:-/etc/mailraven/mailraven.yaml}
bin=${MAILRAVEN_BIN:-$(command -v mailraven || echo /usr/local/bin/mailraven)}

die() { echo "mailraven restore failed: $*" >&2; exit 1; }
[ -x "$bin" ] || die "mailraven binary not found (set MAILRAVEN_BIN)"
[ -d "$backup" ] || die "$backup is not a directory"

managed=0
if command -v systemctl >/dev/null && systemctl is-active --quiet mailraven 2>/dev/null; then
  managed=1
  echo "stopping mailraven"
  systemctl stop mailraven
fi
status=0
"$bin" restore "$backup" --force --config "$config" || status=$?
if [ "$managed" = 1 ]; then
  echo "starting mailraven"
  systemctl start mailraven
fi
[ "$status" = 0 ] || die "see the message above; the queue was left as it was"
