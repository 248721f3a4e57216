"""The official data contract: every bad input gives an error naming file, line and column."""

import polars as pl
import pytest

from nextdest.data.official import DataError, load_official, read_reservations, read_truth

HEADER = "user_id,checkin,checkout,city_id,device_class,affiliate_id,booker_country,hotel_country,utrip_id"
TRAIN = [
    "1,2016-04-01,2016-04-02,100,desktop,7,Gondal,Sokovia,1_1",
    "1,2016-04-02,2016-04-04,200,desktop,7,Gondal,Sokovia,1_1",
    "1,2016-04-04,2016-04-05,300,desktop,7,Gondal,Cobra Island,1_1",
    "2,2016-05-01,2016-05-03,200,mobile,9,Elbonia,Sokovia,2_1",
    "2,2016-05-03,2016-05-04,100,mobile,9,Elbonia,Sokovia,2_1",
]
TEST = [
    "3,2016-06-01,2016-06-02,100,tablet,7,Gondal,Sokovia,3_1",
    "3,2016-06-02,2016-06-03,200,tablet,7,Gondal,Sokovia,3_1",
    "3,2016-06-03,2016-06-05,0,tablet,7,Gondal,,3_1",
]
TRUTH = ["utrip_id,city_id,hotel_country", "3_1,300,Cobra Island"]


def write(tmp_path, name, lines, header=HEADER):
    p = tmp_path / name
    p.write_text("\n".join(([header] if header else []) + lines) + "\n")
    return p


def files(tmp_path, train=TRAIN, test=TEST, truth=TRUTH):
    return (write(tmp_path, "train_set.csv", train), write(tmp_path, "test_set.csv", test),
            write(tmp_path, "ground_truth.csv", truth, header=None))


def test_good_files_load_typed_and_sorted(tmp_path):
    train, test, truth, report = load_official(*files(tmp_path))
    assert train.height == 5 and test.height == 3 and truth.height == 1
    assert train.schema["checkin"] == pl.Date and train.schema["city_id"] == pl.Int64
    assert test.filter(pl.col("city_id") == 0)["hotel_country"].to_list() == [None]
    assert train["row"].to_list() == [2, 3, 4, 5, 6]  # file line numbers kept
    assert report.rows_dropped == {}


def test_empty_file(tmp_path):
    p = tmp_path / "train_set.csv"
    p.write_text("")
    with pytest.raises(DataError, match="train_set.csv: file is empty"):
        read_reservations(p, "train")
    with pytest.raises(DataError, match="train_set.csv: file has a header but no data rows"):
        read_reservations(write(tmp_path, "train_set.csv", []), "train")


def test_missing_and_extra_columns(tmp_path):
    p = write(tmp_path, "train_set.csv", [r.rsplit(",", 1)[0] for r in TRAIN], header=HEADER.rsplit(",", 1)[0])
    with pytest.raises(DataError, match=r"train_set.csv: line 1 \(header\): missing columns \['utrip_id'\]"):
        read_reservations(p, "train")
    p = write(tmp_path, "train_set.csv", [r + ",x" for r in TRAIN], header=HEADER + ",extra")
    with pytest.raises(DataError, match=r"line 1 \(header\): unexpected columns \['extra'\]"):
        read_reservations(p, "train")


