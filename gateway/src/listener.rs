//! The public listener's connection guard: a cap on open client connections and a deadline
//! for every request header (slow-loris). The whole-body deadline is applied where the body is
//! read ([`crate::proxy::intake::read_body`]).
//!
//! Pingora bounds each *read* of a request header (60 s), not the header as a whole, and not at
//! all on a kept-alive connection: a client that sends one byte a minute holds a connection, a
//! task and a buffer for as long as it likes, and a few thousand such clients hold them all.
//! [`GuardedApp`] wraps the proxy application: each accepted connection takes a slot (refused
//! with a 503 when none is free) and its stream is wrapped in [`GuardedStream`], whose reads
//! fail once a header has been awaited longer than `client_header_timeout`. The proxy says when
//! a header has arrived (`request_filter`) and when the next one is awaited (`logging`), so a
//! long response stream is never cut: only the wait for a header is bounded (which also bounds
//! how long an idle kept-alive connection is kept).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::metrics::labels::ClientRejection;
use crate::state::Gateway;

/// The answer to a connection over `max_connections`: written raw, since no request was read.
fn refusal() -> Vec<u8> {
    let body = r#"{"error":{"message":"The gateway has too many open connections (max_connections); retry later.","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Limits of the public listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open client connections at most.
    pub max_connections: usize,
    /// Longest wait for a whole request header (and for the next one on a kept-alive connection).
    pub header_timeout: Duration,
}

/// The proxy application behind the connection guard.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    slots: Arc<Semaphore>,
    limits: Limits,
    gw: Arc<Gateway>,
}

impl<A> GuardedApp<A> {
    /// Guards `inner` with `limits`.
    pub fn new(inner: A, limits: Limits, gw: Arc<Gateway>) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            gw,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A kept-alive connection comes back here for each request: it is guarded already.
        if !stream.as_any().is::<GuardedStream>() {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.gw
                    .metrics
                    .client_rejections_total
                    .with(&ClientRejection::MaxConnections)
                    .inc();
                tracing::warn!(
                    max_connections = self.limits.max_connections,
                    "A client connection was refused: max_connections are open."
                );
                let _ = stream.write_all(&refusal()).await;
                let _ = stream.flush().await;
                return None;
            };
            self.gw.metrics.client_connections.inc();
            stream = Box::new(GuardedStream {
                inner: stream,
                phase: AtomicU64::new(0),
                header_timeout: self.limits.header_timeout,
                deadline: None,
                gw: self.gw.clone(),
                _permit: permit,
            });
        }
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// A client connection holding a slot, whose header waits are bounded.
pub struct GuardedStream {
    inner: Stream,
    /// Counts the waits for a header and the requests between them: even while a header is
    /// awaited (from the start, and after each response), odd once the proxy has it.
    phase: AtomicU64,
    header_timeout: Duration,
    /// When the header awaited in that (even) phase is late; armed at its first read.
    deadline: Option<(u64, Pin<Box<Sleep>>)>,
    gw: Arc<Gateway>,
    _permit: OwnedSemaphorePermit,
}

impl GuardedStream {
    /// The guard of a request's connection, if it has one (HTTP/1 on the public listener).
    pub fn of(stream: Option<&Stream>) -> Option<&GuardedStream> {
        stream?.as_any().downcast_ref::<GuardedStream>()
    }

    /// The request header has arrived: reads (body, disconnect checks) are not bounded here.
    pub fn header_received(&self) {
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p % 2 == 0).then_some(p + 1)
            });
    }

    /// The response is done: the next request header is awaited, within the deadline.
    pub fn await_next_header(&self) {
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p % 2 == 1).then_some(p + 1)
            });
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.gw.metrics.client_connections.dec();
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let phase = this.phase.load(Ordering::Acquire);
        if phase % 2 == 1 {
            this.deadline = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.deadline.as_ref().is_none_or(|(p, _)| *p != phase) {
            let late = tokio::time::sleep_until(Instant::now() + this.header_timeout);
            this.deadline = Some((phase, Box::pin(late)));
        }
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        let Some((_, deadline)) = this.deadline.as_mut() else {
            return Poll::Pending;
        };
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.gw
                    .metrics
                    .client_rejections_total
                    .with(&ClientRejection::HeaderTimeout)
                    .inc();
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client_header_timeout: no whole request header in time",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use crate::openai::ErrorCode;

    /// The raw refusal is written before any request is read, so it is not built from an
    /// `ApiError`; it must still say what the error table says.
    #[test]
    fn the_raw_refusal_agrees_with_the_error_table() {
        let raw = String::from_utf8(super::refusal()).unwrap();
        let code = ErrorCode::TooManyConnections;
        assert!(raw.starts_with(&format!("HTTP/1.1 {} ", code.status())));
        let (_, body) = raw.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], code.as_str());
        assert_eq!(v["error"]["type"], code.kind().as_str());
    }
}
