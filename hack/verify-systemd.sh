#!/usr/bin/env bash
# Checks the systemd units under hack/systemd/ without installing the binaries:
#
#  1. `systemd-analyze verify --root=TMP` on each unit, copied into a throw-away
#     root that holds the machine's own systemd units (for default dependencies
#     and targets) and a stub executable at each path the units may run
#     (/usr/local/bin/<component>, /usr/bin/etcd, /bin/sh). systemd-analyze
#     checks syntax, directive names and values, and that every Exec*= command
#     exists and is executable inside that root, so an ExecStart naming any
#     other path fails. It only warns about unknown keys and bad values, so any
#     line it prints is an error here.
#  2. House rules: an absolute ExecStart, Restart=always, RestartSec=,
#     LimitNOFILE= and EnvironmentFile=-/etc/default/<unit>.
#  3. Every --flag in ExecStart exists in the binary's --help, for each binary
#     found: /usr/bin/etcd, and ironkube's in $IRONKUBE_BIN (default: the
#     release directory of the build's target dir). Missing binaries are skipped.
#  4. The checker itself: a copy of a unit broken on purpose must be rejected.
#  5. The sample haproxy configuration (hack/systemd/haproxy/*.cfg, docs/ha.md)
#     passes `haproxy -c` (when haproxy is installed), its CA file swapped for
#     a throw-away one; a copy broken on purpose must not.
#
#   hack/verify-systemd.sh        runs every check; exits non-zero if any failed
#
# Needs systemd-analyze (the systemd package; installed when missing and root).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

UNITS_DIR=$IRONKUBE_ROOT/hack/systemd
# the paths the units may run; anything else fails the verify
EXECUTABLES=(/usr/local/bin/kube-apiserver /usr/local/bin/kube-controller-manager /usr/local/bin/kube-scheduler
  /usr/local/bin/kubelet /usr/local/bin/kube-proxy /usr/bin/etcd /bin/sh)

if ! command -v systemd-analyze >/dev/null; then
  [[ $(id -u) -eq 0 ]] || die "systemd-analyze not found: install the systemd package (apt-get install systemd)"
  log "installing systemd (for systemd-analyze)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
  command -v systemd-analyze >/dev/null || die "systemd-analyze still not found after installing systemd"
fi
SYSTEM_UNITS=
for d in /usr/lib/systemd/system /lib/systemd/system; do
  [[ -f $d/multi-user.target ]] && { SYSTEM_UNITS=$d; break; }
done
[[ -n $SYSTEM_UNITS ]] || die "no systemd unit directory with multi-user.target found"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/verify-systemd.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# A root with the machine's units and the stub executables.
make_root() {
  local root=$1 p
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -a "$SYSTEM_UNITS" "$root/usr/lib/systemd/system"
  for p in "${EXECUTABLES[@]}"; do
    mkdir -p "$root$(dirname "$p")"
    printf '#!/bin/sh\nexit 0\n' >"$root$p"
    chmod 755 "$root$p"
  done
}

# Verify unit file $1 inside root $2; prints what systemd-analyze says, fails on any of it.
analyze() {
  local unit=$1 root=$2 out rc=0 dest
  dest=$root/etc/systemd/system/$(basename "$unit")
  cp "$unit" "$dest"
  out=$(systemd-analyze verify --man=no --root="$root" "$dest" 2>&1) || rc=$?
  # alone in the root: a unit that another one Wants= is verified on its own
  rm -f "$dest"
  if ((rc != 0)) || [[ -n $out ]]; then
    printf '%s\n' "${out:-systemd-analyze verify exited $rc}" | sed "s#$root##g; s#^#    #" >&2
    return 1
  fi
}

# ExecStart= of a unit with its continuation lines joined, one word a line.
exec_start_words() {
  awk '
    /^ExecStart=/ { on = 1; sub(/^ExecStart=/, "") }
    on { line = $0; cont = sub(/\\[[:space:]]*$/, "", line); printf "%s ", line; if (!cont) on = 0 }
  ' "$1" | tr -s ' \t' '\n' | sed '/^$/d'
}