def test_unparsable_date(tmp_path):
    rows = TRAIN.copy()
    rows[2] = rows[2].replace("2016-04-04,2016-04-05", "2016-13-04,2016-04-05")
    with pytest.raises(DataError, match=r"train_set.csv: column 'checkin': not a date YYYY-MM-DD: line 4 \(checkin='2016-13-04'\)"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_checkout_before_checkin(tmp_path):
    rows = TRAIN.copy()
    rows[1] = "1,2016-04-02,2016-04-01,200,desktop,7,Gondal,Sokovia,1_1"
    with pytest.raises(DataError, match=r"column 'checkout': checkout before checkin: line 3"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


@pytest.mark.parametrize("col,pos,bad", [("city_id", 3, "12a"), ("user_id", 0, "x1"), ("affiliate_id", 5, "3.5")])
def test_non_integer_ids(tmp_path, col, pos, bad):
    rows = TRAIN.copy()
    parts = rows[0].split(",")
    parts[pos] = bad
    rows[0] = ",".join(parts)
    with pytest.raises(DataError, match=rf"column '{col}': not an integer: line 2 \({col}='{bad}'\)"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_empty_value(tmp_path):
    rows = TRAIN.copy()
    rows[3] = rows[3].replace("mobile", "")
    with pytest.raises(DataError, match=r"column 'device_class': empty value: line 5"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_test_trip_without_concealed_row(tmp_path):
    rows = TEST[:2] + ["3,2016-06-03,2016-06-05,300,tablet,7,Gondal,Cobra Island,3_1"]
    with pytest.raises(DataError, match=r"test_set.csv: column 'city_id': test trip '3_1' \(from line 2\) has no concealed row"):
        read_reservations(write(tmp_path, "test_set.csv", rows), "test")


def test_test_trip_with_two_concealed_rows(tmp_path):
    rows = [TEST[0], "3,2016-06-02,2016-06-03,0,tablet,7,Gondal,,3_1", TEST[2]]
    with pytest.raises(DataError, match=r"test trip '3_1' \(from line 2\) has 2 concealed rows"):
        read_reservations(write(tmp_path, "test_set.csv", rows), "test")


def test_concealed_row_not_last(tmp_path):
    rows = [TEST[0], "3,2016-06-02,2016-06-03,0,tablet,7,Gondal,,3_1",
            "3,2016-06-03,2016-06-05,300,tablet,7,Gondal,Cobra Island,3_1"]
    with pytest.raises(DataError, match=r"test_set.csv: column 'checkin': line 3: the concealed row of trip '3_1' is not the trip's last"):
        read_reservations(write(tmp_path, "test_set.csv", rows), "test")


def test_concealed_row_with_country(tmp_path):
    rows = TEST[:2] + ["3,2016-06-03,2016-06-05,0,tablet,7,Gondal,Sokovia,3_1"]
    with pytest.raises(DataError, match=r"column 'hotel_country': the concealed row .* line 4"):
        read_reservations(write(tmp_path, "test_set.csv", rows), "test")


def test_duplicate_rows_error_or_counted_drop(tmp_path):
    rows = TRAIN + [TRAIN[1]]
    p = write(tmp_path, "train_set.csv", rows)
    with pytest.raises(DataError, match=r"train_set.csv: .*2 rows are exact duplicates.*lines 3, 7"):
        read_reservations(p, "train")
    from nextdest.data.official import LoadReport

    report = LoadReport()
    df = read_reservations(p, "train", duplicates="drop", report=report)
    assert df.height == 5
    assert report.rows_dropped == {"train_set.csv": {"exact duplicate row": 1}}
    assert any("dropped 1" in n for n in report.notes)


def test_trip_in_both_train_and_test(tmp_path):
    test = [r.replace("3_1", "2_1").replace("3,", "2,", 1) for r in TEST]
    truth = ["utrip_id,city_id,hotel_country", "2_1,300,Cobra Island"]
    with pytest.raises(DataError, match=r"test_set.csv: column 'utrip_id': line 2: trip '2_1' is also in train_set.csv"):
        load_official(*files(tmp_path, test=test, truth=truth))


def test_city_zero_in_train(tmp_path):
    rows = TRAIN.copy()
    rows[4] = rows[4].replace(",100,", ",0,")
    with pytest.raises(DataError, match=r"column 'city_id': city_id 0 .* line 6"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_trip_with_two_users(tmp_path):
    rows = TRAIN.copy()
    rows[1] = rows[1].replace("1,", "5,", 1)
    with pytest.raises(DataError, match=r"column 'user_id': trip '1_1' .* 2 different users"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_truth_problems(tmp_path):
    with pytest.raises(DataError, match=r"ground_truth.csv: column 'city_id': not a positive integer: line 2"):
        read_truth(write(tmp_path, "ground_truth.csv", ["utrip_id,city_id,hotel_country", "3_1,abc,X"], header=None))
    with pytest.raises(DataError, match=r"ground_truth.csv: column 'utrip_id': trip listed more than once"):
        read_truth(write(tmp_path, "ground_truth.csv", TRUTH + ["3_1,300,Cobra Island"], header=None))
    with pytest.raises(DataError, match=r"ground_truth.csv: column 'utrip_id': trip '9_9' is not a test trip"):
        load_official(*files(tmp_path, truth=TRUTH + ["9_9,1,X"]))
    with pytest.raises(DataError, match=r"ground_truth.csv: column 'utrip_id': test trip '3_1' has no ground-truth row .1 test trips missing"):
        test2 = TEST + [r.replace("3_1", "4_1").replace("3,", "4,", 1) for r in TEST]
        load_official(*files(tmp_path, test=test2, truth=["utrip_id,city_id,hotel_country", "4_1,300,X"]))


def test_unnamed_index_column_is_ignored_and_reported(tmp_path):
    rows = [f"{i},{r}" for i, r in enumerate(TRAIN)]
    from nextdest.data.official import LoadReport

    report = LoadReport()
    df = read_reservations(write(tmp_path, "train_set.csv", rows, header="," + HEADER), "train", report=report)
    assert df.height == 5 and any("unnamed leading index" in n for n in report.notes)


def test_official_source_missing_folder_is_clear(tmp_path, artifacts):
    from nextdest.config import load_config
    from nextdest.stages import run_pipeline

    cfg = load_config(None, ["data.source=official", f"data.official_dir={tmp_path / 'nope'}"])
    with pytest.raises(DataError, match="train_set.csv does not exist"):
        run_pipeline(cfg, ["data"])


def test_official_source_reads_users_files(tmp_path, artifacts):
    from nextdest.config import load_config
    from nextdest.stages import experiment_dir, run_pipeline

    raw = tmp_path / "raw"
    raw.mkdir()
    files(raw)
    cfg = load_config(None, ["data.source=official", f"data.official_dir={raw}"])
    run_pipeline(cfg, ["data", "folds"])
    d = experiment_dir(cfg) / "data"
    assert pl.read_parquet(d / "truth.parquet").height == 1
    assert pl.read_parquet(d / "train.parquet").height == 5


def test_invalid_utf8_names_line_and_column(tmp_path):
    p = tmp_path / "train_set.csv"
    rows = TRAIN.copy()
    p.write_bytes(("\n".join([HEADER] + rows) + "\n").replace("Elbonia", "Elb\xf6nia").encode("latin-1"))
    with pytest.raises(DataError, match=r"^train_set.csv: line 5, column 'booker_country': invalid UTF-8 \(byte 0xf6"):
        read_reservations(p, "train")


def test_row_with_extra_field_names_the_line(tmp_path):
    rows = TRAIN.copy()
    rows[3] = rows[3] + ",surplus"
    with pytest.raises(DataError, match=r"^train_set.csv: line 5: 10 fields, but the header has 9 \(first extra value 'surplus' after column 'utrip_id'\)$"):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_unterminated_quote_names_the_line(tmp_path):
    rows = TRAIN.copy()
    rows[2] = rows[2].replace(",desktop,", ',"desktop,')
    with pytest.raises(DataError, match=r"^train_set.csv: line 4: "):
        read_reservations(write(tmp_path, "train_set.csv", rows), "train")


def test_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "train_set.csv"
    p.write_text("\ufeff" + "\n".join([HEADER] + TRAIN) + "\n", encoding="utf-8")
    assert read_reservations(p, "train").height == 5


# The challenge-era test_set.csv: two more columns, in the original download's order.
CHALLENGE_HEADER = "user_id,checkin,checkout,device_class,affiliate_id,booker_country,utrip_id,row_num,total_rows,city_id,hotel_country"


def challenge_rows(rows, numbers=None, totals=None):
    out = []
    for i, r in enumerate(rows):
        u, ci, co, city, dev, aff, bk, hc, trip = r.split(",")
        n = numbers[i] if numbers else i + 1
        t = totals[i] if totals else len(rows)
        out.append(",".join([u, ci, co, dev, aff, bk, trip, str(n), str(t), city, hc]))
    return out


def test_challenge_era_test_file_is_checked_and_its_extra_columns_dropped(tmp_path):
    from nextdest.data.official import LoadReport

    report = LoadReport()
    p = write(tmp_path, "test_set.csv", challenge_rows(TEST), header=CHALLENGE_HEADER)
    df = read_reservations(p, "test", report=report)
    plain = read_reservations(write(tmp_path / "", "plain_test.csv", TEST), "test")
    assert df.equals(plain)  # same table as the current format gives
    assert any("row_num and total_rows were checked" in n and "dropped" in n for n in report.notes)


@pytest.mark.parametrize("numbers,totals,match", [
    ([1, 2, 3], [3, 4, 3], r"column 'total_rows': not the number of rows of its trip: line 3 \(total_rows='4'\)"),
    ([1, 1, 3], None, r"column 'row_num': repeated within its trip: line 2 \(row_num='1'\), line 3"),
    ([1, 3, 2], None, r"column 'row_num': the concealed row .* numbered last .*: line 4 \(row_num='2'\)"),
    ([1, "x", 3], None, r"column 'row_num': not an integer: line 3 \(row_num='x'\)"),
    ([0, 2, 3], None, r"column 'row_num': must be >= 1: line 2"),
])
def test_inconsistent_challenge_columns_name_line_and_column(tmp_path, numbers, totals, match):
    p = write(tmp_path, "test_set.csv", challenge_rows(TEST, numbers, totals), header=CHALLENGE_HEADER)
    with pytest.raises(DataError, match=r"^test_set.csv: " + match):
        read_reservations(p, "test")


def test_one_challenge_column_alone_is_an_error(tmp_path):
    header = CHALLENGE_HEADER.replace(",total_rows", "")
    rows = [",".join(r.split(",")[:8] + r.split(",")[9:]) for r in challenge_rows(TEST)]
    with pytest.raises(DataError, match=r"line 1 \(header\): column 'row_num' without 'total_rows'"):
        read_reservations(write(tmp_path, "test_set.csv", rows, header=header), "test")
    with pytest.raises(DataError, match=r"unexpected columns \['row_num', 'total_rows'\]"):  # train files never had them
        read_reservations(write(tmp_path, "train_set.csv", challenge_rows(TRAIN[:2]), header=CHALLENGE_HEADER), "train")


def test_data_report_says_when_files_match_the_public_release(tmp_path, artifacts, monkeypatch):
    import json

    from nextdest.config import load_config
    from nextdest.data import official
    from nextdest.stages import experiment_dir, run_pipeline

    raw = tmp_path / "raw"
    raw.mkdir()
    train, test, _truth = files(raw)
    test.write_text("\n".join([CHALLENGE_HEADER] + challenge_rows(TEST)) + "\n")
    monkeypatch.setitem(official.PUBLIC_MD5, "train_set.csv", official.md5_file(train))
    monkeypatch.setitem(official.PUBLIC_MD5, "test_set.csv", official.md5_file(test))
    cfg = load_config(None, ["data.source=official", f"data.official_dir={raw}"])
    run_pipeline(cfg, ["data"])
    report = json.loads((experiment_dir(cfg) / "data" / "data_report.json").read_text())
    notes = " | ".join(report["notes"])
    assert "train_set.csv: MD5" in notes and "matches the public release" in notes
    assert "row_num and total_rows were checked" in notes
    assert report["checksums"]["test_set.csv"]["public_release"] is True
    assert report["checksums"]["ground_truth.csv"]["public_release"] is False and "differs from the public release" in notes
