"""Billing tests run the real billing code and the official stripe SDK against the local
Stripe server (tests/stripe_server.py), one per xdist worker."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from django.conf import settings
from django.test import Client

from tests.stripe_server import LocalStripe

KEY = "sk_test_" + "levqorlocal" * 2 + "xy"  # dj-stripe wants sk_test_ + 24 characters
WEBHOOK_SECRET = "whsec_levqor_tests"


@pytest.fixture(scope="session")
def stripe_server():
    server = LocalStripe()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def billing_on(db, settings, stripe_server):
    """Billing configured against a fresh local Stripe, catalog synced."""
    from billing import catalog

    stripe_server.reset()
    settings.STRIPE_SECRET_KEY = settings.STRIPE_TEST_SECRET_KEY = KEY
    settings.STRIPE_API_BASE = stripe_server.url
    settings.STRIPE_WEBHOOK_SECRET = settings.DJSTRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.LEVQOR_SIGNUP_RATE = "100000/hour"
    catalog.forget()
    catalog.sync_catalog()
    yield stripe_server
    catalog.forget()


def sign(payload: str, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """Stripe's signature scheme: v1 = HMAC-SHA256(secret, f"{t}.{payload}")."""
    t = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def post_webhook(payload: str, signature: str | None):
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return Client().post("/billing/stripe/webhook", payload, content_type="application/json", **headers)


def deliver_new_events(server: LocalStripe, seen: set[str]) -> list[dict]:
    """Send the server's events not yet delivered, oldest first, as Stripe would: signed
    with the endpoint secret, to our webhook URL. Returns each response's JSON."""
    events = [e for e in server.objects("event") if e["id"] not in seen]
    answers = []
    for event in events:
        seen.add(event["id"])
        payload = json.dumps(event)
        response = post_webhook(payload, sign(payload, settings.STRIPE_WEBHOOK_SECRET))
        assert response.status_code == 200, response.content
        answers.append({"type": event["type"], **response.json()})
    return answers
