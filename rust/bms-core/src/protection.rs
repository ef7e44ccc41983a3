//! (protection: work in progress)
