#!/usr/bin/env python3
"""From bench/proxy.py's --log, per run (each "#reset LABEL" line starts one):
the LIST requests (delimiter ones apart), the prefixes listed without a
delimiter, and the most pages listed one after another under one prefix, the
chain a listing waits for on a store that answers requests in parallel."""
import collections
import sys
import urllib.parse

runs = collections.OrderedDict()
current = None
for line in open(sys.argv[1]):
    if line.startswith("#reset"):
        current = line.split("\t")[1].strip()
        runs[current] = []
        continue
    fields = line.rstrip("\n").split("\t")
    if current is None or fields[0] != "LIST":
        continue
    query = urllib.parse.parse_qs(urllib.parse.urlparse(fields[2]).query)
    runs[current].append((query.get("prefix", [""])[0], "delimiter" in query))
for name, lists in runs.items():
    pages = collections.Counter(prefix for prefix, delimited in lists if not delimited)
    prefix, longest = pages.most_common(1)[0] if pages else ("", 0)
    delimited = sum(1 for _, d in lists if d)
    print(f"{name}: LIST {len(lists)} ({delimited} delimiter), prefixes {len(pages)}, longest chain {longest} pages ({prefix})")
