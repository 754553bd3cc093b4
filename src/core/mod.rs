//! The pure core of Meridian: schedules, DST rules, firing ids, policies, the owner's
//! timer index and decisions, the run model.
//!
//! Everything here is synchronous and deterministic: time and randomness come in as
//! arguments and decisions go out as data. This module must not import tokio, do IO,
//! read a clock or touch generated proto types (the tidy test enforces it).

pub mod action;
pub mod clock_guard;
mod error;
pub mod firing;
pub mod ids;
pub mod job;
pub mod owner;
pub mod policy;
pub mod run;
pub mod schedule;

pub use error::FieldError;

/// Every instant Meridian stores or compares: UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
