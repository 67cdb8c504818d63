//! Bootstrap token authentication (`--enable-bootstrap-token-auth`), as
//! upstream's bootstrap token authenticator: a bearer token
//! `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`) names the Secret
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`.
//! It authenticates as `system:bootstrap:<id>` in `system:bootstrappers` (and
//! the token's `auth-extra-groups`) when the secret part matches
//! (constant-time), `usage-bootstrap-authentication` is `"true"`, the
//! `expiration` has not passed and the Secret is not being deleted. The Secret
//! is read from the watch cache; every other outcome is "not this
//! authenticator", so the request ends as any other bad token (401).

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::authn::User;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const NAMESPACE: &str = "kube-system";
pub const USER_PREFIX: &str = "system:bootstrap:";
pub const DEFAULT_GROUP: &str = "system:bootstrappers";
const GROUP_PREFIX: &str = "system:bootstrappers:";

/// The id and secret of a token of the form `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Byte equality in time independent of where the inputs differ (only the
/// lengths leak, as Go's `subtle.ConstantTimeCompare`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A key of the Secret's `data`, decoded ("" when absent or not base64).
fn data_string(secret: &Value, key: &str) -> String {
    secret
        .pointer(&format!("/data/{key}"))
        .and_then(Value::as_str)
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Upstream's bootstrap group name rule:
/// `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
pub fn validate_group_name(name: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "bootstrap group {name:?} is invalid (must match \\Asystem:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]\\z)"
        ))
    };
    let Some(rest) = name.strip_prefix(GROUP_PREFIX) else {
        return bad();
    };
    let b = rest.as_bytes();
    let Some((&last, body)) = b.split_last() else {
        return bad();
    };
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(last) || body.len() > 255 || !body.iter().all(|&c| alnum(c) || c == b':' || c == b'-')
    {
        return bad();
    }
    Ok(())
}

/// The user of token `<id>.<token_secret>` given its Secret, or why not.
pub fn user_from_secret(
    secret: &Value,
    id: &str,
    token_secret: &str,
    now: DateTime<Utc>,
) -> Result<User, String> {
    if secret
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Err("is deleted and awaiting removal".into());
    }
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || !secret.get("data").is_some_and(Value::is_object)
    {
        return Err(format!("has invalid type, expected {SECRET_TYPE}."));
    }
    let stored = data_string(secret, "token-secret");
    if !constant_time_eq(stored.as_bytes(), token_secret.as_bytes()) {
        return Err("has invalid value for key token-secret.".into());
    }
    if data_string(secret, "token-id") != id {
        return Err(format!(
            "has invalid value for key token-id, expected {id}."
        ));
    }
    let expiration = data_string(secret, "expiration");
    if !expiration.is_empty() {
        match DateTime::parse_from_rfc3339(&expiration) {
            Ok(t) if now > t.with_timezone(&Utc) => return Err("has expired.".into()),
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "has unparsable expiration time ({expiration}). Treating as expired."
                ))
            }
        }
    }
    if data_string(secret, "usage-bootstrap-authentication") != "true" {
        return Err("not marked usage-bootstrap-authentication=true.".into());
    }
    // the default group and the extra ones, deduplicated and sorted
    let mut groups = vec![DEFAULT_GROUP.to_string()];
    let extra = data_string(secret, "auth-extra-groups");
    if !extra.is_empty() {
        for g in extra.split(',') {
            validate_group_name(g)
                .map_err(|e| format!("has invalid value for key auth-extra-groups: {e}."))?;
            groups.push(g.to_string());
        }
    }
    groups.sort();
    groups.dedup();
    groups.push("system:authenticated".into());
    Ok(User {
        name: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups,
    })
}

/// The user of a bootstrap token, looked up in the watch cache; None when
/// bootstrap token authentication is off or the token does not authenticate.
pub fn authenticate(api: &crate::Api, token: &str) -> Option<User> {
    if !api.bootstrap_tokens {
        return None;
    }
    let (id, token_secret) = parse_token(token)?;
    let res = crate::registry::lookup("", "v1", "secrets")?;
    let name = format!("{SECRET_PREFIX}{id}");
    let Some(entry) = api.cache.get(&res.key(&api.prefix, Some(NAMESPACE), &name)) else {
        tracing::debug!(secret = %name, "no secret to match the bootstrap bearer token");
        return None;
    };
    let secret: Value = serde_json::from_slice(&entry.data).ok()?;
    match user_from_secret(&secret, id, token_secret, Utc::now()) {
        Ok(u) => Some(u),
        Err(why) => {
            tracing::debug!("bootstrap token secret {NAMESPACE}/{name} {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(data: &[(&str, &str)]) -> Value {
        let mut d = serde_json::Map::new();
        for (k, v) in data {
            d.insert((*k).into(), json!(b64(v)));
        }
        json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
               "type": SECRET_TYPE, "data": d})
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
        ]
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn token_shape() {
        assert_eq!(
            parse_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef0123456789abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeff",
            "abcdef.0123456789abcde_",
            "a.b.c",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_good_token_authenticates() {
        let u = user_from_secret(&secret(&good()), "abcdef", "0123456789abcdef", now());
        let u = u.expect("authenticates");
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            vec!["system:bootstrappers", "system:authenticated"]
        );
    }

    #[test]
    fn extra_groups_sorted_and_checked() {
        let mut d = good();
        d.push((
            "auth-extra-groups",
            "system:bootstrappers:kubeadm:default-node-token,system:bootstrappers:a",
        ));
        let u = user_from_secret(&secret(&d), "abcdef", "0123456789abcdef", now())
            .expect("authenticates");
        assert_eq!(
            u.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:a",
                "system:bootstrappers:kubeadm:default-node-token",
                "system:authenticated"
            ]
        );
        let mut bad = good();
        bad.push(("auth-extra-groups", "system:masters"));
        let e = user_from_secret(&secret(&bad), "abcdef", "0123456789abcdef", now());
        assert!(e.is_err_and(|e| e.contains("auth-extra-groups")));
        assert!(validate_group_name("system:bootstrappers:").is_err());
        assert!(validate_group_name("system:bootstrappers:x-").is_err());
        assert!(validate_group_name("system:bootstrappers:x:y-1").is_ok());
    }

    #[test]
    fn refusals() {
        let t = "0123456789abcdef";
        // wrong secret
        assert!(user_from_secret(&secret(&good()), "abcdef", "0123456789abcdee", now()).is_err());
        // id in the data must match
        assert!(user_from_secret(&secret(&good()), "zzzzzz", t, now()).is_err());
        // expired, unparsable expiry, in the future
        for (exp, ok) in [
            ("2029-12-31T23:59:59Z", false),
            ("tomorrow", false),
            ("2030-01-01T01:00:00+00:00", true),
        ] {
            let mut d = good();
            d.push(("expiration", exp));
            assert_eq!(
                user_from_secret(&secret(&d), "abcdef", t, now()).is_ok(),
                ok,
                "{exp}"
            );
        }
        // not for authentication
        let mut d = good();
        d[2] = ("usage-bootstrap-authentication", "false");
        assert!(user_from_secret(&secret(&d), "abcdef", t, now()).is_err());
        // wrong type
        let mut s = secret(&good());
        s["type"] = json!("Opaque");
        assert!(user_from_secret(&s, "abcdef", t, now()).is_err());
        // being deleted
        let mut s = secret(&good());
        s["metadata"]["deletionTimestamp"] = json!("2029-01-01T00:00:00Z");
        assert!(user_from_secret(&s, "abcdef", t, now()).is_err());
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
