//! Builds the OCI runtime spec (`config.json`) of a pod's container, the
//! way the kubelet + a CRI runtime (containerd) would: kubelet semantics for
//! command/args, security context, resources and OOM score; containerd-like
//! defaults for mounts, capabilities, devices and masked paths.
//!
//! Also the pod-level cgroup values (`pod_cgroup_resources`) and the
//! cgroupfs parent of a pod (`qos_cgroup_parent`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxHugepageLimit, LinuxMemory, LinuxNamespace, LinuxNamespaceType,
    LinuxResources, Mount, Process, Root, Spec, User,
};

use crate::qos::{
    container_limits, container_requests, cpu_millis, is_restartable_init_container, memory_bytes,
    qos_class, QosClass,
};

pub use crate::image::ImageConfig;

/// Namespaces of the pod sandbox that containers join (paths such as
/// `/proc/<pid>/ns/net` or bind-mounted namespace files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
    /// The pod's shared pid namespace (`shareProcessNamespace: true`); when
    /// `None` the container gets its own.
    pub pid: Option<PathBuf>,
}

/// A bind mount into the container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountSpec {
    pub host_path: PathBuf,
    /// Absolute path in the container.
    pub container_path: String,
    pub read_only: bool,
    /// `None`/`"None"`/`"rprivate"`, `"HostToContainer"`/`"rslave"`,
    /// `"Bidirectional"`/`"rshared"` (API or OCI spelling).
    pub propagation: Option<String>,
}

/// Everything [`container_spec`] needs.
pub struct ContainerInputs<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image_config: &'a ImageConfig,
    /// The resolved environment (see `crate::env::container_env`).
    pub env: &'a [(String, String)],
    /// The container's root filesystem (merged overlay directory).
    pub rootfs: &'a Path,
    pub namespaces: &'a SandboxNamespaces,
    pub mounts: &'a [MountSpec],
    /// e.g. `/kubepods/burstable/pod<uid>/<container-id>`.
    pub cgroups_path: &'a str,
    pub tty: bool,
}

/// Why a container spec could not be built (lower-case messages, as the
/// kubelet reports them in `CreateContainerError`/`CreateContainerConfigError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserBreaksNonRoot { pod: String, container: String },
    #[error(
        "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})"
    )]
    ImageWillRunAsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})")]
    NonNumericImageUser {
        user: String,
        pod: String,
        container: String,
    },
    #[error("invalid mount propagation {0:?}")]
    InvalidPropagation(String),
    #[error("mount destination {0:?} is not an absolute path")]
    RelativeMountPath(String),
    #[error("oci spec: {0}")]
    Oci(String),
}

/// The default `PATH` the runtime puts in every container.
pub const DEFAULT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CFS period used for quotas (µs).
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const MIN_QUOTA_US: i64 = 1_000;
const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
const BESTEFFORT_OOM_SCORE_ADJ: i32 = 1000;

