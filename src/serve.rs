//! Serving an axum router on a bound listener, for both the API and the internode port.
//!
//! The accept loop:
//! * **Connection cap**: at most `max_connections` connections are served at once. When the cap
//!   is reached the loop stops accepting until a connection ends: excess connections wait in the
//!   kernel's listen backlog (and time out on the client side if it is full), they are not
//!   refused.
//! * **TLS** (optional): the handshake runs on the connection's own task, bounded by
//!   `read_timeout`. A failed handshake is one `info` log line with the peer and the reason. A
//!   plain-HTTP request to a TLS port gets a plain `400` answer (as Go's servers do) and the
//!   connection is closed; the listener keeps serving.
//! * **HTTP**: hyper-util's auto builder (HTTP/1.1 and HTTP/2, prior knowledge or ALPN `h2`).
//! * **Slow clients**: a connection must start its first request within `read_timeout`; an
//!   HTTP/1 request's headers must arrive within `read_timeout` (the same timer closes idle
//!   keep-alive connections); with `body_deadline`, reading a request's body fails once
//!   `read_timeout` has passed since the request began (slowloris). HTTP/2 connections are
//!   pinged and closed when the peer stops answering.
//! * **Shutdown**: when `stop` is cancelled the listener closes, every connection is shut down
//!   gracefully (in-flight requests finish; HTTP/2 peers get GOAWAY), and the server waits for
//!   them a bounded time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use crate::metrics::ListenerCounters;

/// How one listener serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// For logs: "HTTP" or "internode".
    pub name: &'static str,
    /// TLS, or None for cleartext.
    pub tls: Option<Arc<ServerConfig>>,
    /// Connections served at once (at least 1).
    pub max_connections: usize,
    /// TLS handshake, first request, HTTP/1 headers and (with `body_deadline`) request bodies
    /// must arrive within this.
    pub read_timeout: Duration,
    /// Bound request bodies by `read_timeout` (the API); off for the internode port, whose
    /// snapshot transfers may legitimately take long.
    pub body_deadline: bool,
    /// This listener's connection counts.
    pub counters: Arc<ListenerCounters>,
}

/// The largest connection cap honoured.
const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// How long shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    stop: CancellationToken,
) {
    // Bounded so that the semaphore (and the shutdown wait on all its permits) can hold it.
    let max = opts.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let permits = Arc::new(Semaphore::new(max));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(20));
    let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(listener = opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        opts.counters.accepted.inc();
        let conn = Conn {
            builder: builder.clone(),
            router: router.clone(),
            opts: opts.clone(),
            tls: tls.clone(),
            stop: stop.clone(),
            peer,
        };
        let counters = opts.counters.clone();
        tokio::spawn(async move {
            let _open = counters.open.hold();
            conn.run(tcp).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = opts.name,
            "connections still open {SHUTDOWN_GRACE:?} after shutdown began; leaving them"
        );
    }
}

/// One accepted connection.
struct Conn {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    opts: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
    peer: SocketAddr,
}

impl Conn {
    async fn run(self, tcp: TcpStream) {
        let Some(acceptor) = self.tls.clone() else {
            self.http(tcp).await;
            return;
        };
        let peer = self.peer;
        let name = self.opts.name;
        let timeout = self.opts.read_timeout;
        let mut first = [0u8; 1];
        match tokio::time::timeout(timeout, tcp.peek(&mut first)).await {
            Ok(Ok(1..)) => {}
            Ok(Ok(_)) => return, // closed before sending anything
            Ok(Err(e)) => {
                tracing::info!(listener = name, %peer, error = %e, "connection failed");
                return;
            }
            Err(_) => {
                self.opts.counters.tls_handshake_failures.inc();
                tracing::info!(listener = name, %peer, "TLS handshake failed: no data within {timeout:?}");
                return;
            }
        }
        // A TLS connection starts with a handshake record (content type 22).
        if first[0] != 0x16 {
            self.opts.counters.tls_handshake_failures.inc();
            tracing::info!(
                listener = name,
                %peer,
                "TLS handshake failed: client sent plain HTTP (or something else) to a TLS port"
            );
            let mut tcp = tcp;
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tcp.write_all(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                ),
            )
            .await;
            let _ = tcp.shutdown().await;
            return;
        }
        self.opts.counters.tls_handshakes.inc();
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => self.http(tls).await,
            Ok(Err(e)) => {
                self.opts.counters.tls_handshake_failures.inc();
                tracing::info!(listener = name, %peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.opts.counters.tls_handshake_failures.inc();
                tracing::info!(listener = name, %peer, "TLS handshake failed: not completed within {timeout:?}");
            }
        }
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = Arc::new(AtomicBool::new(false));
        let svc = App {
            inner: TowerToHyperService::new(self.router),
            deadline: self.opts.body_deadline.then_some(self.opts.read_timeout),
            started: started.clone(),
        };
        let conn = self.builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let first_request = tokio::time::sleep(self.opts.read_timeout);
        tokio::pin!(first_request);
        let mut waiting_first = true;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = self.stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    break conn.as_mut().await;
                }
                _ = &mut first_request, if waiting_first => {
                    if !started.load(Ordering::Relaxed) {
                        tracing::info!(
                            listener = self.opts.name,
                            peer = %self.peer,
                            "closing connection: no request within {:?}",
                            self.opts.read_timeout
                        );
                        return;
                    }
                    waiting_first = false;
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = self.opts.name, peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

/// The hyper service: the router, with request bodies bounded by the read deadline.
#[derive(Clone)]
struct App {
    inner: TowerToHyperService<Router>,
    deadline: Option<Duration>,
    started: Arc<AtomicBool>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for App {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.started.store(true, Ordering::Relaxed);
        let deadline = self.deadline;
        let req = req.map(|b| DeadlineBody {
            inner: b,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep(d))),
        });
        Box::pin(hyper::service::Service::call(&self.inner, req))
    }
}

/// A request body that fails once its deadline passes before it has been read in full.
struct DeadlineBody {
    inner: Incoming,
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The error a body reports when its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the read timeout")]
pub struct BodyTimeout;

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
