"""A real SAML 2.0 identity provider for the tests: pysaml2's IdP (`saml2.server.Server`)
behind a small HTTP server, with its own key and certificate.

It publishes metadata at /metadata, takes AuthnRequests at /sso/redirect (HTTP-Redirect
binding), checks the user's password against its own user store and answers with a
signed Response through the HTTP-POST binding: an auto-submitting form aimed at the SP's
assertion consumer service, as a browser would receive it.
"""
from __future__ import annotations

import datetime
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _key_and_cert(folder: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "levqor-test-idp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_path, cert_path = folder / "idp.key", folder / "idp.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class SamlIdP:
    def __init__(self, folder: Path, users: dict[str, dict]):
        """`users`: username -> {"password": ..., "attributes": {name: [values]}}."""
        self.users = users
        self.folder = folder
        self.key_path, self.cert_path = _key_and_cert(folder)
        self.sp_metadata: list[str] = []
        self._server = None
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: str, content_type: str = "text/html"):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlsplit(self.path).path
                if path == "/metadata":
                    self._send(200, idp.metadata(), "application/samlmetadata+xml")
                elif path == "/sso/redirect":
                    self._send(200, "<form method=post><input name=username><input name=password type=password>"
                                    "<button>Sign in</button></form>")
                else:
                    self._send(404, "not found")

            def do_POST(self):  # the login form of /sso/redirect, submitted with the request's query
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
                user = idp.users.get(form.get("username", ""))
                if user is None or user["password"] != form.get("password"):
                    self._send(401, "wrong username or password")
                    return
                self._send(200, idp.respond(query["SAMLRequest"], query.get("RelayState"), form["username"], user))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def _config(self):
        from saml2 import BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig
        from saml2.saml import NAMEID_FORMAT_PERSISTENT

        config = IdPConfig()
        config.load({
            "entityid": f"{self.base}/metadata",
            "service": {"idp": {
                "endpoints": {"single_sign_on_service": [(f"{self.base}/sso/redirect", BINDING_HTTP_REDIRECT)]},
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                "want_authn_requests_signed": False,
                "policy": {"default": {"lifetime": {"minutes": 15}, "attribute_restrictions": None}},
            }},
            "key_file": str(self.key_path), "cert_file": str(self.cert_path),
            "metadata": {"inline": self.sp_metadata} if self.sp_metadata else {},
            "allow_unknown_attributes": True,
        })
        return config

    def metadata(self) -> str:
        from saml2.metadata import create_metadata_string

        return create_metadata_string(None, config=self._config(), valid=24).decode()

    def trust_sp(self, sp_metadata_xml: str) -> None:
        self.sp_metadata.append(sp_metadata_xml)

    def respond(self, saml_request: str, relay_state: str | None, username: str, user: dict) -> str:
        from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
        from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
        from saml2 import xmldsig
        from saml2.server import Server

        server = Server(config=self._config())
        request = server.parse_authn_request(saml_request, BINDING_HTTP_REDIRECT).message
        destination = request.assertion_consumer_service_url
        response = server.create_authn_response(
            identity=user["attributes"], in_response_to=request.id, destination=destination,
            sp_entity_id=request.issuer.text, name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=username),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"},
            sign_assertion=True, sign_response=True, sign_alg=xmldsig.SIG_RSA_SHA256,
            digest_alg=xmldsig.DIGEST_SHA256)
        return server.apply_binding(BINDING_HTTP_POST, str(response), destination, relay_state,
                                    response=True)["data"]

    def close(self):
        self.http.shutdown()
        self.http.server_close()
