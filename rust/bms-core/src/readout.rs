//! (readout: work in progress)
