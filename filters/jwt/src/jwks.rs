//! JSON Web Key Sets, parsed and prepared once per set, never per request.
//!
//! Each key's algorithms are pinned by the key itself (`kty`, `crv`, `alg`)
//! intersected with the provider's allow-list: a token's `alg` header only
//! selects among what the key already allows, so an HS256 token "signed"
//! with an RSA public key finds no key at all. Keys are turned into the
//! crypto crates' types here, and, for the host's `verify_signature`, into
//! a DER SubjectPublicKeyInfo built once.

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::alg::RsaPublicKey;
use jwt_compact::jwk::JsonWebKey;
use rsa::traits::PublicKeyParts;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A JWS algorithm this filter verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    pub fn is_symmetric(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl FromStr for Alg {
    type Err = ();
    fn from_str(s: &str) -> Result<Alg, ()> {
        Alg::ALL.iter().copied().find(|a| a.name() == s).ok_or(())
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of algorithms as a bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    pub fn of(algs: &[Alg]) -> AlgSet {
        AlgSet(algs.iter().fold(0, |m, a| m | a.bit()))
    }

    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }

    pub fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Verification material in the crypto crates' own types.
#[derive(Clone)]
pub enum Material {
    Rsa(Box<RsaPublicKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_compact::PublicKey),
    Hmac(Vec<u8>),
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            Material::Rsa(_) => "Rsa",
            Material::P256(_) => "P256",
            Material::P384(_) => "P384",
            Material::Ed25519(_) => "Ed25519",
            Material::Hmac(_) => "Hmac(..)",
        })
    }
}

/// One key, ready to verify.
#[derive(Debug, Clone)]
pub struct PreparedKey {
    pub kid: Option<String>,
    pub algs: AlgSet,
    pub material: Material,
    /// DER SubjectPublicKeyInfo, for the host's `verify_signature` (RSA, ECDSA).
    pub spki_der: Option<Vec<u8>>,
}

/// A usable key set: never empty.
#[derive(Debug, Clone)]
pub struct KeySet {
    pub keys: Vec<PreparedKey>,
    /// Keys present in the document but not usable here (wrong `use`, unknown
    /// `kty`, outside the allow-list, malformed), for logs.
    pub skipped: usize,
}

/// Which keys can check a token with this `alg` and `kid`.
#[derive(Debug)]
pub enum Lookup<'k> {
    Found(Vec<&'k PreparedKey>),
    /// The set has no key with this `kid`: a rotation may be under way.
    UnknownKid,
    /// Keys exist, but none may verify this algorithm.
    NoKeyForAlg,
}

/// The JWK fields this filter reads. Extra members are ignored, as RFC 7517 asks.
#[derive(Debug, Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

/// RSA moduli below 2048 bits are refused (RFC 7518 §3.3), above 8192 they
/// only make verification a denial-of-service lever.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;
/// HMAC keys shorter than this are guessable offline from one token.
const MIN_HMAC_KEY: usize = 32;

impl KeySet {
    /// A configured (inline) JWKS: a malformed key is an error naming it.
    pub fn from_value(jwks: &Value, allowed: &[Alg]) -> Result<KeySet, String> {
        Self::build(jwks, allowed, true)
    }

    /// A fetched JWKS: malformed keys are skipped; no usable key is an error.
    pub fn from_bytes(body: &[u8], allowed: &[Alg]) -> Result<KeySet, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|_| "the JWKS is not JSON".to_string())?;
        Self::build(&value, allowed, false)
    }

    fn build(jwks: &Value, allowed: &[Alg], strict: bool) -> Result<KeySet, String> {
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "a JWKS is an object with a \"keys\" array".to_string())?;
        let allowed = AlgSet::of(allowed);
        let mut keys = Vec::new();
        let mut skipped = 0;
        for (i, raw) in list.iter().enumerate() {
            match prepare(raw, allowed) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => skipped += 1,
                Err(e) if strict => return Err(format!("keys[{i}]: {e}")),
                Err(_) => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err("no usable signing key for the allowed algorithms".to_string());
        }
        Ok(KeySet { keys, skipped })
    }

    pub fn has_symmetric(&self) -> bool {
        self.keys
            .iter()
            .any(|k| matches!(k.material, Material::Hmac(_)))
    }

    /// Keys for a token. With a `kid`, only keys with that `kid`; without
    /// one, every key allowing the algorithm is tried.
    pub fn lookup(&self, alg: Alg, kid: Option<&str>) -> Lookup<'_> {
        let by_kid: Vec<&PreparedKey> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if by_kid.is_empty() {
            return Lookup::UnknownKid;
        }
        let found: Vec<&PreparedKey> = by_kid
            .into_iter()
            .filter(|k| k.algs.contains(alg))
            .collect();
        if found.is_empty() {
            Lookup::NoKeyForAlg
        } else {
            Lookup::Found(found)
        }
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn b64(field: &str, value: &Option<String>) -> Result<Vec<u8>, String> {
    let text = value
        .as_deref()
        .ok_or_else(|| format!("missing \"{field}\""))?;
    Base64UrlUnpadded::decode_vec(text).map_err(|_| format!("\"{field}\" is not base64url"))
}

