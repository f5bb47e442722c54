//! Benchmark data: fast pseudo-random bytes (incompressible enough for a registry,
//! which never compresses) and their digests.

use sha2::{Digest as _, Sha256};

/// SplitMix64: a fast, seedable generator; quality is irrelevant here.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        // Nothing drawn for an empty remainder, so that filling a buffer in pieces whose
        // sizes are multiples of 8 gives the same bytes as filling it at once.
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }
}

/// `n` random bytes from `seed`.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng::new(seed).fill(&mut v);
    v
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Makes `blob` unique for (`round`, `target`, `kind`) by overwriting its first 16 bytes,
/// so that no registry can skip work because it already holds the content.
pub fn stamp(blob: &mut [u8], round: u32, target: u32, kind: u32) {
    let mut tag = [0u8; 16];
    tag[..4].copy_from_slice(&round.to_le_bytes());
    tag[4..8].copy_from_slice(&target.to_le_bytes());
    tag[8..12].copy_from_slice(&kind.to_le_bytes());
    tag[12..].copy_from_slice(b"bbch");
    let n = tag.len().min(blob.len());
    blob[..n].copy_from_slice(&tag[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_in_pieces_matches_filling_at_once() {
        let whole = random_bytes(5, 64 << 10);
        let mut pieces = vec![0u8; 64 << 10];
        let mut rng = Rng::new(5);
        for part in pieces.chunks_mut(4096) {
            rng.fill(part);
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn deterministic_and_distinct() {
        assert_eq!(random_bytes(1, 33), random_bytes(1, 33));
        assert_ne!(random_bytes(1, 33), random_bytes(2, 33));
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut a = random_bytes(3, 64);
        let mut b = a.clone();
        stamp(&mut a, 1, 0, 0);
        stamp(&mut b, 1, 1, 0);
        assert_ne!(digest(&a), digest(&b));
    }
}
