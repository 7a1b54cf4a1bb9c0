"""AgeCsvWriter: one CSV row per predicted scan, written atomically when the run completes."""

from __future__ import annotations

import csv

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, list_data_collate

from harmonize.bundle import AgeCsvWriter
from harmonize.bundle.age_csv_writer import AGE_CSV_COLUMNS
from harmonize.output_dir import RECORD_FILENAME, OutputDirError


def _batches():
    samples = [
        {"subject_id": f"s{i}", "image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": f"/data/s{i}.nii.gz"}),
         "pred": torch.tensor([age])}
        for i, age in enumerate([30.0, 41.25, 55.5])
    ]
    return [list_data_collate(samples[:2]), list_data_collate(samples[2:])]  # as a MONAI DataLoader batches them


@pytest.mark.parametrize("decollated", [False, True], ids=["batched", "decollated"])
def test_rows_are_written_at_completion(tmp_path, decollated):
    from monai.data import decollate_batch

    def step(engine, batch):
        out = {"pred": batch["pred"]}
        if decollated:
            engine.state.batch = decollate_batch(batch)
            return decollate_batch(out)
        return out

    engine = Engine(step)
    writer = AgeCsvWriter(tmp_path / "out" / "ages.csv")
    writer.attach(engine)
    engine.run(_batches(), max_epochs=1)
    rows = list(csv.reader((tmp_path / "out" / "ages.csv").read_text().splitlines()))
    assert tuple(rows[0]) == AGE_CSV_COLUMNS
    assert rows[1:] == [["s0", "/data/s0.nii.gz", "30.000"], ["s1", "/data/s1.nii.gz", "41.250"],
                        ["s2", "/data/s2.nii.gz", "55.500"]]
    engine.run(_batches()[:1], max_epochs=1)  # a second run starts afresh
    assert len((tmp_path / "out" / "ages.csv").read_text().splitlines()) == 3
    # no temporary file left; the record lists the CSV, so the second run could replace it
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [RECORD_FILENAME, "ages.csv"]


def test_a_file_harmonize_did_not_write_is_never_replaced(tmp_path):
    """E.g. --output_file pointing at the user's own participants table: refused before any scan is predicted."""
    mine = tmp_path / "participants.csv"
    mine.write_text("subject_id,age\n")
    engine = Engine(lambda engine, batch: {"pred": batch["pred"]})
    AgeCsvWriter(mine).attach(engine)
    with pytest.raises(OutputDirError, match=r"Bundle inference would replace 1 file\(s\) that harmonize did not "
                                             r"write: .*participants.csv\. harmonize replaces only files it wrote"):
        engine.run(_batches(), max_epochs=1)
    assert mine.read_text() == "subject_id,age\n"


def test_extra_keys_become_columns(tmp_path):
    batch = _batches()[1]
    batch["intensity_reference"] = ["pooled (no site given)"]
    engine = Engine(lambda engine, batch: {"pred": batch["pred"]})
    writer = AgeCsvWriter(tmp_path / "ages.csv", extra_keys=["intensity_reference", "warnings"])
    writer.attach(engine)
    engine.run([batch], max_epochs=1)
    rows = list(csv.reader((tmp_path / "ages.csv").read_text().splitlines()))
    assert rows == [[*AGE_CSV_COLUMNS, "intensity_reference", "warnings"],
                    ["s2", "/data/s2.nii.gz", "55.500", "pooled (no site given)", ""]]
