//! Image descriptors and draw structures. (Being filled in.)
