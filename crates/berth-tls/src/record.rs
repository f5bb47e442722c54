//! TLS 1.3 record protection with AES-GCM (RFC 8446 §5.2-5.3), in place.
//!
//! rustls seals a record by first copying the plaintext it is given into a new buffer
//! behind the record header. A server that reads a blob from the page cache can instead
//! read it straight into the record's payload slot and seal it where it lies, which saves
//! that copy (docs/benchmarks.md, TLS profiles). [`RecordKey`] is the protection of one
//! direction of a connection after its handshake: the key and IV rustls hands over
//! ([`rustls::ConnectionTrafficSecrets`]) and the record sequence number.

use std::ops::Range;

use rustls::ConnectionTrafficSecrets;

use crate::AeadImpl;

/// Bytes of a record header: content type, legacy version, length.
pub const HEADER: usize = 5;
/// Bytes of an AES-GCM tag.
pub const TAG: usize = 16;
/// What sealing adds to the plaintext of a record: header, inner content type, tag.
pub const OVERHEAD: usize = HEADER + 1 + TAG;
/// The most plaintext one record carries (2^14).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The longest record a peer may send: its header and at most 2^14 + 256 bytes.
pub const MAX_RECORD: usize = HEADER + MAX_PLAINTEXT + 256;

/// The content types of TLS 1.3's inner plaintext (the outer type is always
/// application data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Alert,
    Handshake,
    ApplicationData,
}

impl ContentType {
    fn byte(self) -> u8 {
        match self {
            ContentType::Alert => 21,
            ContentType::Handshake => 22,
            ContentType::ApplicationData => 23,
        }
    }

    fn from_byte(b: u8) -> Option<ContentType> {
        match b {
            21 => Some(ContentType::Alert),
            22 => Some(ContentType::Handshake),
            23 => Some(ContentType::ApplicationData),
            _ => None,
        }
    }
}

/// Why a record could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the negotiated cipher suite is not AES-GCM")]
    UnsupportedSuite,
    #[error("the record key could not be made")]
    BadKey,
    #[error("the record sequence number is exhausted")]
    SequenceExhausted,
    #[error("the record buffer is too short for {0} bytes of plaintext")]
    NoRoom(usize),
    #[error("a record is malformed: {0}")]
    Malformed(&'static str),
    #[error("a record failed authentication (bad_record_mac)")]
    BadRecordMac,
}

enum Key {
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    // Boxed: ring keeps its AES key schedule inline (544 bytes).
    Ring(Box<ring::aead::LessSafeKey>),
}

/// The record protection of one direction of a TLS 1.3 connection.
pub struct RecordKey {
    key: Key,
    iv: [u8; 12],
    seq: u64,
}

