"""The benchmarks' shared toolkit (benchmarks/common.py): pure pieces, byte-exact or exact."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import common

    yield common


@pytest.mark.parametrize(
    ("opcode", "payload", "mask", "frame"),
    [
        # RFC 6455, section 5.7: a masked "Hello"
        (0x1, b"Hello", b"\x37\xfa\x21\x3d", b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        (0xA, b"", b"\x01\x02\x03\x04", b"\x8a\x80\x01\x02\x03\x04"),
        (0x1, b"\x00" * 126, b"\x00" * 4, b"\x81\xfe\x00\x7e" + b"\x00" * 130),
        (0x2, b"\x00" * 65536, b"\x00" * 4, b"\x82\xff" + (65536).to_bytes(8) + b"\x00" * 65540),
    ],
)
def test_ws_frame_is_a_masked_client_frame(
    common: ModuleType, opcode: int, payload: bytes, mask: bytes, frame: bytes
) -> None:
    assert common.ws_frame(opcode, payload, mask) == frame


def test_ws_accept_is_the_rfc_s_answer_to_its_key(common: ModuleType) -> None:
    # RFC 6455, section 1.3
    assert common.ws_accept(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_command_calls_sums_every_command_but_info(common: ModuleType) -> None:
    stats = (
        b"# Commandstats\r\n"
        b"cmdstat_xadd:calls=30,usec=120,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n"
        b"cmdstat_info:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n"
        b"cmdstat_pexpire:calls=12,usec=12,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
        b"\r\n"
    )
    assert common.command_calls(stats) == 42
    assert common.command_calls(b"# Commandstats\r\n") == 0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([3.0, 1.0, 2.0], 50, 2.0), ([1.0, 2.0], 50, 1.5), ([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0)],
)
def test_percentile_interpolates_between_ranks(
    common: ModuleType, values: list[float], q: float, expected: float
) -> None:
    assert common.percentile(values, q) == pytest.approx(expected)


def test_percentile_and_summary_of_no_samples(common: ModuleType) -> None:
    assert common.percentile([], 50) != common.percentile([], 50)  # NaN
    assert common.summary(array("d")) == {
        "count": 0, "p50": None, "p99": None, "p999": None, "max": None
    }  # fmt: skip


def test_summary_is_in_milliseconds(common: ModuleType) -> None:
    result = common.summary(array("d", [0.001 * i for i in range(1, 101)]))
    assert result["count"] == 100
    assert result["p50"] == pytest.approx(50.5)
    assert result["max"] == pytest.approx(100.0)


def test_slope_needs_two_distinct_x(common: ModuleType) -> None:
    assert common.slope([[0, 100], [10, 300], [20, 500]]) == pytest.approx(20.0)
    assert common.slope([[5, 1], [5, 2]]) is None
