//! Long-polling: POST (JSON or form `message=`) and GET with a JSON-P callback,
//! with the headers Faye's Node adapter sends (§4.4).

use faye_engine::Engine;
use faye_protocol::{DecodeError, Message, decode_batch_limited, encode_batch, escape_jsonp};
use std::sync::Arc;

use faye_server::{Context, RequestInfo};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::cors::{PageBy, allow_origin, refuse_foreign};
use crate::{
    FayeBody, FayeService, RemoteAddr, bad_request, full, request_info, request_info_from, text,
};

const DEFAULT_CALLBACK: &str = "jsonpcallback";

/// Why a request is refused before it reaches the server.
enum Refused {
    BadRequest,
    TooLarge(String),
}

impl Refused {
    fn response(self) -> Response<FayeBody> {
        match self {
            Self::BadRequest => bad_request(),
            Self::TooLarge(why) => text(StatusCode::PAYLOAD_TOO_LARGE, why),
        }
    }
}

/// Faye's callback rule (the Rosetta Flash fix): dotted JavaScript identifiers only.
fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        })
}

/// A form-encoded component: `+` is a space, `%XX` a byte. `None` unless the
/// bytes are UTF-8 (a lenient decoder would swap bad bytes for U+FFFD and publish
/// altered data).
fn form_decode(raw: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    String::from_utf8(percent_encoding::percent_decode(&spaced).collect()).ok()
}

/// Parameters as Faye reads them: the first `message` and the first `jsonp`.
/// `Err` if either is not valid UTF-8 once decoded.
fn params(query: &[u8]) -> Result<(Option<String>, Option<String>), Refused> {
    let (mut message, mut jsonp) = (None, None);
    for pair in query.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let slot = match form_decode(key).as_deref() {
            Some("message") => &mut message,
            Some("jsonp") => &mut jsonp,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(form_decode(value).ok_or(Refused::BadRequest)?);
        }
    }
    Ok((message, jsonp))
}

impl<E: Engine> FayeService<E> {
    fn decode(&self, body: &[u8]) -> Result<Vec<Message>, Refused> {
        decode_batch_limited(body, self.shared.options.max_batch).map_err(|e| match e {
            // Decoding stops at the first message past the limit, so the count is unknown.
            DecodeError::TooMany { max } => Refused::TooLarge(format!(
                "Payload too large: more than {max} messages in one request"
            )),
            e => {
                tracing::debug!(error = %e, "refused a request");
                Refused::BadRequest
            }
        })
    }

    async fn run(&self, batch: Vec<Message>, request: &Arc<RequestInfo>) -> bytes::Bytes {
        let ctx = Context::remote(request.clone());
        encode_batch(&self.shared.server.process(batch, &ctx).await)
    }
}

fn common_headers<E: Engine>(
    svc: &FayeService<E>,
    res: &mut Response<FayeBody>,
    request: &HeaderMap,
    content_type: &'static str,
) {
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    allow_origin(&svc.shared.options, request, h);
}

/// POST: `application/json` bodies are the message; anything else is a form with
/// a `message` field (the browser's cross-origin transport sends `text/plain`).
pub(crate) async fn post<E, B>(
    svc: &FayeService<E>,
    req: Request<B>,
    peer: Option<RemoteAddr>,
) -> Response<FayeBody>
where
    E: Engine,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let max = svc.shared.options.max_request_bytes;
    let read =
        tokio::time::timeout(svc.shared.options.body_timeout, Limited::new(body, max).collect());
    let body = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let why = format!("Payload too large: the request body limit is {max} bytes");
            return Refused::TooLarge(why).response();
        }
        Ok(Err(_)) => return bad_request(),
        Err(_) => {
            return text(StatusCode::REQUEST_TIMEOUT, "Request timeout: the body was too slow");
        }
    };
    let json =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json")
        });
    let (message, jsonp) = if json {
        match std::str::from_utf8(&body) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => return bad_request(),
        }
    } else {
        match params(&body) {
            Ok(params) => params,
            Err(refused) => return refused.response(),
        }
    };
    // Faye validates the callback on POST too, though it never uses it there.
    if !valid_callback(jsonp.as_deref().unwrap_or(DEFAULT_CALLBACK)) {
        return bad_request();
    }
    let Some(message) = message else {
        return bad_request();
    };
    let batch = match svc.decode(message.as_bytes()) {
        Ok(batch) => batch,
        Err(refused) => return refused.response(),
    };
    let request = request_info_from(parts, "long-polling", peer);
    let mut res = Response::new(full(svc.run(batch, &request).await));
    common_headers(svc, &mut res, &request.headers, "application/json; charset=utf-8");
    res
}

/// GET: callback-polling (JSON-P), `?message=<json>&jsonp=<callback>`.
pub(crate) async fn get<E: Engine, B>(svc: &FayeService<E>, req: Request<B>) -> Response<FayeBody> {
    // A `<script>` tag loads this from any page, cookies included, and the page
    // reads the reply: the CORS rules do not apply, so the allow-list is checked here.
    let by = PageBy::OriginOrReferer;
    if let Some(refused) = refuse_foreign(&svc.shared.options, req.headers(), by) {
        return refused;
    }
    let (message, jsonp) = match params(req.uri().query().unwrap_or("").as_bytes()) {
        Ok(params) => params,
        Err(refused) => return refused.response(),
    };
    let callback = jsonp.unwrap_or_else(|| DEFAULT_CALLBACK.to_owned());
    let Some(message) = message.filter(|_| valid_callback(&callback)) else {
        return bad_request();
    };
    if message.len() > svc.shared.options.max_request_bytes {
        let why = format!(
            "Payload too large: the request limit is {} bytes",
            svc.shared.options.max_request_bytes
        );
        return Refused::TooLarge(why).response();
    }
    let batch = match svc.decode(message.as_bytes()) {
        Ok(batch) => batch,
        Err(refused) => return refused.response(),
    };
    let request = request_info(req.into_parts().0, "callback-polling");
    let json = svc.run(batch, &request).await;
    let json = escape_jsonp(std::str::from_utf8(&json).unwrap_or("[]"));
    let mut res = Response::new(full(format!("/**/{callback}({json});")));
    common_headers(svc, &mut res, &request.headers, "text/javascript; charset=utf-8");
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=f.txt"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::{params, valid_callback};

    #[test]
    fn callbacks_are_dotted_identifiers() {
        for ok in ["jsonpcallback", "cb.x", "$", "_a1.$b", "__jsonp3__"] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in ["", "42", "a..b", "a.", "alert(1)", "a-b", "a b", "é"] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }

    #[test]
    fn form_parameters_decode_strictly_and_take_the_first_value() {
        let (message, jsonp) =
            params(b"x=%FF&message=%5B1%5D+%C3%A9&message=second&jsonp=cb").ok().unwrap();
        assert_eq!((message.as_deref(), jsonp.as_deref()), (Some("[1] é"), Some("cb")));
        assert!(params(b"message=%FF").is_err());
        assert!(params(b"message=%C3%28").is_err());
        assert!(params(b"jsonp=\xff").is_err(), "a raw invalid byte too");
    }
}
