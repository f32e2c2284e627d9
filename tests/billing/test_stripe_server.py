"""The local Stripe (tests/stripe_server.py), driven through the real `stripe` SDK.

What these pin down is what billing code relies on: Stripe's shapes, errors, list
pagination, idempotent replays, meter aggregation, and webhooks signed so that
`stripe.Webhook.construct_event` accepts them.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from tests.stripe_server import LocalStripe, parse_form

API_KEY = "sk_test_" + "x" * 24


@pytest.fixture(scope="module")
def server() -> Iterator[LocalStripe]:
    local = LocalStripe().start()
    yield local
    local.stop()


@pytest.fixture(autouse=True)
def _fresh_state(server: LocalStripe) -> None:
    server.reset()
    server.api_key = None


@pytest.fixture(scope="module")
def client(server: LocalStripe) -> stripe.StripeClient:
    # The SDK retries 5xx twice by default; a test wants to see the first answer.
    return stripe.StripeClient(API_KEY, base_addresses={"api": server.url}, max_network_retries=0)


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.received: list[tuple[dict[str, str], bytes]] = []


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """A webhook endpoint of our own, recording what it is sent."""
    httpd = _Receiver()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _minute_floor(ts: int) -> int:
    return ts - ts % 60


def _plan(client: stripe.StripeClient, *, metered: bool = True) -> dict[str, Any]:
    """A product with a licensed price and (optionally) a metered one on a sum meter."""
    product = client.v1.products.create({"name": "Levqor Pro", "id": "levqor_pro"})
    licensed = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 2000,
                                        "recurring": {"interval": "month"}, "lookup_key": "pro_monthly"})
    plan: dict[str, Any] = {"product": product, "licensed": licensed}
    if metered:
        meter = client.v1.billing.meters.create({"display_name": "Workflow runs", "event_name": "workflow_runs",
                                                 "default_aggregation": {"formula": "sum"}})
        plan["meter"] = meter
        plan["metered"] = client.v1.prices.create({
            "product": product.id, "currency": "usd", "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id}})
    return plan


def test_bracket_notation_parses_into_nested_params() -> None:
    parsed = parse_form("items[0][price]=p1&items[1][price]=p2&items[1][quantity]=3&metadata[0]=zero"
                        "&metadata[tenant_id]=7&expand[]=a&expand[]=b&payload[value]=3&name=A+B")
    assert parsed == {"items": [{"price": "p1"}, {"price": "p2", "quantity": "3"}],
                      "metadata": {"0": "zero", "tenant_id": "7"}, "expand": ["a", "b"],
                      "payload": {"value": "3"}, "name": "A B"}


def test_customer_create_retrieve_delete(server: LocalStripe, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "ops@acme.test", "name": "Acme",
                                           "metadata": {"tenant_id": "7"}})
    assert customer.id.startswith("cus_") and len(customer.id) == len("cus_") + 14
    assert customer.object == "customer" and customer.livemode is False
    assert "invoice_settings" in customer  # the fixture's full shape, not just what was sent
    fetched = client.v1.customers.retrieve(customer.id)
    assert (fetched.email, fetched.metadata["tenant_id"]) == ("ops@acme.test", "7")

    deleted = client.v1.customers.delete(customer.id)
    assert (deleted.id, deleted.deleted) == (customer.id, True)
    # As at Stripe, a deleted customer still retrieves, as a stub; anything else is a 404.
    assert client.v1.customers.retrieve(customer.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.update(customer.id, {"name": "Gone"})
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as never:
        client.v1.customers.retrieve("cus_doesnotexist00")
    assert never.value.http_status == 404
    assert never.value.json_body["error"]["message"] == "No such customer: 'cus_doesnotexist00'"
    assert server.objects("customer") == []
    assert [e["type"] for e in server.objects("event")] == ["customer.created", "customer.deleted"]


def test_customer_search_by_metadata(client: stripe.StripeClient) -> None:
    wanted = client.v1.customers.create({"metadata": {"tenant_id": "7"}})
    client.v1.customers.create({"metadata": {"tenant_id": "8"}})
    result = client.v1.customers.search({"query": "metadata['tenant_id']:'7'"})
    assert result.object == "search_result"
    assert [c.id for c in result.data] == [wanted.id]


def test_product_with_explicit_id_and_price_lookup_keys(client: stripe.StripeClient) -> None:
    plan = _plan(client, metered=False)
    assert plan["product"].id == "levqor_pro"
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        client.v1.products.create({"name": "Again", "id": "levqor_pro"})
    assert duplicate.value.code == "resource_already_exists"

    found = client.v1.prices.list({"lookup_keys": ["pro_monthly"]})
    assert [p.id for p in found.data] == [plan["licensed"].id]
    assert found.data[0].recurring.usage_type == "licensed"

    again = {"product": "levqor_pro", "currency": "usd", "unit_amount": 2500,
             "recurring": {"interval": "month"}, "lookup_key": "pro_monthly"}
    with pytest.raises(stripe.InvalidRequestError) as taken:
        client.v1.prices.create(again)
    assert taken.value.http_status == 400 and taken.value.param == "lookup_key"
    moved = client.v1.prices.create({**again, "transfer_lookup_key": True})
    assert [p.id for p in client.v1.prices.list({"lookup_keys": ["pro_monthly"]}).data] == [moved.id]
    assert client.v1.prices.retrieve(plan["licensed"].id).lookup_key is None


def test_missing_required_param_is_parameter_missing(client: stripe.StripeClient) -> None:
    client.v1.products.create({"name": "Levqor", "id": "levqor"})
    with pytest.raises(stripe.InvalidRequestError) as error:
        client.v1.prices.create({"product": "levqor", "unit_amount": 100})
    assert (error.value.http_status, error.value.code, error.value.param) == (400, "parameter_missing", "currency")


def test_meter_event_summaries_sum_one_customer_within_range(client: stripe.StripeClient) -> None:
    meter = _plan(client)["meter"]
    alice, bob = client.v1.customers.create({}), client.v1.customers.create({})
    end = _minute_floor(int(time.time()))
    start = end - 3 * 3600
    for customer, timestamp, value in [
        (alice, start, 3), (alice, start + 3700, 4), (alice, end - 1, 5),  # inside [start, end)
        (alice, start - 1, 100), (alice, end, 100),  # just outside
        (bob, start + 10, 1000),  # another customer
    ]:
        client.v1.billing.meter_events.create({"event_name": "workflow_runs", "timestamp": timestamp,
                                               "payload": {"stripe_customer_id": customer.id, "value": str(value)}})
    params = {"customer": alice.id, "start_time": start, "end_time": end}

    whole = client.v1.billing.meters.event_summaries.list(meter.id, params)
    assert [(s.start_time, s.end_time, s.aggregated_value) for s in whole.data] == [(start, end, 12)]
    assert whole.data[0].object == "billing.meter_event_summary"

    hourly = client.v1.billing.meters.event_summaries.list(meter.id, {**params, "value_grouping_window": "hour"})
    assert [s.aggregated_value for s in hourly.data] == [5, 4, 3]  # newest window first

    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing.meters.event_summaries.list(meter.id, {"customer": alice.id, "start_time": start})
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "end_time")


def test_duplicate_meter_event_identifier_is_not_counted_twice(server: LocalStripe,
                                                               client: stripe.StripeClient) -> None:
    meter = _plan(client)["meter"]
    customer = client.v1.customers.create({})
    now = int(time.time())
    event = {"event_name": "workflow_runs", "identifier": "levqor:7:runs:2026-08-01", "timestamp": now,
             "payload": {"stripe_customer_id": customer.id, "value": "25"}}
    assert client.v1.billing.meter_events.create(event).identifier == event["identifier"]
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        client.v1.billing.meter_events.create(event)
    # What Stripe answers in production: a 400 told apart by its message, with no code.
    assert duplicate.value.http_status == 400 and duplicate.value.code is None
    assert "already exists with identifier levqor:7:runs:2026-08-01" in str(duplicate.value.user_message)
    assert duplicate.value.headers["Stripe-Should-Retry"] == "false"

    summary = client.v1.billing.meters.event_summaries.list(meter.id, {
        "customer": customer.id, "start_time": _minute_floor(now), "end_time": _minute_floor(now) + 60})
    assert summary.data[0].aggregated_value == 25
    assert len(server.objects("billing.meter_event")) == 1


def test_idempotency_key_replays_and_creates_once(server: LocalStripe, client: stripe.StripeClient) -> None:
    first = client.v1.customers.create({"email": "once@acme.test"}, {"idempotency_key": "tenant-7-customer"})
    replay = client.v1.customers.create({"email": "once@acme.test"}, {"idempotency_key": "tenant-7-customer"})
    assert replay.id == first.id
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(server.objects("customer")) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"email": "other@acme.test"}, {"idempotency_key": "tenant-7-customer"})
    assert len(server.objects("customer")) == 1


def test_subscription_with_licensed_and_metered_items(server: LocalStripe, client: stripe.StripeClient) -> None:
    plan = _plan(client)
    customer = client.v1.customers.create({})
    subscription = client.v1.subscriptions.create({
        "customer": customer.id, "metadata": {"tenant_id": "7"}, "payment_behavior": "default_incomplete",
        "items": [{"price": plan["licensed"].id, "quantity": 3}, {"price": plan["metered"].id}]})
    assert subscription.status == "active" and subscription.customer == customer.id
    licensed, metered = subscription["items"].data
    assert (licensed.price.id, licensed.price.object, licensed["quantity"]) == (plan["licensed"].id, "price", 3)
    assert metered.price.recurring.usage_type == "metered" and "quantity" not in metered
    assert metered.price.recurring.meter == plan["meter"].id
    assert licensed.subscription == subscription.id
    month = subscription.current_period_end - subscription.current_period_start
    assert 28 * 86400 <= month <= 31 * 86400
    assert (licensed.current_period_start, licensed.current_period_end) == (
        subscription.current_period_start, subscription.current_period_end)

    with pytest.raises(stripe.InvalidRequestError) as unknown_item:
        client.v1.subscriptions.update(subscription.id, {"metadata": {"tenant_id": "8"},
                                                         "items": [{"id": "si_nope", "price": plan["licensed"].id}]})
    assert unknown_item.value.param == "items[0][id]"
    assert client.v1.subscriptions.retrieve(subscription.id).metadata["tenant_id"] == "7"  # nothing half-applied

    with pytest.raises(stripe.InvalidRequestError) as quantity:
        client.v1.subscriptions.create({"customer": customer.id,
                                        "items": [{"price": plan["metered"].id, "quantity": 1}]})
    assert quantity.value.http_status == 400
    created = server.objects("event")[-1]
    assert created["type"] == "customer.subscription.created"
    assert created["data"]["object"]["items"]["data"][0]["price"]["id"] == plan["licensed"].id


def test_change_price_webhook_is_delivered_signed(server: LocalStripe, client: stripe.StripeClient,
                                                  receiver: _Receiver) -> None:
    plan = _plan(client)
    bigger = client.v1.prices.create({"product": "levqor_pro", "currency": "usd", "unit_amount": 9000,
                                      "recurring": {"interval": "month"}})
    customer = client.v1.customers.create({})
    subscription = client.v1.subscriptions.create({
        "customer": customer.id, "items": [{"price": plan["licensed"].id}, {"price": plan["metered"].id}]})
    endpoint = client.v1.webhook_endpoints.create({
        "url": f"http://127.0.0.1:{receiver.server_address[1]}/stripe/webhook",
        "enabled_events": ["customer.subscription.updated"]})
    assert endpoint.secret.startswith("whsec_")
    assert "secret" not in client.v1.webhook_endpoints.list().data[0]  # shown only on creation

    request = urllib.request.Request(f"{server.url}/_local/subscriptions/{subscription.id}/change_price",
                                     data=f"price={bigger.id}".encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["items"]["data"][0]["price"]["id"] == bigger.id
    assert server.wait_for_deliveries(5)

    assert len(receiver.received) == 1  # created events are not subscribed to
    headers, body = receiver.received[0]
    assert headers["Content-Type"].startswith("application/json")
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], endpoint.secret)
    assert event.type == "customer.subscription.updated"
    assert event.data.object["items"].data[0].price.id == bigger.id
    assert event.data.previous_attributes["items"].data[0].price.id == plan["licensed"].id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_wrong")
    assert [(d.event_id, d.status) for d in server.deliveries] == [(event.id, 200)]
    assert client.v1.events.retrieve(event.id).pending_webhooks == 0


def test_failed_invoice_makes_subscription_past_due_and_payment_restores_it(
        server: LocalStripe, client: stripe.StripeClient) -> None:
    plan = _plan(client)
    customer = client.v1.customers.create({})
    subscription = client.v1.subscriptions.create({
        "customer": customer.id, "items": [{"price": plan["licensed"].id, "quantity": 2},
                                           {"price": plan["metered"].id}]})
    client.v1.billing.meter_events.create({"event_name": "workflow_runs",
                                           "payload": {"stripe_customer_id": customer.id, "value": "10"}})

    failed = server.create_invoice(subscription.id, paid=False)
    assert (failed["status"], failed["attempt_count"], failed["amount_due"]) == ("open", 1, 2 * 2000 + 5)
    assert failed["next_payment_attempt"] is not None and failed["customer"] == customer.id
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"

    paid = server.create_invoice(subscription.id, paid=True, amount_due=4005)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    invoices = client.v1.invoices.list({"subscription": subscription.id})
    assert [(i.id, i.status) for i in invoices.data] == [(paid["id"], "paid"), (failed["id"], "open")]
    assert client.v1.invoices.list({"status": "paid"}).data[0].amount_paid == 4005

    types = [e.type for e in client.v1.events.list({"limit": 100}).data][::-1]
    assert types[-6:] == ["invoice.created", "invoice.payment_failed", "customer.subscription.updated",
                          "invoice.created", "invoice.paid", "customer.subscription.updated"]
    back = client.v1.events.list({"type": "customer.subscription.updated"}).data[0]
    assert (back.data.object.status, back.data.previous_attributes.status) == ("active", "past_due")


def test_checkout_completion_and_portal_pages(server: LocalStripe, client: stripe.StripeClient) -> None:
    plan = _plan(client, metered=False)
    session = client.v1.checkout.sessions.create({
        "mode": "subscription", "customer_email": "new@acme.test", "success_url": "https://levqor.test/ok",
        "line_items": [{"price": plan["licensed"].id, "quantity": 1}], "metadata": {"tenant_id": "7"}})
    assert (session.status, session.url) == ("open", f"{server.url}/_local/checkout/{session.id}")

    completed = server.complete_checkout(session.id)
    assert (completed["status"], completed["payment_status"]) == ("complete", "paid")
    subscription = client.v1.subscriptions.retrieve(completed["subscription"])
    assert subscription.customer == completed["customer"]
    assert client.v1.events.list({"type": "checkout.session.completed"}).data[0].data.object.id == session.id

    portal = client.v1.billing_portal.sessions.create({"customer": completed["customer"],
                                                       "return_url": "https://levqor.test/billing"})
    with urllib.request.urlopen(portal.url, timeout=5) as page:
        assert completed["customer"] in page.read().decode()


def test_transfer_to_connected_account(client: stripe.StripeClient) -> None:
    account = client.v1.accounts.create({"type": "express", "email": "partner@acme.test"})
    transfer = client.v1.transfers.create({"amount": 1500, "currency": "usd", "destination": account.id,
                                           "transfer_group": "payout-2026-08", "metadata": {"tenant_id": "7"}})
    assert (transfer.destination, transfer.amount, transfer.reversed) == (account.id, 1500, False)
    assert client.v1.balance_transactions.retrieve(transfer.balance_transaction).amount == -1500
    assert [t.id for t in client.v1.transfers.list({"destination": account.id}).data] == [transfer.id]
    platform = client.v1.accounts.retrieve_current()
    with pytest.raises(stripe.InvalidRequestError) as to_self:
        client.v1.transfers.create({"amount": 1, "currency": "usd", "destination": platform.id})
    assert to_self.value.param == "destination"


def test_list_pagination_has_more(client: stripe.StripeClient) -> None:
    created = [client.v1.customers.create({"email": f"c{n}@acme.test"}).id for n in range(5)]
    first = client.v1.customers.list({"limit": 2})
    assert first.has_more is True and [c.id for c in first.data] == created[::-1][:2]
    seen = [c.id for c in first.data]
    page = first
    while page.has_more:
        page = client.v1.customers.list({"limit": 2, "starting_after": page.data[-1].id})
        seen += [c.id for c in page.data]
    assert seen == created[::-1] and page.has_more is False
    assert [c.id for c in client.v1.customers.list({"limit": 2}).auto_paging_iter()] == created[::-1]
    assert [c.id for c in client.v1.customers.list({"email": "c3@acme.test"}).data] == [created[3]]


def test_bad_api_key_is_401_without_echoing_it(server: LocalStripe) -> None:
    live_key = "sk_live_" + "s3cr3t" * 4
    with pytest.raises(stripe.AuthenticationError) as rejected:
        stripe.StripeClient(live_key, base_addresses={"api": server.url},
                            max_network_retries=0).v1.customers.list()
    assert rejected.value.http_status == 401
    assert rejected.value.json_body["error"]["type"] == "invalid_request_error"
    assert live_key not in str(rejected.value.json_body)

    server.api_key = API_KEY
    other = stripe.StripeClient("sk_test_" + "y" * 24, base_addresses={"api": server.url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError):
        other.v1.customers.list()


def test_fail_next_surfaces_as_sdk_errors(server: LocalStripe, client: stripe.StripeClient) -> None:
    server.fail_next("/v1/customers", status=500)
    with pytest.raises(stripe.APIError) as failed:
        client.v1.customers.create({"email": "retry@acme.test"}, {"idempotency_key": "retry-me"})
    assert failed.value.http_status == 500
    # The failure was injected before the request ran, so the same key now succeeds.
    assert client.v1.customers.create({"email": "retry@acme.test"}, {"idempotency_key": "retry-me"}).id
    server.fail_next("/v1/prices", status=429, code="rate_limit")
    with pytest.raises(stripe.RateLimitError):
        client.v1.prices.list()
    assert [path for _, path, _ in server.requests] == ["/v1/customers", "/v1/customers", "/v1/prices"]
