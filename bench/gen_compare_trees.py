#!/usr/bin/env python3
"""Checks a tree written by gen_registry against trees the real registry wrote.

    gen_compare_trees.py --gen GEN_ROOT --real REAL_ROOT [--real ...] [--replay REPLAY_ROOT
                         --uuid-map MAP.json] [--summary SUMMARY.json]

Every ROOT is a registry `rootdirectory` (holding docker/registry/v2). Checks, each printed
as PASS/FAIL with details:

1. shapes: every key is mapped to a shape (hex digests -> <hex>, the two-hex blob prefix ->
   <hex2>, upload uuids -> <uuid>, repository names -> <repo>, tag names -> <tag>, hash-state
   offsets -> <offset>); every shape of the generated tree must occur in a real tree (the
   union of the --real trees). Real shapes the generator never produces are listed.
2. replay (if --replay): the generated tree and the tree the real registry wrote when the
   generator's own operations were replayed through its API must hold exactly the same keys
   with byte-identical contents (upload uuids mapped, `startedat` compared by format only),
   and exactly the same directories (empty ones included).
3. links: every `link` file is exactly 71 bytes `sha256:<64 hex>`, and the digest in its path
   where the path has one; every tag's current link names a revision of its repository.
4. blobs: every blob's sha256 equals the digest in its path; every revision's blob is a
   JSON manifest whose descriptors name blobs that exist, with the right sizes.
5. uploads: `startedat` is RFC3339 UTC text; hash-state offsets add up to the data size.
6. garbage (if --summary): the expected garbage counts in the generator's summary equal an
   independent recomputation from the tree (default and --delete-untagged semantics).

Exits 1 if any check fails. Python 3 standard library only.
"""

import argparse
import hashlib
import json
import os
import re
import sys

HEX64 = re.compile(r"^[0-9a-f]{64}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
LINK = re.compile(rb"^sha256:[0-9a-f]{64}$")

failures = []


def check(ok, name, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""))
    if not ok:
        failures.append(name)


def v2(root):
    return os.path.join(root, "docker/registry/v2")


def walk(root):
    """(files, dirs) relative to v2."""
    base = v2(root)
    files, dirs = [], []
    for d, dn, fn in os.walk(base):
        rel = os.path.relpath(d, base)
        if rel != ".":
            dirs.append(rel)
        for f in fn:
            files.append(f if rel == "." else rel + "/" + f)
    return files, dirs


def split_repo(parts):
    """parts after 'repositories': (repo name, rest starting at the first '_' component)."""
    i = 0
    while i < len(parts) and not parts[i].startswith("_"):
        i += 1
    return "/".join(parts[:i]), parts[i:]


def shape(key):
    parts = key.split("/")
    if parts[0] == "blobs":
        out = []
        for i, p in enumerate(parts):
            if i == 2 and re.fullmatch(r"[0-9a-f]{2}", p):
                out.append("<hex2>")
            elif HEX64.match(p):
                out.append("<hex>")
            else:
                out.append(p)
        return "/".join(out)
    if parts[0] != "repositories":
        return key
    repo, rest = split_repo(parts[1:])
    rest = list(rest)
    if len(rest) >= 3 and rest[0] == "_manifests" and rest[1] == "tags":
        rest[2] = "<tag>"
    if len(rest) >= 2 and rest[0] == "_uploads" and UUID.match(rest[1]):
        rest[1] = "<uuid>"
    if len(rest) >= 5 and rest[0] == "_uploads" and rest[2] == "hashstates" and rest[4].isdigit():
        rest[4] = "<offset>"
    rest = ["<hex>" if HEX64.match(p) else p for p in rest]
    return "/".join(["repositories", "<repo>" if repo else "<none>"] + rest)


def read(root, key):
    with open(os.path.join(v2(root), key), "rb") as f:
        return f.read()


def check_shapes(gen, reals):
    gf, _ = walk(gen)
    gs = {shape(k) for k in gf}
    rs = set()
    for r in reals:
        rf, _ = walk(r)
        rs |= {shape(k) for k in rf}
    extra = sorted(gs - rs)
    check(not extra, "shapes: every generated key shape is one the real registry writes",
          f"{len(gs)} generated shapes, {len(rs)} real shapes" + ("; not real: " + ", ".join(extra) if extra else ""))
    missing = sorted(rs - gs)
    print("INFO real shapes the generator never produces: " + (", ".join(missing) if missing else "none"))
    print("INFO shapes:\n  " + "\n  ".join(sorted(gs)))


def map_uuid(key, umap):
    parts = key.split("/")
    if parts[0] != "repositories":
        return key
    repo, rest = split_repo(parts[1:])
    if len(rest) >= 2 and rest[0] == "_uploads":
        new = umap.get(f"{repo}/{rest[1]}")
        if new:
            rest = [rest[0], new] + rest[2:]
            return "/".join(["repositories", repo] + rest)
    return key


