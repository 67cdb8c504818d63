//! The kubelet's own cgroup housekeeping: which hierarchies the machine has
//! (cgroup v1 controllers, the v2 unified tree, or both), and removal of the
//! directories libcontainer leaves behind (a pod's cgroup and the parents it
//! created), and the pod-level limits (`apply_pod`). Limits on a container's
//! cgroup are set by libcontainer from the OCI spec.

use std::path::{Path, PathBuf};

/// The mount points of every cgroup hierarchy (v1 and v2), from mountinfo.
pub fn hierarchies() -> Vec<PathBuf> {
    mounts().into_iter().map(|(p, _)| p).collect()
}

/// (mount point, is cgroup v2) of every hierarchy.
fn mounts() -> Vec<(PathBuf, bool)> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        // fields: id parent maj:min root mountpoint opts ... - fstype source superopts
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mp) = left.split(' ').nth(4) {
            out.push((PathBuf::from(mp), fstype == "cgroup2"));
        }
    }
    out
}

/// Remove `path` (e.g. "/kubepods/burstable/pod<uid>/<id>") from every
/// hierarchy, children first. A cgroup that still has processes stays (the
/// kernel refuses with EBUSY) and is reported.
pub fn remove(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return true;
    }
    let mut ok = true;
    for h in hierarchies() {
        ok &= remove_tree(&h.join(rel));
    }
    ok
}

fn remove_tree(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return true; // not there
    };
    let mut ok = true;
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            ok &= remove_tree(&e.path());
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => ok,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ok,
        Err(e) => {
            tracing::warn!(cgroup = %dir.display(), error = %e, "removing a cgroup");
            false
        }
    }
}

/// Whether any hierarchy still has `path`.
pub fn exists(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    hierarchies().iter().any(|h| h.join(rel).is_dir())
}

/// cgroup v2's cpu.weight for v1 cpu.shares (upstream's conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// The files and values that put `r` on a cgroup, per hierarchy kind:
/// (controller directory hint for v1, file, value).
pub fn pod_settings(
    r: &oci_spec::runtime::LinuxResources,
    v2: bool,
) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    if let Some(cpu) = r.cpu() {
        let period = cpu.period().unwrap_or(100_000);
        if v2 {
            if let Some(s) = cpu.shares() {
                out.push(("", "cpu.weight", shares_to_weight(s).to_string()));
            }
            let quota = cpu
                .quota()
                .filter(|q| *q > 0)
                .map_or("max".to_string(), |q| q.to_string());
            out.push(("", "cpu.max", format!("{quota} {period}")));
        } else {
            if let Some(s) = cpu.shares() {
                out.push(("cpu", "cpu.shares", s.to_string()));
            }
            out.push(("cpu", "cpu.cfs_period_us", period.to_string()));
            out.push((
                "cpu",
                "cpu.cfs_quota_us",
                cpu.quota().filter(|q| *q > 0).unwrap_or(-1).to_string(),
            ));
        }
    }
    if let Some(limit) = r
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
    {
        if v2 {
            out.push(("", "memory.max", limit.to_string()));
        } else {
            out.push(("memory", "memory.limit_in_bytes", limit.to_string()));
        }
    }
    out
}

/// Make the pod's cgroup `path` in every hierarchy and put the pod-level
/// limits on it (upstream's pod cgroup: the sum of its containers' limits).
pub fn apply_pod(path: &str, r: &oci_spec::runtime::LinuxResources) -> Result<(), String> {
    let rel = path.trim_start_matches('/');
    for (mount, v2) in mounts() {
        let name = mount
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let settings = pod_settings(r, v2);
        let wanted: Vec<_> = settings
            .iter()
            .filter(|(hint, _, _)| v2 || name.split(',').any(|c| c == *hint))
            .collect();
        if wanted.is_empty() && !v2 {
            continue;
        }
        let dir = mount.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (_, file, value) in wanted {
            let f = dir.join(file);
            if !f.exists() {
                continue; // the controller is not enabled here
            }
            std::fs::write(&f, value).map_err(|e| format!("{}: {e}", f.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

    #[test]
    fn pod_limits_for_both_cgroup_versions() {
        let r = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let v1 = pod_settings(&r, false);
        assert!(v1.contains(&("cpu", "cpu.shares", "512".into())));
        assert!(v1.contains(&("cpu", "cpu.cfs_quota_us", "50000".into())));
        assert!(v1.contains(&("memory", "memory.limit_in_bytes", (64u64 << 20).to_string())));
        let v2 = pod_settings(&r, true);
        assert!(v2.contains(&("", "cpu.max", "50000 100000".into())));
        assert!(v2.contains(&("", "memory.max", (64u64 << 20).to_string())));
        assert!(v2.contains(&("", "cpu.weight", shares_to_weight(512).to_string())));
        // no quota: unlimited
        let r = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(2u64).build().unwrap())
            .build()
            .unwrap();
        assert!(pod_settings(&r, false).contains(&("cpu", "cpu.cfs_quota_us", "-1".into())));
        assert!(pod_settings(&r, true).contains(&("", "cpu.max", "max 100000".into())));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
