"""Local HTTP receivers standing in for Splunk HEC, Datadog intake and webhook endpoints.

They check nothing themselves; they record what arrives so tests can check the format,
headers and signatures, and can be told to fail or to be slow.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, port: int = 0):
        self.requests: list[dict] = []
        self.fail_next = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    failing = receiver.fail_next > 0
                    if failing:
                        receiver.fail_next -= 1
                    else:
                        receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if receiver.delay:
                    time.sleep(receiver.delay)  # accepted, but the answer comes late
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"text": "Success", "code": 0}' if not failing else b'{"error": "down"}')

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def events(self, kind: str) -> list[dict]:
        """Every event received, decoded from the stream's wire format."""
        out = []
        for request in self.requests:
            body = request["body"].decode()
            if kind == "splunk_hec":
                decoder, idx = json.JSONDecoder(), 0
                while idx < len(body):
                    obj, idx = decoder.raw_decode(body, idx)
                    out.append(obj["event"])
            elif kind == "datadog":
                out.extend(json.loads(item["message"]) for item in json.loads(body))
            else:
                out.extend(json.loads(body)["events"])
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()
