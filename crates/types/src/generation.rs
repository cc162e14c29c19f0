//! The desired-state generation: one monotonic counter the hub hands out, so a host and
//! each instance can say which change of desired state they are at, and a report can be
//! matched to the request it answers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A value of the desired-state counter. On the wire and in the store it is a plain
/// integer; documents that embed it say so with `#[schema(value_type = i64)]`, so the
/// API document is the one an `i64` field gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(i64);

impl Generation {
    /// What a record has before the counter gave it anything.
    pub const ZERO: Generation = Generation(0);

    /// The generation a store holds as `value`.
    pub const fn new(value: i64) -> Self {
        Generation(value)
    }

    /// The integer a store or a query string holds.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The generation after this one.
    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_a_bare_integer() {
        assert_eq!(serde_json::to_string(&Generation::new(42)).unwrap(), "42");
        assert_eq!(serde_json::from_str::<Generation>("7").unwrap(), Generation::new(7));
        assert!(serde_json::from_str::<Generation>("\"7\"").is_err());
    }

    #[test]
    fn generations_order_by_value() {
        assert!(Generation::ZERO < Generation::ZERO.next());
        assert_eq!(Generation::new(4).next(), Generation::new(5));
        assert_eq!(Generation::new(9).to_string(), "9");
    }
}
