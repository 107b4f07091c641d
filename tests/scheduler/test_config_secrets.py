"""No secret leaves in a shown config: every model reachable from WattmuxConfig, every registry
entry's options model included, masks its secret-named fields and the credentials in its URLs."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr, TypeAdapter
from pydantic.fields import FieldInfo

from drivers.asic.registry import ASIC_DRIVERS
from drivers.gpu.registry import GPU_TELEMETRY
from drivers.market.registry import MARKET_FEEDS
from drivers.queues.registry import QUEUE_BACKENDS, driver_key
from drivers.queues.webhook import WebhookOptions
from drivers.registry import Registry
from drivers.secrets import MASK, MASKED_URL, mask_url, settings_key
from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.policies import POLICIES
from tests.scheduler.api_fixtures import Tokens, build_app
from tests.scheduler.test_api_security import make_view

SENTINEL = "s3cr3t-sentinel"
SECRET_WORDS = {"password", "passwd", "token", "secret", "key", "apikey", "credential"}
SECRET_WORDS |= {"credentials", "auth", "authorization", "passphrase"}
REGISTRIES: list[Registry[Any]] = [ASIC_DRIVERS, MARKET_FEEDS, QUEUE_BACKENDS, GPU_TELEMETRY]
REGISTRIES.append(POLICIES)


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation mentions (through unions, lists, Annotated...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def reachable_models() -> list[type[BaseModel]]:
    todo: list[type[BaseModel]] = [WattmuxConfig]
    for registry in REGISTRIES:
        todo.extend(e.options for e in registry.entries() if e.options is not None)
    seen: dict[type[BaseModel], None] = {}
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen[model] = None
        for field in model.model_fields.values():
            todo.extend(models_in(field.annotation))
    return list(seen)


def mentions(annotation: Any, wanted: Any) -> bool:
    if annotation is wanted:
        return True
    if typing.get_origin(annotation) is typing.Annotated and wanted in annotation.__metadata__:
        return True
    return any(mentions(arg, wanted) for arg in typing.get_args(annotation))


def is_secret_name(name: str) -> bool:
    return bool(SECRET_WORDS & set(name.lower().split("_")))


def is_url_name(name: str) -> bool:
    return bool({"url", "urls", "uri", "dsn", "endpoint"} & set(name.lower().split("_")))


def holds_text(annotation: Any) -> bool:
    return mentions(annotation, str) or mentions(annotation, SecretStr)


def sample(annotation: Any, value: str) -> Any:
    """A value of the field's type carrying value (a SecretStr where the field takes one)."""
    item: Any = SecretStr(value) if mentions(annotation, SecretStr) else value
    origin = typing.get_origin(annotation)
    return [item] if origin is list else item


def dumped(field: FieldInfo, value: Any) -> str:
    adapter: TypeAdapter[Any] = TypeAdapter(
        typing.Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    )
    return str(adapter.dump_python(value, mode="json"))


FIELDS = [
    (model, name, field)
    for model in reachable_models()
    for name, field in model.model_fields.items()
    if holds_text(field.annotation) and (is_secret_name(name) or is_url_name(name))
]


def test_the_walk_reaches_every_seam() -> None:
    names = {model.__name__ for model in reachable_models()}
    assert {"PoolConfig", "MqttOptions", "WebhookOptions", "KubernetesOptions"} <= names
    assert {"WhatsminerOptions", "BitcoindConfig", "DcgmSourceOptions", "ErcotConfig"} <= names
    assert len(FIELDS) >= 15


