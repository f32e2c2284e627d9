"""A local, stateful Stripe API over plain HTTP, for tests and benchmarks.

Point the official SDK at it and it answers like Stripe's test mode, from memory:

    server = LocalStripe(); server.start()
    client = stripe.StripeClient("sk_test_...", base_addresses={"api": server.url},
                                 max_network_retries=0)
    # or, for the module-level API: stripe.api_base = server.url

Run on its own with `python tests/stripe_server.py --port 12111` (prints the URL and
serves until killed).

Shapes come from Stripe's published example objects (`fixtures3.json`, read from
$LEVQOR_STRIPE_FIXTURES, else `../shared/stripe/` beside the repository, else
`/work/shared/stripe/`): every object is a deep copy of its type's example with id,
created, livemode and the fields the request set overridden, so the SDK and dj-stripe's
`sync_from_stripe_data` see what real responses look like (a subscription's `items`
hold full `price` objects; `customer` on subscriptions and invoices is an id).
Optional fields that the examples fill with sample data (a discount, a transfer
destination `obj_123`, shipping costs) are reset to what a fresh object carries.

Modelled:
  * `/v1` endpoints for the account, products, prices, billing meters, meter events and
    their summaries, customers (with `search`), subscriptions and their items, invoices,
    billing-portal and checkout sessions (with `expire`), the payment intent and charge a
    payment-mode checkout makes, refunds, connected accounts, transfers and their balance
    transactions, webhook endpoints and events, plus the empty product-features list
    dj-stripe asks for (the table is `LocalStripe._build_routes`).
  * Stripe's request conventions: `Bearer sk_test_...` or Basic auth; bracket-notation
    form bodies; error bodies `{"error": {type, code, message, param}}`; list objects
    with `limit`, `starting_after`, `ending_before` and `has_more`; `Idempotency-Key`
    replay (only successful or executed requests are saved, as at Stripe: validation
    failures, auth failures and injected failures are not, so a retry may succeed).
  * Rules real code trips on: unique price `lookup_key` (unless `transfer_lookup_key`),
    one active meter per `event_name`, metered prices need a meter and take no
    quantity, meter-event timestamps within the past 35 days / next 5 minutes, summary
    ranges aligned to minutes, a retrieved deleted customer answers `deleted: true`
    (https://docs.stripe.com/api/customers/retrieve) while updating it is a 404.
  * Events for every state change, each with the full object after the change (and
    `previous_attributes` on `*.updated`), POSTed in order from one background thread
    to the registered webhook endpoints with a `Stripe-Signature` header signed exactly
    as Stripe signs; `server.deliveries` records each attempt.
  * Test controls under `/_local/` (no auth) and as methods, standing in for the
    dashboard and test clocks: change a subscription's price, create a paid or failed
    invoice (driving `past_due` and back), complete a checkout session, decline its
    payment (`fail_checkout_payment`: payment_intent.payment_failed, the session stays
    open), cancel a subscription; `fail_next()` injects errors. Portal and checkout session `url`s
    are small HTML pages a browser can follow (checkout's "Pay" redirects to
    `success_url`).

Duplicate meter-event identifiers: Stripe documents that it "will enforce uniqueness
[of `identifier`] within a rolling period of at least 24 hours"
(https://docs.stripe.com/api/billing/meter-event/create) without saying how; the
reported production answer is a 400 `invalid_request_error` with the message
"An event already exists with identifier <id>." and no `code` (langfuse/langfuse
pull request #16292, which also notes `Stripe-Should-Retry: false`). This server
answers exactly that and counts the event once; identifiers stay taken for the
server's lifetime. Callers should treat that rejection as "already recorded".

Not modelled: cards and payment methods, payment intents and charges other than a
checkout's (no `/v1/payment_intents` create or confirm), disputes, taxes, coupons,
prorations and proration invoices, trials, test clocks (periods never roll over;
invoices appear only through `create_invoice` or a completed subscription checkout),
`expand` (ignored: ids stay ids), API-version differences, search's indexing delay
(results are immediate), webhook retries, event types beyond those emitted here, and
rejecting unknown parameters (Stripe answers "Received unknown parameter"; here they
are ignored). Webhooks go only to loopback addresses; any other URL is recorded as
not delivered.
"""
from __future__ import annotations

import argparse
import base64
import calendar
import copy
import datetime
import functools
import hashlib
import hmac
import html
import ipaddress
import json
import os
import queue
import re
import secrets
import string
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

FIXTURES_ENV = "LEVQOR_STRIPE_FIXTURES"
# The version stripe-python 15.6.2 (pinned in requirements.txt) sends; events carry it.
API_VERSION = "2026-08-26.dahlia"
MAX_BODY_BYTES = 1 << 20
ALNUM = string.ascii_letters + string.digits

Json = dict[str, Any]

# Stripe's examples fill optional fields with sample data; objects made here have none
# of it, so these fields are reset to what a fresh test-mode object carries.
_FRESH: dict[str, Json] = {
    "customer": {
        "discount": None, "address": None, "shipping": None, "currency": None, "default_source": None,
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                             "rendering_options": None},
    },
    "product": {
        "default_price": None, "description": None, "package_dimensions": None, "images": [],
        "marketing_features": [], "shippable": None, "url": None, "unit_label": None,
        "statement_descriptor": None, "tax_code": None, "type": "service",
    },
    "price": {"custom_unit_amount": None, "transform_quantity": None},
    "subscription": {
        "cancel_at": None, "canceled_at": None, "ended_at": None, "trial_start": None, "trial_end": None,
        "cancel_at_period_end": False, "pending_update": None, "pause_collection": None,
        "transfer_data": None, "billing_cycle_anchor_config": None, "pending_invoice_item_interval": None,
        "next_pending_invoice_item_invoice": None, "billing_thresholds": None, "billing_schedules": [],
        "managed_payments": {"enabled": False},
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
    },
    "subscription_item": {"billing_thresholds": None, "discounts": []},
    "invoice": {
        "from_invoice": None, "last_finalization_error": None, "shipping_cost": None,
        "shipping_details": None, "customer_shipping": None, "customer_address": None, "amount_overpaid": 0,
        "due_date": None, "webhooks_delivered_at": None, "next_payment_attempt": None,
        "automatic_tax": {"enabled": False, "liability": None, "status": None, "disabled_reason": None,
                          "provider": None},
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
    },
    "line_item": {"discount_amounts": [], "discounts": [], "pretax_credit_amounts": None, "taxes": [],
                  "quantity_decimal": None},
    "checkout.session": {
        "after_expiration": None, "shipping_cost": None, "shipping_address_collection": None,
        "shipping_options": [], "currency_conversion": None, "collected_information": None,
        "payment_method_configuration_details": None, "consent": None, "consent_collection": None,
        "customer_details": None, "payment_intent": None, "invoice_creation": None,
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "adaptive_pricing": {"enabled": False}, "managed_payments": {"enabled": False},
        "automatic_tax": {"enabled": False, "liability": None, "status": None, "provider": None},
    },
    "billing_portal.session": {"flow": None, "locale": None, "on_behalf_of": None},
    "webhook_endpoint": {"description": None, "api_version": None, "application": None},
    "billing.meter": {"event_time_window": None},
    "transfer": {"source_type": "card", "description": None},
    "payment_intent": {
        "application": None, "application_fee_amount": None, "canceled_at": None, "cancellation_reason": None,
        "description": None, "last_payment_error": None, "next_action": None, "on_behalf_of": None,
        "payment_method": None, "processing": None, "receipt_email": None, "review": None, "shipping": None,
        "source": None, "statement_descriptor": None, "statement_descriptor_suffix": None,
        "transfer_data": None, "transfer_group": None, "customer_account": None,
        "payment_method_configuration_details": None, "managed_payments": {"enabled": False},
    },
    "charge": {
        "application": None, "application_fee": None, "application_fee_amount": None, "description": None,
        "failure_balance_transaction": None, "on_behalf_of": None, "receipt_email": None, "receipt_number": None,
        "review": None, "shipping": None, "source": None, "source_transfer": None, "transfer_data": None,
        "transfer_group": None, "statement_descriptor": None, "statement_descriptor_suffix": None,
    },
    "refund": {"destination_details": {"card": {"type": "refund"}, "type": "card"}, "source_transfer_reversal": None,
               "transfer_reversal": None, "customer": None, "customer_account": None, "payment_method": None},
}
_REQUIRED_FIXTURES = (
    "account", "balance_transaction", "billing.meter", "billing.meter_event", "billing.meter_event_summary",
    "billing_portal.session", "charge", "checkout.session", "customer", "deleted_customer", "deleted_webhook_endpoint",
    "event", "invoice", "line_item", "payment_intent", "plan", "price", "product", "refund", "subscription",
    "subscription_item", "transfer", "webhook_endpoint",
)
# What Stripe calls each kind in "No such <name>: '<id>'".
_NOUN = {
    "customer": "customer", "product": "product", "price": "price", "subscription": "subscription",
    "subscription_item": "subscription item", "invoice": "invoice", "billing.meter": "billing meter",
    "checkout.session": "checkout.session", "account": "account", "transfer": "transfer",
    "payment_intent": "payment_intent", "charge": "charge", "refund": "refund",
    "webhook_endpoint": "webhook endpoint", "event": "event",
}
_SUBSCRIPTION_STATUSES = {"active", "past_due", "unpaid", "canceled", "incomplete", "incomplete_expired",
                          "trialing", "paused", "all"}
_INTERVAL_SECONDS = {"hour": 3600, "day": 86400}


