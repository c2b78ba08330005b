#!/usr/bin/env python3
"""Replays the operations gen_registry recorded (--ops-log) through a real registry's HTTP API.

    gen_replay_ops.py --ops OPS.jsonl --gen-root GEN_ROOT --url http://127.0.0.1:PORT

Blob and manifest bytes, and the bytes of abandoned uploads, are read from the generated tree
(GEN_ROOT/docker/registry/v2/...): every blob ever pushed is still there, since deleting a
manifest through the API never deletes blobs. Operations:

  blob      POST /v2/<repo>/blobs/uploads/ then PUT <location>&digest=<digest> with the bytes
  manifest  PUT /v2/<repo>/manifests/<reference> with Content-Type <media_type>
  delete    DELETE /v2/<repo>/manifests/<digest>
  upload    POST, then one PATCH per chunk, never completed (an abandoned upload)

Prints one JSON line: counts, and the mapping generated-uuid -> registry-uuid of the uploads
(written to --uuid-map if given). Python 3 standard library only.
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse


class Client:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                h = dict(headers or {})
                if body is not None:
                    h["Content-Length"] = str(len(body))
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def must(self, method, path, want, body=None, headers=None):
        status, hdrs, data = self.request(method, path, body, headers)
        if status != want:
            sys.exit(f"{method} {path}: HTTP {status} (wanted {want}): {data[:500]!r}")
        return hdrs


def location_path(loc):
    u = urllib.parse.urlsplit(loc)
    return u.path + ("?" + u.query if u.query else "")


def blob_path(root, digest):
    h = digest.split(":", 1)[1]
    return os.path.join(root, "docker/registry/v2/blobs/sha256", h[:2], h, "data")


def read(p):
    with open(p, "rb") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", required=True)
    ap.add_argument("--gen-root", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--uuid-map")
    a = ap.parse_args()
    c = Client(a.url)
    counts = {"blob": 0, "manifest": 0, "delete": 0, "upload": 0}
    uuid_map = {}
    with open(a.ops) as f:
        for line in f:
            op = json.loads(line)
            repo = op["repo"]
            kind = op["op"]
            counts[kind] += 1
            if kind == "blob":
                data = read(blob_path(a.gen_root, op["digest"]))
                if "sha256:" + hashlib.sha256(data).hexdigest() != op["digest"]:
                    sys.exit(f"generated blob {op['digest']} does not hash to its digest")
                loc = location_path(c.must("POST", f"/v2/{repo}/blobs/uploads/", 202, b"")["location"])
                sep = "&" if "?" in loc else "?"
                c.must("PUT", f"{loc}{sep}digest={op['digest']}", 201, data, {"Content-Type": "application/octet-stream"})
            elif kind == "manifest":
                data = read(blob_path(a.gen_root, op["digest"]))
                hdrs = c.must("PUT", f"/v2/{repo}/manifests/{op['reference']}", 201, data, {"Content-Type": op["media_type"]})
                if hdrs.get("docker-content-digest") != op["digest"]:
                    sys.exit(f"registry digest {hdrs.get('docker-content-digest')} != {op['digest']}")
            elif kind == "delete":
                c.must("DELETE", f"/v2/{repo}/manifests/{op['digest']}", 202)
            elif kind == "upload":
                p = os.path.join(a.gen_root, "docker/registry/v2/repositories", repo, "_uploads", op["uuid"], "data")
                data = read(p)
                if sum(op["chunks"]) != len(data):
                    sys.exit(f"upload {op['uuid']}: chunks do not add up to the data size")
                hdrs = c.must("POST", f"/v2/{repo}/blobs/uploads/", 202, b"")
                loc = location_path(hdrs["location"])
                uuid_map[f"{repo}/{op['uuid']}"] = hdrs["docker-upload-uuid"]
                off = 0
                for n in op["chunks"]:
                    hdrs = c.must("PATCH", loc, 202, data[off:off + n], {"Content-Type": "application/octet-stream"})
                    loc = location_path(hdrs["location"])
                    off += n
            else:
                sys.exit(f"unknown op {kind}")
    if a.uuid_map:
        with open(a.uuid_map, "w") as f:
            json.dump(uuid_map, f, indent=1, sort_keys=True)
    print(json.dumps({"replayed": counts, "uploads": len(uuid_map)}))


if __name__ == "__main__":
    main()
