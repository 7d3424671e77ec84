//! LZ: SPICE's per-image LZ77 codec (being built).
