#!/usr/bin/env python3
"""Counting, latency-adding HTTP/1.1 reverse proxy for S3 benchmarks.

Listens on 127.0.0.1:PORT and forwards every request to an upstream S3 server
(moto) byte for byte: the request line, the header block (Host included) and the
body are written to the upstream exactly as the client sent them, and so is the
response on the way back. Nothing is re-encoded: chunked transfer encoding is
passed through with its framing, and aws-chunked / streaming-signature bodies
(Content-Encoding: aws-chunked) are just bytes. The proxy parses only as much
HTTP/1.1 framing as it needs to know where each message ends, so keep-alive
connections work (each client connection gets its own upstream connection).

Before each request is forwarded, the proxy sleeps --latency-ms (default 20):
a fixed per-request round trip, as to a real object store. Concurrent requests
wait concurrently, as they would on a network.

Requests are counted per class (path-style addressing, /BUCKET/KEY):
  LIST          GET on the service or a bucket (no key): ListObjects(V2), ?location...
  GET           GET on an object
  HEAD          any HEAD
  PUT           PUT on an object or a bucket, multipart parts (UploadPart) included
  COPY          PUT with x-amz-copy-source (CopyObject, UploadPartCopy)
  POST          any other POST (CreateMultipartUpload, CompleteMultipartUpload, ...)
  DELETE        DELETE (DeleteObject, AbortMultipartUpload, DeleteBucket)
  DELETE_BATCH  POST ?delete (DeleteObjects); the keys it names (<Key> elements in
                the body) are added to batch_keys
  OTHER         anything else
Counts also include bytes each way and the response status codes per class.

Admin endpoints, on the same port (not forwarded):
  GET  /__counts   the counts as JSON
  POST /__reset    zero the counts; answers with the counts before the reset
                   (?label=NAME writes a "#reset NAME" line into the --log file)
On SIGTERM or SIGINT the counts are written to --counts-file (if given) and the
proxy exits. --log FILE writes one line per request: class, method, target,
status, milliseconds upstream.

Fault injection (for tests, off by default): with --fault-rate R (0 to 1), that
share of forwarded requests fails in one of the --faults kinds:
  500       answered 500 InternalError without forwarding
  503       answered 503 SlowDown without forwarding (S3's throttling)
  429       answered 429 Too Many Requests without forwarding
  hang      the request is read, then nothing is answered for --hang-seconds,
            then the connection is closed (a client timeout)
  drop      the connection is closed before the request is forwarded
  lost      the request is forwarded (and applied), the answer is dropped and the
            connection closed
  truncate  the request is forwarded, the answer's head and half of its body are
            sent (Content-Length unchanged), then the connection is closed
Which requests fail is a function of --fault-seed, the method, the target and how
many times that same request was made before, so a run is reproducible whatever
order concurrent requests come in, and a retried request draws again. A faulted
connection is always closed afterwards. Counts gain "faults" per kind.

An S3-compatible store that knows only ListObjects version 1 (for tests, off by
default): with --list-v1, a listing's list-type, continuation-token,
start-after and fetch-owner parameters are dropped before it is forwarded, so
moto answers as such a store does: the first page of at most max-keys keys,
<IsTruncated>true</IsTruncated> and no continuation token (version 1's
NextMarker only with a delimiter), whatever page the client asked for. The
request's signature no longer matches its query; moto does not check it.

Standard library only (Python 3.8+).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import time
import urllib.parse

CLASSES = ["LIST", "GET", "HEAD", "PUT", "COPY", "POST", "DELETE", "DELETE_BATCH", "OTHER"]
READ_SIZE = 256 * 1024
MAX_HEAD = 1024 * 1024  # largest header block accepted


class Counts:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = {c: 0 for c in CLASSES}
        self.status: dict[str, dict[str, int]] = {c: {} for c in CLASSES}
        self.batch_keys = 0
        self.bytes_up = 0  # client -> upstream, heads and bodies
        self.bytes_down = 0  # upstream -> client
        self.client_connections = 0
        self.upstream_ms_sum = 0.0  # time the upstream took, latency excluded
        self.upstream_ms_max = 0.0
        self.upstream_connections = 0
        self.faults: dict[str, int] = {}
        self.since = time.time()

    def snapshot(self) -> dict:
        return {
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "batch_keys": self.batch_keys,
            "status": {c: dict(s) for c, s in self.status.items() if s},
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "client_connections": self.client_connections,
            "upstream_connections": self.upstream_connections,
            "faults": dict(self.faults),
            "upstream_ms_mean": round(self.upstream_ms_sum / max(1, sum(self.requests.values())), 2),
            "upstream_ms_max": round(self.upstream_ms_max, 2),
            "since": self.since,
            "seconds": round(time.time() - self.since, 3),
        }


class ProtocolError(Exception):
    pass


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Splits a header block into its start line and (name, value) pairs."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    start = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line!r}")
        headers.append((name.strip().lower(), value.strip()))
    return start, headers


V2_ONLY_PARAMS = {"list-type", "continuation-token", "start-after", "fetch-owner"}


def as_list_v1(target: str) -> str:
    """A ListObjectsV2 request target as a version-1-only store reads it."""
    parsed = urllib.parse.urlsplit(target)
    pairs = [(k, v) for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True) if k not in V2_ONLY_PARAMS]
    query = urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote, safe="-_.~")
    return urllib.parse.urlunsplit(("", "", parsed.path, query, ""))


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def is_chunked(headers: list[tuple[str, str]]) -> bool:
    te = ",".join(v for n, v in headers if n == "transfer-encoding")
    codings = [c.strip().lower() for c in te.split(",") if c.strip()]
    return bool(codings) and codings[-1] == "chunked"


def content_length(headers: list[tuple[str, str]]) -> int | None:
    v = header(headers, "content-length")
    if v is None:
        return None
    try:
        n = int(v.split(",")[0].strip())
    except ValueError as e:
        raise ProtocolError(f"bad Content-Length {v!r}") from e
    if n < 0:
        raise ProtocolError(f"bad Content-Length {v!r}")
    return n


def classify(method: str, target: str, headers: list[tuple[str, str]]) -> str:
    parsed = urllib.parse.urlsplit(target)
    path = parsed.path if not parsed.scheme else parsed.path  # absolute-form too
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    # Path-style: /BUCKET or /BUCKET/ is bucket level; /BUCKET/KEY... is an object.
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    m = method.upper()
    if m == "GET":
        return "GET" if has_key else "LIST"
    if m == "HEAD":
        return "HEAD"
    if m == "PUT":
        return "COPY" if header(headers, "x-amz-copy-source") is not None else "PUT"
    if m == "POST":
        return "DELETE_BATCH" if "delete" in query else "POST"
    if m == "DELETE":
        return "DELETE"
    return "OTHER"


class KeyCounter:
    """Counts b"<Key>" in a byte stream that arrives in pieces."""

    TAG = b"<Key>"

    def __init__(self) -> None:
        self.count = 0
        self.tail = b""

    def feed(self, data: bytes) -> None:
        buf = self.tail + data
        self.count += buf.count(self.TAG)
        # Keep enough to catch a tag split across pieces, but never a whole tag.
        self.tail = buf[-(len(self.TAG) - 1):] if len(buf) >= len(self.TAG) - 1 else buf


FAULT_KINDS = ["500", "503", "429", "hang", "drop", "lost", "truncate"]

ERROR_ANSWERS = {
    "500": ("500 Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "503": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
    "429": ("429 Too Many Requests", "TooManyRequests", "Too many requests."),
}


class NullWriter:
    """A sink with the StreamWriter calls the pumps use."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


