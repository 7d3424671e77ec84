//! Deterministic whole-system simulation on turmoil. Filled in by the simulation issue.
