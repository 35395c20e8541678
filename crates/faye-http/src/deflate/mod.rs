//! WebSocket `permessage-deflate` (RFC 7692), which tungstenite lacks.
//!
//! - `negotiate`: which offer the server accepts and what it answers;
//! - `compress`: server text messages, each on its own;
//! - [`inflate`] (from the `faye-deflate` crate, which the client shares): the
//!   sans-IO core that reads the client's frames and inflates its compressed
//!   messages, and `DeflateIo`, the async adapter that feeds it from the upgraded
//!   connection and hands its output to tungstenite.
//!
//! This module is public, but hidden, only so that the fuzz target
//! (`fuzz/fuzz_targets/deflate_inflate.rs`) can drive [`inflate`] and a test can
//! count compressions; it is not part of the crate's API.

mod compress;
mod negotiate;

pub(crate) use compress::compress;
pub use compress::compressions_on_this_thread;
pub use faye_deflate::inflate;
pub(crate) use faye_deflate::{DeflateIo, TRAILER};
pub(crate) use negotiate::{WindowBits, negotiate};
