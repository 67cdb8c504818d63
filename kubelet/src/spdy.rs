//! Server side of a SPDY/3.1 session, as spoken by Go's `moby/spdystream`.
//!
//! `kubectl port-forward` (and `exec`/`attach` on the legacy path) talks SPDY/3.1
//! either over a raw upgraded HTTP/1.1 connection or tunneled through a
//! websocket byte stream. This module implements just enough of the protocol
//! for the server (kubelet) side: it accepts peer-initiated streams, answers
//! them, moves data both ways, echoes pings, and handles `RST_STREAM` and
//! `GOAWAY`. It never opens streams itself and does no flow control (neither
//! does spdystream).
//!
//! # Usage
//!
//! ```text
//! let (session, mut incoming) = spdy::Session::new(io);
//! let handle = session.handle();          // close() / reset_stream() from anywhere
//! let driver = tokio::spawn(session.run()); // run() must be driven (spawn it)
//! while let Some(stream) = incoming.recv().await {
//!     // SYN_REPLY has already been queued for this stream.
//!     let kind = stream.header("streamtype");
//!     // `stream` is AsyncRead + AsyncWrite; shutdown() sends DATA+FIN,
//!     // stream.reset() sends RST_STREAM(CANCEL).
//! }
//! // `incoming` yields None once the connection is gone or the peer sent GOAWAY.
//! handle.close(); // GOAWAY(OK), then the transport is shut down and run() returns.
//! ```
//!
//! # Design
//!
//! * [`Session::run`] is a future the caller must drive (normally
//!   `tokio::spawn(session.run())`). It reads frames and, concurrently, runs
//!   the single writer: every outgoing frame from every stream goes through one
//!   unbounded command queue to that writer, so frames are never interleaved.
//!   `run()` resolves when the peer closes the connection (`Ok`), after
//!   [`SessionHandle::close`] (`Ok`), or on a transport/protocol error (`Err`;
//!   for protocol errors a best-effort `GOAWAY(PROTOCOL_ERROR)` is sent first).
//! * The session answers every accepted `SYN_STREAM` with an empty `SYN_REPLY`
//!   *before* handing the stream to [`Incoming`]; the reply is queued ahead of
//!   anything the stream writes, which matters because spdystream silently
//!   drops DATA that arrives on a stream it has not seen a reply for.
//!   Unidirectional streams get no reply (and cannot be written to).
//! * Reads are buffered per stream in an **unbounded** queue: the frame reader
//!   never waits for a slow (or absent) stream reader, so one stream nobody
//!   reads cannot stall the others. The price is that a peer can make a stream
//!   nobody reads buffer without limit; the peer is an authenticated client
//!   and spdystream's own flow control is equally absent.
//! * Writes are bounded: at most [`MAX_QUEUED_DATA_FRAMES`] DATA frames (of at
//!   most [`MAX_DATA_FRAME_PAYLOAD`] bytes) are queued per session, so a writer
//!   faster than the network gets back-pressure. `poll_write` writes at most
//!   one frame per call; `poll_flush` is a no-op (the writer flushes the
//!   transport after every batch).
//! * Header blocks are zlib streams with the SPDY/3 dictionary, one context
//!   per direction. Incoming blocks are inflated with `flate2` (zlib-rs
//!   backend). Outgoing blocks are written as *stored* (uncompressed) deflate
//!   blocks behind a zlib header that names the dictionary, and each block
//!   ends with an empty stored block, the same `00 00 00 ff ff` marker a zlib
//!   sync flush (Go's `zlib.Writer.Flush`) produces. The marker is required:
//!   Go's `compress/flate` only hands out the data of a stored block once it
//!   has read the *next* block header, so without it the first reply would
//!   parse only by hitting EOF on the frame, leave the inflater in a sticky
//!   `unexpected EOF` state, and break the next header block (checked against
//!   a real spdystream client). With the marker Go reads exactly the bytes
//!   of each frame, however the frame is split across transport reads.
//!
//! Stream states as seen through the IO traits:
//! * reads return buffered data, then EOF once the peer sent FIN (sticky,
//!   even if a reset follows); without a FIN, a `RST_STREAM` from the peer
//!   yields the data already received, then `ConnectionReset` (a local reset
//!   discards the buffer); the end of the session yields `ConnectionAborted`;
//! * writes fail with `BrokenPipe` after shutdown, `ConnectionReset` after a
//!   reset (either side) and `ConnectionAborted` once the session is closing
//!   or gone;
//! * dropping a stream whose write side was not shut down sends
//!   `RST_STREAM(CANCEL)`, so the peer is never left waiting forever.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::sync::{mpsc, AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::{debug, trace, warn};

/// The SPDY/3 header compression dictionary (SPDY/3 spec section 2.6.10.1;
/// identical to moby/spdystream `spdy/dictionary.go`). 1423 bytes, Adler-32
/// `0xe3c6a7c2`.
pub const DICTIONARY: &[u8; 1423] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\
    \x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06ac\
    cept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\
    \x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03\
    age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcac\
    he-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\
    \x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0e\
    content-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md\
    5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\
    \x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expire\
    s\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\
    \x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\
    \x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modi\
    fied\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06\
    pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorizat\
    ion\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-aft\
    er\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\
    \x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser\
    -agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\
    \x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\
    \x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\
    \x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\
    \x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin100101\
    201202205206300302303304305306307402405406407408409410411412413414415416\
    417502504505203 Non-Authoritative Information204 No Content301 Moved Per\
    manently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Int\
    ernal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar \
    Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, S\
    at, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/\
    xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-ag\
    e=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Adler-32 of [`DICTIONARY`]: the dictionary id in the zlib header.
const DICTIONARY_ID: u32 = adler32(DICTIONARY);

/// zlib header for our outgoing header stream: deflate, 32 KiB window,
/// FDICT set, FLEVEL 0, FCHECK chosen so the 16-bit header is divisible by 31.
const ZLIB_HEADER: [u8; 2] = {
    let cmf: u16 = 0x78;
    let flg: u16 = 0x20;
    let fcheck = (31 - ((cmf << 8) | flg) % 31) % 31;
    [cmf as u8, (flg | fcheck) as u8]
};

const fn adler32(data: &[u8]) -> u32 {
    let mut a: u32 = 1;
    let mut b: u32 = 0;
    let mut i = 0;
    while i < data.len() {
        a = (a + data[i] as u32) % 65521;
        b = (b + a) % 65521;
        i += 1;
    }
    (b << 16) | a
}

const VERSION: u16 = 3;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Largest DATA payload this side sends; bigger writes are split.
pub const MAX_DATA_FRAME_PAYLOAD: usize = 16 * 1024;
/// Largest frame payload accepted from the peer. The 24-bit length field
/// cannot exceed this; the check is kept as an explicit bound.
pub const MAX_FRAME_PAYLOAD: usize = 16 * 1024 * 1024;
/// Largest decompressed name/value block accepted from the peer.
pub const MAX_HEADER_BLOCK: usize = 1024 * 1024;
/// DATA frames that may wait in the write queue before writers are paused.
pub const MAX_QUEUED_DATA_FRAMES: usize = 64;

/// Bytes collected from the queue before one transport write.
const WRITE_BATCH: usize = 64 * 1024;
/// How long the writer gets to deliver GOAWAY after a protocol error.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// `RST_STREAM` status codes (SPDY/3 section 2.6.3).
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_UNSUPPORTED_VERSION: u32 = 4;
pub const RST_CANCEL: u32 = 5;
pub const RST_INTERNAL_ERROR: u32 = 6;

