#!/usr/bin/env bash
# Bring up a local ironkube cluster on this machine: installs what is missing,
# builds, makes a PKI, starts etcd and the control plane in the background,
# creates N worker nodes (network namespaces with their own kubelet and
# kube-proxy), starts a registry with a busybox image, waits until every node
# is Ready, and writes _output/local/admin.kubeconfig.
#
#   hack/local-up-cluster.sh [--nodes N]     (default 2; 0: control plane only)
#   hack/local-down-cluster.sh               stops everything it started
#
# Environment: API_PORT (6443), ETCD_PORT (12379), SCHEDULER_PORT (10259), ADVERTISE_ADDRESS (127.0.0.1),
# SERVICE_CLUSTER_IP_RANGE (10.0.0.0/24), CARGO_TARGET_DIR, OUT_DIR (_output/local),
# IRONKUBE_BIN (use the binaries there instead of building), CONTROLLER_MANAGER_FLAGS (added flags),
# AUTHORIZATION_MODE (Node,RBAC).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/pki.sh"
source "$(dirname "$0")/lib/nodes.sh"
source "$(dirname "$0")/lib/images.sh"

NODES=2
while (($#)); do
  case $1 in
    --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $NODES =~ ^[0-9]+$ ]] || die "--nodes wants a number, got $NODES"

