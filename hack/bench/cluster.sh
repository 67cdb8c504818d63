#!/usr/bin/env bash
# The whole cluster's footprint, on a throwaway 2-node local cluster (its own
# output directory; the local cluster must be down): time from
# local-up-cluster.sh's start to every node Ready with the binaries already
# built, then the resident memory of each component idle and with 100 pods
# running (targets: kube-apiserver + kube-controller-manager + kube-scheduler
# under 150 MiB together; kubelet + kube-proxy under 60 MiB per node). etcd is
# shown for reference. Needs root.
#   PODS (100)
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"

PODS=${PODS:-100}
[[ $(id -u) -eq 0 ]] || die "needs root (it runs cluster nodes)"
[[ -e /sys/class/net/ikbr0 ]] && die "a local cluster is running: hack/local-down-cluster.sh first"
ironkube::ensure_packages
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin kube-controller-manager \
  --bin kube-scheduler --bin kubelet --bin kube-proxy)
BIN=$TARGET/release
KUBECTL=$(ironkube::kubectl)

export OUT_DIR=$IRONKUBE_ROOT/_output/bench-cluster
trap 'bash "$IRONKUBE_ROOT/hack/local-down-cluster.sh" >/dev/null 2>&1 || true' EXIT
log "bringing up 2 nodes in $OUT_DIR"
start=$(date +%s.%N)
IRONKUBE_BIN=$BIN bash "$IRONKUBE_ROOT/hack/local-up-cluster.sh" --nodes 2
up=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
source "$OUT_DIR/images.env"
kc() { "$KUBECTL" --kubeconfig="$OUT_DIR/admin.kubeconfig" "$@"; }

rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$(cat "$1")/status" 2>/dev/null || echo 0; }
snapshot() {
  local f
  for f in etcd kube-apiserver kube-controller-manager kube-scheduler; do echo "$f $(rss "$OUT_DIR/$f.pid")"; done
  for f in 1 2; do
    echo "node-$f/kubelet $(rss "$OUT_DIR/nodes/node-$f/kubelet.pid")"
    echo "node-$f/kube-proxy $(rss "$OUT_DIR/nodes/node-$f/kube-proxy.pid")"
  done
}
sleep 10
idle=$(snapshot)

log "$PODS pods"
kc create deployment load --image="$BUSYBOX_IMAGE" --replicas="$PODS" -- sleep 100000 >/dev/null
for ((t = 0; t < 300; t++)); do
  ready=$(kc get deployment load -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)
  [[ ${ready:-0} -ge $PODS ]] && break
  sleep 1
done
[[ ${ready:-0} -ge $PODS ]] || die "only ${ready:-0} of $PODS pods ready after 300 s"
sleep 10
loaded=$(snapshot)

python3 - "$up" "$idle" "$loaded" "$PODS" <<'PY'
import sys
up, idle, loaded, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
parse = lambda t: {l.split()[0]: float(l.split()[1]) for l in t.strip().splitlines()}
i, l = parse(idle), parse(loaded)
print()
print(f"{'local-up-cluster.sh to 2 nodes Ready':<40} {float(up):8.1f} s")
print()
print(f"{'resident memory, MiB':<40} {'idle':>8} {n + ' pods':>9}")
for k in i:
    print(f"{k:<40} {i[k]:8.1f} {l[k]:9.1f}")
cp = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]
print(f"{'control plane (without etcd)':<40} {sum(i[k] for k in cp):8.1f} {sum(l[k] for k in cp):9.1f}   target < 150")
for node in ["node-1", "node-2"]:
    ks = [node + "/kubelet", node + "/kube-proxy"]
    print(f"{node + ' kubelet + kube-proxy':<40} {sum(i[k] for k in ks):8.1f} {sum(l[k] for k in ks):9.1f}   target < 60")
PY
