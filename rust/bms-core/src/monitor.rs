//! (monitor: work in progress)
