#!/usr/bin/env python3
"""Helpers for bench/run.sh: S3 upload and listing, key counts, result tables.

  helpers.py upload --endpoint URL --bucket B --root R [--root R2 ...] DIR
  helpers.py keys (--fs DIR | --endpoint URL --bucket B --root R) --out FILE.json
  helpers.py rm-bucket --endpoint URL --bucket B
  helpers.py collect WORKDIR --meta META.json --out RESULTS.json --markdown FILE.md

The S3 subcommands talk to the emulator directly (never through the proxy) and
need boto3; the others use the standard library only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import sys
import time

BLOBS = "docker/registry/v2/blobs/"


def s3_client(endpoint: str, pool: int = 32):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool, retries={"max_attempts": 5}))


def files_under(root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            full = os.path.join(dirpath, f)
            if os.path.islink(full):
                continue
            out.append(os.path.relpath(full, root))
    return sorted(out)


def cmd_upload(a) -> int:
    s3 = s3_client(a.endpoint, a.threads + 4)
    try:
        s3.head_bucket(Bucket=a.bucket)
    except Exception:
        s3.create_bucket(Bucket=a.bucket)
    rels = files_under(a.dir)
    jobs = [(root.strip("/"), rel) for root in a.root for rel in rels]
    t0 = time.monotonic()
    total = 0

    def put(job):
        root, rel = job
        with open(os.path.join(a.dir, rel), "rb") as f:
            body = f.read()
        s3.put_object(Bucket=a.bucket, Key=f"{root}/{rel}" if root else rel, Body=body)
        return len(body)

    with concurrent.futures.ThreadPoolExecutor(a.threads) as pool:
        for n in pool.map(put, jobs):
            total += n
    dt = time.monotonic() - t0
    print(f"uploaded {len(jobs)} keys ({total} bytes) into s3://{a.bucket}/{{{','.join(a.root)}}} in {dt:.1f} s "
          f"({len(jobs) / max(dt, 1e-9):.0f} keys/s)")
    return 0


def blob_digests(rel_keys: list[str]) -> list[str]:
    """blobs/sha256/ab/abcd.../data -> sha256:abcd... (data keys only)."""
    out = []
    for k in rel_keys:
        if k.startswith(BLOBS) and k.endswith("/data"):
            parts = k[len(BLOBS):].split("/")
            if len(parts) == 4:
                out.append(f"{parts[0]}:{parts[2]}")
    return sorted(out)


def cmd_keys(a) -> int:
    if a.fs:
        rels = files_under(a.fs)
        size = sum(os.path.getsize(os.path.join(a.fs, r)) for r in rels)
        where = a.fs
    else:
        s3 = s3_client(a.endpoint)
        prefix = a.root.strip("/") + "/" if a.root.strip("/") else ""
        rels, size = [], 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                rels.append(o["Key"][len(prefix):])
                size += o["Size"]
        rels.sort()
        where = f"s3://{a.bucket}/{a.root}"
    blobs = blob_digests(rels)
    doc = {
        "where": where,
        "keys": len(rels),
        "bytes": size,
        "blob_keys": sum(1 for r in rels if r.startswith(BLOBS)),
        "blobs": len(blobs),
        "blob_digests": blobs,
    }
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{where}: {len(rels)} keys, {len(blobs)} blobs")
    return 0


def cmd_rm_bucket(a) -> int:
    s3 = s3_client(a.endpoint)
    n = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objs:
                s3.delete_objects(Bucket=a.bucket, Delete={"Objects": objs, "Quiet": True})
                n += len(objs)
        s3.delete_bucket(Bucket=a.bucket)
    except s3.exceptions.NoSuchBucket:
        pass
    print(f"removed bucket {a.bucket} ({n} keys)")
    return 0


# ---- results ---------------------------------------------------------------------

CLASSES = ["LIST", "GET", "HEAD", "PUT", "COPY", "POST", "DELETE", "DELETE_BATCH", "OTHER"]


def load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def parse_time_v(path: str) -> dict:
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return out
    for key, name, conv in [
        ("max_rss_kb", r"Maximum resident set size \(kbytes\)", int),
        ("user_s", r"User time \(seconds\)", float),
        ("sys_s", r"System time \(seconds\)", float),
        ("cpu_percent", r"Percent of CPU this job got", lambda s: int(s.rstrip("%")) if s.rstrip("%").isdigit() else None),
        ("voluntary_switches", r"Voluntary context switches", int),
        ("fs_inputs", r"File system inputs", int),
        ("fs_outputs", r"File system outputs", int),
    ]:
        m = re.search(name + r":\s*(\S+)", text)
        if m:
            try:
                out[key] = conv(m.group(1))
            except ValueError:
                pass
    return out


def collect_run(d: str) -> dict:
    run = load(os.path.join(d, "run.json")) or {}
    run["dir"] = d
    run.update(parse_time_v(os.path.join(d, "time.txt")))
    before, after = load(os.path.join(d, "before.json")), load(os.path.join(d, "after.json"))
    if before:
        run["keys_before"], run["blobs_before"], run["bytes_before"] = before["keys"], before["blobs"], before["bytes"]
    if after:
        run["keys_after"], run["blobs_after"], run["bytes_after"] = after["keys"], after["blobs"], after["bytes"]
        run["blob_digests_after"] = after["blob_digests"]
    if before and after:
        run["keys_deleted"] = before["keys"] - after["keys"]
        run["blobs_deleted"] = before["blobs"] - after["blobs"]
    counts = load(os.path.join(d, "counts.json"))
    if counts:
        run["requests"] = counts["requests"]
        run["requests_total"] = counts["total"]
        run["batch_keys"] = counts["batch_keys"]
        run["proxy"] = {k: counts[k] for k in counts if k not in ("requests", "total", "batch_keys")}
    report = load(os.path.join(d, "report.json"))
    if report:
        run["self_reported"] = {k: report.get(k) for k in (
            "requests", "request_floor", "duration_seconds", "deleted_keys", "manifest_cache_hits", "tags_matched_by_etag")
            if k in report}
        run["self_reported"]["failures"] = len(report.get("failures", []))
        if not counts and report.get("requests"):
            r = report["requests"]
            # Filesystem: registry-gc's own counts (directory reads, file reads, unlinks).
            run["requests"] = {"LIST": r["list"], "GET": r["get"], "DELETE": r["delete"]}
            run["requests_total"] = r["list"] + r["get"] + r["delete"]
            run["requests_source"] = "self-reported"
    return run


def breakdown(log_path: str) -> dict[str, dict[str, int]]:
    """Requests per kind, per run, from the proxy's --log (runs split at "#reset LABEL")."""
    import urllib.parse

    out: dict[str, dict[str, int]] = {}
    label = None
    try:
        f = open(log_path)
    except OSError:
        return out
    for line in f:
        parts = line.rstrip("\n").split("\t")
        if parts[0] == "#reset":
            label = parts[1] if len(parts) > 1 else ""
            continue
        if parts[0].startswith("#") or label is None or len(parts) < 4:
            continue
        cls, _method, target = parts[0], parts[1], parts[2]
        u = urllib.parse.urlsplit(target)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        where = q.get("prefix", [""])[0] if cls == "LIST" else urllib.parse.unquote(u.path)
        area = ("blobs" if "/blobs/" in where else "revisions" if "_manifests/revisions" in where
                else "tags" if "_manifests/tags" in where else "layers" if "/_layers" in where
                else "uploads" if "/_uploads" in where else "repositories" if "/repositories" in where else "root")
        if cls == "LIST":
            kind = ("LIST stat (max-keys=1)" if q.get("max-keys") == ["1"] else
                    "LIST by directory (delimiter)" if "delimiter" in q else "LIST flat")
        else:
            kind = cls
        key = f"{kind} {area}" if cls in ("LIST", "GET", "HEAD", "DELETE") else kind
        d = out.setdefault(label, {})
        d[key] = d.get(key, 0) + 1
    return out


