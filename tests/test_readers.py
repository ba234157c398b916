import gzip
import json

import pandas as pd
import pytest

from danlu.data.readers import read_rows
from danlu.errors import InputError

RECORDS = [
    {"instruction": "什么是市盈率？", "input": "", "output": "市盈率是股价除以每股收益。"},
    {"instruction": "What is a bond?", "input": "", "output": "A loan to an issuer."},
]


def rows(path, **kw):
    return list(read_rows(path, **kw))


def write(path, data: bytes, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_jsonl_with_line_numbers_and_bad_line(tmp_path, gz):
    lines = [json.dumps(r, ensure_ascii=False) for r in RECORDS]
    text = "\n".join([lines[0], "{not json", "", lines[1]]) + "\n"
    path = write(tmp_path / ("d.jsonl" + (".gz" if gz else "")), text.encode(), gz)
    got = rows(path)
    assert [r.loc for r in got] == [{"line": 1}, {"line": 2}, {"line": 4}]
    assert got[0].data == RECORDS[0]
    assert got[1].error.reason == "unparseable" and got[1].raw_text == "{not json"


@pytest.mark.parametrize("gz", [False, True])
def test_json_list_and_wrapped_list(tmp_path, gz):
    path = write(tmp_path / ("a.json" + (".gz" if gz else "")), json.dumps(RECORDS).encode(), gz)
    assert [r.data for r in rows(path)] == RECORDS
    wrapped = write(tmp_path / "b.json", json.dumps({"data": RECORDS, "version": 1}).encode())
    assert [r.loc for r in rows(wrapped)] == [{"index": 0}, {"index": 1}]


def test_jsonl_saved_as_json_is_read_line_by_line(tmp_path):
    path = write(tmp_path / "c.json", "\n".join(json.dumps(r) for r in RECORDS).encode())
    assert [r.data for r in rows(path)] == RECORDS


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t"), (".csv.gz", ",")])
def test_csv_and_tsv(tmp_path, suffix, sep):
    path = tmp_path / f"d{suffix}"
    frame = pd.DataFrame(RECORDS)
    frame.to_csv(path, sep=sep, index=False, compression="gzip" if suffix.endswith("gz") else None)
    got = rows(path)
    assert [r.data for r in got] == RECORDS
    assert [r.loc for r in got] == [{"row": 1}, {"row": 2}]


def test_csv_row_with_wrong_field_count_is_unparseable(tmp_path):
    path = write(tmp_path / "d.csv", b"instruction,input,output\na,,b\nx,y\n")
    got = rows(path)
    assert got[1].error.reason == "unparseable" and got[1].loc == {"row": 2}


@pytest.mark.parametrize("gz", [False, True])
def test_parquet_with_nested_messages(tmp_path, gz):
    frame = pd.DataFrame({"messages": [[{"role": "user", "content": "问"},
                                        {"role": "assistant", "content": "答"}]]})
    path = tmp_path / "m.parquet"
    frame.to_parquet(path)
    if gz:
        path = write(tmp_path / "m.parquet.gz", path.read_bytes(), gz=True)
    got = rows(path)
    assert got[0].loc == {"row": 1}
    assert got[0].data["messages"][1] == {"role": "assistant", "content": "答"}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_encodings_are_detected(tmp_path, encoding):
    text = json.dumps(RECORDS[0], ensure_ascii=False) + "\n"
    path = write(tmp_path / "d.jsonl", text.encode(encoding))
    assert rows(path)[0].data == RECORDS[0]


def test_gbk_csv_is_detected(tmp_path):
    path = write(tmp_path / "d.csv", "instruction,output\n什么是基金？,基金是集合投资。\n".encode("gbk"))
    assert rows(path)[0].data == {"instruction": "什么是基金？", "output": "基金是集合投资。"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", b"", "empty file"),
        ("blank.json", b"  \n\n", "empty file"),
        ("empty_list.json", b"[]", "empty file"),
        ("latin1.jsonl", '{"instruction": "café ñandú øre"}\n'.encode("latin-1"), "cannot decode"),
        ("d.xlsx", b"PK\x03\x04", "unknown file type"),
        ("broken.json", b'[{"instruction": "a"', "invalid JSON"),
        ("scalar.json", b"42", "expected a JSON list"),
        ("bad.parquet", b"not parquet at all", "not a readable parquet file"),
    ],
)
def test_unusable_files_raise_one_line_input_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as err:
        rows(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_gzip_is_an_input_error(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(r) for r in RECORDS * 500)).encode())
    path = write(tmp_path / "t.jsonl.gz", data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        rows(path)
