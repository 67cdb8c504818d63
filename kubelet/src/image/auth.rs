//! Registry credentials (from dockerconfigjson secrets) and `WWW-Authenticate` challenges.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::reference::normalize_registry;
use super::ImageError;

/// A username and password for a registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Auth {
    /// The value of an `Authorization: Basic ...` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The credentials for `registry` (e.g. `docker.io`, `127.0.0.1:5000`) in a
/// `.dockerconfigjson` (`{"auths": {...}}`) or legacy `.dockercfg` (the map alone) secret.
/// Keys may carry a scheme and path (`https://index.docker.io/v1/`, `http://host:port`) and a
/// leading `*.` label wildcard. Exact host matches win over wildcards. `Ok(None)` when
/// nothing matches.
pub fn auths_from_dockerconfigjson(
    json: &[u8],
    registry: &str,
) -> Result<Option<Auth>, ImageError> {
    Ok(all_auths_from_dockerconfigjson(json, registry)?
        .into_iter()
        .next())
}

/// Every credential matching `registry`, best match first.
pub fn all_auths_from_dockerconfigjson(
    json: &[u8],
    registry: &str,
) -> Result<Vec<Auth>, ImageError> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| ImageError::Invalid(format!("invalid docker config json: {e}")))?;
    let Some(root) = value.as_object() else {
        return Err(ImageError::Invalid(
            "invalid docker config json: not an object".into(),
        ));
    };
    let entries = match root.get("auths") {
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(ImageError::Invalid(
                "invalid docker config json: \"auths\" is not an object".into(),
            ))
        }
        None => root,
    };
    let want = normalize_key(registry);
    let mut exact = Vec::new();
    let mut wild = Vec::new();
    for (key, entry) in entries {
        let k = normalize_key(key);
        let is_exact = k == want;
        if !is_exact && !wildcard_matches(&k, &want) {
            continue;
        }
        let Some(obj) = entry.as_object() else {
            return Err(ImageError::Invalid(format!(
                "invalid docker config json: entry {key:?} is not an object"
            )));
        };
        let field = |name: &str| obj.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let (username, password) = if !field("username").is_empty() {
            (field("username").to_string(), field("password").to_string())
        } else if !field("auth").is_empty() {
            decode_auth_field(field("auth"))
                .map_err(|why| ImageError::Invalid(format!("docker config entry {key:?}: {why}")))?
        } else {
            continue;
        };
        let auth = Auth { username, password };
        if is_exact {
            exact.push(auth);
        } else {
            wild.push(auth);
        }
    }
    exact.extend(wild);
    Ok(exact)
}

/// `base64(user:password)`
fn decode_auth_field(s: &str) -> Result<(String, String), String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let s = s.trim();
    let raw = STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        .map_err(|e| format!("invalid base64 in \"auth\": {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "\"auth\" is not utf-8".to_string())?;
    match text.split_once(':') {
        Some((u, p)) => Ok((u.to_string(), p.to_string())),
        None => Err("\"auth\" is not of the form user:password".to_string()),
    }
}

/// `https://Index.Docker.io/v1/` -> `docker.io`, `http://host:5000/path` -> `host:5000`.
fn normalize_key(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or("");
    normalize_registry(&host.to_ascii_lowercase())
}

/// `*.example.com` matches `a.example.com` (one label per `*`, ports must agree).
fn wildcard_matches(pattern: &str, host: &str) -> bool {
    if !pattern.contains('*') {
        return false;
    }
    let (p_host, p_port) = split_port(pattern);
    let (h_host, h_port) = split_port(host);
    if p_port != h_port {
        return false;
    }
    let p: Vec<&str> = p_host.split('.').collect();
    let h: Vec<&str> = h_host.split('.').collect();
    p.len() == h.len() && p.iter().zip(&h).all(|(a, b)| *a == "*" || a == b)
}

