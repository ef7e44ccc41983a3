//! C ABI of the OpenBMS core (work in progress).
