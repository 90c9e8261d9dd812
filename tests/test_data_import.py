import gzip
import math
from pathlib import Path

import pandas as pd
import pytest

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.importer import ColumnMapping, DataImportError, import_interactions

GOOD = """user,item,timestamp,rating
1,5,2021-01-05,4
1,6,2021-01-05T10:00:00+02:00,
1,7,1600000000,3.5
2,5,2021-01-06 12:00:00,5
"""
JAN_5 = 1609804800  # 2021-01-05T00:00:00Z


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def import_error(path: Path, **kwargs) -> DataImportError:
    with pytest.raises(DataImportError) as caught:
        import_interactions(path, **kwargs)
    return caught.value


def test_good_csv_round_trip(tmp_path):
    data, report = import_interactions(write(tmp_path, "log.csv", GOOD))
    frame = data.interactions
    assert list(frame.columns) == ["user", "item", "timestamp", "rating"]
    assert list(frame["user"]) == ["1", "1", "1", "2"]
    assert list(frame["item"]) == ["5", "6", "7", "5"]
    assert frame["timestamp"].dtype == "int64"
    assert list(frame["timestamp"]) == [JAN_5, JAN_5 + 8 * 3600, 1600000000, JAN_5 + 36 * 3600]
    assert frame["rating"].iloc[0] == 4.0 and math.isnan(frame["rating"].iloc[1])
    assert data.items.empty and data.users.empty
    assert (report.n_rows, report.n_duplicates, report.n_users, report.n_items) == (4, 0, 2, 3)
    assert any("4 rows" in line for line in report.lines())

    data.save(tmp_path / "cache")
    loaded = InteractionData.load(tmp_path / "cache")
    pd.testing.assert_frame_equal(loaded.interactions, frame, check_dtype=False)


def test_rating_column_is_optional(tmp_path):
    data, report = import_interactions(write(tmp_path, "log.csv", "user,item,timestamp\na,b,1\n"))
    assert data.interactions["rating"].isna().all()
    assert any("no rating column" in line for line in report.lines())


@pytest.mark.parametrize("name", ["log.tsv", "log.csv.gz"])
def test_tsv_and_gzip(tmp_path, name):
    text = GOOD.replace(",", "\t") if name.endswith(".tsv") else GOOD
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    data, _ = import_interactions(path)
    assert list(data.interactions["item"]) == ["5", "6", "7", "5"]


def test_parquet_input(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "user": [10, 10, 11],
            "item": [5, 6, 5],
            "timestamp": pd.to_datetime(["2021-01-05", "2021-01-06", "2021-01-07"]),
        }
    ).to_parquet(path)
    data, _ = import_interactions(path)
    assert list(data.interactions["user"]) == ["10", "10", "11"]
    assert list(data.interactions["item"]) == ["5", "6", "5"]
    assert list(data.interactions["timestamp"]) == [JAN_5, JAN_5 + 86400, JAN_5 + 2 * 86400]


def test_parquet_integral_float_ids_lose_the_decimal(tmp_path):
    path = tmp_path / "log.parquet"
    frame = pd.DataFrame({"user": [1.0, 2.0], "item": [5.0, 6.0], "timestamp": [1.5, 2.0]})
    frame.to_parquet(path)
    data, _ = import_interactions(path)
    assert list(data.interactions["item"]) == ["5", "6"]
    assert list(data.interactions["timestamp"]) == [1, 2]


def test_column_mapping(tmp_path):
    path = write(tmp_path, "log.csv", "uid,iid,ts,stars\nu1,i1,100,2\nu1,i2,200,3\n")
    mapping = ColumnMapping(user="uid", item="iid", timestamp="ts", rating="stars")
    data, _ = import_interactions(path, mapping)
    assert list(data.interactions["user"]) == ["u1", "u1"]
    assert list(data.interactions["timestamp"]) == [100, 200]
    assert list(data.interactions["rating"]) == [2.0, 3.0]


def test_missing_file(tmp_path):
    error = import_error(tmp_path / "nope.csv")
    assert "nope.csv" in str(error) and "not found" in str(error)


def test_empty_file(tmp_path):
    assert "empty" in str(import_error(write(tmp_path, "log.csv", "")))


def test_header_only_file(tmp_path):
    error = import_error(write(tmp_path, "log.csv", "user,item,timestamp\n"))
    assert "no data rows" in str(error)


def test_unsupported_extension(tmp_path):
    assert "unsupported" in str(import_error(write(tmp_path, "log.json", "{}")))


def test_missing_column_is_named(tmp_path):
    error = import_error(write(tmp_path, "log.csv", "user,item,when\na,b,1\n"))
    assert "'timestamp'" in str(error) and "'when'" in str(error)
    assert error.row is None


