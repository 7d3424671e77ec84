//! Image codecs: QUIC, LZ, GLZ, LZ4, JPEG. (Being built.)
