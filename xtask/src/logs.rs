//! The dev stack's log files rotate: `<service>.log` grows to `EMS_LOG_MAX_MB` (20 MiB), then
//! becomes `<service>.log.1` (`.1` becomes `.2` and so on); `EMS_LOG_KEEP` (3) rotated files are
//! kept, the oldest deleted. A detached stack's services write through `cargo xtask log-writer`
//! (a small process per service reading its output), an attached one through its own threads.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// Largest log file by default before it rotates, in MiB.
const DEFAULT_MAX_MB: u64 = 20;
/// Rotated files kept by default.
const DEFAULT_KEEP: usize = 3;

/// How much of a log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A file rotates once a line would take it past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` the newest).
    pub keep: usize,
}

impl Limits {
    /// `EMS_LOG_MAX_MB` and `EMS_LOG_KEEP`, else the defaults.
    pub fn from_env() -> Result<Self> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(text) => text
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}=`{text}` is not a whole number")),
            }
        };
        Ok(Self {
            max_bytes: number("EMS_LOG_MAX_MB", DEFAULT_MAX_MB)?.max(1) * 1024 * 1024,
            keep: usize::try_from(number("EMS_LOG_KEEP", DEFAULT_KEEP as u64)?)?,
        })
    }
}

/// A log file that rotates by size.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    limits: Limits,
    file: File,
    size: u64,
}

impl RotatingLog {
    /// Appends to `path` (created when missing).
    pub fn open(path: &Path, limits: Limits) -> Result<Self> {
        let file = append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            limits,
            file,
            size,
        })
    }

    /// Writes `line` and a newline, rotating first when it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.limits.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    /// `.log` becomes `.log.1`, each `.log.N` becomes `.log.N+1`, the one past `keep` is
    /// replaced; a new `.log` is started.
    fn rotate(&mut self) -> Result<()> {
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.limits.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.limits.keep).rev() {
                if numbered(n).exists() {
                    std::fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// `cargo xtask log-writer --max-bytes N --keep N <file>`: copies standard input to `file` line
/// by line, rotating it, until end of input (the service exited).
pub fn writer(path: &Path, limits: Limits) -> Result<()> {
    let mut log = RotatingLog::open(path, limits)?;
    let stdin = std::io::stdin();
    for line in stdin.lock().split(b'\n') {
        log.write_line(&line?)?;
    }
    Ok(())
}

/// Starts a detached `log-writer` for `path` keeping `limits` (its own session, like the service
/// it serves); returns where the service's output should go (standard output and standard
/// error).
pub fn spawn_writer(path: &Path, limits: Limits) -> Result<(Stdio, Stdio)> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("log-writer")
        .args(["--max-bytes", &limits.max_bytes.to_string()])
        .args(["--keep", &limits.keep.to_string()])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent; it is the only
    // call made between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the log writer")?;
    let input: std::os::fd::OwnedFd = child
        .stdin
        .take()
        .context("the log writer has no standard input")?
        .into();
    let errors = input.try_clone()?;
    Ok((Stdio::from(input), Stdio::from(errors)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotates_by_size_and_keeps_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let limits = Limits {
            max_bytes: 100,
            keep: 2,
        };
        let mut log = RotatingLog::open(&path, limits).unwrap();
        for n in 0..40 {
            log.write_line(format!("line {n:02} 0123456789").as_bytes())
                .unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["s.log", "s.log.1", "s.log.2"]);
        for name in &names {
            let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(size <= 100, "{name}: {size} bytes");
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("line 39 0123456789\n"), "{newest}");
        let previous = std::fs::read_to_string(dir.path().join("s.log.1")).unwrap();
        assert!(previous.contains("line 3"), "{previous}");
    }
}