/// The runtime's default capability set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability known to oci-spec (used for `ALL` and privileged).
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// The kubelet's default masked paths (`procMount: Default`).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The kubelet's default read-only paths (`procMount: Default`).
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `name_namespace(uid)`, the kubelet's pod format in messages.
fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// Builds the OCI spec of one container.
pub fn container_spec(i: &ContainerInputs) -> Result<Spec, SpecError> {
    let default_spec = PodSpec::default();
    let pod_spec = i.pod.spec.as_ref().unwrap_or(&default_spec);
    let c = i.container;
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod_spec.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let host_network = pod_spec.host_network.unwrap_or(false);
    let host_ipc = pod_spec.host_ipc.unwrap_or(false);
    let host_pid = pod_spec.host_pid.unwrap_or(false);

    // ---- user -------------------------------------------------------
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    let run_as_non_root = sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
    let image_user = ImageUser::parse(i.image_config.user.as_deref().unwrap_or(""));
    if run_as_non_root {
        match run_as_user {
            Some(0) => {
                return Err(SpecError::RunAsUserBreaksNonRoot {
                    pod: format_pod(i.pod),
                    container: c.name.clone(),
                })
            }
            Some(_) => {}
            None => match &image_user.user {
                IdOrName::Id(0) | IdOrName::None => {
                    return Err(SpecError::ImageWillRunAsRoot {
                        pod: format_pod(i.pod),
                        container: c.name.clone(),
                    })
                }
                IdOrName::Name(n) => {
                    return Err(SpecError::NonNumericImageUser {
                        user: n.clone(),
                        pod: format_pod(i.pod),
                        container: c.name.clone(),
                    })
                }
                IdOrName::Id(_) => {}
            },
        }
    }
    let db = UserDb::load(i.rootfs);
    let (uid, username) = match run_as_user {
        Some(u) => (clamp_id(u), None),
        None => match &image_user.user {
            IdOrName::None => (0, None),
            IdOrName::Id(u) => (*u, None),
            // Unresolvable names run as uid 0 (only possible without
            // runAsNonRoot, which rejects names above).
            IdOrName::Name(n) => (db.uid_of(n).unwrap_or(0), Some(n.clone())),
        },
    };
    let gid = match run_as_group {
        Some(g) => clamp_id(g),
        None => {
            let from_image = if run_as_user.is_none() {
                match &image_user.group {
                    IdOrName::Id(g) => Some(*g),
                    IdOrName::Name(n) => db.gid_of_group(n),
                    IdOrName::None => None,
                }
            } else {
                None
            };
            from_image.or_else(|| db.primary_gid(uid)).unwrap_or(0)
        }
    };
    let strict_groups = psc.supplemental_groups_policy.as_deref() == Some("Strict");
    let mut gids: Vec<u32> = vec![gid];
    if !strict_groups {
        let name = username.or_else(|| db.name_of(uid));
        if let Some(name) = name {
            gids.extend(db.groups_of(&name));
        }
    }
    gids.extend(psc.fs_group.map(clamp_id));
    gids.extend(
        psc.supplemental_groups
            .iter()
            .flatten()
            .map(|g| clamp_id(*g)),
    );
    let mut seen = HashSet::new();
    gids.retain(|g| seen.insert(*g));

    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(gids));

    // ---- args ----------------------------------------------------------
    let image_env = crate::env::parse_image_env(&i.image_config.env);
    let image_pairs: HashSet<(&str, &str)> = image_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // $(VAR) is expanded against the kubelet-provided variables only;
    // entries identical to the image's are assumed to come from the image.
    let expansion: HashMap<&str, &str> = i
        .env
        .iter()
        .filter(|(k, v)| !image_pairs.contains(&(k.as_str(), v.as_str())))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expand =
        |s: &String| crate::env::expand(s, |name| expansion.get(name).map(|v| v.to_string()));
    let command: Vec<String> = c.command.iter().flatten().map(expand).collect();
    let args: Vec<String> = c.args.iter().flatten().map(expand).collect();
    let process_args = merge_args(&command, &args, i.image_config)?;

    // ---- env -------------------------------------------------------------
    let mut base = vec![("PATH".to_string(), DEFAULT_PATH_ENV.to_string())];
    if let Some(h) = pod_hostname(i.pod, host_network) {
        base.push(("HOSTNAME".to_string(), h));
    }
    let base = crate::env::merge_env(&base, &image_env);
    let env: Vec<String> = crate::env::merge_env(&base, i.env)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();

    // ---- cwd -------------------------------------------------------------
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| i.image_config.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    // ---- capabilities ------------------------------------------------------
    let caps: Capabilities = if privileged {
        ALL_CAPABILITIES.iter().copied().collect()
    } else {
        let add: Vec<String> = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        let drop: Vec<String> = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        effective_capabilities(&add, &drop)
    };
    let mut lcaps = LinuxCapabilities::default();
    lcaps.set_bounding(Some(caps.clone()));
    lcaps.set_effective(Some(caps.clone()));
    lcaps.set_permitted(Some(caps));
    lcaps.set_inheritable(None);
    lcaps.set_ambient(None);

    // ---- process -------------------------------------------------------------

    let mut process = Process::default();
    process.set_terminal(Some(i.tty));
    process.set_console_size(None);
    process.set_user(user);
    process.set_args(Some(process_args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_capabilities(Some(lcaps));
    // no rlimits: the container inherits the shim's (raising the hard
    // nofile limit needs CAP_SYS_RESOURCE, which sandboxed machines lack)
    process.set_rlimits(None);
    process.set_no_new_privileges(if sc.allow_privilege_escalation == Some(false) {
        Some(true)
    } else {
        None
    });
    process.set_apparmor_profile(None);
    process.set_selinux_label(None);
    process.set_oom_score_adj(match machine_memory_bytes() {
        Some(cap) => Some(oom_score_adj(i.pod, c, cap)),
        None => match qos_class(i.pod) {
            QosClass::Burstable => None,
            _ => Some(oom_score_adj(i.pod, c, 1)),
        },
    });

    // ---- mounts ----------------------------------------------------------------
    let (mounts, rootfs_propagation) = build_mounts(i.mounts, privileged, host_ipc)?;

    // ---- linux -----------------------------------------------------------------
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)];
    if !host_pid {
        namespaces.push(ns(LinuxNamespaceType::Pid, i.namespaces.pid.clone()));
    }
    if !host_network {
        namespaces.push(ns(
            LinuxNamespaceType::Network,
            Some(i.namespaces.net.clone()),
        ));
    }
    if !host_ipc {
        namespaces.push(ns(LinuxNamespaceType::Ipc, Some(i.namespaces.ipc.clone())));
    }
    if !host_network {
        namespaces.push(ns(LinuxNamespaceType::Uts, Some(i.namespaces.uts.clone())));
    }
    if !privileged {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None));
    }

    let mut devices = default_devices();
    let device_rules = if privileged {
        let known: HashSet<PathBuf> = devices.iter().map(|d| d.path().clone()).collect();
        devices.extend(
            host_devices(Path::new("/dev"))
                .into_iter()
                .filter(|d| !known.contains(d.path())),
        );
        let mut all = LinuxDeviceCgroup::default();
        all.set_allow(true);
        all.set_typ(Some(LinuxDeviceType::A));
        all.set_access(Some("rwm".to_string()));
        vec![all]
    } else {
        default_device_rules()
    };

    let mut resources = container_resources(c);
    resources.set_devices(Some(device_rules));

    let proc_unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let (masked, readonly) = if privileged || proc_unmasked {
        (Vec::new(), Vec::new())
    } else {
        (
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    };

    let sysctls: HashMap<String, String> = psc
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();

    let mut linux = Linux::default();
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_sysctl(if sysctls.is_empty() {
        None
    } else {
        Some(sysctls)
    });
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(i.cgroups_path)));
    linux.set_namespaces(Some(namespaces));
    linux.set_devices(Some(devices));
    linux.set_seccomp(None);
    linux.set_rootfs_propagation(rootfs_propagation);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_mount_label(None);

    // ---- root / annotations ------------------------------------------------------
    let mut root = Root::default();
    root.set_path(i.rootfs.to_path_buf());
    root.set_readonly(Some(sc.read_only_root_filesystem.unwrap_or(false)));

    let annotations: HashMap<String, String> = [
        ("io.kubernetes.pod.name", i.pod.metadata.name.clone()),
        (
            "io.kubernetes.pod.namespace",
            i.pod.metadata.namespace.clone(),
        ),
        ("io.kubernetes.pod.uid", i.pod.metadata.uid.clone()),
        ("io.kubernetes.container.name", Some(c.name.clone())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.unwrap_or_default()))
    .collect();

    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts));
    spec.set_process(Some(process));
    spec.set_hostname(None);
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(annotations));
    spec.set_linux(Some(linux));
    Ok(spec)
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path);
    n
}

fn clamp_id(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX })
}

/// Merges the container's (already expanded) command/args with the image's
/// entrypoint/cmd: a command replaces the entrypoint and drops the image
/// cmd; args replace the cmd.
pub fn merge_args(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::new();
    if command.is_empty() {
        if !(image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()) {
            out.extend(image.entrypoint.iter().cloned());
        }
        if args.is_empty() {
            out.extend(image.cmd.iter().cloned());
        } else {
            out.extend(args.iter().cloned());
        }
    } else {
        out.extend(command.iter().cloned());
        out.extend(args.iter().cloned());
    }
    if out.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(out)
}

/// Parses a capability name with or without the `CAP_` prefix, any case.
pub fn parse_capability(name: &str) -> Option<Capability> {
    let up = name.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    bare.parse::<Capability>().ok()
}

