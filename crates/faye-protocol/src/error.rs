use std::fmt;

/// The error codes of Faye's `Error` class, with their fixed messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 301 `Connection types not supported`
    ConntypeMismatch,
    /// 401 `Unknown client`
    ClientUnknown,
    /// 402 `Missing required parameter`
    ParameterMissing,
    /// 403 `Forbidden channel`
    ChannelForbidden,
    /// 405 `Invalid channel`
    ChannelInvalid,
    /// 403 `Too many subscriptions` (faye-rs only: a client reached its limit)
    SubscriptionLimit,
    /// 500 `Internal server error` (Faye never sends it; faye-rs does when its
    /// engine fails, so that nothing is reported as accepted that was not)
    ServerError,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::ConntypeMismatch => 301,
            Self::ClientUnknown => 401,
            Self::ParameterMissing => 402,
            Self::ChannelForbidden => 403,
            Self::ChannelInvalid => 405,
            Self::SubscriptionLimit => 403,
            Self::ServerError => 500,
        }
    }

    /// Faye's message text for the code.
    pub fn message(self) -> &'static str {
        match self {
            Self::ConntypeMismatch => "Connection types not supported",
            Self::ClientUnknown => "Unknown client",
            Self::ParameterMissing => "Missing required parameter",
            Self::ChannelForbidden => "Forbidden channel",
            Self::ChannelInvalid => "Invalid channel",
            Self::SubscriptionLimit => "Too many subscriptions",
            Self::ServerError => "Internal server error",
        }
    }
}

/// A Bayeux error as Faye writes it on the wire: `<code>:<params joined by ','>:<message>`.
///
/// ```
/// use faye_protocol::BayeuxError;
/// assert_eq!(BayeuxError::client_unknown("abc").to_string(), "401:abc:Unknown client");
/// assert_eq!(BayeuxError::parameter_missing("data").to_string(), "402:data:Missing required parameter");
/// assert_eq!(BayeuxError::client_unknown("").to_string(), "401::Unknown client");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BayeuxError {
    code: ErrorCode,
    params: String,
}

impl BayeuxError {
    /// An error with `params` already joined by commas.
    pub fn new(code: ErrorCode, params: impl Into<String>) -> Self {
        Self { code, params: params.into() }
    }

    /// `301:<types>:Connection types not supported`.
    pub fn conntype_mismatch(types: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConntypeMismatch, types)
    }

    /// `401:<clientId>:Unknown client`.
    pub fn client_unknown(client_id: impl Into<String>) -> Self {
        Self::new(ErrorCode::ClientUnknown, client_id)
    }

    /// `402:<param>:Missing required parameter`.
    pub fn parameter_missing(param: impl Into<String>) -> Self {
        Self::new(ErrorCode::ParameterMissing, param)
    }

    /// `403:<channel>:Forbidden channel`.
    pub fn channel_forbidden(channel: impl Into<String>) -> Self {
        Self::new(ErrorCode::ChannelForbidden, channel)
    }

    /// `405:<channel>:Invalid channel`.
    pub fn channel_invalid(channel: impl Into<String>) -> Self {
        Self::new(ErrorCode::ChannelInvalid, channel)
    }

    /// `403:<channel>:Too many subscriptions`.
    pub fn subscription_limit(channel: impl Into<String>) -> Self {
        Self::new(ErrorCode::SubscriptionLimit, channel)
    }

    /// `500::Internal server error`.
    pub fn server_error() -> Self {
        Self::new(ErrorCode::ServerError, "")
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl fmt::Display for BayeuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.code.code(), self.params, self.code.message())
    }
}

impl From<BayeuxError> for String {
    fn from(e: BayeuxError) -> Self {
        e.to_string()
    }
}
