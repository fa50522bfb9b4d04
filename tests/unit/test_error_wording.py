"""What a new user reads when a config, a flag or a file is wrong: the wording is pinned.

Each message names what was wrong and what would be right, and never a secret's value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netprobe_exporter import cli
from netprobe_exporter.config import Config, ConfigError, parse_config, with_extra_targets
from netprobe_exporter.webconfig import load_web_config
from netprobe_exporter.webservice import split_listen_address


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yml")
    return info.value.errors


def test_a_url_given_to_a_tcp_target_says_it_is_a_url_and_which_module_takes_it() -> None:
    (error,) = errors_of("targets:\n  - address: https://example.org\n    module: tcp_connect\n")
    assert error == (
        "c.yml:2: targets[0].address: 'https://example.org' is a URL, which module "
        '"tcp_connect" (prober tcp) does not take; module "http_2xx" takes URLs'
    )


def test_a_url_with_a_password_is_shown_without_it() -> None:
    (error,) = errors_of("targets:\n  - address: http://bob:hunter2@example.org:8080/\n")
    assert "hunter2" not in error
    assert "'http://bob:xxxxx@example.org:8080/' is a URL" in error


def test_a_url_no_module_takes_gets_a_general_hint() -> None:
    config = parse_config("modules:\n  only_tcp:\n    prober: tcp\n", "c.yml")
    only = {"only_tcp": config.modules["only_tcp"]}
    from netprobe_exporter.config import target_address_error

    problem = target_address_error("http://x/", only["only_tcp"], only)
    assert problem == (
        "'http://x/' is a URL, which module \"only_tcp\" (prober tcp) does not take; "
        "use a module that takes URLs"
    )


def test_target_flag_with_a_url_probes_it_with_the_http_module() -> None:
    config = with_extra_targets(Config(), ["https://example.org/", "a:1"])
    assert [(t.address, t.module) for t in config.targets] == [
        ("https://example.org/", "http_2xx"),
        ("a:1", "tcp_connect"),
    ]


def test_an_unknown_key_close_to_a_known_one_gets_a_suggestion() -> None:
    (error,) = errors_of("defaults:\n  intervl: 5s\n")
    assert error == 'c.yml:2: defaults.intervl: unknown key (did you mean "interval"?)'


def test_an_unknown_key_like_no_known_one_gets_none() -> None:
    (error,) = errors_of("defaults:\n  zzzzzz: 5s\n")
    assert error == "c.yml:2: defaults.zzzzzz: unknown key"


def test_a_tab_in_the_indentation_is_called_a_tab() -> None:
    (error,) = errors_of("targets:\n\t- address: 127.0.0.1:1\n")
    assert error == "c.yml:2: invalid YAML: a tab at column 1: YAML indents with spaces, not tabs"


def test_every_independent_error_of_a_file_is_reported_at_once() -> None:
    errors = errors_of(
        "defaults:\n  interval: 5x\n  intervl: 5s\n"
        "targets:\n  - address: 127.0.0.1:1\n  - address: 127.0.0.1:1\n"
    )
    assert errors == [
        'c.yml:3: defaults.intervl: unknown key (did you mean "interval"?)',
        'c.yml:2: defaults.interval: "5x" is not a duration',
        'c.yml:6: targets[1].address: duplicate target "127.0.0.1:1" with module '
        '"tcp_connect" (first at targets[0])',
    ]


def test_a_listen_address_without_host_says_the_host_is_missing() -> None:
    with pytest.raises(ValueError) as info:
        split_listen_address("28719")
    assert str(info.value) == (
        "'28719': missing host: want host:port, as :28719 (every address) or 127.0.0.1:28719"
    )


def test_a_missing_tls_key_file_names_the_key_and_its_directory_not_the_file(
    tmp_path: Path,
) -> None:
    web = tmp_path / "web.yml"
    key = tmp_path / "keys" / "alice-prod.key"
    (tmp_path / "keys").mkdir()
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path}/missing.crt\n  key_file: {key}\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(web))
    assert info.value.errors == [
        f'{web}:2: tls_server_config.cert_file: cannot read file "{tmp_path}/missing.crt": '
        "no such file",
        f"{web}:3: tls_server_config.key_file: cannot read the file it names in "
        f'"{tmp_path}/keys": no such file',
    ]
    assert "alice-prod" not in "\n".join(info.value.errors)


def test_config_check_prints_no_ok_beside_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_web = tmp_path / "web.yml"
    bad_web.write_text("basic_auth_users: [nope]\n")
    assert cli.main(["--config.check", f"--web.config.file={bad_web}"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert "OK" not in err
    assert err.splitlines()[-1] == f"check failed: errors in {bad_web}"


def test_config_check_of_good_files_says_ok_for_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {}\n")
    assert cli.main(["--config.check", f"--web.config.file={web}"]) == cli.EXIT_OK
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"{web}: OK"
    assert out.splitlines()[1].startswith("<embedded>: OK (5 modules")
    assert err == ""


def test_config_check_reports_the_config_and_its_target_files_errors_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "targets").mkdir()
    targets = tmp_path / "targets" / "t.yml"
    targets.write_text("- targets: [a:1, nope]\n")
    config = tmp_path / "config.yml"
    config.write_text(
        f"target_files:\n  - files: [{tmp_path}/targets/*.yml]\n"
        "targets:\n  - address: b:1\n    interval: 5x\n"
    )
    assert cli.main(["--config.check", f"--config.file={config}"]) == cli.EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f'{config}:5: targets[0].interval: "5x" is not a duration',
        f"{targets}:1: [0].targets[1]: 'nope': missing port (want host:port)",
        f"check failed: errors in {config}",
    ]


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), ("1m", 60.0), ("90s", 90.0)])
def test_the_auto_reload_interval_takes_seconds_or_a_duration(value: str, seconds: float) -> None:
    args = cli.build_parser().parse_args(
        ["--config.enable-auto-reload", f"--config.auto-reload-interval={value}"]
    )
    assert args.auto_reload and args.auto_reload_interval == seconds


def test_a_bad_auto_reload_interval_says_what_it_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for bad, why in (("0", "must be at least 1 second"), ("soon", "is not a number of seconds")):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([f"--config.auto-reload-interval={bad}"])
        assert why in capsys.readouterr().err
