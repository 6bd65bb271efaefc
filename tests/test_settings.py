"""Settings are built once: flags given on the command line, else the dataclass's defaults."""

from __future__ import annotations

from controller.cli.main import build_parser
from controller.settings import FLAG_FIELDS, Settings


def test_absent_flags_leave_every_default_of_the_dataclass() -> None:
    args = build_parser().parse_args(["run"])
    settings = Settings(node="n0")
    settings.apply_flags(vars(args))
    assert settings == Settings(node="n0")


def test_given_flags_set_their_fields() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--poll",
            "--workers=5",
            "--rescan-interval=7",
            "--abandon-after=30",
            "--max-line-bytes=4096",
            "--follow-symlinks-anywhere",
            "--metrics-addr=127.0.0.1:9100",
            "--node=n1",
            "--no-learn",
            "--learn-from=sessions",
            "--kube-qps=300",
            "--kube-burst=600",
        ]
    )
    settings = Settings()
    settings.apply_flags(vars(args))
    assert (settings.poll, settings.workers, settings.rescan_interval) == (True, 5, 7.0)
    assert (settings.abandon_after, settings.max_line_bytes) == (30.0, 4096)
    assert (settings.symlinks_anywhere, settings.metrics_addr) == (True, "127.0.0.1:9100")
    assert (settings.node, settings.learn, settings.learn_from) == ("n1", False, "sessions")
    assert (settings.kube_qps, settings.kube_burst) == (300.0, 600)


def test_every_flag_names_a_field_and_a_flag_of_run() -> None:
    run = build_parser().parse_args(["run"])
    assert set(FLAG_FIELDS) <= set(vars(run))
    assert set(FLAG_FIELDS.values()) <= set(Settings.__dataclass_fields__)