/// `GOAWAY` status codes (SPDY/3 section 2.6.6).
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
pub const GOAWAY_INTERNAL_ERROR: u32 = 2;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("spdy: transport error: {0}")]
    Io(#[from] io::Error),
    #[error("spdy: connection closed in the middle of a frame")]
    Truncated,
    #[error("spdy: frame payload of {0} bytes exceeds the limit")]
    FrameTooLarge(usize),
    #[error("spdy: protocol error: {0}")]
    Protocol(String),
    #[error("spdy: bad header block: {0}")]
    HeaderBlock(String),
}

impl Error {
    /// Errors caused by what the peer sent (the connection itself still works).
    fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Error::FrameTooLarge(_) | Error::Protocol(_) | Error::HeaderBlock(_)
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn session_gone() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "spdy session closed")
}

// ---------------------------------------------------------------------------
// Shared state

/// Commands for the writer; each becomes one frame.
enum Cmd {
    SynReply {
        id: u32,
    },
    Data {
        id: u32,
        data: Bytes,
        fin: bool,
        // Released once the frame is copied into the write buffer.
        _permit: Option<OwnedSemaphorePermit>,
    },
    Rst {
        id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    /// Written last: the writer shuts the transport down after it.
    GoAway {
        last_good: u32,
        status: u32,
    },
}

struct Shared {
    tx: mpsc::UnboundedSender<Cmd>,
    streams: Mutex<HashMap<u32, Arc<StreamShared>>>,
    permits: Arc<Semaphore>,
    /// Set by close() / GOAWAY on error / termination: no new streams or writes.
    closed: AtomicBool,
    /// Highest stream id handed to the application (for GOAWAY).
    last_accepted: AtomicU32,
}

impl Shared {
    fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok()
    }

    fn go_away(&self, status: u32) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let last_good = self.last_accepted.load(Ordering::SeqCst);
        debug!(last_good, status, "spdy: sending GOAWAY");
        self.send(Cmd::GoAway { last_good, status });
    }

    fn stream(&self, id: u32) -> Option<Arc<StreamShared>> {
        lock(&self.streams).get(&id).cloned()
    }

    /// The session is over: fail every stream and wake its reader.
    fn terminate(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.permits.close();
        let streams: Vec<_> = lock(&self.streams).drain().map(|(_, s)| s).collect();
        for s in streams {
            let waker = {
                let mut st = lock(&s.state);
                st.session_gone = true;
                st.read_waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

struct StreamShared {
    id: u32,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    recv: VecDeque<Bytes>,
    remote_fin: bool,
    local_fin: bool,
    reset: bool,
    session_gone: bool,
    read_waker: Option<Waker>,
}

impl StreamShared {
    /// Apply a change to the state and wake the reader.
    fn update(&self, f: impl FnOnce(&mut StreamState)) {
        let waker = {
            let mut st = lock(&self.state);
            f(&mut st);
            st.read_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Reset from our side: send RST_STREAM unless the stream is already
    /// reset or closed in both directions.
    fn reset(&self, session: &Shared, status: u32) {
        let send = {
            let mut st = lock(&self.state);
            if st.reset || st.session_gone || (st.local_fin && st.remote_fin) {
                false
            } else {
                st.reset = true;
                st.recv.clear();
                true
            }
        };
        if send {
            debug!(stream = self.id, status, "spdy: resetting stream");
            session.send(Cmd::Rst {
                id: self.id,
                status,
            });
            lock(&session.streams).remove(&self.id);
            self.update(|_| {});
        }
    }
}

// ---------------------------------------------------------------------------
// Public API

/// A SPDY/3.1 server session over `T`. Create with [`Session::new`], then
/// drive [`Session::run`].
pub struct Session<T> {
    io: T,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    incoming: mpsc::UnboundedSender<Stream>,
}

/// Streams opened by the peer, in arrival order.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Stream>,
    shared: Arc<Shared>,
}

/// Cloneable control handle for a session.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

/// One peer-initiated stream. Reads yield the peer's DATA; writes become DATA
/// frames; `shutdown` sends FIN.
pub struct Stream {
    shared: Arc<StreamShared>,
    session: Arc<Shared>,
    headers: Vec<(String, String)>,
    acquire: Option<Pin<Box<AcquireFuture>>>,
}

type AcquireFuture = dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync;

impl<T> Session<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wrap a connection. Nothing happens until [`Session::run`] is driven.
    pub fn new(io: T) -> (Session<T>, Incoming) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            tx,
            streams: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(MAX_QUEUED_DATA_FRAMES)),
            closed: AtomicBool::new(false),
            last_accepted: AtomicU32::new(0),
        });
        let session = Session {
            io,
            shared: shared.clone(),
            rx,
            incoming: incoming_tx,
        };
        let incoming = Incoming {
            rx: incoming_rx,
            shared,
        };
        (session, incoming)
    }

    /// A handle to close the session or reset streams.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            shared: self.shared.clone(),
        }
    }

    /// Drive the session until the connection ends. Resolves `Ok(())` when
    /// the peer closes the connection or after [`SessionHandle::close`], and
    /// `Err` on transport errors or a malformed frame. When it returns, the
    /// transport has been dropped, [`Incoming`] ends and every stream fails.
    pub async fn run(self) -> Result<(), Error> {
        let Session {
            io,
            shared,
            rx,
            incoming,
        } = self;
        let (rd, wr) = tokio::io::split(io);
        let reader = FrameReader {
            rd: BufReader::new(rd),
            decoder: HeaderDecoder::new(),
            shared: shared.clone(),
            incoming: Some(incoming),
            last_id: 0,
        }
        .run();
        let writer = write_loop(wr, rx);
        tokio::pin!(reader);
        tokio::pin!(writer);
        let result = tokio::select! {
            res = &mut reader => match res {
                Ok(()) => {
                    debug!("spdy: peer closed the connection");
                    Ok(())
                }
                Err(err) => {
                    if err.is_peer_fault() {
                        warn!(error = %err, "spdy: closing session after protocol error");
                        shared.go_away(GOAWAY_PROTOCOL_ERROR);
                        // Best effort: let the writer deliver GOAWAY.
                        let _ = tokio::time::timeout(GOAWAY_GRACE, &mut writer).await;
                    } else {
                        debug!(error = %err, "spdy: read side failed");
                    }
                    Err(err)
                }
            },
            res = &mut writer => {
                if let Err(err) = &res {
                    debug!(error = %err, "spdy: write side failed");
                }
                res
            }
        };
        shared.terminate();
        result
    }
}

impl Incoming {
    /// The next stream opened by the peer; `None` once the session ended or
    /// the peer sent GOAWAY (streams already accepted keep working).
    pub async fn recv(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }

    /// A handle to close the session or reset streams.
    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            shared: self.shared.clone(),
        }
    }
}

impl SessionHandle {
    /// Close the session: frames already queued are written, then
    /// `GOAWAY(OK)`, then the transport is shut down and [`Session::run`]
    /// returns `Ok`. New streams are refused and stream writes fail from now
    /// on. Idempotent; does not wait.
    pub fn close(&self) {
        self.shared.go_away(GOAWAY_OK);
    }

    /// Send `RST_STREAM` with `status` (e.g. [`RST_CANCEL`]) for an open
    /// stream; see [`Stream::reset`]. Unknown or finished ids are ignored.
    pub fn reset_stream(&self, id: u32, status: u32) {
        if let Some(s) = self.shared.stream(id) {
            s.reset(&self.shared, status);
        }
    }

