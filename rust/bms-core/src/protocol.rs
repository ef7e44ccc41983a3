//! (protocol: work in progress)