API_PORT=${API_PORT:-6443}
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-$((ETCD_PORT + 1))}
ADVERTISE_ADDRESS=${ADVERTISE_ADDRESS:-127.0.0.1}
SERVICE_CLUSTER_IP_RANGE=${SERVICE_CLUSTER_IP_RANGE:-10.0.0.0/24}
SERVICE_IP=${SERVICE_CLUSTER_IP_RANGE%.*/*}.1
LOGS=$OUT_DIR/logs
PKI=$OUT_DIR/pki
KUBECONFIG_OUT=$OUT_DIR/admin.kubeconfig
mkdir -p "$LOGS" "$PKI"

running() { [[ -f "$OUT_DIR/$1.pid" ]] && kill -0 "$(cat "$OUT_DIR/$1.pid")" 2>/dev/null; }

nodes_running() {
  local i
  for ((i = 1; i <= NODES; i++)); do
    [[ -f "$(ironkube::node_dir "$i")/kubelet.pid" ]] && kill -0 "$(cat "$(ironkube::node_dir "$i")/kubelet.pid")" 2>/dev/null || return 1
  done
}
if running etcd && running kube-apiserver && running kube-controller-manager && running kube-scheduler && nodes_running; then
  log "the local cluster is already running (hack/local-down-cluster.sh stops it)"
  log "export KUBECONFIG=$KUBECONFIG_OUT"
  exit 0
fi

# a failure half-way leaves nothing half-started
started=0
cleanup_on_error() {
  if ((started)) && [[ ${UP_OK:-0} != 1 ]]; then
    log "start-up failed; stopping what was started (logs in $LOGS)"
    "$IRONKUBE_ROOT/hack/local-down-cluster.sh" --keep-logs >/dev/null 2>&1 || true
  fi
}
trap cleanup_on_error EXIT

log "checking dependencies"
ironkube::ensure_packages

if [[ -n ${IRONKUBE_BIN:-} ]]; then
  BIN=$IRONKUBE_BIN
  log "using the binaries in $BIN"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing"
  done
else
  TARGET=$(ironkube::target_dir)
  log "building release binaries (target dir $TARGET)"
  (cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin kube-apiserver --bin kube-controller-manager --bin kube-scheduler --bin kubelet --bin kube-proxy)
  BIN=$TARGET/release
fi

log "making the PKI in $PKI"
ironkube::pki "$PKI" "$ADVERTISE_ADDRESS" "$SERVICE_IP" "$HARNESS_NET.1"
if [[ ! -f "$PKI/tokens.csv" ]]; then
  (umask 077; echo "$(openssl rand -hex 16),admin-token,admin-token,\"system:masters\"" > "$PKI/tokens.csv")
fi

started=1
running etcd || {
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  rm -rf "$OUT_DIR/etcd"
  ironkube::launch "$OUT_DIR/etcd.pid" "$LOGS/etcd.log" \
    etcd --name=local --data-dir="$OUT_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT"
  ironkube::wait_url "http://127.0.0.1:$ETCD_PORT/health" 30 || die "etcd did not become healthy (see $LOGS/etcd.log)"
}

log "starting kube-apiserver on https://$ADVERTISE_ADDRESS:$API_PORT"
ironkube::launch "$OUT_DIR/kube-apiserver.pid" "$LOGS/kube-apiserver.log" "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --secure-port="$API_PORT" \
  --advertise-address="$ADVERTISE_ADDRESS" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --token-auth-file="$PKI/tokens.csv" \
  --service-cluster-ip-range="$SERVICE_CLUSTER_IP_RANGE" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --authorization-mode="${AUTHORIZATION_MODE:-Node,RBAC}" \
  --encryption-provider-config="$PKI/encryption.yaml"
ironkube::wait_url "https://127.0.0.1:$API_PORT/readyz" 60 --cacert "$PKI/ca.crt" ||
  die "kube-apiserver did not become ready (see $LOGS/kube-apiserver.log)"

KUBECTL=$(ironkube::kubectl)
log "writing $KUBECONFIG_OUT"
rm -f "$KUBECONFIG_OUT"
kc() { "$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" "$@" >/dev/null; }
kc config set-cluster local --server="https://$ADVERTISE_ADDRESS:$API_PORT" --certificate-authority="$PKI/ca.crt" --embed-certs=true
kc config set-credentials admin --client-certificate="$PKI/admin.crt" --client-key="$PKI/admin.key" --embed-certs=true
kc config set-context local --cluster=local --user=admin --namespace=default
kc config use-context local
chmod 600 "$KUBECONFIG_OUT"

# The controller-manager runs every controller as system:kube-controller-manager
# (no --use-service-account-credentials yet): it gets cluster-admin rather
# than the per-controller roles upstream gives each controller's account.
"$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" create clusterrolebinding ironkube:kube-controller-manager \
  --clusterrole=cluster-admin --user=system:kube-controller-manager --dry-run=client -o yaml |
  "$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" apply -f - >/dev/null
# kubelets ask the apiserver who may use their API: the apiserver's own
# client certificate may (logs, exec, port-forward), as kubeadm binds it
"$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" create clusterrolebinding ironkube:apiserver-kubelet-client \
  --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client --dry-run=client -o yaml |
  "$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" apply -f - >/dev/null
# every component with its own identity (system:kube-controller-manager,
# system:kube-scheduler, system:kube-proxy, system:node:NAME)
for c in controller-manager scheduler; do
  ironkube::kubeconfig "$OUT_DIR/$c.kubeconfig" "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" "$PKI/$c.crt" "$PKI/$c.key" "$KUBECTL"
done
log "starting kube-controller-manager"
ironkube::launch "$OUT_DIR/kube-controller-manager.pid" "$LOGS/kube-controller-manager.log" \
  "$BIN/kube-controller-manager" --kubeconfig="$OUT_DIR/controller-manager.kubeconfig" --bind-address=127.0.0.1 --secure-port="${CONTROLLER_MANAGER_PORT:-10257}" \
  --root-ca-file="$PKI/ca.crt" \
  ${CONTROLLER_MANAGER_FLAGS:-}
ironkube::wait_url "http://127.0.0.1:${CONTROLLER_MANAGER_PORT:-10257}/healthz" 30 || die "kube-controller-manager did not start (see $LOGS/kube-controller-manager.log)"

log "starting kube-scheduler"
ironkube::launch "$OUT_DIR/kube-scheduler.pid" "$LOGS/kube-scheduler.log" \
  "$BIN/kube-scheduler" --kubeconfig="$OUT_DIR/scheduler.kubeconfig" --bind-address=127.0.0.1 --secure-port="${SCHEDULER_PORT:-10259}"
ironkube::wait_url "http://127.0.0.1:${SCHEDULER_PORT:-10259}/healthz" 30 || die "kube-scheduler did not start (see $LOGS/kube-scheduler.log)"

if ((NODES > 0)); then
  log "making the harness network ($HARNESS_BRIDGE, $HARNESS_NET.0/24)"
  ironkube::harness_net_up
  REGISTRY_ADDR=$HARNESS_NET.1:5000
  if ! { [[ -f $OUT_DIR/registry/registry.pid ]] && ironkube::_registry_alive "$(cat "$OUT_DIR/registry/registry.pid")"; }; then
    log "starting a registry on $REGISTRY_ADDR and pushing the busybox image"
    ironkube::build_busybox_image "$OUT_DIR/images/busybox" >/dev/null
    ironkube::start_registry "$OUT_DIR/registry" "$REGISTRY_ADDR" >/dev/null
    ironkube::push_image "$OUT_DIR/images/busybox" "$REGISTRY_ADDR/busybox:latest" >/dev/null
  fi
  echo "BUSYBOX_IMAGE=$REGISTRY_ADDR/busybox:latest" >"$OUT_DIR/images.env"
  API_SERVER_NODE=https://$HARNESS_NET.1:$API_PORT
  ironkube::kubeconfig "$OUT_DIR/kube-proxy.kubeconfig" "$API_SERVER_NODE" "$PKI/ca.crt" "$PKI/kube-proxy.crt" "$PKI/kube-proxy.key" "$KUBECTL"
  # what hack/fault.sh needs to bring a node back
  {
    declare -p NODES BIN PKI KUBECTL API_SERVER_NODE REGISTRY_ADDR CLUSTER_CIDR HARNESS_NET HARNESS_BRIDGE KUBECONFIG_OUT
  } >"$OUT_DIR/cluster.env"
  for ((i = 1; i <= NODES; i++)); do
    log "starting node-$i ($(ironkube::node_ip "$i"), pods $(ironkube::node_cidr "$i"))"
    ironkube::node_down "$i"
    ironkube::node_net_up "$i" "$NODES"
    ironkube::node_start "$i"
  done
  log "waiting for $NODES node(s) to be Ready"
  for ((t = 0; t < 120; t++)); do
    ready=$("$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)
    ((ready >= NODES)) && break
    sleep 1
  done
  ((ready >= NODES)) || die "only $ready of $NODES nodes became Ready (see $OUT_DIR/nodes/*/logs/)"
fi
UP_OK=1
cat >&2 <<MSG

  The local cluster is up (control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
  $NODES worker node(s) with kubelet and kube-proxy; images: $OUT_DIR/images.env).
  Logs:        $LOGS/
  Use it:      export KUBECONFIG=$KUBECONFIG_OUT
               kubectl get namespaces
  Stop it:     hack/local-down-cluster.sh

MSG
