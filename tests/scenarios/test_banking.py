"""The Banking77 stream: the real data read whole, and new intents that emerge at their natural rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftpilot.scenarios.banking import (
    OUT_OF_SCOPE,
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
    with pytest.raises(ValueError, match=r"n_out_of_scope must be between 0 and 27 \(the 77 intents less the 50"):
        BankingStreamConfig(n_out_of_scope=28)


#: The ``intents_oos`` stream's knobs.
OOS = BankingStreamConfig(n_initial=42, n_out_of_scope=15, emerge_from=1 / 3, emerge_until=2 / 3)


@pytest.fixture(scope="module")
def oos_stream(queries) -> pd.DataFrame:
    return Banking77Stream(OOS).build(queries)


def test_held_out_intents_are_out_of_scope_from_first_row_to_last(queries, oos_stream):
    held_out = Banking77Stream(OOS).held_out(queries["intent"])
    tenths = oos_stream["intent"].groupby(np.arange(len(oos_stream)) * 10 // len(oos_stream))

    assert oos_stream.shape == (11033, 2)
    assert len(held_out) == 15
    assert not oos_stream["intent"].isin(held_out).any()
    # Held-out intents are asked at their natural rate (18 % of the data set) throughout: more
    # of the stream at first, before the emerging intents come.
    assert round(queries["intent"].isin(held_out).mean(), 3) == 0.184
    share = tenths.apply(lambda intents: (intents == OUT_OF_SCOPE).mean())
    assert share.between(0.15, 0.3).all()
    # Each out-of-scope row is one of the held-out intents' queries.
    text_intent = dict(zip(queries["text"], queries["intent"], strict=False))
    assert oos_stream.loc[oos_stream["intent"] == OUT_OF_SCOPE, "text"].map(text_intent).isin(held_out).all()


def test_oos_stream_intents_emerge_over_the_middle_third(queries, oos_stream):
    stream = Banking77Stream(OOS)
    appears = stream.appearances(queries["intent"])
    held_out = set(stream.held_out(queries["intent"]))
    emerging = sorted(name for name, moment in appears.items() if moment > 0)
    initial = {name for name, moment in appears.items() if moment == 0} - held_out
    first = _first_rows(oos_stream)

    assert (len(initial), len(emerging)) == (42, 20)
    assert not held_out & set(emerging)
    # The first third holds the 42 initial intents and out-of-scope queries, nothing else.
    assert set(oos_stream["intent"].iloc[: len(oos_stream) // 3]) == initial | {OUT_OF_SCOPE}
    assert (int(first[emerging].min()), int(first[emerging].max())) == (3719, 7389)
    assert oos_stream["intent"].nunique() == 63


def test_without_held_out_intents_the_split_is_banking77s(queries):
    plain = Banking77Stream().appearances(queries["intent"])
    none_held = Banking77Stream(BankingStreamConfig(n_out_of_scope=0)).appearances(queries["intent"])

    assert plain == none_held
    assert Banking77Stream().held_out(queries["intent"]) == []


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
