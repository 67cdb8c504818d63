#!/usr/bin/env bash
# Benchmark kube-scheduler in the shape of upstream's scheduler_perf
# SchedulingBasic: NODES nodes (5,000), PODS pending pods (10,000), scheduled
# end to end through a real apiserver and etcd; prints pods/s from the first
# bind to the last, as upstream's SchedulingThroughput measures while
# scheduling (upstream's floor for this workload is 680 pods/s; target
# >= 2,000), and the rate from the scheduler's start, cache sync included. The ceiling is the same
# number of binds sent straight to pods/binding with no scheduling, in the
# same run; the ratio says how close scheduling gets to it.
#   NODES (5000) PODS (10000)
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"
source "$(dirname "$0")/../lib/pki.sh"
source "$(dirname "$0")/../lib/bench.sh"

NODES=${NODES:-5000}
PODS=${PODS:-10000}

ironkube::ensure_packages
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin kube-scheduler --bin ironkube-bench)
BIN=$TARGET/release

ironkube::bench_control_plane "$BIN"
SCHED_PORT=$(ironkube::free_port)
KUBECTL=$(ironkube::kubectl)

log "creating $NODES nodes and $PODS pending pods"
"$BIN/ironkube-bench" api-nodes --kubeconfig "$KC" --count "$NODES" >/dev/null
"$BIN/ironkube-bench" api-create --kubeconfig "$KC" --resource pods --count "$PODS" >/dev/null

log "scheduling them"
ETCD_PID=${pids[0]}
w0=$(ironkube::bench_writes "$KUBECTL")
c0="$(ironkube::cpu_seconds "$API_PID") $(ironkube::cpu_seconds "$ETCD_PID") 0"
start=$(date +%s.%N)
"$BIN/kube-scheduler" --kubeconfig="$KC" --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" -v=0 >"$WORK/scheduler.log" 2>&1 &
SCHED_PID=$!
pids+=($SCHED_PID)
waited=$("$BIN/ironkube-bench" wait-bound --kubeconfig "$KC" --count "$PODS")
w1=$(ironkube::bench_writes "$KUBECTL")
c1="$(ironkube::cpu_seconds "$API_PID") $(ironkube::cpu_seconds "$ETCD_PID") $(ironkube::cpu_seconds "$SCHED_PID")"
sched_secs=$(python3 -c "import time; print(time.time() - $start)")
sched_rate=$(python3 -c "print($PODS / $sched_secs)")
steady_rate=$(field steady_per_second <<<"$waited")

log "ceiling: $PODS raw binds in another namespace"
"$KUBECTL" --kubeconfig="$KC" create namespace ceiling >/dev/null
"$BIN/ironkube-bench" api-create --kubeconfig "$KC" --resource pods --namespace ceiling --scheduler-name none --count "$PODS" >/dev/null
# keep the scheduler out of it: these pods name a scheduler that does not run
bind_rate=$("$BIN/ironkube-bench" api-bind --kubeconfig "$KC" --namespace ceiling --count "$PODS" --nodes "$NODES" | field per_second)

printf '\n%-62s %12s %s\n' "measure" "value" "target"
printf '%-62s %12.0f %s\n' "pods/s scheduled, $NODES nodes, $PODS pods (first to last bind)" "$steady_rate" ">= 2000 (upstream floor 680)"
printf '%-62s %12.0f %s\n' "pods/s from scheduler start (incl. cache sync)" "$sched_rate" "-"
printf '%-62s %12.0f %s\n' "raw pods/binding throughput (ceiling)" "$bind_rate" "-"
printf '%-62s %12.2f %s\n' "scheduled / ceiling" "$(python3 -c "print($sched_rate / $bind_rate)")" "-"

# where the time went while scheduling (from the scheduler's start to the last bind)
printf '\nscheduling run:\n'
ironkube::print_writes "$w0" "$w1"
ironkube::print_cpu "CPU seconds: apiserver, etcd, scheduler" "$c0" "$c1"
