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

COUNT=${COUNT:-10000}
CONCURRENCY=${CONCURRENCY:-64}
PODS=${PODS:-10000}

ironkube::ensure_packages
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin ironkube-bench)
BIN=$TARGET/release

WORK=$(mktemp -d /tmp/ironkube-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ETCD_PORT=$(free_port); PEER_PORT=$(free_port); API_PORT=$(free_port)
ETCD=http://127.0.0.1:$ETCD_PORT

etcd --name=bench --data-dir="$WORK/etcd" --listen-client-urls="$ETCD" --advertise-client-urls="$ETCD" \
  --listen-peer-urls="http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$PEER_PORT" \
  --initial-cluster="bench=http://127.0.0.1:$PEER_PORT" --quota-backend-bytes=8589934592 >"$WORK/etcd.log" 2>&1 &
pids+=($!)
ironkube::wait_url "$ETCD/health" 30 || die "etcd did not start"

ironkube::pki "$WORK/pki" 127.0.0.1 10.0.0.1
"$BIN/kube-apiserver" --etcd-servers="$ETCD" --secure-port="$API_PORT" --bind-address=127.0.0.1 \
  --tls-cert-file="$WORK/pki/apiserver.crt" --tls-private-key-file="$WORK/pki/apiserver.key" \
  --client-ca-file="$WORK/pki/ca.crt" -v=0 >"$WORK/apiserver.log" 2>&1 &
API_PID=$!
pids+=($API_PID)
ironkube::wait_url "https://127.0.0.1:$API_PORT/readyz" 60 --cacert "$WORK/pki/ca.crt" || die "apiserver did not start"
KC=$WORK/admin.kubeconfig
cat >"$KC" <<KCFG
apiVersion: v1
kind: Config
clusters: [{name: b, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: $(base64 -w0 "$WORK/pki/ca.crt")}}]
users: [{name: a, user: {client-certificate-data: $(base64 -w0 "$WORK/pki/admin.crt"), client-key-data: $(base64 -w0 "$WORK/pki/admin.key")}}]
contexts: [{name: b, context: {cluster: b, user: a}}]
current-context: b
KCFG
sleep 1

field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

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
