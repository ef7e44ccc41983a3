//! (limits: work in progress)
