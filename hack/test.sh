#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs the unit
# and integration tests of the whole workspace (integration tests start real
# etcd processes and drive the apiserver with the real kubectl and kube-rs;
# as root, the kubelet and kube-proxy tests use real namespaces, cgroups and
# nftables, and the e2e suite (e2e/) brings up a whole 2-node local cluster
# from the binaries built here), after checking the systemd units.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

ironkube::ensure_packages
export CARGO_TARGET_DIR=$(ironkube::target_dir)
# incremental state only grows a persistent target dir; CI builds once
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export KUBECTL=$(ironkube::kubectl)
cd "$IRONKUBE_ROOT"
log "kubectl for tests: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | head -1))"
log "cargo fmt --check"
cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
log "building (target dir $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked
log "systemd units (hack/systemd)"
IRONKUBE_BIN=$CARGO_TARGET_DIR/debug bash "$IRONKUBE_ROOT/hack/verify-systemd.sh"
log "running tests"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}" "$@"
