#!/usr/bin/env bash
# Nightly hot backup for cron: asks the running relay for a backup through the admin API.
#   scripts/backup.sh [TOKEN_FILE] [ADMIN_URL]
# Defaults: /etc/mailraven/admin.token and http://127.0.0.1:8025. Prints the backup's JSON
# (its path and its manifest: every file with size and sha256) and exits 0; on any failure
# prints why and exits non-zero. The relay's mailraven_backup_last_success_timestamp_seconds
# follows each good backup (alert: contrib/prometheus/mailraven-rules.yml).
#   0 2 * * *  mailraven  /usr/local/share/mailraven/backup.sh >> /var/log/mailraven-backup.log 2>&1
set -euo pipefail
token_file=${1:-/etc/mailraven/admin.token}
url=${2:-http://127.0.0.1:8025}

die() { echo "mailraven backup failed: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is not installed"
[ -r "$token_file" ] || die "cannot read the admin token file $token_file"
token=$(tr -d '[:space:]' < "$token_file")
[ -n "$token" ] || die "the admin token file $token_file is empty"

body=$(mktemp)
trap 'rm -f "$body"' EXIT
# The token goes through a header file descriptor, never the command line (ps would show it).
status=$(curl -sS -o "$body" -w '%{http_code}' -X POST --max-time 3600 \
  -H @<(printf 'Authorization: Bearer %s\n' "$token") "$url/admin/backup") \
  || die "cannot reach the admin API at $url (is mailraven running?)"
case "$status" in
  200) cat "$body"; echo ;;
  409) die "another backup is running (HTTP 409)" ;;
  401) die "the admin API refused the token in $token_file (HTTP 401)" ;;
  *)   die "HTTP $status: $(cat "$body")" ;;
esac
