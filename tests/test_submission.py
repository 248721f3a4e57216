import polars as pl
import pytest

from nextdest.submission import SubmissionError, build_submission, validate_submission, write_submission

HEADER = "utrip_id,city_id_1,city_id_2,city_id_3,city_id_4"
TEST = pl.DataFrame({"utrip_id": ["a", "b", "c"]})


def write(tmp_path, lines, header=HEADER):
    p = tmp_path / "sub.csv"
    p.write_text("\n".join([header] + lines) + "\n")
    return p


def test_valid_submission(tmp_path):
    df = validate_submission(write(tmp_path, ["a,1,2,3,4", "b,4,3,2,1", "c,9,8,7,6"]), TEST)
    assert df.height == 3 and df.schema["city_id_1"] == pl.Int64


@pytest.mark.parametrize(
    "lines,header,message",
    [
        (["a,1,2,3,4"], "utrip_id,city_1,city_2,city_3,city_4", r"line 1 \(header\)"),
        (["a,1,2,3,4", "b,4,3,2,1"], HEADER, r"1 test trips have no row \(e.g. 'c'\)"),
        (["a,1,2,3,4", "b,4,3,2,1", "c,9,8,7,6", "z,1,2,3,4"], HEADER, r"not a test trip: line 5 \(utrip_id='z'\)"),
        (["a,1,2,3,4", "a,1,2,3,4", "b,4,3,2,1", "c,9,8,7,6"], HEADER, r"trip listed more than once: line 2"),
        (["a,1,2,3,x", "b,4,3,2,1", "c,9,8,7,6"], HEADER, r"column 'city_id_4': not a positive integer city id: line 2"),
        (["a,1,2,3,0", "b,4,3,2,1", "c,9,8,7,6"], HEADER, r"column 'city_id_4': not a positive integer"),
        (["a,1,2,3,3", "b,4,3,2,1", "c,9,8,7,6"], HEADER, r"the four cities are not distinct: line 2"),
    ],
)
def test_invalid_submissions_name_the_problem(tmp_path, lines, header, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(write(tmp_path, lines, header), TEST)


def test_build_submission_backfills_from_popularity(tmp_path):
    topk = pl.DataFrame({
        "utrip_id": ["a", "a", "a", "a", "a", "b", "b"],
        "city_id": [5, 6, 7, 8, 9, 6, 10],
        "rank": [1, 2, 3, 4, 5, 1, 2],
    })
    sub = build_submission(topk, TEST["utrip_id"], fallback=[10, 11, 12, 13, 14])
    rows = {r[0]: list(r[1:]) for r in sub.iter_rows()}
    assert rows["a"] == [5, 6, 7, 8]
    assert rows["b"] == [6, 10, 11, 12]  # 10 not repeated
    assert rows["c"] == [10, 11, 12, 13]  # no prediction at all
    path = write_submission(sub, tmp_path / "out.csv", TEST)
    assert path.read_text().splitlines()[0] == HEADER
    assert not list(tmp_path.glob(".out.csv*"))  # no temp file left


def test_validate_cli(tmp_path, capsys):
    from nextdest.__main__ import main

    test_csv = tmp_path / "test_set.csv"
    test_csv.write_text("user_id,utrip_id\n1,a\n1,b\n1,c\n")
    assert main(["validate-submission", str(write(tmp_path, ["a,1,2,3,4", "b,4,3,2,1", "c,9,8,7,6"])), "--test", str(test_csv)]) == 0
    assert main(["validate-submission", str(write(tmp_path, ["a,1,2,3,4"])), "--test", str(test_csv)]) == 2
    assert "2 test trips have no row" in capsys.readouterr().err


def test_byte_order_mark_is_accepted_as_the_data_reader_does(tmp_path):
    p = tmp_path / "sub.csv"
    p.write_text("\ufeff" + "\n".join([HEADER, "a,1,2,3,4", "b,4,3,2,1", "c,9,8,7,6"]) + "\n", encoding="utf-8")
    assert validate_submission(p, TEST).height == 3


def test_unparsable_submission_names_the_line(tmp_path):
    with pytest.raises(SubmissionError, match=r"^sub.csv: line 3: 6 fields, but the header has 5"):
        validate_submission(write(tmp_path, ["a,1,2,3,4", "b,4,3,2,1,7", "c,9,8,7,6"]), TEST)
    p = tmp_path / "sub.csv"
    p.write_bytes((HEADER + "\na,1,2,3,4\nb\xff,4,3,2,1\n").encode("latin-1"))
    with pytest.raises(SubmissionError, match=r"^sub.csv: line 3, column 'utrip_id': invalid UTF-8"):
        validate_submission(p, TEST)
    p.write_text("")
    with pytest.raises(SubmissionError, match="file is empty"):
        validate_submission(p, TEST)
