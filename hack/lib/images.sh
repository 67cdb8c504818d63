# Helpers for test container images: a busybox OCI image built with umoci, a local
# docker-registry, and pushing with skopeo. Source it; it defines functions only.
#
# Needs the Debian packages busybox-static, umoci, docker-registry, skopeo (and curl);
# ironkube::image_tools_ensure installs the missing ones when running as root.

ironkube::image_tools_ensure() {
  local want=(busybox-static umoci docker-registry skopeo curl)
  local missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      echo "images.sh: missing packages ${missing[*]}: install them with apt-get" >&2
      return 1
    fi
    echo "images.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
  fi
}

# The busybox applets linked into /bin of the test image.
ironkube::busybox_applets() {
  echo sh ls cat echo env sleep httpd wget nc id hostname mkdir rm true false kill ps grep \
    head tail date test touch stat dd mount umount ip ifconfig cp mv ln chmod chown wc sed awk \
    tr cut sort uniq find xargs tee uname whoami nslookup ping timeout basename dirname readlink \
    seq sha256sum md5sum netstat printf pwd df du rmdir mkfifo usleep expr which vi less tar \
    gzip gunzip zcat nohup sync yes "["
}

# ironkube::build_busybox_image OUT_LAYOUT_DIR
# Builds an OCI image layout (tag "latest") holding a static busybox with its applets
# as symlinks in /bin, /etc/passwd and /etc/group (root, nobody 65534), /tmp, and
# cmd /bin/sh. Does nothing when the layout already holds a "latest" tag.
ironkube::build_busybox_image() {
  local out=${1:?usage: ironkube::build_busybox_image OUT_LAYOUT_DIR}
  if [[ -f $out/index.json ]] && umoci ls --layout "$out" 2>/dev/null | grep -qx latest; then
    return 0
  fi
  ironkube::image_tools_ensure || return 1
  local busybox
  busybox=$(readlink -f /bin/busybox) || return 1
  if [[ ! -x $busybox ]]; then
    echo "images.sh: /bin/busybox not found (install busybox-static)" >&2
    return 1
  fi
  local arch
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
  esac

  # Build next to the destination and move it into place at the end, so an interrupted
  # build never leaves a half-made layout under the final name.
  local parent tmp
  parent=$(dirname "$out")
  mkdir -p "$parent" || return 1
  tmp=$(mktemp -d "$parent/.busybox-layout.XXXXXX") || return 1
  if ! ironkube::_build_busybox_layout "$tmp" "$busybox" "$arch"; then
    rm -rf "$tmp"
    echo "images.sh: building the busybox image failed" >&2
    return 1
  fi
  rm -rf "$out"
  mv "$tmp/layout" "$out" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
}

# ironkube::_build_busybox_layout TMP BUSYBOX ARCH: makes TMP/layout (used by build_busybox_image).
ironkube::_build_busybox_layout() {
  local tmp=$1 busybox=$2 arch=$3
  local bundle=$tmp/bundle
  local rootfs=$bundle/rootfs a applets
  umoci init --layout "$tmp/layout" || return 1
  umoci new --image "$tmp/layout:latest" || return 1
  umoci unpack --image "$tmp/layout:latest" "$bundle" || return 1
  mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev,home,var,usr/bin,usr/sbin,sbin} || return 1
  chmod 1777 "$rootfs/tmp" && chmod 0700 "$rootfs/root" || return 1
  install -m 0755 "$busybox" "$rootfs/bin/busybox" || return 1
  read -r -a applets <<<"$(ironkube::busybox_applets)"
  for a in "${applets[@]}"; do
    ln -sf busybox "$rootfs/bin/$a" || return 1
  done
  # Debian's busybox has no printenv applet; a tiny script does the same job.
  cat >"$rootfs/bin/printenv" <<'SCRIPT' || return 1
#!/bin/sh
# printenv [NAME...]: print the whole environment, or the values of the named variables.
[ $# -eq 0 ] && exec /bin/busybox env
rc=0
for v in "$@"; do
  eval "if [ \"\${$v+set}\" = set ]; then printf '%s\n' \"\$$v\"; else rc=1; fi" 2>/dev/null || rc=1
done
exit $rc
SCRIPT
  chmod 0755 "$rootfs/bin/printenv" || return 1
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    >"$rootfs/etc/passwd" || return 1
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$rootfs/etc/group" || return 1
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" || return 1
  umoci repack --image "$tmp/layout:latest" "$bundle" || return 1
  umoci config --image "$tmp/layout:latest" --os linux --architecture "$arch" \
    --config.env 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --config.cmd /bin/sh || return 1
  umoci gc --layout "$tmp/layout" || return 1
}

