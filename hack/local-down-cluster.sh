#!/usr/bin/env bash
# Stop everything hack/local-up-cluster.sh started and remove its runtime state
# (etcd data). The PKI stays, so the next start reuses it. --keep-logs keeps logs.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

keep_logs=0
[[ ${1:-} == --keep-logs ]] && keep_logs=1

source "$(dirname "$0")/lib/nodes.sh"
source "$(dirname "$0")/lib/images.sh"

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

for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  if [[ -f "$OUT_DIR/$c.pid" ]]; then
    log "stopping $c"
    ironkube::stop_pidfile "$OUT_DIR/$c.pid"
  fi
done
rm -rf "$OUT_DIR/etcd"
((keep_logs)) || rm -rf "$OUT_DIR/logs"
rm -f "$OUT_DIR"/*.kubeconfig "$OUT_DIR/images.env"
log "the local cluster is down"
