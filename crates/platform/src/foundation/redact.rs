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

/// `text` (e.g. an SMTP server's reply) with every e-mail address in it masked as
/// [`mask_email`] does; everything else is kept.
pub fn mask_emails_in(text: &str) -> String {
    let is_delimiter = |c: char| {
        c.is_whitespace() || matches!(c, '<' | '>' | '"' | ',' | ';' | '(' | ')' | '[' | ']')
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let trimmed = word.trim_end_matches(['.', ':']);
        if trimmed.contains('@') {
            out.push_str(&mask_email(trimmed));
            out.push_str(&word[trimmed.len()..]);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_delimiter(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_text_are_masked() {
        assert_eq!(
            mask_emails_in("550 5.1.1 <bob.smith@example.com>: Recipient address rejected"),
            "550 5.1.1 <b***@example.com>: Recipient address rejected"
        );
        assert_eq!(
            mask_emails_in("to ann@x.org, cc eve@y.org."),
            "to a***@x.org, cc e***@y.org."
        );
        assert_eq!(mask_emails_in("451 try again later"), "451 try again later");
    }

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