def test_unparsable_timestamp_names_file_row_column_and_value(tmp_path):
    text = "user,item,timestamp\na,b,2021-01-01\na,c,5\na,d,2021-13-45\na,e,garbage\n"
    error = import_error(write(tmp_path, "interactions.csv", text))
    assert (error.row, error.column) == (3, "timestamp")
    assert str(error).startswith(
        "interactions.csv, row 3, column 'timestamp': cannot parse '2021-13-45' as a time"
    )


def test_empty_timestamp(tmp_path):
    error = import_error(write(tmp_path, "log.csv", "user,item,timestamp\na,b,1\na,c,\n"))
    assert (error.row, error.column) == (2, "timestamp")


def test_non_numeric_rating(tmp_path):
    text = "user,item,timestamp,rating\na,b,1,4\na,c,2,great\n"
    error = import_error(write(tmp_path, "log.csv", text))
    assert (error.row, error.column) == (2, "rating")
    assert "'great'" in str(error)


def test_empty_id_reports_row_and_mapped_column(tmp_path):
    mapping = ColumnMapping(user="uid", item="iid", timestamp="ts")
    error = import_error(write(tmp_path, "log.csv", "uid,iid,ts\na,b,1\na,,2\n"), mapping=mapping)
    assert (error.row, error.column) == (2, "iid")


def test_duplicates_are_counted_and_removed(tmp_path):
    text = "user,item,timestamp\na,b,1\na,b,1\na,b,2\na,c,1\na,b,1\n"
    data, report = import_interactions(write(tmp_path, "log.csv", text))
    assert report.n_rows == 5 and report.n_duplicates == 2
    assert len(data.interactions) == 3
    assert any("2 exact duplicate" in line for line in report.lines())


def test_users_with_too_few_interactions_are_reported_and_kept(tmp_path):
    rows = ["a,x,1", "a,y,2", "a,z,3", "b,x,1", "c,x,1", "c,y,2"]
    data, report = import_interactions(
        write(tmp_path, "log.csv", "user,item,timestamp\n" + "\n".join(rows) + "\n")
    )
    assert report.users_with_too_few == {"b": 1, "c": 2}
    assert set(data.interactions["user"]) == {"a", "b", "c"}
    assert any("2 users have fewer than 3" in line for line in report.lines())


def test_item_and_user_metadata(tmp_path):
    log = write(tmp_path, "log.csv", GOOD)
    items = write(tmp_path, "items.csv", "id,name,tags\n5,Five,A;B\n6,Six,\n7,Seven,C;;\n")
    users = write(tmp_path, "users.tsv", "user\tage\n1\t34\n2\t\n")
    mapping = ColumnMapping(
        items_item="id", items_title="name", items_genres="tags", genres_separator=";"
    )
    data, report = import_interactions(log, mapping, items_path=items, users_path=users)
    assert list(data.items["item"]) == ["5", "6", "7"]
    assert list(data.items["title"]) == ["Five", "Six", "Seven"]
    assert list(data.items["genres"]) == ["A|B", "", "C"]
    assert list(data.users["user"]) == ["1", "2"]
    assert data.users["age"].iloc[0] == 34.0 and math.isnan(data.users["age"].iloc[1])
    assert list(data.users["gender"]) == ["", ""] and list(data.users["occupation"]) == ["", ""]
    assert (report.n_item_rows, report.n_user_rows) == (3, 2)


def test_item_metadata_without_genres_column(tmp_path):
    items = write(tmp_path, "items.csv", "item,title\n5,Five\n")
    data, _ = import_interactions(write(tmp_path, "log.csv", GOOD), items_path=items)
    assert list(data.items["genres"]) == [""]


def test_repeated_metadata_id_is_an_error(tmp_path):
    items = write(tmp_path, "items.csv", "item,title\n5,Five\n6,Six\n5,Again\n")
    error = import_error(write(tmp_path, "log.csv", GOOD), items_path=items)
    assert (error.path.name, error.row, error.column) == ("items.csv", 3, "item")


def test_millisecond_epochs_are_refused(tmp_path):
    error = import_error(write(tmp_path, "log.csv", "user,item,timestamp\na,b,1609804800000\n"))
    assert (error.row, error.column) == (1, "timestamp") and "too large" in str(error)


def test_blank_line_keeps_row_numbers_honest(tmp_path):
    error = import_error(write(tmp_path, "log.csv", "user,item,timestamp\na,b,1\n\na,c,x\n"))
    assert (error.row, error.column) == (2, "user")
