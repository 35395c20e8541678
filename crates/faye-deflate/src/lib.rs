//! WebSocket `permessage-deflate` (RFC 7692), the read side, which tungstenite
//! lacks: shared by the faye-rs server (`faye-http`, reading clients' frames) and
//! client (`faye-client`, reading the server's).
//!
//! - [`inflate`]: the sans-IO core that reads the peer's frames and inflates its
//!   compressed messages into plain frames;
//! - [`DeflateIo`]: the async adapter that feeds it from the connection and hands
//!   its output to tungstenite.
//!
//! Each side decides for itself whether to compress what it sends: RFC 7692 lets
//! any message go uncompressed.

pub mod inflate;
mod io;

pub use io::DeflateIo;

/// The trailer RFC 7692 strips from every compressed message (an empty stored block).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Which end of the connection this is, which decides how frames are masked:
/// clients mask their frames, servers do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server reads masked client frames.
    Server,
    /// The client reads unmasked server frames.
    Client,
}
