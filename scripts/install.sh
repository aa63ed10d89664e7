#!/usr/bin/env bash
# Installs mailraven as a systemd service, or removes it again.
#
#   sudo scripts/install.sh                 install or upgrade on this machine
#   sudo scripts/install.sh --uninstall     remove the binary, unit and AppArmor profile;
#                                           configuration and queue are kept
#   scripts/install.sh --root DIR [--uninstall]
#                                           the same file operations under DIR only (also:
#                                           DESTDIR=DIR): no user, no chown, no systemctl,
#                                           no apparmor_parser; for packaging and tests
#
# Installs: /usr/local/bin/mailraven (built first with npm if build/mailraven is missing),
# /etc/systemd/system/mailraven.service, /etc/apparmor.d/usr.local.bin.mailraven (loaded
# when AppArmor is enabled), /usr/local/share/mailraven/{backup,restore}.sh, and, only when
# they do not exist yet, /etc/mailraven/mailraven.yaml (the example) and
# /etc/mailraven/admin.token (a new random token), both 0640 root:mailraven. Creates the
# system user and group "mailraven". Running it again changes nothing but the installed
# program files, so it is also the upgrade.
set -euo pipefail

# Directories made here are 0755 and files get explicit modes, whatever root's umask is.
umask 022

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }

root=${DESTDIR:-}
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# Staged: everything under $root, nothing that touches the running system.
staged=0
if [ -n "$root" ]; then
  root=$(realpath -m -- "$root")
  if [ "$root" = / ]; then root=""; else staged=1; fi
