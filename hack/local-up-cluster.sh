#!/usr/bin/env bash
# Bring up a local ironkube cluster on this machine: installs what is missing,
# builds, makes a PKI, starts etcd and the control plane in the background,
# creates N worker nodes (network namespaces with their own kubelet and
# kube-proxy), starts a registry with a busybox image, waits until every node
# is Ready, and writes _output/local/admin.kubeconfig.
#
#   hack/local-up-cluster.sh [--nodes N] [--ha] [--bootstrap-tokens]
#                                                  (nodes: default 2; 0: control plane only)
#   hack/local-down-cluster.sh                     stops everything it started
#
# --bootstrap-tokens (or NODE_BOOTSTRAP=token): nodes join as upstream's TLS
# bootstrap has them: each kubelet gets only a bootstrap token
# (--bootstrap-kubeconfig), requests its client certificate with a
# CertificateSigningRequest, which the controller-manager approves
# (csrapproving) and signs with the cluster CA (csrsigning,
# --cluster-signing-cert-file); the apiserver runs --enable-bootstrap-token-auth.
#
# --ha: a highly available control plane (hack/lib/ha.sh, docs/ha.md): three etcd
# members (peer and client TLS), three kube-apiservers on HARNESS_NET.11-13 behind
# haproxy on 127.0.0.1:6443 and HARNESS_NET.1:6443, two controller-managers and two
# schedulers (leader-elected); node i is then HARNESS_NET.20+i.
#
# Environment: API_PORT (6443), ETCD_PORT (12379), SCHEDULER_PORT (10259), ADVERTISE_ADDRESS (127.0.0.1),
# SERVICE_CLUSTER_IP_RANGE (10.0.0.0/24), CARGO_TARGET_DIR, OUT_DIR (_output/local),
# IRONKUBE_BIN (use the binaries there instead of building), CONTROLLER_MANAGER_FLAGS (added flags),
# AUTHORIZATION_MODE (Node,RBAC), SHUTDOWN_DELAY_DURATION (--ha: the apiservers', 3s).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$(dirname "$0")/lib/pki.sh"
source "$(dirname "$0")/lib/nodes.sh"
source "$(dirname "$0")/lib/images.sh"
source "$(dirname "$0")/lib/ha.sh"

NODES=2
HA=0
while (($#)); do
  case $1 in
    --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    --ha) HA=1; shift ;;
    --bootstrap-tokens) NODE_BOOTSTRAP=token; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ $NODES =~ ^[0-9]+$ ]] || die "--nodes wants a number, got $NODES"
NODE_BOOTSTRAP=${NODE_BOOTSTRAP:-cert}
[[ $NODE_BOOTSTRAP == cert || $NODE_BOOTSTRAP == token ]] || die "NODE_BOOTSTRAP is cert or token, not $NODE_BOOTSTRAP"

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

running() { ironkube::alive "$OUT_DIR/$1.pid"; }

nodes_running() {
  local i
  for ((i = 1; i <= NODES; i++)); do
    [[ -f "$(ironkube::node_dir "$i")/kubelet.pid" ]] && kill -0 "$(cat "$(ironkube::node_dir "$i")/kubelet.pid")" 2>/dev/null || return 1
  done
}
if ((HA)); then
  HARNESS_NODE_BASE=20
  SHUTDOWN_DELAY_DURATION=${SHUTDOWN_DELAY_DURATION:-3s}
  if running etcd || running kube-apiserver; then
    die "a cluster without --ha runs from $OUT_DIR: stop it first (hack/local-down-cluster.sh)"
  fi
  all_running=1
  for n in $(ironkube::ha_names); do running "$n" || all_running=0; done
  if ((all_running)) && nodes_running; then
    log "the local HA cluster is already running (hack/local-down-cluster.sh stops it)"
    log "export KUBECONFIG=$KUBECONFIG_OUT"
    exit 0
  fi