mapfile -t UNITS < <(find "$UNITS_DIR" -name '*.service' | sort)
((${#UNITS[@]})) || die "no units under $UNITS_DIR"
failed=0
make_root "$TMP/root"

log "systemd-analyze verify ($(systemd-analyze --version | sed -n 1p)) on ${#UNITS[@]} units"
for u in "${UNITS[@]}"; do
  rel=${u#"$IRONKUBE_ROOT"/}
  if analyze "$u" "$TMP/root"; then
    log "  ok    $rel"
  else
    log "  FAIL  $rel"
    failed=1
  fi
done

log "house rules"
for u in "${UNITS[@]}"; do
  rel=${u#"$IRONKUBE_ROOT"/}
  name=$(basename "$u" .service)
  problems=()
  first=$(exec_start_words "$u" | sed -n 1p)
  [[ $first == /* ]] || problems+=("ExecStart must name an absolute path (has '$first')")
  grep -qx 'Restart=always' "$u" || problems+=("no Restart=always")
  grep -q '^RestartSec=' "$u" || problems+=("no RestartSec=")
  grep -q '^LimitNOFILE=' "$u" || problems+=("no LimitNOFILE=")
  grep -qx "EnvironmentFile=-/etc/default/$name" "$u" || problems+=("no EnvironmentFile=-/etc/default/$name")
  if ((${#problems[@]})); then
    log "  FAIL  $rel: ${problems[*]}"
    failed=1
  else
    log "  ok    $rel"
  fi
done

log "flags against each binary's --help"
BIN_DIR=${IRONKUBE_BIN:-$(ironkube::target_dir)/release}
for u in "${UNITS[@]}"; do
  rel=${u#"$IRONKUBE_ROOT"/}
  exe=$(exec_start_words "$u" | sed -n 1p)
  case $exe in
    /usr/local/bin/*) bin=$BIN_DIR/$(basename "$exe") ;;
    *) bin=$exe ;;
  esac
  if [[ ! -x $bin ]]; then
    log "  skip  $rel ($bin not found)"
    continue
  fi
  help=$("$bin" --help 2>&1 || true)
  missing=()
  while read -r flag; do
    grep -qE -- "(^|[[:space:]])${flag}([=[:space:],']|$)" <<<"$help" || missing+=("$flag")
  done < <(exec_start_words "$u" | grep -oE '^--[a-z0-9-]+' | sort -u)
  if ((${#missing[@]})); then
    log "  FAIL  $rel: $bin does not know ${missing[*]} (built before the flag landed? rebuild, or set IRONKUBE_BIN)"
    failed=1
  else
    log "  ok    $rel"
  fi
done

log "the checker rejects broken units"
broken=$TMP/broken
mkdir -p "$broken"
sed 's/^Restart=always$/Restart=sometimes/' "$UNITS_DIR/worker/kube-proxy.service" >"$broken/kube-proxy.service"
sed 's#^ExecStart=/usr/local/bin/kubelet#ExecStart=/usr/local/bin/kubelett#' "$UNITS_DIR/worker/kubelet.service" >"$broken/kubelet.service"
for b in "$broken"/*.service; do
  if analyze "$b" "$TMP/root" 2>/dev/null; then
    log "  FAIL  a broken $(basename "$b") passed systemd-analyze verify: this check checks nothing"
    failed=1
  else
    log "  ok    a broken $(basename "$b") is rejected"
  fi
done

log "haproxy configuration"
if ! command -v haproxy >/dev/null; then
  log "  skip  haproxy is not installed"
else
  openssl req -x509 -new -nodes -newkey rsa:2048 -days 1 -subj /CN=verify-systemd \
    -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
  for cfg in "$UNITS_DIR"/haproxy/*.cfg; do
    [[ -f $cfg ]] || continue
    rel=${cfg#"$IRONKUBE_ROOT"/}
    sed "s#ca-file [^ ]*#ca-file $TMP/ca.crt#" "$cfg" >"$TMP/haproxy.cfg"
    if out=$(haproxy -c -f "$TMP/haproxy.cfg" 2>&1) && ! grep -q WARNING <<<"$out"; then
      log "  ok    $rel"
    else
      printf '%s\n' "$out" | sed 's/^/    /' >&2
      log "  FAIL  $rel"
      failed=1
    fi
    sed 's/^\( *\)timeout tunnel /\1timeout tunel /' "$TMP/haproxy.cfg" >"$TMP/broken.cfg"
    if haproxy -c -f "$TMP/broken.cfg" >/dev/null 2>&1; then
      log "  FAIL  a broken $(basename "$cfg") passed haproxy -c: this check checks nothing"
      failed=1
    else
      log "  ok    a broken $(basename "$cfg") is rejected"
    fi
  done
fi

((failed == 0)) || die "systemd units: errors above"
log "systemd units: all good"
