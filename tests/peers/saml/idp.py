#!/usr/bin/env python3
"""A real SAML 2.0 Identity Provider for Gatehouse's integration tests.

Built on pysaml2 (Server.create_authn_response, signing and encryption through the xmlsec1
binary) and the standard library's http.server. Plain HTTP on loopback only; nothing is ever
fetched from the network. See README.md beside this file for the endpoints.

    tests/peers/venv/bin/python tests/peers/saml/idp.py CONFIG.json
"""

import base64
import html
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import warnings
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- no network, ever ----------------------------------------------------------------------------
# Installed before pysaml2 is imported: any outgoing connection to a non-loopback address (a schema,
# a metadata URL, anything) fails loudly instead of leaving the machine.
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            if host == "localhost" or ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
                return
        except ValueError:
            pass
        raise OSError(f"saml idp test peer: refusing network connection to {address!r}")


def _guarded_connect(self, address):
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex

# pysaml2 7.5.5 imports cryptography's CFB mode, which cryptography deprecates: not our business.
warnings.filterwarnings("ignore", message=".*CFB has been moved.*")

# Whatever a library prints goes to stderr: stdout carries exactly one JSON line.
_STDOUT = sys.stdout
sys.stdout = sys.stderr

from cryptography import x509  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

import saml2  # noqa: E402
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml  # noqa: E402
from saml2.assertion import Policy  # noqa: E402
from saml2.attribute_converter import AttributeConverter  # noqa: E402
from saml2.config import IdPConfig  # noqa: E402
from saml2.mdstore import MetadataStore  # noqa: E402
from saml2.metadata import create_metadata_string  # noqa: E402
from saml2.s_utils import do_ava  # noqa: E402
from saml2.server import Server  # noqa: E402
from saml2.sigver import get_pem_wrapped_unwrapped, make_temp, pre_encryption_part  # noqa: E402

log = logging.getLogger("saml-idp")

NAME_FORMAT_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
NAME_FORMAT_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
AUTHN_PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
# A private NameFormat value that only our converter answers to (see ExactNames).
EXACT_NAMES = "urn:x-gatehouse-test:exact-attribute-names"

SIG_ALGS = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha224": ("rsa", hashes.SHA224),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", hashes.SHA512),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", hashes.SHA256),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", hashes.SHA384),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": ("ec", hashes.SHA512),
}
# Algorithms the IdP may sign with (pysaml2's allowed list).
RESPONSE_SIG_ALGS = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha224",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
}
DIGEST_ALGS = {
    "http://www.w3.org/2000/09/xmldsig#sha1",
    "http://www.w3.org/2001/04/xmldsig-more#sha224",
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
}
# Block cipher for the EncryptedData -> xmlsec1 --session-key type.
DATA_ENC_ALGS = {
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc": "aes-128",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc": "aes-256",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm": "aes-128",
    "http://www.w3.org/2009/xmlenc11#aes256-gcm": "aes-256",
}
KEY_TRANSPORT = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"

DEFAULT_RESPONSE_CONFIG = {
    "sign_response": False,
    "sign_assertion": True,
    "encrypt_assertion": False,
    "sign_alg": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "digest_alg": "http://www.w3.org/2001/04/xmlenc#sha256",
    "encryption_alg": "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
}

PENDING_TTL = 3600  # seconds a login form stays usable


# --- pysaml2 customisation -------------------------------------------------------------------------
class ExactNames(AttributeConverter):
    """Emits every attribute under exactly the name it has in users.json.

    pysaml2's converters rename known attributes (email -> urn:oid:...), lower-case names and use
    one NameFormat for all; this one keeps the name, and picks the NameFormat per attribute:
    uri for names with ':' or '/', basic otherwise.
    """

    def __init__(self):
        super().__init__(EXACT_NAMES)
        self._to = {}
        self._fro = {}

    def to_(self, attrvals):
        out = []
        for name, values in attrvals.items():
            if isinstance(values, (str, int, bool)):
                values = [values]
            values = [str(v) if not isinstance(v, str) else v for v in values]
            fmt = NAME_FORMAT_URI if (":" in name or "/" in name) else NAME_FORMAT_BASIC
            out.append(saml.Attribute(name=name, name_format=fmt, attribute_value=do_ava(values)))
        return out


class ReleaseEverything(Policy):
    """Release every attribute, whatever the SP's metadata requests; route to ExactNames."""

    def restrict(self, ava, sp_entity_id, metadata=None):
        return dict(ava)

    def get_name_form(self, sp_entity_id):
        return EXACT_NAMES

    def get_lifetime(self, sp_entity_id):
        return {"minutes": 5}


