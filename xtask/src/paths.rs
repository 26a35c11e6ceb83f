//! Where things live: the repository, and the warm cache outside it.

use std::env;
use std::path::PathBuf;

/// The workspace root (the parent of the xtask crate).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cache root: `$EMS_CACHE_DIR`, else `$HOME/.cache/event-microservices`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = env::var_os("EMS_CACHE_DIR").filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(dir));
    }
    let home = env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("event-microservices")
}

/// The local broker's home: `<cache root>/kafka`.
pub fn kafka_home() -> PathBuf {
    cache_root().join("kafka")
}

/// Makes a relative path absolute against the current directory.
pub fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}
