//! Simulated VD-Interface back-ends and the `spice-server` binary. Filled in by the server issue.
