//! Signatures on Anthropic `thinking` blocks: an HMAC of the thinking text under a key this
//! process drew at start, so a client cannot hand the gateway reasoning it did not produce (a
//! restart invalidates earlier signatures, which clients then see as a 400).

use std::sync::OnceLock;

use crate::jobs::callback::hmac_sha256;

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

/// The signature of `thinking`.
pub fn sign(thinking: &str) -> String {
    crate::util::hex(&hmac_sha256(key(), thinking.as_bytes()))
}

/// Whether `signature` is this process's signature of `thinking` (compared in constant time).
pub fn verify(thinking: &str, signature: &str) -> bool {
    let want = sign(thinking);
    want.len() == signature.len()
        && want
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