else
  if running etcd-1 || running haproxy; then
    die "an --ha cluster runs from $OUT_DIR: stop it first (hack/local-down-cluster.sh), or add --ha"
  fi
  if running etcd && running kube-apiserver && running kube-controller-manager && running kube-scheduler && nodes_running; then
    log "the local cluster is already running (hack/local-down-cluster.sh stops it)"
    log "export KUBECONFIG=$KUBECONFIG_OUT"
    exit 0
  fi
fi

# a failure half-way leaves nothing half-started
started=0
cleanup_on_error() {
  if ((started)) && [[ ${UP_OK:-0} != 1 ]]; then
    log "start-up failed; stopping what was started (logs in $LOGS)"
    # what local-down kills is no job of this shell's to report
    disown -a 2>/dev/null || true
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
if ((HA)); then
  # the load balancer's addresses (127.0.0.1 is always in) and each apiserver's own
  ironkube::pki "$PKI" 127.0.0.1 "$SERVICE_IP" "$HARNESS_NET.1" \
    $(for ((i = 1; i <= HA_APISERVERS; i++)); do ironkube::apiserver_ip "$i"; done)
else
  ironkube::pki "$PKI" "$ADVERTISE_ADDRESS" "$SERVICE_IP" "$HARNESS_NET.1"
fi
# etcd serves TLS only and takes only client certificates of the cluster CA
ironkube::pki_etcd "$PKI"
if [[ ! -f "$PKI/tokens.csv" ]]; then
  (umask 077; echo "$(openssl rand -hex 16),admin-token,admin-token,\"system:masters\"" > "$PKI/tokens.csv")
fi

# the apiservers' flags but for etcd, the port and the addresses
APISERVER_FLAGS=(
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key"
  --client-ca-file="$PKI/ca.crt"
  --token-auth-file="$PKI/tokens.csv"
  --service-cluster-ip-range="$SERVICE_CLUSTER_IP_RANGE"
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
  --kubelet-certificate-authority="$PKI/ca.crt"
  --kubelet-preferred-address-types=InternalIP,Hostname
  --service-account-issuer=https://kubernetes.default.svc.cluster.local
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key"
  --authorization-mode="${AUTHORIZATION_MODE:-Node,RBAC}"
  --encryption-provider-config="$PKI/encryption.yaml"
)
# what TLS bootstrap adds: token authentication, and the cluster CA signing
# the kubelets' certificates
CONTROLLER_MANAGER_SIGNING=()
if [[ $NODE_BOOTSTRAP == token ]]; then
  APISERVER_FLAGS+=(--enable-bootstrap-token-auth)
  CONTROLLER_MANAGER_SIGNING=(--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key")
fi

started=1
if ((HA)); then
  log "making the harness network ($HARNESS_BRIDGE, $HARNESS_NET.0/24) with the apiservers' addresses"
  ironkube::harness_net_up
  ironkube::harness_cp_addrs_up

  # a new cluster when no member runs; a member that stopped rejoins with its data
  any=0
  for ((i = 1; i <= HA_ETCD_MEMBERS; i++)); do running "etcd-$i" && any=1; done
  if ((any == 0)); then
    for ((i = 1; i <= HA_ETCD_MEMBERS; i++)); do rm -rf "$OUT_DIR/etcd-$i"; done
  fi
  for ((i = 1; i <= HA_ETCD_MEMBERS; i++)); do
    running "etcd-$i" && continue
    log "starting etcd-$i on https://127.0.0.1:$(ironkube::etcd_client_port "$i") (peers on :$(ironkube::etcd_peer_port "$i"))"
    ironkube::launch_etcd_member "$i" "$PKI" "$LOGS"
  done
  log "waiting for the etcd cluster to be healthy"
  for ((t = 0; t < 60; t++)); do
    ironkube::etcdctl "$PKI" endpoint health >/dev/null 2>&1 && break
    sleep 1
  done
  health=$(ironkube::etcdctl "$PKI" endpoint health 2>&1) ||
    die "etcd did not become healthy (see $LOGS/etcd-*.log): $health"
  {
    echo "# source it, then: etcdctl member list -w table; etcdctl endpoint status -w table --cluster"
    echo "export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$(ironkube::etcd_endpoints)"
    echo "export ETCDCTL_CACERT=$PKI/ca.crt ETCDCTL_CERT=$PKI/etcd-healthcheck-client.crt ETCDCTL_KEY=$PKI/etcd-healthcheck-client.key"
  } >"$OUT_DIR/etcdctl.env"

  for ((i = 1; i <= HA_APISERVERS; i++)); do
    running "kube-apiserver-$i" && continue
    ip=$(ironkube::apiserver_ip "$i")
    log "starting kube-apiserver-$i on https://$ip:$HA_APISERVER_PORT"
    ironkube::launch "$OUT_DIR/kube-apiserver-$i.pid" "$LOGS/kube-apiserver-$i.log" "$BIN/kube-apiserver" \
      --etcd-servers="$(ironkube::etcd_endpoints)" \
      --etcd-cafile="$PKI/ca.crt" --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
      --secure-port="$HA_APISERVER_PORT" --bind-address="$ip" --advertise-address="$ip" \
      "${APISERVER_FLAGS[@]}" \
      --endpoint-reconciler-type=lease --shutdown-delay-duration="$SHUTDOWN_DELAY_DURATION"
  done
  for ((i = 1; i <= HA_APISERVERS; i++)); do
    ironkube::wait_url "https://$(ironkube::apiserver_ip "$i"):$HA_APISERVER_PORT/readyz" 120 --cacert "$PKI/ca.crt" ||
      die "kube-apiserver-$i did not become ready (see $LOGS/kube-apiserver-$i.log)"
  done

  if ! running haproxy; then
    log "starting haproxy on 127.0.0.1:$API_PORT and $HARNESS_NET.1:$API_PORT"
    ironkube::haproxy_cfg "$OUT_DIR/haproxy.cfg" "$API_PORT"
    haproxy -c -q -f "$OUT_DIR/haproxy.cfg" || die "haproxy refuses $OUT_DIR/haproxy.cfg"
    ironkube::launch "$OUT_DIR/haproxy.pid" "$LOGS/haproxy.log" haproxy -db -f "$OUT_DIR/haproxy.cfg"
  fi
  for lb in 127.0.0.1 "$HARNESS_NET.1"; do
    for ((t = 0; t < 30; t++)); do
      running haproxy || die "haproxy exited: $(tail -n 3 "$LOGS/haproxy.log")"
      ironkube::wait_url "https://$lb:$API_PORT/readyz" 1 --cacert "$PKI/ca.crt" && break
    done
    ((t < 30)) || die "no apiserver answers through haproxy on $lb:$API_PORT (see $LOGS/haproxy.log)"
  done
  ADMIN_SERVER=https://127.0.0.1:$API_PORT
else
  running etcd || {
    log "starting etcd on https://127.0.0.1:$ETCD_PORT"
    rm -rf "$OUT_DIR/etcd"
    ironkube::launch "$OUT_DIR/etcd.pid" "$LOGS/etcd.log" \
      etcd --name=local --data-dir="$OUT_DIR/etcd" \
      --listen-client-urls="https://127.0.0.1:$ETCD_PORT" --advertise-client-urls="https://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls="https://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="https://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster="local=https://127.0.0.1:$ETCD_PEER_PORT" \
      --client-cert-auth=true --trusted-ca-file="$PKI/ca.crt" \
      --cert-file="$PKI/etcd-server.crt" --key-file="$PKI/etcd-server.key" \
      --peer-client-cert-auth=true --peer-trusted-ca-file="$PKI/ca.crt" \
      --peer-cert-file="$PKI/etcd-peer.crt" --peer-key-file="$PKI/etcd-peer.key"
    ironkube::wait_url "https://127.0.0.1:$ETCD_PORT/health" 30 --cacert "$PKI/ca.crt" \
      --cert "$PKI/etcd-healthcheck-client.crt" --key "$PKI/etcd-healthcheck-client.key" ||
      die "etcd did not become healthy (see $LOGS/etcd.log)"
  }
  {
    echo "# source it, then: etcdctl get --prefix --keys-only /registry"
    echo "export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://127.0.0.1:$ETCD_PORT"
    echo "export ETCDCTL_CACERT=$PKI/ca.crt ETCDCTL_CERT=$PKI/etcd-healthcheck-client.crt ETCDCTL_KEY=$PKI/etcd-healthcheck-client.key"
  } >"$OUT_DIR/etcdctl.env"

  # the kubernetes Service's endpoint must be an address pods and nodes reach
  # (the bridge's), not the machine's loopback
  API_ADVERTISE=$ADVERTISE_ADDRESS
  [[ $API_ADVERTISE == 127.0.0.1 ]] && API_ADVERTISE=$HARNESS_NET.1
  log "starting kube-apiserver on https://$ADVERTISE_ADDRESS:$API_PORT"
  ironkube::launch "$OUT_DIR/kube-apiserver.pid" "$LOGS/kube-apiserver.log" "$BIN/kube-apiserver" \
    --etcd-servers="https://127.0.0.1:$ETCD_PORT" \
    --etcd-cafile="$PKI/ca.crt" --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
    --secure-port="$API_PORT" \
    --advertise-address="$API_ADVERTISE" \
    "${APISERVER_FLAGS[@]}"
  ironkube::wait_url "https://127.0.0.1:$API_PORT/readyz" 60 --cacert "$PKI/ca.crt" ||
    die "kube-apiserver did not become ready (see $LOGS/kube-apiserver.log)"
  ADMIN_SERVER=https://$ADVERTISE_ADDRESS:$API_PORT
fi

KUBECTL=$(ironkube::kubectl)
log "writing $KUBECONFIG_OUT"
rm -f "$KUBECONFIG_OUT"
kc() { "$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" "$@" >/dev/null; }
kc config set-cluster local --server="$ADMIN_SERVER" --certificate-authority="$PKI/ca.crt" --embed-certs=true
kc config set-credentials admin --client-certificate="$PKI/admin.crt" --client-key="$PKI/admin.key" --embed-certs=true
kc config set-context local --cluster=local --user=admin --namespace=default
kc config use-context local
chmod 600 "$KUBECONFIG_OUT"

# The controller-manager runs each controller as its own service account
# (--use-service-account-credentials): RBAC gives each its bootstrap role
# system:controller:NAME, and the manager itself only system:kube-controller-manager.
# kubelets ask the apiserver who may use their API: the apiserver's own
# client certificate may (logs, exec, port-forward), as kubeadm binds it
"$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" create clusterrolebinding ironkube:apiserver-kubelet-client \
  --clusterrole=system:kubelet-api-admin --user=kube-apiserver-kubelet-client --dry-run=client -o yaml |
  "$KUBECTL" --kubeconfig="$KUBECONFIG_OUT" apply -f - >/dev/null
if [[ $NODE_BOOTSTRAP == token ]]; then
  log "making a bootstrap token for the nodes"
  ironkube::bootstrap_token "$PKI" "$KUBECTL" "$KUBECONFIG_OUT"
fi
# every component with its own identity (system:kube-controller-manager,
# system:kube-scheduler, system:kube-proxy, system:node:NAME)
for c in controller-manager scheduler; do
  ironkube::kubeconfig "$OUT_DIR/$c.kubeconfig" "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" "$PKI/$c.crt" "$PKI/$c.key" "$KUBECTL"
done
# their --secure-port: HTTPS with a self-signed pair in $SERVING_CERTS
# (kube-<component>.crt/.key, made at first start), client certificates of the
# cluster CA, tokens and authorization delegated to the apiserver with the
# component's own kubeconfig, as kubeadm sets them
SERVING_CERTS=$OUT_DIR/serving-certs
CM_SERVING=(--cert-dir="$SERVING_CERTS" --client-ca-file="$PKI/ca.crt"
  --authentication-kubeconfig="$OUT_DIR/controller-manager.kubeconfig" --authorization-kubeconfig="$OUT_DIR/controller-manager.kubeconfig")
SCHED_SERVING=(--cert-dir="$SERVING_CERTS" --client-ca-file="$PKI/ca.crt"
  --authentication-kubeconfig="$OUT_DIR/scheduler.kubeconfig" --authorization-kubeconfig="$OUT_DIR/scheduler.kubeconfig")
if ((HA)); then
  # two of each, leader-elected (a Lease in kube-system each), on ports of their own
  for ((i = 1; i <= HA_REPLICAS; i++)); do
    port=$((${CONTROLLER_MANAGER_PORT:-10257} + 10 * (i - 1)))
    if ! running "kube-controller-manager-$i"; then
      log "starting kube-controller-manager-$i (health on 127.0.0.1:$port)"
      ironkube::launch "$OUT_DIR/kube-controller-manager-$i.pid" "$LOGS/kube-controller-manager-$i.log" \
        "$BIN/kube-controller-manager" --kubeconfig="$OUT_DIR/controller-manager.kubeconfig" --bind-address=127.0.0.1 --secure-port="$port" \
        "${CM_SERVING[@]}" --leader-elect=true --root-ca-file="$PKI/ca.crt" --use-service-account-credentials \
        "${CONTROLLER_MANAGER_SIGNING[@]}" ${CONTROLLER_MANAGER_FLAGS:-}
    fi
    ironkube::wait_url "https://127.0.0.1:$port/healthz" 30 --cacert "$SERVING_CERTS/kube-controller-manager.crt" || die "kube-controller-manager-$i did not start (see $LOGS/kube-controller-manager-$i.log)"
  done
  for ((i = 1; i <= HA_REPLICAS; i++)); do
    port=$((${SCHEDULER_PORT:-10259} + 10 * (i - 1)))
    if ! running "kube-scheduler-$i"; then
      log "starting kube-scheduler-$i (health on 127.0.0.1:$port)"
      ironkube::launch "$OUT_DIR/kube-scheduler-$i.pid" "$LOGS/kube-scheduler-$i.log" \
        "$BIN/kube-scheduler" --kubeconfig="$OUT_DIR/scheduler.kubeconfig" --bind-address=127.0.0.1 --secure-port="$port" \
        "${SCHED_SERVING[@]}" --leader-elect=true
    fi
    ironkube::wait_url "https://127.0.0.1:$port/healthz" 30 --cacert "$SERVING_CERTS/kube-scheduler.crt" || die "kube-scheduler-$i did not start (see $LOGS/kube-scheduler-$i.log)"
  done
else
  log "starting kube-controller-manager"
  ironkube::launch "$OUT_DIR/kube-controller-manager.pid" "$LOGS/kube-controller-manager.log" \
    "$BIN/kube-controller-manager" --kubeconfig="$OUT_DIR/controller-manager.kubeconfig" --bind-address=127.0.0.1 --secure-port="${CONTROLLER_MANAGER_PORT:-10257}" \
    "${CM_SERVING[@]}" --root-ca-file="$PKI/ca.crt" --use-service-account-credentials \
    "${CONTROLLER_MANAGER_SIGNING[@]}" ${CONTROLLER_MANAGER_FLAGS:-}
  ironkube::wait_url "https://127.0.0.1:${CONTROLLER_MANAGER_PORT:-10257}/healthz" 30 --cacert "$SERVING_CERTS/kube-controller-manager.crt" || die "kube-controller-manager did not start (see $LOGS/kube-controller-manager.log)"

  log "starting kube-scheduler"
  ironkube::launch "$OUT_DIR/kube-scheduler.pid" "$LOGS/kube-scheduler.log" \
    "$BIN/kube-scheduler" --kubeconfig="$OUT_DIR/scheduler.kubeconfig" --bind-address=127.0.0.1 --secure-port="${SCHEDULER_PORT:-10259}" \
    "${SCHED_SERVING[@]}"
  ironkube::wait_url "https://127.0.0.1:${SCHEDULER_PORT:-10259}/healthz" 30 --cacert "$SERVING_CERTS/kube-scheduler.crt" || die "kube-scheduler did not start (see $LOGS/kube-scheduler.log)"
fi

# what hack/fault.sh needs: the kind of cluster, how to bring a node back
API_SERVER_NODE=https://$HARNESS_NET.1:$API_PORT
REGISTRY_ADDR=$HARNESS_NET.1:5000
write_cluster_env() {
  declare -p HA NODES BIN PKI KUBECTL API_SERVER_NODE REGISTRY_ADDR CLUSTER_CIDR SERVICE_CLUSTER_IP_RANGE HARNESS_NET HARNESS_BRIDGE \
    HARNESS_NODE_BASE KUBECONFIG_OUT NODE_BOOTSTRAP >"$OUT_DIR/cluster.env"
}
if ((HA)); then write_cluster_env; fi

if ((NODES > 0)); then
  log "making the harness network ($HARNESS_BRIDGE, $HARNESS_NET.0/24)"
  ironkube::harness_net_up
  if ! { [[ -f $OUT_DIR/registry/registry.pid ]] && ironkube::_registry_alive "$(cat "$OUT_DIR/registry/registry.pid")"; }; then
    log "starting a registry on $REGISTRY_ADDR and pushing the busybox image"
    ironkube::build_busybox_image "$OUT_DIR/images/busybox" >/dev/null
    ironkube::start_registry "$OUT_DIR/registry" "$REGISTRY_ADDR" >/dev/null
    ironkube::push_image "$OUT_DIR/images/busybox" "$REGISTRY_ADDR/busybox:latest" >/dev/null
  fi
  echo "BUSYBOX_IMAGE=$REGISTRY_ADDR/busybox:latest" >"$OUT_DIR/images.env"
  ironkube::kubeconfig "$OUT_DIR/kube-proxy.kubeconfig" "$API_SERVER_NODE" "$PKI/ca.crt" "$PKI/kube-proxy.crt" "$PKI/kube-proxy.key" "$KUBECTL"
  write_cluster_env
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
if ((HA)); then
  cat >&2 <<MSG

  The local HA cluster is up: etcd-1..3 (https://127.0.0.1:12379,22379,32379), kube-apiserver-1..3
  ($(ironkube::apiserver_ip 1)-13:$HA_APISERVER_PORT) behind haproxy (127.0.0.1:$API_PORT, $HARNESS_NET.1:$API_PORT),
  kube-controller-manager-1..2, kube-scheduler-1..2; $NODES worker node(s) (node i on $HARNESS_NET.$HARNESS_NODE_BASE+i).
  Logs:        $LOGS/
  Use it:      export KUBECONFIG=$KUBECONFIG_OUT
               kubectl get nodes
               source $OUT_DIR/etcdctl.env; etcdctl member list -w table
  Break it:    hack/fault.sh status; hack/fault.sh kill kube-apiserver-2; hack/fault.sh partition etcd-3
  Stop it:     hack/local-down-cluster.sh

MSG
  exit 0
fi
cat >&2 <<MSG

  The local cluster is up (control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
  $NODES worker node(s) with kubelet and kube-proxy; images: $OUT_DIR/images.env).
  Logs:        $LOGS/
  Use it:      export KUBECONFIG=$KUBECONFIG_OUT
               kubectl get namespaces
  Stop it:     hack/local-down-cluster.sh

MSG
