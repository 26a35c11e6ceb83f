//! Database URLs: redacted for messages, and SQLite's prepared (created when missing).

/// `url` without its passwords, for messages: the one in the user information and the value of
/// every query parameter whose name holds `password` (`?password=`, `sslpassword=`) become `***`.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut redacted = match (head.find("://"), head.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            match head[scheme_end + 3..at].split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &head[..scheme_end + 3], &head[at..]),
                None => head.to_string(),
            }
        }
        _ => head.to_string(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                    format!("{name}=***")
                }
                _ => parameter.to_string(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&parameters.join("&"));
    }
    redacted
}

/// Adds `mode=rwc` (create when missing) and creates the file's folder.
pub(super) fn prepare_sqlite_url(url: &str) -> std::io::Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !path.is_empty() {
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
    }
    if query.contains("mode=") {
        return Ok(url.to_string());
    }
    let separator = if query.is_empty() { "?" } else { "&" };
    Ok(format!("{url}{separator}mode=rwc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://data/a.db"), "sqlite://data/a.db");
        assert_eq!(
            redact_url("postgres://app@db/x?sslmode=require&password=hunter2&PassWord=x"),
            "postgres://app@db/x?sslmode=require&password=***&PassWord=***"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x?sslpassword=k3y&application_name=a"),
            "postgres://app:***@db/x?sslpassword=***&application_name=a"
        );
        assert_eq!(
            redact_url("smtp://127.0.0.1:25?tls=required"),
            "smtp://127.0.0.1:25?tls=required"
        );
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/a.db", dir.path().display());
        let prepared = prepare_sqlite_url(&url).unwrap();
        assert!(prepared.ends_with("a.db?mode=rwc"));
        assert!(dir.path().join("sub").is_dir());
        assert!(prepare_sqlite_url("sqlite://x.db?mode=ro")
            .unwrap()
            .ends_with("mode=ro"));
    }
}
