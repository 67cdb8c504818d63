//! Encryption at rest (`--encryption-provider-config`, an
//! EncryptionConfiguration of apiserver.config.k8s.io/v1): values of the
//! listed resources go to etcd through the first provider of their rule and
//! are read back by whichever provider's prefix they carry, in upstream's
//! formats, so `etcdctl get /registry/secrets/...` shows ciphertext:
//!
//! - `aescbc`: `k8s:enc:aescbc:v1:<key>:` + IV (16 bytes) + AES-CBC, PKCS#7;
//! - `aesgcm`: `k8s:enc:aesgcm:v1:<key>:` + nonce (12 bytes) + AES-GCM
//!   sealed with the etcd key as associated data;
//! - `secretbox`: `k8s:enc:secretbox:v1:<key>:` + nonce (24 bytes) +
//!   XSalsa20-Poly1305 (NaCl secretbox: the tag before the ciphertext);
//! - `identity`: the plain value (and what unprefixed values are read as).
//!
//! Rotating a key: put the new key first, restart, rewrite the objects
//! (`kubectl get secrets -A -o json | kubectl replace -f -`), drop the old key.

use std::collections::HashMap;

use base64::Engine;
use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

#[derive(Debug, Clone)]
enum Provider {
    Identity,
    AesCbc { name: String, key: Vec<u8> },
    AesGcm { name: String, key: Vec<u8> },
    SecretBox { name: String, key: Vec<u8> },
}

/// Which provider chain applies to which etcd key prefix.
#[derive(Debug, Clone, Default)]
pub struct Transformer {
    /// (etcd key prefix, providers; the first writes)
    rules: Vec<(String, Vec<Provider>)>,
}

