//! Test harness: a real etcd on free ports, a PKI made with rcgen, an apiserver
//! started in-process (real code, real ports), and a kubeconfig that the real
//! kubectl and kube-rs both use. Everything is removed on drop.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A real etcd (Debian's etcd-server) on loopback.
pub struct Etcd {
    /// None: another test's etcd, used but not owned
    child: Option<Child>,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_inner(None)
    }

    /// The etcd at `endpoint`, run by someone else (a second apiserver over one etcd).
    pub fn attach(endpoint: &str) -> Etcd {
        Etcd {
            child: None,
            endpoint: endpoint.to_string(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// An etcd serving TLS with client-certificate authentication from `pki`'s CA.
    pub fn start_tls(pki: &Pki) -> Etcd {
        Self::start_inner(Some(pki))
    }

    /// Ports are picked free and then bound by etcd, so another process may
    /// take one in between: a start that does not come up is tried again on
    /// new ports.
    fn start_inner(pki: Option<&Pki>) -> Etcd {
        for _ in 0..2 {
            if let Some(e) = Self::try_start(pki) {
                return e;
            }
        }
        Self::try_start(pki).expect("etcd did not start three times (see its log)")
    }

    fn try_start(pki: Option<&Pki>) -> Option<Etcd> {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = free_port();
        let peer = free_port();
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let scheme = if pki.is_some() { "https" } else { "http" };
        let mut tls_args = Vec::new();
        if let Some(p) = pki {
            let (cert, key) = p.serving("etcd");
            for (name, text) in [
                ("ca.pem", p.ca_pem.as_str()),
                ("etcd.pem", cert.as_str()),
                ("etcd-key.pem", key.as_str()),
            ] {
                std::fs::write(dir.path().join(name), text).expect("write etcd tls");
            }
            tls_args = vec![
                format!("--trusted-ca-file={}", dir.path().join("ca.pem").display()),
                format!("--cert-file={}", dir.path().join("etcd.pem").display()),
                format!("--key-file={}", dir.path().join("etcd-key.pem").display()),
                "--client-cert-auth".to_string(),
            ];
        }
        let child = Command::new(std::env::var("ETCD").unwrap_or_else(|_| "etcd".into()))
            .args(&tls_args)
            .args([
                "--name=test",
                &format!("--data-dir={}", dir.path().join("data").display()),
                &format!("--listen-client-urls={scheme}://127.0.0.1:{client}"),
                &format!("--advertise-client-urls={scheme}://127.0.0.1:{client}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=test=http://127.0.0.1:{peer}"),
                "--log-level=error",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "etcd must be installed (apt-get install etcd-server); hack/test.sh installs it",
            );
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", client)).is_err() {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
                eprintln!("etcd on port {client} did not start; retrying: {log}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Etcd {
            child: Some(child),
            endpoint: format!("{scheme}://127.0.0.1:{client}"),
            dir,
        })
    }

    /// etcdctl against this etcd (keys as a person would read them).
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Certificates for one cluster.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert: String,
    pub server_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ironkube-test-ca");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let mut sp = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        sp.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        sp.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = sp.signed_by(&server_key, &issuer).expect("server cert");
        let mut pki = Pki {
            ca_pem: ca_cert.pem(),
            server_cert: server.pem(),
            server_key: server_key.serialize_pem(),
            admin_cert: String::new(),
            admin_key: String::new(),
            issuer,
        };
        let (c, k) = pki.client("admin", &["system:masters"]);
        pki.admin_cert = c;
        pki.admin_key = k;
        pki
    }

    /// A serving certificate for localhost and 127.0.0.1.
    pub fn serving(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().expect("serving key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("serving params");
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).expect("serving cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A serving certificate for `names` (DNS names, or IP addresses), e.g.
    /// an admission webhook's `NAME.NAMESPACE.svc`.
    pub fn serving_for(&self, cn: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("serving key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("serving params");
        for n in names {
            p.subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*n).try_into().expect("dns name")),
                });
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).expect("serving cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate: CN = user, O = groups.
    pub fn client(&self, user: &str, groups: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
        p.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            p.distinguished_name.push(DnType::OrganizationName, *g);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).expect("client cert");
        (cert.pem(), key.serialize_pem())
    }
}

pub const TEST_TOKEN: &str = "test-token-1234567890";

/// An apiserver in-process over a fresh etcd.
pub struct TestServer {
    pub etcd: Etcd,
    pub addr: SocketAddr,
    pub pki: Pki,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Start with a configuration changed by `tweak` (e.g. a small watch cache).
    pub fn start_with(tweak: impl FnOnce(&mut crate::config::Config)) -> TestServer {
        Self::start_on(Etcd::start(), Pki::new(), tweak)
    }

    /// Start over a given etcd (e.g. one serving TLS) and PKI.
    pub fn start_on(
        etcd: Etcd,
        pki: Pki,
        tweak: impl FnOnce(&mut crate::config::Config),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (kc, kk) = pki.client("kube-apiserver-kubelet-client", &["system:masters"]);
        let kubelets = crate::proxy::KubeletClient::new(
            Some(kc.as_bytes()),
            Some(kk.as_bytes()),
            None,
            vec!["InternalIP".into(), "Hostname".into()],
        )
        .expect("kubelet client");
        let cfg = crate::config::Config {
            kubelets,
            sa_signer: None,
            sa_verifier: Default::default(),
            authorization: vec![crate::authz::Mode::AlwaysAllow],
            encryption: Default::default(),
            etcd_servers: vec![etcd.endpoint.clone()],
            etcd_tls: Default::default(),
            etcd_prefix: "/registry".into(),
            bind_address: "127.0.0.1".parse().expect("ip"),
            secure_port: 0,
            tls_cert_pem: pki.server_cert.clone().into_bytes(),
            tls_key_pem: pki.server_key.clone().into_bytes(),
            client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
            tokens: crate::authn::TokenFile::parse(&format!(
                "{TEST_TOKEN},token-user,42,\"system:masters\"\n"
            ))
            .expect("tokens"),
            bootstrap_token_auth: false,
            service_cidr: ("10.0.0.0".parse().expect("ip"), 24),
            node_ports: (30000, 32767),
            advertise_address: "127.0.0.1".parse().expect("ip"),
            event_ttl: Duration::from_secs(3600),
            watch_cache_size: 10_000,
            compaction_interval: Duration::ZERO,
            audit: None,
            endpoint_leases: true,
            shutdown_delay: Duration::ZERO,
        };
        let mut cfg = cfg;
        tweak(&mut cfg);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = crate::Server::bind(cfg).await.expect("bind apiserver");
                addr_tx
                    .send(server.local_addr().expect("addr"))
                    .expect("send addr");
                server.serve(stop_rx).await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("apiserver started");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            addr,
            &pki.ca_pem,
            &pki.admin_cert,
            &pki.admin_key,
        );
        let ts = TestServer {
            etcd,
            addr,
            pki,
            dir,
            kubeconfig,
            stop,
            thread: Some(thread),
        };
        ts.wait_ready();
        ts
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            // the bootstrap namespaces are written right after the cache syncs
            if out.status.success()
                && self
                    .kubectl(&["get", "namespace", "default"])
                    .status
                    .success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apiserver never became ready: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Begin a graceful shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The real kubectl (1.33 when the versioned binary is present).
    pub fn kubectl_cmd(&self) -> Command {
        let mut c = Command::new(kubectl_path());
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd().args(args).output().expect("run kubectl")
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.kubectl(args))
    }

    /// kubectl with a manifest on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    pub fn kubectl_stdin_ok(&self, args: &[&str], input: &str) -> String {
        succeeded(args, self.kubectl_stdin(args, input))
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// A raw HTTPS request with curl-like control (bodies, headers), as the admin.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        raw_request(
            &self.url(),
            &self.dir.path().join("ca.pem"),
            Some((&self.pki.admin_cert, &self.pki.admin_key, self.dir.path())),
            method,
            path,
            content_type,
            body,
            &self.pki.ca_pem,
        )
    }

    /// A request with no credentials at all.
    pub fn anonymous(&self, method: &str, path: &str) -> u16 {
        raw_request(
            &self.url(),
            &self.dir.path().join("ca.pem"),
            None,
            method,
            path,
            "application/json",
            b"",
            &self.pki.ca_pem,
        )
        .0
    }
}