class TestServer(Server):
    """pysaml2's Server with AES content encryption instead of its default triple-DES."""

    data_enc_alg = DEFAULT_RESPONSE_CONFIG["encryption_alg"]

    def _encrypt_assertion(self, encrypt_cert, sp_entity_id, response, node_xpath=None):
        if encrypt_cert:
            certs = [(None, encrypt_cert)]
        else:
            certs = self.metadata.certs(sp_entity_id, "any", "encryption")
        if not certs:
            raise ValueError(f"no encryption certificate for {sp_entity_id} in its metadata")
        _name, cert = certs[0]
        wrapped, unwrapped = get_pem_wrapped_unwrapped(cert)
        tmp = make_temp(wrapped.encode("ascii"), decode=False, delete_tmpfiles=True)
        template = pre_encryption_part(msg_enc=self.data_enc_alg, key_enc=KEY_TRANSPORT, encrypt_cert=unwrapped)
        return self.sec.encrypt_assertion(
            response, tmp.name, template, DATA_ENC_ALGS[self.data_enc_alg], node_xpath
        )


# --- state -------------------------------------------------------------------------------------
class State:
    def __init__(self, conf):
        self.lock = threading.RLock()
        self.conf = conf
        self.sp_metadata = {}  # SP entity id -> metadata XML, in order of arrival
        self.pending = {}  # form key -> login in progress
        self.last_request = None
        self.last_response = None
        self.response_config = dict(DEFAULT_RESPONSE_CONFIG)
        self.server = self.build_server()
        self.metadata_xml = create_metadata_string(None, self.server.config, sign=False)
        if isinstance(self.metadata_xml, bytes):
            self.metadata_xml = self.metadata_xml.decode("utf-8")

    def pysaml2_config(self, sp_xml_list):
        conf = self.conf
        cnf = {
            "entityid": conf["entity_id"],
            "key_file": conf["key"],
            "cert_file": conf["cert"],
            "xmlsec_binary": shutil.which("xmlsec1") or "/usr/bin/xmlsec1",
            "metadata_key_usage": "signing",
            "accepted_time_diff": 120,
            "delete_tmpfiles": True,
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(conf["sso_url"], BINDING_HTTP_REDIRECT)]},
                    "want_authn_requests_signed": False,
                    "name_id_format": [
                        "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
                        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
                        "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
                        NAMEID_UNSPECIFIED,
                    ],
                },
            },
        }
        if sp_xml_list:
            cnf["metadata"] = {"inline": list(sp_xml_list)}
        return IdPConfig().load(cnf)

    def build_server(self):
        server = TestServer(config=self.pysaml2_config(list(self.sp_metadata.values())))
        server.config.attribute_converters = [ExactNames()] + list(server.config.attribute_converters or [])
        return server

    def load_sp(self, xml):
        """Validate one SP's metadata, then (re)build the Server with it added or replaced."""
        probe = self.pysaml2_config([])
        mds = MetadataStore(probe.attribute_converters, probe)
        mds.imp({"inline": [xml]})
        sps = [eid for eid in mds.keys() if mds[eid].get("spsso_descriptor")]
        if not sps:
            raise ValueError("metadata holds no SPSSODescriptor")
        entity_id = sps[0]
        with self.lock:
            self.sp_metadata[entity_id] = xml
            self.server = self.build_server()
        return entity_id


# --- helpers -----------------------------------------------------------------------------------
def raw_query_pairs(query):
    """The query's parameters as (name, raw-still-encoded value), in order."""
    out = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.append((urllib.parse.unquote_plus(name), value))
    return out


def verify_redirect_signature(query, certs):
    """Verify a HTTP-Redirect binding signature over the octets exactly as received.

    SAML bindings 3.4.4.1: SAMLRequest=..&RelayState=..&SigAlg=.. in that order, with the values
    still URL-encoded as sent (pysaml2's own check re-encodes them, which breaks whenever the SP
    encodes differently from Python's urlencode, so it is only logged).
    """
    raw = {}
    for name, value in raw_query_pairs(query):
        raw.setdefault(name, value)
    sig_alg = urllib.parse.unquote_plus(raw.get("SigAlg", ""))
    if sig_alg not in SIG_ALGS:
        log.warning("unsupported SigAlg %r", sig_alg)
        return False
    kind, hash_cls = SIG_ALGS[sig_alg]
    signed = "&".join(f"{n}={raw[n]}" for n in ("SAMLRequest", "RelayState", "SigAlg") if n in raw)
    try:
        signature = base64.b64decode(urllib.parse.unquote_plus(raw["Signature"]), validate=False)
    except Exception:
        return False
    for _name, cert_b64 in certs:
        try:
            key = x509.load_der_x509_certificate(base64.b64decode("".join(cert_b64.split()))).public_key()
            if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed.encode("ascii"), padding.PKCS1v15(), hash_cls())
                return True
            if kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
                half = len(signature) // 2
                der = encode_dss_signature(
                    int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
                )
                key.verify(der, signed.encode("ascii"), ec.ECDSA(hash_cls()))
                return True
        except InvalidSignature:
            continue
        except Exception as exc:  # a certificate we cannot use
            log.warning("redirect signature check: %s", exc)
            continue
    return False


