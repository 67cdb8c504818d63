//! Pulls from a real registry (Debian's docker-registry) on 127.0.0.1, with a busybox image
//! built by hack/lib/images.sh. Needs root and the packages busybox-static, umoci, skopeo,
//! docker-registry (and apache2-utils for the auth test); skips when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kubelet::image::{Auth, ImageError, ImageStore};

fn images_sh() -> PathBuf {
    if let Ok(p) = std::env::var("IRONKUBE_IMAGES_SH") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/lib/images.sh")
}

/// Runs `source images.sh && <script>` with positional arguments; panics on failure.
fn sh(script: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && {script}", images_sh().display()))
        .arg("bash")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(cmd: &str) -> bool {
    Command::new("bash")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn usable() -> bool {
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if !root.unwrap_or(false) {
        eprintln!("skipping: needs root");
        return false;
    }
    for c in ["umoci", "skopeo", "docker-registry", "curl"] {
        if !have(c) {
            eprintln!("skipping: {c} not installed");
            return false;
        }
    }
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the registry when dropped, also when the test panics.
struct Registry {
    dir: PathBuf,
    addr: String,
}

impl Registry {
    fn start(dir: PathBuf, htpasswd: Option<&Path>) -> Registry {
        let addr = format!("127.0.0.1:{}", free_port());
        let reg = Registry {
            dir: dir.clone(),
            addr: addr.clone(),
        };
        let d = dir.to_str().unwrap();
        match htpasswd {
            Some(h) => sh(
                r#"ironkube::start_registry "$1" "$2" "$3""#,
                &[d, &addr, h.to_str().unwrap()],
            ),
            None => sh(r#"ironkube::start_registry "$1" "$2""#, &[d, &addr]),
        }
        reg
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}' && ironkube::stop_registry \"$1\"",
                images_sh().display()
            ))
            .arg("bash")
            .arg(&self.dir)
            .status();
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn build_layout(tmp: &Path) -> PathBuf {
    let layout = tmp.join("layout");
    sh(
        r#"ironkube::build_busybox_image "$1""#,
        &[layout.to_str().unwrap()],
    );
    // idempotent: the second call finds the tag and returns
    sh(
        r#"ironkube::build_busybox_image "$1""#,
        &[layout.to_str().unwrap()],
    );
    layout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_busybox_from_local_registry() {
    if !usable() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = build_layout(tmp.path());
    let reg = Registry::start(tmp.path().join("registry"), None);
    let l = layout.to_str().unwrap();
    let latest = format!("{}/busybox:latest", reg.addr);
    let v2s2 = format!("{}/busybox:v2s2", reg.addr);
    sh(r#"ironkube::push_image "$1" "$2""#, &[l, &latest]);
    sh(r#"ironkube::push_image "$1" "$2" "" v2s2"#, &[l, &v2s2]);

    let root = tmp.path().join("store");
    let store = ImageStore::open(root.clone(), vec![]).unwrap();
    assert!(store.get(&latest).is_none());
    let image = store
        .pull(&format!("{}/busybox", reg.addr), &[])
        .await
        .unwrap();
    assert!(image.id.starts_with("sha256:"), "{}", image.id);
    assert!(
        image
            .repo_digest
            .starts_with(&format!("{}/busybox@sha256:", reg.addr)),
        "{}",
        image.repo_digest
    );
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert!(image.size > 500_000, "size {}", image.size);
    assert!(!image.layers.is_empty());
    let top = image.layers.last().unwrap();
    let busybox = std::fs::symlink_metadata(top.join("bin/busybox")).unwrap();
    assert!(busybox.is_file());
    assert_eq!(
        std::fs::read_link(top.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let passwd = std::fs::read_to_string(top.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534"), "{passwd}");
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(top.join("tmp")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o1777);
    }
    // the unpacked busybox runs
    let out = Command::new(top.join("bin/busybox"))
        .args(["echo", "hello"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // a second pull reuses everything
    let blobs = count_files(&root.join("blobs/sha256"));
    let layers = count_files(&root.join("layers/sha256"));
    let started = Instant::now();
    let again = store.pull(&latest, &[]).await.unwrap();
    assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
    assert_eq!(again, image);
    assert_eq!(count_files(&root.join("blobs/sha256")), blobs);
    assert_eq!(count_files(&root.join("layers/sha256")), layers);
    assert_eq!(count_files(&root.join("tmp")), 0);

    // lookups by reference, repo digest and id
    assert_eq!(store.get(&latest).as_ref(), Some(&image));
    assert_eq!(store.get(&image.repo_digest).as_ref(), Some(&image));
    assert_eq!(store.get(&image.id).as_ref(), Some(&image));
    assert!(store.get(&format!("{}/busybox:other", reg.addr)).is_none());

    // the docker schema2 manifest of the same image: the layer is shared
    let docker = store.pull(&v2s2, &[]).await.unwrap();
    assert_eq!(docker.config.cmd, vec!["/bin/sh"]);
    assert_eq!(docker.layers, image.layers);
    assert_ne!(docker.repo_digest, image.repo_digest);

    // by digest
    let pinned = format!(
        "{}/busybox@{}",
        reg.addr,
        image.repo_digest.split('@').nth(1).unwrap()
    );
    let by_digest = store.pull(&pinned, &[]).await.unwrap();
    assert_eq!(by_digest.id, image.id);

    // missing things
    let err = store
        .pull(&format!("{}/busybox:nope", reg.addr), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert_eq!(err.status(), Some(404));
    let err = store
        .pull(&format!("{}/nothing/here", reg.addr), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    // nothing listens there: a network error
    let err = store
        .pull(&format!("127.0.0.1:{}/busybox", free_port()), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Network { .. }), "{err:?}");

    // after a restart
    drop(store);
    let store = ImageStore::open(root.clone(), vec![]).unwrap();
    assert_eq!(store.get(&latest).as_ref(), Some(&image));
    let list = store.list();
    let entry = list
        .iter()
        .find(|(names, _)| names.contains(&latest))
        .unwrap();
    assert!(entry.0.contains(&image.repo_digest), "{list:?}");
    assert_eq!(entry.1, image.size);

    // concurrent pulls into a fresh root, from two store instances (like two processes)
    let root2 = tmp.path().join("store2");
    let a = ImageStore::open(root2.clone(), vec![]).unwrap();
    let b = ImageStore::open(root2.clone(), vec![]).unwrap();
    let (x, y, z) = tokio::join!(
        a.pull(&latest, &[]),
        b.pull(&latest, &[]),
        a.pull(&latest, &[])
    );
    let (x, y, z) = (x.unwrap(), y.unwrap(), z.unwrap());
    assert_eq!(x.layers, y.layers);
    assert_eq!(x.layers, z.layers);
    assert!(x.layers.last().unwrap().join("bin/busybox").is_file());
    assert_eq!(count_files(&root2.join("layers/sha256")), 1);
    assert_eq!(count_files(&root2.join("tmp")), 0);
}

fn make_htpasswd(path: &Path, user: &str, password: &str) -> bool {
    if have("htpasswd") {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        if out.status.success() {
            std::fs::write(path, out.stdout).unwrap();
            return true;
        }
    }
    // python3 with the bcrypt module, when apache2-utils is missing
    let out = Command::new("python3")
        .args([
            "-c",
            "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt()).decode())",
            user,
            password,
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            std::fs::write(path, o.stdout).unwrap();
            true
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_with_basic_auth() {
    if !usable() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = tmp.path().join("htpasswd");
    if !make_htpasswd(&htpasswd, "kube", "s3cret") {
        eprintln!("skipping: neither htpasswd nor python3-bcrypt");
        return;
    }
    let layout = build_layout(tmp.path());
    let reg = Registry::start(tmp.path().join("registry"), Some(&htpasswd));
    let reference = format!("{}/private/busybox:1.0", reg.addr);
    sh(
        r#"ironkube::push_image "$1" "$2" "$3""#,
        &[layout.to_str().unwrap(), &reference, "kube:s3cret"],
    );

    let store = ImageStore::open(tmp.path().join("store"), vec![]).unwrap();
    let err = store.pull(&reference, &[]).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.status(), Some(401));
    let wrong = Auth {
        username: "kube".into(),
        password: "wrong".into(),
    };
    let right = Auth {
        username: "kube".into(),
        password: "s3cret".into(),
    };
    let err = store
        .pull(&reference, std::slice::from_ref(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    assert!(store.get(&reference).is_none());

    // credentials as a kubelet finds them in an imagePullSecret
    let secret = format!(
        r#"{{"auths":{{"http://{}":{{"auth":"{}"}}}}}}"#,
        reg.addr,
        "a3ViZTpzM2NyZXQ=" // kube:s3cret
    );
    let from_secret = kubelet::image::auths_from_dockerconfigjson(secret.as_bytes(), &reg.addr)
        .unwrap()
        .unwrap();
    assert_eq!(from_secret, right);

    let image = store.pull(&reference, &[wrong, from_secret]).await.unwrap();
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    assert!(image.layers.last().unwrap().join("bin/busybox").is_file());
    let err = store
        .pull(&format!("{}/private/busybox:2.0", reg.addr), &[right])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
}
