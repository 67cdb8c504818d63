//! The kubelet's own cgroup housekeeping: which hierarchies the machine has
//! (cgroup v1 controllers, the v2 unified tree, or both), and removal of the
//! directories libcontainer leaves behind (a pod's cgroup and the parents it
//! created). Limits on a container's cgroup are set by libcontainer from the
//! OCI spec.

use std::path::{Path, PathBuf};

/// The mount points of every cgroup hierarchy (v1 and v2), from mountinfo.
pub fn hierarchies() -> Vec<PathBuf> {
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
            out.push(PathBuf::from(mp));
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