    /// True once [`close`](Self::close) was called or the session ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

impl Stream {
    /// The stream id (odd: opened by the client).
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The `SYN_STREAM` headers. Names are lower-case; a value holding several
    /// NUL-separated values appears as several entries with the same name.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Abort the stream with `RST_STREAM(CANCEL)`: pending reads and all
    /// further reads and writes fail with `ConnectionReset`.
    pub fn reset(&self) {
        self.reset_with_status(RST_CANCEL);
    }

    /// Like [`reset`](Self::reset) with an explicit status code.
    pub fn reset_with_status(&self, status: u32) {
        self.shared.reset(&self.session, status);
    }

    /// A handle to the session this stream belongs to.
    pub fn session(&self) -> SessionHandle {
        SessionHandle {
            shared: self.session.clone(),
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        let st = lock(&self.shared.state);
        if st.reset {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "spdy stream was reset",
            ))
        } else if st.local_fin {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "spdy stream already shut down for writing",
            ))
        } else if st.session_gone || self.session.closed.load(Ordering::SeqCst) {
            Err(session_gone())
        } else {
            Ok(())
        }
    }

    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedSemaphorePermit>> {
        let fut = match &mut self.acquire {
            Some(fut) => fut,
            None => match self.session.permits.clone().try_acquire_owned() {
                Ok(permit) => return Poll::Ready(Ok(permit)),
                Err(TryAcquireError::Closed) => return Poll::Ready(Err(session_gone())),
                Err(TryAcquireError::NoPermits) => self
                    .acquire
                    .insert(Box::pin(self.session.permits.clone().acquire_owned())),
            },
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => {
                self.acquire = None;
                Poll::Ready(res.map_err(|_| session_gone()))
            }
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.shared.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.shared.state);
        if let Some(front) = st.recv.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                st.recv.pop_front();
            }
            return Poll::Ready(Ok(()));
        }
        // A read side that already ended cleanly stays at EOF.
        if st.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if st.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "spdy stream was reset",
            )));
        }
        if st.session_gone {
            return Poll::Ready(Err(session_gone()));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(err) = this.check_writable() {
            this.acquire = None;
            return Poll::Ready(Err(err));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let permit = match this.poll_permit(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(res) => res?,
        };
        // The stream may have been reset while we waited for the permit.
        this.check_writable()?;
        let n = buf.len().min(MAX_DATA_FRAME_PAYLOAD);
        let cmd = Cmd::Data {
            id: this.shared.id,
            data: Bytes::copy_from_slice(&buf[..n]),
            fin: false,
            _permit: Some(permit),
        };
        if !this.session.send(cmd) {
            return Poll::Ready(Err(session_gone()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are already queued to the session writer, which flushes the
        // transport after every batch.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut st = lock(&this.shared.state);
            if st.local_fin {
                return Poll::Ready(Ok(()));
            }
            if st.reset {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "spdy stream was reset",
                )));
            }
            if st.session_gone || this.session.closed.load(Ordering::SeqCst) {
                return Poll::Ready(Err(session_gone()));
            }
            st.local_fin = true;
        }
        this.acquire = None;
        let cmd = Cmd::Data {
            id: this.shared.id,
            data: Bytes::new(),
            fin: true,
            _permit: None,
        };
        if !this.session.send(cmd) {
            return Poll::Ready(Err(session_gone()));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let abandon = {
            let st = lock(&self.shared.state);
            !st.local_fin && !st.reset && !st.session_gone
        };
        if abandon {
            // Never leave the peer waiting for a FIN that will not come.
            self.shared.reset(&self.session, RST_CANCEL);
        }
        lock(&self.session.streams).remove(&self.shared.id);
    }
}

// ---------------------------------------------------------------------------
// Reading

struct FrameReader<R> {
    rd: BufReader<R>,
    decoder: HeaderDecoder,
    shared: Arc<Shared>,
    /// Dropped on GOAWAY from the peer so that `Incoming` ends.
    incoming: Option<mpsc::UnboundedSender<Stream>>,
    /// Highest stream id seen in a SYN_STREAM.
    last_id: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    async fn run(mut self) -> Result<(), Error> {
        let mut head = [0u8; 8];
        loop {
            if !self.read_head(&mut head).await? {
                return Ok(());
            }
            let w0 = be32(&head, 0);
            let w1 = be32(&head, 4);
            let flags = (w1 >> 24) as u8;
            let len = (w1 & 0x00ff_ffff) as usize;
            if len > MAX_FRAME_PAYLOAD {
                return Err(Error::FrameTooLarge(len));
            }
            let control = w0 & 0x8000_0000 != 0;
            let version = ((w0 >> 16) & 0x7fff) as u16;
            // Reject before waiting for a payload whose length is garbage too.
            if control && version != VERSION {
                return Err(protocol(format!("unsupported SPDY version {version}")));
            }
            let payload = self.read_payload(len).await?;
            if control {
                self.on_control((w0 & 0xffff) as u16, flags, payload)?;
            } else {
                self.on_data(w0 & 0x7fff_ffff, flags, payload)?;
            }
        }
    }

    /// Read the 8-byte frame header. `Ok(false)` on a clean EOF before it.
    async fn read_head(&mut self, head: &mut [u8; 8]) -> Result<bool, Error> {
        let mut got = 0;
        while got < head.len() {
            let n = self.rd.read(&mut head[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(false)
                } else {
                    Err(Error::Truncated)
                };
            }
            got += n;
        }
        Ok(true)
    }

    /// Read `len` payload bytes, growing the buffer only as data arrives.
    async fn read_payload(&mut self, len: usize) -> Result<Bytes, Error> {
        let mut payload = BytesMut::with_capacity(len.min(64 * 1024));
        while payload.len() < len {
            let want = len - payload.len();
            payload.reserve(want.min(64 * 1024));
            let n = (&mut self.rd)
                .take(want as u64)
                .read_buf(&mut payload)
                .await?;
            if n == 0 {
                return Err(Error::Truncated);
            }
        }
        Ok(payload.freeze())
    }

    fn on_control(&mut self, kind: u16, flags: u8, p: Bytes) -> Result<(), Error> {
        match kind {
            TYPE_SYN_STREAM => self.on_syn_stream(flags, &p),
            TYPE_SYN_REPLY => {
                // We never open streams; inflate anyway so the shared zlib
                // context stays in step with the peer's compressor.
                if p.len() < 4 {
                    return Err(protocol("short SYN_REPLY"));
                }
                parse_name_value_block(&self.decoder.decode(&p[4..])?)?;
                trace!(
                    stream = be32(&p, 0) & 0x7fff_ffff,
                    "spdy: ignoring SYN_REPLY"
                );
                Ok(())
            }
            TYPE_RST_STREAM => {
                if p.len() != 8 {
                    return Err(protocol("RST_STREAM length is not 8"));
                }
                let id = be32(&p, 0) & 0x7fff_ffff;
                let status = be32(&p, 4);
                debug!(stream = id, status, "spdy: peer reset stream");
                if let Some(s) = lock(&self.shared.streams).remove(&id) {
                    s.update(|st| st.reset = true);
                }
                Ok(())
            }
            TYPE_PING => {
                if p.len() != 4 {
                    return Err(protocol("PING length is not 4"));
                }
                let id = be32(&p, 0);
                // Odd ids are the client's pings; even ids would be answers to
                // pings of ours, and we send none.
                if id % 2 == 1 {
                    self.shared.send(Cmd::Ping { id });
                }
                Ok(())
            }
            TYPE_GOAWAY => {
                if p.len() < 4 {
                    return Err(protocol("short GOAWAY"));
                }
                debug!(
                    last_good = be32(&p, 0) & 0x7fff_ffff,
                    "spdy: peer sent GOAWAY; no new streams"
                );
                self.incoming = None;
                Ok(())
            }
            TYPE_HEADERS => {
                if p.len() < 4 {
                    return Err(protocol("short HEADERS"));
                }
                parse_name_value_block(&self.decoder.decode(&p[4..])?)?;
                let id = be32(&p, 0) & 0x7fff_ffff;
                if flags & FLAG_FIN != 0 {
                    if let Some(s) = self.shared.stream(id) {
                        s.update(|st| st.remote_fin = true);
                    }
                }
                Ok(())
            }
            TYPE_SETTINGS | TYPE_WINDOW_UPDATE => Ok(()),
            other => {
                trace!(kind = other, "spdy: ignoring unknown control frame");
                Ok(())
            }
        }
    }

