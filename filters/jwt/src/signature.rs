//! Signature checks: pure Rust through `jwt-compact`'s `Algorithm` trait
//! (every host, every algorithm), or Envoy's `verify_signature` foreign
//! function (BoringSSL in the host: RS*, ES*; about 20x faster in V8).
//!
//! The backend is chosen per request from the stream's host kind, never probed:
//! calling an unknown foreign function kills a Kong instance.

use crate::jwks::{Alg, Material, PreparedKey};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::{Algorithm, AlgorithmSignature};
use palisade_core::Host;
use prost::encoding::{bytes, string};
use std::borrow::Cow;
use std::num::NonZeroUsize;

/// Who checked a signature, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedBy {
    Host,
    Pure,
}

/// Checks `signature` over `signed` (the token up to its last dot).
pub fn verify(
    host: &mut dyn Host,
    use_host: bool,
    alg: Alg,
    key: &PreparedKey,
    signed: &[u8],
    signature: &[u8],
) -> (bool, CheckedBy) {
    if use_host {
        if let Some(args) = host_arguments(alg, key, signed, signature) {
            match args {
                HostArgs::Call(args) => {
                    if let Some(reply) = host.foreign_function("verify_signature", &args) {
                        return (host_says_valid(&reply), CheckedBy::Host);
                    }
                }
                // Not even DER-encodable: not a valid signature.
                HostArgs::Invalid => return (false, CheckedBy::Host),
            }
        }
    }
    (verify_pure(alg, key, signed, signature), CheckedBy::Pure)
}

/// A `VerifySignatureResult` whose `result` (field 1, bool) is true.
pub fn host_says_valid(reply: &[u8]) -> bool {
    reply.starts_with(&[0x08, 0x01])
}

pub enum HostArgs {
    Call(Vec<u8>),
    Invalid,
}

/// Envoy's `VerifySignatureArguments` protobuf: 1 hash name, 2 DER SPKI
/// public key, 3 signature (DER for ECDSA), 4 signed text. `None` when the
/// host cannot check this algorithm (PS*, EdDSA, HS*).
pub fn host_arguments(
    alg: Alg,
    key: &PreparedKey,
    signed: &[u8],
    signature: &[u8],
) -> Option<HostArgs> {
    let spki = key.spki_der.as_deref()?;
    let (hash, sig): (&str, Cow<'_, [u8]>) = match (alg, &key.material) {
        (Alg::RS256, Material::Rsa(_)) => ("sha256", Cow::Borrowed(signature)),
        (Alg::RS384, Material::Rsa(_)) => ("sha384", Cow::Borrowed(signature)),
        (Alg::RS512, Material::Rsa(_)) => ("sha512", Cow::Borrowed(signature)),
        (Alg::ES256, Material::P256(_)) => match p256::ecdsa::Signature::from_slice(signature) {
            Ok(s) => ("sha256", Cow::Owned(s.to_der().as_bytes().to_vec())),
            Err(_) => return Some(HostArgs::Invalid),
        },
        (Alg::ES384, Material::P384(_)) => match p384::ecdsa::Signature::from_slice(signature) {
            Ok(s) => ("sha384", Cow::Owned(s.to_der().as_bytes().to_vec())),
            Err(_) => return Some(HostArgs::Invalid),
        },
        _ => return None,
    };
    let mut out = Vec::with_capacity(spki.len() + sig.len() + signed.len() + 24);
    string::encode(1, &hash.to_string(), &mut out);
    bytes::encode(2, &spki.to_vec(), &mut out);
    bytes::encode(3, &sig.into_owned(), &mut out);
    bytes::encode(4, &signed.to_vec(), &mut out);
    Some(HostArgs::Call(out))
}

/// The pure-Rust check; the signature's length is checked first, as the
/// crates' `try_from_slice` expects.
pub fn verify_pure(alg: Alg, key: &PreparedKey, signed: &[u8], signature: &[u8]) -> bool {
    match (alg, &key.material) {
        (Alg::RS256, Material::Rsa(k)) => check(&Rsa::rs256(), k, signed, signature),
        (Alg::RS384, Material::Rsa(k)) => check(&Rsa::rs384(), k, signed, signature),
        (Alg::RS512, Material::Rsa(k)) => check(&Rsa::rs512(), k, signed, signature),
        (Alg::PS256, Material::Rsa(k)) => check(&Rsa::ps256(), k, signed, signature),
        (Alg::PS384, Material::Rsa(k)) => check(&Rsa::ps384(), k, signed, signature),
        (Alg::PS512, Material::Rsa(k)) => check(&Rsa::ps512(), k, signed, signature),
        (Alg::ES256, Material::P256(k)) => check(&Es256, k, signed, signature),
        (Alg::ES384, Material::P384(k)) => check(&Es384, k, signed, signature),
        (Alg::EdDSA, Material::Ed25519(k)) => check(&Ed25519, k, signed, signature),
        (Alg::HS256, Material::Hmac(k)) => check(&Hs256, &Hs256Key::new(k), signed, signature),
        (Alg::HS384, Material::Hmac(k)) => check(&Hs384, &Hs384Key::new(k), signed, signature),
        (Alg::HS512, Material::Hmac(k)) => check(&Hs512, &Hs512Key::new(k), signed, signature),
        _ => false,
    }
}

fn check<A: Algorithm>(alg: &A, key: &A::VerifyingKey, signed: &[u8], signature: &[u8]) -> bool {
    if let Some(len) = <A::Signature as AlgorithmSignature>::LENGTH {
        if signature.len() != len.get() {
            return false;
        }
    }
    match A::Signature::try_from_slice(signature) {
        Ok(sig) => alg.verify_signature(&sig, key, signed),
        Err(_) => false,
    }
}

/// ES384 (ECDSA over P-384 with SHA-384), which `jwt-compact` 0.8 lacks,
/// plugged into its `Algorithm` trait with the `p384` crate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Es384;

/// A raw `r || s` P-384 signature.
pub struct Es384Signature(p384::ecdsa::Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(96);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        p384::ecdsa::Signature::from_slice(slice)
            .map(Es384Signature)
            .map_err(|e| anyhow::anyhow!(e))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl Algorithm for Es384 {
    type SigningKey = p384::ecdsa::SigningKey;
    type VerifyingKey = p384::ecdsa::VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        use p384::ecdsa::signature::Signer;
        Es384Signature(signing_key.sign(message))
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        use p384::ecdsa::signature::Verifier;
        verifying_key.verify(message, &signature.0).is_ok()
    }
}

/// A compact token's signing input and decoded signature (benches, tests).
pub fn split_compact(token: &str) -> Option<(&str, Vec<u8>)> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let (signed, signature) = token.rsplit_once('.')?;
    Some((signed, Base64UrlUnpadded::decode_vec(signature).ok()?))
}
