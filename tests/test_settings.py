"""Configuration: every malformed value stops start-up naming the variable, never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load_settings
from tests.conftest import CANARY_KEY, SHOP_ID


def env_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def shops_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    env_settings(monkeypatch, **env).shops()


def test_single_shop_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env_settings(
        monkeypatch,
        NEUROON_SHOP_ID=SHOP_ID,
        NEUROON_API_KEY=CANARY_KEY,
        NEUROON_SHOP_URL="https://shop.example/",
        GATEWAY_CORS_ORIGINS="https://a.example, http://localhost:3000",
    )
    (shop,) = settings.shops()
    assert shop.id == SHOP_ID
    assert shop.api_key.get_secret_value() == CANARY_KEY
    assert shop.allowed_origins == {"https://shop.example", "https://a.example", "http://localhost:3000"}
    assert settings.neuroon_api_url == "https://api.neuroon.ai"
    assert settings.gateway_token_rate_limit == 600


def test_key_from_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY + "\n")
    (shop,) = env_settings(monkeypatch, NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY_FILE=str(key_file)).shops()
    assert shop.api_key.get_secret_value() == CANARY_KEY
    assert shop.api_key_file == key_file


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"NEUROON_SHOP_ID={SHOP_ID}\nNEUROON_API_KEY={CANARY_KEY}\n")
    monkeypatch.chdir(tmp_path)
    (shop,) = load_settings().shops()
    assert shop.id == SHOP_ID


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NEUROON_API_KEY": CANARY_KEY}, "NEUROON_SHOP_ID"),
        ({"NEUROON_SHOP_ID": SHOP_ID}, "NEUROON_API_KEY"),
        ({"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY[:-1]}, "NEUROON_API_KEY"),
        ({"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY[:-1] + "g"}, "NEUROON_API_KEY"),
        ({"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": "pk_" + CANARY_KEY[3:]}, "NEUROON_API_KEY"),
        ({"NEUROON_SHOP_ID": "shop with spaces", "NEUROON_API_KEY": CANARY_KEY}, "NEUROON_SHOP_ID"),
        (
            {"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY": CANARY_KEY, "NEUROON_SHOP_URL": "shop.example"},
            "NEUROON_SHOP_URL",
        ),
        (
            {
                "NEUROON_SHOP_ID": SHOP_ID,
                "NEUROON_API_KEY": CANARY_KEY,
                "NEUROON_API_KEY_FILE": "/nonexistent",
            },
            "NEUROON_API_KEY",
        ),
        ({"NEUROON_SHOP_ID": SHOP_ID, "NEUROON_API_KEY_FILE": "/nonexistent/key"}, "NEUROON_API_KEY_FILE"),
    ],
)
def test_bad_shop_settings_name_the_variable_and_hide_the_value(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        shops_of(monkeypatch, **env)
    message = str(raised.value)
    assert variable in message
    assert CANARY_KEY[3:-1] not in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_TOKEN_RATE_LIMIT", "many"),
        ("GATEWAY_TOKEN_RATE_LIMIT", "-1"),
        ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("GATEWAY_TRUSTED_PROXIES", "proxy.example"),
        ("GATEWAY_CORS_ORIGINS", "shop.example"),
        ("GATEWAY_LOG_FORMAT", "xml"),
        ("NEUROON_API_URL", "ftp://api.neuroon.ai"),
        ("GATEWAY_TOKEN_REFRESH_MARGIN", "86400"),
        ("GATEWAY_TOKEN_MEMORY_TTL", "0"),
        ("GATEWAY_ADMIN_JWKS_URL", "not a url"),
        ("GATEWAY_ACK_REPLICAS", "some"),
        ("GATEWAY_ACK_REPLICAS", "-1"),
        ("GATEWAY_ACK_TIMEOUT", "2"),
    ],
)
def test_malformed_gateway_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        env_settings(monkeypatch, **{variable: value})


def test_ack_replicas_is_auto_or_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_settings(monkeypatch).gateway_ack_replicas == "auto"
    assert env_settings(monkeypatch, GATEWAY_ACK_REPLICAS="2").gateway_ack_replicas == 2


def test_trusted_proxies_parse_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env_settings(monkeypatch, GATEWAY_TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.7,::1")
    assert [str(n) for n in settings.gateway_trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]


def test_webhook_secrets_accept_several_for_rotation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "woo"
    secret_file.write_text("woo-secret-one\n")
    settings = env_settings(
        monkeypatch,
        NEUROON_SHOP_ID=SHOP_ID,
        NEUROON_API_KEY=CANARY_KEY,
        SHOPIFY_WEBHOOK_SECRET="old-shopify-secret,new-shopify-secret",
        WOOCOMMERCE_WEBHOOK_SECRET_FILE=str(secret_file),
    )
    (shop,) = settings.shops()
    assert [s.get_secret_value() for s in shop.shopify_webhook_secrets] == [
        "old-shopify-secret",
        "new-shopify-secret",
    ]
    assert [s.get_secret_value() for s in shop.woocommerce_webhook_secrets] == ["woo-secret-one"]


def test_shops_file_with_several_shops(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "two.key"
    key_file.write_text("sk_" + "c" * 32)
    shops_file = tmp_path / "shops.toml"
    shops_file.write_text(
        f"""