# ironkube::start_registry DIR ADDR [HTPASSWD_FILE]
# Starts Debian's docker-registry serving plain http on ADDR (e.g. 127.0.0.1:5000), storing
# in DIR/data, logging to DIR/registry.log, with its pid in DIR/registry.pid. With
# HTPASSWD_FILE (bcrypt entries) the registry asks for basic auth. Waits until /v2/ answers.
ironkube::start_registry() {
  local dir=${1:?usage: ironkube::start_registry DIR ADDR [HTPASSWD_FILE]}
  local addr=${2:?usage: ironkube::start_registry DIR ADDR [HTPASSWD_FILE]}
  local htpasswd=${3:-}
  ironkube::image_tools_ensure || return 1
  mkdir -p "$dir/data" || return 1
  dir=$(cd "$dir" && pwd) || return 1
  if [[ -f $dir/registry.pid ]] && ironkube::_registry_alive "$(cat "$dir/registry.pid")"; then
    echo "images.sh: a registry already runs for $dir (pid $(cat "$dir/registry.pid"))" >&2
    return 1
  fi
  {
    echo 'version: 0.1'
    echo 'log:'
    echo '  level: warn'
    echo 'storage:'
    echo '  filesystem:'
    echo "    rootdirectory: $dir/data"
    echo '  delete:'
    echo '    enabled: true'
    echo 'http:'
    echo "  addr: $addr"
    if [[ -n $htpasswd ]]; then
      echo 'auth:'
      echo '  htpasswd:'
      echo '    realm: ironkube-registry'
      echo "    path: $(readlink -f "$htpasswd")"
    fi
  } >"$dir/config.yml"
  setsid docker-registry serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"
  local i code
  for ((i = 0; i < 150; i++)); do
    # 200 without auth, 401 with htpasswd auth: either way the registry is up.
    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$addr/v2/" 2>/dev/null) || code=000
    if [[ $code == 200 || $code == 401 ]]; then
      return 0
    fi
    # kill -0, not _registry_alive: until the fork execs, the child's cmdline is still bash's
    if ! kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
      echo "images.sh: docker-registry exited; log:" >&2
      tail -n 20 "$dir/registry.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "images.sh: docker-registry on $addr did not answer" >&2
  ironkube::stop_registry "$dir"
  return 1
}

# True when PID is a running docker-registry (guards against a recycled pid).
ironkube::_registry_alive() {
  local pid=$1
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'docker-registry'
}

# ironkube::stop_registry DIR: stops the registry started for DIR, if it runs.
ironkube::stop_registry() {
  local dir=${1:?usage: ironkube::stop_registry DIR}
  local pidfile=$dir/registry.pid pid i
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if ironkube::_registry_alive "$pid"; then
    kill "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      ironkube::_registry_alive "$pid" || break
      sleep 0.1
    done
    if ironkube::_registry_alive "$pid"; then
      kill -9 "$pid" 2>/dev/null
    fi
  fi
  rm -f "$pidfile"
}

# ironkube::push_image LAYOUT_DIR REF [USER:PASSWORD] [FORMAT]
# Copies the "latest" tag of an OCI layout to a registry (plain http or unverified TLS).
# FORMAT is passed to skopeo --format (oci or v2s2); by default skopeo keeps the OCI manifest.
ironkube::push_image() {
  local layout=${1:?usage: ironkube::push_image LAYOUT_DIR REF [USER:PASSWORD] [FORMAT]}
  local ref=${2:?usage: ironkube::push_image LAYOUT_DIR REF [USER:PASSWORD] [FORMAT]}
  local creds=${3:-} format=${4:-}
  local args=(--insecure-policy copy --quiet --dest-tls-verify=false)
  [[ -n $creds ]] && args+=(--dest-creds "$creds")
  [[ -n $format ]] && args+=(--format "$format")
  skopeo "${args[@]}" "oci:$layout:latest" "docker://$ref"
}