class LocalStripeError(Exception):
    """A Stripe-format API error. `saved` says whether an idempotent replay keeps it:
    Stripe saves results of requests that started executing, not validation failures."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, saved: bool = True,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.saved = saved
        self.headers = headers or {}

    def body(self) -> Json:
        error: Json = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def _missing(param: str) -> LocalStripeError:
    return LocalStripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param,
                            saved=False)


def _invalid(param: str, message: str, code: str = "parameter_invalid") -> LocalStripeError:
    return LocalStripeError(400, message, code=code, param=param, saved=False)


def _no_such(kind: str, object_id: str, param: str = "id", status: int = 404) -> LocalStripeError:
    return LocalStripeError(status, f"No such {_NOUN.get(kind, kind)}: '{object_id}'", code="resource_missing",
                            param=param)


def fixtures_path() -> Path:
    """Where Stripe's fixtures3.json is: $LEVQOR_STRIPE_FIXTURES (which must then exist),
    else ../shared/stripe/ beside the repository, else /work/shared/stripe/."""
    explicit = os.environ.get(FIXTURES_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"${FIXTURES_ENV} is {explicit!r}, which is not a file")
        return Path(explicit)
    repo = Path(__file__).resolve().parent.parent
    candidates = [repo.parent / "shared" / "stripe" / "fixtures3.json", Path("/work/shared/stripe/fixtures3.json")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Stripe's fixtures3.json (from the stripe/openapi repository) was not found; looked in "
        + ", ".join(str(c) for c in candidates) + f". Set ${FIXTURES_ENV} to its path.")


@functools.lru_cache(maxsize=4)
def load_fixtures(path: Path) -> dict[str, Json]:
    resources = json.loads(path.read_text(encoding="utf-8")).get("resources", {})
    missing = [kind for kind in _REQUIRED_FIXTURES if kind not in resources]
    if missing:
        raise ValueError(f"{path} lacks example objects for: {', '.join(missing)}")
    return resources


def new_id(prefix: str, length: int = 14) -> str:
    return f"{prefix}_" + "".join(secrets.choice(ALNUM) for _ in range(length))


# --- request parsing --------------------------------------------------------------------

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_MAPS = {"metadata", "payload"}  # keys whose numeric sub-keys stay a map, never a list


def parse_form(text: str) -> Json:
    """Stripe's bracket notation into nested dicts and lists:
    `items[0][price]=p&expand[]=x&metadata[k]=v` -> {"items": [{"price": "p"}], "expand": ["x"],
    "metadata": {"k": "v"}}. Values stay strings, as sent."""
    root: Json = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        head, bracket, rest = key.partition("[")
        parts = [head]
        if bracket:
            parts += _BRACKET.findall("[" + rest)
            if "".join(f"[{p}]" for p in parts[1:]) != "[" + rest:
                raise _invalid(key, f"Invalid parameter name: {key}")
        node = root
        for depth, part in enumerate(parts):
            part = part or str(len(node))  # `a[]` appends
            if depth == len(parts) - 1:
                if isinstance(node.get(part), dict):
                    raise _invalid(key, f"Invalid parameter: {key} is both a value and a hash")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise _invalid(key, f"Invalid parameter: {key} is both a value and a hash")
                node = child
    return {key: _listify(value, key) for key, value in root.items()}


def _listify(node: Any, key: str) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v, k) for k, v in node.items()}
    if key not in _MAPS and converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def _int(params: Json, name: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise _invalid(name, f"Invalid integer: {raw}", "parameter_invalid_integer") from None
    if minimum is not None and value < minimum:
        raise _invalid(name, f"This value must be greater than or equal to {minimum}.", "parameter_invalid_integer")
    return value


def _bool(params: Json, name: str, default: bool | None = None) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if raw in ("true", "false"):
        return raw == "true"
    raise _invalid(name, f"Invalid boolean: {raw}")


def _str(params: Json, name: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise _missing(name)
        return None
    if not isinstance(raw, str):
        raise _invalid(name, f"Invalid string: {name} must be a string")
    if choices and raw not in choices:
        raise _invalid(name, f"Invalid {name}: must be one of {', '.join(choices)}")
    return raw


def _list_param(params: Json, name: str) -> list[Any]:
    raw = params.get(name)
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return raw
    raise _invalid(name, f"Invalid array: {name}")


def _decimal(raw: Any, param: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise _invalid(param, f"Invalid decimal: {raw}") from None
    if not value.is_finite():
        raise _invalid(param, f"Invalid decimal: {raw}")
    return value


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _merge_metadata(current: dict[str, str], raw: Any) -> dict[str, str]:
    """Stripe's rules: `metadata=` clears it, `metadata[k]=` removes k, others set."""
    if raw is None:
        return current
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _invalid("metadata", "Invalid metadata: must be a hash")
    merged = dict(current)
    for key, value in raw.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


def _previous_attributes(before: Json, after: Json) -> Json:
    """Stripe's `previous_attributes`: the old value of each changed field; for
    metadata only the changed keys (None where a key is new)."""
    changed: Json = {}
    for key, old in before.items():
        new = after.get(key)
        if old == new:
            continue
        if key == "metadata" and isinstance(old, dict) and isinstance(new, dict):
            changed[key] = {k: old.get(k) for k in set(old) | set(new) if old.get(k) != new.get(k)}
        else:
            changed[key] = old
    return changed