[[shops]]
id = "shop_one"
api_key = "{CANARY_KEY}"
shop_url = "https://one.example"
platform_domain = "one.myshopify.com"
shopify_webhook_secrets = ["s1", "s2"]

[[shops]]
id = "shop_two"
api_key_file = "{key_file}"
shop_url = "https://two.example"
"""
    )
    one, two = env_settings(
        monkeypatch, GATEWAY_SHOPS_FILE=str(shops_file), GATEWAY_CORS_ORIGINS="https://agency.example"
    ).shops()
    assert (one.id, two.id) == ("shop_one", "shop_two")
    assert two.api_key.get_secret_value() == "sk_" + "c" * 32
    assert two.api_key_file == key_file
    assert "https://agency.example" in one.allowed_origins
    assert len(one.shopify_webhook_secrets) == 2


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("shops = 3", "at least one [[shops]]"),
        ("[[shops]\nid=", "not valid TOML"),
        (f'[[shops]]\nid = "a"\napi_key = "{CANARY_KEY[:-2]}"', "shops[0].api_key"),
        ('[[shops]]\napi_key = "sk_' + "a" * 32 + '"', "shops[0].id"),
        ('[[shops]]\nid = "a"\napi_key = "sk_' + "a" * 32 + '"\nsurprise = 1', "shops[0].surprise"),
        (
            '[[shops]]\nid = "a"\napi_key = "sk_'
            + "a" * 32
            + '"\n[[shops]]\nid = "a"\napi_key = "sk_'
            + "b" * 32
            + '"',
            "listed twice",
        ),
    ],
)
def test_malformed_shops_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, fragment: str
) -> None:
    shops_file = tmp_path / "shops.toml"
    shops_file.write_text(content)
    with pytest.raises(ConfigError) as raised:
        shops_of(monkeypatch, GATEWAY_SHOPS_FILE=str(shops_file))
    assert "GATEWAY_SHOPS_FILE" in str(raised.value)
    assert fragment in str(raised.value)
    assert CANARY_KEY[3:-2] not in str(raised.value)


def test_shops_file_and_single_shop_env_are_exclusive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_SHOPS_FILE"):
        shops_of(monkeypatch, GATEWAY_SHOPS_FILE=str(tmp_path / "x.toml"), NEUROON_SHOP_ID=SHOP_ID)


def test_secrets_are_hidden_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = env_settings(
        monkeypatch,
        NEUROON_SHOP_ID=SHOP_ID,
        NEUROON_API_KEY=CANARY_KEY,
        REDIS_URL="redis://:hunter2hunter2@r:6379",
    )
    (shop,) = settings.shops()
    for text in (repr(settings), str(settings), repr(shop), str(shop), repr(settings.model_dump())):
        assert CANARY_KEY not in text
        assert "hunter2hunter2" not in text
