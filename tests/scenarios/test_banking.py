"""The Banking77 stream: the real data read whole, and new intents that emerge at their natural rate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from driftpilot.scenarios.banking import (
    Banking77Stream,
    BankingStreamConfig,
    load_banking77,
    locate_banking77,
)

#: A copy of ../shared/data/banking77 (CC BY 4.0, see its README), so the tests run wherever the
#: repository is checked out.
BANKING77 = Path(__file__).resolve().parents[1] / "data" / "banking77"


@pytest.fixture(scope="module")
def queries() -> pd.DataFrame:
    return load_banking77(BANKING77)


@pytest.fixture(scope="module")
def stream(queries) -> pd.DataFrame:
    return Banking77Stream().build(queries)


def _first_rows(frame: pd.DataFrame) -> pd.Series:
    return frame.reset_index().groupby("intent")["index"].min()


def test_the_data_set_is_read_whole_with_its_multi_line_queries(queries):
    assert queries.shape == (13083, 2)
    assert list(queries.columns) == ["text", "intent"]
    assert queries["intent"].nunique() == 77
    assert int(queries["text"].str.contains("\n").sum()) == 13


def test_seeded_stream_is_pinned_and_repeatable(queries, stream):
    again = Banking77Stream(data_dir=BANKING77).frame()
    other = Banking77Stream(BankingStreamConfig(seed=1)).build(queries)

    assert stream.shape == (9409, 2)
    assert stream.iloc[0].tolist() == ["Is there such thing as top up by cheque?", "top_up_by_cash_or_cheque"]
    assert stream["intent"].nunique() == 77
    pd.testing.assert_frame_equal(stream, again)
    assert len(other) == 9653


def test_emerging_intents_are_absent_before_they_appear(queries, stream):
    appears = Banking77Stream().appearances(queries["intent"])
    emerging = sorted(name for name, moment in appears.items() if moment > 0)
    first = _first_rows(stream)

    assert len(emerging) == 27
    # The first half of the stream holds the 50 initial intents and nothing else.
    assert set(stream["intent"].iloc[: len(stream) // 2]) == {n for n, m in appears.items() if m == 0}
    # New intents keep arriving over the second half, one by one.
    assert (int(first[emerging].min()), int(first[emerging].max())) == (4814, 8055)
    seen = [stream["intent"].iloc[: int(len(stream) * share)].nunique() for share in (0.5, 0.6, 0.7, 0.8, 0.9)]
    assert seen == [50, 57, 64, 72, 77]
    # Each appears after the ones due before it, give or take the randomness of its first query.
    order = sorted(emerging, key=appears.__getitem__)
    assert pd.Series(first[order].to_numpy()).diff().dropna().ge(-400).all()


def test_emerging_intents_are_asked_at_their_natural_rate(queries, stream):
    appears = Banking77Stream().appearances(queries["intent"])
    emerging = {name for name, moment in appears.items() if moment > 0}

    last_tenth = stream.iloc[-len(stream) // 10 :]

    # Once all are there, new intents take the share they have in the data set, no burst.
    natural = queries["intent"].isin(emerging).mean()
    assert round(natural, 3) == 0.372
    assert abs(last_tenth["intent"].isin(emerging).mean() - natural) < 0.05


def test_a_fraction_makes_a_small_copy(queries):
    small = Banking77Stream(BankingStreamConfig(fraction=0.05)).build(queries)

    assert small.shape == (525, 2)
    assert small["intent"].nunique() == 72


def test_bad_config_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="n_initial must be between 1 and 77 intents, got 0"):
        BankingStreamConfig(n_initial=0)
    with pytest.raises(ValueError, match="need 0 < emerge_from <= emerge_until < 1"):
        BankingStreamConfig(emerge_from=0.9, emerge_until=0.5)


def _fake_banking77(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        (folder / name).write_text('text,category\n"two\nlines",card_arrival\n', encoding="utf-8")
    return folder


def test_located_from_argument_or_a_folder_above(tmp_path, monkeypatch):
    data = _fake_banking77(tmp_path / "shared" / "data" / "banking77")
    elsewhere = _fake_banking77(tmp_path / "elsewhere")
    repo = tmp_path / "repo" / "sub"
    repo.mkdir(parents=True)
    monkeypatch.chdir(repo)

    assert locate_banking77() == data.resolve()
    assert locate_banking77(elsewhere) == elsewhere
    assert load_banking77(elsewhere)["text"].tolist() == ["two\nlines", "two\nlines"]


def test_a_missing_folder_is_named_in_the_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"among .*nowhere\. Pass data_dir"):
        locate_banking77(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="empty"):
        Banking77Stream(data_dir=tmp_path / "empty").frame()
