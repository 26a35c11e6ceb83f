//! The mail folder keeps a bounded number of messages: `MAIL_KEEP_FILES` (10,000 by default) of
//! the newest `.eml` files; the oldest go first. It is a development stand-in for a mail
//! server, read by people and tests, not an archive (the delivery log is the record).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// Messages kept in the mail folder by default.
pub const DEFAULT_KEEP_FILES: usize = 10_000;

/// Deletes the oldest `.eml` files of `dir` (by modification time, then name) beyond the
/// newest `keep`; returns how many it deleted. Other files are left alone.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<usize> {
    let mut mails: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "eml") {
            // A file deleted meanwhile (another pruner) is skipped.
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                mails.push((modified, path));
            }
        }
    }
    if mails.len() <= keep {
        return Ok(0);
    }
    mails.sort();
    let excess = mails.len() - keep;
    let mut deleted = 0;
    for (_, path) in mails.into_iter().take(excess) {
        match std::fs::remove_file(&path) {
            Ok(()) => deleted += 1,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(deleted)
}

/// Prunes `dir` to `keep` files every `every` until `shutdown`; counts the files deleted in
/// `retention_pruned_rows_total{rule="mailbox"}`.
pub async fn run(dir: PathBuf, keep: usize, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let folder = dir.clone();
        match tokio::task::spawn_blocking(move || prune(&folder, keep)).await {
            Ok(Ok(deleted)) => {
                metrics::counter!("retention_pruned_rows_total", "rule" => "mailbox")
                    .increment(deleted as u64);
            }
            Ok(Err(error)) => tracing::warn!(dir = %dir.display(), %error,
                "pruning the mail folder failed; next round retries"),
            Err(error) => tracing::warn!(%error, "the mail folder pruner panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for n in 0..8 {
            let path = dir.path().join(format!("m{n}.eml"));
            std::fs::write(&path, "x").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(old + Duration::from_secs(n)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
        assert_eq!(prune(dir.path(), 3).unwrap(), 5);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["m5.eml", "m6.eml", "m7.eml", "notes.txt"]);
        assert_eq!(prune(dir.path(), 3).unwrap(), 0);
    }
}
