//! Progress reporting for copies: the [`Progress`] trait the copy engine calls, and its
//! three renderers chosen by the binary: [`Bars`] (a bar per blob plus a total with
//! bytes, rate and ETA, for a terminal), [`Lines`] (one plain line per event, for logs
//! and CI) and [`Quiet`].
//!
//! The engine never writes to the terminal itself; only these renderers do, on stderr.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use berth_oci::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a blob reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    Copied,
    /// Already present at the destination (found by `HEAD`).
    Skipped,
    /// Cross-repository mounted in the same registry.
    Mounted,
}

/// Receives copy events. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// The copy will look at `blobs` blobs totalling `bytes`.
    fn plan(&self, _blobs: usize, _bytes: u64) {}
    /// A blob transfer starts (again, after a retry).
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `n` more bytes of a blob moved.
    fn blob_bytes(&self, _digest: &Digest, _n: u64) {}
    fn blob_done(&self, _digest: &Digest, _size: u64, _how: BlobOutcome) {}
    fn manifest_written(&self, _digest: &Digest, _media_type: &str, _to: &str) {}
    /// A free-form note, e.g. "retrying".
    fn note(&self, _msg: &str) {}
    /// Everything is done; renderers clear their bars.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

fn short(d: &Digest) -> String {
    format!(
        "{}:{}",
        d.algorithm().as_str(),
        &d.hex()[..12.min(d.hex().len())]
    )
}

/// Human-readable size in binary units (`10 B`, `1.5 KiB`, `5.0 GiB`), as the dashboard
/// writes it too.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// One plain line per event on stderr.
pub struct Lines;

impl Progress for Lines {
    fn blob_started(&self, d: &Digest, size: u64) {
        let _ = writeln!(
            std::io::stderr(),
            "copying blob {} ({})",
            short(d),
            human_bytes(size)
        );
    }
    fn blob_done(&self, d: &Digest, size: u64, how: BlobOutcome) {
        let what = match how {
            BlobOutcome::Copied => "copied",
            BlobOutcome::Skipped => "skipped (already present)",
            BlobOutcome::Mounted => "mounted",
        };
        let _ = writeln!(
            std::io::stderr(),
            "blob {} {what} ({})",
            short(d),
            human_bytes(size)
        );
    }
    fn manifest_written(&self, d: &Digest, _media_type: &str, to: &str) {
        let _ = writeln!(std::io::stderr(), "wrote manifest {} to {to}", short(d));
    }
    fn note(&self, msg: &str) {
        let _ = writeln!(std::io::stderr(), "{msg}");
    }
}

/// Progress bars on stderr: one per blob in flight plus a total.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    pub fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "total {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bars {
            multi,
            total,
            bars: Mutex::default(),
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, ProgressBar>> {
        self.bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Progress for Bars {
    fn plan(&self, blobs: usize, bytes: u64) {
        self.total.set_length(bytes);
        self.total.set_message(format!("{blobs} blobs"));
    }
    fn blob_started(&self, d: &Digest, size: u64) {
        let mut bars = self.bars();
        if let Some(old) = bars.get(d) {
            // A retry starts over: take back what the failed attempt counted.
            self.total
                .set_position(self.total.position().saturating_sub(old.position()));
            old.set_position(0);
            return;
        }
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(short(d));
        bars.insert(d.clone(), bar);
    }
    fn blob_bytes(&self, d: &Digest, n: u64) {
        if let Some(b) = self.bars().get(d) {
            b.inc(n);
        }
        self.total.inc(n);
    }
    fn blob_done(&self, d: &Digest, size: u64, how: BlobOutcome) {
        if let Some(b) = self.bars().remove(d) {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        if how != BlobOutcome::Copied {
            self.total.inc(size);
        }
    }
    fn note(&self, msg: &str) {
        let _ = self.multi.println(msg);
    }
    fn finish(&self) {
        self.total.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn bars_survive_hidden_terminal() {
        let b = Bars::new();
        let d = Digest::sha256(b"x");
        b.plan(1, 10);
        b.blob_started(&d, 10);
        b.blob_bytes(&d, 4);
        b.blob_started(&d, 10);
        assert_eq!(b.total.position(), 0);
        b.blob_bytes(&d, 10);
        b.blob_done(&d, 10, BlobOutcome::Copied);
        b.finish();
    }
}
