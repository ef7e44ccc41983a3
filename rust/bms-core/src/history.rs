//! (history: work in progress)
