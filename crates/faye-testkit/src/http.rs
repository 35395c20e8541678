//! Raw HTTP/1.1 over a `TcpStream`: any method, path, headers and body; responses
//! with their status, headers in wire order and the body (de-chunked); several
//! requests on one kept-alive connection; a streaming body read chunk by chunk;
//! the upgrade to WebSocket.

use std::io;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::ws::RawWs;

/// Longest response head accepted: a server sending more is broken.
const MAX_HEAD: usize = 64 * 1024;

/// An HTTP/1.1 request, built up and then sent with [`HttpConn`] or [`fetch`].
///
/// `Host` (the server's address) and `Content-Length` are added when sending
/// unless set here; nothing else is.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// `method path`, no headers, empty body. `path` goes on the wire as given
    /// (query string included, no encoding).
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// `POST path`.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a header (repeating a name sends it twice).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds several headers, in order.
    #[must_use]
    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        self.headers.extend(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// `value` as the body, with `Content-Type: application/json`.
    #[must_use]
    pub fn json(self, value: &Value) -> Self {
        self.header("Content-Type", "application/json").body(value.to_string())
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The request as it goes on the wire to `host`.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has_header("host") {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.has_header("content-length") && !self.has_header("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A response: status, headers and (de-chunked) body.
///
/// From [`HttpConn::read_head`] it has an empty `body`; the body is then read
/// with [`HttpConn::read_body`] or [`HttpConn::read_chunk`].
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in wire order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header with this name (case-insensitive), in wire order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as UTF-8; panics if it is not.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("body is not UTF-8 ({e}): {:?}", self.text()))
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    fn is_chunked(&self) -> bool {
        self.headers_named("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// How the body is delimited (RFC 9112 §6.3, HEAD requests aside).
    fn framing(&self) -> io::Result<Framing> {
        if self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(Framing::Empty);
        }
        if self.is_chunked() {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            Some(len) => len
                .parse()
                .map(Framing::Length)
                .map_err(|_| invalid(format!("bad Content-Length {len:?}"))),
            None => Ok(Framing::ToEof),
        }
    }
}

enum Framing {
    Empty,
    Chunked,
    Length(usize),
    ToEof,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more into `buf`; `false` at end of stream. A reset once something has
/// arrived counts as the end: a server that answers early (413) and closes with
/// request bytes unread resets the connection after its answer.
pub(crate) async fn fill<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    // Into the buffer's spare room: a buffer on the stack would sit in every
    // future that awaits this one.
    buf.reserve(16 * 1024);
    match io.read_buf(buf).await {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !buf.is_empty() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Parses a response head (status line and headers, without the blank line).
fn parse_head(head: &[u8]) -> io::Result<Response> {
    let bad = |what: &str| invalid(format!("{what}: {:?}", String::from_utf8_lossy(head)));
    let head = std::str::from_utf8(head).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(Response { status, headers, body: Vec::new() })
}

async fn read_head_from<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Response> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("response head too large"));
        }
        if !fill(io, buf).await? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a response head: {:?}",
                    String::from_utf8_lossy(buf)
                ),
            ));
        }
    };
    let head = parse_head(&buf[..end])?;
    buf.drain(..end + 4);
    Ok(head)
}

/// The chunk at the front of `buf`, if complete: its data's range in `buf` and
/// the bytes it takes up. The last chunk (size 0) has an empty range and takes
/// its trailer section with it.
fn parse_chunk(buf: &[u8]) -> io::Result<Option<(std::ops::Range<usize>, usize)>> {
    let Some(line_end) = find(buf, b"\r\n") else { return Ok(None) };
    let line =
        std::str::from_utf8(&buf[..line_end]).map_err(|_| invalid("non-UTF-8 chunk size"))?;
    let size_text = line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_text, 16)
        .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
    let data = line_end + 2;
    if size == 0 {
        // Trailer fields, then an empty line.
        let mut at = data;
        loop {
            let Some(end) = find(&buf[at..], b"\r\n") else { return Ok(None) };
            at += end + 2;
            if end == 0 {
                return Ok(Some((data..data, at)));
            }
        }
    }
    if buf.len() < data + size + 2 {
        return Ok(None);
    }
    if &buf[data + size..data + size + 2] != b"\r\n" {
        return Err(invalid("chunk data not followed by CRLF"));
    }
    Ok(Some((data..data + size, data + size + 2)))
}

/// One chunk of a chunked body: `Some(data)`, or `None` for the last chunk.
async fn read_chunk_from<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some((data, used)) = parse_chunk(buf)? {
            let chunk = buf[data].to_vec();
            buf.drain(..used);
            return Ok((!chunk.is_empty()).then_some(chunk));
        }
        if !fill(io, buf).await? {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated chunked body"));
        }
    }
}

async fn read_body_from<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    mut head: Response,
) -> io::Result<Response> {
    head.body = match head.framing()? {
        Framing::Empty => Vec::new(),
        Framing::Chunked => {
            let mut body = Vec::new();
            while let Some(chunk) = read_chunk_from(io, buf).await? {
                body.extend_from_slice(&chunk);
            }
            body
        }
        Framing::Length(len) => {
            while buf.len() < len {
                if !fill(io, buf).await? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("truncated body: {} of {len} bytes", buf.len()),
                    ));
                }
            }
            buf.drain(..len).collect()
        }
        Framing::ToEof => {
            while fill(io, buf).await? {}
            std::mem::take(buf)
        }
    };
    Ok(head)
}

