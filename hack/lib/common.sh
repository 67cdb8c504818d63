# Shared helpers for the hack/ scripts. Source it; it defines functions only.

IRONKUBE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT_DIR=${OUT_DIR:-$IRONKUBE_ROOT/_output/local}

log() { printf '\033[1m[ironkube]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[ironkube] error:\033[0m %s\n' "$*" >&2; exit 1; }

# A persistent target directory outside the clone, so the cold build happens once per machine.
ironkube::target_dir() {
  if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    echo "$CARGO_TARGET_DIR"
  elif [[ -w /var/cache ]]; then
    echo /var/cache/ironkube/target
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/ironkube/target"
  fi
}

# Install the Debian packages the project needs, only those missing.
ironkube::ensure_packages() {
  local want=(etcd-server etcd-client protobuf-compiler openssl curl ca-certificates nftables iproute2 conntrack socat
    libseccomp-dev containernetworking-plugins iptables util-linux busybox-static docker-registry skopeo umoci haproxy)
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}: run as root or install them with apt-get"
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a system etcd on 2379 when the package is installed; ours use their own ports
    # Debian enables and starts haproxy.service with its empty default config
    # (no listeners); --ha runs a haproxy of its own, so the package's gives way
    if [[ " ${missing[*]} " == *" haproxy "* ]] && [[ -d /run/systemd/system ]]; then
      systemctl disable --now haproxy.service >/dev/null 2>&1 || true
    fi
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup)"
}

# The real kubectl 1.33 when the machine carries versioned binaries beside the dispatcher.
ironkube::kubectl() {
  if [[ -n "${KUBECTL:-}" ]]; then echo "$KUBECTL"; return; fi
  local k
  k=$(readlink -f "$(command -v kubectl 2>/dev/null)" 2>/dev/null || true)
  if [[ -n "$k" && -x "$(dirname "$k")/kubectl.1.33" ]]; then
    echo "$(dirname "$k")/kubectl.1.33"
  elif [[ -n "$k" ]]; then
    echo "$k"
  else
    echo kubectl
  fi
}

# Wait until URL answers 200 (curl args after the URL), up to $2 seconds.
ironkube::wait_url() {
  local url=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}

# Stop the process in pid file $1: TERM, wait, then KILL.
ironkube::stop_pidfile() {
  local f=$1 pid i
  [[ -f "$f" ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do ironkube::pid_alive "$pid" || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# ironkube::launch PIDFILE LOG CMD...: start CMD in the background, its output
# appended to LOG, and remember how (PIDFILE without .pid, plus .cmd) so that
# hack/fault.sh can start it again exactly so.
ironkube::launch() {
  local pidfile=$1 logf=$2
  shift 2
  { printf '%s\n' "$logf"; printf '%q ' "$@"; printf '\n'; } >"${pidfile%.pid}.cmd"
  "$@" >>"$logf" 2>&1 &
  echo $! >"$pidfile"
}

# ironkube::relaunch PIDFILE: start again what ironkube::launch started there.
ironkube::relaunch() {
  local pidfile=$1 cmdfile logf cmd
  cmdfile=${pidfile%.pid}.cmd
  [[ -f $cmdfile ]] || die "nothing was launched as $pidfile"
  { read -r logf; read -r cmd; } <"$cmdfile"
  # exec: the pid file names the process itself, not a subshell around it
  (eval "exec $cmd") >>"$logf" 2>&1 &
  echo $! >"$pidfile"
}

# ironkube::stop_pidfiles [--signal SIG] PIDFILE...: stop them all at once
# (SIG, TERM by default, to every one, wait up to 10 s for all, then KILL),
# e.g. replicas that each take a few seconds to shut down gracefully.
ironkube::stop_pidfiles() {
  local sig=TERM f pids=() pid i alive
  if [[ ${1:-} == --signal ]]; then sig=$2; shift 2; fi
  for f in "$@"; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    kill -"$sig" "$pid" 2>/dev/null && pids+=("$pid")
  done
  for ((i = 0; i < 50; i++)); do
    alive=0
    for pid in "${pids[@]}"; do ironkube::pid_alive "$pid" && alive=1; done
    ((alive)) || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -f "$@"
}

# ironkube::pid_alive PID: the process runs (a zombie, dead but not yet
# reaped by its parent, does not: the harness's processes outlive the script
# that started them, and init may take a while to reap them).
ironkube::pid_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

# ironkube::alive PIDFILE: the process it names runs.
ironkube::alive() { [[ -f $1 ]] && ironkube::pid_alive "$(cat "$1")"; }