fn key_of(k: &Value, len_ok: &[usize], kind: &str) -> Result<(String, Vec<u8>), String> {
    let name = k
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind}: a key needs a name"))?;
    let secret = k
        .get("secret")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{kind} key {name:?}: missing secret"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|e| format!("{kind} key {name:?}: the secret is not base64: {e}"))?;
    if !len_ok.contains(&bytes.len()) {
        return Err(format!(
            "{kind} key {name:?}: {} bytes; want {}",
            bytes.len(),
            len_ok
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    Ok((name.to_string(), bytes))
}

impl Transformer {
    /// From an EncryptionConfiguration (YAML or JSON); `storage_prefix` maps
    /// a resource (`secrets`, `configmaps`, `deployments.apps`) to its etcd
    /// key prefix.
    pub fn parse(
        text: &str,
        storage_prefix: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Transformer, String> {
        let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if v.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
            return Err("kind must be EncryptionConfiguration".into());
        }
        let mut rules = Vec::new();
        for r in v
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut providers = Vec::new();
            for p in r
                .get("providers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some((kind, body)) = p.as_object().and_then(|o| o.iter().next()) else {
                    continue;
                };
                let keys: Vec<&Value> = body
                    .get("keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                match kind.as_str() {
                    "identity" => providers.push(Provider::Identity),
                    "aescbc" | "aesgcm" => {
                        if keys.is_empty() {
                            return Err(format!("{kind}: at least one key is required"));
                        }
                        for k in keys {
                            let (name, key) = key_of(k, &[16, 24, 32], kind)?;
                            providers.push(if kind == "aescbc" {
                                Provider::AesCbc { name, key }
                            } else {
                                if key.len() == 24 {
                                    return Err(format!("aesgcm key {name:?}: 16 or 32 bytes"));
                                }
                                Provider::AesGcm { name, key }
                            });
                        }
                    }
                    "secretbox" => {
                        if keys.is_empty() {
                            return Err("secretbox: at least one key is required".into());
                        }
                        for k in keys {
                            let (name, key) = key_of(k, &[32], kind)?;
                            providers.push(Provider::SecretBox { name, key });
                        }
                    }
                    other => {
                        return Err(format!(
                        "provider {other:?} is not supported (aescbc, aesgcm, secretbox, identity)"
                    ))
                    }
                }
            }
            if providers.is_empty() {
                return Err("a resource rule needs at least one provider".into());
            }
            for res in r
                .get("resources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = res.as_str().unwrap_or_default();
                let prefix =
                    storage_prefix(name).ok_or_else(|| format!("unknown resource {name:?}"))?;
                rules.push((prefix, providers.clone()));
            }
        }
        Ok(Transformer { rules })
    }

    fn providers(&self, key: &str) -> Option<&[Provider]> {
        self.rules
            .iter()
            .find(|(p, _)| key.starts_with(p.as_str()))
            .map(|(_, ps)| ps.as_slice())
    }

    /// What goes to etcd for `key`.
    pub fn encrypt(&self, key: &str, plain: Vec<u8>) -> Vec<u8> {
        let Some(first) = self.providers(key).and_then(|p| p.first()) else {
            return plain;
        };
        let rng = SystemRandom::new();
        match first {
            Provider::Identity => plain,
            Provider::AesCbc { name, key: k } => {
                let mut iv = [0u8; 16];
                if rng.fill(&mut iv).is_err() {
                    return plain;
                }
                let ct = match k.len() {
                    16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(k, &iv)
                        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(&plain)),
                    24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(k, &iv)
                        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(&plain)),
                    _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(k, &iv)
                        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(&plain)),
                };
                let Ok(ct) = ct else { return plain };
                let mut out = format!("k8s:enc:aescbc:v1:{name}:").into_bytes();
                out.extend_from_slice(&iv);
                out.extend_from_slice(&ct);
                out
            }
            Provider::AesGcm { name, key: k } => {
                let alg = if k.len() == 16 {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let Ok(unbound) = aead::UnboundKey::new(alg, k) else {
                    return plain;
                };
                let sealing = aead::LessSafeKey::new(unbound);
                let mut nonce = [0u8; 12];
                if rng.fill(&mut nonce).is_err() {
                    return plain;
                }
                let mut buf = plain.clone();
                if sealing
                    .seal_in_place_append_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(key.as_bytes()),
                        &mut buf,
                    )
                    .is_err()
                {
                    return plain;
                }
                let mut out = format!("k8s:enc:aesgcm:v1:{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&buf);
                out
            }
            Provider::SecretBox { name, key: k } => {
                use crypto_secretbox::aead::{AeadInPlace, KeyInit};
                let Ok(cipher) = crypto_secretbox::XSalsa20Poly1305::new_from_slice(k) else {
                    return plain;
                };
                let mut nonce = [0u8; 24];
                if rng.fill(&mut nonce).is_err() {
                    return plain;
                }
                let mut buf = plain.clone();
                let Ok(tag) = cipher.encrypt_in_place_detached((&nonce).into(), b"", &mut buf)
                else {
                    return plain;
                };
                let mut out = format!("k8s:enc:secretbox:v1:{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&tag);
                out.extend_from_slice(&buf);
                out
            }
        }
    }

    /// The plain value of what etcd holds for `key`.
    pub fn decrypt(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>, String> {
        let Some(providers) = self.providers(key) else {
            return Ok(stored.to_vec());
        };
        if !stored.starts_with(b"k8s:enc:") {
            // written before encryption was on: only readable through identity
            return if providers.iter().any(|p| matches!(p, Provider::Identity)) {
                Ok(stored.to_vec())
            } else {
                Err(format!("{key}: the stored value is not encrypted and no identity provider is configured"))
            };
        }
        let by_prefix: HashMap<String, &Provider> = providers
            .iter()
            .filter_map(|p| match p {
                Provider::AesCbc { name, .. } => Some((format!("k8s:enc:aescbc:v1:{name}:"), p)),
                Provider::AesGcm { name, .. } => Some((format!("k8s:enc:aesgcm:v1:{name}:"), p)),
                Provider::SecretBox { name, .. } => {
                    Some((format!("k8s:enc:secretbox:v1:{name}:"), p))
                }
                Provider::Identity => None,
            })
            .collect();
        let Some((prefix, p)) = by_prefix
            .iter()
            .find(|(pre, _)| stored.starts_with(pre.as_bytes()))
        else {
            return Err(format!("{key}: no configured key can read this value"));
        };
        let body = &stored[prefix.len()..];
        match p {
            Provider::AesCbc { key: k, .. } => {
                if body.len() < 16 {
                    return Err(format!("{key}: the encrypted value is too short"));
                }
                let (iv, ct) = body.split_at(16);
                let pt = match k.len() {
                    16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(k, iv)
                        .map_err(|e| e.to_string())?
                        .decrypt_padded_vec_mut::<Pkcs7>(ct),
                    24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(k, iv)
                        .map_err(|e| e.to_string())?
                        .decrypt_padded_vec_mut::<Pkcs7>(ct),
                    _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(k, iv)
                        .map_err(|e| e.to_string())?
                        .decrypt_padded_vec_mut::<Pkcs7>(ct),
                };
                pt.map_err(|_| format!("{key}: decryption failed"))
            }
            Provider::AesGcm { key: k, .. } => {
                if body.len() < 12 + 16 {
                    return Err(format!("{key}: the encrypted value is too short"));
                }
                let alg = if k.len() == 16 {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let opening = aead::LessSafeKey::new(
                    aead::UnboundKey::new(alg, k).map_err(|_| "bad key".to_string())?,
                );
                let (n, ct) = body.split_at(12);
                let mut nonce = [0u8; 12];
                nonce.copy_from_slice(n);
                let mut buf = ct.to_vec();
                let pt = opening
                    .open_in_place(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(key.as_bytes()),
                        &mut buf,
                    )
                    .map_err(|_| format!("{key}: decryption failed"))?;
                Ok(pt.to_vec())
            }
            Provider::SecretBox { key: k, .. } => {
                use crypto_secretbox::aead::{AeadInPlace, KeyInit};
                if body.len() < 24 + 16 {
                    return Err(format!("{key}: the encrypted value is too short"));
                }
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(k)
                    .map_err(|_| "bad key".to_string())?;
                let (nonce, rest) = body.split_at(24);
                let (tag, ct) = rest.split_at(16);
                let mut buf = ct.to_vec();
                cipher
                    .decrypt_in_place_detached(nonce.into(), b"", &mut buf, tag.into())
                    .map_err(|_| format!("{key}: decryption failed"))?;
                Ok(buf)
            }
            Provider::Identity => Ok(stored.to_vec()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(providers: &str) -> Transformer {
        let text = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        );
        Transformer::parse(&text, &|r| {
            (r == "secrets").then(|| "/registry/secrets/".to_string())
        })
        .unwrap()
    }

    const K1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/MTIzNDU="; // 32 bytes
    const K2: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes

    #[test]
    fn both_ciphers_round_trip_and_hide_the_value() {
        for kind in ["aescbc", "aesgcm", "secretbox"] {
            let t = config(&format!(
                "  - {kind}:\n      keys:\n      - name: key1\n        secret: {K1}\n"
            ));
            let key = "/registry/secrets/default/s1";
            let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec();
            let stored = t.encrypt(key, plain.clone());
            assert!(stored.starts_with(format!("k8s:enc:{kind}:v1:key1:").as_bytes()));
            assert!(!stored.windows(8).any(|w| w == b"password"));
            assert_eq!(t.decrypt(key, &stored).unwrap(), plain);
            // other resources are untouched
            assert_eq!(
                t.encrypt("/registry/configmaps/default/c", b"x".to_vec()),
                b"x"
            );
            // a value tampered with does not decrypt
            let mut bad = stored.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(t.decrypt(key, &bad).is_err());
        }
    }

    /// A value sealed by libsodium (PyNaCl's SecretBox, as Go's
    /// nacl/secretbox: the tag before the ciphertext) reads back here.
    #[test]
    fn secretbox_reads_nacl_values() {
        let t = config(&format!(
            "  - secretbox:\n      keys:\n      - name: key1\n        secret: {K1}\n"
        ));
        let sealed = "85edf9618609181bc689cea899f53b4b9e8580d0a691830fd3ad5dd48978d7bb4b6838c864";
        let mut stored = b"k8s:enc:secretbox:v1:key1:".to_vec();
        stored.extend((0u8..24).collect::<Vec<u8>>());
        stored.extend(
            (0..sealed.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&sealed[i..i + 2], 16).unwrap()),
        );
        assert_eq!(
            t.decrypt("/registry/secrets/default/s1", &stored).unwrap(),
            br#"{"data":{"k":"dg=="}}"#
        );
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_first() {
        let key = "/registry/secrets/default/s1";
        let old = config(&format!("  - aescbc:\n      keys:\n      - name: key1\n        secret: {K1}\n  - identity: {{}}\n"));
        let plain_before = b"{\"v\":0}".to_vec();
        // written before encryption (identity), then with key1
        assert_eq!(old.decrypt(key, &plain_before).unwrap(), plain_before);
        let stored1 = old.encrypt(key, b"{\"v\":1}".to_vec());
        let new = config(&format!(
            "  - aescbc:\n      keys:\n      - name: key2\n        secret: {K2}\n      - name: key1\n        secret: {K1}\n"
        ));
        assert_eq!(new.decrypt(key, &stored1).unwrap(), b"{\"v\":1}");
        assert!(new
            .encrypt(key, b"{}".to_vec())
            .starts_with(b"k8s:enc:aescbc:v1:key2:"));
        // without identity, unencrypted values are refused
        assert!(new.decrypt(key, &plain_before).is_err());
    }

    #[test]
    fn bad_configurations_are_errors() {
        let p = |r: &str| (r == "secrets").then(|| "/registry/secrets/".to_string());
        assert!(Transformer::parse("kind: Nope\n", &p).is_err());
        let short = "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: c2hvcnQ=\n";
        assert!(Transformer::parse(short, &p).unwrap_err().contains("bytes"));
        let unknown = "kind: EncryptionConfiguration\nresources:\n- resources: [widgets]\n  providers:\n  - identity: {}\n";
        assert!(Transformer::parse(unknown, &p).is_err());
        let kms = "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - kms: {}\n";
        assert!(Transformer::parse(kms, &p)
            .unwrap_err()
            .contains("not supported"));
    }
}
