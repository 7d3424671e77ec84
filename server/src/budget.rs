//! Budgets: every resource a client or a guest can make the server spend, in one place, with
//! documented defaults (the shape of h2's `server::Builder` limits).
//!
//! Exceeding a budget is never a crash: it is a refusal for the peer that asked (a connection
//! closed, a command rejected and released, a cache entry evicted, a frame dropped), and every
//! refusal logs which budget was hit, by the field name used here. ARCHITECTURE.md lists the
//! budgets and where each is enforced.
//!
//! Owns: the numbers. Must not: enforce anything itself (the state machines that spend a
//! resource check its budget where they spend it).

/// The budgets a [`crate::Config`] carries. `Budgets::default()` is safe for a server exposed
/// to untrusted clients and guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// Connections held in any state (link stage, channels, closing). A new connection past
    /// this is closed at once. The async shell also stops accepting while it is reached.
    pub max_connections: usize,
    /// Connections still in the link stage (unauthenticated). A new one past this is refused.
    pub max_linking: usize,
    /// Client sessions (one per main channel).
    pub max_sessions: usize,
    /// Channel connections one session may link besides its main channel.
    pub max_channels_per_session: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_connections: 512,
            max_linking: 64,
            max_sessions: 16,
            max_channels_per_session: 32,
        }
    }
}