/// The default set with `add` and `drop` applied in the runtime's order:
/// `ALL` in add (all caps), `ALL` in drop (none), then individual adds,
/// then individual drops. Unknown names are ignored.
pub fn effective_capabilities(add: &[String], drop: &[String]) -> Capabilities {
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    let mut caps: Capabilities = DEFAULT_CAPABILITIES.iter().copied().collect();
    if add.iter().any(is_all) {
        caps = ALL_CAPABILITIES.iter().copied().collect();
    }
    if drop.iter().any(is_all) {
        caps.clear();
    }
    for a in add.iter().filter(|s| !is_all(s)) {
        if let Some(c) = parse_capability(a) {
            caps.insert(c);
        }
    }
    for d in drop.iter().filter(|s| !is_all(s)) {
        if let Some(c) = parse_capability(d) {
            caps.remove(&c);
        }
    }
    caps
}

/// The container's hostname as the runtime's `HOSTNAME` variable sees it:
/// `spec.hostname` or the pod name (at most 63 characters, no trailing `-`
/// or `.`), or the node's hostname for host-network pods.
fn pod_hostname(pod: &Pod, host_network: bool) -> Option<String> {
    if host_network {
        return std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
    }
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())?;
    if name.len() <= 63 {
        return Some(name);
    }
    let truncated: String = name.chars().take(63).collect();
    Some(truncated.trim_end_matches(['-', '.']).to_string())
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn build_mounts(
    extra: &[MountSpec],
    privileged: bool,
    host_ipc: bool,
) -> Result<(Vec<Mount>, Option<String>), SpecError> {
    let rw_or_ro = if privileged { "rw" } else { "ro" };
    let mut defaults = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        if host_ipc {
            mount("/dev/shm", "bind", "/dev/shm", &["rbind", "rprivate", "rw"])
        } else {
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            )
        },
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", rw_or_ro],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", rw_or_ro],
        ),
    ];

    let mut targets = HashSet::new();
    for m in extra {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::RelativeMountPath(m.container_path.clone()));
        }
        targets.insert(clean_path(&m.container_path));
    }
    let dev_overridden = targets.contains("/dev");
    defaults.retain(|m| {
        let dst = clean_path(&m.destination().to_string_lossy());
        !(targets.contains(&dst) || (dev_overridden && dst.starts_with("/dev/")))
    });

    // Shallow paths first so deeper mounts are not shadowed.
    let mut ordered: Vec<&MountSpec> = extra.iter().collect();
    ordered.sort_by_key(|m| clean_path(&m.container_path).split('/').count());

    let mut rootfs_propagation: Option<String> = None;
    let mut out = defaults;
    for m in ordered {
        let prop = match m.propagation.as_deref() {
            None | Some("") | Some("None") | Some("rprivate") | Some("private") => "rprivate",
            Some("HostToContainer") | Some("rslave") | Some("slave") => "rslave",
            Some("Bidirectional") | Some("rshared") | Some("shared") => "rshared",
            Some(other) => return Err(SpecError::InvalidPropagation(other.to_string())),
        };
        match prop {
            "rshared" => rootfs_propagation = Some("rshared".to_string()),
            "rslave" if rootfs_propagation.as_deref() != Some("rshared") => {
                rootfs_propagation = Some("rslave".to_string())
            }
            _ => {}
        }
        let host = m.host_path.to_string_lossy();
        out.push(mount(
            &clean_path(&m.container_path),
            "bind",
            &host,
            &["rbind", prop, if m.read_only { "ro" } else { "rw" }],
        ));
    }
    Ok((out, rootfs_propagation))
}

/// Lexically cleans an absolute path (`//a/./b/` -> `/a/b`).
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn char_device(path: &str, major: i64, minor: i64) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(path));
    d.set_typ(LinuxDeviceType::C);
    d.set_major(major);
    d.set_minor(minor);
    d.set_file_mode(Some(0o666));
    d.set_uid(Some(0));
    d.set_gid(Some(0));
    d
}

/// /dev/null, zero, full, random, urandom, tty.
pub fn default_devices() -> Vec<LinuxDevice> {
    vec![
        char_device("/dev/null", 1, 3),
        char_device("/dev/zero", 1, 5),
        char_device("/dev/full", 1, 7),
        char_device("/dev/random", 1, 8),
        char_device("/dev/urandom", 1, 9),
        char_device("/dev/tty", 5, 0),
    ]
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// Deny everything, then allow mknod and the default devices, ptmx and
/// pty slaves.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
        rule(true, C, Some(1), Some(3), "rwm"),
        rule(true, C, Some(1), Some(5), "rwm"),
        rule(true, C, Some(1), Some(7), "rwm"),
        rule(true, C, Some(1), Some(8), "rwm"),
        rule(true, C, Some(1), Some(9), "rwm"),
        rule(true, C, Some(5), Some(0), "rwm"),
        rule(true, C, Some(5), Some(1), "rwm"),
        rule(true, C, Some(5), Some(2), "rwm"),
        rule(true, C, Some(136), None, "rwm"),
    ]
}

/// Device nodes under `root` (the host's `/dev`) for privileged containers,
/// skipping the directories the runtime skips and `console`.
pub fn host_devices(root: &Path) -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0u32)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let path = e.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                if depth < 8
                    && !matches!(
                        name.as_ref(),
                        "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                    )
                {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if name == "console" {
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            let rdev = md.rdev();
            let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
            let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
            let mut d = LinuxDevice::default();
            d.set_path(path);
            d.set_typ(typ);
            d.set_major(i64::try_from(major).unwrap_or(0));
            d.set_minor(i64::try_from(minor).unwrap_or(0));
            d.set_file_mode(Some(md.mode() & 0o7777));
            d.set_uid(Some(md.uid()));
            d.set_gid(Some(md.gid()));
            out.push(d);
        }
    }
    out
}

/// `MilliCPUToShares`: millicores * 1024 / 1000, within [2, 262144].
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = u64::try_from(milli)
        .unwrap_or(u64::MAX)
        .saturating_mul(1024)
        / 1000;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// `milliCPUToQuota`: 0 for no limit, otherwise millicores * period / 1000,
/// at least 1000 µs.
pub fn milli_cpu_to_quota(milli: i64, period: u64) -> i64 {
    if milli <= 0 {
        return 0;
    }
    let period = i64::try_from(period).unwrap_or(i64::MAX);
    (milli.saturating_mul(period) / 1000).max(MIN_QUOTA_US)
}

/// `hugepages-2Mi` -> `2MB` (the OCI page-size spelling).
fn hugepage_size(resource: &str) -> Option<String> {
    let size = resource.strip_prefix("hugepages-")?;
    let bytes = memory_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        size.to_string(),
    ))?;
    const UNITS: [(i64, &str); 4] = [
        (1 << 40, "TB"),
        (1 << 30, "GB"),
        (1 << 20, "MB"),
        (1 << 10, "KB"),
    ];
    for (unit, suffix) in UNITS {
        if bytes >= unit && bytes % unit == 0 {
            return Some(format!("{}{suffix}", bytes / unit));
        }
    }
    Some(format!("{bytes}B"))
}