/// Algorithms a key's type allows, before its `alg` and the allow-list.
fn algs_for(raw: &RawJwk) -> AlgSet {
    match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => AlgSet::of(&[
            Alg::RS256,
            Alg::RS384,
            Alg::RS512,
            Alg::PS256,
            Alg::PS384,
            Alg::PS512,
        ]),
        ("EC", Some("P-256")) => AlgSet::of(&[Alg::ES256]),
        ("EC", Some("P-384")) => AlgSet::of(&[Alg::ES384]),
        ("OKP", Some("Ed25519")) => AlgSet::of(&[Alg::EdDSA]),
        ("oct", _) => AlgSet::of(&[Alg::HS256, Alg::HS384, Alg::HS512]),
        _ => AlgSet::default(),
    }
}

/// `Ok(None)`: a key this filter does not use (encryption, unknown type, not allowed).
fn prepare(raw: &Value, allowed: AlgSet) -> Result<Option<PreparedKey>, String> {
    let raw: RawJwk =
        serde_json::from_value(raw.clone()).map_err(|_| "not a JWK object".to_string())?;
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let mut algs = algs_for(&raw);
    if algs.is_empty() {
        return Ok(None);
    }
    if let Some(name) = raw.alg.as_deref() {
        let alg: Alg = name
            .parse()
            .map_err(|_| format!("unsupported \"alg\" {name:?}"))?;
        if !algs.contains(alg) {
            return Err(format!("\"alg\" {name} does not fit kty {}", raw.kty));
        }
        algs = AlgSet::of(&[alg]);
    }
    let algs = algs.intersect(allowed);
    if algs.is_empty() {
        return Ok(None);
    }
    let (material, spki_der) = match raw.kty.as_str() {
        "RSA" => {
            let jwk = JsonWebKey::Rsa {
                modulus: Cow::Owned(b64("n", &raw.n)?),
                public_exponent: Cow::Owned(b64("e", &raw.e)?),
                private_parts: None,
            };
            let key = RsaPublicKey::try_from(&jwk).map_err(|e| format!("bad RSA key: {e}"))?;
            if !RSA_BITS.contains(&(key.size() * 8)) {
                return Err(format!(
                    "RSA key of {} bits (2048 to 8192 accepted)",
                    key.size() * 8
                ));
            }
            let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key)
                .map(|d| d.as_bytes().to_vec())
                .ok();
            (Material::Rsa(Box::new(key)), der)
        }
        "EC" => {
            let (x, y) = (b64("x", &raw.x)?, b64("y", &raw.y)?);
            let mut sec1 = vec![4u8];
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            if raw.crv.as_deref() == Some("P-256") {
                if x.len() != 32 || y.len() != 32 {
                    return Err("P-256 coordinates are 32 bytes".into());
                }
                let key = p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "not a point on P-256".to_string())?;
                let der = p256::pkcs8::EncodePublicKey::to_public_key_der(&key)
                    .map(|d| d.as_bytes().to_vec())
                    .ok();
                (Material::P256(key.into()), der)
            } else {
                if x.len() != 48 || y.len() != 48 {
                    return Err("P-384 coordinates are 48 bytes".into());
                }
                let key = p384::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "not a point on P-384".to_string())?;
                let der = p384::pkcs8::EncodePublicKey::to_public_key_der(&key)
                    .map(|d| d.as_bytes().to_vec())
                    .ok();
                (Material::P384(key.into()), der)
            }
        }
        "OKP" => {
            let x = b64("x", &raw.x)?;
            let key = ed25519_compact::PublicKey::from_slice(&x)
                .map_err(|_| "an Ed25519 key is 32 bytes".to_string())?;
            (Material::Ed25519(key), None)
        }
        _ => {
            let k = b64("k", &raw.k)?;
            if k.len() < MIN_HMAC_KEY {
                return Err(format!(
                    "a symmetric key needs at least {MIN_HMAC_KEY} bytes"
                ));
            }
            (Material::Hmac(k), None)
        }
    };
    Ok(Some(PreparedKey {
        kid: raw.kid,
        algs,
        material,
        spki_der,
    }))
}
