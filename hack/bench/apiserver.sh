#!/usr/bin/env bash
# Benchmark kube-apiserver against raw etcd, side by side in one run:
#   1. creates/s of a ~1 KiB ConfigMap through the apiserver vs raw etcd puts of
#      the same payload, both with 64 concurrent clients  (target ratio >= 0.8);
#      also vs raw etcd create-if-absent transactions, the operation a create
#      must be (409 AlreadyExists, safe with several apiservers)
#   2. LIST of 10,000 pods from the watch cache vs a raw etcd range read of the
#      same keys                                           (target: >= 3x faster)
#   3. the apiserver's resident memory holding 10,000 pods (target < 200 MiB)
# Everything runs on loopback; processes and files are removed on exit.
#   COUNT (10000) CONCURRENCY (64) PODS (10000)
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pki.sh"
source "$(dirname "$0")/../lib/bench.sh"

COUNT=${COUNT:-10000}
CONCURRENCY=${CONCURRENCY:-64}
PODS=${PODS:-10000}

ironkube::ensure_packages
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin ironkube-bench)
BIN=$TARGET/release

ironkube::bench_control_plane "$BIN"
sleep 1


log "creates: $COUNT x 1 KiB, $CONCURRENCY concurrent clients"
etcd_rate=$("$BIN/ironkube-bench" etcd-put --endpoint "$ETCD" --count "$COUNT" --concurrency "$CONCURRENCY" | field per_second)
txn_rate=$("$BIN/ironkube-bench" etcd-put --endpoint "$ETCD" --prefix /bench/txn/ --txn --count "$COUNT" --concurrency "$CONCURRENCY" | field per_second)
api_rate=$("$BIN/ironkube-bench" api-create --kubeconfig "$KC" --count "$COUNT" --concurrency "$CONCURRENCY" | field per_second)

log "LIST: creating $PODS pods"
"$BIN/ironkube-bench" api-create --kubeconfig "$KC" --resource pods --count "$PODS" --concurrency "$CONCURRENCY" >/dev/null
api_list=$("$BIN/ironkube-bench" api-list --kubeconfig "$KC" --resource pods --iterations 5 | field seconds_each)
etcd_list=$("$BIN/ironkube-bench" etcd-range --endpoint "$ETCD" --prefix /registry/pods/ --iterations 5 | field seconds_each)
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$API_PID/status")

printf '\n%-58s %12s %12s %8s %s\n' "measure" "ironkube" "baseline" "ratio" "target"
printf '%-58s %12.0f %12.0f %8s %s\n' "creates/s, 1 KiB ConfigMap, $CONCURRENCY clients (vs raw etcd put)" "$api_rate" "$etcd_rate" "$(ratio "$api_rate" "$etcd_rate")" ">= 0.8"
printf '%-58s %12.0f %12.0f %8s %s\n' "creates/s (vs raw etcd create-if-absent txn)" "$api_rate" "$txn_rate" "$(ratio "$api_rate" "$txn_rate")" "-"
printf '%-58s %12.4f %12.4f %8s %s\n' "LIST $PODS pods, seconds (vs raw etcd range; ratio = speedup)" "$api_list" "$etcd_list" "$(ratio "$etcd_list" "$api_list")" ">= 3"
printf '%-58s %12.1f %12s %8s %s\n' "apiserver RSS MiB holding $PODS pods" "$(python3 -c "print($rss_kib/1024)")" "-" "-" "< 200"