class Faults:
    """Seeded per-request fault decisions (see the module doc)."""

    def __init__(self, rate: float, seed: int, kinds: list[str], hang: float) -> None:
        self.rate = rate
        self.seed = seed
        self.kinds = kinds
        self.hang = hang
        self.seen: dict[str, int] = {}

    def draw(self, method: str, target: str) -> str | None:
        if self.rate <= 0 or not self.kinds:
            return None
        key = f"{method} {target}"
        n = self.seen.get(key, 0) + 1
        self.seen[key] = n
        h = hashlib.sha256(f"{self.seed}\0{key}\0{n}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2.0 ** 64
        if u >= self.rate:
            return None
        return self.kinds[int.from_bytes(h[8:16], "big") % len(self.kinds)]


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int, latency: float, log_path: str | None,
                 keepalive: bool = True, faults: Faults | None = None, list_v1: bool = False) -> None:
        self.faults = faults
        self.list_v1 = list_v1
        self.keepalive = keepalive
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.latency = latency
        self.counts = Counts()
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.connections: set[asyncio.Task] = set()

    # ---- framing helpers -------------------------------------------------

    @staticmethod
    async def read_head(reader: asyncio.StreamReader) -> bytes | None:
        """Reads one header block (through the blank line); None at a clean EOF."""
        try:
            return await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial.strip():
                return None
            raise ProtocolError("connection closed inside a header block") from e
        except asyncio.LimitOverrunError as e:
            raise ProtocolError("header block too large") from e

    @staticmethod
    async def pump_length(reader, writer, n: int, sink=None) -> int:
        left = n
        while left > 0:
            data = await reader.read(min(READ_SIZE, left))
            if not data:
                raise ProtocolError(f"connection closed with {left} body bytes to go")
            left -= len(data)
            if sink:
                sink(data)
            writer.write(data)
            await writer.drain()
        return n

    @staticmethod
    async def pump_chunked(reader, writer, sink=None) -> int:
        """Copies a chunked body, framing and trailers included, unchanged."""
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            total += len(line)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as e:
                raise ProtocolError(f"bad chunk size {line!r}") from e
            if size == 0:
                # Trailer fields, then the blank line.
                while True:
                    t = await reader.readuntil(b"\r\n")
                    writer.write(t)
                    total += len(t)
                    if t == b"\r\n":
                        await writer.drain()
                        return total
            total += await Proxy.pump_length(reader, writer, size, sink)
            crlf = await reader.readexactly(2)
            writer.write(crlf)
            total += 2
            await writer.drain()

    @staticmethod
    async def pump_to_eof(reader, writer) -> int:
        total = 0
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                return total
            total += len(data)
            writer.write(data)
            await writer.drain()

    # ---- admin -------------------------------------------------------------

    async def admin(self, method: str, target: str, writer) -> None:
        parsed = urllib.parse.urlsplit(target)
        path = parsed.path
        if path == "/__counts" and method in ("GET", "HEAD"):
            status, body = "200 OK", self.counts.snapshot()
        elif path == "/__reset" and method == "POST":
            body = self.counts.snapshot()
            self.counts.reset()
            status = "200 OK"
            label = urllib.parse.parse_qs(parsed.query).get("label", [""])[0]
            if self.log:
                self.log.write(f"#reset\t{label}\n")
        else:
            status, body = "404 Not Found", {"error": "unknown admin path"}
        data = (json.dumps(body, indent=1) + "\n").encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + (data if method != "HEAD" else b"")
        )
        await writer.drain()

    # ---- one client connection --------------------------------------------------

    async def handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.connections.add(task)
        self.counts.client_connections += 1
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await self.read_head(creader)
                if head is None:
                    return
                start, headers = parse_head(head)
                try:
                    method, target, version = start.split(" ", 2)
                except ValueError as e:
                    raise ProtocolError(f"bad request line {start!r}") from e
                path_only = urllib.parse.urlsplit(target).path
                if path_only.startswith("/__"):
                    await self.admin(method.upper(), target, cwriter)
                    # Admin requests carry no body that matters; skip one if sent.
                    n = content_length(headers) or 0
                    if n:
                        await creader.readexactly(n)
                    continue

                cls = classify(method, target, headers)
                self.counts.requests[cls] += 1
                if self.list_v1 and cls == "LIST":
                    target = as_list_v1(target)
                    head = f"{method} {target} {version}".encode("latin-1") + head[head.index(b"\r\n"):]
                keys = KeyCounter() if cls == "DELETE_BATCH" else None
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                t0 = time.monotonic()
                fault = self.faults.draw(method.upper(), target) if self.faults else None
                if fault:
                    self.counts.faults[fault] = self.counts.faults.get(fault, 0) + 1
                    if self.log:
                        self.log.write(f"#fault\t{fault}\t{method}\t{target}\n")
                    if fault in ERROR_ANSWERS or fault == "hang":
                        await self.read_request_body(creader, headers)
                    if fault in ERROR_ANSWERS:
                        await self.answer_error(fault, cwriter)
                    elif fault == "hang":
                        await asyncio.sleep(self.faults.hang)
                    if fault not in ("lost", "truncate"):
                        return  # the connection closes (finally)

                if up is not None and up[0].at_eof():
                    up[1].close()  # the upstream closed the idle connection
                    up = None
                if up is None:
                    up = await asyncio.open_connection(self.upstream_host, self.upstream_port, limit=MAX_HEAD)
                    self.counts.upstream_connections += 1
                ureader, uwriter = up
                uwriter.write(head)
                self.counts.bytes_up += len(head)

                # Request body and response run concurrently so that an interim
                # "100 Continue" reaches a client that waits for it (Expect).
                async def send_body() -> None:
                    if is_chunked(headers):
                        n = await self.pump_chunked(creader, uwriter, keys.feed if keys else None)
                    else:
                        n = await self.pump_length(creader, uwriter, content_length(headers) or 0, keys.feed if keys else None)
                    self.counts.bytes_up += n

                body_task = asyncio.ensure_future(send_body())
                if fault:
                    # lost / truncate: the upstream applies the request; the
                    # client gets nothing, or a head and half a body
                    sink = NullWriter() if fault == "lost" else HalfWriter(cwriter)
                    try:
                        await self.relay_response(method, ureader, sink)
                    finally:
                        body_task.cancel()
                    if isinstance(sink, HalfWriter):
                        sink.flush_half()
                        await cwriter.drain()
                    return
                try:
                    status, close_after, upstream_close = await self.relay_response(method, ureader, cwriter)
                except BaseException:
                    body_task.cancel()
                    raise
                if not body_task.done():
                    # Normally the body is all sent by now (the upstream read it before
                    # answering) and the task only has to finish its bookkeeping.
                    await asyncio.wait({body_task}, timeout=1.0)
                if not body_task.done():
                    # The upstream answered before reading the whole body (an error
                    # answer to an Expect, say): the connection can't be reused.
                    body_task.cancel()
                    close_after = upstream_close = True
                else:
                    body_task.result()  # raise what it raised
                if keys:
                    self.counts.batch_keys += keys.count
                st = self.counts.status[cls]
                st[str(status)] = st.get(str(status), 0) + 1
                ms = (time.monotonic() - t0) * 1000
                self.counts.upstream_ms_sum += ms
                self.counts.upstream_ms_max = max(self.counts.upstream_ms_max, ms)
                if self.log:
                    self.log.write(f"{cls}\t{method}\t{target}\t{status}\t{ms:.1f}\n")
                if close_after or self.wants_close(version, headers):
                    return
                if upstream_close:
                    uwriter.close()
                    up = None
        except (ProtocolError, asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError) as e:
            if self.log:
                self.log.write(f"#error\t{type(e).__name__}: {e}\n")
        except asyncio.CancelledError:
            pass
        finally:
            self.connections.discard(task)
            for w in ([up[1]] if up else []) + [cwriter]:
                try:
                    w.close()
                except Exception:
                    pass

    async def read_request_body(self, creader, headers) -> None:
        """Consumes a request's body without forwarding it."""
        if is_chunked(headers):
            await self.pump_chunked(creader, NullWriter())
        else:
            await self.pump_length(creader, NullWriter(), content_length(headers) or 0)

    @staticmethod
    async def answer_error(fault: str, cwriter) -> None:
        status, code, message = ERROR_ANSWERS[fault]
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>fault</RequestId></Error>").encode()
        extra = "Retry-After: 1\r\n" if fault == "429" else ""
        cwriter.write(f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                      f"{extra}Connection: close\r\n\r\n".encode() + body)
        await cwriter.drain()

    @staticmethod
    def wants_close(version: str, headers: list[tuple[str, str]]) -> bool:
        conn = (header(headers, "connection") or "").lower()
        if "close" in conn:
            return True
        return version.strip().upper() == "HTTP/1.0" and "keep-alive" not in conn

    async def relay_response(self, method: str, ureader, cwriter) -> tuple[int, bool, bool]:
        """Copies one final response (after any 1xx) to the client.

        Returns (status, close the client connection, close the upstream one)."""
        while True:
            head = await self.read_head(ureader)
            if head is None:
                raise ProtocolError("upstream closed without answering")
            start, headers = parse_head(head)
            try:
                status = int(start.split(" ", 2)[1])
            except (IndexError, ValueError) as e:
                raise ProtocolError(f"bad status line {start!r}") from e
            if 100 <= status < 200 and status != 101:
                cwriter.write(head)  # interim response; the final one follows
                await cwriter.drain()
                self.counts.bytes_down += len(head)
                continue
            break
        upstream_close = self.wants_close(start.split(" ", 1)[0], headers)
        no_body = method.upper() == "HEAD" or status in (204, 304)
        chunked = not no_body and is_chunked(headers)
        length = None if no_body or chunked else content_length(headers)
        delimited = no_body or chunked or length is not None
        client_close = upstream_close
        if upstream_close and delimited and self.keepalive:
            # The upstream (moto's dev server) closes after every answer; the
            # client keeps its connection, as it would with a real object store,
            # and the next request goes over a new upstream connection.
            head = drop_connection_close(head)
            client_close = False
        cwriter.write(head)
        self.counts.bytes_down += len(head)
        if no_body:
            pass
        elif chunked:
            self.counts.bytes_down += await self.pump_chunked(ureader, cwriter)
        elif length is not None:
            self.counts.bytes_down += await self.pump_length(ureader, cwriter, length)
        else:
            # Delimited by the upstream closing the connection.
            self.counts.bytes_down += await self.pump_to_eof(ureader, cwriter)
            client_close = upstream_close = True
        await cwriter.drain()
        return status, client_close, upstream_close


