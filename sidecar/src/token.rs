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

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

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
                    Ok(header) => {
                        if guard.is_some() {
                            tracing::info!(path = %self.path.display(), "upstream token rotated, re-read");
                        }
                        *guard = Some(Cached {
                            header: header.clone(),
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

    fn read(&self) -> Result<HeaderValue, TokenError> {
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
        Ok(v)
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
