#!/usr/bin/env python3
"""End-to-end self-check of the SAML IdP test peer, without Gatehouse.

    tests/peers/venv/bin/python tests/peers/saml/smoke.py [--keep]

Makes keys with openssl, starts idp.py, plays a hand-written SP (metadata, HTTP-Redirect
AuthnRequests built as strings), logs in, and checks every Response with xmlsec1. Prints one line
per check and a closing 'N passed, N failed'; exits 0 only when every check passed. Standard
library only (besides the openssl and xmlsec1 binaries), so it also runs outside the venv.
"""

import base64
import datetime
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
IDP = os.path.join(HERE, "idp.py")

SP_ENTITY = "https://127.0.0.1:9/v1/sso/saml/corp/metadata"
SP_ACS = "https://127.0.0.1:9/v1/sso/saml/corp/acs"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
EMAIL_FMT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
URI_FMT = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BASIC_FMT = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
}
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
AES128 = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
AES256 = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
OAEP = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
XPATH_RESPONSE_SIG = "/*[local-name()='Response']/*[local-name()='Signature']"
XPATH_ASSERTION_SIG = "//*[local-name()='Assertion']/*[local-name()='Signature']"

USERS = [
    {
        "username": "alice",
        "password": "alice-password",
        "name_id": "alice@corp.example",
        "name_id_format": EMAIL_FMT,
        "attributes": {
            "email": ["alice@corp.example"],
            "displayName": ["Alice Liddell"],
            GROUPS: ["engineering", "staff"],
        },
    }
]
# A RelayState that needs URL- and HTML-escaping; spaces are sent as %20 (not '+'), which an SP
# may well do and which pysaml2's own redirect-signature check (it re-encodes) gets wrong.
RELAY = 'rs "q" & <tag> ü/é 1+1=2'

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   - {name}")
    else:
        failed += 1
        print(f"FAIL - {name}" + (f": {detail}" if detail else ""))
    sys.stdout.flush()
    return ok


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def make_cert(tmp, stem, cn):
    key, cert = os.path.join(tmp, f"{stem}-key.pem"), os.path.join(tmp, f"{stem}-cert.pem")
    r = run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", f"/CN={cn}"]
    )
    if r.returncode != 0:
        sys.exit(f"openssl failed: {r.stderr}")
    return key, cert


def cert_body(cert_path):
    with open(cert_path) as f:
        pem = f.read()
    return "".join(line for line in pem.splitlines() if "-----" not in line)


