//! Re-reads `CART_API_KEYS_FILE` while the server runs: when its contents
//! change (polled) and on SIGHUP. A file read in the middle of a write
//! could parse as a shorter list, so a change is only taken once two reads
//! a moment apart agree; an unreadable or malformed file keeps the previous
//! keys and logs why (never a key).

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::{Authenticator, keys::parse_file};
use crate::metrics::Metrics;

/// The wait between the two reads that must agree before a change is taken.
const SETTLE: Duration = Duration::from_millis(200);

/// Reads and parses the key file once (at start-up, where a bad file is fatal).
pub fn load(path: &std::path::Path) -> Result<Vec<super::keys::KeyEntry>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub struct KeyFile {
    auth: Arc<Authenticator>,
    path: PathBuf,
    /// How often the file is looked at.
    poll: Duration,
    hangup: Hangups,
    /// The contents last looked at, good or bad (a bad file is logged once).
    last: Option<Vec<u8>>,
    metrics: Metrics,
}

impl KeyFile {
    /// Listens for SIGHUP from now on (so a signal sent as soon as the
    /// server is up is not missed); call within the runtime.
    pub fn new(
        auth: Arc<Authenticator>,
        path: PathBuf,
        poll: Duration,
        metrics: Metrics,
    ) -> KeyFile {
        KeyFile {
            auth,
            last: std::fs::read(&path).ok(),
            path,
            poll,
            hangup: hangups(),
            metrics,
        }
    }

    /// Runs until the task is aborted.
    pub async fn watch(mut self) {
        loop {
            let forced = tokio::select! {
                () = tokio::time::sleep(self.poll) => false,
                Some(()) = recv(&mut self.hangup) => true,
            };
            let Some(text) = self.settled_read(forced).await else {
                continue;
            };
            if !forced && self.last.as_deref() == Some(&text[..]) {
                continue;
            }
            self.apply(&text);
            self.last = Some(text);
        }
    }

    /// The file once two reads agree (one read on SIGHUP: the operator says
    /// it is complete); None when unreadable or still changing.
    async fn settled_read(&self, forced: bool) -> Option<Vec<u8>> {
        let first = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "api key file unreadable: keeping the previous keys");
                self.metrics.keys_reloaded(false);
                return None;
            }
        };
        if forced {
            return Some(first);
        }
        tokio::time::sleep(SETTLE).await;
        let second = std::fs::read(&self.path).ok()?;
        (first == second).then_some(first)
    }

    fn apply(&self, text: &[u8]) {
        let path = self.path.display();
        let parsed = std::str::from_utf8(text)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(parse_file)
            .and_then(|entries| self.auth.replace_file_keys(entries));
        self.metrics.keys_reloaded(parsed.is_ok());
        match parsed {
            Ok(keys) => tracing::info!(path = %path, keys, "api keys reloaded"),
            Err(why) => {
                tracing::warn!(path = %path, error = %why, "api key file rejected: keeping the previous keys")
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn recv(h: &mut Hangups) -> Option<()> {
    match h {
        #[cfg(unix)]
        Some(s) => s.recv().await,
        _ => std::future::pending().await,
    }
}
