//! Image references with docker's normalization rules.

use std::fmt;

use super::ImageError;

/// The registry of references without a host component.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host actually serving `docker.io` images.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// A parsed, normalized image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference the way docker does: `busybox` is
    /// `docker.io/library/busybox:latest`; the first path component is a registry host when
    /// it contains `.` or `:` or is `localhost`; `name@sha256:<hex>` pins a digest.
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let bad = |why: &str| ImageError::Invalid(format!("invalid image reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > 4096 {
            return Err(bad("too long"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(d).map_err(|e| bad(&e))?)),
            None => (s, None),
        };
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if last_slash.is_none_or(|j| i > j) => {
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(bad("invalid registry host"));
        }
        if repository.len() == 64 && repository.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("repository name must not be a 64-character hex string"));
        }
        let registry = normalize_registry(&registry);
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(bad(
                "repository must be lower-case letters, digits and separators",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }

    /// The host (and port) to connect to for this registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_HOST
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<ImageRef, ImageError> {
        ImageRef::parse(s)
    }
}

/// Maps docker hub's aliases to `docker.io`.
pub(crate) fn normalize_registry(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    match lower.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_REGISTRY.to_string()
        }
        _ => host.to_string(),
    }
}

/// Checks `sha256:<64 lower-case hex>` and returns it; other algorithms are refused since
/// digests become file names in the store.
pub(crate) fn parse_digest(d: &str) -> Result<String, String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("invalid digest {d:?}"));
    };
    if alg != "sha256" {
        return Err(format!("unsupported digest algorithm {alg:?}"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("invalid sha256 digest {d:?}"));
    }
    Ok(d.to_string())
}

/// The hex part of a digest already checked by [`parse_digest`].
pub(crate) fn digest_hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        // [ipv6]:port
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.is_empty() || !inside.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("x", Some(p)),
                None => return false,
            },
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn valid_repository(repo: &str) -> bool {
    !repo.is_empty() && repo.len() <= 255 && repo.split('/').all(valid_path_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or one or more "-"
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        match ImageRef::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_like_docker() {
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
            ("registry-1.docker.io/foo/bar", "docker.io/foo/bar:latest"),
            ("foo/bar", "docker.io/foo/bar:latest"),
            ("foo/bar/baz:v1", "docker.io/foo/bar/baz:v1"),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest"),
            ("127.0.0.1:5000/busybox:v2", "127.0.0.1:5000/busybox:v2"),
            ("localhost/busybox", "localhost/busybox:latest"),
            ("localhost:5000/a/b:c", "localhost:5000/a/b:c"),
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
            (
                "gcr.io/google-containers/pause",
                "gcr.io/google-containers/pause:latest",
            ),
            ("[::1]:5000/img:tag", "[::1]:5000/img:tag"),
            (
                "quay.io/a_b/c__d/e-f--g.h:T_1.2-3",
                "quay.io/a_b/c__d/e-f--g.h:T_1.2-3",
            ),
            (
                "My.Registry.example:443/x",
                "My.Registry.example:443/x:latest",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), *want, "input {input}");
        }
    }

    #[test]
    fn fields() {
        let r = p("127.0.0.1:5000/team/app:v1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert_eq!(r.api_host(), "127.0.0.1:5000");
        assert_eq!(r.manifest_reference(), "v1");
        assert_eq!(p("nginx").api_host(), DOCKER_HUB_HOST);
        assert_eq!(p("nginx").name(), "docker.io/library/nginx");
        // a first component without '.', ':' or localhost is part of the repository
        let r = p("myhost/app");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "myhost/app");
    }

    #[test]
    fn digests() {
        let r = p(&format!("busybox@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = p(&format!("127.0.0.1:5000/busybox:1.0@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/busybox:1.0@{D}"));
        let r = p(&format!("localhost:5000/busybox@{D}"));
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag, None);
    }

    #[test]
    fn rejects_bad_references() {
        let bad = [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "busybox:a/b",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            &format!("busybox@{}", D.to_uppercase()),
            "busy..box",
            "busybox/",
            "/busybox",
            "a//b",
            "-abc",
            "abc-",
            "a___b",
            "ex ample",
            "host:port:x/abc",
            "127.0.0.1:99999999/x",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:latest:foo",
        ];
        for b in bad {
            assert!(ImageRef::parse(b).is_err(), "{b:?} should be refused");
        }
    }

    #[test]
    fn round_trips() {
        for s in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/busybox:v1",
            &format!("docker.io/library/busybox@{D}"),
        ] {
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }
}