impl RecordKey {
    /// The key for `secrets` (AES-128-GCM or AES-256-GCM) with records numbered from
    /// `seq`, sealed and opened by `aead`'s code.
    pub fn new(
        aead: AeadImpl,
        secrets: &ConnectionTrafficSecrets,
        seq: u64,
    ) -> Result<RecordKey, RecordError> {
        let (key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (key, iv),
            _ => return Err(RecordError::UnsupportedSuite),
        };
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| RecordError::BadKey)?;
        RecordKey::from_parts(aead, key.as_ref(), iv, seq)
    }

    /// The AES-GCM key of `key`'s length (16 or 32 bytes) with `iv`, from record `seq`.
    fn from_parts(
        aead: AeadImpl,
        key: &[u8],
        iv: [u8; 12],
        seq: u64,
    ) -> Result<RecordKey, RecordError> {
        let aes256 = match key.len() {
            16 => false,
            32 => true,
            _ => return Err(RecordError::BadKey),
        };
        let key = match aead {
            AeadImpl::AwsLc => {
                use aws_lc_rs::aead::{UnboundKey, AES_128_GCM, AES_256_GCM};
                let alg = if aes256 { &AES_256_GCM } else { &AES_128_GCM };
                let k = UnboundKey::new(alg, key).map_err(|_| RecordError::BadKey)?;
                Key::AwsLc(aws_lc_rs::aead::LessSafeKey::new(k))
            }
            AeadImpl::Ring => {
                use ring::aead::{UnboundKey, AES_128_GCM, AES_256_GCM};
                let alg = if aes256 { &AES_256_GCM } else { &AES_128_GCM };
                let k = UnboundKey::new(alg, key).map_err(|_| RecordError::BadKey)?;
                Key::Ring(Box::new(ring::aead::LessSafeKey::new(k)))
            }
        };
        Ok(RecordKey { key, iv, seq })
    }

    /// The sequence number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The per-record nonce: the IV xor the sequence number (RFC 8446 §5.3); takes the
    /// number.
    fn next_nonce(&mut self) -> Result<[u8; 12], RecordError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(RecordError::SequenceExhausted)?;
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        Ok(nonce)
    }

    /// Seals one record where it lies: `record[HEADER..HEADER + len]` holds its
    /// plaintext; writes the header, the inner content type and the tag around it.
    /// Returns the record's length (`len + OVERHEAD`).
    pub fn seal(
        &mut self,
        record: &mut [u8],
        len: usize,
        typ: ContentType,
    ) -> Result<usize, RecordError> {
        if len > MAX_PLAINTEXT || record.len() < len + OVERHEAD {
            return Err(RecordError::NoRoom(len));
        }
        record[HEADER + len] = typ.byte();
        self.seal_inner(record, len + 1)
    }

    /// Seals `record[HEADER..HEADER + inner]`, the inner plaintext (content, type byte,
    /// any padding), writing the header before it and the tag after it.
    fn seal_inner(&mut self, record: &mut [u8], inner: usize) -> Result<usize, RecordError> {
        let body = inner + TAG;
        if record.len() < HEADER + body {
            return Err(RecordError::NoRoom(inner));
        }
        let header = header(body);
        record[..HEADER].copy_from_slice(&header);
        let nonce = self.next_nonce()?;
        let in_out = &mut record[HEADER..HEADER + inner];
        let tag: [u8; TAG] = match &self.key {
            Key::AwsLc(k) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                let t = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(header),
                        in_out,
                    )
                    .map_err(|_| RecordError::NoRoom(inner))?;
                t.as_ref().try_into().map_err(|_| RecordError::BadKey)?
            }
            Key::Ring(k) => {
                use ring::aead::{Aad, Nonce};
                let t = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(header),
                        in_out,
                    )
                    .map_err(|_| RecordError::NoRoom(inner))?;
                t.as_ref().try_into().map_err(|_| RecordError::BadKey)?
            }
        };
        record[HEADER + inner..HEADER + body].copy_from_slice(&tag);
        Ok(HEADER + body)
    }

    /// Opens one whole record (header and body) where it lies. Returns its inner content
    /// type and where its plaintext is in `record` (padding removed).
    pub fn open(&mut self, record: &mut [u8]) -> Result<(ContentType, Range<usize>), RecordError> {
        let len = record_len(record)?.ok_or(RecordError::Malformed("short record"))?;
        if record.len() != len {
            return Err(RecordError::Malformed("record length"));
        }
        if len < HEADER + 1 + TAG {
            return Err(RecordError::Malformed("record shorter than its tag"));
        }
        let mut aad = [0u8; HEADER];
        aad.copy_from_slice(&record[..HEADER]);
        let nonce = self.next_nonce()?;
        let in_out = &mut record[HEADER..];
        let plain = match &self.key {
            Key::AwsLc(k) => {
                use aws_lc_rs::aead::{Aad, Nonce};
                k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
                    .map_err(|_| RecordError::BadRecordMac)?
                    .len()
            }
            Key::Ring(k) => {
                use ring::aead::{Aad, Nonce};
                k.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
                    .map_err(|_| RecordError::BadRecordMac)?
                    .len()
            }
        };
        // The inner plaintext is content || type || zero padding.
        let inner = &record[HEADER..HEADER + plain];
        let Some(end) = inner.iter().rposition(|b| *b != 0) else {
            return Err(RecordError::Malformed("record without a content type"));
        };
        let typ = ContentType::from_byte(inner[end])
            .ok_or(RecordError::Malformed("unknown inner content type"))?;
        if end > MAX_PLAINTEXT {
            return Err(RecordError::Malformed("record plaintext over 2^14 bytes"));
        }
        Ok((typ, HEADER..HEADER + end))
    }
}

/// The header of a TLS 1.3 record with `body` bytes of ciphertext.
fn header(body: usize) -> [u8; HEADER] {
    let [hi, lo] = (body as u16).to_be_bytes();
    [23, 3, 3, hi, lo]
}

