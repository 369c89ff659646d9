"""Streamed Parquet shards: the same rows as a one-shot write, row groups at chunk ends, final shard names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from gmai.data import write as W


def _rows(out: Path, n: int) -> list[dict]:
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"images/im{i % 4}.png"
        if not (out / rel).exists():
            Image.fromarray(np.full((8, 8), 40 * (i % 4), np.uint8)).save(out / rel)
        rows.append({name: [] if name in W.LIST_FIELDS else "" for name in W.ROW_FIELDS}
                    | {"id": f"2d#cls#ct#toy#{i}", "image": rel, "labels": ["a", "b"][: i % 3],
                       "conversations": [{"from": "human", "value": f"<image>\nq{i}"}, {"from": "gpt", "value": "a"}]})
    return rows


def test_streamed_shards_hold_the_rows_of_a_one_shot_write(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "PARQUET_ROWS_PER_SHARD", 10)
    monkeypatch.setattr(W, "PARQUET_ROW_GROUP_ROWS", 4)
    rows = _rows(tmp_path, 23)
    one_shot = W.ParquetShards(tmp_path / "parquet" / "MM-Caption", "train", W.ImageBytes(tmp_path))
    for row in rows:  # every row in one chunk
        one_shot.add(row)
    one_shot.end_chunk()
    whole = [str(p.relative_to(tmp_path)) for p in one_shot.close()]
    assert whole == [f"parquet/MM-Caption/train-0000{k}-of-00003.parquet" for k in range(3)]
    expected = [pq.read_table(tmp_path / p) for p in whole]
    assert [pq.ParquetFile(tmp_path / p).num_row_groups for p in whole] == [1, 1, 1]  # one-shot: a group a shard

    folder = tmp_path / "streamed"
    shards = W.ParquetShards(folder, "train", W.ImageBytes(tmp_path))
    for chunk in (rows[0:3], rows[3:5], rows[5:14], rows[14:15], rows[15:23]):  # chunk ends: 3, 5, 14, 15, 23
        for row in chunk:
            shards.add(row)
        shards.end_chunk()
        assert not list(folder.glob("train-*.parquet"))  # no final name before close
    paths = shards.close()
    assert [p.name for p in paths] == [f"train-0000{k}-of-00003.parquet" for k in range(3)]
    assert not list(folder.glob(".*"))  # staged names are gone
    for path, table in zip(paths, expected):
        assert pq.read_table(path).equals(table)
    groups = [[pq.ParquetFile(p).metadata.row_group(g).num_rows for g in range(pq.ParquetFile(p).num_row_groups)]
              for p in paths]
    # chunk ends 3: 3 rows wait; 5: a group of 5; 14: 9 rows fill shard 0 (group of 5), then a group of 4;
    # 15: 1 row waits; 23: 9 rows fill shard 1 (group of 6), the other 3 start shard 2
    assert groups == [[5, 5], [4, 6], [3]]


def test_streamed_shards_load_with_datasets(tmp_path, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setattr(W, "PARQUET_ROW_GROUP_ROWS", 2)
    rows = _rows(tmp_path, 7)
    shards = W.ParquetShards(tmp_path / "parquet" / "MM-Percept", "train", W.ImageBytes(tmp_path))
    for k, row in enumerate(rows):
        shards.add(row)
        if k % 3 == 2:
            shards.end_chunk()
    shards.close()
    ds = load_dataset("parquet", data_dir=str(tmp_path / "parquet" / "MM-Percept"), split="train")
    assert ds["id"] == [r["id"] for r in rows] and ds["labels"] == [r["labels"] for r in rows]
    assert ds[5]["conversations"] == rows[5]["conversations"]
    assert np.array_equal(np.asarray(ds[6]["image"]), np.asarray(Image.open(tmp_path / rows[6]["image"])))
