"""A local server that behaves like the part of Notion's public API that Levqor uses.

`POST /v1/databases/{id}/query` (a `rich_text equals` or `title equals` filter),
`POST /v1/pages` (parent database) and `PATCH /v1/pages/{id}`. Like Notion it answers
401 `unauthorized` without the right bearer token, 400 `missing_version` without a
`Notion-Version` header, 404 `object_not_found` for an unknown database or page, and
400 `validation_error` for a property the database does not have or a value of the
wrong type. Errors use Notion's shape: `{"object": "error", "status", "code", "message"}`.
"""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The "Tenant Billing" database's properties and their types.
TENANT_BILLING_SCHEMA = {
    "Name": "title", "Key": "rich_text", "Plan": "rich_text", "Status": "rich_text", "Period": "rich_text",
    "API calls": "number", "Workflow runs": "number", "Storage GB": "number",
}


class LocalNotion:
    def __init__(self, token: str, database_id: str, schema: dict | None = None):
        self.token, self.database_id = token, database_id
        self.schema = schema or TENANT_BILLING_SCHEMA
        self.pages: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "LocalNotion":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = server.dispatch(method, self.path, dict(self.headers), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def rows(self) -> list[dict]:
        """Each page's properties as plain values: {"Name": "...", "API calls": 3, ...}."""
        with self.lock:
            return [_plain(p["properties"]) for p in self.pages.values()]

    # --- the API ------------------------------------------------------------------

    def dispatch(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        headers = {k.lower(): v for k, v in headers.items()}
        self.requests.append((method, path))
        if headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "API token is invalid.")
        if not headers.get("notion-version"):
            return _error(400, "missing_version", "Notion-Version header failed validation.")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _error(400, "invalid_json", "Error parsing JSON body.")
        parts = path.strip("/").split("/")
        with self.lock:
            if method == "POST" and parts[:2] == ["v1", "databases"] and len(parts) == 4 and parts[3] == "query":
                return self._query(parts[2], body)
            if method == "POST" and parts == ["v1", "pages"]:
                return self._create(body)
            if method == "PATCH" and parts[:2] == ["v1", "pages"] and len(parts) == 3:
                return self._update(parts[2], body)
        return _error(400, "invalid_request_url", "Invalid request URL.")

    def _query(self, database_id: str, body: dict) -> tuple[int, dict]:
        if database_id != self.database_id:
            return _error(404, "object_not_found", f"Could not find database with ID: {database_id}.")
        f = body.get("filter") or {}
        prop = f.get("property")
        kind = next((k for k in ("rich_text", "title") if k in f), None)
        results = list(self.pages.values())
        if prop:
            if prop not in self.schema or kind is None:
                return _error(400, "validation_error", f"Could not find property with name or id: {prop}")
            wanted = f[kind].get("equals")
            results = [p for p in results if _plain(p["properties"]).get(prop) == wanted]
        size = min(int(body.get("page_size") or 100), 100)
        return 200, {"object": "list", "results": results[:size], "has_more": len(results) > size, "next_cursor": None}

    def _validate(self, properties) -> tuple[int, dict] | None:
        if not isinstance(properties, dict):
            return _error(400, "validation_error", "body.properties should be an object.")
        for name, value in properties.items():
            kind = self.schema.get(name)
            if kind is None:
                return _error(400, "validation_error", f"{name} is not a property that exists.")
            if not isinstance(value, dict) or kind not in value:
                return _error(400, "validation_error", f"{name} is expected to be {kind}.")
            if kind == "number" and not isinstance(value["number"], (int, float)):
                return _error(400, "validation_error", f"{name} is expected to be a number.")
        return None

    def _create(self, body: dict) -> tuple[int, dict]:
        parent = body.get("parent") or {}
        if parent.get("database_id") != self.database_id:
            return _error(404, "object_not_found", "Could not find database.")
        problem = self._validate(body.get("properties"))
        if problem:
            return problem
        page = {"object": "page", "id": str(uuid.uuid4()), "parent": {"type": "database_id", **parent},
                "properties": body["properties"]}
        self.pages[page["id"]] = page
        return 200, page

    def _update(self, page_id: str, body: dict) -> tuple[int, dict]:
        page = self.pages.get(page_id)
        if page is None:
            return _error(404, "object_not_found", f"Could not find page with ID: {page_id}.")
        problem = self._validate(body.get("properties"))
        if problem:
            return problem
        page["properties"] = {**page["properties"], **body["properties"]}
        return 200, page


def _plain(properties: dict) -> dict:
    out = {}
    for name, value in properties.items():
        if "title" in value or "rich_text" in value:
            parts = value.get("title") or value.get("rich_text") or []
            out[name] = "".join(p.get("text", {}).get("content", "") for p in parts)
        elif "number" in value:
            out[name] = value["number"]
    return out


def _error(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"object": "error", "status": status, "code": code, "message": message}