@pytest.mark.parametrize(
    ("model", "name", "field"), FIELDS, ids=[f"{m.__name__}.{n}" for m, n, _ in FIELDS]
)
def test_no_secret_or_url_credential_is_dumped_in_json(
    model: type[BaseModel], name: str, field: FieldInfo
) -> None:
    if is_url_name(name) and not is_secret_name(name):
        value = sample(field.annotation, f"https://admin:{SENTINEL}@host.invalid:8443/p?q=1")
        assert mentions(field.annotation, MASKED_URL) or MASKED_URL in field.metadata, (
            f"{model.__name__}.{name} is a URL that may carry credentials: make it MaskedUrl"
        )
    else:
        value = sample(field.annotation, SENTINEL)
    text = dumped(field, value)
    assert SENTINEL not in text, f"{model.__name__}.{name} shows its secret: {text}"


def test_mask_url() -> None:
    assert mask_url("http://u:p@h:1/x?y=1") == f"http://{MASK}@h:1/x?y=1"
    assert mask_url("http://token@h/x") == f"http://{MASK}@h/x"
    assert mask_url("https://h.example/x") == "https://h.example/x"
    assert mask_url("http://[::1") == MASK


def test_settings_that_differ_only_in_a_secret_do_not_share_a_driver() -> None:
    one = WebhookOptions(url="http://10.0.0.5/v1", token="a")
    two = WebhookOptions(url="http://10.0.0.5/v1", token="b")
    assert one.model_dump_json() == two.model_dump_json()  # masked: the same when shown
    assert settings_key(one) != settings_key(two) and driver_key(one) != driver_key(two)
    assert settings_key(one) == settings_key(WebhookOptions(url="http://10.0.0.5/v1", token="a"))


TOKENS = Tokens()


def secret_config(tmp_path: Path) -> WattmuxConfig:
    return parse_config(
        {
            "site": {"name": "t", "power_cap_kw": 100.0},
            "store": {"path": str(tmp_path / "w.sqlite")},
            "pools": [
                {
                    "name": "main",
                    "url": f"stratum+tcp://worker:{SENTINEL}-pool@pool.invalid:3333",
                    "user": "w",
                    "password": f"{SENTINEL}-pw",
                }
            ],
            "devices": [{"id": "m1", "model": "S21", "address": "127.0.0.9", "pools": ["main"]}],
            "market": [
                {"driver": "bitcoind", "url": f"http://rpc:{SENTINEL}-rpc@127.0.0.1:8332/"},
            ],
            "queues": [
                {
                    "name": "q",
                    "contract_rate_usd_per_gpu_hour": 2.0,
                    "options": {
                        "driver": "webhook",
                        "url": f"http://ops:{SENTINEL}-hook@10.0.0.5/v1",
                        "token": f"{SENTINEL}-token",
                    },
                }
            ],
            "mqtt": {"username": "wattmux", "password": f"{SENTINEL}-mqtt"},
        },
        "<test>",
        environ={},
    )


@pytest.mark.system
async def test_config_route_masks_passwords_tokens_and_url_credentials(tmp_path: Path) -> None:
    view = make_view(tmp_path)
    view.config = secret_config(tmp_path)
    admin = httpx.AsyncClient(trust_env=False, headers=TOKENS.header(Role.ADMIN))
    async with serve(build_app(view, TOKENS), "127.0.0.1", 0) as server, admin as client:
        response = await client.get(f"http://127.0.0.1:{bound_port(server)}/v1/config")
    assert response.status_code == 200
    assert SENTINEL not in response.text
    body = response.json()
    assert body["pools"][0]["url"] == f"stratum+tcp://{MASK}@pool.invalid:3333"
    assert body["market"][0]["url"] == f"http://{MASK}@127.0.0.1:8332/"
    assert body["queues"][0]["options"]["url"] == f"http://{MASK}@10.0.0.5/v1"
    assert body["queues"][0]["options"]["token"] == MASK
    assert body["mqtt"]["password"] == MASK and body["mqtt"]["username"] == "wattmux"
    # the code still gets the real values where it uses them
    pool = view.config.pools[0]
    assert pool.password.get_secret_value() == f"{SENTINEL}-pw"
    assert re.search(f"{SENTINEL}-pool@", pool.url)
