"""Tests for the data package: lookup, validation, checksums, and FSNet-exact windowing of ETT data."""

from __future__ import annotations

import io
import os
import pickle
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from data import DataError, PreparedData, find_data_file, load_ett_csv, prepare_data
from data.locate import KNOWN_SHA256, sha256_of

DATA_DIR = Path(
    os.environ.get("FSNET_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
).resolve()
ETTH1 = DATA_DIR / "ETTh1.csv"
SEQ, PRED = 48, 12
TEST_START = 3600 - SEQ  # first row of the test split


@pytest.fixture(scope="module", autouse=True)
def _real_data_present() -> None:
    assert ETTH1.is_file(), f"real data not found at {ETTH1}: set FSNET_DATA_DIR"


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_csv(ETTH1)


@pytest.fixture(scope="module")
def etth1_s() -> PreparedData:
    return prepare_data("ETTh1", "S", "OT", SEQ, PRED, path=str(DATA_DIR))


@pytest.fixture(scope="module")
def etth1_m() -> PreparedData:
    return prepare_data("ETTh1", "M", "OT", SEQ, PRED, path=str(DATA_DIR))


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No FSNET_DATA_DIR, an empty cache dir under tmp_path, and no real network."""
    monkeypatch.delenv("FSNET_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FSNET_CACHE_DIR", str(cache))

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return cache


def _train_rows(windows: torch.Tensor, y: torch.Tensor, col: int = 0) -> torch.Tensor:
    """Rebuild the split's rows of column ``col`` from its windows (first row of each, then the tail)."""
    return torch.cat([windows[:, 0, col], windows[-1, 1:, col], y[-1]])


# --- real data: shapes, scaler, calendar, alignment -------------------------------------------------


def test_etth1_s_window_counts_and_shapes(etth1_s: PreparedData) -> None:
    d = etth1_s
    assert (len(d.train), len(d.val), len(d.test)) == (2821, 709, 10789)
    assert d.test.x.shape == (10789, SEQ, 1 + 7) and d.test.y.shape == (10789, PRED)
    assert d.test.y_raw.shape == (10789, PRED) and d.test.last_raw.shape == (10789, 1)
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.float32
    assert d.train.y_raw.dtype == torch.float64 and d.train.last_raw.dtype == torch.float64
    assert d.test.x.is_contiguous() and d.test.y.is_contiguous()
    assert (d.n_in, d.n_out, d.input_columns, d.target_columns) == (1, 1, ("OT",), ("OT",))
    assert d.sha256 == KNOWN_SHA256["ETTh1"] and Path(d.path).name == "ETTh1.csv"


def test_scaler_is_mean_std_of_train_rows(etth1_s: PreparedData, raw: pd.DataFrame) -> None:
    ot = raw["OT"].to_numpy()[:2880]
    assert etth1_s.scaler_mean.tolist() == [ot.mean()]
    assert etth1_s.scaler_std.tolist() == [ot.std()]
    train = _train_rows(etth1_s.train.x, etth1_s.train.y).double()
    assert len(train) == 2880
    assert abs(train.mean().item()) < 1e-5 and abs(train.std(unbiased=False).item() - 1) < 1e-5
    test_ot = etth1_s.test.x[:, 0, 0].double()
    assert abs(test_ot.mean().item()) > 0.5  # the test stream is not what the scaler was fitted on


def _copy_with_ot_changed(tmp_path: Path, row: int) -> Path:
    lines = ETTH1.read_text().splitlines(keepends=True)
    fields = lines[row + 1].rstrip("\n").split(",")
    fields[-1] = "99.5"
    lines[row + 1] = ",".join(fields) + "\n"
    out = tmp_path / f"etth1_row{row}.csv"  # not a known name: no checksum
    out.write_text("".join(lines))
    return out


def test_test_rows_do_not_define_the_scaler(tmp_path: Path, etth1_s: PreparedData) -> None:
    late = prepare_data("ETTh1", "S", path=str(_copy_with_ot_changed(tmp_path, 5000)))
    assert np.array_equal(late.scaler_mean, etth1_s.scaler_mean)
    assert np.array_equal(late.scaler_std, etth1_s.scaler_std)
    s = 5000 - TEST_START - SEQ  # the test window whose first target step is row 5000
    assert late.test.y_raw[s, 0].item() == 99.5 and etth1_s.test.y_raw[s, 0].item() != 99.5
    early = prepare_data("ETTh1", "S", path=str(_copy_with_ot_changed(tmp_path, 100)))
    assert early.scaler_mean[0] != etth1_s.scaler_mean[0]
    assert early.scaler_std[0] != etth1_s.scaler_std[0]


def test_calendar_features(etth1_s: PreparedData, raw: pd.DataFrame) -> None:
    cal = etth1_s.test.x[..., 1:]
    assert torch.all(cal[..., 0] == 0)  # minute of hourly data: zero std -> all zeros
    # train rows 0..2867 are the first rows of train windows plus the last window; 2868..2879 close val x[0]
    tail = etth1_s.val.x[0, SEQ - PRED :, 1:]
    train_cal = torch.cat([etth1_s.train.x[:, 0, 1:], etth1_s.train.x[-1, 1:, 1:], tail]).double()
    assert len(train_cal) == 2880
    assert torch.allclose(train_cal.mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(train_cal[:, 1:].std(0, unbiased=False), torch.ones(6, dtype=torch.float64))
    # hour feature follows the clock: +1 hour per row except at midnight
    hours = pd.to_datetime(raw["date"]).dt.hour.to_numpy()[TEST_START : TEST_START + SEQ]
    step = torch.diff(etth1_s.test.x[0, :, 2]).numpy()
    assert np.all((step > 0) == (np.diff(hours) == 1))


def test_y_is_the_next_pred_len_target_rows(etth1_s: PreparedData, raw: pd.DataFrame) -> None:
    ot = raw["OT"].to_numpy()
    mean, std = etth1_s.scaler_mean[0], etth1_s.scaler_std[0]
    for s in (0, 1, 4321, len(etth1_s.test) - 1):
        rows = slice(TEST_START + s + SEQ, TEST_START + s + SEQ + PRED)
        expect = torch.from_numpy((ot[rows] - mean) / std).float()
        assert torch.equal(etth1_s.test.y[s], expect)
        assert torch.equal(etth1_s.test.y_raw[s], torch.tensor(ot[rows]))
        assert etth1_s.test.last_raw[s, 0].item() == ot[TEST_START + s + SEQ - 1]
    # y of window s is the tail of window s + pred_len's input
    y, x = etth1_s.test.y, etth1_s.test.x
    assert torch.equal(y[:-PRED], x[PRED:, SEQ - PRED :, 0])


def test_to_original_inverts_scaling(etth1_s: PreparedData, etth1_m: PreparedData) -> None:
    for d in (etth1_s, etth1_m):
        back = d.to_original(d.test.y)
        assert back.dtype == torch.float64
        assert torch.allclose(back, d.test.y_raw, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="last dimension"):
        etth1_s.to_original(torch.zeros(3, PRED + 1))


def test_m_features_time_major(etth1_m: PreparedData, raw: pd.DataFrame) -> None:
    d = etth1_m
    assert (d.n_in, d.n_out) == (7, 7) and d.input_columns == tuple(raw.columns[1:])
    assert d.test.x.shape == (10789, SEQ, 14) and d.test.y.shape == (10789, PRED * 7)
    values = raw.iloc[:, 1:].to_numpy()
    s = 777
    rows = values[TEST_START + s + SEQ : TEST_START + s + SEQ + PRED]
    scaled = torch.from_numpy((rows - d.scaler_mean) / d.scaler_std).float()
    assert torch.equal(d.test.y[s].view(PRED, 7), scaled)  # 'b t d -> b (t d)'
    assert torch.equal(d.test.last_raw[s], torch.from_numpy(values[TEST_START + s + SEQ - 1]))


def test_ms_predicts_last_column(etth1_m: PreparedData) -> None:
    d = prepare_data("ETTh1", "MS", "OT", SEQ, PRED, path=str(DATA_DIR))
    assert (d.n_in, d.n_out, d.target, d.target_columns) == (7, 1, "OT", ("OT",))
    assert torch.equal(d.test.x, etth1_m.test.x)
    assert torch.equal(d.test.y, etth1_m.test.y.view(-1, PRED, 7)[..., -1])
    assert torch.allclose(d.to_original(d.test.y), d.test.y_raw, rtol=1e-5, atol=1e-4)


def test_matches_naive_fsnet_getitem(etth1_m: PreparedData, raw: pd.DataFrame) -> None:
    """Rebuild a few windows the way Dataset_ETT_hour.__getitem__ does (per-index slicing)."""
    values = raw.iloc[:, 1:].to_numpy()
    data = (values - values[:2880].mean(0)) / values[:2880].std(0)
    dt = pd.to_datetime(raw["date"])
    stamp = np.stack(
        [dt.dt.minute, dt.dt.hour, dt.dt.day_of_week, dt.dt.day, dt.dt.day_of_year, dt.dt.month],
        axis=1,
    ).astype(float)
    stamp = np.concatenate([stamp, dt.dt.isocalendar().week.to_numpy(float)[:, None]], axis=1)
    sd = stamp[:2880].std(0)
    stamp = (stamp - stamp[:2880].mean(0)) / np.where(sd == 0, 1, sd)
    for split, border1 in ((etth1_m.train, 0), (etth1_m.val, 2880 - SEQ), (etth1_m.test, TEST_START)):
        for s in (0, len(split) // 2, len(split) - 1):
            lo = border1 + s
            x = np.concatenate([data[lo : lo + SEQ], stamp[lo : lo + SEQ]], axis=1)
            y = data[lo + SEQ : lo + SEQ + PRED].reshape(-1)
            assert torch.allclose(split.x[s], torch.from_numpy(x).float(), atol=1e-6)
            assert torch.allclose(split.y[s], torch.from_numpy(y).float(), atol=1e-6)


def test_etth2_loads() -> None:
    d = prepare_data("ETTh2", "S", path=str(DATA_DIR))
    assert (len(d.train), len(d.test)) == (2821, 10789)
    assert d.sha256 == KNOWN_SHA256["ETTh2"]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"features": "X"}, "features"),
        ({"seq_len": 0}, "seq_len"),
        ({"pred_len": 0}, "pred_len"),
        ({"seq_len": 2870, "pred_len": 12}, "windows"),
        ({"features": "MS", "target": "HUFL"}, "last column"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError) as err:
        prepare_data("ETTh1", path=str(DATA_DIR), **kwargs)  # type: ignore[arg-type]
    assert word in str(err.value) and "\n" not in str(err.value)


def test_unknown_target_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"ETTh1\.csv: column 'FOO' is missing"):
        prepare_data("ETTh1", target="FOO", path=str(DATA_DIR))