def pysaml2_redirect_verdict(server, params, certs):
    try:
        from saml2.sigver import verify_redirect_signature as p2_verify

        msg = {k: params[k] for k in ("SAMLRequest", "RelayState", "SigAlg", "Signature") if k in params}
        return any(p2_verify(msg, server.sec.sec_backend, cert) for _n, cert in certs)
    except Exception as exc:
        log.info("pysaml2 redirect signature check raised: %s", exc)
        return False


def inflate(b64):
    data = base64.b64decode(b64)
    try:
        return zlib.decompress(data, -15).decode("utf-8")
    except zlib.error:
        return data.decode("utf-8")


def login_page(key, sp_entity_id, error=None):
    e = html.escape
    msg = f'<p class="error">{e(error)}</p>\n' if error else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body>
<h1>Test IdP sign-in</h1>
<p>Signing in to <code>{e(sp_entity_id)}</code></p>
{msg}<form method="post" action="/sso/login">
<input type="hidden" name="key" value="{e(key)}">
<label>Username <input type="text" name="username" id="username" autocomplete="username"></label>
<label>Password <input type="password" name="password" id="password" autocomplete="current-password"></label>
<button type="submit" id="login">Sign in</button>
</form>
</body></html>
"""


def post_page(acs_url, saml_response_b64, relay_state):
    e = html.escape
    relay = (
        f'<input type="hidden" name="RelayState" value="{e(relay_state, quote=True)}">\n'
        if relay_state is not None
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Signing in</title></head>
<body>
<form method="post" action="{e(acs_url, quote=True)}">
<input type="hidden" name="SAMLResponse" value="{e(saml_response_b64, quote=True)}">
{relay}<noscript><button type="submit">Continue</button></noscript>
</form>
<script>document.forms[0].submit();</script>
</body></html>
"""


def load_users(path):
    with open(path, encoding="utf-8") as f:
        users = json.load(f)
    if not isinstance(users, list):
        raise ValueError("users file must hold a JSON list")
    return users


