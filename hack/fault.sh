#!/usr/bin/env bash
# Fault injection for the local cluster (hack/local-up-cluster.sh), for tests
# and for people:
#
#   hack/fault.sh stop|start|restart|kill COMPONENT
#       COMPONENT: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#       or node-N/kubelet, node-N/kube-proxy. stop is SIGTERM (then SIGKILL
#       after 10 s), kill is SIGKILL; start runs it again with the same flags.
#       With --ha each replica by its name: etcd-1..3, kube-apiserver-1..3,
#       kube-controller-manager-1..2, kube-scheduler-1..2, haproxy.
#   hack/fault.sh kill-node N     SIGKILL the node's kubelet and kube-proxy and
#                                 every container, and delete its network
#                                 namespace: the machine is gone
#   hack/fault.sh start-node N    bring node N back as a fresh machine
#   hack/fault.sh partition N     cut node N (and its pods) off the control
#                                 plane: nftables in the node drop everything
#                                 to and from the machine's harness address
#   hack/fault.sh heal N          undo partition
#   hack/fault.sh partition kube-apiserver-N|etcd-N   (--ha; also partition-cp)
#                                 cut one control-plane replica off, with
#                                 nftables on the machine (table inet
#                                 ironkube-fault-cp): an apiserver's bridge
#                                 address drops everything in and out (haproxy
#                                 takes it out; it keeps its etcd); an etcd
#                                 member's ports and every packet it sends drop
#   hack/fault.sh heal kube-apiserver-N|etcd-N        undo it (also heal-cp)
#   hack/fault.sh status          what runs (--ha: leaders, haproxy's view)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/pki.sh"
source "$(dirname "$0")/lib/nodes.sh"
source "$(dirname "$0")/lib/ha.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
(($# >= 1)) || { usage; exit 2; }
cmd=$1
shift

# an --ha cluster runs from OUT_DIR (local-up-cluster.sh records it in cluster.env)
is_ha() { [[ -f $OUT_DIR/cluster.env ]] && grep -q '^declare -[a-z-]* HA="1"' "$OUT_DIR/cluster.env"; }

# the pid file of a component
pidfile() {
  case $1 in
    etcd | kube-apiserver | kube-controller-manager | kube-scheduler)
      is_ha && die "the local cluster is an --ha one: name a replica ($(ironkube::ha_names | grep -- "^$1-" | paste -sd' '))"
      echo "$OUT_DIR/$1.pid"
      ;;
    etcd-[0-9]* | kube-apiserver-[0-9]* | kube-controller-manager-[0-9]* | kube-scheduler-[0-9]* | haproxy)
      [[ -f $OUT_DIR/$1.cmd ]] || die "$1 is not part of the local cluster (replicas exist with hack/local-up-cluster.sh --ha)"
      echo "$OUT_DIR/$1.pid"
      ;;
    node-[0-9]*/kubelet | node-[0-9]*/kube-proxy)
      local n=${1%%/*}
      echo "$(ironkube::node_dir "${n#node-}")/${1#*/}.pid"
      ;;
    *) die "unknown component $1 (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, node-N/kubelet, node-N/kube-proxy; with --ha etcd-N, kube-apiserver-N, kube-controller-manager-N, kube-scheduler-N, haproxy)" ;;
  esac
}

node_arg() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "$cmd wants a node number"
  [[ -d $(ironkube::node_dir "$1") ]] || die "node-$1 is not part of the local cluster"
}

cluster_env() {
  [[ -f $OUT_DIR/cluster.env ]] || die "no local cluster with nodes (run hack/local-up-cluster.sh)"
  # declare -p's lines, made global: sourced in a function they would be its locals
  eval "$(sed 's/^declare /declare -g /' "$OUT_DIR/cluster.env")"
}

# cp_partitioned NAME: a control-plane replica is cut off (hack/fault.sh partition NAME)
cp_partitioned() { nft list chain inet "$HA_FAULT_TABLE" "$1-in" >/dev/null 2>&1; }

# cp_partition NAME: cut an apiserver (its bridge address) or an etcd member
# (its ports, and every packet its process sends: its group id) off
cp_partition() {
  local name=$1 i rules=() chain
  [[ -f $OUT_DIR/$name.cmd ]] || die "$name is not part of the local cluster"
  i=${name##*-}
  case $name in
    kube-apiserver-[0-9]*)
      local ip
      ip=$(ironkube::apiserver_ip "$i")
      rules=("ip saddr $ip drop" "ip daddr $ip drop")
      ;;
    etcd-[0-9]*)
      local ports="{ $(ironkube::etcd_client_port "$i"), $(ironkube::etcd_peer_port "$i") }"
      rules=("tcp dport $ports drop" "tcp sport $ports drop" "meta skgid $(ironkube::etcd_gid "$i") drop")
      ;;
    *) die "partition: a node number, kube-apiserver-N or etcd-N (not $name)" ;;
  esac
  {
    echo "table inet $HA_FAULT_TABLE {}"
    for chain in in out; do
      local hook=input
      [[ $chain == out ]] && hook=output
      echo "add chain inet $HA_FAULT_TABLE $name-$chain { type filter hook $hook priority -300; }"
      echo "flush chain inet $HA_FAULT_TABLE $name-$chain"
      for r in "${rules[@]}"; do
        # the group id only means something for what the machine sends
        [[ $chain == in && $r == meta* ]] && continue
        echo "add rule inet $HA_FAULT_TABLE $name-$chain $r"
      done
    done
  } | nft -f -
}