/// The container cgroup's cpu/memory/hugepage settings (no device rules).
pub fn container_resources(c: &Container) -> LinuxResources {
    let requests = container_requests(c);
    let limits = container_limits(c);
    let cpu_req = requests.get("cpu").and_then(cpu_millis).unwrap_or(0);
    let cpu_lim = limits.get("cpu").and_then(cpu_millis).unwrap_or(0);
    let mem_lim = limits.get("memory").and_then(memory_bytes).unwrap_or(0);

    let mut cpu = LinuxCpu::default();
    cpu.set_shares(Some(milli_cpu_to_shares(cpu_req)));
    let quota = milli_cpu_to_quota(cpu_lim, CPU_PERIOD_US);
    if quota > 0 {
        cpu.set_quota(Some(quota));
    }
    cpu.set_period(Some(CPU_PERIOD_US));

    let mut res = LinuxResources::default();
    res.set_cpu(Some(cpu));
    if mem_lim > 0 {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(mem_lim));
        // memory+swap == memory: no swap.
        mem.set_swap(Some(mem_lim));
        res.set_memory(Some(mem));
    }
    let huge: Vec<LinuxHugepageLimit> = limits
        .iter()
        .filter_map(|(k, q)| {
            let size = hugepage_size(k)?;
            let mut h = LinuxHugepageLimit::default();
            h.set_page_size(size);
            h.set_limit(memory_bytes(q)?);
            Some(h)
        })
        .collect();
    if !huge.is_empty() {
        res.set_hugepage_limits(Some(huge));
    }
    res
}

/// Per-resource (cpu millicores, memory bytes) totals for a pod, with
/// upstream's init/sidecar rules: regular containers and sidecars add up;
/// each regular init container runs with the sidecars started before it;
/// the pod needs the larger of the two. Pod overhead is added.
fn pod_totals(
    pod: &Pod,
    get: impl Fn(&Container) -> (i64, i64),
    overhead_only_if_set: bool,
) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let add = |a: (i64, i64), b: (i64, i64)| (a.0.saturating_add(b.0), a.1.saturating_add(b.1));
    let max = |a: (i64, i64), b: (i64, i64)| (a.0.max(b.0), a.1.max(b.1));
    let mut total = (0, 0);
    for c in &spec.containers {
        total = add(total, get(c));
    }
    let mut sidecars = (0, 0);
    let mut init_max = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let v = get(c);
        let need = if is_restartable_init_container(c) {
            total = add(total, v);
            sidecars = add(sidecars, v);
            sidecars
        } else {
            add(v, sidecars)
        };
        init_max = max(init_max, need);
    }
    total = max(total, init_max);
    if let Some(o) = spec.overhead.as_ref() {
        let oc = o.get("cpu").and_then(cpu_millis).unwrap_or(0);
        let om = o.get("memory").and_then(memory_bytes).unwrap_or(0);
        if !overhead_only_if_set || total.0 > 0 {
            total.0 = total.0.saturating_add(oc);
        }
        if !overhead_only_if_set || total.1 > 0 {
            total.1 = total.1.saturating_add(om);
        }
    }
    total
}

/// The pod-level cgroup settings (upstream `ResourceConfigForPod`):
/// Guaranteed pods get shares, quota and a memory limit; Burstable pods get
/// shares, plus a quota when every container has a cpu limit and a memory
/// limit when every container has one; BestEffort pods get the minimum
/// shares.
pub fn pod_cgroup_resources(pod: &Pod) -> LinuxResources {
    let req = pod_totals(
        pod,
        |c| {
            let r = container_requests(c);
            (
                r.get("cpu").and_then(cpu_millis).unwrap_or(0),
                r.get("memory").and_then(memory_bytes).unwrap_or(0),
            )
        },
        false,
    );
    let lim = pod_totals(
        pod,
        |c| {
            let l = container_limits(c);
            (
                l.get("cpu").and_then(cpu_millis).unwrap_or(0),
                l.get("memory").and_then(memory_bytes).unwrap_or(0),
            )
        },
        true,
    );
    let (mut cpu_declared, mut mem_declared) = (true, true);
    if let Some(spec) = pod.spec.as_ref() {
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let l = container_limits(c);
            if l.get("cpu").and_then(cpu_millis).unwrap_or(0) == 0 {
                cpu_declared = false;
            }
            if l.get("memory").and_then(memory_bytes).unwrap_or(0) == 0 {
                mem_declared = false;
            }
        }
    }
    let shares = milli_cpu_to_shares(req.0);
    let quota = milli_cpu_to_quota(lim.0, CPU_PERIOD_US);

    let mut cpu = LinuxCpu::default();
    let mut res = LinuxResources::default();
    let set_memory = |res: &mut LinuxResources| {
        let mut m = LinuxMemory::default();
        m.set_limit(Some(lim.1));
        res.set_memory(Some(m));
    };
    match qos_class(pod) {
        QosClass::Guaranteed => {
            cpu.set_shares(Some(shares));
            if quota > 0 {
                cpu.set_quota(Some(quota));
            }
            cpu.set_period(Some(CPU_PERIOD_US));
            set_memory(&mut res);
        }
        QosClass::Burstable => {
            cpu.set_shares(Some(shares));
            if cpu_declared && quota > 0 {
                cpu.set_quota(Some(quota));
                cpu.set_period(Some(CPU_PERIOD_US));
            }
            if mem_declared {
                set_memory(&mut res);
            }
        }
        QosClass::BestEffort => {
            cpu.set_shares(Some(MIN_SHARES));
        }
    }
    res.set_cpu(Some(cpu));
    res
}

/// The cgroupfs parent of a pod: `/kubepods/pod<uid>` (Guaranteed),
/// `/kubepods/burstable/pod<uid>`, `/kubepods/besteffort/pod<uid>`.
pub fn qos_cgroup_parent(qos: QosClass, pod_uid: &str) -> String {
    match qos {
        QosClass::Guaranteed => format!("/kubepods/pod{pod_uid}"),
        QosClass::Burstable => format!("/kubepods/burstable/pod{pod_uid}"),
        QosClass::BestEffort => format!("/kubepods/besteffort/pod{pod_uid}"),
    }
}

