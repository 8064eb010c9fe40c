#!/usr/bin/env python3
# A script written for the output of "tailscale status --json": it prints
# the backend state, the node itself and one line per peer, with the
# fields such scripts commonly read.
import json
import sys

st = json.load(sys.stdin)
print("state", st["BackendState"])
print("self", st["Self"]["HostName"], st["Self"]["DNSName"], " ".join(st["TailscaleIPs"]))
for key, p in sorted(st["Peer"].items(), key=lambda kv: kv[1]["HostName"]):
    assert key.startswith("nodekey:"), key
    path = ("direct " + p["CurAddr"]) if p["CurAddr"] else ("relay " + p["Relay"])
    print("peer", p["HostName"], p["DNSName"], p["TailscaleIPs"][0],
          "online" if p["Online"] else "offline", path,
          "rx=%d" % p["RxBytes"], "tx=%d" % p["TxBytes"],
          "handshake=" + p["LastHandshake"], "exit=%s" % p["ExitNode"],
          "routes=" + ",".join(p.get("PrimaryRoutes") or []))
