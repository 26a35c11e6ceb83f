//! What a key may do: a set of scopes, each a service's area and an action
//! (`customers:write`, `transactions:read`, ...).

use std::fmt;

use axum::http::Method;

/// The part of the system a route belongs to: one per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// customer-service: `/app/customers*`.
    Customers,
    /// transaction-service: `/transactions*`, `/accounts*`.
    Transactions,
    /// notification-service: `/notifications*`.
    Notifications,
    /// The console: `/api/*`.
    Console,
}

impl Area {
    /// The area's name in a scope (`customers`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Customers => "customers",
            Area::Transactions => "transactions",
            Area::Notifications => "notifications",
            Area::Console => "console",
        }
    }
}

/// Reading (GET, HEAD, OPTIONS) or writing (any other method). Neither implies the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// GET, HEAD and OPTIONS.
    Read,
    /// Every other method.
    Write,
}

impl Action {
    /// The action a request with `method` is.
    pub fn of(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Action::Read
        } else {
            Action::Write
        }
    }

    /// The action's name in a scope (`read`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

/// One permission: an action in an area, written `<area>:<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    /// Which service's routes.
    pub area: Area,
    /// Reading or writing.
    pub action: Action,
}

/// Every scope there is, in the order they are documented and described. Only these exist:
/// notification-service and the console have no write routes, so no `notifications:write` or
/// `console:write`.
pub const ALL: [Scope; 6] = [
    Scope::new(Area::Customers, Action::Read),
    Scope::new(Area::Customers, Action::Write),
    Scope::new(Area::Transactions, Action::Read),
    Scope::new(Area::Transactions, Action::Write),
    Scope::new(Area::Notifications, Action::Read),
    Scope::new(Area::Console, Action::Read),
];

/// The scopes, as an API_KEYS entry lists them, for messages.
pub const KNOWN: &str = "customers:read, customers:write, transactions:read, transactions:write, \
                         notifications:read, console:read";

impl Scope {
    /// The scope `area:action`.
    pub const fn new(area: Area, action: Action) -> Self {
        Self { area, action }
    }

    /// The scope a request with `method` to a route of `area` needs.
    pub fn needed(area: Area, method: &Method) -> Self {
        Self::new(area, Action::of(method))
    }

    /// The scope written `text` (`customers:write`), if it is one of [`ALL`].
    pub fn parse(text: &str) -> Option<Self> {
        ALL.into_iter()
            .find(|scope| scope.to_string() == text.trim())
    }

    fn bit(self) -> u8 {
        ALL.iter()
            .position(|s| *s == self)
            .map_or(0, |index| 1 << index)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.area.as_str(), self.action.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// The set with `scope` added.
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Whether `scope` is in the set.
    pub fn allows(self, scope: Scope) -> bool {
        let bit = scope.bit();
        bit != 0 && self.0 & bit == bit
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in the order of [`ALL`].
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        ALL.into_iter().filter(move |scope| self.allows(*scope))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::default(), Scopes::with)
    }
}

impl fmt::Display for Scopes {
    /// `+`-separated, as in an API_KEYS entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in self.iter() {
            if !first {
                f.write_str("+")?;
            }
            write!(f, "{scope}")?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_reads_back_and_has_its_own_bit() {
        let all: Scopes = ALL.into_iter().collect();
        assert_eq!(all.iter().count(), ALL.len());
        for scope in ALL {
            assert_eq!(Scope::parse(&scope.to_string()), Some(scope));
            assert!(KNOWN.contains(&scope.to_string()));
            assert!(Scopes::default().with(scope).allows(scope));
        }
        for unknown in [
            "notifications:write",
            "console:write",
            "read",
            "write",
            "",
            "*",
        ] {
            assert_eq!(Scope::parse(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_set_allows_only_its_scopes() {
        let registrar = Scopes::default().with(Scope::new(Area::Customers, Action::Write));
        assert!(registrar.allows(Scope::needed(Area::Customers, &Method::POST)));
        assert!(!registrar.allows(Scope::needed(Area::Customers, &Method::GET)));
        assert!(!registrar.allows(Scope::needed(Area::Transactions, &Method::POST)));
        assert_eq!(registrar.to_string(), "customers:write");
        assert_eq!(Action::of(&Method::HEAD), Action::Read);
        assert_eq!(Action::of(&Method::DELETE), Action::Write);
    }
}