# --- HTTP ----------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server_version = "GatehouseTestIdP/1"
    state: State = None  # set in main

    def log_message(self, fmt, *args):
        sys.stderr.write("saml-idp %s - %s\n" % (self.address_string(), fmt % args))

    # responses
    def send(self, status, body, ctype="text/plain; charset=utf-8"):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj):
        self.send(status, json.dumps(obj, indent=1) + "\n", "application/json")

    def send_html(self, status, text):
        self.send(status, text, "text/html; charset=utf-8")

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # routing
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path == "/metadata":
                return self.send(200, self.state.metadata_xml, "application/samlmetadata+xml")
            if url.path == "/sso/redirect":
                return self.sso_redirect(url.query)
            if url.path == "/__test/last-request":
                return self.send_json(200, self.state.last_request)
            if url.path == "/__test/last-response":
                return self.send_json(200, self.state.last_response)
            if url.path == "/__test/config":
                return self.send_json(200, self.state.response_config)
            return self.send(404, "not found\n")
        except Exception as exc:
            log.exception("GET %s", url.path)
            return self.send(500, f"internal error: {exc}\n")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path == "/sso/login":
                return self.sso_login()
            if url.path == "/__test/sp-metadata":
                return self.load_sp_metadata()
            if url.path == "/__test/config":
                return self.set_config()
            return self.send(404, "not found\n")
        except Exception as exc:
            log.exception("POST %s", url.path)
            return self.send(500, f"internal error: {exc}\n")

    # /sso/redirect
    def sso_redirect(self, query):
        st = self.state
        params = {}
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)
        if "SAMLRequest" not in params:
            return self.send(400, "missing SAMLRequest\n")
        relay_state = params.get("RelayState")
        signed = "Signature" in params
        try:
            xml = inflate(params["SAMLRequest"])
        except Exception as exc:
            return self.send(400, f"SAMLRequest is not base64 of deflated XML: {exc}\n")
        record = {
            "xml": xml,
            "relay_state": relay_state,
            "signed": signed,
            "signature_valid": None,
            "sig_alg": params.get("SigAlg"),
            "signature_valid_pysaml2": None,
            "id": None,
            "sp_entity_id": None,
            "acs_url": None,
            "error": None,
        }
        with st.lock:
            st.last_request = record
            server = st.server

            def fail(reason):
                record["error"] = reason
                log.warning("rejecting AuthnRequest: %s", reason)
                return self.send(400, reason + "\n")

            try:
                req = server.parse_authn_request(params["SAMLRequest"], BINDING_HTTP_REDIRECT)
            except Exception as exc:
                return fail(f"bad AuthnRequest: {type(exc).__name__}: {exc}")
            if req is None or req.message is None:
                return fail("bad AuthnRequest")
            msg = req.message
            sp = msg.issuer.text.strip() if msg.issuer is not None and msg.issuer.text else None
            record["id"] = msg.id
            record["sp_entity_id"] = sp
            if not sp or sp not in st.sp_metadata:
                return fail(f"unknown SP: {sp!r} (post its metadata to /__test/sp-metadata)")

            certs = server.metadata.certs(sp, "any", "signing")
            if signed:
                record["signature_valid"] = verify_redirect_signature(query, certs)
                record["signature_valid_pysaml2"] = pysaml2_redirect_verdict(server, params, certs)
                log.info(
                    "redirect signature: valid=%s (pysaml2 re-encoded check: %s)",
                    record["signature_valid"],
                    record["signature_valid_pysaml2"],
                )

            if msg.protocol_binding and msg.protocol_binding != BINDING_HTTP_POST:
                return fail(f"unsupported ProtocolBinding {msg.protocol_binding} (only HTTP-POST)")
            try:
                acs_list = server.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST) or []
            except Exception as exc:
                return fail(f"SP has no HTTP-POST AssertionConsumerService: {exc}")
            if not acs_list:
                return fail("SP has no HTTP-POST AssertionConsumerService")
            acs_url = None
            if msg.assertion_consumer_service_url:
                if any(a["location"] == msg.assertion_consumer_service_url for a in acs_list):
                    acs_url = msg.assertion_consumer_service_url
                else:
                    return fail(
                        f"AssertionConsumerServiceURL {msg.assertion_consumer_service_url} is not in the SP metadata"
                    )
            elif msg.assertion_consumer_service_index is not None:
                for a in acs_list:
                    if str(a.get("index")) == str(msg.assertion_consumer_service_index):
                        acs_url = a["location"]
                if acs_url is None:
                    return fail(f"AssertionConsumerServiceIndex {msg.assertion_consumer_service_index} unknown")
            else:
                defaults = [a for a in acs_list if str(a.get("is_default", "")).lower() == "true"]
                acs_url = (defaults or acs_list)[0]["location"]
            record["acs_url"] = acs_url

            now = time.time()
            for k in [k for k, p in st.pending.items() if now - p["created"] > PENDING_TTL]:
                del st.pending[k]
            key = secrets.token_urlsafe(24)
            st.pending[key] = {
                "sp": sp,
                "request_id": msg.id,
                "acs_url": acs_url,
                "relay_state": relay_state,
                "created": now,
            }
        return self.send_html(200, login_page(key, sp))

    # /sso/login
    def sso_login(self):
        st = self.state
        form = {}
        for name, value in urllib.parse.parse_qsl(self.body().decode("utf-8"), keep_blank_values=True):
            form.setdefault(name, value)
        key = form.get("key", "")
        with st.lock:
            pending = st.pending.get(key)
        if pending is None:
            return self.send(400, "unknown or expired login key\n")
        try:
            users = load_users(st.conf["users_file"])
        except Exception as exc:
            return self.send(500, f"cannot read users file: {exc}\n")
        user = next(
            (
                u
                for u in users
                if u.get("username") == form.get("username") and u.get("password") == form.get("password")
            ),
            None,
        )
        if user is None or not form.get("username"):
            log.info("invalid credentials for %r", form.get("username"))
            return self.send_html(200, login_page(key, pending["sp"], error="invalid credentials"))

        with st.lock:
            cfg = dict(st.response_config)
            server = st.server
            sp = pending["sp"]
            if sp not in st.sp_metadata:
                return self.send(400, f"SP {sp} is no longer known\n")
            if cfg["encrypt_assertion"] and not server.metadata.certs(sp, "any", "encryption"):
                return self.send(400, f"encrypt_assertion is on but {sp} has no encryption certificate\n")
            server.data_enc_alg = cfg["encryption_alg"]
            name_id = saml.NameID(
                format=user.get("name_id_format") or NAMEID_UNSPECIFIED,
                text=user.get("name_id") or user["username"],
            )
            identity = dict(user.get("attributes") or {})
            resp = server.create_authn_response(
                identity,
                in_response_to=pending["request_id"],
                destination=pending["acs_url"],
                sp_entity_id=sp,
                name_id=name_id,
                authn={"class_ref": AUTHN_PASSWORD_PROTECTED},
                sign_response=cfg["sign_response"],
                sign_assertion=cfg["sign_assertion"],
                encrypt_assertion=cfg["encrypt_assertion"],
                encrypt_assertion_self_contained=True,
                sign_alg=cfg["sign_alg"],
                digest_alg=cfg["digest_alg"],
                release_policy=ReleaseEverything(mds=server.metadata),
            )
            if isinstance(resp, list):  # pysaml2's error paths answer str(response).split("\n")
                resp = "\n".join(resp)
            if not isinstance(resp, str):
                resp = resp.to_string()
                if isinstance(resp, bytes):
                    resp = resp.decode("utf-8")
            st.pending.pop(key, None)
            st.last_response = {
                "xml": resp,
                "acs_url": pending["acs_url"],
                "relay_state": pending["relay_state"],
                "config": cfg,
            }
        b64 = base64.b64encode(resp.encode("utf-8")).decode("ascii")
        log.info("issued Response to %s for %s (%s)", sp, user.get("username"), cfg)
        return self.send_html(200, post_page(pending["acs_url"], b64, pending["relay_state"]))

    # /__test/sp-metadata
    def load_sp_metadata(self):
        xml = self.body().decode("utf-8")
        if not xml.strip():
            return self.send(400, "empty body: post the SP metadata XML\n")
        try:
            entity_id = self.state.load_sp(xml)
        except Exception as exc:
            log.warning("bad SP metadata: %s", exc)
            return self.send(400, f"bad SP metadata: {type(exc).__name__}: {exc}\n")
        log.info("loaded SP %s", entity_id)
        return self.send_json(200, {"entity_id": entity_id})

    # /__test/config
    def set_config(self):
        try:
            new = json.loads(self.body() or b"{}")
            if not isinstance(new, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return self.send(400, f"bad JSON: {exc}\n")
        st = self.state
        with st.lock:
            cfg = dict(st.response_config)
            for name, value in new.items():
                if name not in DEFAULT_RESPONSE_CONFIG:
                    return self.send(400, f"unknown option {name}\n")
                if isinstance(DEFAULT_RESPONSE_CONFIG[name], bool):
                    if not isinstance(value, bool):
                        return self.send(400, f"{name} must be a boolean\n")
                elif value is None:
                    value = DEFAULT_RESPONSE_CONFIG[name]
                allowed = {
                    "sign_alg": RESPONSE_SIG_ALGS,
                    "digest_alg": DIGEST_ALGS,
                    "encryption_alg": DATA_ENC_ALGS,
                }.get(name)
                if allowed is not None and value not in allowed:
                    return self.send(400, f"{name} must be one of {sorted(allowed)}\n")
                cfg[name] = value
            st.response_config = cfg
        return self.send_json(200, cfg)


def main():
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("SAML_IDP_LOG", "INFO").upper(),
        format="saml-idp %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("saml2").setLevel(logging.WARNING)
    if len(sys.argv) != 2:
        sys.stderr.write("usage: idp.py CONFIG.json\n")
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        conf = json.load(f)
    host = conf.get("host", "127.0.0.1")
    httpd = ThreadingHTTPServer((host, int(conf.get("port", 0))), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    url_host = f"[{host}]" if ":" in host else host
    base = f"http://{url_host}:{port}"
    conf["base"] = base
    conf["sso_url"] = f"{base}/sso/redirect"
    conf["metadata_url"] = f"{base}/metadata"
    conf["entity_id"] = conf.get("entity_id") or conf["metadata_url"]
    for name in ("key", "cert", "users_file"):
        if not conf.get(name) or not os.path.isfile(conf[name]):
            sys.stderr.write(f"config: {name} must name an existing file\n")
            return 2
    Handler.state = State(conf)
    line = {
        "base": base,
        "entity_id": conf["entity_id"],
        "metadata_url": conf["metadata_url"],
        "sso_url": conf["sso_url"],
    }
    _STDOUT.write(json.dumps(line) + "\n")
    _STDOUT.flush()
    log.info("listening on %s (pysaml2 %s)", base, getattr(saml2, "__version__", "?"))
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
