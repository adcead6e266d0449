#!/usr/bin/env python3
"""Measure broker memory per idle MQTT connection.

Opens N TCP connections to a running broker, sends a v3.1.1 CONNECT on each (keep-alive 0,
clean session), waits for every CONNACK, then reads the broker's RSS from /proc and reports
(RSS_after - RSS_before) / N. Loopback only; bounded in count and time.

With --batch B --batch-pause S the connections are opened B at a time with S seconds between
batches, the way devices arrive over time: a broker that parks idle connections (ringmq
--idle-park-secs) then reuses the memory the previous batch released, so the figure is the
steady-state cost of an idle connection rather than the peak of a simultaneous burst.

With --tls CAFILE the connections are TLS (server certificate checked against CAFILE, host
name not checked), for the memory of an idle TLS connection.

usage: idle-conn-mem.py --pid PID [--port 1883] [--count 10000] [--hold 3]
                        [--batch B --batch-pause S] [--tls CAFILE]
"""
import argparse
import os
import resource
import socket
import ssl
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect_packet(cid):
    body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0x02]) + struct.pack("!H", 0)
    body += struct.pack("!H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=0, help="connections per batch (0 = all at once)")
    ap.add_argument("--batch-pause", type=float, default=0.0, help="seconds between batches")
    ap.add_argument("--tls", metavar="CAFILE", help="connect with TLS, trusting CAFILE")
    a = ap.parse_args()
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context(cafile=a.tls)
        ctx.check_hostname = False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(0.5)
    before = rss_kib(a.pid)
    socks = []
    t0 = time.time()
    for i in range(a.count):
        if a.batch and i and i % a.batch == 0:
            await_connacks(socks[i - a.batch:i])
            time.sleep(a.batch_pause)
        s = socket.create_connection((a.host, a.port), timeout=10)
        if ctx:
            s = ctx.wrap_socket(s)
        s.sendall(connect_packet(b"idle-%08d" % i))
        socks.append(s)
    await_connacks(socks[(a.count - 1) // a.batch * a.batch if a.batch else 0:])
    elapsed = time.time() - t0
    time.sleep(a.hold)
    after = rss_kib(a.pid)
    per = (after - before) * 1024 / a.count
    print(f"connections={a.count} connect_s={elapsed:.2f} rss_before_kib={before} "
          f"rss_after_kib={after} bytes_per_conn={per:.0f}")
    for s in socks:
        s.close()


def await_connacks(socks):
    for s in socks:
        ack = b""
        while len(ack) < 4:
            chunk = s.recv(4 - len(ack))
            if not chunk:
                sys.exit("broker closed a connection")
            ack += chunk
        if ack[0] != 0x20 or ack[3] != 0:
            sys.exit(f"bad CONNACK {ack!r}")


if __name__ == "__main__":
    main()
