//! Service-account tokens as upstream: JWTs signed RS256 with
//! `--service-account-signing-key-file`, verified with the keys of
//! `--service-account-key-file`, issuer `--service-account-issuer`, audiences
//! `--api-audiences`. Bound tokens (the TokenRequest API) carry the pod they
//! were made for; the authenticator refuses them once that pod is gone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "{0}: no RSA key found (PEM PRIVATE KEY, RSA PRIVATE KEY, PUBLIC KEY or RSA PUBLIC KEY)"
    )]
    NoKey(String),
    #[error("{path}: {why}")]
    Bad { path: String, why: String },
}

/// DER length bytes.
fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut v = vec![0x80 | bytes.len() as u8];
        v.extend(bytes);
        v
    }
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(body.len()));
    v.extend_from_slice(body);
    v
}

/// SubjectPublicKeyInfo DER of an RSA public key (PKCS#1 DER).
fn spki_of(pkcs1: &[u8]) -> Vec<u8> {
    // rsaEncryption 1.2.840.113549.1.1.1, NULL parameters
    let alg = der(
        0x30,
        &[
            &[
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
            ][..],
            &[0x05, 0x00],
        ]
        .concat(),
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    der(0x30, &[alg, der(0x03, &bits)].concat())
}

/// Upstream's key ID: the unpadded base64url SHA-256 of the key's PKIX DER.
fn key_id(spki: &[u8]) -> String {
    B64.encode(ring::digest::digest(&ring::digest::SHA256, spki).as_ref())
}

/// The PEM blocks of a file: (label, DER).
fn pem_blocks(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    x509_parser::pem::Pem::iter_from_buffer(text)
        .filter_map(Result::ok)
        .map(|p| (p.label, p.contents))
        .collect()
}

/// Signs tokens with one RSA private key.
pub struct Signer {
    key: RsaKeyPair,
    kid: String,
    pub issuer: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

fn private_key(path: &str, pem: &[u8]) -> Result<RsaKeyPair, KeyError> {
    let bad = |why: String| KeyError::Bad {
        path: path.to_string(),
        why,
    };
    for (label, der) in pem_blocks(pem) {
        match label.as_str() {
            "PRIVATE KEY" => {
                return RsaKeyPair::from_pkcs8(&der).map_err(|e| bad(format!("PKCS#8 key: {e}")))
            }
            "RSA PRIVATE KEY" => {
                return RsaKeyPair::from_der(&der).map_err(|e| bad(format!("PKCS#1 key: {e}")))
            }
            _ => {}
        }
    }
    Err(KeyError::NoKey(path.to_string()))
}

impl Signer {
    pub fn from_pem(path: &str, pem: &[u8], issuer: &str) -> Result<Signer, KeyError> {
        let key = private_key(path, pem)?;
        let kid = key_id(&spki_of(key.public_key().as_ref()));
        Ok(Signer {
            key,
            kid,
            issuer: issuer.to_string(),
        })
    }

    /// A signed JWT of `claims` (the issuer is set here).
    pub fn sign(&self, mut claims: Value) -> Result<String, String> {
        claims["iss"] = json!(self.issuer);
        let header = json!({"alg": "RS256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing the token failed".to_string())?;
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }
}

/// Verifies tokens against a set of public keys, issuers and audiences.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    /// (kid, PKCS#1 public key DER)
    keys: Vec<(String, Vec<u8>)>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
}

impl Verifier {
    pub fn new(issuers: Vec<String>, audiences: Vec<String>) -> Verifier {
        Verifier {
            keys: Vec::new(),
            issuers,
            audiences,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Add the keys of a `--service-account-key-file`: public keys, or
    /// private keys (whose public half is used), as upstream accepts.
    pub fn add_pem(&mut self, path: &str, pem: &[u8]) -> Result<(), KeyError> {
        let before = self.keys.len();
        for (label, der) in pem_blocks(pem) {
            let pkcs1 = match label.as_str() {
                "PUBLIC KEY" => {
                    let (_, spki) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<x509_parser::error::X509Error>>::from_der(&der)
                        .map_err(|e| KeyError::Bad {
                            path: path.to_string(),
                            why: format!("public key: {e}"),
                        })?;
                    spki.subject_public_key.data.to_vec()
                }
                "RSA PUBLIC KEY" => der,
                "PRIVATE KEY" | "RSA PRIVATE KEY" => {
                    let block = format!(
                        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                        base64::engine::general_purpose::STANDARD.encode(&der)
                    );
                    private_key(path, block.as_bytes())?
                        .public_key()
                        .as_ref()
                        .to_vec()
                }
                _ => continue,
            };
            self.keys.push((key_id(&spki_of(&pkcs1)), pkcs1));
        }
        if self.keys.len() == before {
            return Err(KeyError::NoKey(path.to_string()));
        }
        Ok(())
    }

    /// The claims of a valid token: signature, issuer, audience and time
    /// checked; the caller checks what the claims bind to.
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed JWT header")?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err("unsupported JWT algorithm".into());
        }
        let sig = B64.decode(s).map_err(|_| "malformed JWT signature")?;
        let kid = header.get("kid").and_then(Value::as_str);
        let signed = format!("{h}.{p}");
        let ok = self
            .keys
            .iter()
            .filter(|(k, _)| kid.is_none_or(|want| want == k))
            .any(|(_, key)| {
                UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            });
        if !ok {
            return Err("invalid token signature".into());
        }
        let claims: Value = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed JWT claims")?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !self.issuers.iter().any(|i| i == iss) {
            return Err(format!("token issuer {iss:?} is not accepted"));
        }
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !auds.iter().any(|a| self.audiences.iter().any(|x| x == a)) {
            return Err("token audiences are invalid".into());
        }
        // a minute of leeway, as upstream
        let leeway = 60;
        if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
            if now > exp + leeway {
                return Err("token has expired".into());
            }
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
            if now + leeway < nbf {
                return Err("token is not valid yet".into());
            }
        }
        Ok(claims)
    }
}

