#!/usr/bin/env bash
# Restores a backup made by backup.sh (or `mailraven backup`) onto this host: the queue,
# policy.db, the DKIM keys and the ACME directory, or some of them with --only.
#   scripts/restore.sh BACKUP_DIR [CONFIG] [--only queue,policy,dkim,acme]
# Stops the service if systemd runs it, checks the backup against its manifest, restores (what
# it replaces is kept aside, nothing is deleted; mailraven drops from root to the state
# directory's owner and refuses symlinks), and starts it again. The configuration copy in the
# backup (BACKUP_DIR/config/) is not installed: compare it with CONFIG first. Exits non-zero
# with the reason on failure.
set -euo pipefail
backup=${1:?usage: restore.sh BACKUP_DIR [CONFIG] [--only queue,policy,dkim,acme]}
shift
config=/etc/mailraven/mailraven.yaml
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then config=$1; shift; fi
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
"$bin" restore "$backup" --force --config "$config" "$@" || status=$?
if [ "$managed" = 1 ]; then
  echo "starting mailraven"
  systemctl start mailraven
fi
[ "$status" = 0 ] || die "see the message above; the state directory was left as it was"
