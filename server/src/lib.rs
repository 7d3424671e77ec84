//! spice-server: the SPICE server library a VMM embeds (VD-Interface traits, link and auth,
//! sans-IO channel state machines, a thin async shell). Filled in by the server issue.
