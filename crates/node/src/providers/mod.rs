//! Host providers: ways for the hub to make hosts (`hangar host add NAME --provider P`),
//! each behind hub's `HostProvider` trait, one file per provider.

pub mod local;
