//! The real service-account token, read from `--upstream-token-file` and
//! re-read when the kubelet rotates it.
//!
//! The kubelet writes a projected volume as `..<timestamp>/token`, points the
//! `..data` symlink at it, and `token` is a symlink to `..data/token`; a
//! rotation writes a new timestamped directory, swaps `..data` atomically and
//! removes the old directory. Following the symlinks, the resolved file's
//! identity (device, inode, mtime, length) changes on every rotation, so a
//! cheap `stat` at most once per [`CHECK_INTERVAL`] tells whether to re-read.
//! A failed re-read keeps the last good token (the old token stays valid for
//! a while after rotation), so no request fails across a rotation.
//!
//! [`TokenSource::scrub_set`] gives the response masking the current and the
//! previous token as a [`ScrubSet`], so a token an upstream reflects (a
//! misbehaving aggregated API, a `*/proxy` answer) is scrubbed from every
//! response and record. The token itself is never logged or printed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use mcp_warden_shared::mask::ScrubSet;

/// How often the token file's metadata is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Errors reading the upstream token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the upstream token file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the upstream token file {path} is empty or not a valid header value")]
    Invalid { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

struct Cached {
    header: HeaderValue,
    /// The token (no `Bearer `), to tell a rotation and keep the previous one.
    token: String,
    /// Current and previous token, compiled for scrubbing.
    scrub: Arc<ScrubSet>,
    fingerprint: Fingerprint,
    checked: Instant,
}

/// Source of the `Authorization` header sent upstream.
pub struct TokenSource {
    path: PathBuf,
    interval: Duration,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source reading `path`, checked at most every [`CHECK_INTERVAL`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_interval(path, CHECK_INTERVAL)
    }

    /// A source with a custom check interval (tests).
    pub fn with_interval(path: impl Into<PathBuf>, interval: Duration) -> Self {
        TokenSource {
            path: path.into(),
            interval,
            cached: Mutex::new(None),
        }
    }

    /// The token file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current `Authorization: Bearer ...` header value (marked sensitive).
    pub fn header(&self) -> Result<HeaderValue, TokenError> {
        let mut guard = match self.cached.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if let Some(c) = guard.as_ref()
            && now.duration_since(c.checked) < self.interval
        {
            return Ok(c.header.clone());
        }
        match self.stat() {
            Ok(fp) => {
                if let Some(c) = guard.as_mut()
                    && c.fingerprint == fp
                {
                    c.checked = now;
                    return Ok(c.header.clone());
                }
                match self.read() {
                    Ok((header, token)) => {
                        if guard.is_some() {
                            tracing::info!(path = %self.path.display(), "upstream token rotated, re-read");
                        }
                        let previous = guard.take().map(|c| c.token).filter(|p| *p != token);
                        let scrub = Arc::new(ScrubSet::new(
                            std::iter::once(token.as_str()).chain(previous.as_deref()),
                        ));
                        *guard = Some(Cached {
                            header: header.clone(),
                            token,
                            scrub,
                            fingerprint: fp,
                            checked: now,
                        });
                        Ok(header)
                    }
                    Err(e) => self.keep_last(&mut guard, now, e),
                }
            }
            Err(e) => self.keep_last(&mut guard, now, e),
        }
    }

    /// The current and the previous token as a [`ScrubSet`] (raw and base64
    /// forms); `None` until a token was read.
    pub fn scrub_set(&self) -> Option<Arc<ScrubSet>> {
        // Refreshes after a rotation, at most one `stat` per interval.
        let _ = self.header();
        let guard = match self.cached.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.as_ref().map(|c| c.scrub.clone())
    }

    /// Forces the next [`TokenSource::header`] to look at the file again.
    pub fn invalidate(&self) {
        if let Ok(mut g) = self.cached.lock()
            && let Some(c) = g.as_mut()
        {
            c.checked = Instant::now()
                .checked_sub(self.interval)
                .unwrap_or(c.checked);
            c.fingerprint.len = u64::MAX;
        }
    }

    fn keep_last(
        &self,
        guard: &mut Option<Cached>,
        now: Instant,
        e: TokenError,
    ) -> Result<HeaderValue, TokenError> {
        match guard.as_mut() {
            Some(c) => {
                tracing::warn!(error = %e, "keeping the last good upstream token");
                c.checked = now;
                Ok(c.header.clone())
            }
            None => Err(e),
        }
    }

    fn stat(&self) -> Result<Fingerprint, TokenError> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.path).map_err(|e| TokenError::Read {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.modified().ok(),
        })
    }

    fn read(&self) -> Result<(HeaderValue, String), TokenError> {
        let raw = std::fs::read_to_string(&self.path).map_err(|e| TokenError::Read {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let token = raw.trim();
        if token.is_empty() {
            return Err(TokenError::Invalid {
                path: self.path.clone(),
            });
        }
        let mut v =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| TokenError::Invalid {
                path: self.path.clone(),
            })?;
        v.set_sensitive(true);
        Ok((v, token.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Lays out a projected volume the way the kubelet's AtomicWriter does.
    fn kubelet_write(dir: &Path, stamp: &str, token: &str) {
        let data = dir.join(stamp);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("token"), token).unwrap();
        let tmp_link = dir.join("..data_tmp");
        symlink(stamp, &tmp_link).unwrap();
        std::fs::rename(&tmp_link, dir.join("..data")).unwrap();
        if !dir.join("token").exists() {
            symlink("..data/token", dir.join("token")).unwrap();
        }
    }

    #[test]
    fn rereads_after_data_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        kubelet_write(dir.path(), "..2026_01_01_00_00_00.1", "first\n");
        let src = TokenSource::with_interval(dir.path().join("token"), Duration::ZERO);
        assert_eq!(src.header().unwrap(), "Bearer first");
        kubelet_write(dir.path(), "..2026_01_01_00_10_00.2", "second");
        std::fs::remove_dir_all(dir.path().join("..2026_01_01_00_00_00.1")).unwrap();
        assert_eq!(src.header().unwrap(), "Bearer second");
        assert!(src.header().unwrap().is_sensitive());
    }

    #[test]
    fn scrub_set_holds_current_and_previous_token() {
        let dir = tempfile::tempdir().unwrap();
        let src = TokenSource::with_interval(dir.path().join("token"), Duration::ZERO);
        assert!(src.scrub_set().is_none());
        std::fs::write(dir.path().join("token"), "first-token-value\n").unwrap();
        let set = src.scrub_set().unwrap();
        assert!(set.scrub_str("x first-token-value y").is_some());
        std::fs::write(dir.path().join("token"), "second-token-value-longer").unwrap();
        let set = src.scrub_set().unwrap();
        assert!(set.scrub_str("second-token-value-longer").is_some());
        // The previous token stays valid for a while after a rotation.
        assert!(set.scrub_str("first-token-value").is_some());
        assert!(!format!("{src:?} {set:?}").contains("token-value"));
    }

    #[test]
    fn keeps_last_good_token_when_file_vanishes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t1").unwrap();
        let src = TokenSource::with_interval(dir.path().join("token"), Duration::ZERO);
        assert_eq!(src.header().unwrap(), "Bearer t1");
        std::fs::remove_file(dir.path().join("token")).unwrap();
        assert_eq!(src.header().unwrap(), "Bearer t1");
        let fresh = TokenSource::new(dir.path().join("token"));
        assert!(fresh.header().is_err());
    }
}
