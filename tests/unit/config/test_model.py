"""`sitemail.toml`: the file `init` writes loads, and every mistake is one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from sitemail.config import CONFIG_FILE, ServerConfig, load_config, render_config
from sitemail.config.model import split_nameserver
from sitemail.core import ConfigError

BASE = """
[server]
name = "ServerA"
site = "SiteA"
listen = ["127.10.10.10"]
"""


def write(data_dir: Path, text: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
    return data_dir


def test_config_rendered_by_init_loads_with_defaults(tmp_path: Path) -> None:
    """The file `init` writes loads back into the values given, everything else defaulted."""
    text = render_config(server="ServerA", site="SiteA", listen=["127.10.10.10", "::1"])
    config = load_config(write(tmp_path, text))
    assert isinstance(config, ServerConfig)
    assert (config.server, config.site, config.listen) == (
        "ServerA",
        "SiteA",
        ("127.10.10.10", "::1"),
    )
    assert config.database_url == ""
    assert config.smtp.port == 25
    assert config.queue.retry_initial == 300.0
    assert config.data_dir == tmp_path


def test_config_render_keeps_database_url_and_quotes(tmp_path: Path) -> None:
    """A database URL and names with quotes survive the TOML round trip."""
    url = 'postgresql+psycopg://u@h/db?x="y"'
    text = render_config(server="S", site="SiteA", listen=["127.0.0.1"], database_url=url)
    assert load_config(write(tmp_path, text)).database_url == url


def test_config_values_are_read_and_coerced(tmp_path: Path) -> None:
    """Sections override defaults; integers are accepted where numbers are due."""
    config = load_config(
        write(
            tmp_path,
            BASE
            + """
[smtp]
port = 2525
trusted_networks = ["10.0.0.0/8"]
[dns]
nameservers = ["127.0.0.1:5353", "192.0.2.53"]
[queue]
retry_initial = 60
""",
        )
    )
    assert config.smtp.port == 2525
    assert config.smtp.trusted_networks == ("10.0.0.0/8",)
    assert config.dns.nameservers == ("127.0.0.1:5353", "192.0.2.53")
    assert config.queue.retry_initial == 60.0
    assert isinstance(config.queue.retry_initial, float)


def test_config_log_format_json_is_read(tmp_path: Path) -> None:
    """`[log] format = "json"` is taken; the default is text."""
    assert load_config(write(tmp_path, BASE)).log.format == "text"
    config = load_config(write(tmp_path, BASE + '[log]\nformat = "json"\n'))
    assert config.log.format == "json"


def test_config_relative_paths_are_inside_the_data_dir(tmp_path: Path) -> None:
    """`config.path()` resolves relative paths against the data dir, keeps absolute ones."""
    config = load_config(write(tmp_path, BASE))
    assert config.path(config.tls.cert_file) == tmp_path / "tls" / "cert.pem"
    assert config.path("/etc/ssl/x.pem") == Path("/etc/ssl/x.pem")


def test_config_missing_file_is_config_error(tmp_path: Path) -> None:
    """A directory without sitemail.toml is not a data dir (exit 78)."""
    with pytest.raises(ConfigError, match="not found") as caught:
        load_config(tmp_path / "nowhere")
    assert caught.value.exit_code == 78


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[smtp]\nprot = 25\n", "unknown setting 'prot'"),  # a typo is not ignored
        ('[log]\nformat = "xml"\n', "'text' or 'json'"),
        ("[smtpd]\nport = 25\n", "unknown table"),
        ("[smtp]\nport = 0\n", "port must be 1-65535"),
        ("[smtp]\nport = 65536\n", "port must be 1-65535"),
        ("[smtp]\nport = -1\n", "non-negative integer"),
        ('[smtp]\nport = "25"\n', "non-negative integer"),
        ("[smtp]\nport = 25.5\n", "non-negative integer"),
        ("[smtp]\noutbound_port = 70000\n", "port must be 1-65535"),
        ('[smtp]\ntrusted_networks = ["10.0.0.0/33"]\n', "bad network"),
        ('[smtp]\ntrusted_networks = "10.0.0.0/8"\n', "list of strings"),
        ('[dns]\nnameservers = ["dns.example"]\n', "not an IP address"),
        ('[dns]\nnameservers = ["127.0.0.1:99999"]\n', "port must be 1-65535"),
        ('[dns]\nnameservers = ["127.0.0.1:x"]\n', "bad port"),
        ("[dns]\ntimeout = true\n", "non-negative number"),
        ("[queue]\nretry_initial = 0\n", "retry_initial"),
        ("[queue]\nretry_initial = 100\nretry_max = 50\n", "retry_initial <= retry_max"),
        ("[limits]\ncommand_length = 100\n", "RFC 5321"),
    ],
)
def test_config_bad_setting_is_config_error(tmp_path: Path, extra: str, message: str) -> None:
    """Unknown keys, bad ports, bad addresses and bad types each stop the load with the key."""
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, BASE + extra))
    assert CONFIG_FILE in caught.value.message  # the file is named


def test_config_shutdown_timeout_is_read(tmp_path: Path) -> None:
    """[server] shutdown_timeout: 30 s unless set."""
    assert load_config(write(tmp_path, BASE)).shutdown_timeout == 30.0
    text = BASE.replace("[server]\n", "[server]\nshutdown_timeout = 5\n")
    assert load_config(write(tmp_path, text)).shutdown_timeout == 5.0


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ('name = "S"\nsite = "A"\nlisten = ["300.1.1.1"]', "not an IP address"),
        ('name = "S"\nsite = "A"\nlisten = ["localhost"]', "not an IP address"),
        ('name = "S"\nsite = "A"\nlisten = []', "non-empty list"),
        ('name = "S"\nsite = "A"\nlisten = "127.0.0.1"', "non-empty list"),
        ('name = "S"\nlisten = ["127.0.0.1"]', "'site' must be a non-empty string"),
        ('name = ""\nsite = "A"\nlisten = ["127.0.0.1"]', "'name' must be a non-empty string"),
        ('name = "S"\nsite = "A"\nlisten = ["127.0.0.1"]\nport = 25', "unknown setting"),
        ('name = "S"\nsite = "A"\nlisten = ["127.0.0.1"]\ndatabase_url = 1', "database_url"),
        ('name = "S"\nsite = "A"\nlisten = ["127.0.0.1"]\nshutdown_timeout = 0', "1-3600"),
        ('name = "S"\nsite = "A"\nlisten = ["127.0.0.1"]\nshutdown_timeout = "9"', "seconds"),
    ],
)
def test_config_bad_server_table_is_config_error(tmp_path: Path, server: str, message: str) -> None:
    """The [server] table needs a name, a site and a list of IP addresses to listen on."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"[server]\n{server}\n"))


@pytest.mark.parametrize(
    "text", ["", "[smtp]\nport = 25\n", "not = [toml", "smtp = 1\n" + BASE, "server = 1\n"]
)
def test_config_unreadable_or_incomplete_file_is_config_error(tmp_path: Path, text: str) -> None:
    """An empty file, a missing [server] table and broken TOML are ConfigError, never a crash."""
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


def test_config_invalid_utf8_is_config_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported as a parse problem."""
    tmp_path.joinpath(CONFIG_FILE).write_bytes(b'[server]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("127.0.0.1:x", ("127.0.0.1", -1)),
    ],
)
def test_nameserver_entries_split_into_address_and_port(
    entry: str, expected: tuple[str, int]
) -> None:
    assert split_nameserver(entry) == expected
