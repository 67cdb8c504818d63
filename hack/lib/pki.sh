# PKI for a local cluster, made with openssl. Idempotent: existing files are kept.
# Usage: ironkube::pki DIR ADVERTISE_IP SERVICE_IP [EXTRA_IP...]

ironkube::pki() {
  local dir=$1 ip=$2 svc_ip=$3 extra_san="" x
  shift 3
  for x in "$@"; do extra_san+=",IP:$x"; done
  mkdir -p "$dir"
  # a serving cert made before an address was added is made again
  if [[ -f $dir/apiserver.crt ]]; then
    for x in "$@"; do
      openssl x509 -in "$dir/apiserver.crt" -noout -text 2>/dev/null | grep -q "IP Address:$x\b" ||
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
    # name CN [O] EXT
    cert() {
      local name=$1 subj=$2 ext=$3
      [[ -f $name.crt ]] && return 0
      openssl req -new -nodes -newkey rsa:2048 -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
      printf '%b' "$ext" > "$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
        -days 3650 -extfile "$name.ext" 2>/dev/null
      rm -f "$name.csr" "$name.ext"
    }
    cert apiserver "/CN=kube-apiserver" \
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$ip,IP:$svc_ip${extra_san}\n"
    cert admin "/O=system:masters/CN=kubernetes-admin" \
      "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    chmod 600 ./*.key
  )
}
