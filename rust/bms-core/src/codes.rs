//! (codes: work in progress)
