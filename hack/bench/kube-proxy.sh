#!/usr/bin/env bash
# Benchmark kube-proxy's nftables syncs in a throwaway network namespace:
# the full sync of SERVICES Services with 3 endpoints each (1,000 and 10,000)
# against `nft -f` of the same ruleset text in the same run (target ratio
# <= 1.2), and the time to apply a one-endpoint change at 10,000 Services
# (target < 50 ms, independent of the number of Services). Needs root.
#   SIZES ("1000 10000")
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"

SIZES=${SIZES:-"1000 10000"}
[[ $(id -u) -eq 0 ]] || die "needs root (it makes a network namespace)"
ironkube::ensure_packages
TARGET=$(ironkube::target_dir)
log "building release binaries"
(cd "$IRONKUBE_ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --bin ironkube-bench)

NS=ironkube-proxy-bench-$$
trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
ip netns add "$NS"

printf '\n%-44s %10s %10s %8s %14s %14s\n' "services x 3 endpoints" "sync s" "nft -f s" "ratio" "1 change ms" "kernel min ms"
for n in $SIZES; do
  line=$(ip netns exec "$NS" "$TARGET/release/ironkube-bench" proxy-sync --services "$n")
  python3 - "$n" "$line" <<'PY'
import json, sys
n, v = sys.argv[1], json.loads(sys.argv[2])
print(f"{n:<44} {v['full_seconds']:10.2f} {v['nft_seconds']:10.2f} {v['ratio']:8.2f} {v['change_ms']:14.1f} {v['kernel_verdict_rule_ms']:14.1f}")
PY
done
printf '%-44s %10s %10s %8s %14s\n' "target" "" "" "<= 1.2" "< 50"
printf '\n%s\n' "kernel min: one jump rule added to a new, unreferenced chain of the same table in one netlink batch - the least any change holding a verdict (dnat, goto, jump) costs, as the kernel then validates the whole table"
