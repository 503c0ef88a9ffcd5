//! Watching files that are replaced rather than written: the kubelet updates
//! ConfigMap, Secret and projected volumes (and cert-manager its Secrets) by
//! writing a new timestamped directory and atomically renaming the `..data`
//! symlink to it, so the watched path never changes as an inode.
//!
//! File events for such swaps are unreliable (the watched path is a symlink,
//! and the events land on `..data` and on directories), so [`FileWatch`]
//! watches the parent directories with `notify`, reports any event, and also
//! reports every poll interval as a fallback (file systems where inotify says
//! nothing). The caller re-reads and compares; an unchanged content is its
//! no-op.
//!
//! Our own reads of the files raise access events (open, close); they are
//! filtered out here, once, or every re-read would trigger the next one and
//! the caller would reload in a loop forever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

/// Reports when watched files may have changed; see the module docs.
#[derive(Debug)]
pub struct FileWatch {
    /// File events; `None` once the watcher is gone (polling only).
    events: Option<mpsc::UnboundedReceiver<()>>,
    poll: Interval,
    debounce: Duration,
    /// Kept alive as long as the watch: dropping it stops the events.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl FileWatch {
    /// Watches the directories of `files` (each once, non-recursively) and
    /// polls every `poll_interval`. Events arriving within `debounce` after
    /// the first are reported once. `what` names the files in logs. When no
    /// watcher can be set up the watch polls only (logged as a warning).
    /// Must be called inside a Tokio runtime.
    pub fn new(
        files: &[&Path],
        what: &'static str,
        poll_interval: Duration,
        debounce: Duration,
    ) -> FileWatch {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let watcher = start_watcher(files, what, tx);
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        FileWatch {
            events: watcher.is_some().then_some(rx),
            poll,
            debounce,
            _watcher: watcher,
        }
    }

    /// Resolves when the files may have changed: after a file event (and the
    /// debounce), or at the next poll tick. The first call resolves at once,
    /// so a loop around it starts with a check.
    pub async fn changed(&mut self) {
        let Some(events) = self.events.as_mut() else {
            self.poll.tick().await;
            return;
        };
        tokio::select! {
            ev = events.recv() => match ev {
                Some(()) => {
                    if !self.debounce.is_zero() {
                        tokio::time::sleep(self.debounce).await;
                    }
                    while events.try_recv().is_ok() {}
                }
                None => {
                    // The watcher is gone: keep polling.
                    self.events = None;
                    self.poll.tick().await;
                }
            },
            _ = self.poll.tick() => {}
        }
    }
}

/// The directory a file lives in (`.` for a bare file name).
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn start_watcher(
    files: &[&Path],
    what: &'static str,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(what, error = %e, "no file watcher: polling only");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in files {
        let dir = parent_dir(f);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let mut watching = 0;
    for d in &dirs {
        match watcher.watch(d, notify::RecursiveMode::NonRecursive) {
            Ok(()) => watching += 1,
            Err(e) => {
                tracing::warn!(what, dir = %d.display(), error = %e, "cannot watch the directory: polling it only");
            }
        }
    }
    (watching > 0).then_some(watcher)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_a_bare_name_is_the_working_directory() {
        assert_eq!(parent_dir(Path::new("policy.yaml")), PathBuf::from("."));
        assert_eq!(
            parent_dir(Path::new("/etc/x/tls.crt")),
            PathBuf::from("/etc/x")
        );
    }

    #[tokio::test]
    async fn reports_writes_and_not_our_own_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "1").unwrap();
        // A poll interval far beyond the test: only file events can report.
        let mut w = FileWatch::new(
            &[&file],
            "test",
            Duration::from_secs(3600),
            Duration::from_millis(100),
        );
        // The first call is the initial check.
        w.changed().await;
        std::fs::write(&file, "2").unwrap();
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .unwrap();
        // Reading the file (as a reload does) must not report a change.
        let _ = std::fs::read(&file).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), w.changed())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn polls_without_a_watchable_directory() {
        let mut w = FileWatch::new(
            &[Path::new("/nonexistent-mcp-warden-dir/f")],
            "test",
            Duration::from_millis(20),
            Duration::ZERO,
        );
        w.changed().await;
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .unwrap();
    }
}
