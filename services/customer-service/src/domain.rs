//! Customer rules: what a valid registration is, and what registering an id twice means.

use chrono::{DateTime, Utc};
use contracts::validation::{self, Invalid};
use serde::Serialize;
use utoipa::ToSchema;

pub use contracts::validation::{MAX_CUSTOMER_ID_LEN as MAX_ID_LEN, MAX_EMAIL_LEN, MAX_NAME_LEN};

/// A registered customer, as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// Customer id (also the id of the customer's account).
    #[schema(example = "cust-001")]
    pub id: String,
    /// Display name.
    #[schema(example = "John Doe")]
    pub name: String,
    /// Email address notifications go to.
    #[schema(example = "john@example.com")]
    pub email: String,
    /// When the customer was registered.
    pub created_at: DateTime<Utc>,
}

/// A validated registration: trimmed name and email, an id (given or generated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    /// Customer id.
    pub id: String,
    /// Display name, trimmed.
    pub name: String,
    /// Email address, trimmed.
    pub email: String,
}

impl NewCustomer {
    /// Validates a registration; generates a `cust-<uuid>` id when none is given.
    pub fn parse(
        id: Option<&str>,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Self, CustomerError> {
        let id = match id {
            Some(id) => validate_id(id)?,
            None => format!("cust-{}", uuid::Uuid::new_v4()),
        };
        Ok(Self {
            id,
            name: validate_name(name)?,
            email: validate_email(email)?,
        })
    }

    /// True when `customer` was registered with this name and email (an idempotent repeat).
    pub fn matches(&self, customer: &Customer) -> bool {
        self.name == customer.name && self.email == customer.email
    }

    /// The customer this registration creates at `created_at`.
    pub fn into_customer(self, created_at: DateTime<Utc>) -> Customer {
        Customer {
            id: self.id,
            name: self.name,
            email: self.email,
            created_at,
        }
    }
}

/// Why a customer request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    /// A field is missing or malformed.
    #[error("{detail}")]
    Invalid {
        /// The JSON field at fault.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// No customer has this id.
    #[error("customer `{0}` does not exist")]
    NotFound(String),
    /// The id is taken by a customer with another name or email.
    #[error("customer `{0}` already exists with a different name or email")]
    Conflict(String),
}

impl CustomerError {
    /// `field` is invalid, for the reason `detail`.
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        CustomerError::Invalid {
            field,
            detail: detail.into(),
        }
    }
}

/// The rules are the contract's (`contracts::validation`), so that every consumer of
/// `Customer.created` accepts what the API accepted, and the mailer can write to the address.
fn validate_id(id: &str) -> Result<String, CustomerError> {
    validation::check_customer_id(id).map_err(refused("id"))?;
    Ok(id.to_string())
}

fn validate_name(name: Option<&str>) -> Result<String, CustomerError> {
    validate_text("name", name, MAX_NAME_LEN, validation::check_name)
}

/// The one e-mail check: `contracts::validation::check_email` (lettre's parser decides).
fn validate_email(email: Option<&str>) -> Result<String, CustomerError> {
    validate_text("email", email, MAX_EMAIL_LEN, validation::check_email)
}

/// A text field of at most `max` characters as sent (absent is empty), trimmed, then checked.
fn validate_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
    check: fn(&str) -> Result<(), Invalid>,
) -> Result<String, CustomerError> {
    let value = value.unwrap_or_default();
    validation::check_length(field, value, max).map_err(refused(field))?;
    let value = value.trim();
    check(value).map_err(refused(field))?;
    Ok(value.to_string())
}

/// The contract's refusal as this field's error.
fn refused(field: &'static str) -> impl Fn(Invalid) -> CustomerError {
    move |invalid| CustomerError::invalid(field, invalid.detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<NewCustomer, CustomerError>) -> &'static str {
        match result {
            Err(CustomerError::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_seed_customer_and_trims() {
        let c = NewCustomer::parse(
            Some("cust-001"),
            Some("  John Doe "),
            Some(" john@example.com"),
        )
        .unwrap();
        assert_eq!(c.id, "cust-001");
        assert_eq!(c.name, "John Doe");
        assert_eq!(c.email, "john@example.com");
    }

    #[test]
    fn generates_an_id_when_absent() {
        let c = NewCustomer::parse(None, Some("A"), Some("a@b.io")).unwrap();
        assert!(c.id.starts_with("cust-"));
        assert!(validate_id(&c.id).is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        for id in ["", "has space", "slash/", "é", &"x".repeat(65)] {
            assert_eq!(
                field_of(NewCustomer::parse(Some(id), Some("A"), Some("a@b.io"))),
                "id",
                "{id:?}"
            );
        }
        assert!(NewCustomer::parse(Some("A_b-9.z"), Some("A"), Some("a@b.io")).is_ok());
        assert!(NewCustomer::parse(Some(&"x".repeat(64)), Some("A"), Some("a@b.io")).is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for name in [None, Some(""), Some("   "), Some("a\nb")] {
            assert_eq!(
                field_of(NewCustomer::parse(None, name, Some("a@b.io"))),
                "name"
            );
        }
        let long = "n".repeat(201);
        assert_eq!(
            field_of(NewCustomer::parse(None, Some(&long), Some("a@b.io"))),
            "name"
        );
        assert!(NewCustomer::parse(None, Some(&"n".repeat(200)), Some("a@b.io")).is_ok());
    }

    #[test]
    fn rejects_bad_emails() {
        let long = format!("{}@example.com", "a".repeat(250));
        for email in [
            None,
            Some(""),
            Some("plain"),
            Some("a@@b.io"),
            Some("a@b@c.io"),
            Some("@b.io"),
            Some("a@localhost"),
            Some("a@.io"),
            Some("a@b."),
            Some("a b@c.io"),
            Some("a..b@example.com"),
            Some(long.as_str()),
        ] {
            assert_eq!(
                field_of(NewCustomer::parse(None, Some("A"), email)),
                "email",
                "{email:?}"
            );
        }
    }
}
