# Worker "nodes" of the local cluster, kind-style: one network namespace per
# node with its own IP on the harness bridge, its own kubelet and kube-proxy
# (started with `nsenter --net`, so they share the machine's mounts and
# cgroups), its own nftables and podCIDR, and routes between the nodes' pod
# networks. Nothing is routed or masqueraded to the machine's uplink.
# Source it after common.sh; functions only.

HARNESS_BRIDGE=${HARNESS_BRIDGE:-ikbr0}
HARNESS_NET=${HARNESS_NET:-10.240.0}     # /24: .1 is the machine, .10+i node i
# with --ha the apiservers have .11-.13 and node i is .20+i
HARNESS_NODE_BASE=${HARNESS_NODE_BASE:-10}
CLUSTER_CIDR=${CLUSTER_CIDR:-10.244.0.0/16}

ironkube::node_ip() { echo "$HARNESS_NET.$((HARNESS_NODE_BASE + $1))"; }
ironkube::node_cidr() { echo "10.244.$1.0/24"; }
ironkube::node_netns() { echo "ironkube-node-$1"; }
ironkube::node_dir() { echo "$OUT_DIR/nodes/node-$1"; }

# The harness bridge on the machine (idempotent).
ironkube::harness_net_up() {
  if ! ip link show "$HARNESS_BRIDGE" >/dev/null 2>&1; then
    ip link add "$HARNESS_BRIDGE" type bridge
    ip addr add "$HARNESS_NET.1/24" dev "$HARNESS_BRIDGE"
  fi
  ip link set "$HARNESS_BRIDGE" up
}

ironkube::harness_net_down() {
  ip link del "$HARNESS_BRIDGE" 2>/dev/null || true
}

# Node i's namespace, its link to the bridge, and routes to every node's pods.
ironkube::node_net_up() {
  local i=$1 n=$2 ns ip j
  ns=$(ironkube::node_netns "$i")
  ip=$(ironkube::node_ip "$i")
  if [[ ! -e /var/run/netns/$ns ]]; then
    ip netns add "$ns"
    ip link add "ikn$i" type veth peer name eth0 netns "$ns"
    ip link set "ikn$i" master "$HARNESS_BRIDGE" up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  fi
  for ((j = 1; j <= n; j++)); do
    ((j == i)) && continue
    ip -n "$ns" route replace "$(ironkube::node_cidr "$j")" via "$(ironkube::node_ip "$j")"
  done
  # Service IPs from the node itself (hostNetwork pods, the kubelet): a route
  # lets the packet reach the nat output hook, where kube-proxy rewrites it to
  # an endpoint (a real node has its default route for this; ours has none)
  ip -n "$ns" route replace "${SERVICE_CLUSTER_IP_RANGE:-10.0.0.0/24}" dev eth0
  # the machine reaches the pods too (kubectl port-forward, debugging)
  ip route replace "$(ironkube::node_cidr "$i")" via "$ip"
}

# Kill every process in the node's cgroup tree (containers outlive their kubelet).
ironkube::node_kill_containers() {
  local i=$1 h f pid
  for h in /sys/fs/cgroup/pids /sys/fs/cgroup/memory /sys/fs/cgroup; do
    [[ -d $h/ironkube/node-$i ]] || continue
    while IFS= read -r f; do
      while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$f"
    done < <(find "$h/ironkube/node-$i" -name cgroup.procs 2>/dev/null)
  done
  # shims whose containers are gone exit by themselves; any left are killed
  pkill -KILL -f -- "--runtime-shim .* $(ironkube::node_dir "$i")/" 2>/dev/null || true
}

