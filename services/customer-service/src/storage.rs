//! Queries of the `customers` table (portable SQL for SQLite and PostgreSQL).

use platform::db::{parse_timestamp, timestamp, Conn};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::domain::Customer;

const COLUMNS: &str = "id, name, email, created_at";

/// Inserts `customer` after the last registered one; `false` when the id is already taken (nothing written).
pub async fn insert(conn: &mut Conn, customer: &Customer) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        // `WHERE TRUE` keeps SQLite from reading `ON CONFLICT` as a join constraint.
        "INSERT INTO customers (id, name, email, created_at, seq) \
         SELECT $1, $2, $3, $4, COALESCE(MAX(seq), 0) + 1 FROM customers WHERE TRUE \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&customer.id)
    .bind(&customer.name)
    .bind(&customer.email)
    .bind(timestamp(customer.created_at))
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The customer with `id`, if any.
pub async fn find<'c, E>(executor: E, id: &str) -> Result<Option<Customer>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(&format!("SELECT {COLUMNS} FROM customers WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .map(|row| from_row(&row))
        .transpose()
}

/// A page of customers in order of registration.
pub async fn list<'c, E>(executor: E, limit: i64, offset: i64) -> Result<Vec<Customer>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM customers ORDER BY seq, id LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(executor)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

fn from_row(row: &AnyRow) -> Result<Customer, sqlx::Error> {
    Ok(Customer {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        created_at: parse_timestamp(&row.try_get::<String, _>("created_at")?)?,
    })
}