/// The whole length of the record `buf` starts with, once its header is there; checks
/// the header as RFC 8446 §5.2 has a TLS 1.3 peer send it after the handshake.
pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[0] != 23 {
        return Err(RecordError::Malformed(
            "a record that is not application data after the handshake",
        ));
    }
    if buf[1] != 3 {
        return Err(RecordError::Malformed("record version"));
    }
    let len = HEADER + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if len > MAX_RECORD {
        return Err(RecordError::Malformed("record overflow"));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn key(aead: AeadImpl, aes256: bool, seed: u8, seq: u64) -> RecordKey {
        let key = vec![seed; if aes256 { 32 } else { 16 }];
        RecordKey::from_parts(aead, &key, [seed.wrapping_add(1); 12], seq).unwrap()
    }

    #[test]
    fn a_record_sealed_by_one_library_opens_with_the_other() {
        for aes256 in [false, true] {
            for (a, b) in [
                (AeadImpl::AwsLc, AeadImpl::Ring),
                (AeadImpl::Ring, AeadImpl::AwsLc),
            ] {
                let mut tx = key(a, aes256, 7, 5);
                let mut rx = key(b, aes256, 7, 5);
                for msg in [&b"hello"[..], &[0u8; 300][..], &[9u8; MAX_PLAINTEXT][..]] {
                    let mut rec = vec![0u8; msg.len() + OVERHEAD];
                    rec[HEADER..HEADER + msg.len()].copy_from_slice(msg);
                    let n = tx
                        .seal(&mut rec, msg.len(), ContentType::ApplicationData)
                        .unwrap();
                    assert_eq!(n, rec.len());
                    assert_eq!(record_len(&rec).unwrap(), Some(n));
                    assert_ne!(&rec[HEADER..HEADER + msg.len()], msg, "sealed in place");
                    let (typ, range) = rx.open(&mut rec).unwrap();
                    assert_eq!(typ, ContentType::ApplicationData);
                    assert_eq!(&rec[range], msg);
                }
                assert_eq!((tx.seq(), rx.seq()), (8, 8));
            }
        }
    }

    #[test]
    fn a_tampered_or_replayed_record_is_refused() {
        let mut tx = key(AeadImpl::AwsLc, false, 1, 0);
        let mut rx = key(AeadImpl::Ring, false, 1, 0);
        let mut rec = vec![0u8; 4 + OVERHEAD];
        rec[HEADER..HEADER + 4].copy_from_slice(b"abcd");
        tx.seal(&mut rec, 4, ContentType::Alert).unwrap();
        let sealed = rec.clone();
        rec[HEADER + 1] ^= 1;
        assert_eq!(rx.open(&mut rec), Err(RecordError::BadRecordMac));
        // The failed record used sequence number 0: the same record again is out of turn.
        let mut again = sealed.clone();
        assert_eq!(rx.open(&mut again), Err(RecordError::BadRecordMac));
        let mut rx = key(AeadImpl::Ring, false, 1, 0);
        let mut ok = sealed.clone();
        assert_eq!(rx.open(&mut ok).unwrap().0, ContentType::Alert);
        let mut replay = sealed;
        assert_eq!(rx.open(&mut replay), Err(RecordError::BadRecordMac));
    }

    #[test]
    fn padding_is_removed_and_headers_are_checked() {
        let mut tx = key(AeadImpl::AwsLc, true, 3, 0);
        let mut rx = key(AeadImpl::Ring, true, 3, 0);
        // Inner plaintext "hi", handshake type, three bytes of zero padding.
        let inner = b"hi\x16\0\0\0";
        let mut rec = vec![0u8; HEADER + inner.len() + TAG];
        rec[HEADER..HEADER + inner.len()].copy_from_slice(inner);
        let n = tx.seal_inner(&mut rec, inner.len()).unwrap();
        let (typ, range) = rx.open(&mut rec[..n]).unwrap();
        assert_eq!(typ, ContentType::Handshake);
        assert_eq!(&rec[range], b"hi");
        // All padding, no type: refused.
        let mut rec = vec![0u8; HEADER + 3 + TAG];
        let n = tx.seal_inner(&mut rec, 3).unwrap();
        assert!(rx.open(&mut rec[..n]).is_err());
        assert!(record_len(&[22, 3, 3, 0, 5]).is_err());
        assert!(record_len(&[23, 3, 3, 0x48, 0x01]).is_err());
        assert_eq!(record_len(&[23, 3, 3, 0, 17]).unwrap(), Some(22));
        assert_eq!(record_len(&[23, 3, 3]).unwrap(), None);
    }

    #[test]
    fn only_aes_gcm_is_taken() {
        let chacha = ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from([0u8; 32]),
            iv: Iv::from([0; 12]),
        };
        assert!(matches!(
            RecordKey::new(AeadImpl::Ring, &chacha, 0),
            Err(RecordError::UnsupportedSuite)
        ));
    }
}