/// HTTPS through curl, so the tests exercise the server like any outside client.
#[allow(clippy::too_many_arguments)]
pub fn raw_request(
    base: &str,
    ca_path: &Path,
    client: Option<(&str, &str, &Path)>,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    ca_pem: &str,
) -> (u16, serde_json::Value) {
    std::fs::write(ca_path, ca_pem).expect("write ca");
    let body_path = ca_path.with_file_name(format!("body-{}", rand_suffix()));
    std::fs::write(&body_path, body).expect("write body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca_path);
    cmd.args([
        "-X",
        method,
        "-H",
        &format!("Content-Type: {content_type}"),
        "--data-binary",
    ])
    .arg(format!("@{}", body_path.display()));
    if let Some((cert, key, dir)) = client {
        let c = dir.join("admin.crt");
        let k = dir.join("admin.key");
        std::fs::write(&c, cert).expect("cert");
        std::fs::write(&k, key).expect("key");
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    if body.is_empty() && method == "GET" {
        cmd.args(["-G"]);
    }
    let out = cmd.arg(format!("{base}{path}")).output().expect("curl");
    let _ = std::fs::remove_file(&body_path);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (resp, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code: u16 = code.trim().parse().unwrap_or(0);
    let v = serde_json::from_str(resp).unwrap_or_else(|_| {
        serde_json::Value::String(format!("{resp}{}", String::from_utf8_lossy(&out.stderr)))
    });
    (code, v)
}

fn rand_suffix() -> String {
    format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "")
}

/// The stdout of a kubectl run that must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write_kubeconfig(path: &Path, addr: SocketAddr, ca: &str, cert: &str, key: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\n    namespace: default\ncurrent-context: local\n",
        b64(ca),
        b64(cert),
        b64(key)
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

pub fn kubectl_path() -> PathBuf {
    if let Ok(k) = std::env::var("KUBECTL") {
        return PathBuf::from(k);
    }
    let which = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output();
    if let Ok(o) = which {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if let Some(dir) = p.parent() {
            let v = dir.join("kubectl.1.33");
            if v.exists() {
                return v;
            }
        }
    }
    PathBuf::from("kubectl")
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes `target` (on the host's loopback) reachable as 127.0.0.1:`port`
/// inside network namespace `netns`: socat listens there and forwards to a
/// unix socket, which crosses the namespace boundary; a thread here forwards
/// the socket to `target`. Stopped and removed on drop.
pub struct NetnsRelay {
    socat: Child,
    socket: PathBuf,
}

impl NetnsRelay {
    pub fn start(netns: &str, port: u16, target: SocketAddr) -> NetnsRelay {
        let socket =
            std::env::temp_dir().join(format!("relay-{}-{netns}-{port}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind relay socket");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(unix) = conn else { return };
                std::thread::spawn(move || {
                    let Ok(tcp) = TcpStream::connect(target) else {
                        return;
                    };
                    let (Ok(mut u2), Ok(mut t2)) = (unix.try_clone(), tcp.try_clone()) else {
                        return;
                    };
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut u2, &mut t2);
                        let _ = t2.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut u, mut t) = (unix, tcp);
                    let _ = std::io::copy(&mut t, &mut u);
                    let _ = u.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        let socat = Command::new("ip")
            .args(["netns", "exec", netns, "socat"])
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat");
        NetnsRelay { socat, socket }
    }
}

impl Drop for NetnsRelay {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