# Remove everything of node i: processes, containers, mounts, pod and node
# namespaces, cgroups, routes.
ironkube::node_down() {
  local i=$1 dir ns m uid h
  dir=$(ironkube::node_dir "$i")
  ns=$(ironkube::node_netns "$i")
  ironkube::stop_pidfile "$dir/kube-proxy.pid"
  ironkube::stop_pidfile "$dir/kubelet.pid"
  ironkube::node_kill_containers "$i"
  sleep 0.2
  # mounts under the node's directory, deepest first
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
    awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
  if [[ -d $dir/root/pods ]]; then
    for uid in "$dir"/root/pods/*; do
      [[ -e $uid ]] || continue
      ip netns del "ik-$(basename "$uid")" 2>/dev/null || true
    done
  fi
  if [[ -e /var/run/netns/$ns ]]; then
    ip netns del "$ns" 2>/dev/null || true
  fi
  ip link del "ikn$i" 2>/dev/null || true
  ip route del "$(ironkube::node_cidr "$i")" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [[ -d $h/ironkube/node-$i ]] || continue
    find "$h/ironkube/node-$i" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$dir"
}

# Start node i's kubelet and kube-proxy. BIN, PKI, KUBECTL, OUT_DIR,
# API_SERVER_NODE and REGISTRY_ADDR come from the caller. The kubelet is
# system:node:node-i with a serving certificate for its IP, and takes only
# clients with a certificate of the cluster's CA (the apiserver's). With
# NODE_BOOTSTRAP=token it has no client certificate but the bootstrap token
# (PKI/bootstrap-token), and requests its certificate at start.
ironkube::node_start() {
  local i=$1 dir ns ip identity=()
  dir=$(ironkube::node_dir "$i")
  ns=$(ironkube::node_netns "$i")
  ip=$(ironkube::node_ip "$i")
  mkdir -p "$dir/root" "$dir/logs" "$dir/pod-logs"
  if [[ ${NODE_BOOTSTRAP:-cert} == token ]]; then
    ironkube::pki_node "$PKI" "node-$i" "$ip" serving-only
    rm -f "$dir/kubelet.kubeconfig"
    ironkube::bootstrap_kubeconfig "$dir/bootstrap.kubeconfig" "$API_SERVER_NODE" "$PKI/ca.crt" "$(cat "$PKI/bootstrap-token")" "$KUBECTL"
    identity=(--bootstrap-kubeconfig="$dir/bootstrap.kubeconfig" --cert-dir="$dir/pki" --rotate-certificates)
  else
    ironkube::pki_node "$PKI" "node-$i" "$ip"
    ironkube::kubeconfig "$dir/kubelet.kubeconfig" "$API_SERVER_NODE" "$PKI/ca.crt" "$PKI/node-$i.crt" "$PKI/node-$i.key" "$KUBECTL"
  fi
  cat >"$dir/kubelet.yaml" <<CFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
podLogsDir: $dir/pod-logs
clusterDomain: cluster.local
nodeStatusUpdateFrequency: 10s
CFG
  ironkube::launch "$dir/kubelet.pid" "$dir/logs/kubelet.log" \
    nsenter --net="/var/run/netns/$ns" "$BIN/kubelet" \
    --kubeconfig="$dir/kubelet.kubeconfig" "${identity[@]}" --config="$dir/kubelet.yaml" \
    --tls-cert-file="$PKI/node-$i-serving.crt" --tls-private-key-file="$PKI/node-$i-serving.key" \
    --client-ca-file="$PKI/ca.crt" --anonymous-auth=false --authorization-mode=Webhook \
    --hostname-override="node-$i" --node-ip="$ip" --pod-cidr="$(ironkube::node_cidr "$i")" \
    --root-dir="$dir/root" --cgroup-root="/ironkube/node-$i" \
    --insecure-registries="$REGISTRY_ADDR"
  ironkube::launch "$dir/kube-proxy.pid" "$dir/logs/kube-proxy.log" \
    nsenter --net="/var/run/netns/$ns" "$BIN/kube-proxy" \
    --kubeconfig="$OUT_DIR/kube-proxy.kubeconfig" --hostname-override="node-$i" --cluster-cidr="$CLUSTER_CIDR"
}