# --- malformed files ---------------------------------------------------------------------------------


def _good_rows(n: int = 20) -> list[str]:
    dates = pd.date_range("2016-07-01", periods=n, freq="h")
    return [f"{d:%Y-%m-%d %H:%M:%S},{i}.5,{i * 2}.25,{30 - i}.0" for i, d in enumerate(dates)]


def _csv(rows: list[str], header: str = "date,HUFL,HULL,OT") -> str:
    return "\n".join([header, *rows]) + "\n"


Edit = Callable[[list[str], int], None]


def _edit(row: int, fn: Edit) -> str:
    """Good rows with ``fn(rows, row)`` applied in place, as CSV text."""
    rows = _good_rows()
    fn(rows, row)
    return _csv(rows)


def _set(col: int, text: str) -> Edit:
    """An edit that replaces field ``col`` of the row with ``text``."""

    def fn(rows: list[str], row: int) -> None:
        fields = rows[row].split(",")
        fields[col] = text
        rows[row] = ",".join(fields)

    return fn


BAD_FILES = {
    "empty": ("", ["empty"]),
    "header_only": ("date,OT\n", ["no data rows"]),
    "ragged": (_csv(_good_rows()[:5] + ["2016-07-02 00:00:00,1,2,3,4,5"] + _good_rows()[6:]), ["csv"]),
    "ragged_first_row": (_csv(["2016-07-01 00:00:00,1,2,3,4"] + _good_rows()[1:]), ["csv"]),
    "unterminated_quote": ('date,OT\n"2016-07-01 00:00:00,1.0\n', ["csv"]),
    "no_date_column": (_csv(_good_rows(), header="time,HUFL,HULL,OT"), ["'date'", "missing"]),
    "bad_date": (_edit(7, _set(0, "not-a-date")), ["unparseable", "row 7"]),
    "non_monotonic": (_edit(5, lambda r, i: r.insert(i, r.pop(i + 2))), ["non-monotonic", "row 6"]),
    "duplicated_date": (_edit(9, lambda r, i: r.__setitem__(i, r[i - 1])), ["duplicated", "row 9"]),
    "nan_value": (_edit(11, _set(3, "NaN")), ["'OT'", "row 11", "nan"]),
    "empty_value": (_edit(12, _set(1, "")), ["'HUFL'", "row 12", "missing"]),
    "non_numeric": (_edit(4, _set(2, "abc")), ["'HULL'", "row 4", "non-numeric"]),
    "infinite": (_edit(3, _set(3, "inf")), ["'OT'", "row 3", "non-finite"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_one_line_data_error(tmp_path: Path, case: str) -> None:
    text, words = BAD_FILES[case]
    path = tmp_path / f"bad_{case}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_ett_csv(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path.name}: ")
    for word in words:
        assert word.lower() in msg.lower(), msg


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"\x00\xff\xfe\x89PNG\r\n\x1a\n" * 10)
    with pytest.raises(DataError, match=r"^garbage\.csv: .*CSV"):
        load_ett_csv(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    for call in (lambda: load_ett_csv(path), lambda: find_data_file(path=path)):
        with pytest.raises(DataError, match=r"^nowhere\.csv: file not found"):
            call()


def test_valid_small_file_types(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text(_csv(_good_rows()))
    frame = load_ett_csv(path)
    assert list(frame.columns) == ["date", "HUFL", "HULL", "OT"]
    assert str(frame["date"].dtype).startswith("datetime64") and frame["OT"].dtype == np.float64
    assert frame["HULL"].iloc[3] == 6.25


def test_missing_target_column_and_too_few_rows(tmp_path: Path) -> None:
    path = tmp_path / "no_ot.csv"
    path.write_text(_csv([r.rsplit(",", 1)[0] for r in _good_rows()], header="date,HUFL,HULL"))
    with pytest.raises(DataError, match=r"^no_ot\.csv: column 'OT' is missing$"):
        prepare_data(path=str(path))
    short = tmp_path / "short.csv"
    short.write_text(_csv(_good_rows()))
    with pytest.raises(DataError, match=r"^short\.csv: has 20 rows"):
        prepare_data(path=str(short))


def test_data_error_is_one_line_and_picklable() -> None:
    err = DataError("/some/dir/x.csv", "bad\nthing  here")
    assert str(err) == "x.csv: bad thing here"
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, DataError) and str(again) == str(err)


# --- lookup order, checksums, download ---------------------------------------------------------------


def test_corrupted_known_file_fails_checksum(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = bytearray(ETTH1.read_bytes())
    blob[1000] = ord("7") if blob[1000] != ord("7") else ord("8")
    (tmp_path / "ETTh1.csv").write_bytes(bytes(blob))
    monkeypatch.setenv("FSNET_DATA_DIR", str(tmp_path))
    for call in (lambda: find_data_file("ETTh1"), lambda: prepare_data("ETTh1")):
        with pytest.raises(DataError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith("ETTh1.csv: sha256 mismatch") and KNOWN_SHA256["ETTh1"] in msg
        assert "\n" not in msg


def test_explicit_path_wins_over_env(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_text(_csv(_good_rows()))
    monkeypatch.setenv("FSNET_DATA_DIR", str(DATA_DIR))
    assert find_data_file("ETTh1", path=mine) == mine
    assert find_data_file("ETTh1", path=str(DATA_DIR)) == ETTH1  # a directory holding ETTh1.csv
    assert find_data_file("ETTh1") == ETTH1


def test_env_wins_over_cache_and_cache_is_used(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.mkdir()
    (clean_env / "ETTh1.csv").symlink_to(ETTH1)
    monkeypatch.setenv("FSNET_DATA_DIR", str(DATA_DIR))
    assert find_data_file("ETTh1") == ETTH1
    monkeypatch.delenv("FSNET_DATA_DIR")
    assert find_data_file("ETTh1") == clean_env / "ETTh1.csv"
    monkeypatch.setenv("FSNET_DATA_DIR", str(clean_env.parent / "empty"))  # set but without the file
    assert find_data_file("ETTh1") == clean_env / "ETTh1.csv"


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes, fail_after: int | None = None) -> None:
        super().__init__(payload)
        self.fail_after = fail_after

    def read(self, size: int | None = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise TimeoutError("connection dropped")
        return super().read(size)


def _serve(
    monkeypatch: pytest.MonkeyPatch,
    payload: bytes,
    calls: list[tuple[str, float]],
    fail_after: int | None = None,
) -> None:
    def fake_urlopen(url: str, timeout: float) -> _FakeResponse:
        calls.append((url, timeout))
        return _FakeResponse(payload, fail_after)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)


def test_download_lands_in_cache(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, float]] = []
    _serve(monkeypatch, ETTH1.read_bytes(), calls)
    path = find_data_file("ETTh1")
    assert path == clean_env / "ETTh1.csv" and sha256_of(path) == KNOWN_SHA256["ETTh1"]
    assert calls == [("https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh1.csv", 30.0)]
    assert sorted(os.listdir(clean_env)) == ["ETTh1.csv"]  # no temp file left behind
    assert find_data_file("ETTh1") == path and len(calls) == 1  # second lookup hits the cache


@pytest.mark.parametrize("failure", ["corrupted", "dropped"])
def test_failed_download_leaves_no_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    blob = bytearray(ETTH1.read_bytes())
    if failure == "corrupted":
        blob[-5] ^= 1
    _serve(monkeypatch, bytes(blob), [], fail_after=2 << 20 if failure == "dropped" else None)
    with pytest.raises(DataError) as err:
        find_data_file("ETTh1")
    msg = str(err.value)
    assert "\n" not in msg
    assert ("sha256 mismatch" in msg) if failure == "corrupted" else ("connection dropped" in msg)
    assert os.listdir(clean_env) == []


def test_nothing_found_names_every_place(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FSNET_DATA_DIR", str(tmp_path / "envdir"))
    with pytest.raises(DataError) as err:
        find_data_file("ETTh1")
    msg = str(err.value)
    assert msg.startswith("ETTh1.csv: not found") and "\n" not in msg
    for place in ("FSNET_DATA_DIR", str(tmp_path / "envdir"), str(clean_env), "raw.githubusercontent.com"):
        assert place in msg
    with pytest.raises(DataError, match="no download known for dataset 'mydata'"):
        find_data_file("mydata")