/// A client connection: requests and responses in turn (kept alive unless a side
/// says `Connection: close`), or a streaming body read chunk by chunk, or raw
/// bytes for malformed requests.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    /// Bytes read past what has been handed out (the next response, frames).
    buf: Vec<u8>,
    host: String,
}

impl HttpConn {
    /// Opens a connection to `addr` (which is also the `Host` sent).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::new(), host: addr.to_string() })
    }

    /// Sends `request` and reads its response. The request is written while the
    /// response is read, so a server that answers before reading the whole body
    /// (413) is seen answering rather than as a failed write.
    pub async fn call(&mut self, request: &Request) -> io::Result<Response> {
        let bytes = request.to_bytes(&self.host);
        let (mut rd, mut wr) = self.stream.split();
        let write = async move {
            // The server may stop reading early; its answer is what counts then.
            if wr.write_all(&bytes).await.is_ok() {
                let _ = wr.flush().await;
            }
            // No shutdown: some servers take a half-close for an aborted request.
            std::future::pending::<()>().await;
        };
        let buf = &mut self.buf;
        let read = async move {
            let head = read_head_from(&mut rd, buf).await?;
            read_body_from(&mut rd, buf, head).await
        };
        tokio::select! {
            response = read => response,
            () = write => unreachable!("the writer never finishes"),
        }
    }

    /// Sends `request` without reading anything.
    pub async fn send(&mut self, request: &Request) -> io::Result<()> {
        self.write_raw(&request.to_bytes(&self.host)).await
    }

    /// Writes `bytes` as they are: half a request, a malformed one.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next response's status line and headers; its body is left unread.
    pub async fn read_head(&mut self) -> io::Result<Response> {
        read_head_from(&mut self.stream, &mut self.buf).await
    }

    /// The body of the response whose head this is, read as the head says
    /// (length, chunks, or to the end of the connection).
    pub async fn read_body(&mut self, head: Response) -> io::Result<Response> {
        read_body_from(&mut self.stream, &mut self.buf, head).await
    }

    /// The next whole response.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        let head = self.read_head().await?;
        self.read_body(head).await
    }

    /// The next chunk of a chunked body whose head has been read: `None` after the
    /// last chunk. For streams (EventSource) that never end.
    pub async fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        read_chunk_from(&mut self.stream, &mut self.buf).await
    }

    /// Everything until the server closes the connection, including what was
    /// already read but not handed out.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while fill(&mut self.stream, &mut self.buf).await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The connection as a WebSocket, after a `101 Switching Protocols` head has
    /// been read; bytes read past the head are its first frames.
    pub fn into_websocket(self) -> RawWs {
        RawWs::from_parts(self.stream, self.buf)
    }
}

/// One request on a fresh connection with `Connection: close` (unless the
/// request has a `Connection` header of its own).
pub async fn fetch(addr: SocketAddr, request: &Request) -> io::Result<Response> {
    let mut conn = HttpConn::connect(addr).await?;
    if request.has_header("connection") {
        conn.call(request).await
    } else {
        conn.call(&request.clone().header("Connection", "close")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunked response's body, read from `wire`.
    async fn dechunk(wire: &[u8]) -> io::Result<Vec<u8>> {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")?;
        let mut buf = Vec::new();
        let response = read_body_from(&mut &wire[..], &mut buf, head).await?;
        assert!(buf.is_empty(), "bytes left after the body: {buf:?}");
        Ok(response.body)
    }

    #[tokio::test]
    async fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = b"5;name=x\r\nhello\r\nA\r\n, chunked!\r\n0\r\nTrailer: y\r\n\r\n";
        assert_eq!(dechunk(body).await.unwrap(), b"hello, chunked!");
        assert_eq!(dechunk(b"0\r\n\r\n").await.unwrap(), b"");
        for truncated in [&b"5\r\nhel"[..], b"5\r\nhello\r\n0\r\n"] {
            let err = dechunk(truncated).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
        for bad in [&b"zz\r\n"[..], b"2\r\nhello\r\n"] {
            assert_eq!(dechunk(bad).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn requests_get_host_and_content_length_unless_given() {
        let req = Request::post("/p?q=1").header("X-A", "1").body("abc");
        assert_eq!(
            String::from_utf8(req.to_bytes("h:1")).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc"
        );
        let req = Request::get("/").header("host", "x").header("Transfer-Encoding", "chunked");
        assert_eq!(
            String::from_utf8(req.to_bytes("h:1")).unwrap(),
            "GET / HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn heads_parse_in_wire_order() {
        let head = parse_head(b"HTTP/1.1 404 Not Found\r\nVary: a\r\nvary:  b \r\nX: 1").unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.headers_named("VARY"), ["a", "b"]);
        assert_eq!(head.header("x"), Some("1"));
        assert!(parse_head(b"SPDY/3 200 OK").is_err());
    }
}
