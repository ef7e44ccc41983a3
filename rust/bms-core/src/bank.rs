//! (bank: work in progress)
