"""Attacks on the edge's credentials and tokens, kept refused (issue 15, findings 1, 10 and the OAuth2 part
of 12): brute force of the token endpoint (429 with Retry-After, per address and per client id, and per
address on the whole VTN), argon2 off the event loop, tokens with an audience and a key id verified by any
of several keys (rotation), an asymmetric option with its JWKS document, ``no-store`` on token answers,
security headers on every API, and client credentials by HTTP Basic with the OAuth2 ``error`` member."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from derbridge.api.app import create_asgi
from derbridge.edge import auth
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import PreviousTokenKey, Settings

PREFIX = "/openadr3/3.1.0"
TOKEN = PREFIX + "/auth/token"


@pytest.fixture
def runtime(sqlite_settings: Settings) -> Iterator[Runtime]:
    sqlite_settings.edge.token_secret = SecretStr("current-" + "k" * 40)
    migrate_all(sqlite_settings)
    runtime = Runtime(sqlite_settings)
    yield runtime
    runtime.close_sync()


def client_from(runtime: Runtime, address: str, base: str = "http://derbridge.test") -> httpx.AsyncClient:
    """An HTTP client on the in-process server whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=create_asgi(runtime), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=base)


class Callers:
    """HTTP clients on one in-process server, one per remote address, made at first use (so that a test
    sets its limits first): the limits live in the application's state."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app: Any = None
        self.clients: dict[str, httpx.AsyncClient] = {}

    def __getitem__(self, address: str) -> httpx.AsyncClient:
        if self.app is None:
            self.app = create_asgi(self.runtime)
        if address not in self.clients:
            transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
            self.clients[address] = httpx.AsyncClient(transport=transport, base_url="http://derbridge.test")
        return self.clients[address]


ADDRESSES = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"]


@pytest.fixture
async def app_clients(runtime: Runtime) -> AsyncIterator[Callers]:
    callers = Callers(runtime)
    yield callers
    for client in callers.clients.values():
        await client.aclose()
    await runtime.aclose()


def new_client(runtime: Runtime, head_end: str, role: Role = Role.VEN) -> tuple[str, str]:
    made = add_client(runtime.sync_engine("derms"), f"{head_end} {role.value}", head_end, role)
    return made.client_id, made.client_secret


def form(client_id: str, secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


# --- finding 1: brute force ---------------------------------------------------------------------------


async def test_wrong_secrets_from_one_address_get_429_and_the_client_still_gets_its_token_elsewhere(
    runtime: Runtime, app_clients: Callers
) -> None:
    # The default limit: 20 refused credentials a minute per address.
    client_id, secret = new_client(runtime, "ECOBEE")
    attacker, honest = app_clients["198.51.100.1"], app_clients["198.51.100.2"]
    for _ in range(20):
        assert (await attacker.post(TOKEN, data=form(client_id, "guess"))).status_code == 401
    refused = await attacker.post(TOKEN, data=form(client_id, "guess"))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["status"] == 429
    # Over its limit the address is refused before any hashing, even with the right secret...
    assert (await attacker.post(TOKEN, data=form(client_id, secret))).status_code == 429
    # ...and the same client from another address is not.
    answer = await honest.post(TOKEN, data=form(client_id, secret))
    assert answer.status_code == 200, answer.text


async def test_wrong_secrets_for_one_client_id_from_many_addresses_get_429(
    runtime: Runtime, app_clients: Callers
) -> None:
    runtime.settings.edge.token_failures_per_client = "3/hour"
    victim, _ = new_client(runtime, "ECOBEE")
    other_id, other_secret = new_client(runtime, "NEST")
    addresses = ADDRESSES
    for address in addresses[:3]:
        assert (await app_clients[address].post(TOKEN, data=form(victim, "guess"))).status_code == 401
    refused = await app_clients[addresses[3]].post(TOKEN, data=form(victim, "guess"))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    # Another client from an address that guessed is not held back by the victim's limit.
    assert (await app_clients[addresses[0]].post(TOKEN, data=form(other_id, other_secret))).status_code == 200


async def test_token_requests_per_address_are_limited(runtime: Runtime, app_clients: Callers) -> None:
    runtime.settings.edge.token_requests_per_address = "3/minute"
    client_id, secret = new_client(runtime, "ECOBEE")
    caller = app_clients["198.51.100.1"]
    for _ in range(3):
        assert (await caller.post(TOKEN, data=form(client_id, secret))).status_code == 200
    assert (await caller.post(TOKEN, data=form(client_id, secret))).status_code == 429
    assert (await app_clients["198.51.100.2"].post(TOKEN, data=form(client_id, secret))).status_code == 200


async def test_refused_bearer_tokens_from_one_address_get_429_on_the_vtn(
    runtime: Runtime, app_clients: Callers
) -> None:
    runtime.settings.edge.auth_failures_per_address = "3/minute"
    client_id, secret = new_client(runtime, "ECOBEE")
    attacker, honest = app_clients["198.51.100.1"], app_clients["198.51.100.2"]
    forged = {"Authorization": "Bearer " + jwt.encode({"sub": client_id}, "not-the-key-" + "x" * 32, algorithm="HS256")}
    for _ in range(3):
        assert (await attacker.get(PREFIX + "/programs", headers=forged)).status_code == 401
    refused = await attacker.get(PREFIX + "/programs", headers=forged)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    token = (await honest.post(TOKEN, data=form(client_id, secret))).json()["access_token"]
    assert (await honest.get(PREFIX + "/programs", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_secrets_are_verified_off_the_event_loop(
    runtime: Runtime, app_clients: Callers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While verifications are held in progress, the server still answers /healthz: the argon2 check does
    not run on the event loop (a held check on the loop would hold every request)."""
    client_id, _ = new_client(runtime, "ECOBEE")
    real = auth._hasher
    release = threading.Event()
    lock = threading.Lock()
    entered: list[bool] = []  # one per verification begun; True when it ran on a thread with a running loop

    class HeldHasher:
        def verify(self, hash: str, password: str) -> bool:
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            with lock:
                entered.append(on_loop)
            if not on_loop:  # held only off the loop: held on it, the test could never release it
                release.wait(timeout=60)
            return real.verify(hash, password)

    monkeypatch.setattr(auth, "_hasher", HeldHasher())
    caller = app_clients["198.51.100.1"]
    attempts = [asyncio.create_task(caller.post(TOKEN, data=form(client_id, f"guess-{n}"))) for n in range(2)]
    try:
        for _ in range(6000):  # until both verifications are in progress (a generous deadline: 60 s)
            if len(entered) >= 2 or any(a.done() for a in attempts):
                break
            await asyncio.sleep(0.01)
        assert entered == [False, False], "the secrets were verified on the event loop"
        health = await caller.get("/healthz")
        assert health.status_code == 200
        assert not any(a.done() for a in attempts)  # answered while both verifications were held
    finally:
        release.set()
    assert [(await a).status_code for a in attempts] == [401, 401]