/// Upstream's `GetContainerOOMScoreAdjust`: -997 for node-critical and
/// Guaranteed pods, 1000 for BestEffort, otherwise
/// `1000 - 1000 * memoryRequest / memoryCapacity` within [3, 999]; a
/// sidecar gets no higher a score than the regular containers.
pub fn oom_score_adj(pod: &Pod, c: &Container, memory_capacity: i64) -> i32 {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.priority_class_name.as_deref()) == Some("system-node-critical") {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BESTEFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let capacity = memory_capacity.max(1);
    let raw = |c: &Container| -> i64 {
        let req = container_requests(c)
            .get("memory")
            .and_then(memory_bytes)
            .unwrap_or(0);
        1000 - (1000i128 * i128::from(req) / i128::from(capacity)) as i64
    };
    let mut score = raw(c);
    let is_sidecar = spec
        .map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .any(|ic| ic.name == c.name && is_restartable_init_container(ic))
        })
        .unwrap_or(false);
    if is_sidecar {
        if let Some(min) = spec.and_then(|s| s.containers.iter().map(raw).min()) {
            score = score.min(min);
        }
    }
    let floor = i64::from(1000 + GUARANTEED_OOM_SCORE_ADJ);
    if score < floor {
        return 1000 + GUARANTEED_OOM_SCORE_ADJ;
    }
    if score == i64::from(BESTEFFORT_OOM_SCORE_ADJ) {
        return BESTEFFORT_OOM_SCORE_ADJ - 1;
    }
    i32::try_from(score).unwrap_or(BESTEFFORT_OOM_SCORE_ADJ - 1)
}

fn machine_memory_bytes() -> Option<i64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

// ---- image user --------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum IdOrName {
    None,
    Id(u32),
    Name(String),
}

impl IdOrName {
    fn parse(s: &str) -> Self {
        if s.is_empty() {
            IdOrName::None
        } else if let Ok(id) = s.parse::<u32>() {
            IdOrName::Id(id)
        } else {
            IdOrName::Name(s.to_string())
        }
    }
}

struct ImageUser {
    user: IdOrName,
    group: IdOrName,
}

impl ImageUser {
    fn parse(s: &str) -> Self {
        let (u, g) = s.split_once(':').unwrap_or((s, ""));
        ImageUser {
            user: IdOrName::parse(u),
            group: IdOrName::parse(g),
        }
    }
}

/// `/etc/passwd` and `/etc/group` of the container's rootfs (read without
/// following symlinks; missing or symlinked files count as empty).
struct UserDb {
    users: Vec<(String, u32, u32)>,
    groups: Vec<(String, u32, Vec<String>)>,
}

impl UserDb {
    fn load(rootfs: &Path) -> Self {
        let users = read_rootfs_file(rootfs, "etc/passwd")
            .map(|s| {
                s.lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        if f.len() < 4 {
                            return None;
                        }
                        Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let groups = read_rootfs_file(rootfs, "etc/group")
            .map(|s| {
                s.lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        if f.len() < 3 {
                            return None;
                        }
                        let members = f
                            .get(3)
                            .map(|m| {
                                m.split(',')
                                    .filter(|x| !x.is_empty())
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default();
                        Some((f[0].to_string(), f[2].parse().ok()?, members))
                    })
                    .collect()
            })
            .unwrap_or_default();
        UserDb { users, groups }
    }
    fn uid_of(&self, name: &str) -> Option<u32> {
        self.users.iter().find(|u| u.0 == name).map(|u| u.1)
    }
    fn name_of(&self, uid: u32) -> Option<String> {
        self.users.iter().find(|u| u.1 == uid).map(|u| u.0.clone())
    }
    fn primary_gid(&self, uid: u32) -> Option<u32> {
        self.users.iter().find(|u| u.1 == uid).map(|u| u.2)
    }
    fn gid_of_group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|g| g.0 == name).map(|g| g.1)
    }
    fn groups_of(&self, user: &str) -> Vec<u32> {
        self.groups
            .iter()
            .filter(|g| g.2.iter().any(|m| m == user))
            .map(|g| g.1)
            .collect()
    }
}