    fn on_syn_stream(&mut self, flags: u8, p: &[u8]) -> Result<(), Error> {
        if p.len() < 10 {
            return Err(protocol("short SYN_STREAM"));
        }
        let id = be32(p, 0) & 0x7fff_ffff;
        // Always inflate, even for streams we refuse: the zlib context is
        // shared by all header blocks of the session.
        let headers = parse_name_value_block(&self.decoder.decode(&p[10..])?)?;
        if id == 0 {
            return Err(protocol("SYN_STREAM with stream id 0"));
        }
        if id.is_multiple_of(2) || id <= self.last_id {
            warn!(stream = id, last = self.last_id, "spdy: invalid stream id");
            self.shared.send(Cmd::Rst {
                id,
                status: RST_PROTOCOL_ERROR,
            });
            return Ok(());
        }
        self.last_id = id;
        let accepting = !self.shared.closed.load(Ordering::SeqCst)
            && self.incoming.as_ref().is_some_and(|tx| !tx.is_closed());
        if !accepting {
            debug!(stream = id, "spdy: refusing stream");
            self.shared.send(Cmd::Rst {
                id,
                status: RST_REFUSED_STREAM,
            });
            return Ok(());
        }
        let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
        let shared = Arc::new(StreamShared {
            id,
            state: Mutex::new(StreamState {
                remote_fin: flags & FLAG_FIN != 0,
                local_fin: unidirectional,
                ..StreamState::default()
            }),
        });
        lock(&self.shared.streams).insert(id, shared.clone());
        self.shared.last_accepted.store(id, Ordering::SeqCst);
        debug!(stream = id, ?headers, "spdy: new stream");
        // Queue the reply before anyone can write on the stream.
        if !unidirectional {
            self.shared.send(Cmd::SynReply { id });
        }
        let stream = Stream {
            shared,
            session: self.shared.clone(),
            headers,
            acquire: None,
        };
        if let Some(tx) = &self.incoming {
            // If the receiver vanished meanwhile, dropping the stream resets it.
            let _ = tx.send(stream);
        }
        Ok(())
    }

    fn on_data(&mut self, id: u32, flags: u8, data: Bytes) -> Result<(), Error> {
        if id == 0 {
            return Err(protocol("DATA frame with stream id 0"));
        }
        let Some(s) = self.shared.stream(id) else {
            trace!(
                stream = id,
                len = data.len(),
                "spdy: DATA for unknown stream dropped"
            );
            return Ok(());
        };
        s.update(|st| {
            if st.reset || st.remote_fin {
                trace!(stream = id, "spdy: DATA after FIN/RST dropped");
                return;
            }
            if !data.is_empty() {
                st.recv.push_back(data);
            }
            if flags & FLAG_FIN != 0 {
                st.remote_fin = true;
            }
        });
        Ok(())
    }
}

/// Inflates the peer's header blocks: one zlib stream for the whole session,
/// each block ending on a sync flush.
struct HeaderDecoder {
    z: Decompress,
    dictionary_set: bool,
}

impl HeaderDecoder {
    fn new() -> Self {
        HeaderDecoder {
            z: Decompress::new(true),
            dictionary_set: false,
        }
    }

