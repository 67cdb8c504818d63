# The high-availability control plane of `hack/local-up-cluster.sh --ha`, on
# one machine:
#
#   etcd-1..3                 etcd members on 127.0.0.1, client ports 12379/22379/32379,
#                             peer ports 12380/22380/32380, client and peer TLS
#                             (certificates of the cluster CA, ironkube::pki_etcd)
#   kube-apiserver-1..3       each on an address of its own on the harness bridge,
#                             HARNESS_NET.11/.12/.13, port 6443
#   haproxy                   TCP load balancer on 127.0.0.1:API_PORT and
#                             HARNESS_NET.1:API_PORT, health-checking /readyz
#   kube-controller-manager-1..2, kube-scheduler-1..2
#                             leader-elected, talking to the load balancer
#
# The ports and addresses are fixed (ETCD_PORT and ADVERTISE_ADDRESS do not
# apply); API_PORT is haproxy's.
#
# Each is a process started by ironkube::launch with OUT_DIR/NAME.pid and
# NAME.cmd, so hack/fault.sh stops, kills and starts each replica. Each etcd
# member runs with a group id of its own (setpriv --regid, still uid 0): on
# loopback the members share 127.0.0.1, and the group is how hack/fault.sh's
# nftables rules tell one member's packets from the others'.
# Source it after common.sh and nodes.sh; functions only.

HA_ETCD_MEMBERS=3
HA_APISERVERS=3
HA_REPLICAS=2 # controller-managers, schedulers
HA_APISERVER_PORT=6443
HA_FAULT_TABLE=ironkube-fault-cp

ironkube::etcd_client_port() { echo $((10000 * $1 + 2379)); }
ironkube::etcd_peer_port() { echo $((10000 * $1 + 2380)); }
ironkube::etcd_gid() { echo $((61000 + $1)); }
ironkube::apiserver_ip() { echo "$HARNESS_NET.$((10 + $1))"; }

# https://127.0.0.1:12379,https://127.0.0.1:22379,https://127.0.0.1:32379
ironkube::etcd_endpoints() {
  local i out=()
  for ((i = 1; i <= HA_ETCD_MEMBERS; i++)); do out+=("https://127.0.0.1:$(ironkube::etcd_client_port "$i")"); done
  local IFS=,
  echo "${out[*]}"
}

# Every process of the HA control plane, in start order.
ironkube::ha_names() {
  local i
  for ((i = 1; i <= HA_ETCD_MEMBERS; i++)); do echo "etcd-$i"; done
  for ((i = 1; i <= HA_APISERVERS; i++)); do echo "kube-apiserver-$i"; done
  echo haproxy
  for ((i = 1; i <= HA_REPLICAS; i++)); do echo "kube-controller-manager-$i"; done
  for ((i = 1; i <= HA_REPLICAS; i++)); do echo "kube-scheduler-$i"; done
}

# The apiservers' addresses on the harness bridge (idempotent; they go with
# the bridge, ironkube::harness_net_down).
ironkube::harness_cp_addrs_up() {
  local i
  for ((i = 1; i <= HA_APISERVERS; i++)); do
    ip addr replace "$(ironkube::apiserver_ip "$i")/32" dev "$HARNESS_BRIDGE"
  done
}

# ironkube::etcdctl PKI ARGS...: etcdctl (v3 API) over TLS against every member.
ironkube::etcdctl() {
  local pki=$1
  shift
  env -u ETCDCTL_ENDPOINTS -u ETCDCTL_CACERT -u ETCDCTL_CERT -u ETCDCTL_KEY ETCDCTL_API=3 \
    etcdctl --endpoints="$(ironkube::etcd_endpoints)" --cacert="$pki/ca.crt" \
    --cert="$pki/etcd-healthcheck-client.crt" --key="$pki/etcd-healthcheck-client.key" \
    --dial-timeout=2s --command-timeout=3s "$@"
}

