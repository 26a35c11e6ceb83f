//! Stopping the services: SIGTERM, a grace period, SIGKILL, and only a pid that still runs the
//! service's binary.

use std::path::Path;
use std::time::Duration;

use crate::process;

/// How long a service may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// True when `program` (a command line's first element) is the binary of service `name`.
fn is_service_program(program: &Path, name: &str) -> bool {
    program.file_name().is_some_and(|f| f == name)
}

/// Stops services in reverse start order: SIGTERM, wait, SIGKILL. A pid whose process is not the
/// service's binary (a stale state file, the pid reused since) is left alone.
pub fn stop_pids(services: &[(String, u32)]) {
    for (name, pid) in services.iter().rev() {
        if process::is_alive(*pid) {
            if !process::program(*pid).is_some_and(|p| is_service_program(&p, name)) {
                println!(
                    "not stopping pid {pid}: it is not {name} any more (it runs `{}`); \
                     the state file is stale",
                    process::cmdline(*pid).trim()
                );
                continue;
            }
            println!("stopping {name} (pid {pid})");
            if process::terminate(*pid, STOP_GRACE) {
                println!(
                    "{name} did not stop within {} s and was killed",
                    STOP_GRACE.as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_service_binary_is_recognised() {
        let program = |cmdline: &[u8]| process::program_of(cmdline).unwrap();
        let service = program(b"/repo/target/debug/transaction-service\0");
        assert!(is_service_program(&service, "transaction-service"));
        assert!(!is_service_program(&service, "customer-service"));
        let other = program(b"/usr/bin/sleep\0transaction-service\0");
        assert!(!is_service_program(&other, "transaction-service"));
        let bash = program(b"bash\0-c\0/repo/target/debug/transaction-service\0");
        assert!(!is_service_program(&bash, "transaction-service"));
        assert_eq!(process::program_of(b""), None);
    }

    #[test]
    fn a_live_pid_that_is_not_the_service_is_not_recognised() {
        let me = std::process::id();
        let mine = process::program(me).expect("own command line");
        assert!(!is_service_program(&mine, "transaction-service"));
        let name = mine.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_service_program(&mine, &name));
    }
}
