//! A SHA-256 whose state can be saved and restored: the running hash of an S3 upload.
//!
//! The bytes of an S3 multipart upload cannot be read back before the upload is completed,
//! so the hash of what was received so far must be stored beside the parts, for whichever
//! replica receives the next chunk. `sha2`'s hasher keeps its state private; this one
//! drives the public compression function (`sha2::compress256`) itself and keeps the
//! three things a SHA-256 in progress consists of: the eight state words, the number of
//! bytes hashed, and the partial block not yet compressed (under 64 bytes).

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

/// The initial state words of SHA-256 (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A SHA-256 in progress that serializes to a few dozen bytes of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableSha256 {
    /// The state words after the last whole block.
    state: [u32; 8],
    /// Bytes hashed so far, the partial block included.
    len: u64,
    /// The bytes after the last whole block, hex-encoded (always under 64 bytes).
    #[serde(with = "hex_bytes")]
    partial: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: IV,
            len: 0,
            partial: Vec::with_capacity(64),
        }
    }
}

impl ResumableSha256 {
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data` after the bytes hashed so far.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (64 - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < 64 {
                return;
            }
            sha2::compress256(&mut self.state, &[*GenericArray::from_slice(&self.partial)]);
            self.partial.clear();
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            sha2::compress256(&mut self.state, &[*GenericArray::from_slice(block)]);
        }
        self.partial.extend_from_slice(blocks.remainder());
    }

    /// The hex SHA-256 of every byte hashed (the state itself is left as it was, so that
    /// a commit against the wrong digest keeps the upload resumable).
    pub fn hex(&self) -> String {
        let mut state = self.state;
        // Padding: a one bit, zeros up to 56 bytes modulo 64, the length in bits.
        let mut tail = self.partial.clone();
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        for block in tail.chunks_exact(64) {
            sha2::compress256(&mut state, &[*GenericArray::from_slice(block)]);
        }
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        hex::encode(out)
    }
}

/// Serde of a byte vector as a hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() >= 64 {
            return Err(serde::de::Error::custom(
                "a partial block is under 64 bytes",
            ));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::Digest;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn matches_sha2_at_every_length_around_block_edges() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096 + 3] {
            let data = content(len);
            let mut h = ResumableSha256::default();
            h.update(&data);
            assert_eq!(h.hex(), Digest::sha256(&data).hex(), "length {len}");
            assert_eq!(h.len(), len as u64);
        }
    }

    #[test]
    fn split_updates_give_the_same_digest() {
        let data = content(777);
        for split in [0, 1, 63, 64, 65, 300, 776, 777] {
            let mut h = ResumableSha256::default();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(h.hex(), Digest::sha256(&data).hex(), "split at {split}");
        }
    }

    #[test]
    fn a_saved_state_resumes_where_it_stopped() {
        let data = content(5000);
        let mut h = ResumableSha256::default();
        h.update(&data[..1234]);
        let saved = serde_json::to_string(&h).unwrap();
        let mut resumed: ResumableSha256 = serde_json::from_str(&saved).unwrap();
        assert_eq!(resumed, h);
        resumed.update(&data[1234..]);
        assert_eq!(resumed.hex(), Digest::sha256(&data).hex());
        // Asking for the digest does not consume the state.
        assert_eq!(resumed.hex(), Digest::sha256(&data).hex());
    }

    #[test]
    fn a_partial_block_of_64_bytes_or_more_is_refused() {
        let bad = format!(
            r#"{{"state":[0,0,0,0,0,0,0,0],"len":64,"partial":"{}"}}"#,
            "00".repeat(64)
        );
        assert!(serde_json::from_str::<ResumableSha256>(&bad).is_err());
    }
}
