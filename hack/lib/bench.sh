# Shared by hack/bench/*.sh: a throwaway etcd and kube-apiserver on free
# loopback ports, removed with everything else on exit.
# After ironkube::bench_control_plane BIN: ETCD (URL), API_PID, KC (kubeconfig),
# WORK (scratch dir); register more processes with pids+=(PID).

pids=()
ironkube::bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}

ironkube::free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ironkube::bench_control_plane() {
  local bin=$1 etcd_port peer_port api_port
  WORK=$(mktemp -d /tmp/ironkube-bench.XXXXXX)
  trap ironkube::bench_cleanup EXIT
  etcd_port=$(ironkube::free_port); peer_port=$(ironkube::free_port); api_port=$(ironkube::free_port)
  ETCD=http://127.0.0.1:$etcd_port
  etcd --name=bench --data-dir="$WORK/etcd" --listen-client-urls="$ETCD" --advertise-client-urls="$ETCD" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="bench=http://127.0.0.1:$peer_port" --quota-backend-bytes=8589934592 >"$WORK/etcd.log" 2>&1 &
  pids+=($!)
  ironkube::wait_url "$ETCD/health" 30 || die "etcd did not start"
  ironkube::pki "$WORK/pki" 127.0.0.1 10.0.0.1
  "$bin/kube-apiserver" --etcd-servers="$ETCD" --secure-port="$api_port" --bind-address=127.0.0.1 \
    --tls-cert-file="$WORK/pki/apiserver.crt" --tls-private-key-file="$WORK/pki/apiserver.key" \
    --client-ca-file="$WORK/pki/ca.crt" -v=0 >"$WORK/apiserver.log" 2>&1 &
  API_PID=$!
  pids+=($API_PID)
  ironkube::wait_url "https://127.0.0.1:$api_port/readyz" 60 --cacert "$WORK/pki/ca.crt" || die "apiserver did not start"
  KC=$WORK/admin.kubeconfig
  cat >"$KC" <<KCFG
apiVersion: v1
kind: Config
clusters: [{name: b, cluster: {server: "https://127.0.0.1:$api_port", certificate-authority-data: $(base64 -w0 "$WORK/pki/ca.crt")}}]
users: [{name: a, user: {client-certificate-data: $(base64 -w0 "$WORK/pki/admin.crt"), client-key-data: $(base64 -w0 "$WORK/pki/admin.key")}}]
contexts: [{name: b, context: {cluster: b, user: a}}]
current-context: b
KCFG
}

# A field of the one-line JSON a driver subcommand prints.
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

# The apiserver's write requests so far, by verb and resource[/subresource]
# (from apiserver_request_total), as one JSON object.
ironkube::bench_writes() {
  "$1" --kubeconfig="$KC" get --raw /metrics | python3 -c '
import json, re, sys
out = {}
for line in sys.stdin:
    if not line.startswith("apiserver_request_total{"):
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", line.split("}")[0]))
    if labels.get("verb") not in ("POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY"):
        continue
    key = labels["verb"] + " " + labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else "")
    out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
print(json.dumps(out))'
}

# CPU seconds (user+system) a process has used so far.
ironkube::cpu_seconds() {
  python3 -c "import os; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"
}

# Print the writes between two ironkube::bench_writes snapshots, most first.
ironkube::print_writes() {
  python3 -c '
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0) > 0}
total = sum(d.values())
print("%-58s %10d" % ("apiserver writes: total", total))
for k, v in sorted(d.items(), key=lambda kv: -kv[1]):
    print("%-58s %10d" % ("  " + k, v))' "$1" "$2"
}

# Print the CPU seconds each process used between two snapshots of
# space-separated ironkube::cpu_seconds figures, under LABEL.
ironkube::print_cpu() {
  python3 -c "import sys; a=list(map(float,sys.argv[2].split())); b=list(map(float,sys.argv[3].split())); print('%-58s %10s' % (sys.argv[1], ', '.join('%.2f' % (y-x) for x,y in zip(a,b))))" "$1" "$2" "$3"
}
