//! Delivery from the outbox: POST, sign, retry with exponential backoff and jitter, give
//! up (mark dead) after the hook's `give_up_after`.
//!
//! One task per server reads due rows in batches and attempts up to [`CONCURRENCY`] at
//! once; it sleeps until rows are added (the subscriber wakes it) or [`POLL`] passes,
//! which is also how a row written by `berth admin webhooks --ping` or due for a retry is
//! found. A batch ends when its slowest attempt does (at most the hook's `timeout`), so a
//! hook that hangs delays the others' next batch by that much, never longer. Attempts are recorded without an fsync: a success forgotten by a crash is sent
//! again with the same event id (at least once), and a forgotten failure only retries
//! sooner.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{now_ms, Hook, Webhooks};
use berth_meta::OutboxEntry;

/// How long the task waits for new rows before looking for due retries again.
pub const POLL: Duration = Duration::from_secs(1);
/// Rows read per batch.
const BATCH: usize = 64;
/// Attempts in flight at once.
pub const CONCURRENCY: usize = 8;
/// The wait after the first failed attempt; it doubles with every further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The `X-Berth-Signature` value of `body`: `sha256=` and the lower-case hex HMAC-SHA256
/// of the exact body bytes keyed by `secret` (as GitHub's `X-Hub-Signature-256`).
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error case cannot happen for it.
    match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// The wait before the next attempt after `failures` failed ones (1 or more): the
/// exponential step `FIRST_RETRY * 2^(failures-1)` capped at `max`, of which a random
/// part is dropped ("equal jitter", `jitter` in `[0, 1)`): the wait is in `[step/2,
/// step)`, so deliveries that failed together do not retry together.
pub fn retry_delay(failures: u32, max: Duration, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let step = FIRST_RETRY.saturating_mul(1 << exp).min(max);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A random number in `[0, 1)` from the OS (0.5 if it cannot be read: the wait is then
/// still bounded, only not spread).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// Delivers due rows from the outbox until the task is aborted (at shutdown; an attempt
/// in flight then is attempted again at the next start).
pub async fn deliver_forever(hooks: Arc<Webhooks>) {
    loop {
        let due = match hooks.store.outbox_due(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook outbox");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if due.is_empty() {
            let _ = tokio::time::timeout(POLL, hooks.wake.notified()).await;
            continue;
        }
        futures_util::stream::iter(due)
            .for_each_concurrent(CONCURRENCY, |entry| attempt(&hooks, entry))
            .await;
    }
}

/// One attempt of one delivery, with its outcome recorded.
async fn attempt(hooks: &Webhooks, entry: OutboxEntry) {
    let Some(hook) = hooks.hook(&entry.hook) else {
        // Kept, dead, for when the hook is configured again and redelivered.
        let error = "no webhook of this name is configured";
        record(hooks, &entry, Err(error.to_owned()), None).await;
        return;
    };
    let outcome = post(hooks, hook, &entry).await;
    record(hooks, &entry, outcome, Some(hook)).await;
}

/// POSTs the row's body; `Err` says why it failed, for the admin API.
async fn post(hooks: &Webhooks, hook: &Hook, entry: &OutboxEntry) -> Result<(), String> {
    let answer = hooks
        .http
        .post(hook.url.clone())
        .timeout(hook.timeout)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/cloudevents+json; charset=utf-8",
        )
        .header(
            "x-berth-signature",
            signature(&hook.secret, entry.body.as_bytes()),
        )
        .header("ce-id", &entry.event_id)
        .body(entry.body.clone())
        .send()
        .await
        // The URL may carry credentials: errors are reported without it.
        .map_err(|e| e.without_url().to_string())?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// Records an attempt's outcome: deleted on success, else retried later or, past the
/// hook's `give_up_after` (or with no hook), marked dead.
async fn record(
    hooks: &Webhooks,
    entry: &OutboxEntry,
    outcome: Result<(), String>,
    hook: Option<&Hook>,
) {
    let now = now_ms();
    let result = match (outcome, hook) {
        (Ok(()), _) => hooks.store.outbox_delivered(entry.id, now).await,
        (Err(error), hook) => {
            let retry_at = hook.and_then(|h| {
                let delay = retry_delay(entry.attempts + 1, h.retry_max_interval, jitter());
                let at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                let give_up = i64::try_from(h.give_up_after.as_millis()).unwrap_or(i64::MAX);
                (at.saturating_sub(entry.since_ms) < give_up).then_some(at)
            });
            if retry_at.is_none() {
                tracing::warn!(hook = %entry.hook, event = %entry.event_id, %error,
                    "webhook delivery given up (dead); `berth admin webhooks` shows it, --redeliver retries it");
            } else {
                tracing::debug!(hook = %entry.hook, event = %entry.event_id, %error, "webhook delivery failed; will retry");
            }
            hooks
                .store
                .outbox_failed(entry.id, &error, retry_at, now)
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, hook = %entry.hook, "cannot record a webhook delivery attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_of_the_body() {
        // RFC 4231, test case 2: key "Jefe".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        let cap = Duration::from_secs(600);
        let delays: Vec<Duration> = (1..=12).map(|n| retry_delay(n, cap, 0.999_999)).collect();
        // Without jitter's reduction each wait doubles: 1s, 2s, 4s ... until the cap.
        assert!(delays[0] <= Duration::from_secs(1) && delays[0] > Duration::from_millis(999));
        assert!(delays[3] <= Duration::from_secs(8) && delays[3] > Duration::from_millis(7_999));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert!(delays.iter().all(|d| *d <= cap));
        assert!(delays[11] > Duration::from_secs(599));
        // Jitter takes off up to half of a step.
        assert_eq!(retry_delay(4, cap, 0.0), Duration::from_secs(4));
        assert_eq!(retry_delay(20, cap, 0.0), Duration::from_secs(300));
        assert_eq!(retry_delay(u32::MAX, cap, 0.0), Duration::from_secs(300));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
