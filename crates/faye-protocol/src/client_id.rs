use std::fmt;

/// Length of a Faye client id: 160 bits in base 36, `ceil(160 ln2 / ln36)` digits.
const LEN: usize = 31;

/// A Faye client id: 160 random bits written as 31 lower-case base-36 digits.
///
/// The id is the session's only credential, so it must come from a CSPRNG. This
/// crate takes no randomness itself: callers pass 20 random bytes.
///
/// ```
/// use faye_protocol::ClientId;
/// let id = ClientId::from_random_bytes([0xff; 20]);
/// assert_eq!(id.as_str().len(), 31);
/// assert_eq!(ClientId::parse(id.as_str()), Some(id));
/// assert_eq!(ClientId::parse("fakeclientid"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId([u8; LEN]);

impl ClientId {
    /// Writes 160 bits (big-endian) in base 36, left-padded with `0`.
    pub fn from_random_bytes(bytes: [u8; 20]) -> Self {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut num = bytes;
        let mut out = [b'0'; LEN];
        for slot in out.iter_mut().rev() {
            // Long division of the 160-bit number by 36; the remainder is the next digit.
            let mut rem: u32 = 0;
            for byte in num.iter_mut() {
                let cur = (rem << 8) | u32::from(*byte);
                *byte = (cur / 36) as u8;
                rem = cur % 36;
            }
            *slot = DIGITS[rem as usize];
        }
        Self(out)
    }

    /// Parses an id as Faye issues them (31 characters of `0-9a-z`). Anything else
    /// cannot be a live client of this server.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; LEN] = s.as_bytes().try_into().ok()?;
        bytes.iter().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()).then_some(Self(bytes))
    }

    /// What logs at the info level and above may say of the client: the id's
    /// first six characters. Enough to follow one client through a log, far too
    /// few to act as it (the id is the session's only credential: whoever has it
    /// may connect and read the client's messages). Debug-level logs may show
    /// the whole id.
    ///
    /// ```
    /// # use faye_protocol::ClientId;
    /// let id = ClientId::from_random_bytes([7; 20]);
    /// assert_eq!(id.log_tag().len(), 6);
    /// assert!(id.as_str().starts_with(id.log_tag()));
    /// ```
    pub fn log_tag(&self) -> &str {
        &self.as_str()[..6]
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_max_are_padded_to_31_digits() {
        assert_eq!(ClientId::from_random_bytes([0; 20]).as_str(), "0".repeat(31));
        // 2^160 - 1 in base 36, computed independently with Python.
        assert_eq!(
            ClientId::from_random_bytes([0xff; 20]).as_str(),
            "twj4yidkw7a8pn4g709kzmfoaol3x8f"
        );
    }

    #[test]
    fn one_is_written_as_a_single_trailing_digit() {
        let mut b = [0; 20];
        b[19] = 35;
        assert_eq!(ClientId::from_random_bytes(b).as_str(), format!("{}z", "0".repeat(30)));
    }
}