def check_replay(gen, replay, umap):
    gf, gd = walk(gen)
    rf, rd = walk(replay)
    gmap = {map_uuid(k, umap): k for k in gf}
    gset, rset = set(gmap), set(rf)
    only_gen, only_real = sorted(gset - rset), sorted(rset - gset)
    check(not only_gen and not only_real, "replay: same keys",
          f"{len(gset)} generated, {len(rset)} real"
          + (f"; only generated ({len(only_gen)}): {only_gen[:10]}" if only_gen else "")
          + (f"; only real ({len(only_real)}): {only_real[:10]}" if only_real else ""))
    differ = []
    for k in sorted(gset & rset):
        a, b = read(gen, gmap[k]), read(replay, k)
        if k.endswith("/startedat"):
            if not (RFC3339.match(a.decode()) and RFC3339.match(b.decode())):
                differ.append(k)
        elif a != b:
            differ.append(k)
    check(not differ, "replay: byte-identical contents", f"{len(gset & rset)} keys compared"
          + (f"; differ ({len(differ)}): {differ[:10]}" if differ else ""))
    gdirs = {map_uuid(d, umap) for d in gd}
    only_gen, only_real = sorted(gdirs - set(rd)), sorted(set(rd) - gdirs)
    check(not only_gen and not only_real, "replay: same directories (empty ones included)",
          f"{len(gdirs)} generated, {len(rd)} real"
          + (f"; only generated: {only_gen[:10]}" if only_gen else "")
          + (f"; only real: {only_real[:10]}" if only_real else ""))


class Tree:
    def __init__(self, root):
        self.root = root
        files, _ = walk(root)
        self.files = files
        self.blobs = {}
        self.repos = {}
        self.uploads = {}
        for k in files:
            parts = k.split("/")
            if parts[0] == "blobs":
                self.blobs[parts[3]] = k
                continue
            repo, rest = split_repo(parts[1:])
            r = self.repos.setdefault(repo, {"revisions": set(), "layers": set(), "tags": {}, "index": {}})
            if rest[:3] == ["_manifests", "revisions", "sha256"]:
                r["revisions"].add(rest[3])
            elif rest[:2] == ["_layers", "sha256"]:
                r["layers"].add(rest[2])
            elif rest[:2] == ["_manifests", "tags"] and rest[3] == "current":
                r["tags"][rest[2]] = read(root, k).decode()[7:]
            elif rest[:2] == ["_manifests", "tags"] and rest[3] == "index":
                r["index"].setdefault(rest[2], set()).add(rest[5])
            elif rest[0] == "_uploads":
                self.uploads.setdefault((repo, rest[1]), []).append("/".join(rest[2:]))
        self.manifests = {}

    def manifest(self, h):
        if h not in self.manifests:
            self.manifests[h] = json.loads(read(self.root, self.blobs[h]))
        return self.manifests[h]


def descriptors(m):
    """(blobs, children, subject) descriptors of a parsed manifest."""
    if "manifests" in m:
        return [], m["manifests"], m.get("subject")
    blobs = ([m["config"]] if "config" in m else []) + m.get("layers", [])
    return blobs, [], m.get("subject")


def hexof(d):
    return d["digest"].split(":", 1)[1]


def check_links_and_blobs(t, label):
    bad = []
    for k in t.files:
        if k.endswith("/link"):
            b = read(t.root, k)
            parts = k.split("/")
            want = parts[-2] if HEX64.match(parts[-2]) else None
            if len(b) != 71 or not LINK.match(b) or (want and b[7:].decode() != want):
                bad.append(k)
    n_links = sum(1 for k in t.files if k.endswith("/link"))
    check(not bad, f"{label} links: 71 bytes `sha256:<hex>`, equal to the digest in the path",
          f"{n_links} links" + (f"; bad: {bad[:10]}" if bad else ""))
    bad = [h for h, k in t.blobs.items() if hashlib.sha256(read(t.root, k)).hexdigest() != h]
    check(not bad, f"{label} blobs: sha256 of every blob's data equals its digest", f"{len(t.blobs)} blobs" + (f"; bad: {bad[:10]}" if bad else ""))
    bad = []
    revs = set()
    for repo, r in t.repos.items():
        for tag, cur in r["tags"].items():
            if cur not in r["revisions"]:
                bad.append(f"{repo}:{tag}")
        revs |= r["revisions"]
    check(not bad, f"{label} tags: every current link names a revision of its repository", f"; bad: {bad[:10]}" if bad else "")
    bad = []
    for h in revs:
        try:
            m = t.manifest(h)
        except Exception as e:
            bad.append(f"{h[:12]}: {e}")
            continue
        if m.get("schemaVersion") != 2:
            bad.append(f"{h[:12]}: schemaVersion")
        blobs, children, subject = descriptors(m)
        for d in blobs + children:
            x = hexof(d)
            if x not in t.blobs:
                bad.append(f"{h[:12]}: missing {x[:12]}")
            elif os.path.getsize(os.path.join(v2(t.root), t.blobs[x])) != d["size"]:
                bad.append(f"{h[:12]}: size of {x[:12]}")
        if subject and hexof(subject) in t.blobs and subject["size"] != os.path.getsize(os.path.join(v2(t.root), t.blobs[hexof(subject)])):
            bad.append(f"{h[:12]}: subject size")
    check(not bad, f"{label} manifests: JSON, schemaVersion 2, descriptors name existing blobs with their sizes",
          f"{len(revs)} manifests" + (f"; bad: {bad[:10]}" if bad else ""))
    bad = []
    for (repo, uuid), parts in t.uploads.items():
        base = f"repositories/{repo}/_uploads/{uuid}"
        if "startedat" not in parts or not RFC3339.match(read(t.root, base + "/startedat").decode()):
            bad.append(f"{base}: startedat")
        size = len(read(t.root, base + "/data")) if "data" in parts else None
        offs = sorted(int(p.split("/")[-1]) for p in parts if p.startswith("hashstates/sha256/"))
        if not offs or offs[0] != 0 or offs[-1] != size:
            bad.append(f"{base}: hashstates {offs} vs data size {size}")
    check(not bad, f"{label} uploads: startedat RFC3339 UTC, hash states from 0 to the data size", f"{len(t.uploads)} uploads" + (f"; bad: {bad}" if bad else ""))