def compare(gc: dict, ref: dict) -> dict:
    a, b = set(gc.get("blob_digests_after", [])), set(ref.get("blob_digests_after", []))
    only_gc, only_ref = sorted(a - b), sorted(b - a)
    return {"same_blobs": not only_gc and not only_ref, "only_registry_gc": only_gc[:50], "only_reference": only_ref[:50],
            "only_registry_gc_count": len(only_gc), "only_reference_count": len(only_ref)}


def ratio(x, y):
    if x is None or y is None or not y:
        return None
    return x / y


def fmt(v, spec="") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec or ".2f")
    return str(v)


def cpu_s(run: dict) -> float | None:
    """User plus system CPU seconds (GNU time's): on a machine with more
    cores, wall time moves towards this for a tool that runs in parallel."""
    if run.get("user_s") is None or run.get("sys_s") is None:
        return None
    return run["user_s"] + run["sys_s"]


def rows_for(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["tool", "backend", "mode", "cache", "wall s", "CPU s", "LIST", "GET", "HEAD", "PUT", "COPY", "POST", "DELETE",
            "DEL_BATCH (keys)", "total req", "peak RSS MiB", "keys before→after", "blobs deleted", "exit"]
    rows = []
    for r in runs:
        req = r.get("requests") or {}
        self_rep = r.get("requests_source") == "self-reported"

        def c(k):
            if not req:
                return "n/a"
            v = req.get(k)
            return "–" if v is None else str(v) + ("*" if self_rep else "")

        batch = "n/a" if not req else (f"{req.get('DELETE_BATCH', 0)} ({r.get('batch_keys', 0)})" if not self_rep else "–")
        rows.append([
            r["tool"], r["backend"], r["mode"], r.get("cache", "–"), fmt(r.get("wall_s"), ".2f"), fmt(cpu_s(r), ".2f"),
            c("LIST"), c("GET"), c("HEAD"), c("PUT"), c("COPY"), c("POST"), c("DELETE"), batch,
            (fmt(r.get("requests_total")) + ("*" if self_rep else "")) if req else "n/a",
            fmt(r["max_rss_kb"] / 1024, ".1f") if r.get("max_rss_kb") else "–",
            f"{fmt(r.get('keys_before'))}→{fmt(r.get('keys_after'))}", fmt(r.get("blobs_deleted")), fmt(r.get("exit_code")),
        ])
    return head, rows


def ratio_rows(pairs: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["backend", "mode", "cache", "vs", "time ref/gc", "CPU ref/gc", "requests ref/gc", "RSS ref/gc", "same blobs left"]
    rows = []
    for p in pairs:
        same = p["compare"]
        s = "yes" if same["same_blobs"] else f"NO (+{same['only_registry_gc_count']} gc, +{same['only_reference_count']} ref)"
        rows.append([p["backend"], p["mode"], p["cache"], p["vs"], fmt(p["time_ratio"], ".1f") + ("×" if p["time_ratio"] else ""),
                     fmt(p["cpu_ratio"], ".1f") + ("×" if p["cpu_ratio"] else ""),
                     fmt(p["requests_ratio"], ".1f") + ("×" if p["requests_ratio"] else ""),
                     fmt(p["rss_ratio"], ".1f") + ("×" if p["rss_ratio"] else ""), s])
    return head, rows


def text_table(head, rows) -> str:
    w = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w[i]) if i < 4 else c.rjust(w[i]) for i, c in enumerate(cells)).rstrip()
    return "\n".join([line(head), line(["-" * x for x in w])] + [line(r) for r in rows])


