#!/usr/bin/env bash
# Benchmark kube-controller-manager: the time for DEPLOYMENTS Deployments of
# REPLICAS replicas (100 x 10) to be fully created (every pod exists), through
# a real apiserver and etcd, against the time the same number of raw pod
# creates takes in the same run (target: within 1.5x of the raw create time).
#   DEPLOYMENTS (100) REPLICAS (10)
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pki.sh"
source "$(dirname "$0")/../lib/bench.sh"

DEPLOYMENTS=${DEPLOYMENTS:-100}
REPLICAS=${REPLICAS:-10}
PODS=$((DEPLOYMENTS * REPLICAS))

ironkube::ensure_packages
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin kube-controller-manager --bin ironkube-bench)
BIN=$TARGET/release

ironkube::bench_control_plane "$BIN"
KUBECTL=$(ironkube::kubectl)
KCM_PORT=$(ironkube::free_port)

log "raw: $PODS pod creates"
"$KUBECTL" --kubeconfig="$KC" create namespace raw >/dev/null
raw=$("$BIN/ironkube-bench" api-create --kubeconfig "$KC" --resource pods --namespace raw --count "$PODS" | field seconds)

log "starting kube-controller-manager"
"$BIN/kube-controller-manager" --kubeconfig="$KC" --leader-elect=false --bind-address=127.0.0.1 --secure-port="$KCM_PORT" -v=0 \
  --cert-dir="$WORK/kcm-certs" >"$WORK/kcm.log" 2>&1 &
pids+=($!)
# HTTPS with the self-signed pair it writes to --cert-dir
ironkube::wait_url "https://127.0.0.1:$KCM_PORT/healthz" 30 --cacert "$WORK/kcm-certs/kube-controller-manager.crt" ||
  die "kube-controller-manager did not start"
"$KUBECTL" --kubeconfig="$KC" create namespace deploy >/dev/null

log "$DEPLOYMENTS Deployments x $REPLICAS replicas"
ours=$("$BIN/ironkube-bench" api-deployments --kubeconfig "$KC" --namespace deploy --deployments "$DEPLOYMENTS" --replicas "$REPLICAS" | field seconds)

printf '\n%-58s %10s %s\n' "measure" "value" "target"
printf '%-58s %10.2f %s\n' "seconds: $DEPLOYMENTS Deployments x $REPLICAS, every pod created" "$ours" "-"
printf '%-58s %10.2f %s\n' "seconds: $PODS raw pod creates (64 clients)" "$raw" "-"
printf '%-58s %10.2f %s\n' "ratio" "$(python3 -c "print($ours / $raw)")" "<= 1.5"