class HalfWriter:
    """Passes the response head and then half of what follows (at least one
    byte short of it): a body cut off by a dropped connection."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.head_done = False
        self.buf = b""

    def write(self, data: bytes) -> None:
        if not self.head_done:
            self.head_done = True
            self.inner.write(data)
        else:
            self.buf += data

    async def drain(self) -> None:
        pass

    def flush_half(self) -> None:
        self.inner.write(self.buf[: len(self.buf) // 2])


def drop_connection_close(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [l for l in lines if not (l.lower().startswith(b"connection:") and b"close" in l.lower())]
    return b"\r\n".join(kept)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=9100, help="listen port on 127.0.0.1 (0: any free port) [9100]")
    ap.add_argument("--upstream", default="http://127.0.0.1:9000", help="upstream base URL [http://127.0.0.1:9000]")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added before each forwarded request [20]")
    ap.add_argument("--counts-file", help="write the counts here (JSON) on SIGTERM/SIGINT")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--log", help="append one line per request to this file")
    ap.add_argument("--pass-close", action="store_true",
                    help="pass the upstream's 'Connection: close' on to the client (default: keep the client's connection "
                         "open and reconnect upstream)")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail (see the doc) [0]")
    ap.add_argument("--fault-seed", type=int, default=0, help="seed of the fault decisions [0]")
    ap.add_argument("--faults", default=",".join(FAULT_KINDS), help=f"fault kinds to draw from [{','.join(FAULT_KINDS)}]")
    ap.add_argument("--list-v1", action="store_true",
                    help="answer listings as a ListObjects-version-1-only store (see the doc)")
    ap.add_argument("--hang-seconds", type=float, default=5.0, help="how long a 'hang' fault holds the request [5]")
    args = ap.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad:
        ap.error(f"--faults: unknown kind(s) {bad}; known: {FAULT_KINDS}")

    up = urllib.parse.urlsplit(args.upstream)
    if up.scheme != "http" or not up.hostname:
        ap.error("--upstream must be an http:// URL")
    faults = Faults(args.fault_rate, args.fault_seed, kinds, args.hang_seconds) if args.fault_rate > 0 else None
    proxy = Proxy(up.hostname, up.port or 80, args.latency_ms / 1000.0, args.log, keepalive=not args.pass_close, faults=faults,
                  list_v1=args.list_v1)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.port, limit=MAX_HEAD, backlog=512)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"proxy: 127.0.0.1:{port} -> {args.upstream}, {args.latency_ms:g} ms per request", file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for t in list(proxy.connections):
        t.cancel()
    if args.counts_file:
        tmp = args.counts_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(proxy.counts.snapshot(), f, indent=1)
            f.write("\n")
        os.replace(tmp, args.counts_file)
    if proxy.log:
        proxy.log.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