def md_table(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 4 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def cmd_collect(a) -> int:
    meta = load(a.meta) or {}
    runs_dir = os.path.join(a.workdir, "runs")
    runs = [collect_run(os.path.join(runs_dir, d)) for d in sorted(os.listdir(runs_dir))] if os.path.isdir(runs_dir) else []
    kinds = breakdown(a.proxy_log) if a.proxy_log else {}
    for r in runs:
        k = kinds.get(os.path.basename(r["dir"]))
        if k:
            r["requests_by_kind"] = dict(sorted(k.items(), key=lambda kv: -kv[1]))
    order = {"registry-gc": 0, "registry-gc-cached": 1, "registry-gc-offline": 2, "reference": 3}
    runs.sort(key=lambda r: (r.get("seq", 0), order.get(r.get("tool"), 9)))
    pairs = []
    groups: dict[tuple, dict] = {}
    for r in runs:
        groups.setdefault((r["backend"], r["mode"], r.get("cache", "–")), {})[r["tool"]] = r
    for (backend, mode, cache), g in groups.items():
        for vs in ("registry-gc", "registry-gc-cached", "registry-gc-offline"):
            if vs not in g or "reference" not in g:
                continue
            gc, ref = g[vs], g["reference"]
            pairs.append({
                "backend": backend, "mode": mode, "cache": cache, "vs": vs,
                "time_ratio": ratio(ref.get("wall_s"), gc.get("wall_s")),
                "cpu_ratio": ratio(cpu_s(ref), cpu_s(gc)),
                "requests_ratio": ratio(ref.get("requests_total"), gc.get("requests_total"))
                if ref.get("requests_source") != "self-reported" and gc.get("requests_source") != "self-reported" else None,
                "rss_ratio": ratio(ref.get("max_rss_kb"), gc.get("max_rss_kb")),
                "compare": compare(gc, ref),
            })
    h1, r1 = rows_for(runs)
    h2, r2 = ratio_rows(pairs)
    notes = []
    if any(r.get("requests_source") == "self-reported" for r in runs):
        notes.append("`*` filesystem: registry-gc's own counts (directory reads as LIST, file reads as GET, "
                     "file deletions as DELETE); the reference collector has no counter on disk (n/a).")
    short = lambda ds: (" (" + ", ".join(d.split(":")[-1][:12] for d in ds[:3]) + (", ..." if len(ds) > 3 else "") + ")") if ds else ""
    for p in pairs:
        c = p["compare"]
        if not c["same_blobs"]:
            notes.append(f"{p['backend']} {p['mode']}{'' if p['cache'] == '-' else ' ' + p['cache']}: blobs left differ: "
                         f"only {p['vs']} kept {c['only_registry_gc_count']}{short(c['only_registry_gc'])}, "
                         f"only the reference kept {c['only_reference_count']}{short(c['only_reference'])}")
    for r in runs:
        sr = r.get("self_reported") or {}
        if r.get("backend") == "s3" and sr.get("requests") and r.get("requests"):
            q, p = sr["requests"], r["requests"]
            proxy = {"list": p["LIST"], "get": p["GET"], "head": p["HEAD"], "put": p["PUT"] + p["COPY"] + p["POST"],
                     "delete": p["DELETE"] + p["DELETE_BATCH"]}
            if "head" not in q:  # older reports: list, get, delete
                proxy = {"list": p["LIST"], "get": p["GET"] + p["HEAD"], "delete": p["DELETE"] + p["DELETE_BATCH"]}
            r["self_reported"]["matches_proxy"] = proxy == q
            if proxy != q:
                notes.append(f"{r['tool']} s3 {r['mode']}: its report counts {q}, the proxy saw {proxy}")
        if r.get("backend") == "s3" and r.get("requests_total") is not None and r.get("blobs_before"):
            n, b = r["requests_total"], r["blobs_before"]
            top = ", ".join(f"{v} {k}" for k, v in list((r.get("requests_by_kind") or {}).items())[:4])
            px = r.get("proxy") or {}
            notes.append(f"{r['tool']} s3 {r['mode']}: {n} requests for {b} blobs ({n / b:.2f} per blob"
                         + (f", {r['blobs_deleted']} deleted" if r.get("blobs_deleted") is not None else "") + ")"
                         + (f"; most: {top}" if top else "")
                         + (f"; {sr['manifest_cache_hits']} manifests from its cache" if sr.get("manifest_cache_hits") else "")
                         + (f"; moto took {px['upstream_ms_mean']} ms per request on average (max {px['upstream_ms_max']}) "
                            f"on top of the {meta.get('latency_ms', 0):g} ms added, {px.get('client_connections')} "
                            f"client connections" if px.get("upstream_ms_mean") is not None else ""))
        if r.get("exit_code") not in (0, None):
            notes.append(f"{r['tool']} {r['backend']} {r['mode']} exited {r['exit_code']}"
                         + (" (timed out)" if r["exit_code"] == 124 else "")
                         + (f": see {r['dir']}" if meta.get("kept") else " (--keep keeps its output)"))
    for r in runs:
        r.pop("blob_digests_after", None)
    result = {"meta": meta, "runs": runs, "pairs": pairs, "notes": notes}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)

    ds = meta.get("dataset", {})
    title = (f"registry-gc vs docker-registry garbage-collect {meta.get('reference_version', '')} — "
             f"{ds.get('keys', '?')} keys, {ds.get('blobs', '?')} blobs ({ds.get('bytes', 0) / 1048576:.1f} MiB) "
             f"from {meta.get('dataset_dir', '?')}; "
             + (f"S3 latency {meta.get('latency_ms', 0):g} ms/request; " if "s3" in meta.get("backends", []) else "")
             + f"{meta.get('host', {}).get('cpus', '?')} CPUs")
    print(title + "\n")
    print(text_table(h1, r1))
    print()
    print(text_table(h2, r2))
    for n in notes:
        print("note: " + n)
    md = [f"### {title}", "", f"registry-gc {meta.get('registry_gc_version', '')} ({meta.get('registry_gc_commit', '')}), "
          f"{meta.get('date', '')}; raw numbers: `{os.path.relpath(a.out, meta.get('repo', '.'))}`", "",
          md_table(h1, r1), "", md_table(h2, r2), ""]
    md += [f"- {n}" for n in notes]
    with open(a.markdown, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n--- Markdown (also in " + a.markdown + ") ---\n")
    print("\n".join(md))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("upload")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--root", action="append", required=True)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("dir")
    p = sub.add_parser("keys")
    p.add_argument("--fs")
    p.add_argument("--endpoint")
    p.add_argument("--bucket")
    p.add_argument("--root", default="")
    p.add_argument("--out", required=True)
    p = sub.add_parser("rm-bucket")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p = sub.add_parser("collect")
    p.add_argument("workdir")
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--proxy-log", help="the proxy's --log, for requests per kind")
    a = ap.parse_args()
    return {"upload": cmd_upload, "keys": cmd_keys, "rm-bucket": cmd_rm_bucket, "collect": cmd_collect}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
