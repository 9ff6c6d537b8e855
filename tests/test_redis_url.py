"""REDIS_URL: every scheme of interface §2 parsed in one place, and a malformed URL stops every command
with exit 2 naming REDIS_URL, never echoing the URL or any piece of its password."""

from __future__ import annotations

import secrets
import subprocess
import traceback
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.store.redis_url import RedisUrlError, parse_redis_url
from tests.conftest import CANARY_KEY, SHOP_ID
from tests.support import GATEWAY, clean_env
from tests.tls_servers import make_ca


def test_every_scheme_of_the_interface_is_understood() -> None:
    one = parse_redis_url("redis://user:p%40ss@cache.internal:6380/2")
    assert (one.shape, one.tls, one.nodes, one.db) == ("server", False, (("cache.internal", 6380),), 2)
    assert (one.options["username"], one.options["password"]) == ("user", "p@ss")
    assert parse_redis_url("rediss://:pw@cache").tls
    assert parse_redis_url("rediss://:pw@cache").nodes == (("cache", 6379),)
    unix = parse_redis_url("unix:///run/redis.sock?db=3")
    assert (unix.shape, unix.db, unix.nodes) == ("server", 3, ())

    sentinel = parse_redis_url("redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/1")
    assert sentinel.shape == "sentinel"
    assert not sentinel.tls
    assert sentinel.nodes == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert (sentinel.service, sentinel.db, sentinel.options["password"]) == ("mymaster", 1, "pw")
    assert parse_redis_url("rediss+sentinel://s1:26379/mymaster").tls

    cluster = parse_redis_url("redis+cluster://u:pw@n1:7000,n2:7001")
    assert (cluster.shape, cluster.nodes) == ("cluster", (("n1", 7000), ("n2", 7001)))
    tls_cluster = parse_redis_url("rediss+cluster://n1:7000?ssl_cert_reqs=none")
    assert tls_cluster.tls
    assert tls_cluster.options["ssl_cert_reqs"] == "none"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://{pw}@cache:6379", "unknown scheme"),
        ("redis//:{pw}@cache:6379", "unknown scheme"),
        ("redis://:{pw}@cache:port", "port"),
        ("redis://user:{pw}:more@cache:70000", "port"),
        ("redis://:{pw}@cache:6379/zero", "database"),
        ("redis://:{pw}@a:1,b:2", "one host"),
        ("redis://:{pw}@cache:6379?passwd={pw}", "unknown query option"),
        ("redis://:{pw}@cache:6379?db={pw}", "query options"),
        ("redis+sentinel://:{pw}@s1:26379", "service"),
        ("redis+sentinel://:{pw}@s1:26379,/mymaster", "host is missing"),
        ("redis+sentinel://:{pw}@s1:26379/mymaster/1/2", "form"),
        ("redis+cluster://:{pw}@n1:7000/3", "database 0"),
        ("redis+cluster://:{pw}@n1:7000?timeout=3", "Cluster URL takes no"),
        ("unix://:{pw}@relative/path.sock", "absolute path"),
        ("redis://:{pw}@[::1:6379", "IPv6"),
        ("redis://:{pw}@cache#{pw}", "fragment"),
        # TLS options: {dir} holds ca.pem (a real CA certificate) and notpem.txt (the password, as text).
        ("redis+sentinel://:{pw}@s1/m?ssl_ca_certs={dir}/ca.pem", "need a TLS scheme"),
        ("redis+cluster://:{pw}@n1:7000?ssl_cert_reqs=none", "need a TLS scheme"),
        ("redis://:{pw}@cache?ssl_ca_certs={dir}/ca.pem", "need a TLS scheme"),
        ("unix://:{pw}@/run/redis.sock?ssl_ca_certs={dir}/ca.pem", "need a TLS scheme"),
        ("rediss+cluster://:{pw}@n1:7000?ssl_ca_certs=", "ssl_ca_certs is blank"),
        ("rediss+sentinel://:{pw}@s1/m?ssl_ca_certs={dir}/{pw}.pem", "ssl_ca_certs names no readable file"),
        ("rediss+cluster://:{pw}@n1:7000?ssl_ca_certs={dir}", "ssl_ca_certs names no readable file"),
        ("rediss+cluster://:{pw}@n1:7000?ssl_ca_certs={dir}/notpem.txt", "holds no PEM certificate"),
        ("rediss://:{pw}@cache?ssl_certfile={dir}/{pw}", "ssl_certfile names no readable file"),
        ("rediss+cluster://:{pw}@n1:7000?ssl_cert_reqs={pw}", "ssl_cert_reqs is one of"),
        ("rediss+cluster://:{pw}@n1?ssl_ca_certs={dir}/ca.pem&ssl_ca_certs={dir}/ca.pem", "given twice"),
    ],
)
def test_a_malformed_url_is_described_without_quoting_it(url: str, reason: str, tmp_path: Path) -> None:
    password = secrets.token_hex(12)
    make_ca(tmp_path, "ca")
    (tmp_path / "notpem.txt").write_text(password)
    with pytest.raises(RedisUrlError) as raised:
        parse_redis_url(url.format(pw=password, dir=tmp_path))
    assert reason in str(raised.value)
    assert not _leaks(str(raised.value), password)
    # Nor in a traceback: redis-py's or urllib's own error (which may quote the URL) is not chained.
    assert not _leaks("".join(traceback.format_exception(raised.value)), password)


