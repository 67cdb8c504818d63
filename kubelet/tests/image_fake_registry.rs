//! Pulls from an in-process fake registry exercising what the local docker-registry does
//! not: bearer tokens, a manifest list, redirects to another host (which must not get the
//! credentials), docker media types, whiteouts and a zstd layer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use kubelet::image::{host_arch, is_whiteout, Auth, ImageError, ImageStore};

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Default)]
struct Fake {
    port: u16,
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    token_requests: AtomicUsize,
    leaked: Mutex<Vec<String>>,
    storage_hits: AtomicUsize,
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

fn handle(req: Request<Incoming>, st: Arc<Fake>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let authz = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if path == "/token" {
        st.token_requests.fetch_add(1, Ordering::SeqCst);
        let q = req.uri().query().unwrap_or("");
        assert!(q.contains("scope=repository%3Ateam%2Fapp%3Apull"), "{q}");
        assert!(q.contains("service=fake"), "{q}");
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("kube:pw")
        );
        let token = match authz.as_deref() {
            None => "anonymous",
            Some(a) if a == good => "good",
            Some(_) => return respond(StatusCode::UNAUTHORIZED, &[], b"bad credentials".to_vec()),
        };
        return respond(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            format!(r#"{{"access_token":"{token}"}}"#).into_bytes(),
        );
    }
    if let Some(hex) = path.strip_prefix("/storage/") {
        st.storage_hits.fetch_add(1, Ordering::SeqCst);
        if let Some(a) = authz {
            st.leaked.lock().unwrap().push(a);
        }
        return match st.blobs.get(&format!("sha256:{hex}")) {
            Some(b) => respond(StatusCode::OK, &[], b.clone()),
            None => respond(StatusCode::NOT_FOUND, &[], vec![]),
        };
    }
    if authz.as_deref() != Some("Bearer good") {
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{}/token",service="fake",scope="repository:team/app:pull""#,
            st.port
        );
        return respond(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_vec(),
        );
    }
    if let Some(r) = path.strip_prefix("/v2/team/app/manifests/") {
        return match st.manifests.get(r) {
            Some((mt, b)) => respond(StatusCode::OK, &[("content-type", mt.clone())], b.clone()),
            None => respond(
                StatusCode::NOT_FOUND,
                &[],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#.to_vec(),
            ),
        };
    }
    if let Some(d) = path.strip_prefix("/v2/team/app/blobs/") {
        // another authority for the same server: credentials must not follow
        let hex = d.strip_prefix("sha256:").unwrap_or(d);
        return respond(
            StatusCode::TEMPORARY_REDIRECT,
            &[(
                "location",
                format!("http://localhost:{}/storage/{hex}", st.port),
            )],
            vec![],
        );
    }
    respond(StatusCode::NOT_FOUND, &[], vec![])
}

fn layer() -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/hostname", b"fake\n", 0o644);
    add("etc/.wh.gone", b"", 0o644);
    add("bin/x", b"#!/bin/sh\n", 0o755);
    let tar = b.into_inner().unwrap();
    let diff_id = digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

fn build_fake(port: u16) -> Fake {
    let mut f = Fake {
        port,
        ..Default::default()
    };
    let (layer, diff_id) = layer();
    let layer_digest = digest(&layer);
    let mut platform_manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["A=B"],"Entrypoint":["/bin/x"],
            "Cmd":["{arch}"],"WorkingDir":"/w","User":"1000:1000"}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        )
        .into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":{}}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            digest(&config),
            config.len(),
            layer.len()
        )
        .into_bytes();
        let md = digest(&manifest);
        platform_manifests.push(format!(
            r#"{{"mediaType":"{DOCKER_MANIFEST}","digest":"{md}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            manifest.len()
        ));
        f.blobs.insert(digest(&config), config);
        f.manifests.insert(md, (DOCKER_MANIFEST.into(), manifest));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{}]}}"#,
        platform_manifests.join(",")
    )
    .into_bytes();
    f.manifests
        .insert(digest(&index), (DOCKER_LIST.into(), index.clone()));
    f.manifests
        .insert("latest".into(), (DOCKER_LIST.into(), index));
    f.blobs.insert(layer_digest, layer);

    // an image whose layer is zstd-compressed
    let zconfig = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let zlayer = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let zmanifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},
        "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{}","size":{}}}]}}"#,
        digest(&zconfig),
        zconfig.len(),
        digest(&zlayer),
        zlayer.len()
    )
    .into_bytes();
    f.blobs.insert(digest(&zconfig), zconfig);
    f.blobs.insert(digest(&zlayer), zlayer);
    f.manifests
        .insert("zstd".into(), (OCI_MANIFEST.into(), zmanifest));
    f
}

async fn start() -> Arc<Fake> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(build_fake(port));
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(handle(req, st)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    state
}

#[tokio::test]
async fn bearer_tokens_index_redirects_and_zstd() {
    let fake = start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().to_path_buf(), vec![]).unwrap();
    let reference = format!("127.0.0.1:{}/team/app", fake.port);

    // the anonymous token is not good enough
    let err = store.pull(&reference, &[]).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    // wrong credentials: the token endpoint refuses
    let wrong = Auth {
        username: "kube".into(),
        password: "nope".into(),
    };
    let err = store
        .pull(&reference, std::slice::from_ref(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");

    let right = Auth {
        username: "kube".into(),
        password: "pw".into(),
    };
    let tokens_before = fake.token_requests.load(Ordering::SeqCst);
    let image = store
        .pull(&reference, &[wrong, right.clone()])
        .await
        .unwrap();
    // one token for the wrong credentials, one for the right ones; then it is reused
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst) - tokens_before,
        2
    );
    let arch = host_arch();
    if arch == "amd64" || arch == "arm64" {
        assert_eq!(image.config.cmd, vec![arch.to_string()]);
    }
    assert_eq!(image.config.entrypoint, vec!["/bin/x"]);
    assert_eq!(image.config.env, vec!["A=B"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/w"));
    assert_eq!(image.config.user.as_deref(), Some("1000:1000"));
    // the repo digest is the index's
    let index_digest = digest(&fake.manifests["latest"].1);
    assert_eq!(
        image.repo_digest,
        format!("127.0.0.1:{}/team/app@{index_digest}", fake.port)
    );
    let layer = &image.layers[0];
    assert_eq!(
        std::fs::read(layer.join("etc/hostname")).unwrap(),
        b"fake\n"
    );
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
    {
        assert!(is_whiteout(&layer.join("etc/gone")));
    }
    assert!(fake.storage_hits.load(Ordering::SeqCst) >= 2);
    assert!(
        fake.leaked.lock().unwrap().is_empty(),
        "credentials sent to the redirect target: {:?}",
        fake.leaked.lock().unwrap()
    );

    let err = store
        .pull(&format!("{reference}:zstd"), std::slice::from_ref(&right))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("zstd"), "{err}");

    let err = store
        .pull(
            &format!("{reference}:missing"),
            std::slice::from_ref(&right),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
}
