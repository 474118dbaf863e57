//! Read buffers lent by the worker thread: a connection holds one only while bytes are
//! arriving or a request is in progress. An idle keep-alive connection gives its buffer back
//! and waits for readability with none, so it costs its task and socket and little else.

use std::cell::RefCell;

use bytes::BytesMut;

/// A buffer's size when lent: a typical request head and the start of its body in one read.
pub const READ_BUF: usize = 8 * 1024;

/// Room for one read of a large request body (the buffer is grown to it while the body
/// arrives, and not kept by the thread afterwards).
pub const BODY_READ: usize = 64 * 1024;

/// Buffers a thread keeps for its connections; more are dropped when given back.
const KEPT: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with at least [`READ_BUF`] bytes of room.
pub fn lend() -> BytesMut {
    let mut buf = FREE.with_borrow_mut(Vec::pop).unwrap_or_default();
    buf.reserve(READ_BUF);
    buf
}

/// Takes back an emptied buffer for the next connection that has bytes to read. Kept only
/// when its whole memory is free again: one still shared with a request (its head's header
/// values point into it) would make the borrower allocate a new one, and one grown for a
/// large body is not kept at all (the thread's idle buffers stay small).
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    if !reclaim(&mut buf) || buf.capacity() > 2 * READ_BUF {
        return;
    }
    FREE.with_borrow_mut(|free| {
        if free.len() < KEPT {
            free.push(buf);
        }
    });
}

/// Whether `buf` (empty) owns its memory alone and has [`READ_BUF`] bytes of room, after
/// moving its start back to the beginning of that memory if needed. Never allocates.
pub fn reclaim(buf: &mut BytesMut) -> bool {
    buf.try_reclaim(READ_BUF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_buffer_has_room_and_comes_back_empty() {
        let mut buf = lend();
        assert!(buf.capacity() >= READ_BUF);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        give_back(buf);
        let again = lend();
        assert!(again.is_empty(), "a buffer is lent empty");
        assert!(again.capacity() >= READ_BUF);
    }

    #[test]
    fn a_buffer_grown_for_a_body_is_not_kept() {
        let before = FREE.with_borrow(Vec::len);
        give_back(BytesMut::with_capacity(BODY_READ));
        assert_eq!(FREE.with_borrow(Vec::len), before);
    }

    #[test]
    fn a_buffer_is_kept_once_its_request_is_gone() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let before = FREE.with_borrow(Vec::len);
        let mut buf = lend();
        buf.extend_from_slice(request);
        let head = buf.split().freeze();
        give_back(buf);
        assert_eq!(FREE.with_borrow(Vec::len), before, "shared with the head: not kept");
        drop(head);

        let mut buf = lend();
        let start = buf.as_ptr();
        buf.extend_from_slice(request);
        drop(buf.split().freeze());
        give_back(buf);
        assert_eq!(FREE.with_borrow(Vec::len), before + 1, "alone again: kept");
        let again = lend();
        assert_eq!(again.as_ptr(), start, "lent from the start of the same memory");
        assert!(again.capacity() >= READ_BUF);
    }

    #[test]
    fn a_buffer_with_little_room_left_is_not_kept() {
        let mut buf = BytesMut::with_capacity(READ_BUF);
        buf.extend_from_slice(&[b'x'; READ_BUF - 100]);
        let head = buf.split_to(READ_BUF - 100).freeze();
        let before = FREE.with_borrow(Vec::len);
        give_back(buf);
        assert_eq!(FREE.with_borrow(Vec::len), before, "100 bytes of room are not worth keeping");
        drop(head);
    }
}
