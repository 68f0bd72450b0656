#!/usr/bin/env python3
"""Runs shared/bench/baseline_sync.py unchanged and sizes what it writes.

Usage: baseline_wrap.py PATH/TO/baseline_sync.py tailscale|tinymdm|tinymdm-apps
Prints the baseline's own JSON line, then one more: items_written, wcu (one
write unit per started KB of each item, DynamoDB's sizing rules, the same
rules the Rust counter applies) and read_requests. Hooks are registered on
boto3's default session before the baseline builds its client from it.
"""
import base64
import importlib.util
import json
import math
import sys

import boto3

SIZED = {"items_written": 0, "wcu": 0, "read_requests": 0}


def number_size(n):
    digits = n.lstrip("-").split("e")[0].split("E")[0].replace(".", "")
    significant = len(digits.strip("0"))
    return (significant + 1) // 2 + 1


def value_size(v):
    (kind, x), = v.items()
    if kind == "S":
        return len(x.encode())
    if kind == "N":
        return number_size(x)
    if kind == "B":
        return len(base64.b64decode(x))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in x)
    if kind == "NS":
        return sum(number_size(s) for s in x)
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in x)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(e) for k, e in x.items())
    return 0


def item_wcu(item):
    size = sum(len(k.encode()) + value_size(v) for k, v in item.items())
    return max(1, math.ceil(size / 1024))


def on_batch_write(params, **_):
    body = json.loads(params["body"])
    for reqs in body.get("RequestItems", {}).values():
        for r in reqs:
            SIZED["items_written"] += 1
            SIZED["wcu"] += item_wcu(r["PutRequest"]["Item"]) if "PutRequest" in r else 1


def on_read(**_):
    SIZED["read_requests"] += 1


def main():
    path, what = sys.argv[1], sys.argv[2]
    boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION.events
    events.register("before-call.dynamodb.BatchWriteItem", on_batch_write)
    for op in ("Query", "GetItem", "Scan"):
        events.register(f"before-call.dynamodb.{op}", on_read)
    spec = importlib.util.spec_from_file_location("baseline_sync", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.argv = [path, what]
    mod.main()
    print(json.dumps(SIZED))


if __name__ == "__main__":
    main()
