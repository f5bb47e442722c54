//! The TLS crypto choices shared by Berth's listener (`berth-server`) and its load
//! generator (`berth-bench`): whose AES-GCM seals records on this CPU ([`AeadImpl`]), and
//! the cipher suites that follow from it.
//!
//! rustls runs on either of two crypto providers, and their AES-GCM code is vectorised
//! for different CPUs. Bulk encryption is the largest user-space cost of a TLS pull
//! (docs/benchmarks.md, TLS profiles), so the choice is made per CPU at start.
//!
//! [`record`] and [`session`] are the TLS 1.3 record layer for connections whose records
//! the listener seals itself, in place around bytes read from the page cache, after
//! rustls ran the handshake.

pub mod record;
pub mod session;

use rustls::crypto::CryptoProvider;
use rustls::SupportedCipherSuite;

/// Whose AES-GCM code seals (and opens) the TLS records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadImpl {
    /// aws-lc (rustls' `aws_lc_rs` provider): AES-GCM over AVX-512 with VAES and
    /// VPCLMULQDQ; on an x86 CPU without AVX-512 it falls back to its six-block
    /// AES-NI/AVX code.
    AwsLc,
    /// ring: AES-GCM over 256-bit VAES and VPCLMULQDQ with AVX2 (it has no AVX-512 path).
    Ring,
}

impl AeadImpl {
    /// Both, aws-lc first.
    pub const ALL: [AeadImpl; 2] = [AeadImpl::AwsLc, AeadImpl::Ring];

    /// The faster of the two on this CPU, as measured (docs/benchmarks.md, TLS): on an x86
    /// CPU with AVX-512 (Intel Ice Lake and later, AMD Zen 4) aws-lc sealed 14-26 % faster
    /// than ring; on one with VAES and AVX2 but no AVX-512 (AMD Zen 3), where aws-lc is
    /// left with its AES-NI code, ring sealed 30-85 % faster. Elsewhere (x86 without VAES,
    /// where both run the same AES-NI code, and ARM) aws-lc.
    pub fn for_this_cpu() -> AeadImpl {
        #[cfg(target_arch = "x86_64")]
        if wide_aes_without_avx512() {
            return AeadImpl::Ring;
        }
        AeadImpl::AwsLc
    }

    /// The library's name.
    pub fn name(self) -> &'static str {
        match self {
            AeadImpl::AwsLc => "aws-lc-rs",
            AeadImpl::Ring => "ring",
        }
    }

    /// rustls' whole provider of this library (its own key exchange, signatures and
    /// suites, in its own order).
    pub fn provider(self) -> CryptoProvider {
        match self {
            AeadImpl::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
            AeadImpl::Ring => rustls::crypto::ring::default_provider(),
        }
    }

    /// The cipher suites whose records this library seals, in the library's order.
    pub fn cipher_suites(self) -> Vec<SupportedCipherSuite> {
        self.provider().cipher_suites
    }
}

/// Whether this x86 CPU has ring's VAES/AVX2 AES-GCM but not aws-lc's AVX-512 one (whose
/// condition, `crypto_gcm_avx512_enabled`, also wants AVX-512 F, BW, DQ and VL).
#[cfg(target_arch = "x86_64")]
fn wide_aes_without_avx512() -> bool {
    use std::arch::is_x86_feature_detected as has;
    let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
    has!("vaes") && has!("vpclmulqdq") && has!("avx2") && !avx512
}

/// aws-lc-rs for the handshake (key exchange with the post-quantum hybrid, certificate
/// signatures, randomness), with the cipher suites of `aead`, in the library's order.
pub fn provider_with(aead: AeadImpl) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: aead.cipher_suites(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_libraries_offer_the_same_suites() {
        let names = |a: AeadImpl| {
            let mut v: Vec<u16> = a.cipher_suites().iter().map(|s| s.suite().into()).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(names(AeadImpl::AwsLc), names(AeadImpl::Ring));
        assert!(!names(AeadImpl::Ring).is_empty());
    }

    #[test]
    fn the_choice_follows_the_cpu() {
        let chosen = AeadImpl::for_this_cpu();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if chosen == AeadImpl::Ring {
                // ring only where its 256-bit VAES code runs and aws-lc's AVX-512 does not.
                assert!(has!("vaes") && has!("vpclmulqdq") && has!("avx2"));
                assert!(
                    !(has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl"))
                );
            }
            assert_eq!(chosen == AeadImpl::Ring, wide_aes_without_avx512());
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(chosen, AeadImpl::AwsLc);
    }

    #[test]
    fn the_handshake_stays_on_aws_lc() {
        let p = provider_with(AeadImpl::Ring);
        let aws = rustls::crypto::aws_lc_rs::default_provider();
        let groups =
            |p: &CryptoProvider| -> Vec<_> { p.kx_groups.iter().map(|g| g.name()).collect() };
        assert_eq!(groups(&p), groups(&aws));
        assert_eq!(
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>(),
            AeadImpl::Ring
                .cipher_suites()
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        );
    }
}
