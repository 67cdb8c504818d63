//! The image side of starting a container: imagePullPolicy, imagePullSecrets,
//! events Pulling / Pulled / Failed / BackOff, the waiting reasons
//! ErrImagePull and ImagePullBackOff, and a per-image back-off between
//! failed pulls. The pulling itself is the image store's (`image`).

use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, Secret};
use kube::api::Api;

use common::events::EventType;

use crate::image::{Auth, Image};
use crate::pods::Kubelet;

/// upstream's default: Always for `:latest` or no tag, else IfNotPresent
pub fn pull_policy(c: &Container) -> String {
    if let Some(p) = &c.image_pull_policy {
        return p.clone();
    }
    let image = c.image.clone().unwrap_or_default();
    let name = image.rsplit('/').next().unwrap_or(&image);
    if image.contains('@') {
        return "IfNotPresent".into();
    }
    match name.split_once(':') {
        Some((_, "latest")) | None => "Always".into(),
        Some(_) => "IfNotPresent".into(),
    }
}

async fn pull_auths(kl: &Kubelet, pod: &Pod, registry: &str) -> Vec<Auth> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(kl.client.clone(), &ns);
    let mut out = Vec::new();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    for r in refs {
        let Ok(Some(s)) = api.get_opt(&r.name).await else {
            tracing::warn!(secret = %r.name, "an imagePullSecret is missing");
            continue;
        };
        let data = s.data.unwrap_or_default();
        let json = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"));
        if let Some(j) = json {
            match crate::image::auths_from_dockerconfigjson(&j.0, registry) {
                Ok(Some(a)) => out.push(a),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(secret = %r.name, error = %e, "reading an imagePullSecret")
                }
            }
        }
    }
    out
}

/// The image of container `c`, pulled if the policy says so. On failure, the
/// waiting reason and message for the container's status.
pub async fn ensure_image(
    kl: &Kubelet,
    pod: &Pod,
    c: &Container,
    cref: &ObjectReference,
) -> Result<Image, (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    if image.is_empty() {
        return Err((
            "InvalidImageName".into(),
            "the container has no image".into(),
        ));
    }
    let policy = pull_policy(c);
    let present = kl.images.get(&image);
    if policy != "Always" {
        if let Some(i) = present {
            kl.recorder.emit(
                cref,
                EventType::Normal,
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(i);
        }
        if policy == "Never" {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            kl.recorder
                .emit(cref, EventType::Warning, "ErrImageNeverPull", &msg);
            return Err(("ErrImageNeverPull".into(), msg));
        }
    }
    let key = ("image".to_string(), image.clone());
    let waiting = {
        let b = kl.backoff.lock().unwrap_or_else(|p| p.into_inner());
        b.in_backoff(&key, Instant::now())
    };
    if waiting.is_some() {
        kl.recorder.emit(
            cref,
            EventType::Normal,
            "BackOff",
            &format!("Back-off pulling image \"{image}\""),
        );
        return Err((
            "ImagePullBackOff".into(),
            format!("Back-off pulling image \"{image}\""),
        ));
    }
    kl.recorder.emit(
        cref,
        EventType::Normal,
        "Pulling",
        &format!("Pulling image \"{image}\""),
    );
    let registry = crate::image::ImageRef::parse(&image)
        .map(|r| r.registry)
        .map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?;
    let auths = pull_auths(kl, pod, &registry).await;
    let started = Instant::now();
    match kl.images.pull(&image, &auths).await {
        Ok(i) => {
            let took = started.elapsed();
            kl.recorder.emit(
                cref,
                EventType::Normal,
                "Pulled",
                &format!(
                    "Successfully pulled image \"{image}\" in {:.3}s ({:.3}s including waiting). Image size: {} bytes.",
                    took.as_secs_f64(),
                    took.as_secs_f64(),
                    i.size
                ),
            );
            if let Ok(mut b) = kl.backoff.lock() {
                b.forget(&key);
            }
            Ok(i)
        }
        Err(e) => {
            let msg = format!("Failed to pull image \"{image}\": {e}");
            kl.recorder.emit(cref, EventType::Warning, "Failed", &msg);
            kl.recorder
                .emit(cref, EventType::Warning, "Failed", "Error: ErrImagePull");
            if let Ok(mut b) = kl.backoff.lock() {
                b.next(&key, Instant::now());
            }
            Err(("ErrImagePull".into(), msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn default_pull_policy() {
        assert_eq!(pull_policy(&c("busybox", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:latest", None)), "Always");
        assert_eq!(pull_policy(&c("busybox:1.36", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("127.0.0.1:5000/busybox", None)), "Always");
        assert_eq!(
            pull_policy(&c("127.0.0.1:5000/busybox:v1", None)),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&c("busybox@sha256:abcd", None)), "IfNotPresent");
        assert_eq!(pull_policy(&c("busybox", Some("Never"))), "Never");
    }
}
