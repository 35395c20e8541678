//! Publish throughput and round-trip latency of one faye-client, for
//! `bench/client-compare` (which runs Node Faye's client the same way).
//!
//! `client_bench URL websocket|long-polling [MESSAGES] [ROUND_TRIPS]` prints one
//! JSON line:
//! - throughput: one client publishes MESSAGES (default 20,000) small messages,
//!   at most 1,000 unacknowledged, to a channel a second client subscribes to;
//!   messages per second from the first publish to the last delivery;
//! - latency: one client subscribed to a channel publishes to it ROUND_TRIPS
//!   (default 1,000) times, one at a time; the time from the call to the
//!   delivery, median and 99th percentile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use faye_client::{Client, TransportKind};

const WINDOW: usize = 1000;
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, transport, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: client_bench URL websocket|long-polling [MESSAGES] [ROUND_TRIPS]".into()
        );
    };
    let messages: usize = rest.first().map_or(Ok(20_000), |s| s.parse())?;
    let round_trips: usize = rest.get(1).map_or(Ok(1_000), |s| s.parse())?;
    let other = match transport.as_str() {
        "websocket" => TransportKind::LongPolling,
        "long-polling" => TransportKind::WebSocket,
        _ => return Err("transport: websocket or long-polling".into()),
    };
    let client = || Client::builder(url).disable(other).no_proxy().build();

    // Throughput.
    let (publisher, subscriber) = (client()?, client()?);
    let mut sub = subscriber.subscribe("/bench/throughput").await?;
    publisher.connect().await?;
    let start = Instant::now();
    let receive = tokio::spawn(async move {
        for n in 0..messages {
            let m = sub.recv().await.ok_or("the subscription ended")?;
            if m.data_as::<usize>().ok() != Some(n) {
                return Err(format!("message {n} out of order"));
            }
        }
        Ok::<_, String>(Instant::now())
    });
    let mut pending = VecDeque::new();
    for n in 0..messages {
        pending.push_back(publisher.publish("/bench/throughput", &n));
        if pending.len() >= WINDOW {
            pending.pop_front().unwrap().await?;
        }
    }
    for p in pending {
        p.await?;
    }
    let done = tokio::time::timeout(LIMIT, receive).await???;
    let throughput = messages as f64 / (done - start).as_secs_f64();

    // Latency.
    let echo = client()?;
    let mut own = echo.subscribe("/bench/rtt").await?;
    let mut rtts = Vec::with_capacity(round_trips);
    for n in 0..round_trips {
        let sent = Instant::now();
        echo.publish("/bench/rtt", &n).await?;
        let m = tokio::time::timeout(LIMIT, own.recv()).await?.ok_or("the subscription ended")?;
        if m.data_as::<usize>()? != n {
            return Err("round trips out of order".into());
        }
        rtts.push(sent.elapsed());
    }
    rtts.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "client": "faye-client",
            "transport": transport,
            "messages": messages,
            "throughput": throughput.round(),
            "round_trips": round_trips,
            "rtt_p50_ms": ms(rtts[rtts.len() / 2]),
            "rtt_p99_ms": ms(rtts[rtts.len() * 99 / 100]),
        })
    );
    Ok(())
}
