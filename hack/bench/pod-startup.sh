#!/usr/bin/env bash
# Pod startup on one node of a throwaway local cluster (its own output
# directory; the local cluster must be down): 30 pods bound to the node with
# the image present, each timed from its create request to the watch event
# that shows it Running, p50 and p99 (upstream's SLO: p99 <= 5 s; target
# p99 <= 1 s); the kubelet's resident memory with those pods running (target
# < 50 MiB); and the kubelet runtime's container start (shim + libcontainer)
# against `runc run` of the same bundle in the same run (target ratio <= 1.5).
# Needs root.
#   PODS (30), RUNS (20)
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"

PODS=${PODS:-30}
RUNS=${RUNS:-20}
[[ $(id -u) -eq 0 ]] || die "needs root (it runs a cluster node and containers)"
[[ -e /sys/class/net/ikbr0 ]] && die "a local cluster is running: hack/local-down-cluster.sh first"
ironkube::ensure_packages
command -v runc >/dev/null || { log "installing runc (the baseline)"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null; }
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin kube-controller-manager \
  --bin kube-scheduler --bin kubelet --bin kube-proxy --bin ironkube-bench)
BIN=$TARGET/release

export OUT_DIR=$IRONKUBE_ROOT/_output/bench-pod-startup
trap 'bash "$IRONKUBE_ROOT/hack/local-down-cluster.sh" >/dev/null 2>&1 || true' EXIT
log "a one-node cluster in $OUT_DIR"
IRONKUBE_BIN=$BIN bash "$IRONKUBE_ROOT/hack/local-up-cluster.sh" --nodes 1
source "$OUT_DIR/images.env"

log "$PODS pods on node-1"
line=$("$BIN/ironkube-bench" pod-startup --kubeconfig "$OUT_DIR/admin.kubeconfig" --image "$BUSYBOX_IMAGE" --node node-1 --count "$PODS")
kubelet_pid=$(cat "$OUT_DIR/nodes/node-1/kubelet.pid")
kubelet_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$kubelet_pid/status")
# the shims share the kubelet binary's pages: their proportional share (PSS)
shim_kib=0
for p in $(pgrep -f -- "--runtime-shim .*$OUT_DIR/" || true); do
  shim_kib=$((shim_kib + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
done

log "container start against runc ($RUNS runs each)"
cline=$("$BIN/ironkube-bench" container-start --kubelet "$BIN/kubelet" --runs "$RUNS")

python3 - "$line" "$cline" "$kubelet_kib" "$shim_kib" "$PODS" <<'PY'
import json, sys
p, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
kib, shims, n = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print()
print(f"{'pod startup, ' + n + ' pods on one node':<46} {'p50 s':>8} {'p99 s':>8} {'target p99':>11}")
print(f"{'create -> Running (watch)':<46} {p['p50']:8.3f} {p['p99']:8.3f} {'<= 1.0':>11}")
print()
print(f"{'kubelet resident memory':<46} {kib/1024:8.1f} MiB  (target < 50 MiB; the {int(n)+1} shims' PSS: {shims/1024:.1f} MiB)")
print()
print(f"{'container start to exit (true)':<46} {'ours s':>8} {'runc s':>8} {'ratio':>7} {'target':>7}")
print(f"{'p50 of ' + str(c['runs']) + ' runs':<46} {c['ours_p50']:8.4f} {c['runc_p50']:8.4f} {c['ratio']:7.2f} {'<= 1.5':>7}")
PY
