//! Tokens: issue, verify, expire, rotate keys; refuse `alg: none`, algorithm confusion, tampering
//! and unknown keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use concord::DocumentId;
use concord::core::DocScope;
use concord_server::auth::{AuthError, KeyRing, TokenRequest, mint, verify};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

fn hmac_entry(kid: &str, byte: u8) -> serde_json::Value {
    serde_json::json!({"kid": kid, "alg": "HS256", "secret": STANDARD.encode([byte; 32])})
}

fn ed_entry(kid: &str, seed: u8, with_private: bool) -> serde_json::Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let mut v = serde_json::json!({"kid": kid, "alg": "EdDSA", "public_pem": public});
    if with_private {
        v["private_pem"] = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string().into();
    }
    v
}

fn ring(entries: Vec<serde_json::Value>) -> KeyRing {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, serde_json::json!({ "keys": entries }).to_string()).unwrap();
    KeyRing::load(&path).unwrap()
}

fn req(ttl: Duration) -> TokenRequest {
    TokenRequest {
        principal: "alice".into(),
        docs: None,
        read_only: false,
        ttl,
        admin: false,
    }
}

#[test]
fn hmac_tokens_round_trip_with_their_grants() {
    let keys = ring(vec![hmac_entry("k1", 1)]);
    let doc = DocumentId::from_bytes([3; 16]);
    let t = mint(
        &keys,
        &TokenRequest {
            docs: Some(vec![doc]),
            read_only: true,
            ..req(Duration::from_secs(60))
        },
    )
    .unwrap();
    let (grant, _exp) = verify(&keys, &t).unwrap();
    assert_eq!(grant.principal, "alice");
    assert!(!grant.write);
    assert_eq!(grant.docs, DocScope::Only([doc].into()));
    assert!(grant.can_read(&doc) && !grant.can_read(&DocumentId::from_bytes([4; 16])));
}

#[test]
fn ed25519_tokens_verify_with_the_public_key_only() {
    let signer = ring(vec![ed_entry("ed1", 7, true)]);
    let verifier = ring(vec![ed_entry("ed1", 7, false)]);
    let t = mint(&signer, &req(Duration::from_secs(60))).unwrap();
    assert_eq!(verify(&verifier, &t).unwrap().0.principal, "alice");
    assert_eq!(
        mint(&verifier, &req(Duration::from_secs(60))),
        Err(AuthError::NoSigningKey)
    );
}

#[test]
fn expired_tokens_are_refused() {
    let keys = ring(vec![hmac_entry("k1", 1)]);
    // Hand-build a token that expired a minute ago (past the 5 s leeway).
    let t = mint(&keys, &req(Duration::from_secs(1))).unwrap();
    let payload = t.split('.').nth(1).unwrap();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["exp"] = (claims["iat"].as_u64().unwrap() - 60).into();
    // Re-signing needs the key: mint through jsonwebtoken directly with the same secret.
    let header = jsonwebtoken::Header {
        kid: Some("k1".into()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let expired = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[1; 32]),
    )
    .unwrap();
    assert_eq!(verify(&keys, &expired).unwrap_err(), AuthError::Expired);
}

#[test]
fn tampered_wrong_key_and_unknown_kid_are_refused() {
    let keys = ring(vec![hmac_entry("k1", 1)]);
    let other = ring(vec![hmac_entry("k1", 2)]);
    let t = mint(&other, &req(Duration::from_secs(60))).unwrap();
    assert!(
        matches!(verify(&keys, &t), Err(AuthError::Invalid(_))),
        "signed with another secret"
    );

    let good = mint(&keys, &req(Duration::from_secs(60))).unwrap();
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD
        .encode(r#"{"sub":"mallory","exp":9999999999,"iat":0,"docs":["*"],"write":true}"#);
    parts[1] = &forged;
    assert!(
        matches!(verify(&keys, &parts.join(".")), Err(AuthError::Invalid(_))),
        "tampered payload"
    );

    let stranger = ring(vec![hmac_entry("k9", 1)]);
    let t = mint(&stranger, &req(Duration::from_secs(60))).unwrap();
    assert_eq!(
        verify(&keys, &t).unwrap_err(),
        AuthError::UnknownKey("k9".into())
    );
    assert!(matches!(
        verify(&keys, "not.a.token"),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(verify(&keys, ""), Err(AuthError::Invalid(_))));
}

#[test]
fn alg_none_and_algorithm_confusion_are_refused() {
    let keys = ring(vec![hmac_entry("k1", 1), ed_entry("ed1", 7, true)]);
    let claims = URL_SAFE_NO_PAD
        .encode(r#"{"sub":"mallory","exp":9999999999,"iat":0,"docs":["*"],"write":true}"#);
    for header in [
        r#"{"alg":"none","kid":"k1"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
    ] {
        let t = format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(header));
        assert!(
            matches!(verify(&keys, &t), Err(AuthError::Invalid(_))),
            "{header} accepted"
        );
    }
    // An HS256 token whose kid names the EdDSA key (signed with its public key bytes as secret).
    let public_pem = ed_entry("ed1", 7, false)["public_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    let header = jsonwebtoken::Header {
        kid: Some("ed1".into()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
    };
    let confused = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub":"mallory","exp":9999999999u64,"iat":0,"docs":["*"],"write":true}),
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        verify(&keys, &confused),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn keys_rotate_without_downtime() {
    let old = ring(vec![hmac_entry("k1", 1)]);
    let both = ring(vec![hmac_entry("k2", 2), hmac_entry("k1", 1)]);
    let new_only = ring(vec![hmac_entry("k2", 2)]);
    let old_token = mint(&old, &req(Duration::from_secs(60))).unwrap();
    assert!(
        verify(&both, &old_token).is_ok(),
        "old tokens still verify during rotation"
    );
    let new_token = mint(&both, &req(Duration::from_secs(60))).unwrap();
    assert!(
        verify(&new_only, &new_token).is_ok(),
        "the rotated ring mints with the new key"
    );
    assert_eq!(
        verify(&new_only, &old_token).unwrap_err(),
        AuthError::UnknownKey("k1".into())
    );
}