def _period_end(start: int, interval: str, count: int) -> int:
    moment = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
    if interval in ("day", "week"):
        return start + count * (86400 if interval == "day" else 7 * 86400)
    months = count * (12 if interval == "year" else 1)
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _mask_key(key: str) -> str:
    prefix = key[:8] if key.startswith(("sk_", "rk_", "pk_")) else ""
    tail = key[-4:] if len(key) > len(prefix) + 8 else ""
    return prefix + "*" * max(len(key) - len(prefix) - len(tail), 4) + tail


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Delivery:
    """One attempt to POST an event to a webhook endpoint; `status` is None when the
    endpoint could not be reached (or is not on this machine)."""
    event_id: str
    event_type: str
    endpoint_id: str
    url: str
    status: int | None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, payload: Json, headers: dict[str, str] | None = None) -> _Reply:
        return cls(status, json.dumps(payload, indent=2).encode(), "application/json", headers or {})

    @classmethod
    def page(cls, status: int, title: str, body: str) -> _Reply:
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
        return cls(status, page.encode(), "text/html; charset=utf-8")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    stripe: LocalStripe


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests session expects
    # Headers and body go out in two writes; with Nagle on, the second waits for a
    # delayed ACK and every request costs ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            reply = _Reply.of_json(400, LocalStripeError(400, "Invalid or too large request body.").body())
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            reply = self.server.stripe._dispatch(self.command, self.path, dict(self.headers.items()), body)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests read `LocalStripe.requests` instead."""


class LocalStripe:
    """The server. All state sits behind one lock; see the module docstring."""

    def __init__(self, *, api_key: str | None = None, delivery_timeout: float = 2.0) -> None:
        self.api_key = api_key  # when set, only this exact key is accepted
        self.delivery_timeout = delivery_timeout
        self._fixtures = load_fixtures(fixtures_path())
        self._lock = threading.RLock()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._deliver_thread: threading.Thread | None = None
        self._outbox: queue.Queue[tuple[int, str, str, bytes, list[tuple[str, str, str]]] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending_deliveries = 0
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._generation = 0
        self._request_context: Json = {"id": None, "idempotency_key": None}
        self._routes = self._build_routes()
        self._clear()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, port: int = 0) -> LocalStripe:
        """Bind 127.0.0.1 (`port` 0: a free one) and serve from daemon threads."""
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.stripe = self
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                              name="local-stripe", daemon=True)
        self._serve_thread.start()
        self._deliver_thread = threading.Thread(target=self._deliver_forever, name="local-stripe-webhooks",
                                                daemon=True)
        self._deliver_thread.start()
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("LocalStripe is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        if self._httpd is not None and self._serve_thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._serve_thread.join()
        if self._deliver_thread is not None:
            self._outbox.put(None)
            self._deliver_thread.join(timeout=self.delivery_timeout + 1)
        self._httpd = self._serve_thread = self._deliver_thread = None

    def reset(self) -> None:
        """Forget every object, event, request, delivery and injected failure; webhooks
        still queued from before are dropped."""
        with self._lock:
            self._generation += 1
            self._clear()

    def _clear(self) -> None:
        self._store: dict[str, dict[str, Json]] = {}
        self._deleted_customers: dict[str, Json] = {}
        self._endpoint_secrets: dict[str, str] = {}
        self._checkout_lines: dict[str, list[tuple[Json, int | None]]] = {}
        self._checkout_intent_metadata: dict[str, dict[str, str]] = {}
        self._idempotency: dict[str, tuple[str, str, Json, _Reply]] = {}
        self._requests: list[tuple[str, str, Json]] = []
        self._deliveries: list[Delivery] = []
        self._failures: list[list[Any]] = []
        account = self._fresh("account", new_id("acct", 16))
        account.update(charges_enabled=True, payouts_enabled=True, details_submitted=True, email=None,
                       type="standard")
        for key in ("requirements", "future_requirements"):
            account[key] = {**account[key], "currently_due": [], "eventually_due": [], "past_due": [],
                            "disabled_reason": None}
        self._platform_account_id = account["id"]
        self._put("account", account)

    # --- Python-side helpers for tests ----------------------------------------------------

    def objects(self, kind: str) -> list[Json]:
        """Copies of the stored objects of a type ("customer", "billing.meter_event", ...),
        oldest first. Deleted customers are not included; "account" includes the platform."""
        with self._lock:
            return copy.deepcopy(list(self._store.get(kind, {}).values()))

    @property
    def requests(self) -> list[tuple[str, str, Json]]:
        """(method, path, params) of every request received, in order."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def fail_next(self, path_prefix: str, status: int = 500, count: int = 1, code: str = "api_error") -> None:
        """The next `count` requests whose path starts with `path_prefix` get a Stripe-format
        error of `status` (type api_error for 5xx, invalid_request_error otherwise)."""
        with self._lock:
            self._failures.append([path_prefix, status, count, code])

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Block until every webhook queued so far was attempted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending_deliveries:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def change_subscription_price(self, subscription_id: str, price_id: str) -> Json:
        """Swap the price of the subscription's licensed (plan) item, as a dashboard
        plan change does: emits customer.subscription.updated."""
        with self._lock:
            return copy.deepcopy(self._local_change_price({"price": price_id}, subscription_id))

    def create_invoice(self, subscription_id: str, *, paid: bool = True, amount_due: int | None = None) -> Json:
        """Bill the subscription now: invoice.created, then invoice.paid or
        invoice.payment_failed, moving the subscription to past_due and back."""
        params = {"subscription": subscription_id, "paid": "true" if paid else "false"}
        if amount_due is not None:
            params["amount_due"] = str(amount_due)
        with self._lock:
            return copy.deepcopy(self._local_create_invoice(params))

    def complete_checkout(self, session_id: str) -> Json:
        """Pay a checkout session as a customer would: checkout.session.completed (after
        the customer, subscription and first invoice in subscription mode)."""
        with self._lock:
            return copy.deepcopy(self._complete_checkout(session_id))

    def fail_checkout_payment(self, session_id: str, decline_code: str = "card_declined") -> Json:
        """The customer's card is declined on the checkout page: charge.failed and
        payment_intent.payment_failed; the session stays open (they may try another card).
        Returns the payment intent."""
        with self._lock:
            return copy.deepcopy(self._fail_checkout_payment(session_id, decline_code))

    def expire_checkout(self, session_id: str) -> Json:
        """What Stripe does 24 hours after an unpaid session was created (or on `expire`)."""
        with self._lock:
            return copy.deepcopy(self._expire_checkout_session({}, session_id))

    def cancel_subscription(self, subscription_id: str) -> Json:
        with self._lock:
            return copy.deepcopy(self._cancel_subscription(self._get("subscription", subscription_id)))

    # --- dispatch -------------------------------------------------------------------------

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., Json | _Reply]]]:
        ident = r"(?P<id>[^/]+)"
        table: list[tuple[str, str, Callable[..., Json | _Reply]]] = [
            ("GET", "/v1/account", self._get_account),
            ("POST", "/v1/accounts", self._create_account),
            ("GET", f"/v1/accounts/{ident}", self._retriever("account")),
            ("POST", "/v1/products", self._create_product),
            ("GET", "/v1/products", self._list_products),
            ("GET", f"/v1/products/{ident}", self._retriever("product")),
            ("POST", f"/v1/products/{ident}", self._update_product),
            ("GET", f"/v1/products/{ident}/features", self._list_product_features),
            ("POST", "/v1/prices", self._create_price),
            ("GET", "/v1/prices", self._list_prices),
            ("GET", f"/v1/prices/{ident}", self._retriever("price")),
            ("POST", f"/v1/prices/{ident}", self._update_price),
            ("POST", "/v1/billing/meters", self._create_meter),
            ("GET", "/v1/billing/meters", self._list_meters),
            ("GET", f"/v1/billing/meters/{ident}", self._retriever("billing.meter")),
            ("POST", f"/v1/billing/meters/{ident}/deactivate", self._meter_status_setter("inactive")),
            ("POST", f"/v1/billing/meters/{ident}/reactivate", self._meter_status_setter("active")),
            ("GET", f"/v1/billing/meters/{ident}/event_summaries", self._list_event_summaries),
            ("POST", "/v1/billing/meter_events", self._create_meter_event),
            ("POST", "/v1/customers", self._create_customer),
            ("GET", "/v1/customers", self._list_customers),
            ("GET", "/v1/customers/search", self._search_customers),
            ("GET", f"/v1/customers/{ident}", self._retrieve_customer),
            ("POST", f"/v1/customers/{ident}", self._update_customer),
            ("DELETE", f"/v1/customers/{ident}", self._delete_customer),
            ("POST", "/v1/subscriptions", self._create_subscription_endpoint),
            ("GET", "/v1/subscriptions", self._list_subscriptions),
            ("GET", f"/v1/subscriptions/{ident}", self._retriever("subscription")),
            ("POST", f"/v1/subscriptions/{ident}", self._update_subscription),
            ("DELETE", f"/v1/subscriptions/{ident}", self._delete_subscription),
            ("GET", "/v1/subscription_items", self._list_subscription_items),
            ("GET", f"/v1/subscription_items/{ident}", self._retriever("subscription_item")),
            ("GET", "/v1/invoices", self._list_invoices),
            ("GET", f"/v1/invoices/{ident}", self._retriever("invoice")),
            ("POST", "/v1/billing_portal/sessions", self._create_portal_session),
            ("POST", "/v1/checkout/sessions", self._create_checkout_session),
            ("GET", "/v1/checkout/sessions", self._list_checkout_sessions),
            ("GET", f"/v1/checkout/sessions/{ident}", self._retriever("checkout.session")),
            ("POST", f"/v1/checkout/sessions/{ident}/expire", self._expire_checkout_session),
            ("GET", f"/v1/payment_intents/{ident}", self._retriever("payment_intent")),
            ("GET", "/v1/charges", self._list_charges),
            ("GET", f"/v1/charges/{ident}", self._retriever("charge")),
            ("POST", "/v1/refunds", self._create_refund),
            ("GET", "/v1/refunds", self._list_refunds),
            ("GET", f"/v1/refunds/{ident}", self._retriever("refund")),
            ("POST", "/v1/transfers", self._create_transfer),
            ("GET", "/v1/transfers", self._list_transfers),
            ("GET", f"/v1/transfers/{ident}", self._retriever("transfer")),
            ("GET", f"/v1/balance_transactions/{ident}", self._retriever("balance_transaction")),
            ("POST", "/v1/webhook_endpoints", self._create_webhook_endpoint),
            ("GET", "/v1/webhook_endpoints", self._list_webhook_endpoints),
            ("GET", f"/v1/webhook_endpoints/{ident}", self._retriever("webhook_endpoint")),
            ("DELETE", f"/v1/webhook_endpoints/{ident}", self._delete_webhook_endpoint),
            ("GET", "/v1/events", self._list_events),
            ("GET", f"/v1/events/{ident}", self._retriever("event")),
            ("POST", f"/_local/subscriptions/{ident}/change_price", self._local_change_price),
            ("POST", f"/_local/subscriptions/{ident}/cancel", self._local_cancel),
            ("POST", "/_local/invoices", self._local_create_invoice),
            ("GET", f"/_local/checkout/{ident}", self._checkout_page),
            ("POST", f"/_local/checkout/{ident}/complete", self._local_complete_checkout),
            ("POST", f"/_local/checkout/{ident}/fail", self._local_fail_checkout),
            ("GET", f"/_local/portal/{ident}", self._portal_page),
        ]
        return [(method, re.compile(pattern + "$"), handler) for method, pattern, handler in table]

    def _dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        parts = urlsplit(raw_path)
        path = parts.path
        headers = {name.lower(): value for name, value in headers.items()}
        request_id = new_id("req")
        try:
            params = parse_form(body.decode("utf-8") if method == "POST" else parts.query)
        except (LocalStripeError, UnicodeDecodeError) as exc:
            with self._lock:
                self._requests.append((method, path, {}))
            error = exc if isinstance(exc, LocalStripeError) else LocalStripeError(400, "Body is not UTF-8.")
            return _Reply.of_json(error.status, error.body(), {"Request-Id": request_id})
        with self._lock:
            self._requests.append((method, path, params))
            reply = self._answer(method, path, params, headers, request_id)
            reply.headers.setdefault("Request-Id", request_id)
        return reply

    def _answer(self, method: str, path: str, params: Json, headers: dict[str, str], request_id: str) -> _Reply:
        try:
            if path.startswith("/v1/") or path == "/v1":
                self._authenticate(headers.get("authorization", ""))
            self._inject_failure(method, path)
            handler, path_args = self._route(method, path)
        except LocalStripeError as exc:
            return _Reply.of_json(exc.status, exc.body(), exc.headers)

        key = headers.get("idempotency-key") if method == "POST" and path.startswith("/v1/") else None
        if key:
            saved = self._idempotency.get(key)
            if saved is not None:
                saved_method, saved_path, saved_params, saved_reply = saved
                if (saved_method, saved_path, saved_params) != (method, path, params):
                    error = LocalStripeError(
                        400, "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request.", type_="idempotency_error", saved=False)
                    return _Reply.of_json(400, error.body())
                return _Reply(saved_reply.status, saved_reply.body, saved_reply.content_type,
                              {**saved_reply.headers, "Idempotent-Replayed": "true", "Idempotency-Key": key})

        self._request_context = {"id": request_id, "idempotency_key": key}
        try:
            result = handler(params, **path_args)
            reply = result if isinstance(result, _Reply) else _Reply.of_json(200, result)
            keep = True
        except LocalStripeError as exc:
            reply, keep = _Reply.of_json(exc.status, exc.body(), exc.headers), exc.saved
        except Exception as exc:  # a bug here, not the client's: answer as Stripe's own failures look
            traceback.print_exc()
            error = LocalStripeError(500, f"Local Stripe failed: {exc!r}", type_="api_error")
            reply, keep = _Reply.of_json(500, error.body()), False
        finally:
            self._request_context = {"id": None, "idempotency_key": None}
        if key:
            reply.headers["Idempotency-Key"] = key
            if keep:
                self._idempotency[key] = (method, path, params, reply)
        return reply

    def _authenticate(self, authorization: str) -> None:
        scheme, _, credentials = authorization.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credentials.strip()
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credentials.strip()).decode().partition(":")[0]
            except ValueError:
                key = ""
        if not key:
            raise LocalStripeError(
                401, "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        valid = key.startswith(("sk_test_", "rk_test_")) and len(key) > len("sk_test_")
        if not valid or (self.api_key is not None and not hmac.compare_digest(key, self.api_key)):
            raise LocalStripeError(401, f"Invalid API Key provided: {_mask_key(key)}")

    def _inject_failure(self, method: str, path: str) -> None:
        for failure in self._failures:
            prefix, status, remaining, code = failure
            if remaining > 0 and path.startswith(prefix):
                failure[2] -= 1
                self._failures = [f for f in self._failures if f[2] > 0]
                type_ = "api_error" if status >= 500 else "invalid_request_error"
                raise LocalStripeError(status, f"Injected failure (fail_next) for {method} {path}.", type_=type_,
                                       code=code)

    def _route(self, method: str, path: str) -> tuple[Callable[..., Json | _Reply], dict[str, str]]:
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                return handler, {name: unquote(value) for name, value in match.groupdict().items()}
        raise LocalStripeError(404, f"Unrecognized request URL ({method}: {path}).")

    # --- storage and shapes ---------------------------------------------------------------

    def _fresh(self, kind: str, object_id: str) -> Json:
        obj = copy.deepcopy(self._fixtures[kind])
        obj.update(copy.deepcopy(_FRESH.get(kind, {})))
        obj["id"] = object_id
        if "created" in obj:
            obj["created"] = int(time.time())
        if "livemode" in obj:
            obj["livemode"] = False
        if "metadata" in obj:
            obj["metadata"] = {}
        return obj

    def _put(self, kind: str, obj: Json) -> Json:
        self._store.setdefault(kind, {})[obj["id"]] = obj
        return obj

    def _get(self, kind: str, object_id: str, *, param: str = "id", status: int = 404) -> Json:
        obj = self._store.get(kind, {}).get(object_id)
        if obj is None:
            raise _no_such(kind, object_id, param, status)
        return obj

    def _newest_first(self, kind: str) -> list[Json]:
        return list(reversed(self._store.get(kind, {}).values()))

    def _retriever(self, kind: str) -> Callable[..., Json]:
        def retrieve(params: Json, id: str) -> Json:  # noqa: A002 - the path parameter's name
            return self._get(kind, id)
        return retrieve

    @staticmethod
    def _page(url: str, items: list[Json], params: Json) -> Json:
        limit = _int(params, "limit", 10, minimum=1)
        if limit is not None and limit > 100:
            raise _invalid("limit", "This value must be less than or equal to 100.", "parameter_invalid_integer")
        assert limit is not None
        ids = [item["id"] for item in items]
        after, before = _str(params, "starting_after"), _str(params, "ending_before")
        if after is not None:
            if after not in ids:
                raise _invalid("starting_after", f"No such object: '{after}'", "resource_missing")
            rest = items[ids.index(after) + 1:]
            page, has_more = rest[:limit], len(rest) > limit
        elif before is not None:
            if before not in ids:
                raise _invalid("ending_before", f"No such object: '{before}'", "resource_missing")
            rest = items[:ids.index(before)]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        return {"object": "list", "data": page, "has_more": has_more, "url": url}

    def _emit(self, event_type: str, obj: Json, previous: Json | None = None) -> Json:
        """Record an event with a snapshot of `obj` and queue it for every endpoint that
        listens to its type."""
        event = self._fresh("event", new_id("evt", 24))
        data: Json = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        targets = [(endpoint["id"], endpoint["url"], self._endpoint_secrets[endpoint["id"]])
                   for endpoint in self._store.get("webhook_endpoint", {}).values()
                   if endpoint["status"] == "enabled"
                   and (event_type in endpoint["enabled_events"] or "*" in endpoint["enabled_events"])]
        event.update(type=event_type, data=data, api_version=API_VERSION, pending_webhooks=len(targets),
                     request=dict(self._request_context))
        self._put("event", event)
        if targets:
            with self._idle:
                self._pending_deliveries += 1
            self._outbox.put((self._generation, event["id"], event_type, json.dumps(event, indent=2).encode(),
                              targets))
        return event

    def _updated(self, event_type: str, obj: Json, before: Json) -> None:
        previous = _previous_attributes(before, obj)
        if previous:
            self._emit(event_type, obj, previous)

    # --- webhooks -------------------------------------------------------------------------

    def _deliver_forever(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            generation, event_id, event_type, body, targets = item
            for endpoint_id, url, secret in targets:
                if generation != self._generation:
                    break
                status = self._post_signed(url, body, secret) if _is_loopback(url) else None
                with self._lock:
                    if generation != self._generation:
                        break
                    self._deliveries.append(Delivery(event_id, event_type, endpoint_id, url, status))
                    event = self._store.get("event", {}).get(event_id)
                    if event is not None and status is not None and 200 <= status < 300:
                        event["pending_webhooks"] -= 1
            with self._idle:
                self._pending_deliveries -= 1
                self._idle.notify_all()

    def _post_signed(self, url: str, body: bytes, secret: str) -> int | None:
        """POST as Stripe does: `Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">`."""
        timestamp = int(time.time())
        signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": f"t={timestamp},v1={signature}",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        })
        try:
            with self._opener.open(request, timeout=self.delivery_timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _create_webhook_endpoint(self, params: Json) -> Json:
        url = _str(params, "url", required=True)
        assert url is not None
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise _invalid("url", f"Invalid URL: {url}", "url_invalid")
        events = _list_param(params, "enabled_events")
        if not events:
            raise _missing("enabled_events")
        endpoint = self._fresh("webhook_endpoint", new_id("we", 24))
        endpoint.update(url=url, enabled_events=[str(e) for e in events], status="enabled",
                        description=_str(params, "description"), api_version=_str(params, "api_version"),
                        metadata=_merge_metadata({}, params.get("metadata")))
        secret = "whsec_" + "".join(secrets.choice(ALNUM) for _ in range(32))
        self._endpoint_secrets[endpoint["id"]] = secret
        self._put("webhook_endpoint", endpoint)
        return {**endpoint, "secret": secret}  # the secret is shown once, on creation

    def _list_webhook_endpoints(self, params: Json) -> Json:
        return self._page("/v1/webhook_endpoints", self._newest_first("webhook_endpoint"), params)

    def _delete_webhook_endpoint(self, params: Json, id: str) -> Json:  # noqa: A002
        self._get("webhook_endpoint", id)
        del self._store["webhook_endpoint"][id]
        return {**self._fixtures["deleted_webhook_endpoint"], "id": id}

    # --- account, connected accounts, transfers -----------------------------------------

    def _get_account(self, params: Json) -> Json:
        return self._get("account", self._platform_account_id)

    def _create_account(self, params: Json) -> Json:
        account_type = _str(params, "type", required=True, choices=("express", "standard", "custom"))
        account = self._fresh("account", new_id("acct", 16))
        account.update(type=account_type, email=_str(params, "email"), country=_str(params, "country") or "US",
                       metadata=_merge_metadata({}, params.get("metadata")), charges_enabled=False,
                       payouts_enabled=False, details_submitted=False)
        return self._put("account", account)

    def _create_transfer(self, params: Json) -> Json:
        amount = _int(params, "amount", minimum=1)
        if amount is None:
            raise _missing("amount")
        currency = _str(params, "currency", required=True)
        destination = _str(params, "destination", required=True)
        assert currency is not None and destination is not None
        if destination == self._platform_account_id or destination not in self._store.get("account", {}):
            raise LocalStripeError(400, f"No such destination: '{destination}'", code="resource_missing",
                                   param="destination")
        transfer = self._fresh("transfer", new_id("tr", 24))
        balance = self._fresh("balance_transaction", new_id("txn", 24))
        balance.update(amount=-amount, net=-amount, fee=0, currency=currency.lower(), source=transfer["id"],
                       type="transfer", reporting_category="transfer", status="available",
                       available_on=balance["created"], description=None)
        self._put("balance_transaction", balance)
        transfer.update(amount=amount, currency=currency.lower(), destination=destination,
                        transfer_group=_str(params, "transfer_group"), description=_str(params, "description"),
                        metadata=_merge_metadata({}, params.get("metadata")),
                        balance_transaction=balance["id"], destination_payment=new_id("py", 14),
                        reversals={"object": "list", "data": [], "has_more": False,
                                   "url": f"/v1/transfers/{transfer['id']}/reversals"})
        self._put("transfer", transfer)
        self._emit("transfer.created", transfer)
        return transfer

    def _list_transfers(self, params: Json) -> Json:
        items = [t for t in self._newest_first("transfer")
                 if params.get("destination") in (None, t["destination"])
                 and params.get("transfer_group") in (None, t["transfer_group"])]
        return self._page("/v1/transfers", items, params)

    # --- products and prices --------------------------------------------------------------

    def _create_product(self, params: Json) -> Json:
        name = _str(params, "name", required=True)
        product_id = _str(params, "id") or new_id("prod")
        if product_id in self._store.get("product", {}):
            raise LocalStripeError(400, "Product already exists.", code="resource_already_exists", param="id")
        product = self._fresh("product", product_id)
        product.update(name=name, active=_bool(params, "active", True), description=_str(params, "description"),
                       metadata=_merge_metadata({}, params.get("metadata")), updated=product["created"])
        self._put("product", product)
        self._emit("product.created", product)
        return product

    def _update_product(self, params: Json, id: str) -> Json:  # noqa: A002
        product = self._get("product", id)
        # Every update handler validates all of its params before changing anything, so a
        # rejected request leaves nothing half-written, as at Stripe.
        changes = {name: _str(params, name) for name in ("name", "description") if params.get(name) is not None}
        changes.update(active=_bool(params, "active", product["active"]),
                       metadata=_merge_metadata(product["metadata"], params.get("metadata")))
        before = copy.deepcopy(product)
        product.update(changes)
        if product != before:
            product["updated"] = int(time.time())
        self._updated("product.updated", product, before)
        return product

    def _list_product_features(self, params: Json, id: str) -> Json:  # noqa: A002
        self._get("product", id)
        return self._page(f"/v1/products/{id}/features", [], params)  # entitlements are not modelled

    def _list_products(self, params: Json) -> Json:
        active = _bool(params, "active")
        ids = set(_list_param(params, "ids"))
        items = [p for p in self._newest_first("product")
                 if (active is None or p["active"] == active) and (not ids or p["id"] in ids)]
        return self._page("/v1/products", items, params)

    def _create_price(self, params: Json) -> Json:
        product_id = _str(params, "product", required=True)
        currency = _str(params, "currency", required=True)
        assert product_id is not None and currency is not None
        self._get("product", product_id, param="product", status=400)
        unit_amount = _int(params, "unit_amount", minimum=0)
        if unit_amount is not None:
            decimal_amount = Decimal(unit_amount)
        elif params.get("unit_amount_decimal") not in (None, ""):
            decimal_amount = _decimal(params["unit_amount_decimal"], "unit_amount_decimal")
            unit_amount = int(decimal_amount) if decimal_amount == decimal_amount.to_integral_value() else None
        else:
            raise _missing("unit_amount")
        recurring = self._recurring(params.get("recurring"))
        lookup_key = _str(params, "lookup_key")
        price = self._fresh("price", new_id("price", 24))
        price.update(product=product_id, currency=currency.lower(), unit_amount=unit_amount,
                     unit_amount_decimal=str(decimal_amount), active=_bool(params, "active", True),
                     nickname=_str(params, "nickname"), lookup_key=lookup_key, billing_scheme="per_unit",
                     tiers_mode=None, recurring=recurring, type="recurring" if recurring else "one_time",
                     tax_behavior=_str(params, "tax_behavior") or "unspecified",
                     metadata=_merge_metadata({}, params.get("metadata")))
        if lookup_key is not None:
            self._claim_lookup_key(lookup_key, _bool(params, "transfer_lookup_key", False))
        self._put("price", price)
        self._emit("price.created", price)
        return price

    def _recurring(self, raw: Any) -> Json | None:
        if raw is None or raw == "":
            return None
        if not isinstance(raw, dict):
            raise _invalid("recurring", "Invalid recurring: must be a hash")
        interval = _str(raw, "interval", choices=("day", "week", "month", "year"))
        if interval is None:
            raise _missing("recurring[interval]")
        usage_type = _str(raw, "usage_type", choices=("licensed", "metered")) or "licensed"
        meter = _str(raw, "meter")
        if usage_type == "metered" and meter is None:
            raise _missing("recurring[meter]")
        if meter is not None:
            if usage_type != "metered":
                raise _invalid("recurring[meter]", "A meter can only be set on a price with usage_type=metered.")
            self._get("billing.meter", meter, param="recurring[meter]", status=400)
        return {"interval": interval, "interval_count": _int(raw, "interval_count", 1, minimum=1), "meter": meter,
                "usage_type": usage_type, "trial_period_days": _int(raw, "trial_period_days")}

    def _claim_lookup_key(self, lookup_key: str, transfer: bool | None, *, claimant: str | None = None) -> None:
        for price in self._store.get("price", {}).values():
            if price["lookup_key"] == lookup_key and price["id"] != claimant:
                if not transfer:
                    raise _invalid("lookup_key", f"A price (`{price['id']}`) already uses that lookup key.")
                before = copy.deepcopy(price)
                price["lookup_key"] = None
                self._updated("price.updated", price, before)

    def _update_price(self, params: Json, id: str) -> Json:  # noqa: A002
        price = self._get("price", id)
        changes = {name: _str(params, name) for name in ("lookup_key", "nickname") if name in params}
        changes.update(active=_bool(params, "active", price["active"]),
                       metadata=_merge_metadata(price["metadata"], params.get("metadata")))
        transfer = _bool(params, "transfer_lookup_key", False)
        if changes.get("lookup_key") is not None:
            self._claim_lookup_key(changes["lookup_key"], transfer, claimant=id)
        before = copy.deepcopy(price)
        price.update(changes)
        for item in self._store.get("subscription_item", {}).values():
            if item["price"]["id"] == id:
                item["price"] = copy.deepcopy(price)
        self._updated("price.updated", price, before)
        return price

    def _list_prices(self, params: Json) -> Json:
        lookup_keys = set(_list_param(params, "lookup_keys"))
        active, product, price_type = _bool(params, "active"), _str(params, "product"), _str(params, "type")
        items = [p for p in self._newest_first("price")
                 if (not lookup_keys or p["lookup_key"] in lookup_keys)
                 and (active is None or p["active"] == active)
                 and product in (None, p["product"]) and price_type in (None, p["type"])]
        return self._page("/v1/prices", items, params)

    # --- billing meters, meter events, summaries -----------------------------------------

    def _create_meter(self, params: Json) -> Json:
        display_name = _str(params, "display_name", required=True)
        event_name = _str(params, "event_name", required=True)
        aggregation = params.get("default_aggregation")
        if not isinstance(aggregation, dict) or not aggregation.get("formula"):
            raise _missing("default_aggregation[formula]")
        formula = _str(aggregation, "formula", choices=("sum", "count", "last"))
        mapping = params.get("customer_mapping") or {}
        values = params.get("value_settings") or {}
        if not isinstance(mapping, dict) or not isinstance(values, dict):
            raise _invalid("customer_mapping", "Invalid customer_mapping or value_settings: must be hashes")
        mapping_type = _str(mapping, "type", choices=("by_id",)) or "by_id"
        if any(m["event_name"] == event_name and m["status"] == "active"
               for m in self._store.get("billing.meter", {}).values()):
            raise _invalid("event_name", f"An active meter with event_name `{event_name}` already exists.")
        meter = self._fresh("billing.meter", new_id("mtr_test", 32))
        meter.update(display_name=display_name, event_name=event_name, default_aggregation={"formula": formula},
                     customer_mapping={"event_payload_key": _str(mapping, "event_payload_key") or "stripe_customer_id",
                                       "type": mapping_type},
                     value_settings={"event_payload_key": _str(values, "event_payload_key") or "value"},
                     status="active", status_transitions={"deactivated_at": None}, updated=meter["created"])
        self._put("billing.meter", meter)
        self._emit("billing.meter.created", meter)
        return meter

    def _list_meters(self, params: Json) -> Json:
        status = _str(params, "status", choices=("active", "inactive"))
        items = [m for m in self._newest_first("billing.meter") if status in (None, m["status"])]
        return self._page("/v1/billing/meters", items, params)

    def _meter_status_setter(self, status: str) -> Callable[..., Json]:
        def set_status(params: Json, id: str) -> Json:  # noqa: A002
            meter = self._get("billing.meter", id)
            if meter["status"] == status:
                raise _invalid("id", f"This meter is already {status}.")
            if status == "active" and any(m["event_name"] == meter["event_name"] and m["status"] == "active"
                                          for m in self._store["billing.meter"].values()):
                raise _invalid("id", f"An active meter with event_name `{meter['event_name']}` already exists.")
            now = int(time.time())
            meter.update(status=status, updated=now,
                         status_transitions={"deactivated_at": now if status == "inactive" else None})
            self._emit("billing.meter.deactivated" if status == "inactive" else "billing.meter.reactivated", meter)
            return meter
        return set_status

    def _create_meter_event(self, params: Json) -> Json:
        event_name = _str(params, "event_name", required=True)
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise _missing("payload")
        meter = next((m for m in self._store.get("billing.meter", {}).values()
                      if m["event_name"] == event_name and m["status"] == "active"), None)
        if meter is None:
            raise _invalid("event_name", f"No active meter was found with event_name `{event_name}`.",
                           "resource_missing")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not customer_id:
            raise _missing(f"payload[{customer_key}]")
        if customer_id not in self._store.get("customer", {}):
            raise _no_such("customer", str(customer_id), f"payload[{customer_key}]", 400)
        value_key = meter["value_settings"]["event_payload_key"]
        if meter["default_aggregation"]["formula"] != "count":
            if payload.get(value_key) in (None, ""):
                raise _missing(f"payload[{value_key}]")
            _decimal(payload[value_key], f"payload[{value_key}]")
        now = int(time.time())
        timestamp = _int(params, "timestamp", now)
        assert timestamp is not None
        if timestamp < now - 35 * 86400:
            raise _invalid("timestamp", "Timestamp must be no more than 35 days in the past.")
        if timestamp > now + 300:
            raise _invalid("timestamp", "Timestamp must be no more than 5 minutes in the future.")
        identifier = _str(params, "identifier") or str(uuid.uuid4())
        if identifier in self._store.get("billing.meter_event", {}):
            raise LocalStripeError(400, f"An event already exists with identifier {identifier}.",
                                   headers={"Stripe-Should-Retry": "false"})
        event = copy.deepcopy(self._fixtures["billing.meter_event"])
        event.update(created=now, event_name=event_name, identifier=identifier, livemode=False,
                     payload={str(k): str(v) for k, v in payload.items()}, timestamp=timestamp)
        self._store.setdefault("billing.meter_event", {})[identifier] = event
        return event

    def _aggregate(self, meter: Json, customer_id: str, start: int, end: int) -> tuple[int, Decimal]:
        """(number of events, aggregated value) of a customer's events in [start, end)."""
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        events = [e for e in self._store.get("billing.meter_event", {}).values()
                  if e["event_name"] == meter["event_name"] and e["payload"].get(customer_key) == customer_id
                  and start <= e["timestamp"] < end]
        formula = meter["default_aggregation"]["formula"]
        if formula == "count":
            return len(events), Decimal(len(events))
        values = [Decimal(e["payload"][value_key]) for e in events]
        if formula == "last":  # the latest timestamp; among equals, the latest sent
            latest = max(range(len(events)), key=lambda n: (events[n]["timestamp"], n), default=None)
            return len(events), values[latest] if latest is not None else Decimal(0)
        return len(events), sum(values, Decimal(0))

    def _list_event_summaries(self, params: Json, id: str) -> Json:  # noqa: A002
        meter = self._get("billing.meter", id)
        customer_id = _str(params, "customer", required=True)
        start, end = _int(params, "start_time"), _int(params, "end_time")
        if start is None:
            raise _missing("start_time")
        if end is None:
            raise _missing("end_time")
        assert customer_id is not None
        if customer_id not in self._store.get("customer", {}) and customer_id not in self._deleted_customers:
            raise _no_such("customer", customer_id, "customer", 400)
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise _invalid(name, f"{name} must be aligned with minute boundaries.")
        if end <= start:
            raise _invalid("end_time", "end_time must be after start_time.")
        window = _str(params, "value_grouping_window", choices=("day", "hour"))
        if window is None:
            bounds = [(start, end)]
        else:
            size = _INTERVAL_SECONDS[window]
            edges = range(start - start % size, end, size)
            bounds = [(max(edge, start), min(edge + size, end)) for edge in edges]
        summaries = []
        for low, high in reversed(bounds):
            count, value = self._aggregate(meter, customer_id, low, high)
            if window is not None and count == 0:
                continue  # grouped summaries cover windows with usage
            summary = copy.deepcopy(self._fixtures["billing.meter_event_summary"])
            digest = hashlib.sha256(f"{id}|{customer_id}|{low}|{high}".encode()).hexdigest()[:40]
            summary.update(id=f"mtrusg_test_{digest}", meter=id, start_time=low, end_time=high,
                           aggregated_value=_number(value), livemode=False)
            summaries.append(summary)
        return self._page(f"/v1/billing/meters/{id}/event_summaries", summaries, params)

    # --- customers ------------------------------------------------------------------------

    def _create_customer(self, params: Json) -> Json:
        customer = self._fresh("customer", new_id("cus"))
        customer.update(email=_str(params, "email"), name=_str(params, "name"), phone=_str(params, "phone"),
                        description=_str(params, "description"),
                        metadata=_merge_metadata({}, params.get("metadata")),
                        invoice_prefix=secrets.token_hex(4).upper(), next_invoice_sequence=1)
        self._put("customer", customer)
        self._emit("customer.created", customer)
        return customer

    def _customer(self, customer_id: str, param: str = "id", status: int = 404) -> Json:
        """A live customer; a deleted one is missing for every purpose but retrieval."""
        return self._get("customer", customer_id, param=param, status=status)

    def _retrieve_customer(self, params: Json, id: str) -> Json:  # noqa: A002
        if id in self._deleted_customers:
            return self._deleted_customers[id]
        return self._customer(id)

    def _update_customer(self, params: Json, id: str) -> Json:  # noqa: A002
        customer = self._customer(id)
        changes = {name: _str(params, name) for name in ("email", "name", "phone", "description") if name in params}
        changes["metadata"] = _merge_metadata(customer["metadata"], params.get("metadata"))
        before = copy.deepcopy(customer)
        customer.update(changes)
        self._updated("customer.updated", customer, before)
        return customer

    def _delete_customer(self, params: Json, id: str) -> Json:  # noqa: A002
        customer = self._customer(id)
        for subscription in list(self._store.get("subscription", {}).values()):
            if subscription["customer"] == id and subscription["status"] != "canceled":
                self._cancel_subscription(subscription)
        del self._store["customer"][id]
        self._deleted_customers[id] = {**self._fixtures["deleted_customer"], "id": id}
        self._emit("customer.deleted", customer)
        return self._deleted_customers[id]

    def _list_customers(self, params: Json) -> Json:
        email = _str(params, "email")
        items = [c for c in self._newest_first("customer") if email in (None, c["email"])]
        return self._page("/v1/customers", items, params)

    _SEARCH_CLAUSE = re.compile(
        r"""^\s*(?:metadata\[(?P<q1>['"])(?P<key>[^'"]+)(?P=q1)\]|(?P<field>email|name|phone|description))"""
        r"""\s*:\s*(?P<q2>['"])(?P<value>.*?)(?P=q2)\s*$""")

    def _search_customers(self, params: Json) -> Json:
        """Supports `field:'value'` clauses (metadata['k'], email, name, phone,
        description) joined by AND; exact matches."""
        query = _str(params, "query", required=True)
        assert query is not None
        clauses = []
        for text in re.split(r"\s+AND\s+", query):
            match = self._SEARCH_CLAUSE.match(text)
            if match is None:
                raise _invalid("query", f"This local Stripe cannot parse the search clause {text!r}; it supports "
                               "metadata['key']:'value', email:'x', name:'x', phone:'x' and description:'x' "
                               "joined by AND.")
            clauses.append(match)

        def matches(customer: Json) -> bool:
            for clause in clauses:
                actual = (customer["metadata"].get(clause["key"]) if clause["key"]
                          else customer.get(clause["field"]))
                if actual != clause["value"]:
                    return False
            return True

        found = [c for c in self._newest_first("customer") if matches(c)]
        limit = _int(params, "limit", 10, minimum=1) or 10
        offset = _int(params, "page", 0, minimum=0) or 0
        page = found[offset:offset + min(limit, 100)]
        has_more = len(found) > offset + len(page)
        return {"object": "search_result", "data": page, "has_more": has_more,
                "next_page": str(offset + len(page)) if has_more else None, "url": "/v1/customers/search"}

    # --- subscriptions --------------------------------------------------------------------

    def _recurring_price(self, price_id: Any, param: str) -> Json:
        if not isinstance(price_id, str) or not price_id:
            raise _missing(param)
        price = self._get("price", price_id, param=param, status=400)
        if price["type"] != "recurring":
            raise _invalid(param, "The price specified is set to `type=one_time` but this field only accepts "
                           "prices with `type=recurring`.")
        if not price["active"]:
            raise _invalid(param, f"The price specified is inactive: '{price_id}'.")
        return price

    @staticmethod
    def _plan_from(price: Json, plan_example: Json) -> Json:
        plan = copy.deepcopy(plan_example)
        recurring = price["recurring"]
        plan.update(id=price["id"], active=price["active"], amount=price["unit_amount"],
                    amount_decimal=price["unit_amount_decimal"], billing_scheme=price["billing_scheme"],
                    created=price["created"], currency=price["currency"], interval=recurring["interval"],
                    interval_count=recurring["interval_count"], livemode=False, metadata=price["metadata"],
                    meter=recurring["meter"], nickname=price["nickname"], product=price["product"],
                    tiers_mode=None, transform_usage=None, trial_period_days=None, usage_type=recurring["usage_type"])
        return plan

    def _set_item_price(self, item: Json, price: Json, quantity: int | None, param: str) -> None:
        metered = price["recurring"]["usage_type"] == "metered"
        if metered and quantity is not None:
            raise _invalid(param, "Quantity should not be specified where usage_type is `metered`. Remove "
                           f"quantity from `{param}`.")
        item["price"] = copy.deepcopy(price)
        item["plan"] = self._plan_from(price, self._fixtures["plan"])
        if metered:
            item.pop("quantity", None)
        else:
            item["quantity"] = quantity if quantity is not None else item.get("quantity") or 1

    def _new_item(self, subscription: Json, spec: Json, param: str) -> Json:
        price = self._recurring_price(spec.get("price"), f"{param}[price]")
        item = self._fresh("subscription_item", new_id("si"))
        item.update(subscription=subscription["id"], tax_rates=[],
                    metadata=_merge_metadata({}, spec.get("metadata")),
                    current_period_start=subscription["current_period_start"],
                    current_period_end=subscription["current_period_end"])
        self._set_item_price(item, price, _int(spec, "quantity", minimum=0), f"{param}[quantity]")
        return item

    @staticmethod
    def _check_item_prices(items: list[Json]) -> None:
        prices = [item["price"] for item in items]
        ids = [p["id"] for p in prices]
        if len(set(ids)) != len(ids):
            raise _invalid("items", "Cannot add multiple subscription items with the same price.")
        if len({p["currency"] for p in prices}) > 1:
            raise _invalid("items", "All prices on a subscription must have the same `currency`.")
        if len({(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in prices}) > 1:
            raise _invalid("items", "All prices on a subscription must have the same `recurring.interval` and "
                           "`recurring.interval_count`.")

    def _create_subscription(self, customer_id: str, item_specs: list[Any], params: Json) -> Json:
        self._customer(customer_id, "customer", 400)
        if not item_specs:
            raise _missing("items")
        prices = [self._recurring_price(spec.get("price") if isinstance(spec, dict) else None, f"items[{n}][price]")
                  for n, spec in enumerate(item_specs)]
        now = int(time.time())
        recurring = prices[0]["recurring"]
        subscription = self._fresh("subscription", new_id("sub", 24))
        collection = _str(params, "collection_method", choices=("charge_automatically", "send_invoice"))
        days_until_due = _int(params, "days_until_due", minimum=0)
        if collection == "send_invoice" and days_until_due is None:
            raise _missing("days_until_due")
        subscription.update(
            customer=customer_id, status="active", start_date=now, billing_cycle_anchor=now,
            current_period_start=now,
            current_period_end=_period_end(now, recurring["interval"], recurring["interval_count"]),
            currency=prices[0]["currency"], collection_method=collection or "charge_automatically",
            days_until_due=days_until_due, description=_str(params, "description"), latest_invoice=None,
            cancel_at_period_end=_bool(params, "cancel_at_period_end", False),
            metadata=_merge_metadata({}, params.get("metadata")))
        items = [self._new_item(subscription, spec, f"items[{n}]") for n, spec in enumerate(item_specs)]
        self._check_item_prices(items)
        if subscription["cancel_at_period_end"]:
            subscription["cancel_at"] = subscription["current_period_end"]
        subscription["items"] = {"object": "list", "data": items, "has_more": False,
                                 "url": f"/v1/subscription_items?subscription={subscription['id']}"}
        for item in items:
            self._put("subscription_item", item)
        self._put("subscription", subscription)
        self._emit("customer.subscription.created", subscription)
        return subscription

    def _create_subscription_endpoint(self, params: Json) -> Json:
        customer_id = _str(params, "customer", required=True)
        assert customer_id is not None
        items = params.get("items")
        if items is not None and not isinstance(items, list):
            raise _invalid("items", "Invalid array: items")
        return self._create_subscription(customer_id, items or [], params)

    def _update_subscription(self, params: Json, id: str) -> Json:  # noqa: A002
        subscription = self._get("subscription", id)
        if subscription["status"] == "canceled" and set(params) - {"metadata", "cancellation_details", "expand"}:
            raise _invalid("id", "A canceled subscription can only update its cancellation_details and metadata.")
        changes: Json = {"metadata": _merge_metadata(subscription["metadata"], params.get("metadata")),
                         "days_until_due": _int(params, "days_until_due", subscription["days_until_due"],
                                                minimum=0)}
        cancel = _bool(params, "cancel_at_period_end")
        if cancel is not None:
            changes.update(cancel_at_period_end=cancel,
                           cancel_at=subscription["current_period_end"] if cancel else None)
        if params.get("description") is not None:
            changes["description"] = _str(params, "description")
        collection = _str(params, "collection_method", choices=("charge_automatically", "send_invoice"))
        if collection is not None:
            changes["collection_method"] = collection
        if (collection or subscription["collection_method"]) == "send_invoice" and changes["days_until_due"] is None:
            raise _missing("days_until_due")
        items = (self._planned_items(subscription, params["items"])
                 if params.get("items") not in (None, "") else None)

        before = copy.deepcopy(subscription)
        subscription.update(changes)
        if items is not None:
            for gone in {i["id"] for i in subscription["items"]["data"]} - {i["id"] for i in items}:
                del self._store["subscription_item"][gone]
            for item in items:
                self._put("subscription_item", item)
            subscription["items"]["data"] = items
        self._updated("customer.subscription.updated", subscription, before)
        return subscription

    def _planned_items(self, subscription: Json, specs: Any) -> list[Json]:
        """The subscription's items after `items[n]` changes, computed on copies."""
        if not isinstance(specs, list):
            raise _invalid("items", "Invalid array: items")
        items: list[Json] = copy.deepcopy(subscription["items"]["data"])
        for n, spec in enumerate(specs):
            param = f"items[{n}]"
            if not isinstance(spec, dict):
                raise _invalid(param, f"Invalid hash: {param}")
            item_id = _str(spec, "id")
            if item_id is None:
                items.append(self._new_item(subscription, spec, param))
                continue
            item = next((i for i in items if i["id"] == item_id), None)
            if item is None:
                raise _no_such("subscription_item", item_id, f"{param}[id]", 400)
            if _bool(spec, "deleted", False):
                items.remove(item)
                continue
            quantity = _int(spec, "quantity", minimum=0)
            if spec.get("price") not in (None, ""):
                price = self._recurring_price(spec["price"], f"{param}[price]")
                self._set_item_price(item, price, quantity, f"{param}[quantity]")
            elif quantity is not None:
                self._set_item_price(item, item["price"], quantity, f"{param}[quantity]")
            item["metadata"] = _merge_metadata(item["metadata"], spec.get("metadata"))
        if not items:
            raise _invalid("items", "A subscription needs at least one item; cancel it instead.")
        self._check_item_prices(items)
        return items

    def _cancel_subscription(self, subscription: Json) -> Json:
        if subscription["status"] == "canceled":
            raise _no_such("subscription", subscription["id"])
        now = int(time.time())
        subscription.update(status="canceled", canceled_at=now, ended_at=now,
                            cancellation_details={"comment": None, "feedback": None,
                                                  "reason": "cancellation_requested"})
        self._emit("customer.subscription.deleted", subscription)
        return subscription

    def _delete_subscription(self, params: Json, id: str) -> Json:  # noqa: A002
        return self._cancel_subscription(self._get("subscription", id))

    def _list_subscriptions(self, params: Json) -> Json:
        status = _str(params, "status", choices=tuple(sorted(_SUBSCRIPTION_STATUSES)))
        customer, price = _str(params, "customer"), _str(params, "price")
        items = [s for s in self._newest_first("subscription")
                 if (s["status"] == status or status == "all" or (status is None and s["status"] != "canceled"))
                 and customer in (None, s["customer"])
                 and (price is None or any(i["price"]["id"] == price for i in s["items"]["data"]))]
        return self._page("/v1/subscriptions", items, params)

    def _list_subscription_items(self, params: Json) -> Json:
        subscription_id = _str(params, "subscription", required=True)
        assert subscription_id is not None
        items = list(self._get("subscription", subscription_id, param="subscription", status=400)["items"]["data"])
        return self._page(f"/v1/subscription_items?subscription={subscription_id}", items, params)

    # --- invoices -------------------------------------------------------------------------

    def _invoice_lines(self, invoice_id: str, subscription: Json, amount_due: int | None) -> list[Json]:
        start, end = subscription["current_period_start"], subscription["current_period_end"]

        def line(amount: int, quantity: int | None, description: str, item: Json | None) -> Json:
            entry = self._fresh("line_item", new_id("il", 24))
            price = item["price"] if item else None
            entry.update(amount=amount, subtotal=amount, currency=subscription["currency"], description=description,
                         invoice=invoice_id, quantity=quantity, period={"start": start, "end": end},
                         subscription=subscription["id"], discountable=True, metadata={},
                         parent={"type": "subscription_item_details", "invoice_item_details": None,
                                 "subscription_item_details": {
                                     "invoice_item": None, "proration": False, "proration_details": None,
                                     "subscription": subscription["id"],
                                     "subscription_item": item["id"] if item else None}},
                         pricing={"type": "price_details", "unit_amount_decimal": price["unit_amount_decimal"]
                                  if price else None,
                                  "price_details": {"price": price["id"], "product": price["product"]}
                                  if price else None})
            return entry

        if amount_due is not None:
            return [line(amount_due, 1, "Local test invoice", None)]
        lines = []
        for item in subscription["items"]["data"]:
            price = item["price"]
            unit = Decimal(price["unit_amount_decimal"])
            if price["recurring"]["usage_type"] == "metered":
                meter = self._store["billing.meter"][price["recurring"]["meter"]]
                _, usage = self._aggregate(meter, subscription["customer"], start, end)
                amount = int((usage * unit).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                lines.append(line(amount, int(usage) if usage == usage.to_integral_value() else None,
                                  f"Usage of {meter['display_name']}", item))
            else:
                amount = int((unit * item["quantity"]).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                lines.append(line(amount, item["quantity"],
                                  f"{item['quantity']} × {price['nickname'] or price['product']}", item))
        return lines

    def _local_create_invoice(self, params: Json) -> Json:
        subscription_id = _str(params, "subscription", required=True)
        assert subscription_id is not None
        subscription = self._get("subscription", subscription_id, param="subscription", status=400)
        if subscription["status"] == "canceled":
            raise _invalid("subscription", "The subscription is canceled.")
        customer = self._customer(subscription["customer"], "subscription", 400)
        paid = _bool(params, "paid", True)
        amount_due = _int(params, "amount_due", minimum=0)
        now = int(time.time())
        invoice = self._fresh("invoice", new_id("in", 24))
        lines = self._invoice_lines(invoice["id"], subscription, amount_due)
        total = sum(line["amount"] for line in lines)
        number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        invoice.update(
            customer=customer["id"], customer_email=customer["email"], customer_name=customer["name"],
            customer_phone=customer["phone"], subscription=subscription["id"], number=number, status="open",
            billing_reason="subscription_cycle", collection_method=subscription["collection_method"],
            currency=subscription["currency"], amount_due=total, amount_paid=0, amount_remaining=total,
            subtotal=total, subtotal_excluding_tax=total, total=total, total_excluding_tax=total,
            attempt_count=0, attempted=False, auto_advance=True, effective_at=now,
            period_start=subscription["current_period_start"], period_end=subscription["current_period_end"],
            due_date=(now + 86400 * subscription["days_until_due"]
                      if subscription["collection_method"] == "send_invoice" else None),
            status_transitions={"finalized_at": now, "marked_uncollectible_at": None, "paid_at": None,
                                "voided_at": None},
            lines={"object": "list", "data": lines, "has_more": False, "url": f"/v1/invoices/{invoice['id']}/lines"},
            parent={"type": "subscription_details", "quote_details": None,
                    "subscription_details": {"metadata": copy.deepcopy(subscription["metadata"]),
                                             "subscription": subscription["id"]}})
        self._put("invoice", invoice)
        self._emit("invoice.created", invoice)

        before = copy.deepcopy(invoice)
        if paid:
            invoice.update(status="paid", amount_paid=total, amount_remaining=0, attempted=True,
                           attempt_count=invoice["attempt_count"] + 1,
                           status_transitions={**invoice["status_transitions"], "paid_at": now})
            self._emit("invoice.paid", invoice, _previous_attributes(before, invoice))
        else:
            invoice.update(attempted=True, attempt_count=invoice["attempt_count"] + 1,
                           next_payment_attempt=now + 3 * 86400)
            self._emit("invoice.payment_failed", invoice, _previous_attributes(before, invoice))

        subscription_before = copy.deepcopy(subscription)
        subscription["latest_invoice"] = invoice["id"]
        if not paid:
            subscription["status"] = "past_due"
        elif subscription["status"] == "past_due":
            subscription["status"] = "active"
        if subscription["status"] != subscription_before["status"]:
            self._updated("customer.subscription.updated", subscription, subscription_before)
        return invoice

    def _list_invoices(self, params: Json) -> Json:
        customer, subscription = _str(params, "customer"), _str(params, "subscription")
        status = _str(params, "status", choices=("draft", "open", "paid", "uncollectible", "void"))
        items = [i for i in self._newest_first("invoice")
                 if customer in (None, i["customer"]) and subscription in (None, i["subscription"])
                 and status in (None, i["status"])]
        return self._page("/v1/invoices", items, params)

    # --- billing portal and checkout ------------------------------------------------------

    def _create_portal_session(self, params: Json) -> Json:
        customer_id = _str(params, "customer", required=True)
        assert customer_id is not None
        self._customer(customer_id, "customer", 400)
        session = self._fresh("billing_portal.session", new_id("bps", 24))
        session.update(customer=customer_id, return_url=_str(params, "return_url"),
                       configuration=_str(params, "configuration") or new_id("bpc", 24),
                       url=f"{self.url}/_local/portal/{session['id']}")
        return self._put("billing_portal.session", session)

    def _portal_page(self, params: Json, id: str) -> _Reply:  # noqa: A002
        session = self._store.get("billing_portal.session", {}).get(id)
        if session is None:
            return _Reply.page(404, "No such billing portal session", f"<p>{html.escape(id)}</p>")
        customer = self._store.get("customer", {}).get(session["customer"], {})
        back = (f"<p><a href='{html.escape(session['return_url'])}'>Return</a></p>" if session["return_url"] else "")
        return _Reply.page(200, "Local Stripe billing portal",
                           f"<p>Customer <code>{html.escape(session['customer'])}</code> "
                           f"({html.escape(str(customer.get('email') or ''))})</p>{back}")

    def _create_checkout_session(self, params: Json) -> Json:
        mode = _str(params, "mode", required=True, choices=("payment", "subscription", "setup"))
        customer_id = _str(params, "customer")
        if customer_id is not None:
            self._customer(customer_id, "customer", 400)
        specs = params.get("line_items") or []
        if not isinstance(specs, list):
            raise _invalid("line_items", "Invalid array: line_items")
        if mode != "setup" and not specs:
            raise _missing("line_items")
        lines: list[tuple[Json, int | None]] = []
        for n, spec in enumerate(specs):
            param = f"line_items[{n}]"
            price_id = spec.get("price") if isinstance(spec, dict) else None
            if not price_id:
                raise _missing(f"{param}[price]")
            price = self._get("price", price_id, param=f"{param}[price]", status=400)
            quantity = _int(spec, "quantity", minimum=1)
            metered = price["recurring"] is not None and price["recurring"]["usage_type"] == "metered"
            if metered and quantity is not None:
                raise _invalid(f"{param}[quantity]", "Quantity should not be specified where usage_type is `metered`.")
            if not metered and quantity is None:
                raise _missing(f"{param}[quantity]")
            if mode == "payment" and price["type"] == "recurring":
                raise _invalid(f"{param}[price]", "You specified `payment` mode but passed a recurring price. "
                               "Either switch to `subscription` mode or use only one-time prices.")
            lines.append((price, quantity))
        if mode == "subscription" and not any(p["type"] == "recurring" for p, _ in lines):
            raise _invalid("line_items", "You must provide at least one recurring price in `subscription` mode.")
        amount = sum(int(Decimal(p["unit_amount_decimal"]) * q) for p, q in lines if q is not None)
        session = self._fresh("checkout.session", new_id("cs_test", 58))
        session.update(mode=mode, customer=customer_id, customer_email=_str(params, "customer_email"),
                       client_reference_id=_str(params, "client_reference_id"),
                       success_url=_str(params, "success_url"), cancel_url=_str(params, "cancel_url"),
                       currency=lines[0][0]["currency"] if lines else None,
                       amount_subtotal=amount if lines else None, amount_total=amount if lines else None,
                       metadata=_merge_metadata({}, params.get("metadata")), status="open", payment_status="unpaid",
                       expires_at=session["created"] + 86400, invoice=None, subscription=None,
                       url=f"{self.url}/_local/checkout/{session['id']}")
        self._checkout_lines[session["id"]] = lines
        intent_data = params.get("payment_intent_data") if mode == "payment" else params.get("subscription_data")
        if isinstance(intent_data, dict) and intent_data.get("metadata") is not None:
            self._checkout_intent_metadata[session["id"]] = _merge_metadata({}, intent_data.get("metadata"))
        return self._put("checkout.session", session)

    def _list_checkout_sessions(self, params: Json) -> Json:
        customer, subscription = _str(params, "customer"), _str(params, "subscription")
        status = _str(params, "status", choices=("open", "complete", "expired"))
        items = [s for s in self._newest_first("checkout.session")
                 if customer in (None, s["customer"]) and subscription in (None, s["subscription"])
                 and status in (None, s["status"])]
        return self._page("/v1/checkout/sessions", items, params)

    def _checkout_page(self, params: Json, id: str) -> _Reply:  # noqa: A002
        session = self._store.get("checkout.session", {}).get(id)
        if session is None:
            return _Reply.page(404, "No such checkout session", f"<p>{html.escape(id)}</p>")
        rows = "".join(f"<li>{q if q is not None else 'metered'} × <code>{html.escape(p['id'])}</code></li>"
                       for p, q in self._checkout_lines.get(id, []))
        button = (f"<form method='post' action='/_local/checkout/{html.escape(id)}/complete'>"
                  "<input type='hidden' name='redirect' value='true'><button>Pay</button></form>"
                  if session["status"] == "open" else f"<p>Status: {html.escape(session['status'])}</p>")
        return _Reply.page(200, "Local Stripe checkout", f"<ul>{rows}</ul>{button}")

    def _complete_checkout(self, session_id: str) -> Json:
        session = self._get("checkout.session", session_id)
        if session["status"] != "open":
            raise _invalid("id", f"This checkout session is {session['status']}, not open.")
        recurring_lines = [(p, q) for p, q in self._checkout_lines[session_id] if p["type"] == "recurring"]
        for n, (price, _) in enumerate(recurring_lines):
            self._recurring_price(price["id"], f"line_items[{n}][price]")  # still active
        customer_id = session["customer"]
        if customer_id is None and session["mode"] != "payment":
            customer_id = self._create_customer({"email": session["customer_email"]})["id"]
        customer = self._store.get("customer", {}).get(customer_id or "", {})
        session.update(status="complete", payment_status="paid", customer=customer_id,
                       customer_details={"address": None, "email": customer.get("email") or session["customer_email"],
                                         "name": customer.get("name"), "phone": customer.get("phone"),
                                         "tax_exempt": "none", "tax_ids": [], "business_name": None,
                                         "individual_name": None})
        if session["mode"] == "subscription":
            assert customer_id is not None
            specs: list[Any] = [{"price": p["id"], **({"quantity": str(q)} if q is not None else {})}
                                for p, q in recurring_lines]
            # subscription_data[metadata] when the session was given it (as at Stripe); else,
            # as this server always did, the session's own metadata.
            metadata = self._checkout_intent_metadata.get(session_id, session["metadata"])
            subscription = self._create_subscription(customer_id, specs, {"metadata": metadata})
            invoice = self._local_create_invoice({"subscription": subscription["id"], "paid": "true"})
            session.update(subscription=subscription["id"], invoice=invoice["id"])
        elif session["mode"] == "payment":
            intent = self._checkout_intent(session)
            charge = self._new_charge(intent, paid=True)
            intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None,
                          latest_charge=charge["id"], payment_method=charge["payment_method"])
            self._emit("charge.succeeded", charge)
            self._emit("payment_intent.succeeded", intent)
        self._emit("checkout.session.completed", session)
        return session

    # --- payment intents, charges and refunds (of payment-mode checkouts) -------------------

    def _checkout_intent(self, session: Json) -> Json:
        """The session's payment intent, made on the first payment attempt and reused by the next."""
        existing = self._store.get("payment_intent", {}).get(session["payment_intent"] or "")
        if existing is not None:
            return existing
        intent = self._fresh("payment_intent", new_id("pi", 24))
        intent.update(amount=session["amount_total"] or 0, amount_capturable=0, amount_received=0,
                      currency=session["currency"], customer=session["customer"], status="requires_payment_method",
                      capture_method="automatic_async", confirmation_method="automatic", latest_charge=None,
                      payment_method_types=["card"], setup_future_usage=None,
                      metadata=copy.deepcopy(self._checkout_intent_metadata.get(session["id"], {})))
        intent["client_secret"] = f"{intent['id']}_secret_{new_id('s', 24)[2:]}"
        session["payment_intent"] = intent["id"]
        return self._put("payment_intent", intent)

    def _new_charge(self, intent: Json, *, paid: bool, decline_code: str | None = None) -> Json:
        charge = self._fresh("charge", new_id("ch", 24))
        charge.update(amount=intent["amount"], amount_captured=intent["amount"] if paid else 0, amount_refunded=0,
                      captured=paid, paid=paid, refunded=False, status="succeeded" if paid else "failed",
                      currency=intent["currency"], customer=intent["customer"], payment_intent=intent["id"],
                      metadata=copy.deepcopy(intent["metadata"]), payment_method=new_id("pm", 24),
                      balance_transaction=new_id("txn", 24) if paid else None, disputed=False,
                      failure_code=None if paid else decline_code,
                      failure_message=None if paid else "Your card was declined.",
                      outcome={**charge["outcome"], "type": "authorized" if paid else "issuer_declined",
                               "network_status": "approved_by_network" if paid else "declined_by_network",
                               "reason": None if paid else "generic_decline",
                               "seller_message": "Payment complete." if paid else "The bank did not return any "
                               "further details with this decline."},
                      refunds={"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{charge['id']}/refunds"})
        return self._put("charge", charge)

    def _fail_checkout_payment(self, session_id: str, decline_code: str) -> Json:
        session = self._get("checkout.session", session_id)
        if session["status"] != "open" or session["mode"] != "payment":
            raise _invalid("id", f"This checkout session is {session['status']} ({session['mode']} mode); only an "
                                 "open payment-mode session takes a payment attempt.")
        intent = self._checkout_intent(session)
        charge = self._new_charge(intent, paid=False, decline_code=decline_code)
        intent.update(status="requires_payment_method", latest_charge=charge["id"], last_payment_error={
            "type": "card_error", "code": "card_declined", "decline_code": decline_code, "charge": charge["id"],
            "message": "Your card was declined.", "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "param": None, "payment_method": {"id": charge["payment_method"], "object": "payment_method"}})
        self._emit("charge.failed", charge)
        self._emit("payment_intent.payment_failed", intent)
        return intent

    def _local_fail_checkout(self, params: Json, id: str) -> Json:  # noqa: A002
        return self._fail_checkout_payment(id, _str(params, "decline_code") or "card_declined")

    def _expire_checkout_session(self, params: Json, id: str) -> Json:  # noqa: A002
        session = self._get("checkout.session", id)
        if session["status"] != "open":
            raise _invalid("id", f"Only Checkout Sessions with a status of `open` can be expired; this one is "
                                 f"`{session['status']}`.")
        session.update(status="expired", url=None)
        self._emit("checkout.session.expired", session)
        return session

    def _list_charges(self, params: Json) -> Json:
        customer, intent = _str(params, "customer"), _str(params, "payment_intent")
        items = [c for c in self._newest_first("charge")
                 if customer in (None, c["customer"]) and intent in (None, c["payment_intent"])]
        return self._page("/v1/charges", items, params)

    def _create_refund(self, params: Json) -> Json:
        charge_id, intent_id = _str(params, "charge"), _str(params, "payment_intent")
        if charge_id is None and intent_id is None:
            raise _missing("charge")
        if intent_id is not None:
            intent = self._get("payment_intent", intent_id, param="payment_intent", status=400)
            if intent["status"] != "succeeded" or not intent["latest_charge"]:
                raise LocalStripeError(400, f"This PaymentIntent ({intent_id}) does not have a successful charge to "
                                       "refund.", param="payment_intent", saved=False)
            charge_id = charge_id or intent["latest_charge"]
        charge = self._get("charge", charge_id, param="charge", status=400)
        remaining = charge["amount_captured"] - charge["amount_refunded"]
        if remaining <= 0:
            raise LocalStripeError(400, f"Charge {charge['id']} has already been refunded.",
                                   code="charge_already_refunded", saved=False)
        amount = _int(params, "amount", remaining, minimum=1)
        assert amount is not None
        if amount > remaining:
            raise _invalid("amount", f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                                     f"({remaining})", "amount_too_large")
        reason = _str(params, "reason", choices=("duplicate", "fraudulent", "requested_by_customer"))
        refund = self._fresh("refund", new_id("re", 24))
        refund.update(amount=amount, charge=charge["id"], payment_intent=charge["payment_intent"],
                      currency=charge["currency"], reason=reason, status="succeeded",
                      balance_transaction=new_id("txn", 24), metadata=_merge_metadata({}, params.get("metadata")))
        self._put("refund", refund)
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
        self._emit("refund.created", refund)
        self._emit("charge.refunded", charge)
        return refund

    def _list_refunds(self, params: Json) -> Json:
        charge, intent = _str(params, "charge"), _str(params, "payment_intent")
        items = [r for r in self._newest_first("refund")
                 if charge in (None, r["charge"]) and intent in (None, r["payment_intent"])]
        return self._page("/v1/refunds", items, params)

    def _local_complete_checkout(self, params: Json, id: str) -> Json | _Reply:  # noqa: A002
        session = self._complete_checkout(id)
        if params.get("redirect") == "true" and session["success_url"]:
            target = session["success_url"].replace("{CHECKOUT_SESSION_ID}", id)
            return _Reply(303, b"", "text/plain", {"Location": target})
        return session

    # --- other test controls --------------------------------------------------------------

    def _local_change_price(self, params: Json, id: str) -> Json:  # noqa: A002
        subscription = self._get("subscription", id)
        if subscription["status"] == "canceled":
            raise _invalid("id", "A canceled subscription's price cannot change.")
        price = self._recurring_price(params.get("price"), "price")
        if price["recurring"]["usage_type"] != "licensed":
            raise _invalid("price", "change_price swaps the licensed (plan) item; this price is metered.")
        plan_item = next((i for i in subscription["items"]["data"]
                          if i["price"]["recurring"]["usage_type"] == "licensed"), None)
        if plan_item is None:
            raise _invalid("id", "This subscription has no licensed item to change.")
        return self._update_subscription({"items": [{"id": plan_item["id"], "price": price["id"]}]}, id)

    def _local_cancel(self, params: Json, id: str) -> Json:  # noqa: A002
        return self._cancel_subscription(self._get("subscription", id))

    # --- events ---------------------------------------------------------------------------

    def _list_events(self, params: Json) -> Json:
        types = set(_list_param(params, "types"))
        if params.get("type"):
            types.add(str(params["type"]))

        def wanted(event_type: str) -> bool:
            return not types or any(event_type == t or (t.endswith(".*") and event_type.startswith(t[:-1]))
                                    for t in types)

        return self._page("/v1/events", [e for e in self._newest_first("event") if wanted(e["type"])], params)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local, in-memory Stripe API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--api-key", help="accept only this secret key (default: any sk_test_ key)")
    args = parser.parse_args()
    server = LocalStripe(api_key=args.api_key).start(args.port)
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
