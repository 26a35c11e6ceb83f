//! The rules every event and request is checked against, in one place: what the HTTP APIs accept
//! is what the consumers accept. A consumer decodes an event with `Record::decode_valid` (its [`Validate`] rules), and a
//! refused event is dead-lettered (never applied, never mailed).

mod events;
mod fields;

pub use events::Validate;
pub use fields::{
    check_account_id, check_customer_id, check_email, check_length, check_name,
    check_transaction_id, infer_kind, parse_amount, parse_currency, Invalid, MAX_ACCOUNT_ID_LEN,
    MAX_CUSTOMER_ID_LEN, MAX_EMAIL_LEN, MAX_MESSAGE_LEN, MAX_NAME_LEN, MAX_TRANSACTION_ID_LEN,
};
