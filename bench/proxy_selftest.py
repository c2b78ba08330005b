#!/usr/bin/env python3
"""Self-test of bench/proxy.py against a running moto (needs boto3).

Starts the proxy on a free port in front of --upstream, drives it with boto3
(single and multipart uploads, copies, lists, heads, gets, batch and single
deletes) plus raw chunked and aws-chunked uploads, and checks that:
  * every object read back through the proxy is byte-identical to what was sent,
    and identical to the same upload made directly to the upstream;
  * the counts per class match what was sent;
  * keep-alive connections are reused;
  * the per-request latency is applied;
  * SIGTERM writes the counts file.
Exits non-zero on the first failure.

  bench-venv/bin/python bench/proxy_selftest.py [--upstream http://127.0.0.1:9000]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))


def check(cond: bool, what: str) -> None:
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        raise SystemExit(1)


def counts(port: int, reset: bool = False) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/__{'reset' if reset else 'counts'}", method="POST" if reset else "GET")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def raw_put(port: int, path: str, headers: dict, body: bytes, chunked_pieces: int = 0) -> int:
    """A PUT with hand-made framing; chunked_pieces > 0 sends Transfer-Encoding: chunked."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        c.putheader(k, v)
    if chunked_pieces:
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        step = max(1, len(body) // chunked_pieces)
        for i in range(0, len(body), step):
            piece = body[i:i + step]
            c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        c.send(b"0\r\n\r\n")
    else:
        c.putheader("Content-Length", str(len(body)))
        c.endheaders()
        c.send(body)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def aws_chunked(data: bytes, piece: int) -> bytes:
    """STREAMING-UNSIGNED-PAYLOAD-TRAILER framing, as newer SDKs send it."""
    out = b""
    for i in range(0, len(data), piece):
        p = data[i:i + piece]
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n\r\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", default="http://127.0.0.1:9000")
    ap.add_argument("--latency-ms", type=float, default=20)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="proxy-selftest-")
    port_file, counts_file = os.path.join(tmp, "port"), os.path.join(tmp, "counts.json")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "proxy.py"), "--port", "0", "--port-file", port_file,
         "--upstream", args.upstream, "--latency-ms", str(args.latency_ms), "--counts-file", counts_file,
         "--log", os.path.join(tmp, "requests.log")])
    try:
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        port = int(open(port_file).read())
        proxied = f"http://127.0.0.1:{port}"

        def client(endpoint: str):
            return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                                aws_secret_access_key="test",
                                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                              max_pool_connections=8))

        s3, direct = client(proxied), client(args.upstream)
        bucket = f"proxy-selftest-{uuid.uuid4().hex[:8]}"
        direct.create_bucket(Bucket=bucket)
        counts(port, reset=True)

        small = os.urandom(1000)
        big = os.urandom(12 * 1024 * 1024 + 123)
        s3.put_object(Bucket=bucket, Key="a/small", Body=small)  # PUT 1
        big_path = os.path.join(tmp, "big")
        with open(big_path, "wb") as f:
            f.write(big)
        # multipart: POST create, 3 x PUT part (5 MiB parts), POST complete
        s3.upload_file(big_path, bucket, "a/big", Config=TransferConfig(multipart_threshold=5 * 1024 * 1024,
                                                                       multipart_chunksize=5 * 1024 * 1024,
                                                                       max_concurrency=1))
        s3.copy_object(Bucket=bucket, Key="b/copy", CopySource={"Bucket": bucket, "Key": "a/small"})  # COPY 1
        got_big = s3.get_object(Bucket=bucket, Key="a/big")["Body"].read()  # GET 1
        check(hashlib.sha256(got_big).digest() == hashlib.sha256(big).digest(), "12 MiB multipart object reads back identical")
        check(s3.get_object(Bucket=bucket, Key="b/copy")["Body"].read() == small, "copied object reads back identical")  # GET 2
        check(s3.head_object(Bucket=bucket, Key="a/big")["ContentLength"] == len(big), "HEAD gives the length")  # HEAD 1
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 1}):
            keys += [o["Key"] for o in page.get("Contents", [])]  # LIST 3 pages
        check(keys == ["a/big", "a/small", "b/copy"], f"paginated list sees all keys {keys}")

        # Raw framings: Transfer-Encoding chunked, and aws-chunked content encoding.
        auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
                "x-amz-date": "20250101T000000Z", "Host": f"127.0.0.1:{port}"}
        data = os.urandom(300_000)
        check(raw_put(port, f"/{bucket}/c/te-chunked", dict(auth, **{"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}), data, chunked_pieces=7) == 200,
              "Transfer-Encoding: chunked PUT accepted")  # PUT
        encoded = aws_chunked(data, 65536)
        aws_headers = dict(auth, **{"Content-Encoding": "aws-chunked", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                    "x-amz-decoded-content-length": str(len(data))})
        st_proxy = raw_put(port, f"/{bucket}/c/aws-chunked", aws_headers, encoded)  # PUT
        st_direct = raw_put(int(args.upstream.rsplit(":", 1)[1]), f"/{bucket}/c/aws-chunked-direct", aws_headers, encoded)
        check(st_proxy == st_direct == 200, f"aws-chunked PUT: proxy {st_proxy}, direct {st_direct}")
        a = direct.get_object(Bucket=bucket, Key="c/aws-chunked")["Body"].read()
        b = direct.get_object(Bucket=bucket, Key="c/aws-chunked-direct")["Body"].read()
        check(a == b, f"aws-chunked body stored the same through the proxy as directly ({len(a)} bytes, decoded: {a == data})")
        check(direct.get_object(Bucket=bucket, Key="c/te-chunked")["Body"].read() == data, "chunked body stored unchanged")

        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a/small"}, {"Key": "b/copy"}, {"Key": "nope"}]})  # BATCH 1, 3 keys
        s3.delete_object(Bucket=bucket, Key="a/big")  # DELETE 1

        # Keep-alive: 20 sequential HEADs on one http.client connection.
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(20):
            c.request("HEAD", f"/{bucket}/c/te-chunked", headers=auth)
            r = c.getresponse()
            r.read()
            check(r.status == 200, "HEAD on a kept-alive connection") if _ == 19 else None
        sock_reused = c.sock is not None
        c.close()
        elapsed = time.monotonic() - t0
        check(sock_reused, "connection kept alive across 20 requests")
        check(elapsed >= 20 * args.latency_ms / 1000, f"latency applied: 20 sequential requests took {elapsed * 1000:.0f} ms")

        n = counts(port)
        want = {"LIST": 3, "GET": 2, "HEAD": 21, "PUT": 1 + 3 + 2, "COPY": 1, "POST": 2, "DELETE": 1, "DELETE_BATCH": 1, "OTHER": 0}
        check(n["requests"] == want, f"counts {n['requests']} == {want}")
        check(n["batch_keys"] == 3, f"batch keys {n['batch_keys']} == 3")

        # Cleanup straight on the upstream, then SIGTERM writes the counts file.
        for o in direct.list_objects_v2(Bucket=bucket).get("Contents", []):
            direct.delete_object(Bucket=bucket, Key=o["Key"])
        direct.delete_bucket(Bucket=bucket)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        final = json.load(open(counts_file))
        check(final["requests"] == want, "SIGTERM wrote the counts file")
        print("proxy self-test passed")
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if os.path.isdir(tmp):
            print(f"proxy log and counts kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
