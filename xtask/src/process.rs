//! Process plumbing: detached daemons with pid files, graceful termination, file locks, and
//! running a command while streaming (and scanning) its output.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Starts `cmd` as a daemon: a new session (own process group, no controlling terminal), stdin
/// from /dev/null, stdout and stderr appended to `log`. It survives the exit of xtask.
pub fn spawn_detached(cmd: &mut Command, log: &Path) -> Result<u32> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    spawn_detached_to(cmd, out.into(), err.into())
}

/// Like [`spawn_detached`], with stdout and stderr going to `out` and `err` (e.g. a pipe to a
/// log writer).
pub fn spawn_detached_to(cmd: &mut Command, out: Stdio, err: Stdio) -> Result<u32> {
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
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
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(child.id())
}

/// True while `pid` exists and is not a zombie. Reaps it first when it is our own child.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // Reap our own exited children so that they do not linger as zombies; harmless (ECHILD)
    // for processes that are not our children.
    // SAFETY: waitpid with WNOHANG and a null status pointer has no memory effects.
    unsafe {
        libc::waitpid(raw, std::ptr::null_mut(), libc::WNOHANG);
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The NUL-separated command line of `pid`, joined with spaces ("" when gone).
pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The program `pid` runs: the first element of its command line (`None` when gone).
pub fn program(pid: u32) -> Option<PathBuf> {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    program_of(&bytes)
}

/// The first element of a NUL-separated command line.
pub fn program_of(cmdline: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let first = cmdline
        .split(|c| *c == 0)
        .next()
        .filter(|a| !a.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(first)))
}

/// Every live process whose command line contains all of `needles`.
pub fn find_processes(needles: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let line = cmdline(pid);
        if !line.is_empty() && needles.iter().all(|n| line.contains(n)) && is_alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Sends `signal` to `pid`; false when the process is gone.
pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(raw, signal) == 0 }
}

/// Waits until `pid` is gone or `timeout` passes; true when it is gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
    true
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns true when the process had to be killed.
pub fn terminate(pid: u32, grace: Duration) -> bool {
    if !signal(pid, libc::SIGTERM) {
        return false;
    }
    if wait_gone(pid, grace) {
        return false;
    }
    signal(pid, libc::SIGKILL);
    wait_gone(pid, Duration::from_secs(10));
    true
}

/// Reads a pid file (None when absent or unparsable).
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// An exclusive advisory lock on a file, released on drop (or when the process dies).
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` is held, printing `waiting` once if it has to wait.
    pub fn acquire(path: &Path, waiting: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let fd = file.as_raw_fd();
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!("{waiting}");
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                bail!(
                    "locking {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Self { _file: file })
    }
}

/// The last `n` lines of a text file ("" when unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` (stdin inherited), copying its stdout and stderr live to ours, line by line,
/// while collecting every output line for which `keep` is true. Returns the exit status and
/// the kept lines.
pub fn run_streaming(
    cmd: &mut Command,
    keep: fn(&str) -> bool,
) -> Result<(ExitStatus, Vec<String>)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let kept = Arc::new(Mutex::new(Vec::new()));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let kept = Arc::clone(&kept);
        pumps.push(thread::spawn(move || {
            pump(out, &mut std::io::stdout(), keep, &kept)
        }));
    }
    if let Some(err) = child.stderr.take() {
        let kept = Arc::clone(&kept);
        pumps.push(thread::spawn(move || {
            pump(err, &mut std::io::stderr(), keep, &kept)
        }));
    }
    let status = child.wait()?;
    for p in pumps {
        let _ = p.join();
    }
    let lines = kept.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((status, lines))
}

/// Like [`run_streaming`], with stderr and stdout through ONE pipe (shown on stdout), so kept
/// lines keep the order the command wrote them in (cargo's `Running …` on stderr before the
/// test binary's results on stdout).
pub fn run_merged(cmd: &mut Command, keep: fn(&str) -> bool) -> Result<(ExitStatus, Vec<String>)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds` (close-on-exec: the child gets only the
    // copies it is given as stdout and stderr).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let writer_too = writer.try_clone().context("cloning a pipe")?;
    let mut child = cmd
        .stdout(writer)
        .stderr(writer_too)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    // Our copies of the write end must close, or the reader never sees the end.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let kept = Mutex::new(Vec::new());
    pump(reader, &mut std::io::stdout(), keep, &kept);
    let status = child.wait()?;
    let lines = kept.into_inner().unwrap_or_default();
    Ok((status, lines))
}

/// Copies `from` to `to` line by line, keeping the lines `keep` selects.
fn pump(from: impl Read, to: &mut dyn Write, keep: fn(&str) -> bool, kept: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let _ = to.write_all(&line);
                let _ = to.flush();
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if keep(text) {
                    if let Ok(mut v) = kept.lock() {
                        v.push(text.to_string());
                    }
                }
            }
        }
    }
}

/// Prints `warning: <error>` when `result` failed (a clean-up step that must not hide the
/// outcome of what it cleans up after).
pub fn warn<T>(result: Result<T>) {
    if let Err(e) = result {
        eprintln!("warning: {e:#}");
    }
}

/// Runs `cmd` to completion, failing with its output when it exits non-zero.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{:?} failed ({}):\n{}", cmd, out.status, text.trim_end());
    }
    Ok(text)
}

/// Runs `cmd` with inherited stdio, failing when it exits non-zero.
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed ({status})", cmd);
    }
    Ok(())
}

/// Whether a program is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(program))))
        .unwrap_or(false)
}

fn is_executable(p: &PathBuf) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no failure mode or memory effects.
    unsafe { libc::geteuid() == 0 }
}

/// Writes `contents` to `path` atomically with the given mode.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("the kernel's random numbers: {e}"))?;
    Ok(buf)
}

/// A random string of `len` characters drawn from `alphabet` (unbiased).
pub fn random_string(len: usize, alphabet: &[u8]) -> Result<String> {
    let mut out = String::with_capacity(len);
    // Rejection sampling: keep bytes below the largest multiple of the alphabet size.
    let limit = 256 - (256 % alphabet.len());
    while out.len() < len {
        for b in random_bytes(len * 2)? {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// `text` without ANSI escape sequences (colours stay on the terminal, not in log files).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_use_the_alphabet() {
        let s = random_string(44, b"ab").unwrap();
        assert_eq!(s.len(), 44);
        assert!(s.chars().all(|c| c == 'a' || c == 'b'));
    }

    #[test]
    fn our_own_process_is_alive_and_a_bogus_one_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX - 1));
    }

    #[test]
    fn merged_output_keeps_the_order_of_stdout_and_stderr() {
        let (status, kept) = run_merged(
            Command::new("sh").args(["-c", "echo a; echo b >&2; echo c; echo d >&2"]),
            |l| !l.is_empty(),
        )
        .unwrap();
        assert!(status.success());
        assert_eq!(kept, ["a", "b", "c", "d"]);
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&p, 2), "3\n4");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }
}