    fn decode(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let bad = |msg: String| Error::HeaderBlock(msg);
        let mut out = Vec::with_capacity((input.len() * 4).clamp(256, MAX_HEADER_BLOCK));
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(bad(format!(
                        "inflates to more than {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve_exact(out.len().min(MAX_HEADER_BLOCK - out.len()));
            }
            let in_before = self.z.total_in();
            let out_before = out.len();
            let res = self
                .z
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.z.total_in() - in_before)
                .map_err(|_| bad("inflater accounting overflow".into()))?;
            pos = pos.saturating_add(consumed).min(input.len());
            match res {
                Ok(Status::StreamEnd) => {
                    if pos < input.len() {
                        return Err(bad("data after the end of the zlib stream".into()));
                    }
                    return Ok(out);
                }
                Ok(Status::Ok) | Ok(Status::BufError) => {
                    if pos == input.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if consumed == 0 && out.len() == out_before && out.len() < out.capacity() {
                        return Err(bad("inflater made no progress".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.z
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| bad(format!("dictionary rejected: {e}")))?;
                    self.dictionary_set = true;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
        }
    }
}

/// Parse a SPDY/3 name/value block: u32 count, then (u32 len, name, u32 len,
/// value) pairs. Names are lower-cased; NUL-separated values are split.
fn parse_name_value_block(block: &[u8]) -> Result<Vec<(String, String)>, Error> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
        if b.len() < n {
            return Err(Error::HeaderBlock("truncated name/value block".into()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn take_u32(b: &mut &[u8]) -> Result<usize, Error> {
        let raw = take(b, 4)?;
        Ok(be32(raw, 0) as usize)
    }
    let mut b = block;
    let count = take_u32(&mut b)?;
    // Every entry needs at least 8 bytes; don't trust the count otherwise.
    if count > b.len() / 8 {
        return Err(Error::HeaderBlock(format!("{count} headers do not fit")));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_u32(&mut b)?;
        let name = String::from_utf8_lossy(take(&mut b, n)?).to_ascii_lowercase();
        let n = take_u32(&mut b)?;
        let value = take(&mut b, n)?;
        for v in value.split(|&c| c == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    if !b.is_empty() {
        return Err(Error::HeaderBlock(
            "trailing bytes after name/value block".into(),
        ));
    }
    Ok(headers)
}

// ---------------------------------------------------------------------------
// Writing

/// Serialize a name/value block (uncompressed). Values are written as given.
fn encode_name_value_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32(headers.len() as u32);
    for (name, value) in headers {
        out.put_u32(name.len() as u32);
        out.put_slice(name.to_ascii_lowercase().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out
}

/// Our side of the header compression context: a zlib stream (header naming
/// the SPDY dictionary) made of stored deflate blocks, never final, each
/// header block closed by an empty stored block (the sync-flush marker) so
/// every block is a complete, byte-aligned continuation that any inflater,
/// Go's included, can emit in full without looking past the frame.
#[derive(Default)]
struct HeaderEncoder {
    started: bool,
}

impl HeaderEncoder {
    fn encode(&mut self, block: &[u8], out: &mut BytesMut) {
        if !self.started {
            out.put_slice(&ZLIB_HEADER);
            out.put_u32(DICTIONARY_ID);
            self.started = true;
        }
        for chunk in block.chunks(0xffff) {
            let len = chunk.len() as u16;
            out.put_u8(0x00); // BFINAL = 0, BTYPE = 00 (stored), pad to byte
            out.put_u16_le(len);
            out.put_u16_le(!len);
            out.put_slice(chunk);
        }
        out.put_slice(&SYNC_FLUSH_MARKER);
    }
}

/// An empty, non-final stored block: what a zlib sync flush ends with.
const SYNC_FLUSH_MARKER: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

fn put_control_head(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// Append `cmd` as one frame. Returns true for the final GOAWAY.
fn encode_cmd(cmd: Cmd, headers: &mut HeaderEncoder, out: &mut BytesMut) -> bool {
    match cmd {
        Cmd::SynReply { id } => {
            let mut block = BytesMut::new();
            headers.encode(&encode_name_value_block(&[]), &mut block);
            put_control_head(out, TYPE_SYN_REPLY, 0, 4 + block.len());
            out.put_u32(id & 0x7fff_ffff);
            out.put_slice(&block);
            false
        }
        Cmd::Data { id, data, fin, .. } => {
            let flags = if fin { FLAG_FIN } else { 0 };
            out.put_u32(id & 0x7fff_ffff);
            out.put_u32((u32::from(flags) << 24) | (data.len() as u32 & 0x00ff_ffff));
            out.put_slice(&data);
            false
        }
        Cmd::Rst { id, status } => {
            put_control_head(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(id & 0x7fff_ffff);
            out.put_u32(status);
            false
        }
        Cmd::Ping { id } => {
            put_control_head(out, TYPE_PING, 0, 4);
            out.put_u32(id);
            false
        }
        Cmd::GoAway { last_good, status } => {
            put_control_head(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good & 0x7fff_ffff);
            out.put_u32(status);
            true
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) -> Result<(), Error> {
    let mut headers = HeaderEncoder::default();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH + MAX_DATA_FRAME_PAYLOAD + 64);
    while let Some(cmd) = rx.recv().await {
        let mut last = encode_cmd(cmd, &mut headers, &mut buf);
        while !last && buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(cmd) => last = encode_cmd(cmd, &mut headers, &mut buf),
                Err(_) => break,
            }
        }
        wr.write_all(&buf).await?;
        buf.clear();
        wr.flush().await?;
        if last {
            if let Err(err) = wr.shutdown().await {
                debug!(error = %err, "spdy: shutting down transport failed");
            }
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use tokio::io::{duplex, DuplexStream};
    use tokio::task::JoinHandle;

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("timed out")
    }

    #[derive(Debug, PartialEq)]
    enum Frame {
        Control {
            kind: u16,
            flags: u8,
            payload: Vec<u8>,
        },
        Data {
            id: u32,
            flags: u8,
            payload: Vec<u8>,
        },
    }

    fn nv_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let mut nv = Vec::new();
        nv.put_u32(headers.len() as u32);
        for (n, v) in headers {
            nv.put_u32(n.len() as u32);
            nv.put_slice(n.as_bytes());
            nv.put_u32(v.len() as u32);
            nv.put_slice(v.as_bytes());
        }
        nv
    }

    /// zlib inflate of a stream with the SPDY dictionary, independent of
    /// `HeaderDecoder`: what Go's `zlib.NewReaderDict` does.
    struct Inflater {
        z: Decompress,
    }

    impl Inflater {
        fn new() -> Self {
            Inflater {
                z: Decompress::new(true),
            }
        }

        /// Feed `input` (all of it must be consumed) and return the output.
        fn feed(&mut self, input: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(256 * 1024);
            let mut pos = 0;
            loop {
                let before = self.z.total_in();
                let res = self
                    .z
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
                pos += (self.z.total_in() - before) as usize;
                match res {
                    Ok(_) => {
                        if pos == input.len() && out.len() < out.capacity() {
                            return out;
                        }
                        out.reserve(256 * 1024);
                    }
                    Err(e) => {
                        let id = e.needs_dictionary().expect("inflate error");
                        assert_eq!(id, 0xe3c6_a7c2, "dictionary id in zlib header");
                        self.z.set_dictionary(DICTIONARY).unwrap();
                    }
                }
            }
        }
    }

    /// A peer that frames like Go's spdystream (`spdy.Framer`): header blocks
    /// compressed with zlib + dictionary, one compressor for the session,
    /// sync flush after each block.
    struct Client {
        io: DuplexStream,
        z: Compress,
        inflate: Inflater,
    }

    impl Client {
        fn new(io: DuplexStream) -> Self {
            let mut z = Compress::new(Compression::best(), true);
            assert_eq!(z.set_dictionary(DICTIONARY).unwrap(), DICTIONARY_ID);
            Client {
                io,
                z,
                inflate: Inflater::new(),
            }
        }

        fn compress(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
            let nv = nv_block(headers);
            let mut out = Vec::with_capacity(nv.len() + 64);
            let mut pos = 0;
            loop {
                let before = self.z.total_in();
                self.z
                    .compress_vec(&nv[pos..], &mut out, FlushCompress::Sync)
                    .unwrap();
                pos += (self.z.total_in() - before) as usize;
                if pos == nv.len() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(256);
            }
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
            out
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }

        async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) {
            let mut f = BytesMut::new();
            put_control_head(&mut f, kind, flags, payload.len());
            f.put_slice(payload);
            self.send(&f).await;
        }

        async fn syn_stream(&mut self, id: u32, flags: u8, headers: &[(&str, &str)]) {
            let block = self.compress(headers);
            let mut p = Vec::new();
            p.put_u32(id);
            p.put_u32(0); // associated-to
            p.put_u8(0); // priority << 5
            p.put_u8(0); // slot
            p.put_slice(&block);
            self.control(TYPE_SYN_STREAM, flags, &p).await;
        }

        async fn data(&mut self, id: u32, fin: bool, data: &[u8]) {
            let mut f = Vec::new();
            f.put_u32(id);
            f.put_u32((u32::from(fin) << 24) | data.len() as u32);
            f.put_slice(data);
            self.send(&f).await;
        }

        async fn ping(&mut self, id: u32) {
            self.control(TYPE_PING, 0, &id.to_be_bytes()).await;
        }

        async fn rst(&mut self, id: u32, status: u32) {
            let mut p = Vec::new();
            p.put_u32(id);
            p.put_u32(status);
            self.control(TYPE_RST_STREAM, 0, &p).await;
        }

        async fn read_frame(&mut self) -> Option<Frame> {
            let mut head = [0u8; 8];
            within(self.io.read_exact(&mut head)).await.ok()?;
            let w0 = be32(&head, 0);
            let w1 = be32(&head, 4);
            let mut payload = vec![0u8; (w1 & 0xff_ffff) as usize];
            within(self.io.read_exact(&mut payload)).await.unwrap();
            let flags = (w1 >> 24) as u8;
            Some(if w0 & 0x8000_0000 != 0 {
                assert_eq!((w0 >> 16) & 0x7fff, 3, "version");
                Frame::Control {
                    kind: (w0 & 0xffff) as u16,
                    flags,
                    payload,
                }
            } else {
                Frame::Data {
                    id: w0,
                    flags,
                    payload,
                }
            })
        }

        /// Expect a SYN_REPLY for `id`; returns its decoded headers.
        async fn expect_syn_reply(&mut self, id: u32) -> Vec<(String, String)> {
            match self.read_frame().await {
                Some(Frame::Control {
                    kind: TYPE_SYN_REPLY,
                    flags,
                    payload,
                }) => {
                    assert_eq!(flags, 0);
                    assert_eq!(be32(&payload, 0), id);
                    let nv = self.inflate.feed(&payload[4..]);
                    parse_name_value_block(&nv).unwrap()
                }
                other => panic!("expected SYN_REPLY for {id}, got {other:?}"),
            }
        }

        async fn expect_control(&mut self, kind: u16) -> Vec<u8> {
            match self.read_frame().await {
                Some(Frame::Control {
                    kind: k, payload, ..
                }) if k == kind => payload,
                other => panic!("expected control frame {kind}, got {other:?}"),
            }
        }

        /// Collect DATA for `id` until FIN; returns (payload sizes, bytes).
        async fn read_until_fin(&mut self, id: u32) -> (Vec<usize>, Vec<u8>) {
            let mut sizes = Vec::new();
            let mut all = Vec::new();
            loop {
                match self.read_frame().await {
                    Some(Frame::Data {
                        id: got,
                        flags,
                        payload,
                    }) => {
                        assert_eq!(got, id);
                        sizes.push(payload.len());
                        all.extend_from_slice(&payload);
                        if flags & FLAG_FIN != 0 {
                            return (sizes, all);
                        }
                    }
                    other => panic!("expected DATA on {id}, got {other:?}"),
                }
            }
        }
    }

    fn start() -> (
        Client,
        Incoming,
        SessionHandle,
        JoinHandle<Result<(), Error>>,
    ) {
        let (server_io, client_io) = duplex(1 << 20);
        let (session, incoming) = Session::new(server_io);
        let handle = session.handle();
        let task = tokio::spawn(session.run());
        (Client::new(client_io), incoming, handle, task)
    }

    fn pf_headers(kind: &'static str) -> [(&'static str, &'static str); 3] {
        [("streamtype", kind), ("port", "8080"), ("requestid", "0")]
    }

    async fn next_stream(incoming: &mut Incoming) -> Stream {
        within(incoming.recv()).await.expect("a stream")
    }

    #[test]
    fn public_types_are_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<Stream>();
        send_sync::<SessionHandle>();
        send_sync::<Incoming>();
        send_sync::<Error>();
        let (io, _peer) = duplex(64);
        let (session, _incoming) = Session::new(io);
        send(&session.run()); // spawnable
    }

    // --- header compression ------------------------------------------------

    #[test]
    fn dictionary_is_the_spdy3_dictionary() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(DICTIONARY_ID, 0xe3c6_a7c2);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
        // A real zlib deflater computes the same dictionary id.
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!(z.set_dictionary(DICTIONARY).unwrap(), DICTIONARY_ID);
        let h = u16::from_be_bytes(ZLIB_HEADER);
        assert_eq!(h % 31, 0);
        assert_eq!(ZLIB_HEADER[0] & 0x0f, 8, "deflate");
        assert_ne!(ZLIB_HEADER[1] & 0x20, 0, "FDICT");
    }

    #[test]
    fn go_style_header_blocks_decode_across_one_context() {
        let (a, _b) = duplex(64);
        let mut client = Client::new(a);
        let first = client.compress(&pf_headers("error"));
        let second = client.compress(&pf_headers("data"));
        let third = client.compress(&[("multi", "a\0b"), ("Upper", "x")]);
        // The second block refers back to the first one's text.
        assert!(second.len() < first.len());
        let mut dec = HeaderDecoder::new();
        let h1 = parse_name_value_block(&dec.decode(&first).unwrap()).unwrap();
        let h2 = parse_name_value_block(&dec.decode(&second).unwrap()).unwrap();
        let h3 = parse_name_value_block(&dec.decode(&third).unwrap()).unwrap();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(h1, pairs(&pf_headers("error")));
        assert_eq!(h2, pairs(&pf_headers("data")));
        assert_eq!(h3, pairs(&[("multi", "a"), ("multi", "b"), ("upper", "x")]));
    }

    #[test]
    fn our_header_blocks_decode_with_a_standard_inflater_byte_exactly() {
        let big = "v".repeat(70_000); // spans two stored blocks
        let blocks = [
            encode_name_value_block(&[]),
            encode_name_value_block(&[("status".into(), "200".into())]),
            encode_name_value_block(&[("big".into(), big)]),
            encode_name_value_block(&[]),
        ];
        let mut enc = HeaderEncoder::default();
        let mut inflater = Inflater::new();
        for (i, block) in blocks.iter().enumerate() {
            let mut wire = BytesMut::new();
            enc.encode(block, &mut wire);
            if i == 0 {
                assert_eq!(wire[..2], ZLIB_HEADER);
            }
            // Whole frame at once.
            assert_eq!(&inflater.feed(&wire), block);
        }
        // Byte by byte, one frame at a time: each frame's output is complete
        // once its last byte is in, and every block ends with the sync-flush
        // marker (an empty stored block). Go's compress/flate only releases a
        // stored block's data when it reaches the next block header, so the
        // marker is what lets it finish a header block inside its frame.
        let mut enc = HeaderEncoder::default();
        let mut inflater = Inflater::new();
        for block in &blocks {
            let mut wire = BytesMut::new();
            enc.encode(block, &mut wire);
            assert!(wire.ends_with(&SYNC_FLUSH_MARKER));
            let mut got = Vec::new();
            for byte in wire.iter() {
                got.extend(inflater.feed(std::slice::from_ref(byte)));
            }
            assert_eq!(&got, block);
        }
        // And our own decoder reads our own stream.
        let mut enc = HeaderEncoder::default();
        let mut dec = HeaderDecoder::new();
        for block in &blocks {
            let mut wire = BytesMut::new();
            enc.encode(block, &mut wire);
            assert_eq!(&dec.decode(&wire).unwrap(), block);
        }
    }

    #[test]
    fn name_value_parser_never_panics_on_truncation() {
        let block = nv_block(&[("streamtype", "data"), ("port", "8080")]);
        for cut in 0..block.len() {
            assert!(parse_name_value_block(&block[..cut]).is_err());
        }
        let mut huge = Vec::new();
        huge.put_u32(u32::MAX);
        assert!(parse_name_value_block(&huge).is_err());
        let mut long_name = Vec::new();
        long_name.put_u32(1);
        long_name.put_u32(u32::MAX);
        long_name.put_u32(0);
        long_name.put_u32(0);
        assert!(parse_name_value_block(&long_name).is_err());
    }

    #[test]
    fn garbage_header_block_is_an_error() {
        let mut dec = HeaderDecoder::new();
        assert!(dec.decode(b"not zlib at all").is_err());
        let mut dec = HeaderDecoder::new();
        // Valid zlib header naming a different dictionary.
        let mut wrong = vec![0x78, 0x20];
        wrong.put_u32(0x1234_5678);
        wrong.extend_from_slice(&[0, 4, 0, 0xfb, 0xff, 0, 0, 0, 0]);
        assert!(dec.decode(&wrong).is_err());
    }

    // --- session -----------------------------------------------------------

    #[tokio::test]
    async fn two_streams_headers_and_syn_reply() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("error")).await;
        client
            .syn_stream(
                3,
                0,
                &[("StreamType", "data"), ("Port", "8080"), ("RequestID", "0")],
            )
            .await;
        let s1 = next_stream(&mut incoming).await;
        let s3 = next_stream(&mut incoming).await;
        assert_eq!(s1.id(), 1);
        assert_eq!(s3.id(), 3);
        let expect = |kind: &str| -> Vec<(String, String)> {
            vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), "8080".into()),
                ("requestid".into(), "0".into()),
            ]
        };
        assert_eq!(s1.headers(), expect("error").as_slice());
        assert_eq!(s3.headers(), expect("data").as_slice());
        assert_eq!(s3.header("STREAMTYPE"), Some("data"));
        assert_eq!(s3.header("missing"), None);
        assert!(client.expect_syn_reply(1).await.is_empty());
        assert!(client.expect_syn_reply(3).await.is_empty());
    }

    #[tokio::test]
    async fn port_forward_like_exchange() {
        let (mut client, mut incoming, _h, _task) = start();
        // kubectl: create the error stream, wait for the reply, close it.
        client.syn_stream(1, 0, &pf_headers("error")).await;
        client.expect_syn_reply(1).await;
        client.data(1, true, b"").await;
        client.syn_stream(3, 0, &pf_headers("data")).await;
        client.expect_syn_reply(3).await;
        client.data(3, false, b"GET / HTTP/1.0\r\n").await;
        client.data(3, false, b"\r\n").await;
        client.data(3, true, b"").await;

        let mut err_stream = next_stream(&mut incoming).await;
        let mut data_stream = next_stream(&mut incoming).await;
        let mut buf = Vec::new();
        within(err_stream.read_to_end(&mut buf)).await.unwrap();
        assert!(buf.is_empty());
        let mut req = Vec::new();
        within(data_stream.read_to_end(&mut req)).await.unwrap();
        assert_eq!(req, b"GET / HTTP/1.0\r\n\r\n");
        // EOF is sticky.
        let mut one = [0u8; 1];
        assert_eq!(data_stream.read(&mut one).await.unwrap(), 0);

        data_stream
            .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
            .await
            .unwrap();
        data_stream.shutdown().await.unwrap();
        err_stream.shutdown().await.unwrap();
        let (_, body) = client.read_until_fin(3).await;
        assert_eq!(body, b"HTTP/1.0 200 OK\r\n\r\n");
        let (sizes, body) = client.read_until_fin(1).await;
        assert_eq!(sizes, vec![0]);
        assert!(body.is_empty());
        // Writing after shutdown fails.
        let err = data_stream.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn large_write_is_split_into_16k_frames() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        let mut s = next_stream(&mut incoming).await;
        client.expect_syn_reply(1).await;
        let payload: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        let p = payload.clone();
        let writer = tokio::spawn(async move {
            s.write_all(&p).await.unwrap();
            s.shutdown().await.unwrap();
            s
        });
        let (sizes, got) = client.read_until_fin(1).await;
        assert_eq!(got, payload);
        assert!(sizes.iter().all(|&n| n <= MAX_DATA_FRAME_PAYLOAD));
        assert_eq!(sizes.len(), 8, "7 data frames + empty FIN: {sizes:?}");
        assert_eq!(sizes.last(), Some(&0));
        within(writer).await.unwrap();
    }

    #[tokio::test]
    async fn ping_is_echoed() {
        let (mut client, _incoming, _h, _task) = start();
        client.ping(2).await; // even: an answer to a ping we never sent
        client.ping(1).await;
        client.ping(7).await;
        assert_eq!(client.expect_control(TYPE_PING).await, 1u32.to_be_bytes());
        assert_eq!(client.expect_control(TYPE_PING).await, 7u32.to_be_bytes());
    }

    #[tokio::test]
    async fn peer_rst_stream_ends_reads_and_writes() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        client.data(1, false, b"abc").await;
        client.rst(1, RST_CANCEL).await;
        let mut s = next_stream(&mut incoming).await;
        let mut buf = [0u8; 16];
        let n = within(s.read(&mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"abc");
        let err = within(s.read(&mut buf)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let err = s.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        // DATA after the reset is dropped; the session carries on.
        client.data(1, false, b"late").await;
        client.ping(3).await;
        client.expect_syn_reply(1).await;
        assert_eq!(client.expect_control(TYPE_PING).await, 3u32.to_be_bytes());
    }

    #[tokio::test]
    async fn eof_is_kept_when_rst_follows_fin() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        client.data(1, true, b"done").await;
        client.rst(1, RST_CANCEL).await;
        client.ping(1).await;
        client.expect_syn_reply(1).await;
        client.expect_control(TYPE_PING).await; // RST has been processed
        let mut s = next_stream(&mut incoming).await;
        let mut buf = Vec::new();
        within(s.read_to_end(&mut buf)).await.unwrap();
        assert_eq!(buf, b"done");
        let err = s.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn rst_wakes_a_pending_read() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        let mut s = next_stream(&mut incoming).await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            s.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        client.rst(1, RST_CANCEL).await;
        let err = within(reader).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn local_reset_and_drop_send_rst_stream() {
        let (mut client, mut incoming, handle, _task) = start();
        client.syn_stream(1, 0, &pf_headers("error")).await;
        client.syn_stream(3, 0, &pf_headers("data")).await;
        client.syn_stream(5, 0, &pf_headers("data")).await;
        client.syn_stream(7, 0, &pf_headers("data")).await;
        let mut s1 = next_stream(&mut incoming).await;
        let s3 = next_stream(&mut incoming).await;
        let mut s5 = next_stream(&mut incoming).await;
        let s7 = next_stream(&mut incoming).await;
        for id in [1, 3, 5, 7] {
            client.expect_syn_reply(id).await;
        }

        s1.reset();
        let p = client.expect_control(TYPE_RST_STREAM).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (1, RST_CANCEL));
        let err = s1.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let mut buf = [0u8; 1];
        let err = s1.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);

        drop(s3); // never shut down: the peer must not wait forever
        let p = client.expect_control(TYPE_RST_STREAM).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (3, RST_CANCEL));

        s5.shutdown().await.unwrap();
        drop(s5); // shut down properly: FIN only, no RST
        let (sizes, _) = client.read_until_fin(5).await;
        assert_eq!(sizes, vec![0]);

        handle.reset_stream(7, RST_INTERNAL_ERROR);
        let p = client.expect_control(TYPE_RST_STREAM).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (7, RST_INTERNAL_ERROR));
        drop(s7); // already reset: nothing more
        client.ping(9).await;
        assert_eq!(client.expect_control(TYPE_PING).await, 9u32.to_be_bytes());
    }

    #[tokio::test]
    async fn ignored_frames_keep_the_header_context_in_step() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("error")).await;
        // SETTINGS with one entry (max concurrent streams = 100).
        let mut settings = Vec::new();
        settings.put_u32(1);
        settings.put_u32(4);
        settings.put_u32(100);
        client.control(TYPE_SETTINGS, 0, &settings).await;
        let mut wu = Vec::new();
        wu.put_u32(1);
        wu.put_u32(65536);
        client.control(TYPE_WINDOW_UPDATE, 0, &wu).await;
        client.control(0x0a, 0, b"whatever").await; // unknown type
                                                    // HEADERS continues the compression context; it must be inflated.
        let block = client.compress(&[("x-extra", "1")]);
        let mut hp = Vec::new();
        hp.put_u32(1);
        hp.put_slice(&block);
        client.control(TYPE_HEADERS, 0, &hp).await;
        client.syn_stream(3, 0, &pf_headers("data")).await;

        let s1 = next_stream(&mut incoming).await;
        let s3 = next_stream(&mut incoming).await;
        assert_eq!(s1.header("streamtype"), Some("error"));
        assert_eq!(s3.header("streamtype"), Some("data"));
        assert_eq!(s3.header("port"), Some("8080"));
        client.expect_syn_reply(1).await;
        client.expect_syn_reply(3).await;
    }

    #[tokio::test]
    async fn invalid_stream_ids_are_refused_with_rst() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(2, 0, &pf_headers("data")).await; // even
        let p = client.expect_control(TYPE_RST_STREAM).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (2, RST_PROTOCOL_ERROR));
        client.syn_stream(5, 0, &pf_headers("data")).await;
        client.expect_syn_reply(5).await;
        client.syn_stream(3, 0, &pf_headers("data")).await; // goes backwards
        let p = client.expect_control(TYPE_RST_STREAM).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (3, RST_PROTOCOL_ERROR));
        let s = next_stream(&mut incoming).await;
        assert_eq!(s.id(), 5);
    }

    #[tokio::test]
    async fn fin_and_unidirectional_flags_on_syn_stream() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, FLAG_FIN, &pf_headers("error")).await;
        client
            .syn_stream(3, FLAG_UNIDIRECTIONAL, &pf_headers("data"))
            .await;
        let mut s1 = next_stream(&mut incoming).await;
        let mut s3 = next_stream(&mut incoming).await;
        let mut buf = Vec::new();
        within(s1.read_to_end(&mut buf)).await.unwrap();
        assert!(buf.is_empty());
        s1.write_all(b"ok").await.unwrap();
        assert!(s3.write_all(b"no").await.is_err());
        s1.shutdown().await.unwrap();
        s3.shutdown().await.unwrap();
        client.data(3, true, b"one-way").await;
        within(s3.read_to_end(&mut buf)).await.unwrap();
        assert_eq!(buf, b"one-way");
        // Only stream 1 gets a reply.
        client.expect_syn_reply(1).await;
        let (_, body) = client.read_until_fin(1).await;
        assert_eq!(body, b"ok");
    }

    #[tokio::test]
    async fn unread_stream_does_not_block_others() {
        let (mut client, mut incoming, _h, _task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        client.syn_stream(3, 0, &pf_headers("data")).await;
        let _ignored = next_stream(&mut incoming).await;
        let mut s3 = next_stream(&mut incoming).await;
        let chunk = vec![7u8; 32 * 1024];
        for _ in 0..128 {
            client.data(1, false, &chunk).await; // 4 MiB nobody reads
        }
        client.data(3, true, b"hello").await;
        let mut buf = Vec::new();
        within(s3.read_to_end(&mut buf)).await.unwrap();
        assert_eq!(buf, b"hello");
    }

    #[tokio::test]
    async fn close_sends_goaway_then_closes() {
        let (mut client, mut incoming, handle, task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        let mut s = next_stream(&mut incoming).await;
        s.write_all(b"before").await.unwrap();
        handle.close();
        assert!(handle.is_closed());
        client.expect_syn_reply(1).await;
        match client.read_frame().await {
            Some(Frame::Data { id: 1, payload, .. }) => assert_eq!(payload, b"before"),
            other => panic!("expected DATA, got {other:?}"),
        }
        let p = client.expect_control(TYPE_GOAWAY).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (1, GOAWAY_OK));
        assert_eq!(client.read_frame().await, None, "transport closed");
        within(task).await.unwrap().unwrap();
        assert!(within(incoming.recv()).await.is_none());
        let err = s.write_all(b"after").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        let mut buf = [0u8; 1];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn peer_goaway_ends_incoming_but_not_open_streams() {
        let (mut client, mut incoming, _h, task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        let mut goaway = Vec::new();
        goaway.put_u32(0);
        goaway.put_u32(GOAWAY_OK);
        client.control(TYPE_GOAWAY, 0, &goaway).await;
        let mut s = next_stream(&mut incoming).await;
        assert!(within(incoming.recv()).await.is_none());
        client.data(1, true, b"still here").await;
        let mut buf = Vec::new();
        within(s.read_to_end(&mut buf)).await.unwrap();
        assert_eq!(buf, b"still here");
        // A stream opened after GOAWAY is refused.
        client.syn_stream(3, 0, &pf_headers("data")).await;
        client.expect_syn_reply(1).await;
        let p = client.expect_control(TYPE_RST_STREAM).await;
        assert_eq!((be32(&p, 0), be32(&p, 4)), (3, RST_REFUSED_STREAM));
        // Peer hangs up: run() ends cleanly and the stream fails.
        drop(client);
        within(task).await.unwrap().unwrap();
        let err = s.write_all(b"x").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn truncated_frame_ends_session_with_error() {
        let (mut client, mut incoming, _h, task) = start();
        client.syn_stream(1, 0, &pf_headers("data")).await;
        let mut s = next_stream(&mut incoming).await;
        // DATA header promising 100 bytes, then only 10 and EOF.
        let mut f = Vec::new();
        f.put_u32(1);
        f.put_u32(100);
        f.put_slice(&[0u8; 10]);
        client.send(&f).await;
        client.io.shutdown().await.unwrap();
        let err = within(task).await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Truncated), "{err}");
        let mut buf = [0u8; 1];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(within(incoming.recv()).await.is_none());
    }

    async fn expect_protocol_failure(frame: &[u8]) -> Error {
        let (mut client, _incoming, _h, task) = start();
        client.send(frame).await;
        let err = within(task).await.unwrap().unwrap_err();
        // A protocol error is announced with GOAWAY(PROTOCOL_ERROR).
        let p = client.expect_control(TYPE_GOAWAY).await;
        assert_eq!(be32(&p, 4), GOAWAY_PROTOCOL_ERROR);
        assert_eq!(client.read_frame().await, None);
        err
    }

    #[tokio::test]
    async fn garbage_frames_end_session_with_error() {
        // SYN_STREAM whose header block is not zlib.
        let mut f = BytesMut::new();
        put_control_head(&mut f, TYPE_SYN_STREAM, 0, 10 + 8);
        f.put_u32(1);
        f.put_u32(0);
        f.put_u16(0);
        f.put_slice(b"garbage!");
        let err = expect_protocol_failure(&f).await;
        assert!(matches!(err, Error::HeaderBlock(_)), "{err}");

        // DATA on stream 0.
        let mut f = Vec::new();
        f.put_u32(0);
        f.put_u32(3);
        f.put_slice(b"abc");
        let err = expect_protocol_failure(&f).await;
        assert!(matches!(err, Error::Protocol(_)), "{err}");

        // PING with a 3-byte payload.
        let mut f = BytesMut::new();
        put_control_head(&mut f, TYPE_PING, 0, 3);
        f.put_slice(&[1, 2, 3]);
        let err = expect_protocol_failure(&f).await;
        assert!(matches!(err, Error::Protocol(_)), "{err}");

        // Control frame of another version (e.g. HTTP text read as SPDY).
        let err = expect_protocol_failure(b"\xff\xffGET / HTTP/1.1\r\n").await;
        assert!(matches!(err, Error::Protocol(_)), "{err}");

        // SYN_STREAM too short for its fixed fields.
        let mut f = BytesMut::new();
        put_control_head(&mut f, TYPE_SYN_STREAM, 0, 4);
        f.put_u32(1);
        let err = expect_protocol_failure(&f).await;
        assert!(matches!(err, Error::Protocol(_)), "{err}");
    }

    #[tokio::test]
    async fn random_bytes_never_panic() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..200 {
            let (mut client, _incoming, _h, task) = start();
            if round % 2 == 0 {
                // Start from a valid stream so the garbage hits later states.
                client.syn_stream(1, 0, &pf_headers("data")).await;
            }
            let mut junk = vec![0u8; 1 + (round * 7) % 300];
            for b in junk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if round % 3 == 0 {
                junk[0] |= 0x80; // control frame
                if let Some(b) = junk.get_mut(1) {
                    *b = 3;
                }
            }
            client.send(&junk).await;
            client.io.shutdown().await.unwrap();
            // Drain whatever the server answers so it never blocks.
            let drain = tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = client.io.read_to_end(&mut sink).await;
            });
            let res = within(task).await;
            assert!(res.is_ok(), "session task panicked");
            within(drain).await.unwrap();
        }
    }
}