# --- finding 10: tokens, keys, headers ----------------------------------------------------------------


async def test_a_token_carries_audience_and_key_id(runtime: Runtime, app_clients: Callers) -> None:
    client_id, secret = new_client(runtime, "ECOBEE")
    answer = await app_clients["198.51.100.1"].post(TOKEN, data=form(client_id, secret))
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["pragma"] == "no-cache"
    token = answer.json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == runtime.settings.edge.token_audience
    # A token without the audience, signed with the right key, is refused.
    unaudienced = jwt.encode(
        {k: v for k, v in claims.items() if k != "aud"},
        runtime.settings.edge.token_secret.get_secret_value(),  # type: ignore[union-attr]
        algorithm="HS256",
        headers={"kid": header["kid"]},
    )
    refused = await app_clients["198.51.100.1"].get(
        PREFIX + "/programs", headers={"Authorization": f"Bearer {unaudienced}"}
    )
    assert refused.status_code == 401
    refused_answer = await app_clients["198.51.100.1"].post(TOKEN, data=form(client_id, "wrong"))
    assert refused_answer.headers["cache-control"] == "no-store"


async def test_tokens_of_a_previous_key_verify_until_it_is_removed(runtime: Runtime) -> None:
    settings = runtime.settings
    client_id, secret = new_client(runtime, "ECOBEE")
    async with client_from(runtime, "198.51.100.1") as before:
        old_token = (await before.post(TOKEN, data=form(client_id, secret))).json()["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    old_secret = settings.edge.token_secret
    assert old_secret is not None
    # Rotate: a new current key; the old one kept for verification only.
    settings.edge = settings.edge.model_copy(
        update={
            "token_secret": SecretStr("next-" + "n" * 40),
            "token_key_id": "edge-2",
            "token_previous_keys": [PreviousTokenKey(kid=old_kid, secret=old_secret)],
        }
    )
    async with client_from(runtime, "198.51.100.1") as rotated:
        new_token = (await rotated.post(TOKEN, data=form(client_id, secret))).json()["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] == "edge-2"
        for token in (old_token, new_token):
            got = await rotated.get(PREFIX + "/programs", headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 200, got.text
    settings.edge.token_previous_keys = []
    async with client_from(runtime, "198.51.100.1") as retired:
        got = await retired.get(PREFIX + "/programs", headers={"Authorization": f"Bearer {old_token}"})
        assert got.status_code == 401
    await runtime.aclose()


async def test_es256_tokens_verify_with_the_served_jwks(runtime: Runtime, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "edge-es256.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    runtime.settings.edge.token_algorithm = "ES256"
    runtime.settings.edge.token_private_key_file = key_file
    client_id, secret = new_client(runtime, "ECOBEE")
    async with client_from(runtime, "198.51.100.1") as caller:
        token = (await caller.post(TOKEN, data=form(client_id, secret))).json()["access_token"]
        jwks = await caller.get(PREFIX + "/.well-known/jwks.json")
        assert jwks.status_code == 200
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256"
        (published,) = [k for k in jwks.json()["keys"] if k["kid"] == header["kid"]]
        assert "d" not in published  # the public half only
        claims = jwt.decode(
            token,
            jwt.PyJWK(published).key,
            algorithms=["ES256"],
            audience=runtime.settings.edge.token_audience,
        )
        assert claims["sub"] == client_id
        got = await caller.get(PREFIX + "/programs", headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 200, got.text
        # An HS256 token made with the public key as its secret (algorithm confusion) is refused.
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # (Made by hand: PyJWT itself refuses to sign HS256 with a PEM key.)
        signing_input = b".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
            for part in ({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}, claims)
        )
        mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
        forged = (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
        assert (
            await caller.get(PREFIX + "/programs", headers={"Authorization": f"Bearer {forged}"})
        ).status_code == 401
    await runtime.aclose()


async def test_hs256_keys_are_never_published(app_clients: Callers) -> None:
    jwks = await app_clients["198.51.100.1"].get(PREFIX + "/.well-known/jwks.json")
    assert jwks.status_code == 200
    assert jwks.json() == {"keys": []}


SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


async def test_every_api_answers_with_security_headers(runtime: Runtime) -> None:
    paths = [
        "/healthz",
        "/assethub/v1/programs",
        "/derms/v1/programs",
        "/bridge/v1/messages",
        PREFIX + "/programs",
        PREFIX + "/auth/server",
        "/derms/v1/no-such-path",
    ]
    async with client_from(runtime, "198.51.100.1") as caller:
        for path in paths:
            answer = await caller.get(path, headers={"Authorization": "Bearer test-token"})
            for name, value in SECURITY_HEADERS.items():
                assert answer.headers.get(name) == value, (path, name, dict(answer.headers))
            assert "strict-transport-security" not in answer.headers  # plain HTTP: no HSTS
        # A body over the limit is refused outside the applications: the headers are there too.
        runtime.settings.server.max_body_bytes = 10
    async with client_from(runtime, "198.51.100.1") as small:
        too_big = await small.post(
            "/derms/v1/events", content=b"x" * 100, headers={"Authorization": "Bearer test-token"}
        )
        assert too_big.status_code == 413
        assert too_big.headers.get("x-content-type-options") == "nosniff"
    async with client_from(runtime, "198.51.100.1", base="https://derbridge.test") as secure:
        answer = await secure.get("/healthz")
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        # The docs pages keep their own Content-Security-Policy (which lets them load their own assets).
        docs = await secure.get(PREFIX + "/docs")
        assert docs.status_code == 200
        assert "script-src 'self'" in docs.headers["content-security-policy"]
        assert docs.headers["x-frame-options"] == "DENY"
        api = await secure.get("/healthz")
        assert "frame-ancestors 'none'" in api.headers["content-security-policy"]
    await runtime.aclose()


# --- finding 12 (OAuth2): HTTP Basic, the error member -----------------------------------------------


def basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: each form-urlencoded, then joined by a colon and base64-encoded.
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


async def test_client_credentials_by_http_basic(runtime: Runtime, app_clients: Callers) -> None:
    client_id, secret = new_client(runtime, "ECOBEE")
    caller = app_clients["198.51.100.1"]
    # Encode every character, so that a server that does not form-decode the pair refuses it.
    pair = "".join(f"%{b:02X}" for b in client_id.encode()) + ":" + "".join(f"%{b:02X}" for b in secret.encode())
    encoded = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    answer = await caller.post(TOKEN, data={"grant_type": "client_credentials"}, headers=encoded)
    assert answer.status_code == 200, answer.text
    assert jwt.decode(answer.json()["access_token"], options={"verify_signature": False})["sub"] == client_id
    # The same credentials in the body too: accepted (they agree).
    same = await caller.post(TOKEN, data=form(client_id, secret), headers=basic(client_id, secret))
    assert same.status_code == 200, same.text


async def test_basic_and_body_credentials_that_differ_are_invalid_request(
    runtime: Runtime, app_clients: Callers
) -> None:
    client_id, secret = new_client(runtime, "ECOBEE")
    other_id, other_secret = new_client(runtime, "NEST")
    answer = await app_clients["198.51.100.1"].post(
        TOKEN, data=form(other_id, other_secret), headers=basic(client_id, secret)
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_request"


async def test_token_errors_carry_the_oauth2_error_member(runtime: Runtime, app_clients: Callers) -> None:
    client_id, secret = new_client(runtime, "ECOBEE")
    caller = app_clients["198.51.100.1"]
    cases: list[tuple[dict[str, str], dict[str, str], int, str]] = [
        ({"grant_type": "client_credentials"}, {}, 400, "invalid_request"),  # no credentials at all
        ({"client_id": client_id, "client_secret": secret}, {}, 400, "invalid_request"),  # no grant_type
        (
            {"grant_type": "password", "client_id": client_id, "client_secret": secret},
            {},
            400,
            "unsupported_grant_type",
        ),
        (form(client_id, "wrong"), {}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, basic(client_id, "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, {"Authorization": "Basic !!not-base64"}, 400, "invalid_request"),
        ({**form(client_id, secret), "scope": "no_such_scope"}, {}, 400, "invalid_scope"),
    ]
    for data, headers, status, error in cases:
        answer = await caller.post(TOKEN, data=data, headers=headers)
        assert answer.status_code == status, (data, headers, answer.text)
        body: dict[str, Any] = answer.json()
        assert body["error"] == error, (data, headers, body)
        assert answer.headers["cache-control"] == "no-store"
    # A refused Basic client is told how to authenticate (RFC 6749 §5.2).
    refused = await caller.post(TOKEN, data={"grant_type": "client_credentials"}, headers=basic(client_id, "wrong"))
    assert refused.headers["www-authenticate"].lower().startswith("basic")
    assert json.loads(refused.text)["status"] == 401