fn split_port(h: &str) -> (&str, Option<&str>) {
    match h.rsplit_once(':') {
        Some((a, p))
            if !p.is_empty()
                && p.bytes().all(|c| c.is_ascii_digit())
                && (a.ends_with(']') || !a.contains(':')) =>
        {
            (a, Some(p))
        }
        _ => (h, None),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme: `bearer` or `basic` (others are kept but unused).
    pub scheme: String,
    /// Lower-cased parameter names.
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="https://auth",service="registry",scope="repository:a:pull,push"`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    loop {
        while i < chars.len() && (chars[i] == ',' || chars[i].is_whitespace()) {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && chars[i] != ',' {
            i += 1;
        }
        let name: String = chars[start..i]
            .iter()
            .collect::<String>()
            .trim()
            .to_string();
        if i >= chars.len() || chars[i] == ',' {
            // a token68 or a bare word; not used by registries
            continue;
        }
        i += 1; // '='
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1; // closing quote
        } else {
            while i < chars.len() && chars[i] != ',' {
                value.push(chars[i]);
                i += 1;
            }
            value = value.trim().to_string();
        }
        params.insert(name.to_ascii_lowercase(), value);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn dockerconfigjson_username_password_and_auth() {
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"username": "alice", "password": "s3cret", "auth": "{}"}},
                "http://reg.local:8080/some/path": {{"auth": "{}"}},
                "*.corp.example": {{"username": "wild", "password": "card"}},
                "a.corp.example": {{"username": "exact", "password": "x"}},
                "empty.example": {{}}
            }}}}"#,
            b64("hubuser:hub:pass"),
            b64("ignored:ignored"),
            b64("bob:pw")
        );
        let get = |r: &str| auths_from_dockerconfigjson(json.as_bytes(), r).unwrap();
        assert_eq!(
            get("docker.io"),
            Some(Auth {
                username: "hubuser".into(),
                password: "hub:pass".into()
            })
        );
        assert_eq!(get("index.docker.io").unwrap().username, "hubuser");
        assert_eq!(get("127.0.0.1:5000").unwrap().username, "alice");
        assert_eq!(get("127.0.0.1:5000").unwrap().password, "s3cret");
        assert_eq!(get("127.0.0.1:5001"), None);
        assert_eq!(get("reg.local:8080").unwrap().username, "bob");
        assert_eq!(get("reg.local"), None);
        assert_eq!(get("b.corp.example").unwrap().username, "wild");
        assert_eq!(get("x.b.corp.example"), None);
        assert_eq!(get("a.corp.example").unwrap().username, "exact");
        let all = all_auths_from_dockerconfigjson(json.as_bytes(), "a.corp.example").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].username, "wild");
        assert_eq!(get("empty.example"), None);
        assert_eq!(get("quay.io"), None);
    }

    #[test]
    fn legacy_dockercfg_and_errors() {
        let json = format!(
            r#"{{"quay.io": {{"auth": "{}", "email": "x@y"}}}}"#,
            b64("q:w")
        );
        let a = auths_from_dockerconfigjson(json.as_bytes(), "quay.io").unwrap();
        assert_eq!(a.unwrap().password, "w");
        // unpadded base64 is tolerated
        let unpadded = b64("ab:c").trim_end_matches('=').to_string();
        let json = format!(r#"{{"auths": {{"r.io": {{"auth": "{unpadded}"}}}}}}"#);
        assert_eq!(
            auths_from_dockerconfigjson(json.as_bytes(), "r.io")
                .unwrap()
                .unwrap()
                .username,
            "ab"
        );
        assert!(auths_from_dockerconfigjson(b"not json", "r.io").is_err());
        assert!(auths_from_dockerconfigjson(br#"{"auths": 3}"#, "r.io").is_err());
        assert!(
            auths_from_dockerconfigjson(br#"{"auths": {"r.io": {"auth": "!!"}}}"#, "r.io").is_err()
        );
        let nocolon = format!(
            r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
            b64("nocolon")
        );
        assert!(auths_from_dockerconfigjson(nocolon.as_bytes(), "r.io").is_err());
        // a broken entry for another registry does not matter
        assert_eq!(
            auths_from_dockerconfigjson(br#"{"auths": {"other.io": {"auth": "!!"}}}"#, "r.io")
                .unwrap(),
            None
        );
        let dbg = format!(
            "{:?}",
            Auth {
                username: "u".into(),
                password: "hunter2".into()
            }
        );
        assert!(!dbg.contains("hunter2"));
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="ironkube registry""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "ironkube registry");
        let c = parse_challenge("Bearer realm=http://x/token, service=svc").unwrap();
        assert_eq!(c.params["realm"], "http://x/token");
        assert_eq!(c.params["service"], "svc");
        assert_eq!(parse_challenge("Basic").unwrap().params.len(), 0);
        assert_eq!(parse_challenge(""), None);
    }
}
