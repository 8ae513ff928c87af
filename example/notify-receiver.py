#!/usr/bin/env python3
"""A webhook receiver for warden's notifications, for the example: prints each one it gets.

It checks X-Warden-Signature (sha256=<hex HMAC-SHA256 of the raw body>, keyed with the
channel's signing secret, read here from WARDEN_WEBHOOK_SECRET) before trusting anything in
the body, and drops a delivery id it has already seen (warden delivers at least once): the
body's `delivery_id`, which the signature covers, not the X-Warden-Delivery header, which
anyone replaying a body could change.

    WARDEN_WEBHOOK_SECRET=... python3 example/notify-receiver.py [port]
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["WARDEN_WEBHOOK_SECRET"].encode()
MAX_BODY = 64 * 1024
seen = set()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_response(413)
            self.end_headers()
            return
        body = self.rfile.read(length)
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self.headers.get("X-Warden-Signature", "")):
            print("refused a notification with a bad signature", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        n = json.loads(body)
        delivery = n.get("delivery_id", "")
        # Answered 200 all the same: the sender need not try again.
        self.send_response(200)
        self.end_headers()
        if delivery in seen:
            return
        seen.add(delivery)
        print(
            f"notification {n['event']}: request {n['request_id']} ({n['flow']}) "
            f"of {n['requester']} is {n['state']}"
            + (f", reason: {n['reason']}" if n.get("reason") else "")
            + (f", hook {n['hook']}: {n['error']}" if n.get("hook") else "")
            + f" [signature ok, {delivery}]",
            flush=True,
        )

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 18090
# Bound before it says so: a port already taken ends the script with the error, and
# scripts/example names the port instead of sending notifications to whatever holds it.
server = HTTPServer(("127.0.0.1", port), Handler)
print(f"listening on http://127.0.0.1:{port}", flush=True)
server.serve_forever()
