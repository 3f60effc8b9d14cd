"""Task data: formats, columns, the stratified split, every validation error, warnings, the demo."""

from __future__ import annotations

import json

import pytest

from helpers import topic_rows, write_csv
from finetune_advisor.core import DataConfig, InputError, load_task


def test_reads_csv_tsv_jsonl_and_parquet_alike(tmp_path):
    rows = topic_rows()
    csv_path = write_csv(tmp_path / "d.csv", rows)
    tsv_path = write_csv(tmp_path / "d.tsv", rows, delimiter="\t")
    jsonl_path = tmp_path / "d.jsonl"
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet_path = tmp_path / "d.parquet"
    import pandas as pd

    pd.DataFrame(rows).to_parquet(parquet_path)
    tasks = [load_task(str(p)) for p in (csv_path, tsv_path, jsonl_path, parquet_path)]
    assert {t.fingerprint for t in tasks} == {tasks[0].fingerprint}
    assert tasks[0].labels == ["money", "sport", "tech"]
    assert sum(len(s) for s in tasks[0].splits()) == len(rows)


def test_split_is_stratified_seeded_and_covers_every_class(tmp_path):
    path = str(write_csv(tmp_path / "d.csv", topic_rows(copies=5)))
    task = load_task(path)
    for split in task.splits():
        assert set(split.labels.tolist()) == {0, 1, 2}
    assert [len(task.train), len(task.valid), len(task.test)] == [57, 24, 9]  # validation: 25%, the most it gets
    assert load_task(path).fingerprint == task.fingerprint
    assert load_task(path, DataConfig(seed=1)).fingerprint != task.fingerprint
    assert not set(task.train.texts) & set(task.valid.texts)


@pytest.mark.parametrize("copies, sizes, says", [
    (200, [2880, 360, 360], None),  # 10% is 360 rows: enough
    (60, [771, 201, 108], "201 rows (19% of each class, not the usual 10%)"),  # grown to 200 rows
    (20, [234, 90, 36], "only 90 rows (25% of each class, the most the split gives it)"),  # 25% is not enough
])
def test_the_split_gives_validation_200_rows_where_a_quarter_of_the_data_allows_and_says_when_not(
        tmp_path, copies, sizes, says):
    path = str(write_csv(tmp_path / "d.csv", topic_rows(copies=copies)))
    task = load_task(path)
    assert [len(task.train), len(task.valid), len(task.test)] == sizes
    notes = [w for w in task.warnings if w.startswith("validation:")]
    assert (says in notes[0]) if says else not notes
    asked = load_task(path, DataConfig(valid_fraction=0.1))  # a share asked for is kept, without a word
    assert len(asked.valid) == round(len(topic_rows(copies=copies)) * 0.1)
    assert not [w for w in asked.warnings if w.startswith("validation:")]


def test_noise_floor_is_two_standard_errors_of_a_difference_of_two_accuracies():
    from finetune_advisor.core._data import noise_floor

    assert noise_floor(200) == pytest.approx(0.1)  # 2 * sqrt(2 * 0.25 / 200)
    assert noise_floor(800, 0.9) == pytest.approx(2 * (2 * 0.09 / 800) ** 0.5)


def test_integer_labels_sort_numerically_and_columns_found_by_usual_names(tmp_path):
    rows = [{"Sentence": f"text number {i}", "target": str(i % 11)} for i in range(66)]
    task = load_task(str(write_csv(tmp_path / "d.csv", rows)))
    assert task.labels == [str(i) for i in range(11)]
    assert (task.text_column, task.label_column) == ("Sentence", "target")


def test_sentence_pair_columns(tmp_path):
    rows = [{"premise": f"a man plays {i}", "hypothesis": f"someone plays {i}", "label": ["yes", "no"][i % 2]}
            for i in range(20)]
    task = load_task(str(write_csv(tmp_path / "nli.csv", rows)))
    assert (task.text_column, task.text_pair_column) == ("premise", "hypothesis")
    assert task.train.pairs is not None and len(task.train.pairs) == len(task.train)


def test_separate_validation_file_is_used_as_is(tmp_path):
    train = write_csv(tmp_path / "train.csv", topic_rows())
    valid = write_csv(tmp_path / "valid.csv", topic_rows(copies=1))
    task = load_task(str(train), DataConfig(valid=str(valid)))
    assert len(task.train) == 36 and len(task.valid) == 18 and task.test is None


def test_max_rows_takes_a_stratified_sample():
    task = load_task("demo:bbc-news", DataConfig(max_rows=100))
    total = sum(len(s) for s in task.splits())
    assert 95 <= total <= 105
    assert all(n >= 1 for n in task.class_counts(task.test).values())


def test_demo_bbc_news():
    task = load_task("demo:bbc-news")
    assert sum(len(s) for s in task.splits()) == 2225
    assert task.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert any("£" in t for t in task.train.texts + task.valid.texts + task.test.texts)  # the Latin-1 file


