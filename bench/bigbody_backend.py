#!/usr/bin/env python3
"""bench/bigbody_backend.py - helpers of bench/bigbody.sh (large bodies through a proxy).

  bigbody_backend.py serve PORT [SIZE]
      HTTP/1.1 server on 127.0.0.1:PORT, one thread per connection, keep-alive:
        GET /big       200, Content-Length: SIZE (default 1 GiB), a repeating byte pattern,
                       sent with 1 MiB sendall()s
        POST /upload   reads the request body (Content-Length or chunked) with 1 MiB
                       recv_into()s, discards it, answers 200 with the byte count + "\n"
        anything else  200 "ok\n" (the body of any request is read and discarded)
      Runs until SIGTERM/SIGINT.

  bigbody_backend.py watch INTERVAL PID...
      Samples the summed VmRSS (kB) of the given processes every INTERVAL seconds until
      SIGTERM/SIGINT. Prints "started" on stdout after the first sample, and at the end
      "PEAK_KB SAMPLES". A process that is gone counts 0.
"""

import signal
import socket
import sys
import threading
import time

CHUNK = 1 << 20
MAX_HEAD = 64 * 1024


class Conn:
    """A client connection with a small read-ahead buffer for heads and chunk-size lines."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.scratch = bytearray(CHUNK)
        self.view = memoryview(self.scratch)

    def fill(self):
        n = self.sock.recv_into(self.view, CHUNK)
        if n == 0:
            return False
        self.buf += self.view[:n]
        return True

    def read_until(self, sep, limit):
        """Bytes up to and including sep, or None on EOF / limit."""
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit or not self.fill():
                return None

    def discard(self, n):
        """Read and drop exactly n bytes; returns the count actually read (< n on EOF)."""
        got = min(n, len(self.buf))
        del self.buf[:got]
        while got < n:
            r = self.sock.recv_into(self.view, min(CHUNK, n - got))
            if r == 0:
                break
            got += r
        return got

    def discard_chunked(self):
        """Read and drop a chunked body (and its trailers); returns the data byte count or None."""
        total = 0
        while True:
            line = self.read_until(b"\r\n", 4096)
            if line is None:
                return None
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while True:  # trailers, up to the empty line
                    t = self.read_until(b"\r\n", MAX_HEAD)
                    if t is None:
                        return None
                    if t == b"\r\n":
                        return total
            if self.discard(size) != size:
                return None
            total += size
            if self.read_until(b"\r\n", 16) != b"\r\n":
                return None


def respond(sock, status, body, keep):
    head = "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n" % (
        status, len(body), "" if keep else "Connection: close\r\n")
    sock.sendall(head.encode() + body)


def serve_conn(sock, size, pattern):
    c = Conn(sock)
    try:
        while True:
            head = c.read_until(b"\r\n\r\n", MAX_HEAD)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                respond(sock, "400 Bad Request", b"bad request line\n", False)
                return
            hdrs = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    hdrs[k.strip().lower()] = v.strip()
            conn_hdr = hdrs.get("connection", "").lower()
            keep = ("close" not in conn_hdr) if version == "HTTP/1.1" else ("keep-alive" in conn_hdr)
            if "chunked" in hdrs.get("transfer-encoding", "").lower():
                got = c.discard_chunked()
                if got is None:
                    return
            else:
                want = int(hdrs.get("content-length", "0") or 0)
                got = c.discard(want)
                if got != want:
                    return
            path = target.split("?", 1)[0]
            if method == "GET" and path == "/big":
                sock.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                              "Content-Length: %d\r\n%s\r\n"
                              % (size, "" if keep else "Connection: close\r\n")).encode())
                left = size
                while left >= CHUNK:
                    sock.sendall(pattern)
                    left -= CHUNK
                if left:
                    sock.sendall(pattern[:left])
            elif method == "HEAD":
                respond(sock, "200 OK", b"", keep)
            elif path == "/upload":
                respond(sock, "200 OK", b"%d\n" % got, keep)
            else:
                respond(sock, "200 OK", b"ok\n", keep)
            if not keep:
                return
    except (ConnectionError, OSError):
        return
    finally:
        try:
            sock.close()
        except OSError:
            pass


def serve(port, size):
    pattern = memoryview(bytes(range(256)) * (CHUNK // 256))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_conn, args=(s, size, pattern), daemon=True).start()


def rss_kb(pid):
    try:
        with open("/proc/%s/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def watch(interval, pids):
    state = {"peak": 0, "n": 0}

    def done(*_):
        print(state["peak"], state["n"], flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, done)
    signal.signal(signal.SIGINT, done)
    while True:
        total = sum(rss_kb(p) for p in pids)
        state["n"] += 1
        if total > state["peak"]:
            state["peak"] = total
        if state["n"] == 1:
            print("started", flush=True)
        time.sleep(interval)


def main(argv):
    if len(argv) >= 3 and argv[1] == "serve":
        serve(int(argv[2]), int(argv[3]) if len(argv) > 3 else 1 << 30)
    elif len(argv) >= 4 and argv[1] == "watch":
        watch(float(argv[2]), argv[3:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
