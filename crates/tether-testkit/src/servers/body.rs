//! Response bodies of the HTTP test servers: a whole small buffer, or a generated download
//! that streams any length in fixed chunks without ever holding more than one.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// Size of each data frame of a `/download` body: 64 KiB.
pub const DOWNLOAD_CHUNK_LEN: usize = 64 * 1024;

/// The content of every chunk. Chunks start at multiples of its length (a multiple of 256),
/// so byte `i` of a download is `i as u8` wherever it falls.
static PATTERN: [u8; DOWNLOAD_CHUNK_LEN] = pattern();

const fn pattern() -> [u8; DOWNLOAD_CHUNK_LEN] {
    let mut bytes = [0; DOWNLOAD_CHUNK_LEN];
    let mut i = 0;
    while i < DOWNLOAD_CHUNK_LEN {
        bytes[i] = i as u8; // wraps every 256 bytes on purpose
        i += 1;
    }
    bytes
}

/// The byte at `offset` of any `/download` body, for tests that check integrity end to end.
pub fn download_byte(offset: u64) -> u8 {
    offset as u8 // the pattern is the offset modulo 256
}

/// Body of every response the HTTP test servers send.
pub(crate) enum TestBody {
    /// A small body sent as one frame (`None` once sent).
    Full(Option<Bytes>),
    /// A generated download.
    Download(Download),
}

/// `remaining` more bytes of the pattern, one chunk at a time, each after `delay`.
pub(crate) struct Download {
    remaining: u64,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

// === impl TestBody ===

impl TestBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// `len` bytes of the download pattern, waiting `delay` before each chunk.
    pub(crate) fn download(len: u64, delay: Duration) -> Self {
        Self::Download(Download { remaining: len, delay, sleep: None })
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = match self.get_mut() {
            Self::Full(bytes) => bytes.take(),
            Self::Download(download) => ready!(download.poll_chunk(cx)),
        };
        Poll::Ready(chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Download(download) => download.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Download(download) => SizeHint::with_exact(download.remaining),
        }
    }
}

// === impl Download ===

impl Download {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        // At most DOWNLOAD_CHUNK_LEN, so the cast to usize cannot truncate.
        let len = self.remaining.min(DOWNLOAD_CHUNK_LEN as u64) as usize;
        self.remaining -= len as u64;
        Poll::Ready(Some(Bytes::from_static(&PATTERN[..len])))
    }
}