# ---------------------------------------------------------------- validation errors


def test_missing_file():
    with pytest.raises(InputError, match="'nope.csv' does not exist"):
        load_task("nope.csv")


def test_unsupported_format(tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"not a supported file.*\.csv"):
        load_task(str(tmp_path / "d.xlsx"))


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,a\ncaf\xe9 au lait,b\n")
    with pytest.raises(InputError, match=r"line 3 is not valid UTF-8 \(byte 0xe9\)"):
        load_task(str(path))


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(InputError, match="'.*empty.csv' is empty"):
        load_task(str(tmp_path / "empty.csv"))
    with pytest.raises(InputError, match="has a header but no rows"):
        load_task(str(tmp_path / "header.csv"))


def test_missing_column_lists_columns_and_suggests(tmp_path):
    path = write_csv(tmp_path / "d.csv", topic_rows())
    with pytest.raises(InputError, match=r"--label-column 'lable' is not a column of d.csv\. "
                                         r"Columns: text, label\. Did you mean 'label'\?"):
        load_task(str(path), DataConfig(label_column="lable"))


def test_no_recognisable_text_column(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"body_text": "x", "label": "a"}] * 4)
    with pytest.raises(InputError, match="no text column I recognise.*Columns: body_text, label.*--text-column"):
        load_task(str(path))


def test_empty_and_missing_texts_are_counted_with_row_numbers(tmp_path):
    rows = topic_rows()
    rows[2]["text"] = ""
    rows[5]["text"] = "   "
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[7] = json.dumps({"text": None, "label": "sport"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"3 row\(s\) have an empty or missing 'text' \(data rows 3, 6, 8;"):
        load_task(str(path))


def test_single_class(tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"text": f"t{i}", "label": "only"} for i in range(10)])
    with pytest.raises(InputError, match="every row has the label 'only'.*at least 2 classes"):
        load_task(str(path))


def test_class_with_one_example_cannot_be_split(tmp_path):
    rows = topic_rows() + [{"text": "a lonely row", "label": "rare"}]
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(InputError, match=r"1 of 4 classes \('rare'\) have fewer than 2 examples.*pass --valid FILE"):
        load_task(str(path))


def test_validation_labels_unseen_in_training(tmp_path):
    train = write_csv(tmp_path / "train.csv", topic_rows())
    valid = write_csv(tmp_path / "valid.csv", topic_rows(copies=1) + [{"text": "new", "label": "weather"}])
    with pytest.raises(InputError, match=r"--valid has label\(s\) never seen in training: 'weather'"):
        load_task(str(train), DataConfig(valid=str(valid)))


def test_every_problem_is_reported_at_once(tmp_path):
    bad = write_csv(tmp_path / "d.csv", [{"txt": "x", "label": "a"}])
    with pytest.raises(InputError) as err:
        load_task(str(bad), DataConfig(valid="missing.csv", text_column="text"))
    assert len(err.value.problems) == 2
    assert "'text' is not a column" in str(err.value) and "'missing.csv' does not exist" in str(err.value)


def test_bad_split_fractions():
    with pytest.raises(InputError, match=r"valid_fraction 0.9 must be in \(0, 0.5\]"):
        DataConfig(valid_fraction=0.9)


# ---------------------------------------------------------------- warnings


def test_warns_on_imbalance(tmp_path):
    rows = [{"text": f"text {i}", "label": "a"} for i in range(30)] + [{"text": f"other {i}", "label": "b"}
                                                                       for i in range(3)]
    task = load_task(str(write_csv(tmp_path / "d.csv", rows)))
    assert any("imbalance" in w for w in task.warnings)


def test_copies_of_a_text_stay_in_one_split_and_are_counted(tmp_path):
    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(40)]
    rows += [{"text": "text 3", "label": "b"}] * 5 + [{"text": "text 4", "label": "a"}] * 5
    task = load_task(str(write_csv(tmp_path / "d.csv", rows)))
    splits = [set(s.texts) for s in task.splits()]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert any("2 text(s) appear more than once (12 rows)" in w for w in task.warnings)
    assert not any("also appear in training" in w for w in task.warnings)


def test_a_text_with_two_labels_is_reported(tmp_path):
    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(40)] + [{"text": "text 0", "label": "b"}]
    task = load_task(str(write_csv(tmp_path / "d.csv", rows)))
    assert any("1 text(s) in" in w and "carry two or more labels (e.g. 'text 0': a, b)" in w for w in task.warnings)


def test_a_validation_file_that_repeats_training_texts_is_warned(tmp_path):
    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(20)]
    valid = write_csv(tmp_path / "v.csv", rows[:4])
    task = load_task(str(write_csv(tmp_path / "d.csv", rows)), DataConfig(valid=str(valid)))
    assert any("4 validation row(s) also appear in training" in w for w in task.warnings)


def test_clean_data_has_no_warnings(topic_task):
    assert topic_task.warnings == []
