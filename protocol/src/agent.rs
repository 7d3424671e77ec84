//! vdagent message envelopes. (Being filled in.)