# ironkube::launch_etcd_member I PKI LOGS: start member I (OUT_DIR/etcd-I.pid,
# data in OUT_DIR/etcd-I). With a data dir from an earlier start the
# --initial-* flags are ignored and the member rejoins.
ironkube::launch_etcd_member() {
  local i=$1 pki=$2 logs=$3 j cluster=() c p
  for ((j = 1; j <= HA_ETCD_MEMBERS; j++)); do cluster+=("etcd-$j=https://127.0.0.1:$(ironkube::etcd_peer_port "$j")"); done
  c=$(ironkube::etcd_client_port "$i")
  p=$(ironkube::etcd_peer_port "$i")
  ironkube::launch "$OUT_DIR/etcd-$i.pid" "$logs/etcd-$i.log" \
    setpriv --regid="$(ironkube::etcd_gid "$i")" --clear-groups \
    etcd --name="etcd-$i" --data-dir="$OUT_DIR/etcd-$i" \
    --listen-client-urls="https://127.0.0.1:$c" --advertise-client-urls="https://127.0.0.1:$c" \
    --listen-peer-urls="https://127.0.0.1:$p" --initial-advertise-peer-urls="https://127.0.0.1:$p" \
    --initial-cluster="$(IFS=,; echo "${cluster[*]}")" --initial-cluster-state=new \
    --initial-cluster-token=ironkube-ha \
    --client-cert-auth=true --trusted-ca-file="$pki/ca.crt" \
    --cert-file="$pki/etcd-server.crt" --key-file="$pki/etcd-server.key" \
    --peer-client-cert-auth=true --peer-trusted-ca-file="$pki/ca.crt" \
    --peer-cert-file="$pki/etcd-peer.crt" --peer-key-file="$pki/etcd-peer.key"
}

# ironkube::haproxy_cfg OUT API_PORT: the load balancer's configuration. TCP
# (TLS passes through: clients see the apiservers' certificate and show
# theirs), health checks of /readyz over TLS every 500 ms (anonymous requests
# may read /readyz), two failures take a server out, and its connections are
# cut then so that watches reconnect to another one.
ironkube::haproxy_cfg() {
  local out=$1 port=$2 i sock=$OUT_DIR/haproxy.sock
  {
    cat <<CFG
# written by hack/local-up-cluster.sh --ha; see hack/systemd/haproxy/haproxy.cfg
# for a commented one
global
  log stdout format raw local0 info
  # no maxconn: haproxy sizes it to the file descriptors it may open
CFG
    # a unix socket path has room for 107 bytes: without it, no runtime API
    ((${#sock} < 100)) && echo "  stats socket $sock mode 600 level admin"
    cat <<CFG

defaults
  mode tcp
  log global
  option tcplog
  option dontlog-normal
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  timeout client-fin 5s
  timeout server-fin 5s
  timeout check 1s
  retries 2
  option redispatch

frontend kube-apiserver
  bind 127.0.0.1:$port
  bind $HARNESS_NET.1:$port
  default_backend kube-apiserver

backend kube-apiserver
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server check check-ssl verify none inter 500ms fastinter 250ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions
CFG
    for ((i = 1; i <= HA_APISERVERS; i++)); do
      echo "  server kube-apiserver-$i $(ironkube::apiserver_ip "$i"):$HA_APISERVER_PORT"
    done
  } >"$out"
}

# ironkube::haproxy_servers: "NAME STATE" of each apiserver as haproxy sees it
# (UP, DOWN, ...), when its runtime socket answers.
ironkube::haproxy_servers() {
  local sock=$OUT_DIR/haproxy.sock
  [[ -S $sock ]] || return 0
  echo "show stat" | timeout 2 socat - "UNIX-CONNECT:$sock" 2>/dev/null |
    awk -F, '$1 == "kube-apiserver" && $2 != "BACKEND" { print $2, $18 }'
}