def test_tls_options_with_a_tls_scheme_are_redis_pys(tmp_path: Path) -> None:
    ca, _, _ = make_ca(tmp_path, "ca")
    target = parse_redis_url(f"rediss+sentinel://s1/m?ssl_ca_certs={ca}&ssl_cert_reqs=required")
    assert target.options["ssl_ca_certs"] == str(ca)
    assert target.options["ssl"] is True
    assert parse_redis_url(f"rediss://cache?ssl_ca_certs={ca}").options["ssl_ca_certs"] == str(ca)


def test_settings_name_redis_url_and_never_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    password = secrets.token_hex(12)
    monkeypatch.setenv("REDIS_URL", f"redis+sentinel://:{password}@s1:26379")
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None)
    assert str(raised.value).startswith("REDIS_URL: ")
    assert not _leaks(str(raised.value), password)


def test_the_target_never_shows_its_password() -> None:
    password = secrets.token_hex(12)
    target = parse_redis_url(f"redis+cluster://user:{password}@n1:7000")
    assert not _leaks(repr(target) + str(target), password)


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize(
    "command", [["serve"], ["worker"], ["token"], ["dlq", "list"], ["catalog", "delete", "X"]]
)
def test_every_command_exits_2_naming_redis_url(tmp_path: Path, command: list[str], log_format: str) -> None:
    password = secrets.token_hex(12)
    for url in (f"redis://admin:{password}@cache:63791x/0", f"redis+sentinel://:{password}@s1:26379"):
        _exits_2_naming_redis_url(command, url, password, tmp_path, GATEWAY_LOG_FORMAT=log_format)


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_a_malformed_tls_option_exits_2_naming_redis_url(tmp_path: Path, command: list[str]) -> None:
    password = secrets.token_hex(12)
    for query in ("ssl_ca_certs=", f"ssl_ca_certs=/nonexistent/{password}.pem"):
        url = f"rediss+cluster://admin:{password}@cache:7000?{query}"
        assert "ssl_ca_certs" in _exits_2_naming_redis_url(command, url, password, tmp_path)


def _exits_2_naming_redis_url(command: list[str], url: str, password: str, cwd: Path, **env: str) -> str:
    """Runs the command with REDIS_URL=url: exit 2, naming REDIS_URL, nothing of the URL echoed."""
    result = subprocess.run(
        [GATEWAY, *command],
        env=clean_env(NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY=CANARY_KEY, REDIS_URL=url, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "REDIS_URL" in output
    assert "Traceback" not in output
    assert not _leaks(output, password)
    assert "admin" not in output
    assert "cache" not in output
    return output


def test_a_malformed_url_in_a_dotenv_file_exits_2_too(tmp_path: Path) -> None:
    password = secrets.token_hex(12)
    (tmp_path / ".env").write_text(f"REDIS_URL=redis+cluster://:{password}@n1:7000/5\n", encoding="utf-8")
    result = subprocess.run(
        [GATEWAY, "worker"],
        env=clean_env(NEUROON_SHOP_ID=SHOP_ID, NEUROON_API_KEY=CANARY_KEY),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert not _leaks(result.stdout + result.stderr, password)


def _leaks(text: str, password: str) -> bool:
    """Whether any 6 consecutive characters of the (random, 24 hex digits) password appear in ``text``."""
    return any(password[i : i + 6] in text for i in range(len(password) - 5))
