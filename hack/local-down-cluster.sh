#!/usr/bin/env bash
# Stop everything hack/local-up-cluster.sh started and remove its runtime state
# (etcd data; with --ha also haproxy, the etcd members' data, the apiservers'
# bridge addresses with the bridge, and hack/fault.sh's control-plane
# partitions). The PKI stays, so the next start reuses it. --keep-logs keeps logs.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

keep_logs=0
[[ ${1:-} == --keep-logs ]] && keep_logs=1

source "$(dirname "$0")/lib/nodes.sh"
source "$(dirname "$0")/lib/images.sh"
source "$(dirname "$0")/lib/ha.sh"

for d in "$OUT_DIR"/nodes/node-*; do
  [[ -d $d ]] || continue
  i=${d##*-}
  log "removing node-$i"
  ironkube::node_down "$i"
done
ironkube::stop_registry "$OUT_DIR/registry" 2>/dev/null || true
ironkube::harness_net_down
for h in /sys/fs/cgroup/*/ironkube /sys/fs/cgroup/ironkube; do
  [[ -d $h ]] && rmdir "$h" 2>/dev/null || true
done

# hack/fault.sh partition of a control-plane replica (--ha)
nft delete table inet "$HA_FAULT_TABLE" 2>/dev/null || true

# --ha: the replicas of each component at once (apiservers wait
# --shutdown-delay-duration each), in reverse start order; etcd members are
# killed (their data goes next; stopped together, each waits seconds trying
# to hand its leadership over)
for c in kube-scheduler kube-controller-manager haproxy kube-apiserver etcd; do
  files=()
  for f in "$OUT_DIR/$c"-[0-9]*.pid; do
    [[ -f $f ]] && files+=("$f")
  done
  [[ $c == haproxy && -f $OUT_DIR/haproxy.pid ]] && files+=("$OUT_DIR/haproxy.pid")
  ((${#files[@]})) || continue
  log "stopping $(for f in "${files[@]}"; do basename "$f" .pid; done | paste -sd' ')"
  sig=TERM
  [[ $c == etcd ]] && sig=KILL
  ironkube::stop_pidfiles --signal "$sig" "${files[@]}"
done
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  if [[ -f "$OUT_DIR/$c.pid" ]]; then
    log "stopping $c"
    ironkube::stop_pidfile "$OUT_DIR/$c.pid"
  fi
done
rm -rf "$OUT_DIR/etcd"
for d in "$OUT_DIR"/etcd-[0-9]*; do [[ -d $d ]] && rm -rf "$d"; done
((keep_logs)) || rm -rf "$OUT_DIR/logs"
rm -f "$OUT_DIR"/*.kubeconfig "$OUT_DIR/images.env" "$OUT_DIR/etcdctl.env" "$OUT_DIR/haproxy.cfg" "$OUT_DIR/haproxy.sock" \
  "$OUT_DIR/cluster.env"
log "the local cluster is down"
