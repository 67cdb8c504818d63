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

ETCD_PID=${pids[0]}
cpu() { echo "$(ironkube::cpu_seconds "$API_PID") $(ironkube::cpu_seconds "$ETCD_PID") ${1:+$(ironkube::cpu_seconds "$1")}"; }

log "raw: $PODS pod creates"
"$KUBECTL" --kubeconfig="$KC" create namespace raw >/dev/null
w0=$(ironkube::bench_writes "$KUBECTL"); c0=$(cpu)
raw=$("$BIN/ironkube-bench" api-create --kubeconfig "$KC" --resource pods --namespace raw --count "$PODS" | field seconds)
w1=$(ironkube::bench_writes "$KUBECTL"); c1=$(cpu)

log "starting kube-controller-manager"
"$BIN/kube-controller-manager" --kubeconfig="$KC" --leader-elect=false --bind-address=127.0.0.1 --secure-port="$KCM_PORT" -v=0 \
  --cert-dir="$WORK/kcm-certs" >"$WORK/kcm.log" 2>&1 &
pids+=($!)
# HTTPS with the self-signed pair it writes to --cert-dir
ironkube::wait_url "https://127.0.0.1:$KCM_PORT/healthz" 30 --cacert "$WORK/kcm-certs/kube-controller-manager.crt" ||
  die "kube-controller-manager did not start"
KCM_PID=${pids[-1]}
"$KUBECTL" --kubeconfig="$KC" create namespace deploy >/dev/null

log "$DEPLOYMENTS Deployments x $REPLICAS replicas"
w2=$(ironkube::bench_writes "$KUBECTL"); c2=$(cpu "$KCM_PID")
ours=$("$BIN/ironkube-bench" api-deployments --kubeconfig "$KC" --namespace deploy --deployments "$DEPLOYMENTS" --replicas "$REPLICAS" | field seconds)
w3=$(ironkube::bench_writes "$KUBECTL"); c3=$(cpu "$KCM_PID")
# events are written behind the work (one at a time, as upstream's sink):
# how long after the last pod the last of them landed
want_events=$((PODS + DEPLOYMENTS))
events_done=-1
for i in $(seq 1 300); do
  n=$("$KUBECTL" --kubeconfig="$KC" get events -n deploy --no-headers 2>/dev/null | wc -l)
  if [ "$n" -ge "$want_events" ]; then events_done=$(python3 -c "print(round($i * 0.1, 1))"); break; fi
  sleep 0.1
done

printf '\n%-58s %10s %s\n' "measure" "value" "target"
printf '%-58s %10.2f %s\n' "seconds: $DEPLOYMENTS Deployments x $REPLICAS, every pod created" "$ours" "-"
printf '%-58s %10.2f %s\n' "seconds: $PODS raw pod creates (64 clients)" "$raw" "-"
printf '%-58s %10.2f %s\n' "ratio" "$(python3 -c "print($ours / $raw)")" "<= 1.5"
printf '%-58s %10s %s\n' "seconds after that until all $want_events events exist" "~$events_done" "-"

# where the time went: the writes each run made, and the CPU each process used
printf '\nraw run:\n'
ironkube::print_writes "$w0" "$w1"
ironkube::print_cpu "CPU seconds: apiserver, etcd" "$c0" "$c1"
printf 'Deployments run (until every pod exists):\n'
ironkube::print_writes "$w2" "$w3"
ironkube::print_cpu "CPU seconds: apiserver, etcd, controller-manager" "$c2" "$c3"
