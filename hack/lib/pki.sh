# PKI for a local cluster, made with openssl. Idempotent: existing files are kept.
# Usage: ironkube::pki DIR ADVERTISE_IP SERVICE_IP [EXTRA_SAN...]
# Each EXTRA_SAN (an IPv4 address or a DNS name) is one more subject
# alternative name of the apiserver's serving certificate: the bridge address,
# each apiserver's own address and the load balancer's with --ha.

# ironkube::_san NAME: IP:NAME for an IPv4 address, DNS:NAME otherwise.
ironkube::_san() {
  if [[ $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then echo "IP:$1"; else echo "DNS:$1"; fi
}

# ironkube::_cert_has_san CERT SAN: the certificate lists SAN (IP:x or DNS:x).
ironkube::_cert_has_san() {
  local want=$2
  [[ $want == IP:* ]] && want="IP Address:${want#IP:}"
  openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | tr ',' '\n' | sed 's/^ *//' | grep -qxF "$want"
}

ironkube::pki() {
  local dir=$1 ip=$2 svc_ip=$3 extra_san="" x
  shift 3
  for x in "$@"; do extra_san+=",$(ironkube::_san "$x")"; done
  mkdir -p "$dir"
  # a serving cert made before an address was added is made again
  if [[ -f $dir/apiserver.crt ]]; then
    for x in "$@"; do
      ironkube::_cert_has_san "$dir/apiserver.crt" "$(ironkube::_san "$x")" ||
        rm -f "$dir/apiserver.crt" "$dir/apiserver.key"
    done
  fi
  (
    cd "$dir"
    umask 077
    if [[ ! -f ca.crt ]]; then
      openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 3650 \
        -subj "/CN=ironkube-ca" 2>/dev/null
    fi
    ironkube::_cert apiserver "/CN=kube-apiserver" \
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$ip,IP:$svc_ip${extra_san}\n"
    local client="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    ironkube::_cert admin "/O=system:masters/CN=kubernetes-admin" "$client"
    # what the apiserver shows kubelets (logs, exec, port-forward), as kubeadm's
    ironkube::_cert apiserver-kubelet-client "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" "$client"
    ironkube::_cert controller-manager "/CN=system:kube-controller-manager" "$client"
    ironkube::_cert scheduler "/CN=system:kube-scheduler" "$client"
    ironkube::_cert kube-proxy "/CN=system:kube-proxy" "$client"
    # the key that encrypts Secrets in etcd (--encryption-provider-config)
    if [[ ! -f encryption.yaml ]]; then
      cat >encryption.yaml <<ENC
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: $(head -c 32 /dev/urandom | base64)
      - identity: {}
ENC
      chmod 600 encryption.yaml
    fi
    # the service-account token signing pair
    if [[ ! -f sa.key ]]; then
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    fi
    chmod 600 ./*.key
  )
}

# ironkube::_cert NAME SUBJECT EXTENSIONS: NAME.crt/.key signed by ca.crt in
# the current directory, unless it exists.
ironkube::_cert() {
  local name=$1 subj=$2 ext=$3
  [[ -f $name.crt ]] && return 0
  openssl req -new -nodes -newkey rsa:2048 -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  printf '%b' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
    -days 3650 -extfile "$name.ext" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  chmod 600 "$name.key"
}

# ironkube::pki_node DIR NAME IP [serving-only]: a node's kubelet identity
# (system:node:NAME in system:nodes; not with serving-only, when the kubelet
# bootstraps it) and its kubelet's serving certificate, in DIR (the CA's).
ironkube::pki_node() {
  local dir=$1 name=$2 ip=$3 only=${4:-}
  (
    cd "$dir"
    umask 077
    # made for another address (a node's address differs with --ha): made again
    if [[ -f $name-serving.crt ]] && ! ironkube::_cert_has_san "$name-serving.crt" "IP:$ip"; then
      rm -f "$name-serving.crt" "$name-serving.key"
    fi
    if [[ $only != serving-only ]]; then
      ironkube::_cert "$name" "/O=system:nodes/CN=system:node:$name" \
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    fi
    ironkube::_cert "$name-serving" "/CN=$name" \
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:$name,IP:$ip\n"
  )
}

# ironkube::pki_etcd DIR: TLS for an etcd cluster whose members all listen on
# 127.0.0.1 (local-up-cluster.sh --ha), signed by the cluster CA in DIR:
# etcd-server (client TLS; clientAuth too, as etcd's gRPC gateway dials its own
# client port with it), etcd-peer (member to member, both ends show it), the
# apiserver's client certificate for etcd and etcdctl's.
ironkube::pki_etcd() {
  local dir=$1
  local both="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
  local client="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  (
    cd "$dir"
    umask 077
    ironkube::_cert etcd-server "/CN=etcd-server" "$both"
    ironkube::_cert etcd-peer "/CN=etcd-peer" "$both"
    ironkube::_cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" "$client"
    ironkube::_cert etcd-healthcheck-client "/CN=kube-etcd-healthcheck-client" "$client"
  )
}

# ironkube::kubeconfig OUT SERVER CA CERT KEY [KUBECTL]: a kubeconfig with
# embedded credentials.
ironkube::kubeconfig() {
  local out=$1 server=$2 ca=$3 cert=$4 key=$5 kubectl=${6:-kubectl}
  rm -f "$out"
  "$kubectl" --kubeconfig="$out" config set-cluster local --server="$server" --certificate-authority="$ca" --embed-certs=true >/dev/null
  "$kubectl" --kubeconfig="$out" config set-credentials user --client-certificate="$cert" --client-key="$key" --embed-certs=true >/dev/null
  "$kubectl" --kubeconfig="$out" config set-context local --cluster=local --user=user --namespace=default >/dev/null
  "$kubectl" --kubeconfig="$out" config use-context local >/dev/null
  chmod 600 "$out"
}

ironkube::_b64() { printf '%s' "$1" | base64 -w0; }

# ironkube::bootstrap_token DIR KUBECTL KUBECONFIG: a bootstrap token for
# kubelets joining with TLS bootstrap (upstream's bootstrap.kubernetes.io/token
# Secret in kube-system, user system:bootstrap:<id> in group
# system:bootstrappers, valid 24 hours from now), kept in DIR/bootstrap-token
# as <id>.<secret> and made again once expired; and kubeadm's bindings: the
# group may create CSRs (system:node-bootstrapper) and have a node client
# certificate approved (nodeclient), nodes may renew their own
# (selfnodeclient).
ironkube::bootstrap_token() {
  local dir=$1 kubectl=$2 kc=$3 id secret expires
  if [[ -f $dir/bootstrap-token ]] && [[ $(cat "$dir/bootstrap-token") =~ ^([a-z0-9]{6})\.([a-z0-9]{16})$ ]]; then
    id=${BASH_REMATCH[1]} secret=${BASH_REMATCH[2]}
  else
    id=$(openssl rand -hex 3)
    secret=$(openssl rand -hex 8)
    (umask 077; echo "$id.$secret" >"$dir/bootstrap-token")
  fi
  expires=$(date -u -d '+24 hours' +%Y-%m-%dT%H:%M:%SZ)
  # data (base64), as kubeadm writes it
  "$kubectl" --kubeconfig="$kc" apply -f - >/dev/null <<TOKEN
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-$id
  namespace: kube-system
type: bootstrap.kubernetes.io/token
data:
  description: $(ironkube::_b64 "ironkube local cluster: nodes join with it")
  token-id: $(ironkube::_b64 "$id")
  token-secret: $(ironkube::_b64 "$secret")
  expiration: $(ironkube::_b64 "$expires")
  usage-bootstrap-authentication: $(ironkube::_b64 true)
TOKEN
  local name role subject
  for b in "ironkube:kubelet-bootstrap system:node-bootstrapper system:bootstrappers" \
    "ironkube:node-autoapprove-bootstrap system:certificates.k8s.io:certificatesigningrequests:nodeclient system:bootstrappers" \
    "ironkube:node-autoapprove-certificate-rotation system:certificates.k8s.io:certificatesigningrequests:selfnodeclient system:nodes"; do
    read -r name role subject <<<"$b"
    "$kubectl" --kubeconfig="$kc" create clusterrolebinding "$name" --clusterrole="$role" --group="$subject" \
      --dry-run=client -o yaml | "$kubectl" --kubeconfig="$kc" apply -f - >/dev/null
  done
}

# ironkube::bootstrap_kubeconfig OUT SERVER CA TOKEN [KUBECTL]: a kubeconfig
# with a bootstrap token (a kubelet's --bootstrap-kubeconfig).
ironkube::bootstrap_kubeconfig() {
  local out=$1 server=$2 ca=$3 token=$4 kubectl=${5:-kubectl}
  rm -f "$out"
  "$kubectl" --kubeconfig="$out" config set-cluster local --server="$server" --certificate-authority="$ca" --embed-certs=true >/dev/null
  "$kubectl" --kubeconfig="$out" config set-credentials kubelet-bootstrap --token="$token" >/dev/null
  "$kubectl" --kubeconfig="$out" config set-context bootstrap --cluster=local --user=kubelet-bootstrap >/dev/null
  "$kubectl" --kubeconfig="$out" config use-context bootstrap >/dev/null
  chmod 600 "$out"
}
