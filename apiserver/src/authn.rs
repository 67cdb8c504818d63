//! Authentication: x509 client certificates against `--client-ca-file` (CN is the
//! user, O the groups) and bearer tokens from `--token-auth-file`

use std::collections::HashMap;

/// An authenticated user, as upstream's user.Info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    /// The apiserver itself, for the objects it keeps (system namespaces, the
    /// `kubernetes` Service and its endpoints, bootstrap RBAC).
    pub fn system_apiserver() -> User {
        User {
            name: "system:apiserver".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        }
    }

    /// A service account's user, as upstream names it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> User {
        User::authenticated(
            format!("system:serviceaccount:{namespace}:{name}"),
            uid.to_string(),
            vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        )
    }

    fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> User {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User { name, uid, groups }
    }
}

/// Tokens from a static token file: `token,user,uid,"group1,group2"` per line.
#[derive(Debug, Default, Clone)]
pub struct TokenFile {
    tokens: HashMap<String, User>,
}

#[derive(Debug, thiserror::Error)]
#[error("token file line {line}: {why}")]
pub struct TokenFileError {
    pub line: usize,
    pub why: String,
}

impl TokenFile {
    pub fn parse(text: &str) -> Result<TokenFile, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err(TokenFileError {
                    line: i + 1,
                    why: "expected at least token,user,uid".into(),
                });
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err(TokenFileError {
                    line: i + 1,
                    why: "token and user must not be empty".into(),
                });
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                fields[0].clone(),
                User::authenticated(fields[1].clone(), fields[2].clone(), groups),
            );
        }
        Ok(TokenFile { tokens })
    }

    pub fn lookup(&self, token: &str) -> Option<&User> {
        self.tokens.get(token)
    }
}

/// Split one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// The user named by a verified client certificate (DER): CN is the name, each O a group.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User::authenticated(name, String::new(), groups))
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let t = token.trim();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

/// Paths an anonymous client may reach.
pub fn anonymous_allowed(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_parses_groups() {
        let tf = TokenFile::parse("abc,admin,1,\"system:masters,devs\"\n\n# comment\nxyz,bob,2\n")
            .expect("parse");
        let admin = tf.lookup("abc").expect("admin");
        assert_eq!(admin.name, "admin");
        assert_eq!(
            admin.groups,
            vec!["system:masters", "devs", "system:authenticated"]
        );
        assert_eq!(tf.lookup("xyz").map(|u| u.name.as_str()), Some("bob"));
        assert!(tf.lookup("nope").is_none());
    }

    #[test]
    fn token_file_rejects_short_lines() {
        let err = TokenFile::parse("abc,admin\n").expect_err("short");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn anonymous_paths() {
        assert!(anonymous_allowed("/readyz"));
        assert!(anonymous_allowed("/livez/ping"));
        assert!(!anonymous_allowed("/api/v1/pods"));
        assert!(!anonymous_allowed("/metrics"));
    }
}
