//! spice-conformance: replay captures against our server and compare. Filled in by the
//! conformance issue.
