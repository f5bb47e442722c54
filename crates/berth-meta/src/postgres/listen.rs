//! Cache invalidation across replicas: every write that can change what a
//! [`CachingStore`] holds sends `NOTIFY berth_meta, '<instance>\t<repository>'` in its
//! transaction (delivered on commit only). A listener per replica, on a connection of its
//! own, clears the named repository's entries from that replica's cache.
//!
//! Notifications sent while the listener is not connected are lost, so on every
//! (re)connection the whole cache is cleared; between a lost connection and the next one,
//! the cache's short expiry bounds how stale an entry can be.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_postgres::{AsyncMessage, NoTls};

use super::{describe, PgStore, CHANNEL};
use crate::cache::CachingStore;
use crate::MetaError;

/// Pause between connection attempts of the listener, and how often it checks whether
/// its cache still exists.
const RETRY: Duration = Duration::from_secs(1);

impl PgStore {
    /// Keeps `cache` current with the writes other replicas (other [`PgStore`]s) make
    /// to the same database: a listener thread clears the repositories they change.
    /// The thread ends once `cache` is dropped.
    pub fn invalidate_on_change(&self, cache: &Arc<CachingStore>) -> Result<(), MetaError> {
        let config = self.config.clone();
        let instance = self.instance.clone();
        let cache = Arc::downgrade(cache);
        std::thread::Builder::new()
            .name("berth-pg-listen".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(listen(config, instance, cache)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the cache invalidation listener")
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| MetaError::Database {
                context: "starting the cache invalidation listener",
                message: e.to_string(),
            })
    }
}

/// Listens until `cache` is gone, reconnecting whenever the connection is lost.
async fn listen(config: tokio_postgres::Config, instance: String, cache: Weak<CachingStore>) {
    let mut warned = false;
    while cache.strong_count() > 0 {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %describe(&e), "cache invalidation listener lost its connection");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if warned {
                            tracing::info!("cache invalidation listener reconnected");
                            warned = false;
                        }
                        // Changes made while no one listened are unknown: forget all.
                        if let Some(c) = cache.upgrade() {
                            c.forget_all();
                        }
                        follow(&instance, &cache, &mut rx).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), "cannot LISTEN for metadata changes");
                    }
                }
                drop(client);
                driver.abort();
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %describe(&e), "cache invalidation listener cannot connect; retrying");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Applies notifications until the connection ends or the cache is dropped.
async fn follow(
    instance: &str,
    cache: &Weak<CachingStore>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    loop {
        let payload = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
            () = tokio::time::sleep(RETRY) => {
                if cache.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let Some(cache) = cache.upgrade() else { return };
        match payload.split_once('\t') {
            // This replica's own write: its cache already dropped what it changed.
            Some((from, _)) if from == instance => {}
            Some((_, repo)) => cache.forget_repository(repo),
            None => cache.forget_all(),
        }
    }
}