def garbage(t, delete_untagged):
    kept = set()

    def keep(h):
        kept.add(h)
        if h in t.blobs:
            blobs, children, _ = descriptors(t.manifest(h))
            kept.update(hexof(d) for d in blobs + children)

    for repo, r in t.repos.items():
        if not delete_untagged:
            keep_revs = set(r["revisions"])
        else:
            referrers = {}
            for h in r["revisions"]:
                _, _, subject = descriptors(t.manifest(h))
                if subject:
                    referrers.setdefault(hexof(subject), []).append(h)
            stack = list(r["tags"].values())
            keep_revs = set()
            while stack:
                h = stack.pop()
                if h not in r["revisions"] or h in keep_revs:
                    continue
                keep_revs.add(h)
                _, children, _ = descriptors(t.manifest(h))
                stack.extend(hexof(d) for d in children)
                stack.extend(referrers.get(h, []))
        for h in keep_revs:
            keep(h)
        kept.update(r["tags"].values())
    return sum(1 for h in t.blobs if h not in kept)


def check_garbage(t, summary):
    s = json.load(open(summary))
    for mode, key, flag in (("default", "expected_garbage_blobs_default", False),
                            ("delete-untagged", "expected_garbage_blobs_delete_untagged", True)):
        got = garbage(t, flag)
        check(got == s[key], f"garbage {mode}: generator's expected count equals an independent recount from the tree",
              f"summary {s[key]}, recount {got} of {len(t.blobs)} blobs")


def check_features(t, summary):
    s = json.load(open(summary))
    by_type = s["manifests_by_type"]
    names = sorted(t.repos)
    nested = [(a, b) for a in names for b in names if b.startswith(a + "/")]
    sig = [tag for r in t.repos.values() for tag in r["tags"] if re.fullmatch(r"sha256-[0-9a-f]{64}\.(sig|att)", tag)]
    moved = sum(1 for r in t.repos.values() for tag, idx in r["index"].items() if len(idx) > 1)
    untagged = sum(len(r["revisions"] - set(r["tags"].values())) for r in t.repos.values())
    ok = all(by_type[k] > 0 for k in by_type) and s["referrers"] > 0 and sig and nested and moved and untagged and t.uploads
    check(bool(ok), "features: every manifest kind, referrers, signature tags, nested repositories, moved tags, uploads",
          f"{by_type}, {s['referrers']} referrers, {len(sig)} .sig/.att tags, nested {nested[:3]}, "
          f"{moved} moved tags, {untagged} untagged revisions, {len(t.uploads)} uploads")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", required=True)
    ap.add_argument("--real", action="append", default=[])
    ap.add_argument("--replay")
    ap.add_argument("--uuid-map")
    ap.add_argument("--summary")
    a = ap.parse_args()
    reals = a.real + ([a.replay] if a.replay else [])
    if reals:
        check_shapes(a.gen, reals)
        for r in a.real:
            check_shapes_one = {shape(k) for k in walk(r)[0]}
            gs = {shape(k) for k in walk(a.gen)[0]}
            extra = sorted(gs - check_shapes_one)
            print(f"INFO vs {r} alone: generated shapes not in it: " + (", ".join(extra) if extra else "none"))
    if a.replay:
        umap = json.load(open(a.uuid_map)) if a.uuid_map else {}
        check_replay(a.gen, a.replay, umap)
    t = Tree(a.gen)
    check_links_and_blobs(t, "generated")
    for r in reals:
        check_links_and_blobs(Tree(r), f"real({os.path.basename(os.path.normpath(r))})")
    if a.summary:
        check_garbage(t, a.summary)
        check_features(t, a.summary)
    print(("FAILED: " + ", ".join(failures)) if failures else "ALL CHECKS PASSED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
