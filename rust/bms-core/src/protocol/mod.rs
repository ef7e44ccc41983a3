//! The GATT protocol (BLE-1, BLE-2, BLE-4): one primary service whose characteristics carry
//! versioned, postcard-encoded pages (status, bank, battery N, history, settings) and a control
//! point for actions. In: one GATT access (characteristic, read or write, whether the link is
//! authenticated, the request bytes). Out: the response bytes, always `[version, status, body]`.
//! The wire format is specified in `docs/protocol.md`; the exact bytes are pinned by the tests.
//!
//! The handler works on any [`Device`] (the [`crate::Bms`], or a fake in tests and fuzzing):
//! it decodes and checks the request completely before it calls a single mutating method, so
//! a refused request never changes state.
//!
//! Three layers, each depending only on the ones before it:
//! - [`wire`]: numbers, UUIDs, commands and the codec (what outside tools implement);
//! - [`pages`]: the page shapes and the mapping from the [`crate::Bms`] to them;
//! - [`handler`]: [`handle_request`] over a [`Device`].

pub mod handler;
pub mod pages;
pub mod wire;

pub use handler::*;
pub use pages::*;
pub use wire::*;
