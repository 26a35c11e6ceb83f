//! Personal data in logs: only masked forms are written.

/// An e-mail address with its local part masked, for logs: `john@example.com` becomes
/// `j***@example.com`; text that is not an address becomes `***`.
pub fn mask_email(address: &str) -> String {
    match address.trim().rsplit_once('@') {
        Some((local, domain)) if !domain.is_empty() => match local.chars().next() {
            Some(first) => format!("{first}***@{domain}"),
            None => format!("***@{domain}"),
        },
        _ => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_their_first_letter_and_domain() {
        assert_eq!(mask_email("john@example.com"), "j***@example.com");
        assert_eq!(
            mask_email(" Ann.Lee@mail.example.org "),
            "A***@mail.example.org"
        );
        assert_eq!(mask_email("a\"b@c\"@example.com"), "a***@example.com");
        assert_eq!(mask_email("@example.com"), "***@example.com");
        assert_eq!(mask_email("not an address"), "***");
        assert_eq!(mask_email("user@"), "***");
    }
}
