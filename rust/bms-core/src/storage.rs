//! (storage: work in progress)
