#!/usr/bin/env bash
# Fault injection for the local cluster (hack/local-up-cluster.sh), for tests
# and for people:
#
#   hack/fault.sh stop|start|restart|kill COMPONENT
#       COMPONENT: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#       or node-N/kubelet, node-N/kube-proxy. stop is SIGTERM (then SIGKILL
#       after 10 s), kill is SIGKILL; start runs it again with the same flags.
#   hack/fault.sh kill-node N     SIGKILL the node's kubelet and kube-proxy and
#                                 every container, and delete its network
#                                 namespace: the machine is gone
#   hack/fault.sh start-node N    bring node N back as a fresh machine
#   hack/fault.sh partition N     cut node N (and its pods) off the control
#                                 plane: nftables in the node drop everything
#                                 to and from the machine's harness address
#   hack/fault.sh heal N          undo partition
#   hack/fault.sh status          what runs
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/pki.sh"
source "$(dirname "$0")/lib/nodes.sh"

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
(($# >= 1)) || { usage; exit 2; }
cmd=$1
shift

# the pid file of a component
pidfile() {
  case $1 in
    etcd | kube-apiserver | kube-controller-manager | kube-scheduler) echo "$OUT_DIR/$1.pid" ;;
    node-[0-9]*/kubelet | node-[0-9]*/kube-proxy)
      local n=${1%%/*}
      echo "$(ironkube::node_dir "${n#node-}")/${1#*/}.pid"
      ;;
    *) die "unknown component $1 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, node-N/kubelet, node-N/kube-proxy)" ;;
  esac
}

node_arg() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "$cmd wants a node number"
  [[ -d $(ironkube::node_dir "$1") ]] || die "node-$1 is not part of the local cluster"
}

cluster_env() {
  [[ -f $OUT_DIR/cluster.env ]] || die "no local cluster with nodes (run hack/local-up-cluster.sh)"
  # shellcheck disable=SC1091
  source "$OUT_DIR/cluster.env"
}

stop() {
  local f
  f=$(pidfile "$1")
  ironkube::alive "$f" || { log "$1 is not running"; return 0; }
  local pid
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for ((t = 0; t < 50; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  log "stopped $1"
}

start() {
  local f
  f=$(pidfile "$1")
  if ironkube::alive "$f"; then
    log "$1 is already running"
    return 0
  fi
  ironkube::relaunch "$f"
  log "started $1 (pid $(cat "$f"))"
}

case $cmd in
  stop) stop "${1:?component}" ;;
  start) start "${1:?component}" ;;
  restart) stop "${1:?component}"; start "$1" ;;
  kill)
    f=$(pidfile "${1:?component}")
    if ironkube::alive "$f"; then
      kill -KILL "$(cat "$f")"
      log "killed $1"
    else
      log "$1 is not running"
    fi
    ;;
  kill-node)
    node_arg "${1:-}"
    dir=$(ironkube::node_dir "$1")
    for c in kubelet kube-proxy; do
      ironkube::alive "$dir/$c.pid" && kill -KILL "$(cat "$dir/$c.pid")" 2>/dev/null || true
    done
    ironkube::node_kill_containers "$1"
    if [[ -d $dir/root/pods ]]; then
      for uid in "$dir"/root/pods/*; do
        [[ -e $uid ]] && ip netns del "ik-$(basename "$uid")" 2>/dev/null || true
      done
    fi
    ip netns del "$(ironkube::node_netns "$1")" 2>/dev/null || true
    ip link del "ikn$1" 2>/dev/null || true
    log "node-$1 is gone (hack/fault.sh start-node $1 brings it back)"
    ;;
  start-node)
    node_arg "${1:-}"
    cluster_env
    ironkube::node_down "$1"
    ironkube::harness_net_up
    ironkube::node_net_up "$1" "$NODES"
    ironkube::node_start "$1"
    log "node-$1 started"
    ;;
  partition)
    node_arg "${1:-}"
    ns=$(ironkube::node_netns "$1")
    [[ -e /var/run/netns/$ns ]] || die "node-$1 has no network namespace"
    ip netns exec "$ns" nft -f - <<NFT
table inet ironkube-fault
delete table inet ironkube-fault
table inet ironkube-fault {
  chain input { type filter hook input priority -300; ip saddr $HARNESS_NET.1 drop; }
  chain output { type filter hook output priority -300; ip daddr $HARNESS_NET.1 drop; }
  chain forward { type filter hook forward priority -300; ip daddr $HARNESS_NET.1 drop; ip saddr $HARNESS_NET.1 drop; }
}
NFT
    log "node-$1 is cut off from the control plane (hack/fault.sh heal $1)"
    ;;
  heal)
    node_arg "${1:-}"
    ns=$(ironkube::node_netns "$1")
    ip netns exec "$ns" nft delete table inet ironkube-fault 2>/dev/null || true
    log "node-$1 reaches the control plane again"
    ;;
  status)
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
      ironkube::alive "$(pidfile $c)" && s=running || s=stopped
      printf '%-28s %s\n' "$c" "$s"
    done
    for d in "$OUT_DIR"/nodes/node-*; do
      [[ -d $d ]] || continue
      n=${d##*/}
      for c in kubelet kube-proxy; do
        ironkube::alive "$d/$c.pid" && s=running || s=stopped
        printf '%-28s %s\n' "$n/$c" "$s"
      done
      ns=ironkube-${n}
      if [[ ! -e /var/run/netns/$ns ]]; then
        printf '%-28s %s\n' "$n" "gone"
      elif ip netns exec "$ns" nft list table inet ironkube-fault >/dev/null 2>&1; then
        printf '%-28s %s\n' "$n" "partitioned"
      fi
    done
    ;;
  -h | --help | help) usage ;;
  *) usage; exit 2 ;;
esac