fi
if [ "$staged" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run it as root (sudo $0), or with --root DIR to install into a directory"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
user=mailraven
bin=$root/usr/local/bin/mailraven
unit=$root/etc/systemd/system/mailraven.service
profile=$root/etc/apparmor.d/usr.local.bin.mailraven
share=$root/usr/local/share/mailraven
confdir=$root/etc/mailraven
config=$confdir/mailraven.yaml
token=$confdir/admin.token
statedir=$root/var/lib/mailraven

systemd_running() { [ "$staged" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
apparmor_enabled() {
  [ "$staged" = 0 ] && command -v apparmor_parser >/dev/null &&
    [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ]
}

# Copies $1 to $2 with mode $3 through a temporary file in the same directory and a rename:
# a running relay keeps its old binary open and nothing ever sees a half-written file.
put() {
  local src=$1 dst=$2 mode=$3 tmp
  if [ -f "$dst" ] && cmp -s -- "$src" "$dst"; then
    chmod "$mode" -- "$dst"
    echo "  $dst (unchanged)"
    return
  fi
  mkdir -p -- "$(dirname -- "$dst")"
  tmp=$(mktemp -- "$dst.XXXXXX")
  if ! { cp -- "$src" "$tmp" && chmod "$mode" -- "$tmp" && mv -f -- "$tmp" "$dst"; }; then
    rm -f -- "$tmp"
    die "could not install $dst"
  fi
  echo "  $dst"
}

# Files the relay reads but that belong to root: root:mailraven, group-readable.
share_with_relay() {
  [ "$staged" = 1 ] || chown "root:$user" -- "$@"
}

if [ "$uninstall" = 1 ]; then
  if systemd_running && systemctl cat mailraven.service >/dev/null 2>&1; then
    echo "stopping and disabling mailraven.service"
    systemctl disable --now mailraven.service || true
  fi
  if apparmor_enabled && [ -f "$profile" ]; then
    echo "unloading the AppArmor profile"
    apparmor_parser -R -- "$profile" 2>/dev/null || true
  fi
  echo "removing:"
  for f in "$bin" "$unit" "$profile" "$share/backup.sh" "$share/restore.sh"; do
    if [ -e "$f" ]; then rm -f -- "$f"; echo "  $f"; fi
  done
  rmdir -- "$share" 2>/dev/null || true
  systemd_running && systemctl daemon-reload
  cat <<EOF
kept (your configuration, queue and backups):
  $confdir/
  $statedir/
To remove those as well:  rm -rf $confdir $statedir && deluser $user
EOF
  exit 0
fi

# --- install or upgrade ---------------------------------------------------------------

if [ ! -x "$repo/build/mailraven" ]; then
  echo "build/mailraven is missing: building it"
  command -v npm >/dev/null || die "npm is needed to build mailraven (Debian: apt-get install nodejs npm)"
  (
    cd "$repo"
    [ -x node_modules/.bin/bun ] || npm ci --no-audit --no-fund
    npm run --silent build
  )
fi
version=$("$repo/build/mailraven" version) || die "$repo/build/mailraven does not run on this machine"

if [ "$staged" = 0 ] && ! getent passwd "$user" >/dev/null; then
  echo "creating the system user $user"
  if command -v adduser >/dev/null; then
    if getent group "$user" >/dev/null; then group_opt=(--ingroup "$user"); else group_opt=(--group); fi
    adduser --quiet --system "${group_opt[@]}" --no-create-home --home /var/lib/mailraven \
      --shell /usr/sbin/nologin "$user"
  else
    if getent group "$user" >/dev/null; then group_opt=(--gid "$user"); else group_opt=(--user-group); fi
    useradd --system "${group_opt[@]}" --no-create-home --home-dir /var/lib/mailraven \
      --shell /usr/sbin/nologin "$user"
  fi
fi

echo "installing $version:"
put "$repo/build/mailraven" "$bin" 0755
put "$repo/systemd/mailraven.service" "$unit" 0644
put "$repo/apparmor/usr.local.bin.mailraven" "$profile" 0644
put "$repo/scripts/backup.sh" "$share/backup.sh" 0755
put "$repo/scripts/restore.sh" "$share/restore.sh" 0755

# /etc/mailraven: root-owned, readable by the relay's group only.
mkdir -p -- "$confdir"
chmod 0750 -- "$confdir"
share_with_relay "$confdir"
if [ -e "$config" ]; then
  echo "  $config exists: kept as it is (the current example: $repo/build/mailraven.example.yaml)"
else
  put "$repo/build/mailraven.example.yaml" "$config" 0640
  share_with_relay "$config"
fi
if [ -e "$token" ]; then
  echo "  $token exists: kept"
else
  # 32 random bytes as 64 hex characters, written 0600 before anyone can read it.
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$token" && echo >> "$token")
  chmod 0640 -- "$token"
  share_with_relay "$token"
  echo "  $token (new admin API token)"
fi

# /var/lib/mailraven: systemd creates it too (StateDirectory=); made here with its owner
# and mode so that nothing run before the first start can create it root-owned.
mkdir -p -- "$statedir"
chmod 0700 -- "$statedir"
[ "$staged" = 1 ] || chown "$user:$user" -- "$statedir"

if [ "$staged" = 1 ]; then
  echo "staged under $root: no user created, no ownership set, systemd and AppArmor not touched"
  exit 0
fi

if apparmor_enabled; then
  echo "loading the AppArmor profile"
  apparmor_parser -r -- "$profile"
elif command -v aa-enabled >/dev/null || [ -d /sys/module/apparmor ]; then
  echo "AppArmor is not enabled (or apparmor_parser is missing): profile installed, not loaded"
fi

restart_hint=""
if systemd_running; then
  systemctl daemon-reload
  if systemctl is-active --quiet mailraven.service; then
    restart_hint="mailraven is running the previous version: systemctl restart mailraven"
  fi
fi

cat <<EOF

mailraven is installed. Next:
  1. Edit /etc/mailraven/mailraven.yaml (hostname, relay.domains, relay_networks, TLS), then
       mailraven check-config --config /etc/mailraven/mailraven.yaml
  2. Start it now and at every boot:
       systemctl enable --now mailraven
       journalctl -u mailraven -f
  Reload after editing the configuration: systemctl reload mailraven
  Admin API token: /etc/mailraven/admin.token. Nightly backup, as the relay's user:
       0 2 * * *  mailraven  /usr/local/share/mailraven/backup.sh
EOF
[ -z "$restart_hint" ] || echo "  $restart_hint"