cp_heal() {
  local name=$1 chain
  for chain in in out; do
    nft delete chain inet "$HA_FAULT_TABLE" "$name-$chain" 2>/dev/null || true
  done
  if ! nft list table inet "$HA_FAULT_TABLE" 2>/dev/null | grep -q 'chain '; then
    nft delete table inet "$HA_FAULT_TABLE" 2>/dev/null || true
  fi
}

# status of an --ha control plane: each replica, the leaders, haproxy's view
status_ha() {
  cluster_env
  local etcd_leader="" n state notes c holder pid i
  local -A lb=() leader=()
  # "https://127.0.0.1:22379, id, version, size, IS LEADER, ..."
  etcd_leader=$(ironkube::etcdctl "$PKI" endpoint status 2>/dev/null | awk -F', ' '$5 == "true" { print $1 }' || true)
  for ((i = 1; i <= HA_ETCD_MEMBERS; i++)); do
    [[ $etcd_leader == *":$(ironkube::etcd_client_port "$i")" ]] && leader[etcd-$i]=1
  done
  while read -r n state; do [[ -n $n ]] && lb[$n]=$state; done < <(ironkube::haproxy_servers)
  for c in kube-controller-manager kube-scheduler; do
    # holderIdentity is host_pid: the replica whose pid file holds pid
    holder=$("$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" --request-timeout=3s -n kube-system get lease "$c" \
      -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
    pid=${holder##*_}
    for ((i = 1; i <= HA_REPLICAS; i++)); do
      [[ -n $pid && -f $OUT_DIR/$c-$i.pid && $(cat "$OUT_DIR/$c-$i.pid") == "$pid" ]] && leader[$c-$i]=1
    done
  done
  for n in $(ironkube::ha_names); do
    ironkube::alive "$OUT_DIR/$n.pid" && state=running || state=stopped
    notes=""
    [[ -n ${leader[$n]:-} && $state == running ]] && notes+=" leader"
    cp_partitioned "$n" && notes+=" partitioned"
    [[ -n ${lb[$n]:-} ]] && notes+=" (haproxy: ${lb[$n]})"
    printf '%-28s %s%s\n' "$n" "$state" "$notes"
  done
}

stop() {
  local f
  f=$(pidfile "$1")
  ironkube::alive "$f" || { log "$1 is not running"; return 0; }
  local pid
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for ((t = 0; t < 50; t++)); do ironkube::pid_alive "$pid" || break; sleep 0.2; done
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
  partition | partition-cp)
    if [[ ${1:-} != "" && ! ${1:-} =~ ^[0-9]+$ ]]; then
      cp_partition "$1"
      log "$1 is cut off (hack/fault.sh heal $1)"
      exit 0
    fi
    [[ $cmd == partition-cp ]] && die "partition-cp wants kube-apiserver-N or etcd-N"
    node_arg "${1:-}"
    ns=$(ironkube::node_netns "$1")
    [[ -e /var/run/netns/$ns ]] || die "node-$1 has no network namespace"
    # the machine's address; with --ha the apiservers' own too (the kubernetes Service's endpoints)
    cp=$HARNESS_NET.1
    if is_ha; then
      cp="{ $HARNESS_NET.1$(for ((i = 1; i <= HA_APISERVERS; i++)); do printf ', %s' "$(ironkube::apiserver_ip "$i")"; done) }"
    fi
    ip netns exec "$ns" nft -f - <<NFT
table inet ironkube-fault
delete table inet ironkube-fault
table inet ironkube-fault {
  chain input { type filter hook input priority -300; ip saddr $cp drop; }
  chain output { type filter hook output priority -300; ip daddr $cp drop; }
  chain forward { type filter hook forward priority -300; ip daddr $cp drop; ip saddr $cp drop; }
}
NFT
    log "node-$1 is cut off from the control plane (hack/fault.sh heal $1)"
    ;;
  heal | heal-cp)
    if [[ ${1:-} != "" && ! ${1:-} =~ ^[0-9]+$ ]]; then
      cp_heal "$1"
      log "$1 is reachable again"
      exit 0
    fi
    [[ $cmd == heal-cp ]] && die "heal-cp wants kube-apiserver-N or etcd-N"
    node_arg "${1:-}"
    ns=$(ironkube::node_netns "$1")
    ip netns exec "$ns" nft delete table inet ironkube-fault 2>/dev/null || true
    log "node-$1 reaches the control plane again"
    ;;
  status)
    if is_ha; then
      status_ha
    else
      for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
        ironkube::alive "$(pidfile $c)" && s=running || s=stopped
        printf '%-28s %s\n' "$c" "$s"
      done
    fi
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
