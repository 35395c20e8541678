//! The in-process transport: a [`Client`](crate::Client) talking to a
//! `faye_server::Server` in the same process, with no network, through the same
//! door as the server's own in-process client (a trusted socket).

use std::sync::Arc;

use faye_engine::Engine;
use faye_protocol::Message;
use faye_server::{Context, Push, Reply, Server};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::transport::{Event, Lane};

/// An open in-process link: where batches go, the tasks serving them (ended
/// when dropped), and the events they report.
pub(crate) struct Opened {
    pub(crate) batches: mpsc::UnboundedSender<(Lane, Vec<Message>)>,
    pub(crate) tasks: JoinSet<()>,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
}

/// A server this client can open in-process transports to.
pub(crate) trait Local: Send + Sync + 'static {
    /// A new trusted socket, run by tasks that end when the returned link drops.
    fn open(&self) -> Opened;
}

impl<E: Engine> Local for Server<E> {
    fn open(&self) -> Opened {
        let socket = Arc::new(self.trusted_socket());
        let (tx, mut rx) = mpsc::unbounded_channel::<(Lane, Vec<Message>)>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        // Deliveries pushed to the socket.
        let (pushes, events_out) = (socket.clone(), events_tx.clone());
        tasks.spawn(async move {
            loop {
                match pushes.next_push().await {
                    Push::Messages(encoded) => {
                        let messages = encoded.iter().filter_map(|m| m.decode().ok()).collect();
                        let _ = events_out.send(Event::Messages(Lane::Other, messages));
                    }
                    // Its connects are waited for, never parked.
                    Push::Replies(_) | Push::Unbound => {}
                    Push::Closed => {
                        let _ =
                            events_out.send(Event::Closed("the server closed the session".into()));
                        return;
                    }
                }
            }
        });
        // Requests: everything but connects one batch at a time, in order; each
        // connect beside them (the server may hold it).
        let server = self.clone();
        tasks.spawn(async move {
            let mut connects = JoinSet::new();
            while let Some((lane, batch)) = rx.recv().await {
                while connects.try_join_next().is_some() {}
                let (server, socket, events) = (server.clone(), socket.clone(), events_tx.clone());
                let process = async move {
                    let replies = server.process(batch, &Context::on_socket(&socket)).await;
                    let messages = replies
                        .into_iter()
                        .filter_map(|r| match r {
                            Reply::Message(m) => Some(*m),
                            Reply::Delivery(d) => d.decode().ok(),
                        })
                        .collect();
                    let _ = events.send(Event::Messages(lane, messages));
                };
                if lane == Lane::Connect {
                    connects.spawn(process);
                } else {
                    process.await;
                }
            }
        });
        Opened { batches: tx, tasks, events }
    }
}