fn read_rootfs_file(rootfs: &Path, rel: &str) -> Option<String> {
    let mut p = rootfs.to_path_buf();
    for comp in rel.split('/') {
        p.push(comp);
        let md = std::fs::symlink_metadata(&p).ok()?;
        if md.file_type().is_symlink() {
            return None;
        }
    }
    std::fs::read_to_string(p).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities as KCaps, PodSecurityContext, ResourceRequirements, SecurityContext,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn res(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let m = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Some(ResourceRequirements {
            requests: m(req),
            limits: m(lim),
            ..Default::default()
        })
    }

    fn ctr(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn pod_with(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("1234-abcd".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/image/bin".into(), "IMG=1".into()],
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            working_dir: Some("/app".into()),
            user: None,
        }
    }

    fn nss() -> SandboxNamespaces {
        SandboxNamespaces {
            net: "/proc/42/ns/net".into(),
            ipc: "/proc/42/ns/ipc".into(),
            uts: "/proc/42/ns/uts".into(),
            pid: None,
        }
    }

    fn build(
        pod: &Pod,
        img: &ImageConfig,
        env: &[(String, String)],
        mounts: &[MountSpec],
    ) -> Result<Spec, SpecError> {
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let ns = nss();
        container_spec(&ContainerInputs {
            pod,
            container,
            image_config: img,
            env,
            rootfs: Path::new("/nonexistent-rootfs"),
            namespaces: &ns,
            mounts,
            cgroups_path: "/kubepods/burstable/pod1234-abcd/cid",
            tty: false,
        })
    }

    fn args_of(s: &Spec) -> Vec<String> {
        s.process().as_ref().unwrap().args().clone().unwrap()
    }

    fn caps_of(s: &Spec) -> Capabilities {
        s.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    type ArgsCase<'a> = (Option<Vec<&'a str>>, Option<Vec<&'a str>>, Vec<&'a str>);

    #[test]
    fn args_merging() {
        let img = image();
        let cases: Vec<ArgsCase> = vec![
            (None, None, vec!["/entry", "serve", "--port=80"]),
            (None, Some(vec!["x"]), vec!["/entry", "x"]),
            (Some(vec!["/bin/sh"]), None, vec!["/bin/sh"]),
            (
                Some(vec!["/bin/sh", "-c"]),
                Some(vec!["echo"]),
                vec!["/bin/sh", "-c", "echo"],
            ),
        ];
        for (cmd, args, want) in cases {
            let mut c = ctr("app");
            c.command = cmd.map(|v| v.iter().map(|s| s.to_string()).collect());
            c.args = args.map(|v| v.iter().map(|s| s.to_string()).collect());
            let spec = build(&pod_with(vec![c]), &img, &[], &[]).unwrap();
            assert_eq!(args_of(&spec), want);
        }
        // Entrypoint [""] counts as none.
        let mut img2 = image();
        img2.entrypoint = vec![String::new()];
        let spec = build(&pod_with(vec![ctr("app")]), &img2, &[], &[]).unwrap();
        assert_eq!(args_of(&spec), vec!["serve", "--port=80"]);
        // Nothing at all.
        let empty = ImageConfig::default();
        assert_eq!(
            build(&pod_with(vec![ctr("app")]), &empty, &[], &[]).unwrap_err(),
            SpecError::NoCommand
        );
        assert_eq!(SpecError::NoCommand.to_string(), "no command specified");
    }

    #[test]
    fn env_expansion_in_args_and_process_env() {
        let mut c = ctr("app");
        c.command = Some(vec![
            "echo".into(),
            "$(GREETING)".into(),
            "$$(GREETING)".into(),
        ]);
        c.args = Some(vec![
            "$(UNDEFINED)".into(),
            "$(IMG)".into(),
            "$(PATH)".into(),
        ]);
        let env = vec![
            kv("PATH", "/image/bin"),
            kv("IMG", "1"),
            kv("GREETING", "hello"),
        ];
        let spec = build(&pod_with(vec![c]), &image(), &env, &[]).unwrap();
        assert_eq!(
            args_of(&spec),
            vec![
                "echo",
                "hello",
                "$(GREETING)",
                "$(UNDEFINED)",
                "$(IMG)",
                "$(PATH)"
            ]
        );
        let penv = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(
            penv,
            vec!["PATH=/image/bin", "HOSTNAME=web", "IMG=1", "GREETING=hello"]
        );
        // Explicitly different from the image: expandable.
        let mut c = ctr("app");
        c.command = Some(vec!["$(IMG)".into()]);
        let spec = build(&pod_with(vec![c]), &image(), &[kv("IMG", "2")], &[]).unwrap();
        assert_eq!(args_of(&spec), vec!["2"]);
    }

    #[test]
    fn cwd_and_defaults() {
        let spec = build(&pod_with(vec![ctr("app")]), &image(), &[], &[]).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.cwd(), Path::new("/app"));
        assert_eq!(spec.hostname(), &None);
        assert_eq!(p.user().uid(), 0);
        assert_eq!(p.user().gid(), 0);
        assert_eq!(p.no_new_privileges(), None);
        assert!(p.rlimits().is_none(), "rlimits are inherited from the shim");
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        let caps = caps_of(&spec);
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&Capability::NetBindService));
        assert!(!caps.contains(&Capability::SysAdmin));
        let ann = spec.annotations().as_ref().unwrap();
        assert_eq!(ann["io.kubernetes.pod.name"], "web");
        assert_eq!(ann["io.kubernetes.pod.namespace"], "default");
        assert_eq!(ann["io.kubernetes.pod.uid"], "1234-abcd");
        assert_eq!(ann["io.kubernetes.container.name"], "app");
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/burstable/pod1234-abcd/cid"))
        );
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string()));
        let devs: Vec<String> = linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.path().display().to_string())
            .collect();
        assert_eq!(
            devs,
            vec![
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!rules[0].allow());
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        assert!(rules
            .iter()
            .any(|r| r.to_string() == "c 1:3 rwm" && r.allow()));
        // no pids limit, BestEffort shares.
        let r = linux.resources().as_ref().unwrap();
        assert!(r.pids().is_none());
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), None);
        assert!(r.memory().is_none());
        // Container working dir wins.
        let mut c = ctr("app");
        c.working_dir = Some("/work".into());
        let spec = build(&pod_with(vec![c]), &image(), &[], &[]).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/work"));
        let mut img = image();
        img.working_dir = None;
        let spec = build(&pod_with(vec![ctr("app")]), &img, &[], &[]).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/"));
    }

    fn with_caps(add: &[&str], drop: &[&str]) -> Capabilities {
        let mut c = ctr("app");
        c.security_context = Some(SecurityContext {
            capabilities: Some(KCaps {
                add: Some(add.iter().map(|s| s.to_string()).collect()),
                drop: Some(drop.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        });
        caps_of(&build(&pod_with(vec![c]), &image(), &[], &[]).unwrap())
    }

    #[test]
    fn capabilities_add_drop_all() {
        let c = with_caps(
            &["NET_ADMIN", "CAP_SYS_TIME", "sys_ptrace"],
            &["KILL", "CAP_CHOWN"],
        );
        assert_eq!(c.len(), 14 + 3 - 2);
        assert!(c.contains(&Capability::NetAdmin));
        assert!(c.contains(&Capability::SysTime));
        assert!(c.contains(&Capability::SysPtrace));
        assert!(!c.contains(&Capability::Kill));
        assert!(!c.contains(&Capability::Chown));

        let c = with_caps(&[], &["ALL"]);
        assert!(c.is_empty());
        let c = with_caps(&["NET_BIND_SERVICE"], &["ALL"]);
        assert_eq!(c, [Capability::NetBindService].into_iter().collect());
        let c = with_caps(&["ALL"], &["SYS_ADMIN"]);
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains(&Capability::SysAdmin));
        let c = with_caps(&["all"], &[]);
        assert_eq!(c.len(), ALL_CAPABILITIES.len());
        // Unknown names are ignored.
        let c = with_caps(&["NOT_A_CAP"], &[]);
        assert_eq!(c.len(), 14);

        for name in [
            "SYSLOG",
            "BPF",
            "CHECKPOINT_RESTORE",
            "cap_perfmon",
            "AUDIT_READ",
        ] {
            assert!(parse_capability(name).is_some(), "{name}");
        }
        // Every capability round-trips through its name.
        for cap in ALL_CAPABILITIES {
            assert_eq!(parse_capability(&cap.to_string()), Some(cap));
        }
    }

    #[test]
    fn privileged() {
        let mut c = ctr("app");
        c.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        let spec = build(&pod_with(vec![c]), &image(), &[], &[]).unwrap();
        assert_eq!(caps_of(&spec).len(), ALL_CAPABILITIES.len());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        let sys = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"rw".to_string()));
        // No cgroup namespace for privileged containers.
        assert!(!linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup));
    }

    #[test]
    fn readonly_root_and_no_new_privs() {
        let mut c = ctr("app");
        c.security_context = Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        });
        let spec = build(&pod_with(vec![c]), &image(), &[], &[]).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/nonexistent-rootfs")
        );
        assert_eq!(
            spec.process().as_ref().unwrap().no_new_privileges(),
            Some(true)
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert!(json.get("hostname").is_none());
    }

    #[test]
    fn resources_numbers() {
        let mut c = ctr("app");
        c.resources = res(
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "500m"), ("memory", "64Mi")],
        );
        let spec = build(&pod_with(vec![c]), &image(), &[], &[]).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(256));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        let mem = r.memory().unwrap();
        assert_eq!(mem.limit(), Some(67_108_864));
        assert_eq!(mem.swap(), Some(67_108_864));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["cpu"]["shares"], 256);
        assert_eq!(json["memory"]["limit"], 67_108_864);

        // Tiny values hit the minimums; limit-only cpu defaults the request.
        let mut c = ctr("app");
        c.resources = res(&[("cpu", "1m")], &[]);
        let r = container_resources(&c);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2));
        let mut c = ctr("app");
        c.resources = res(&[], &[("cpu", "5m")]);
        let r = container_resources(&c);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(5));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(1000));
        assert_eq!(milli_cpu_to_shares(2000), 2048);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0, 100_000), 0);
        assert_eq!(milli_cpu_to_quota(1500, 100_000), 150_000);

        let mut c = ctr("app");
        c.resources = res(&[], &[("hugepages-2Mi", "4Mi"), ("memory", "1Gi")]);
        let r = container_resources(&c);
        let h = r.hugepage_limits().as_ref().unwrap();
        assert_eq!(h[0].page_size(), "2MB");
        assert_eq!(h[0].limit(), 4 << 20);
    }

    #[test]
    fn namespaces_and_host_network() {
        let spec = build(&pod_with(vec![ctr("app")]), &image(), &[], &[]).unwrap();
        let got: Vec<(LinuxNamespaceType, Option<PathBuf>)> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Network, Some("/proc/42/ns/net".into())),
                (LinuxNamespaceType::Ipc, Some("/proc/42/ns/ipc".into())),
                (LinuxNamespaceType::Uts, Some("/proc/42/ns/uts".into())),
                (LinuxNamespaceType::Cgroup, None),
            ]
        );

        let mut pod = pod_with(vec![ctr("app")]);
        {
            let s = pod.spec.as_mut().unwrap();
            s.host_network = Some(true);
            s.host_pid = Some(true);
            s.host_ipc = Some(true);
        }
        let spec = build(&pod, &image(), &[], &[]).unwrap();
        let types: Vec<LinuxNamespaceType> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            types,
            vec![LinuxNamespaceType::Mount, LinuxNamespaceType::Cgroup]
        );
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));

        // Shared pid namespace.
        let pod = pod_with(vec![ctr("app")]);
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let mut ns = nss();
        ns.pid = Some("/proc/42/ns/pid".into());
        let spec = container_spec(&ContainerInputs {
            pod: &pod,
            container,
            image_config: &image(),
            env: &[],
            rootfs: Path::new("/r"),
            namespaces: &ns,
            mounts: &[],
            cgroups_path: "/x",
            tty: true,
        })
        .unwrap();
        let pid = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .find(|n| n.typ() == LinuxNamespaceType::Pid)
            .unwrap();
        assert_eq!(pid.path().as_deref(), Some(Path::new("/proc/42/ns/pid")));
        assert_eq!(spec.process().as_ref().unwrap().terminal(), Some(true));
    }

    #[test]
    fn mounts_order_and_options() {
        let mounts = vec![
            MountSpec {
                host_path: "/var/lib/kubelet/pods/u/volumes/data".into(),
                container_path: "/data/sub".into(),
                read_only: true,
                propagation: None,
            },
            MountSpec {
                host_path: "/var/lib/kubelet/pods/u/etc-hosts".into(),
                container_path: "/etc/hosts".into(),
                read_only: false,
                propagation: None,
            },
            MountSpec {
                host_path: "/host".into(),
                container_path: "/data".into(),
                read_only: false,
                propagation: Some("HostToContainer".into()),
            },
            MountSpec {
                host_path: "/shm".into(),
                container_path: "/dev/shm".into(),
                read_only: false,
                propagation: None,
            },
        ];
        let spec = build(&pod_with(vec![ctr("app")]), &image(), &[], &mounts).unwrap();
        let ms = spec.mounts().as_ref().unwrap();
        let dests: Vec<String> = ms
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            vec![
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/data",
                "/data/sub",
                "/etc/hosts",
                "/dev/shm",
            ]
        );
        let opts = |d: &str| {
            ms.iter()
                .find(|m| m.destination() == Path::new(d))
                .unwrap()
                .options()
                .clone()
                .unwrap()
        };
        assert_eq!(opts("/data/sub"), vec!["rbind", "rprivate", "ro"]);
        assert_eq!(opts("/data"), vec!["rbind", "rslave", "rw"]);
        assert_eq!(opts("/sys"), vec!["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(
            opts("/sys/fs/cgroup"),
            vec!["nosuid", "noexec", "nodev", "relatime", "ro"]
        );
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .rootfs_propagation()
                .as_deref(),
            Some("rslave")
        );
        let bad = vec![MountSpec {
            host_path: "/x".into(),
            container_path: "/x".into(),
            read_only: false,
            propagation: Some("sideways".into()),
        }];
        assert_eq!(
            build(&pod_with(vec![ctr("app")]), &image(), &[], &bad).unwrap_err(),
            SpecError::InvalidPropagation("sideways".into())
        );
    }

    #[test]
    fn users_and_groups() {
        let mut pod = pod_with(vec![ctr("app")]);
        {
            let s = pod.spec.as_mut().unwrap();
            s.security_context = Some(PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(3000),
                fs_group: Some(2000),
                supplemental_groups: Some(vec![4000, 2000]),
                ..Default::default()
            });
        }
        let spec = build(&pod, &image(), &[], &[]).unwrap();
        let u = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (1000, 3000));
        assert_eq!(u.additional_gids().clone().unwrap(), vec![3000, 2000, 4000]);

        // Container overrides pod.
        pod.spec.as_mut().unwrap().containers[0].security_context = Some(SecurityContext {
            run_as_user: Some(1234),
            ..Default::default()
        });
        let spec = build(&pod, &image(), &[], &[]).unwrap();
        let u = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (1234, 3000));

        // Image user uid:gid.
        let mut img = image();
        img.user = Some("65534:65533".into());
        let spec = build(&pod_with(vec![ctr("app")]), &img, &[], &[]).unwrap();
        let u = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (65534, 65533));
        // Unresolvable image user name: uid 0.
        img.user = Some("nobody".into());
        let spec = build(&pod_with(vec![ctr("app")]), &img, &[], &[]).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().user().uid(), 0);
    }

    #[test]
    fn users_resolved_from_rootfs() {
        let dir = std::env::temp_dir().join(format!("kspec-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\napp:x:1002:\nwheel:x:10:app,other\naudio:x:29:other\n",
        )
        .unwrap();
        let pod = pod_with(vec![ctr("app")]);
        let mut img = image();
        img.user = Some("app".into());
        let ns = nss();
        let spec = container_spec(&ContainerInputs {
            pod: &pod,
            container: &pod.spec.as_ref().unwrap().containers[0],
            image_config: &img,
            env: &[],
            rootfs: &dir,
            namespaces: &ns,
            mounts: &[],
            cgroups_path: "/x",
            tty: false,
        })
        .unwrap();
        let u = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((u.uid(), u.gid()), (1001, 1002));
        assert_eq!(u.additional_gids().clone().unwrap(), vec![1002, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_as_non_root() {
        let non_root = |pod: &mut Pod| {
            pod.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            });
        };
        // Image runs as root (no USER).
        let mut pod = pod_with(vec![ctr("app")]);
        non_root(&mut pod);
        let err = build(&pod, &image(), &[], &[]).unwrap_err();
        assert!(matches!(err, SpecError::ImageWillRunAsRoot { .. }));
        assert_eq!(
            err.to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"web_default(1234-abcd)\", container: app)"
        );
        // Image USER 0.
        let mut img = image();
        img.user = Some("0:0".into());
        assert!(matches!(
            build(&pod, &img, &[], &[]).unwrap_err(),
            SpecError::ImageWillRunAsRoot { .. }
        ));
        // Image user name: cannot verify.
        img.user = Some("nginx".into());
        assert_eq!(
            build(&pod, &img, &[], &[]).unwrap_err().to_string(),
            "container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root (pod: \"web_default(1234-abcd)\", container: app)"
        );
        // Numeric non-root image user is fine.
        img.user = Some("1000".into());
        assert_eq!(
            build(&pod, &img, &[], &[])
                .unwrap()
                .process()
                .as_ref()
                .unwrap()
                .user()
                .uid(),
            1000
        );
        // runAsUser 0 with runAsNonRoot.
        pod.spec.as_mut().unwrap().containers[0].security_context = Some(SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        });
        assert!(matches!(
            build(&pod, &image(), &[], &[]).unwrap_err(),
            SpecError::RunAsUserBreaksNonRoot { .. }
        ));
        // runAsUser non-zero overrides an image root user.
        pod.spec.as_mut().unwrap().containers[0].security_context = Some(SecurityContext {
            run_as_user: Some(5),
            ..Default::default()
        });
        assert!(build(&pod, &image(), &[], &[]).is_ok());
    }

    #[test]
    fn pod_cgroup() {
        let mut a = ctr("a");
        a.resources = res(
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "500m"), ("memory", "128Mi")],
        );
        let mut b = ctr("b");
        b.resources = res(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")]);
        let pod = pod_with(vec![a.clone(), b]);
        let r = pod_cgroup_resources(&pod);
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(100_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(r.memory().unwrap().limit(), Some(192 << 20));

        // One container without limits: no quota, no memory limit.
        let pod = pod_with(vec![a.clone(), ctr("c")]);
        let r = pod_cgroup_resources(&pod);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(256));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), None);
        assert!(r.memory().is_none());

        // Guaranteed with a larger init container.
        let mut g = ctr("g");
        g.resources = res(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        let mut init = ctr("init");
        init.resources = res(&[], &[("cpu", "2"), ("memory", "512Mi")]);
        let mut pod = pod_with(vec![g]);
        pod.spec.as_mut().unwrap().init_containers = Some(vec![init]);
        assert_eq!(qos_class(&pod), QosClass::Guaranteed);
        let r = pod_cgroup_resources(&pod);
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2048));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(200_000));
        assert_eq!(r.memory().unwrap().limit(), Some(1 << 30));

        // Sidecars add up with the regular containers.
        let mut side = ctr("side");
        side.restart_policy = Some("Always".into());
        side.resources = res(&[], &[("cpu", "500m"), ("memory", "256Mi")]);
        pod.spec
            .as_mut()
            .unwrap()
            .init_containers
            .as_mut()
            .unwrap()
            .insert(0, side);
        let r = pod_cgroup_resources(&pod);
        // max(1 + 0.5, 2 + 0.5) = 2.5 cpu ; max(1Gi + 256Mi, 512Mi + 256Mi)
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(250_000));
        assert_eq!(r.memory().unwrap().limit(), Some((1 << 30) + (256 << 20)));

        // BestEffort
        let r = pod_cgroup_resources(&pod_with(vec![ctr("x")]));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(2));
        assert!(r.memory().is_none());

        assert_eq!(
            qos_cgroup_parent(QosClass::Guaranteed, "u1"),
            "/kubepods/podu1"
        );
        assert_eq!(
            qos_cgroup_parent(QosClass::Burstable, "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            qos_cgroup_parent(QosClass::BestEffort, "u1"),
            "/kubepods/besteffort/podu1"
        );
    }

    #[test]
    fn oom_scores() {
        let gib = 1i64 << 30;
        let mut g = ctr("g");
        g.resources = res(&[], &[("cpu", "1"), ("memory", "1Gi")]);
        assert_eq!(oom_score_adj(&pod_with(vec![g.clone()]), &g, 4 * gib), -997);
        let b = ctr("b");
        assert_eq!(oom_score_adj(&pod_with(vec![b.clone()]), &b, 4 * gib), 1000);
        let mut bu = ctr("bu");
        bu.resources = res(&[("memory", "1Gi")], &[]);
        assert_eq!(
            oom_score_adj(&pod_with(vec![bu.clone()]), &bu, 4 * gib),
            750
        );
        let mut tiny = ctr("tiny");
        tiny.resources = res(&[("cpu", "100m")], &[]);
        assert_eq!(
            oom_score_adj(&pod_with(vec![tiny.clone()]), &tiny, 4 * gib),
            999
        );
        let mut huge = ctr("huge");
        huge.resources = res(&[("memory", "4Gi")], &[]);
        assert_eq!(
            oom_score_adj(&pod_with(vec![huge.clone()]), &huge, 4 * gib),
            3
        );
    }
}