def sp_metadata(sign_cert, enc_cert):
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{SP_ENTITY}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing">
      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_body(sign_cert)}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
    </md:KeyDescriptor>
    <md:KeyDescriptor use="encryption">
      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_body(enc_cert)}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
      <md:EncryptionMethod Algorithm="{AES128}"/>
      <md:EncryptionMethod Algorithm="{AES256}"/>
    </md:KeyDescriptor>
    <md:NameIDFormat>{EMAIL_FMT}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{POST}" Location="{SP_ACS}" index="0" isDefault="true"/>
    <md:AttributeConsumingService index="0">
      <md:ServiceName xml:lang="en">Gatehouse</md:ServiceName>
      <md:RequestedAttribute Name="email" NameFormat="{BASIC_FMT}" isRequired="true"/>
    </md:AttributeConsumingService>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"""


def authn_request(sso_url, issuer=SP_ENTITY, acs=SP_ACS, destination=None):
    rid = "_" + secrets.token_hex(16)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    xml = (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="{rid}" Version="2.0" IssueInstant="{now}" Destination="{destination or sso_url}" '
        + (f'AssertionConsumerServiceURL="{acs}" ProtocolBinding="{POST}">' if acs else ">")
        + f"<saml:Issuer>{issuer}</saml:Issuer>"
        f'<samlp:NameIDPolicy Format="{EMAIL_FMT}" AllowCreate="true"/>'
        "</samlp:AuthnRequest>"
    )
    return rid, xml


def redirect_query(xml, relay=RELAY, sign_key=None, tamper=False):
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = co.compress(xml.encode()) + co.flush()
    q = "SAMLRequest=" + urllib.parse.quote(base64.b64encode(deflated).decode(), safe="")
    if relay is not None:
        q += "&RelayState=" + urllib.parse.quote(relay, safe="")
    if sign_key:
        q += "&SigAlg=" + urllib.parse.quote(RSA_SHA256, safe="")
        r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sign_key], input=q.encode(), capture_output=True)
        if r.returncode != 0:
            sys.exit(f"openssl dgst failed: {r.stderr}")
        sig = bytearray(r.stdout)
        if tamper:
            sig[10] ^= 0x01
        q += "&Signature=" + urllib.parse.quote(base64.b64encode(bytes(sig)).decode(), safe="")
    return q


def http(method, url, body=None, ctype=None):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def form_post(url, fields):
    return http("POST", url, urllib.parse.urlencode(fields), "application/x-www-form-urlencoded")


def hidden(page, name):
    m = re.search(r'<input type="hidden" name="' + re.escape(name) + r'" value="([^"]*)">', page)
    return html.unescape(m.group(1)) if m else None


def start_login(base, sso_url, **kw):
    rid, xml = authn_request(sso_url)
    status, page = http("GET", f"{sso_url}?{redirect_query(xml, **kw)}")
    return rid, status, page, hidden(page, "key")


def xmlsec_verify(path, cert, xpath=None):
    cmd = ["xmlsec1", "--verify",
           "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
           "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response",
           "--enabled-key-data", "rsa,x509", "--pubkey-cert-pem", cert]
    if xpath:
        cmd += ["--node-xpath", xpath]
    r = run(cmd + [path])
    return r.returncode == 0, (r.stdout + r.stderr).strip().splitlines()[-3:]


def sig_ok(tmp, label, xml_text, cert, wrong_cert, xpath=None):
    path = os.path.join(tmp, f"{label}.xml")
    with open(path, "w") as f:
        f.write(xml_text)
    ok, out = xmlsec_verify(path, cert, xpath)
    check(f"{label}: xmlsec1 --verify with the IdP cert" + (f" ({xpath})" if xpath else ""), ok, " | ".join(out))
    bad, out = xmlsec_verify(path, wrong_cert, xpath)
    check(f"{label}: xmlsec1 --verify with another cert fails", not bad, " | ".join(out))


def signature_children(el):
    return el.findall("ds:Signature", NS)


def reference_ok(el, sign_alg, digest_alg):
    sigs = signature_children(el)
    if len(sigs) != 1:
        return False, f"{len(sigs)} Signature children"
    s = sigs[0]
    ref = s.find("ds:SignedInfo/ds:Reference", NS)
    sm = s.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm")
    dm = ref.find("ds:DigestMethod", NS).get("Algorithm")
    ok = ref.get("URI") == "#" + el.get("ID") and sm == sign_alg and dm == digest_alg
    return ok, f"URI={ref.get('URI')} ID={el.get('ID')} SignatureMethod={sm} DigestMethod={dm}"


def check_assertion(label, a, rid, idp_entity, expect_user=USERS[0]):
    issuer = a.find("saml:Issuer", NS)
    check(f"{label}: Assertion Issuer is the IdP", issuer is not None and issuer.text == idp_entity,
          issuer.text if issuer is not None else "none")
    nid = a.find("saml:Subject/saml:NameID", NS)
    check(f"{label}: NameID and Format",
          nid is not None and nid.text == expect_user["name_id"] and nid.get("Format") == expect_user["name_id_format"],
          ET.tostring(nid).decode() if nid is not None else "none")
    scd = a.find("saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS)
    sc = a.find("saml:Subject/saml:SubjectConfirmation", NS)
    check(f"{label}: SubjectConfirmation bearer, InResponseTo and Recipient",
          sc is not None and sc.get("Method") == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
          and scd is not None and scd.get("InResponseTo") == rid and scd.get("Recipient") == SP_ACS
          and scd.get("NotOnOrAfter"),
          str(scd.attrib if scd is not None else None))
    aud = [x.text for x in a.findall("saml:Conditions/saml:AudienceRestriction/saml:Audience", NS)]
    check(f"{label}: Audience is the SP entity id", aud == [SP_ENTITY], str(aud))
    got = {}
    for attr in a.findall("saml:AttributeStatement/saml:Attribute", NS):
        got[attr.get("Name")] = (attr.get("NameFormat"), [v.text for v in attr.findall("saml:AttributeValue", NS)])
    want = {
        name: (URI_FMT if (":" in name or "/" in name) else BASIC_FMT, values)
        for name, values in expect_user["attributes"].items()
    }
    check(f"{label}: attribute names, NameFormats and values exactly as in users.json", got == want,
          f"got {got}")
    ac = a.find("saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef", NS)
    check(f"{label}: AuthnStatement present", ac is not None, "")


def check_response_envelope(label, root, rid, idp_entity):
    check(f"{label}: root is samlp:Response", root.tag == "{%s}Response" % NS["samlp"], root.tag)
    check(f"{label}: Response InResponseTo and Destination",
          root.get("InResponseTo") == rid and root.get("Destination") == SP_ACS, str(root.attrib))
    st = root.find("samlp:Status/samlp:StatusCode", NS)
    check(f"{label}: Status Success",
          st is not None and st.get("Value") == "urn:oasis:names:tc:SAML:2.0:status:Success",
          st.get("Value") if st is not None else "none")
    issuer = root.find("saml:Issuer", NS)
    check(f"{label}: Response Issuer is the IdP", issuer is not None and issuer.text == idp_entity, "")


def login(base, sso_url, user="alice", password="alice-password"):
    rid, status, page, key = start_login(base, sso_url)
    if status != 200 or not key:
        return rid, None, None, f"login form: {status} {page[:200]}"
    status, page = form_post(f"{base}/sso/login", {"key": key, "username": user, "password": password})
    if status != 200:
        return rid, None, None, f"login: {status} {page[:200]}"
    return rid, page, None, None


def mode(tmp, base, sso_url, idp_entity, certs, label, cfg, expect_user=USERS[0], user="alice",
         password="alice-password"):
    idp_cert, sp_enc_key, sp_sign_key, sp_sign_cert = certs
    status, body = http("POST", f"{base}/__test/config", json.dumps(cfg), "application/json")
    check(f"{label}: POST /__test/config", status == 200, body)
    full = json.loads(body) if status == 200 else {}
    rid, page, _, err = login(base, sso_url, user, password)
    if not check(f"{label}: login answers the auto-POST page", page is not None, err or ""):
        return
    check(f"{label}: page posts to the ACS and auto-submits",
          f'<form method="post" action="{SP_ACS}">' in page and "submit()" in page, page[:300])
    b64, relay = hidden(page, "SAMLResponse"), hidden(page, "RelayState")
    check(f"{label}: RelayState comes back unchanged", relay == RELAY, repr(relay))
    if not check(f"{label}: SAMLResponse input present", b64 is not None, page[:300]):
        return
    xml_text = base64.b64decode(b64).decode("utf-8")
    with open(os.path.join(tmp, f"{label}.response.xml"), "w") as f:
        f.write(xml_text)
    root = ET.fromstring(xml_text)
    check_response_envelope(label, root, rid, idp_entity)
    sign_alg, digest_alg = full.get("sign_alg", RSA_SHA256), full.get("digest_alg")

    resp_sigs = signature_children(root)
    if full.get("sign_response"):
        ok, detail = reference_ok(root, sign_alg, digest_alg)
        check(f"{label}: Response carries one Signature referencing its ID", ok, detail)
        children = [c.tag.split("}")[1] for c in root]
        check(f"{label}: Response Signature right after Issuer", children[:2] == ["Issuer", "Signature"],
              str(children))
        sig_ok(tmp, f"{label}-response-sig", xml_text, idp_cert, sp_sign_cert, XPATH_RESPONSE_SIG)
    else:
        check(f"{label}: Response itself unsigned", not resp_sigs, "")

    if full.get("encrypt_assertion"):
        check(f"{label}: no plaintext Assertion", root.find("saml:Assertion", NS) is None, "")
        ea = root.find("saml:EncryptedAssertion", NS)
        if not check(f"{label}: EncryptedAssertion present", ea is not None, ""):
            return
        ed = ea.find("xenc:EncryptedData", NS)
        data_alg = ed.find("xenc:EncryptionMethod", NS).get("Algorithm")
        ek = ed.find("ds:KeyInfo/xenc:EncryptedKey", NS)
        check(f"{label}: EncryptedData uses {full['encryption_alg'].split('#')[1]}",
              data_alg == full["encryption_alg"], data_alg)
        check(f"{label}: EncryptedKey (inside EncryptedData/KeyInfo) uses rsa-oaep-mgf1p",
              ek is not None and ek.find("xenc:EncryptionMethod", NS).get("Algorithm") == OAEP, "")
        enc_path = os.path.join(tmp, f"{label}.encrypted.xml")
        with open(enc_path, "w") as f:
            f.write(xml_text)
        r = run(["xmlsec1", "--decrypt", "--privkey-pem", sp_sign_key, enc_path])
        check(f"{label}: decrypting with the SP signing key (not the encryption key) fails", r.returncode != 0,
              r.stdout[:200])
        r = run(["xmlsec1", "--decrypt", "--privkey-pem", sp_enc_key, enc_path])
        if not check(f"{label}: xmlsec1 --decrypt --privkey-pem sp-key.pem", r.returncode == 0, r.stderr[-300:]):
            return
        decrypted = r.stdout
        with open(os.path.join(tmp, f"{label}.decrypted.xml"), "w") as f:
            f.write(decrypted)
        droot = ET.fromstring(decrypted)
        assertion = droot.find("saml:EncryptedAssertion/saml:Assertion", NS)
        if not check(f"{label}: decrypted Assertion sits in EncryptedAssertion", assertion is not None,
                     decrypted[:300]):
            return
        assertion_doc = decrypted
    else:
        assertion = root.find("saml:Assertion", NS)
        if not check(f"{label}: one plaintext Assertion", assertion is not None
                     and len(root.findall("saml:Assertion", NS)) == 1, ""):
            return
        assertion_doc = xml_text

    if full.get("sign_assertion"):
        ok, detail = reference_ok(assertion, sign_alg, digest_alg)
        check(f"{label}: Assertion carries one Signature referencing its ID", ok, detail)
        children = [c.tag.split("}")[1] for c in assertion]
        check(f"{label}: Assertion Signature right after Issuer", children[:2] == ["Issuer", "Signature"],
              str(children))
        sig_ok(tmp, f"{label}-assertion-sig", assertion_doc, idp_cert, sp_sign_cert, XPATH_ASSERTION_SIG)
    else:
        check(f"{label}: Assertion itself unsigned", not signature_children(assertion), "")

    if full.get("sign_response") or full.get("sign_assertion"):
        # The exact command from PEERS.md (verifies the first Signature in document order).
        path = os.path.join(tmp, f"{label}-plain-verify.xml")
        with open(path, "w") as f:
            f.write(xml_text if full.get("sign_response") else assertion_doc)
        ok, out = xmlsec_verify(path, idp_cert)
        check(f"{label}: plain xmlsec1 --verify (first Signature in document)", ok, " | ".join(out))

    check_assertion(label, assertion, rid, idp_entity, expect_user)


def main():
    keep = "--keep" in sys.argv
    for tool in ("openssl", "xmlsec1"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    tmp = tempfile.mkdtemp(prefix="saml-smoke-")
    idp_key, idp_cert = make_cert(tmp, "idp", "gatehouse-test-idp")
    sp_enc_key, sp_enc_cert = make_cert(tmp, "sp", "gatehouse-test-sp-encryption")
    sp_sign_key, sp_sign_cert = make_cert(tmp, "sp-sign", "gatehouse-test-sp-signing")
    users_file = os.path.join(tmp, "users.json")
    with open(users_file, "w") as f:
        json.dump(USERS, f)
    cfg_file = os.path.join(tmp, "idp.json")
    with open(cfg_file, "w") as f:
        json.dump({"host": "127.0.0.1", "port": 0, "key": idp_key, "cert": idp_cert, "users_file": users_file}, f)

    python = os.path.join(HERE, "..", "venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    stderr_log = open(os.path.join(tmp, "idp.stderr.log"), "w")
    proc = subprocess.Popen([python, IDP, cfg_file], stdout=subprocess.PIPE, stderr=stderr_log, text=True)
    try:
        line = proc.stdout.readline()
        try:
            info = json.loads(line)
        except ValueError:
            proc.wait(timeout=5)
            sys.exit(f"idp.py did not print its JSON line: {line!r}; see {stderr_log.name}")
        check("idp.py prints one JSON line with base/entity_id/metadata_url/sso_url",
              set(info) == {"base", "entity_id", "metadata_url", "sso_url"}
              and info["entity_id"] == info["metadata_url"] == info["base"] + "/metadata"
              and info["sso_url"] == info["base"] + "/sso/redirect", line.strip())
        base, sso_url, idp_entity = info["base"], info["sso_url"], info["entity_id"]
        certs = (idp_cert, sp_enc_key, sp_sign_key, sp_sign_cert)

        # metadata
        status, md = http("GET", f"{base}/metadata")
        mroot = ET.fromstring(md)
        mdns = "urn:oasis:names:tc:SAML:2.0:metadata"
        idpsso = mroot.find(f"{{{mdns}}}IDPSSODescriptor")
        kd = idpsso.findall(f"{{{mdns}}}KeyDescriptor") if idpsso is not None else []
        sso = idpsso.findall(f"{{{mdns}}}SingleSignOnService") if idpsso is not None else []
        check("GET /metadata: EntityDescriptor with IDPSSODescriptor", status == 200
              and mroot.get("entityID") == idp_entity and idpsso is not None, md[:200])
        check("metadata: one signing KeyDescriptor with the IdP cert",
              [k.get("use") for k in kd] == ["signing"]
              and "".join(kd[0].find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS).text.split())
              == cert_body(idp_cert), str([k.attrib for k in kd]))
        check("metadata: HTTP-Redirect SingleSignOnService at /sso/redirect",
              [(s.get("Binding"), s.get("Location")) for s in sso]
              == [("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect", sso_url)], str([s.attrib for s in sso]))
        check("metadata: WantAuthnRequestsSigned=false", idpsso.get("WantAuthnRequestsSigned") == "false",
              str(idpsso.attrib))

        # before the SP is known
        rid, xml = authn_request(sso_url)
        status, body = http("GET", f"{sso_url}?{redirect_query(xml)}")
        check("AuthnRequest from an unknown SP: 400", status == 400 and "unknown SP" in body, f"{status} {body}")

        status, body = http("POST", f"{base}/__test/sp-metadata", sp_metadata(sp_sign_cert, sp_enc_cert),
                            "application/samlmetadata+xml")
        check("POST /__test/sp-metadata answers the entity id",
              status == 200 and json.loads(body) == {"entity_id": SP_ENTITY}, body)
        status, body = http("POST", f"{base}/__test/sp-metadata", "<not-metadata/>", "application/xml")
        check("POST /__test/sp-metadata with junk: 400", status == 400, f"{status} {body}")

        # AuthnRequest handling
        rid, status, page, key = start_login(base, sso_url)
        check("GET /sso/redirect: login form", status == 200 and '<form method="post" action="/sso/login">' in page
              and key and 'name="username"' in page and 'name="password"' in page, page[:300])
        status, body = http("GET", f"{base}/__test/last-request")
        last = json.loads(body)
        check("last-request: unsigned request recorded",
              last["xml"].find(f'ID="{rid}"') > 0 and last["relay_state"] == RELAY and last["signed"] is False
              and last["signature_valid"] is None and last["sig_alg"] is None, body[:400])

        rid, status, page, key = start_login(base, sso_url, sign_key=sp_sign_key)
        last = json.loads(http("GET", f"{base}/__test/last-request")[1])
        check("signed redirect (RelayState with %20): signature_valid true", status == 200 and last["signed"] is True
              and last["signature_valid"] is True and last["sig_alg"] == RSA_SHA256, json.dumps(last)[:400])
        print(f"     (pysaml2's own re-encoding check said {last.get('signature_valid_pysaml2')})")
        rid, status, page, key = start_login(base, sso_url, sign_key=sp_sign_key, relay="plain-state")
        last = json.loads(http("GET", f"{base}/__test/last-request")[1])
        check("signed redirect (plain RelayState): signature_valid true, pysaml2 agrees", status == 200
              and last["signature_valid"] is True and last["signature_valid_pysaml2"] is True, json.dumps(last)[:400])
        rid, status, page, key = start_login(base, sso_url, sign_key=sp_sign_key, tamper=True)
        last = json.loads(http("GET", f"{base}/__test/last-request")[1])
        check("tampered redirect signature: form still served, signature_valid false",
              status == 200 and key and last["signed"] is True and last["signature_valid"] is False,
              json.dumps(last)[:400])
        rid, status, page, key = start_login(base, sso_url, sign_key=sp_enc_key)
        last = json.loads(http("GET", f"{base}/__test/last-request")[1])
        check("redirect signed with a key not in the SP metadata: signature_valid false",
              last["signature_valid"] is False, json.dumps(last)[:400])

        rid, xml = authn_request(sso_url, acs="https://127.0.0.1:9/elsewhere")
        status, body = http("GET", f"{sso_url}?{redirect_query(xml)}")
        check("AssertionConsumerServiceURL not in SP metadata: 400", status == 400, f"{status} {body}")
        rid, xml = authn_request(sso_url, destination="http://127.0.0.1:9/sso/redirect")
        status, body = http("GET", f"{sso_url}?{redirect_query(xml)}")
        check("Destination other than the sso_url: 400", status == 400, f"{status} {body}")
        rid, xml = authn_request(sso_url, acs=None)
        status, body = http("GET", f"{sso_url}?{redirect_query(xml)}")
        last = json.loads(http("GET", f"{base}/__test/last-request")[1])
        check("no AssertionConsumerServiceURL: the metadata's default ACS", status == 200
              and last["acs_url"] == SP_ACS and last["id"] == rid, json.dumps(last)[:300])
        status, body = http("GET", f"{sso_url}?RelayState=x")
        check("no SAMLRequest: 400", status == 400, f"{status} {body}")
        status, body = http("GET", f"{sso_url}?SAMLRequest=bm90IHhtbA%3D%3D")
        check("garbage SAMLRequest: 400", status == 400, f"{status} {body}")

        # credentials
        rid, status, page, key = start_login(base, sso_url)
        status, page = form_post(f"{base}/sso/login", {"key": key, "username": "alice", "password": "wrong"})
        check("wrong password: 200, form again, 'invalid credentials', no SAMLResponse",
              status == 200 and "invalid credentials" in page and hidden(page, "SAMLResponse") is None
              and hidden(page, "key") == key, page[:300])
        status, page = form_post(f"{base}/sso/login", {"key": key, "username": "mallory", "password": "x"})
        check("unknown user: 'invalid credentials'", status == 200 and "invalid credentials" in page, page[:200])
        status, page = form_post(f"{base}/sso/login", {"key": key, "username": "alice", "password": "alice-password"})
        check("same form then right password: SAMLResponse", status == 200
              and hidden(page, "SAMLResponse") is not None, page[:200])
        status, page = form_post(f"{base}/sso/login", {"key": key, "username": "alice", "password": "alice-password"})
        check("login key is single-use: 400", status == 400, f"{status} {page}")

        # the config endpoint
        status, body = http("POST", f"{base}/__test/config", json.dumps({"nope": 1}), "application/json")
        check("unknown config option: 400", status == 400, body)
        status, body = http("POST", f"{base}/__test/config", json.dumps({"sign_alg": "md5"}), "application/json")
        check("bad sign_alg: 400", status == 400, body)

        # response modes
        base_cfg = {"sign_response": False, "sign_assertion": True, "encrypt_assertion": False,
                    "sign_alg": RSA_SHA256, "digest_alg": "http://www.w3.org/2001/04/xmlenc#sha256",
                    "encryption_alg": AES128}
        modes = [
            ("assertion-signed", {}),
            ("response-signed", {"sign_response": True, "sign_assertion": False}),
            ("both-signed", {"sign_response": True, "sign_assertion": True}),
            ("both-signed-sha512", {"sign_response": True, "sign_assertion": True,
                                    "sign_alg": RSA_SHA512, "digest_alg": SHA512}),
            ("encrypted", {"encrypt_assertion": True}),
            ("encrypted-aes256-response-signed", {"encrypt_assertion": True, "sign_response": True,
                                                  "encryption_alg": AES256}),
            ("encrypted-aes128-gcm", {"encrypt_assertion": True,
                                      "encryption_alg": "http://www.w3.org/2009/xmlenc11#aes128-gcm"}),
        ]
        for label, over in modes:
            mode(tmp, base, sso_url, idp_entity, certs, label, {**base_cfg, **over})

        # users.json is re-read on every login
        bob = {"username": "bob", "password": "bob-pw", "name_id": "bob-0001",
               "name_id_format": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
               "attributes": {"urn:oid:0.9.2342.19200300.100.1.3": ["bob@corp.example"], "role": ["admin"]}}
        with open(users_file, "w") as f:
            json.dump(USERS + [bob], f)
        mode(tmp, base, sso_url, idp_entity, certs, "users-reloaded", base_cfg, expect_user=bob,
             user="bob", password="bob-pw")
        # defaults restored
        status, body = http("POST", f"{base}/__test/config", json.dumps(base_cfg), "application/json")
        check("config back to defaults", status == 200 and json.loads(body) == base_cfg, body)

        check("idp.py still running", proc.poll() is None, "")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr_log.close()
        rest = proc.stdout.read()
        check("idp.py printed nothing else on stdout", rest == "", repr(rest[:200]))
        if failed or keep:
            print(f"files kept in {tmp} (idp.stderr.log, *.response.xml, *.decrypted.xml)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