/// A JWT's shape: three dot-separated parts (cheap, before any crypto).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("sa.key");
        let p = dir.path().join("sa.pub");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&k)
            .arg("2048")
            .output()
            .unwrap()
            .status
            .success()
            && std::process::Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&k)
                .arg("-out")
                .arg(&p)
                .output()
                .unwrap()
                .status
                .success();
        assert!(ok, "openssl makes RSA keys");
        (
            std::fs::read_to_string(k).unwrap(),
            std::fs::read_to_string(p).unwrap(),
        )
    }

    #[test]
    fn tokens_sign_and_verify() {
        let (private, public) = key();
        let issuer = "https://kubernetes.default.svc.cluster.local";
        let s = Signer::from_pem("sa.key", private.as_bytes(), issuer).unwrap();
        let mut v = Verifier::new(vec![issuer.into()], vec![issuer.into()]);
        v.add_pem("sa.pub", public.as_bytes()).unwrap();
        // the private key file works as a key file too, with the same key ID
        let mut v2 = Verifier::new(vec![issuer.into()], vec![issuer.into()]);
        v2.add_pem("sa.key", private.as_bytes()).unwrap();
        assert_eq!(v.keys[0], v2.keys[0]);
        assert_eq!(v.keys[0].0, s.kid);

        let now = 1_700_000_000;
        let t = s
            .sign(json!({"sub": "system:serviceaccount:default:default", "aud": [issuer], "exp": now + 600, "nbf": now, "iat": now}))
            .unwrap();
        let claims = v.verify(&t, now).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");
        assert_eq!(claims["iss"], issuer);
        assert!(v.verify(&t, now + 3600).unwrap_err().contains("expired"));
        let other_aud = Verifier {
            audiences: vec!["vault".into()],
            ..v.clone()
        };
        assert!(other_aud.verify(&t, now).unwrap_err().contains("audiences"));
        let other_iss = Verifier {
            issuers: vec!["https://elsewhere".into()],
            ..v.clone()
        };
        assert!(other_iss.verify(&t, now).unwrap_err().contains("issuer"));
        // a changed payload breaks the signature
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = B64.encode(json!({"sub": "system:serviceaccount:kube-system:admin", "aud": [issuer], "iss": issuer}).to_string());
        assert!(v
            .verify(&parts.join("."), now)
            .unwrap_err()
            .contains("signature"));
        assert!(v.verify("a.b", now).is_err());
        assert!(v.verify("!!.??.**", now).is_err());
    }

    #[test]
    fn key_files_without_keys_are_errors() {
        let mut v = Verifier::default();
        assert!(matches!(
            v.add_pem("x", b"not a pem"),
            Err(KeyError::NoKey(_))
        ));
        assert!(Signer::from_pem("x", b"", "i").is_err());
        assert!(looks_like_jwt("a.b.c") && !looks_like_jwt("abc"));
    }
}
