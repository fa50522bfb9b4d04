"""Secrets stay out of config errors and warnings, whatever kind of value holds them."""

from __future__ import annotations

import pytest

from netprobe_exporter.config import ConfigError, parse_config
from netprobe_exporter.webconfig import parse_web_config
from tests.support.secret_cases import WEB_ERRORS, module_config


def test_config_errors_and_warnings_withhold_secret_values() -> None:
    # a token file that cannot be read now: a warning, its name withheld
    config = parse_config(
        "modules:\n  m: {prober: http, http: {bearer_token_file: /no/such/tok-file-Jj3}}\n",
        "c.yml",
    )
    text = "\n".join(config.warnings)
    assert "c.yml:2: modules.m.http.bearer_token_file" in text
    assert "tok-file-Jj3" not in text and "<secret>" in text
    try:
        parse_config("modules:\n  m: {prober: http, http: {bearer_token: [tok-Jj3]}}\n", "c.yml")
    except ConfigError as exc:
        text = "\n".join(exc.errors)
    else:
        raise AssertionError("a list as a token is an error")
    assert "c.yml:2: modules.m.http.bearer_token" in text and "tok-Jj3" not in text


# A value of the wrong kind under a secret-holding key is, as often as not, the credential
# itself, typed where a mapping was wanted: errors there say what kind of value it was.


def test_wrong_kinds_of_value_under_secret_keys_are_described_not_shown() -> None:
    text, expected = module_config()
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yml")
    got = info.value.errors
    assert len(got) == len(expected), got
    for line, tail in zip(got, expected, strict=True):
        assert line == f"c.yml{tail}"
    for web, error in WEB_ERRORS.items():
        with pytest.raises(ConfigError) as info:
            parse_web_config(web, "w.yml")
        assert info.value.errors == [f"w.yml:1: {error}"]
    # elsewhere a value is still quoted: it helps and is no secret
    with pytest.raises(ConfigError) as info:
        parse_config('targets: "127.0.0.1:1"\n', "c.yml")
    assert info.value.errors == ['c.yml:1: targets: must be a list, not "127.0.0.1:1"']
