"""Pen-test findings (docs/security.md, "Pen-test pass"): one test per fix, plus
regression tests for the attacks that were tried and found closed."""
from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import client_for


# --- fixed: unbounded page size -------------------------------------------------------------

def test_a_page_is_at_most_200_items_whatever_limit_asks(make_tenant):
    from tenants.context import tenant_context
    from workflows.models import Workflow

    tenant, key = make_tenant()
    with tenant_context(tenant):
        Workflow.objects.bulk_create([Workflow(name=f"w{i}", created_by="test") for i in range(230)])
    page = client_for(key, tenant).get("/api/workflows?limit=100000000")
    assert page.status_code == 200
    assert page.json()["count"] == 230 and len(page.json()["results"]) == 200
    assert "limit=200" in page.json()["next"]


# --- fixed: SSRF through addresses that are not "private" but not public either -------------

@pytest.mark.parametrize("url", [
    "https://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata (shared address space)
    "https://100.64.0.1/x",  # carrier-grade NAT, VPN overlays
    "https://[::ffff:127.0.0.1]/x",  # IPv4-mapped loopback
    "https://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
    "https://[2002:a9fe:a9fe::]/x",  # 6to4 of 169.254.169.254
    "https://198.18.0.1/x",  # benchmarking range
])
def test_outbound_destinations_must_be_globally_routable(make_tenant, url):
    tenant, key = make_tenant(plan="enterprise")
    response = client_for(key, tenant).post("/api/org/streams", {"name": "x", "kind": "webhook", "url": url,
                                                                 "secret": "secret-123456"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "destination_refused"


# --- tried and closed -------------------------------------------------------------------------

def test_login_never_redirects_off_site(db):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(username="pen@x.test", email="pen@x.test", password="a-long-password-1")
    browser = Client()
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "https:evil.example"):
        response = browser.post(f"/accounts/login/?next={target}", {"login": "pen@x.test",
                                                                      "password": "a-long-password-1"})
        assert response.status_code == 302
        assert "evil.example" not in response["Location"], (target, response["Location"])
        browser.logout()


def test_portal_posts_need_the_csrf_token(make_tenant):
    from django.contrib.auth import get_user_model

    from tenants.models import TenantUser

    tenant, _ = make_tenant()
    user = get_user_model().objects.create_user(username="csrf@x.test", email="csrf@x.test", password="a-long-password-1")
    TenantUser(tenant=tenant, user=user, role="owner").save(force_insert=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    for path in ("/org/actions/rotate-keys", "/org/settings/streams", "/org/settings/members",
                 "/org/settings/backups/create"):
        assert browser.post(path, {"op": "create"}).status_code == 403, path


def test_stripe_webhooks_without_a_valid_signature_change_nothing(db, settings):
    settings.STRIPE_WEBHOOK_SECRET = settings.DJSTRIPE_WEBHOOK_SECRET = "whsec_pen"
    body = b'{"id": "evt_pen", "type": "invoice.paid", "data": {"object": {}}}'
    for header in ({}, {"HTTP_STRIPE_SIGNATURE": "t=1,v1=00"}, {"HTTP_STRIPE_SIGNATURE": "garbage"}):
        response = Client().post("/billing/stripe/webhook", body, content_type="application/json", **header)
        assert response.status_code == 400
        assert response.json()["error"]["code"] in {"signature_missing", "signature_invalid"}


def test_secrets_never_come_back_from_the_api(make_tenant, settings):
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    tenant, key = make_tenant(plan="enterprise")
    owner = client_for(key, tenant)
    secret = "siem-token-Zq81xX"
    created = owner.post("/api/org/streams", {"name": "s", "kind": "splunk_hec", "url": "http://127.0.0.1:9/x",
                                              "secret": secret}, format="json")
    assert created.status_code == 201
    for path in ("/api/org/streams", f"/api/org/streams/{created.json()['id']}", "/api/org/audit", "/api/org/keys",
                 "/api/org"):
        body = owner.get(path).content.decode()
        assert secret not in body and key not in body, path


# --- fixed: DNS rebinding over https ------------------------------------------------------------

def _tls_files(tmp_path, name: str):
    """A throwaway CA and a server certificate for `name`, as PEM files."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)

    def cert(subject, issuer, key, signer, *, ca: bool, san: str | None = None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Levqor test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, key, ca_key, ca=False, san=name)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(leaf.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "ca.pem", tmp_path / "server.pem"


@pytest.fixture
def https_receiver(tmp_path):
    """An https server for siem.levqor.test on 127.0.0.1 that records what reaches it."""
    import http.server
    import ssl
    import threading

    ca, server_pem = _tls_files(tmp_path, "siem.levqor.test")
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append({"host": self.headers["Host"], "body": self.rfile.read(int(self.headers["Content-Length"]))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pem)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], ca, seen
    httpd.shutdown()


def test_an_https_delivery_goes_to_the_vetted_address_whatever_dns_says_next(settings, monkeypatch,
                                                                              https_receiver):
    """The resolver answers 127.0.0.1 (allow-listed here) when the destination is vetted,
    then a different, internal address: the kind of switch a rebinding DNS server makes
    between the check and the connect. The request still reaches the vetted address, and
    TLS is checked against the host name, not the address."""
    import socket

    import requests

    from compliance import outbound

    port, ca, seen = https_receiver
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["siem.levqor.test"]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding_dns(host, *args, **kwargs):
        if host == "siem.levqor.test":
            return real(next(answers, "10.255.255.1"), *args, **kwargs)  # the rebound, internal answer
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    response = outbound.post(f"https://siem.levqor.test:{port}/ingest", body=b"event", headers={}, timeout=3)
    assert response.status_code == 204
    assert seen == [{"host": f"siem.levqor.test:{port}", "body": b"event"}]

    # A certificate for another name is refused although the address is the vetted one.
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["localhost"]
    with pytest.raises(requests.exceptions.SSLError):
        outbound.post(f"https://localhost:{port}/ingest", body=b"event", headers={}, timeout=3)
    assert len(seen) == 1
