"""Dataset readers on the small fixture files (every format, malformed lines included) and on the
real samples in shared/realdata when present."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import FIXTURES, REALDATA
from xmodal.errors import DatasetFormatError, InvalidArgumentError
from xmodal.eval.datasets import ReadOptions, detect_format, parse_dataset_spec, read_dataset
from xmodal.eval.datasets.classification import read_classification

EVAL = FIXTURES / "eval"
IMAGES = EVAL / "images"


def problems(dataset) -> list[tuple[str, int | None, str]]:
    return [(Path(p.path).name, p.line, p.reason) for p in dataset.problems]


def by_text(dataset) -> dict[str, list[str]]:
    return {t: [dataset.item_ids[i] for i in pos] for t, pos in zip(dataset.texts, dataset.text_positives, strict=True)}


def test_karpathy_split_json():
    d = read_dataset(f"karpathy:{EVAL / 'karpathy' / 'dataset_tiny.json'}")
    assert (d.name, d.format, d.split, d.kind) == ("tiny", "karpathy", "test", "image")
    assert d.item_ids == ["images/a.jpg", "images/b.jpg", "images/d.png"]
    assert d.items == [IMAGES / "a.jpg", IMAGES / "b.jpg", IMAGES / "d.png"]
    assert by_text(d) == {
        "a red square": ["images/a.jpg"],
        "red": ["images/a.jpg"],
        "a green square": ["images/b.jpg"],
        "a white square": ["images/d.png"],
    }
    assert d.item_positives == [[0, 1], [2], [3]]
    assert d.missing == ["images/missing.jpg"] and d.texts_dropped == 1
    assert [reason for _, _, reason in problems(d)] == [
        "images[1].sentences[1]: missing or empty 'raw' caption",
        "images[4]: expected an object with a 'filename'",
    ]
    assert read_dataset(EVAL / "karpathy" / "dataset_tiny.json", ReadOptions(split="train")).item_ids == [
        "images/c.jpg"
    ]
    assert len(read_dataset(EVAL / "karpathy", ReadOptions(split=None)).items) == 4
    with pytest.raises(DatasetFormatError, match=r"no records in split 'val'; splits present: test, train"):
        read_dataset(EVAL / "karpathy" / "dataset_tiny.json", ReadOptions(split="val"))


def test_coco_captions_json():
    d = read_dataset(f"coco:{EVAL / 'coco'}")  # the folder: coco_test_karpathy.json is picked by split
    assert d.name == "coco"
    assert d.items == [IMAGES / "a.jpg", IMAGES / "b.jpg"]
    assert by_text(d) == {"a red square": ["a.jpg"], "a green square": ["b.jpg"], "scarlet": ["a.jpg"]}
    assert d.missing == ["gone.jpg"] and d.texts_dropped == 1
    assert [reason for _, _, reason in problems(d)] == [
        "images[3]: expected an object with 'id' and 'file_name'",
        "annotations[4]: image_id 9 is not in images[]",
        "annotations[5]: missing or empty 'caption'",
    ]
    with pytest.raises(
        DatasetFormatError, match=r"no COCO captions file for split 'val'; expected coco_val_karpathy.json"
    ):
        read_dataset(f"coco:{EVAL / 'coco'}", ReadOptions(split="val"))


def test_clip_benchmark_flickr_txt():
    d = read_dataset(f"flickr:{EVAL / 'flickr'}")
    assert d.name == "flickr30k"
    assert d.item_ids == ["a.jpg", "b.jpg", "c.jpg"]
    assert d.texts == ["A red square, bright and small.", "Quoted, with comma", "a green square", "a blue square"]
    assert d.missing == ["missing.jpg"]
    assert problems(d) == [
        ("flickr30k_test_karpathy.txt", 5, "1 fields, header has 2"),
        ("flickr30k_test_karpathy.txt", 8, "empty path"),
    ]
    assert str(d.problems[0]) == f"{EVAL / 'flickr' / 'flickr30k_test_karpathy.txt'}:5: 1 fields, header has 2"


def test_generic_jsonl():
    d = read_dataset(EVAL / "generic" / "captions.jsonl")
    assert d.format == "jsonl"
    assert d.item_ids == ["images/a.jpg", "images/b.jpg", "images/d.png", "images/c.jpg"]
    assert d.texts == ["red one", "crimson", "green one", "white one"]
    assert d.item_positives == [[0, 1], [2], [3], []]  # c.jpg: a distractor without captions
    assert d.missing == ["images/nowhere.jpg"]
    assert problems(d) == [
        ("captions.jsonl", 3, "invalid JSON: Expecting value"),
        ("captions.jsonl", 4, "expected an object with a 'path' string"),
        ("captions.jsonl", 5, "captions[1] is not a non-empty string"),
    ]


def test_generic_csv_with_split_column():
    d = read_dataset(f"csv:{EVAL / 'generic' / 'captions.csv'}")
    assert by_text(d) == {"red one": ["images/a.jpg"], "crimson": ["images/a.jpg"], "green one": ["images/b.jpg"]}
    assert problems(d) == [("captions.csv", 5, "2 fields, header has 4")]
    assert read_dataset(f"csv:{EVAL / 'generic' / 'captions.csv'}", ReadOptions(split="train")).texts == [
        "blue one",
        "azure",
    ]
    assert len(read_dataset(f"csv:{EVAL / 'generic' / 'captions.csv'}", ReadOptions(split=None)).items) == 3


def test_chinese_clip_base64_tsv():
    d = read_dataset(f"cn-clip:{EVAL / 'cn-clip'}")
    assert d.item_ids == ["101", "102", "104"] and d.language == "zh"
    assert d.items[0] == (IMAGES / "a.jpg").read_bytes() and d.items[2] == (IMAGES / "d.png").read_bytes()
    assert by_text(d) == {"红色方块": ["101"], "绿色方块": ["101", "102"], "白色": ["104"]}
    assert d.missing == ["999"] and d.texts_dropped == 1
    assert [(name, line) for name, line, _ in problems(d)] == [
        ("test_imgs.tsv", 3),
        ("test_imgs.tsv", 5),
        ("test_texts.jsonl", 4),
        ("test_texts.jsonl", 5),
    ]
    assert "invalid base64" in d.problems[0].reason and "image_ids" in d.problems[2].reason
    first = read_dataset(f"cn-clip:{EVAL / 'cn-clip'}", ReadOptions(limit=1))
    assert first.item_ids == ["101"] and by_text(first) == {"红色方块": ["101"], "绿色方块": ["101"]}
    assert first.missing == []  # the TSV was not read to its end: absent ids are not "missing"


def test_msvd_folder():
    d = read_dataset(EVAL / "msvd")
    assert (d.format, d.kind, d.language) == ("msvd", "video", "en")
    assert d.item_ids == ["vid1_0_2", "vid2_3_5"]
    assert d.items == [EVAL / "msvd" / "YouTubeClips" / f"{v}.avi" for v in d.item_ids]
    assert by_text(d) == {
        "a bright dot moves right": ["vid1_0_2"],
        "something moves": ["vid1_0_2"],
        "a square grows": ["vid2_3_5"],
    }
    assert d.missing == ["vid4_0_1"] and d.texts_dropped == 1
    assert problems(d) == [("AllVideoDescriptions.txt", 6, "expected `video_id caption`")]
    with pytest.raises(
        DatasetFormatError, match=r"no MSVD split list file for split 'val'; expected val_list.txt or val.txt"
    ):
        read_dataset(EVAL / "msvd", ReadOptions(split="val"))


def test_strict_mode_stops_at_the_first_malformed_line():
    with pytest.raises(DatasetFormatError, match=r"captions.jsonl:3: invalid JSON"):
        read_dataset(EVAL / "generic" / "captions.jsonl", ReadOptions(strict=True))


def test_limit_keeps_the_first_present_items():
    d = read_dataset(EVAL / "generic" / "captions.jsonl", ReadOptions(limit=2))
    assert d.item_ids == ["images/a.jpg", "images/b.jpg"] and d.texts == ["red one", "crimson", "green one"]
    with pytest.raises(InvalidArgumentError, match="limit"):
        read_dataset(EVAL / "generic" / "captions.jsonl", ReadOptions(limit=0))


def test_media_root_option(tmp_path):
    (tmp_path / "pics").mkdir()
    shutil.copy(IMAGES / "a.jpg", tmp_path / "pics" / "x.jpg")
    (tmp_path / "list.jsonl").write_text('{"path": "x.jpg", "caption": "moved"}\n')
    d = read_dataset(tmp_path / "list.jsonl", ReadOptions(media_root=tmp_path / "pics"))
    assert d.items == [tmp_path / "pics" / "x.jpg"] and d.missing == []


def test_format_detection_and_specs(tmp_path):
    assert detect_format(EVAL / "karpathy" / "dataset_tiny.json") == "karpathy"
    assert detect_format(EVAL / "coco") == "coco"
    assert detect_format(EVAL / "flickr") == "flickr"
    assert detect_format(EVAL / "cn-clip") == "cn-clip"
    assert detect_format(EVAL / "msvd") == "msvd"
    assert detect_format(EVAL / "generic" / "captions.csv") == "csv"
    assert parse_dataset_spec("cn-clip:/data/MUGE") == ("cn-clip", Path("/data/MUGE"), None)
    assert parse_dataset_spec("/data/x.jsonl") == (None, Path("/data/x.jsonl"), None)
    assert parse_dataset_spec("csv:captions.txt@images/") == ("csv", Path("captions.txt"), Path("images"))
    assert parse_dataset_spec("/data/x@y.jsonl") == (None, Path("/data/x"), Path("y.jsonl"))  # no such path
    with pytest.raises(InvalidArgumentError, match="dataset format 'imagenet'"):
        parse_dataset_spec("imagenet:/data")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DatasetFormatError, match="cannot tell the dataset format"):
        read_dataset(tmp_path / "notes.txt")
    with pytest.raises(DatasetFormatError, match="no such file or folder"):
        read_dataset(tmp_path / "absent.json")


def test_broken_files_give_clear_errors(tmp_path):
    bad = tmp_path / "dataset_bad.json"
    bad.write_text('{"images": [\n  {"filename": "a.jpg",}\n]}')
    with pytest.raises(DatasetFormatError, match=r"dataset_bad.json:2: invalid JSON"):
        read_dataset(f"karpathy:{bad}")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,caption\na.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match=r"latin.csv:2: not UTF-8"):
        read_dataset(latin)
    (tmp_path / "noheader.csv").write_text("a.jpg,a caption\n")
    with pytest.raises(DatasetFormatError, match=r"noheader.csv:1: header .* needs a path column"):
        read_dataset(tmp_path / "noheader.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetFormatError, match="no usable items"):
        read_dataset(tmp_path / "empty.jsonl")


def test_without_items_reindexes():
    d = read_dataset(EVAL / "generic" / "captions.jsonl").without_items([0])
    assert d.item_ids == ["images/b.jpg", "images/d.png", "images/c.jpg"]
    assert by_text(d) == {"green one": ["images/b.jpg"], "white one": ["images/d.png"]}
    assert d.texts_dropped == 1 + 2  # "absent" (file missing) + the two captions of a.jpg


def test_classification_folder_csv_and_names(tmp_path):
    folder = read_classification(EVAL / "zeroshot" / "classes")
    assert folder.class_ids == ["blue", "green", "red"] and folder.classnames == ["blue", "green", "red"]
    assert [p.name for p in folder.items] == ["b1.png", "g1.png", "g2.png", "r1.png", "r2.png"]  # notes.txt skipped
    assert folder.labels.tolist() == [0, 1, 1, 2, 2]
    named = read_classification(EVAL / "zeroshot" / "classes", classnames=EVAL / "zeroshot" / "classnames.json")
    assert named.class_ids == ["red", "green", "blue"] and named.classnames == [
        "red square",
        "green square",
        "blue square",
    ]
    assert named.labels.tolist() == [2, 1, 1, 0, 0]
    table = read_classification(EVAL / "zeroshot" / "labels.csv")
    assert table.name == "zeroshot"
    assert [p.name for p in table.items] == ["r1.png", "g1.png", "b1.png"] and table.labels.tolist() == [2, 1, 0]
    assert table.missing == ["classes/red/missing.png"] and [p.line for p in table.problems] == [6]
    balanced = read_classification(EVAL / "zeroshot" / "classes", limit=4)
    assert sorted(balanced.labels.tolist()) == [0, 1, 1, 2]  # round-robin keeps every class
    for wnid in ("n01440764", "n99999999", "golden_retriever"):
        (tmp_path / wnid).mkdir()
        shutil.copy(IMAGES / "a.jpg", tmp_path / wnid / "x.jpg")
    assert read_classification(tmp_path).classnames == ["golden retriever", "tench", "n99999999"]  # own classes
    (tmp_path / "names.json").write_text(json.dumps(["only one"]))
    with pytest.raises(DatasetFormatError, match="1 names for 3 classes"):
        read_classification(tmp_path, classnames=tmp_path / "names.json")


# -- real samples (shared/realdata) ----------------------------------------------------------

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"shared real data not found at {REALDATA}")


@needs_realdata
def test_real_coco_captions_json():
    coco = REALDATA / "coco_mini"
    d = read_dataset(f"coco:{coco / 'annotations' / 'captions_val2017.json'}", ReadOptions(split=None))
    data = json.loads((coco / "annotations" / "captions_val2017.json").read_text())
    assert len(d.items) == len(data["images"]) == 79 and d.missing == [] and d.problems == []
    assert len(d.texts) == len(data["annotations"]) and all(t == t.strip() for t in d.texts)
    assert all(p.parent == coco / "val2017" for p in d.items)  # found beside annotations/, COCO's layout


@needs_realdata
def test_real_flickr8k_kaggle_csv_with_quoted_commas():
    root = REALDATA / "flickr8k"
    d = read_dataset(f"csv:{root / 'captions.txt'}", ReadOptions(media_root=root / "images"))
    assert (len(d.items), len(d.texts), d.missing, d.problems) == (1000, 5000, [], [])
    assert {len(p) for p in d.item_positives} == {5}
    assert any("," in t for t in d.texts)


@needs_realdata
def test_real_imagenet_labels_tsv():
    d = read_classification(REALDATA / "imagenet" / "labels.tsv")
    assert len(d.items) == 250 and d.present == 250 and d.missing == [] and d.problems == []
    assert len(d.classnames) == 1000 and d.class_set.key == "imagenet"  # classified over all 1,000
    assert d.items[int(np.flatnonzero(d.labels == 0)[0])].name == "n01440764_tench.JPEG"


@needs_realdata
def test_real_msvd_clips_in_msvd_layout(tmp_path):
    """The real clips and captions laid out as the MSVD archive + CLIP4Clip split list."""
    msvd = REALDATA / "msvd"
    records = [json.loads(line) for line in (msvd / "clips_with_captions.jsonl").read_text().splitlines()]
    (tmp_path / "YouTubeClips").mkdir()
    lines = ["# MSVD descriptions"]
    for r in records:
        video_id = Path(r["msvd_id"]).stem
        (tmp_path / "YouTubeClips" / r["msvd_id"]).symlink_to(msvd / r["path"])
        lines += [f"{video_id} {c}" for c in r["captions"]]
    (tmp_path / "AllVideoDescriptions.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(r["msvd_id"] for r in records) + "\n")
    d = read_dataset(f"msvd:{tmp_path}")
    assert len(d.items) == 5 and d.kind == "video" and d.missing == []
    assert len(d.texts) == sum(len(r["captions"]) for r in records)


def test_base64_fixture_matches_images():
    lines = (EVAL / "cn-clip" / "test_imgs.tsv").read_text().splitlines()
    assert base64.b64decode(lines[0].split("\t")[1]) == (IMAGES / "a.jpg").read_bytes()


def test_parsed_split_cache_skips_parsing_and_notices_changes(tmp_path):
    shutil.copytree(EVAL / "images", tmp_path / "images")
    (tmp_path / "k").mkdir()
    annotations = tmp_path / "k" / "dataset_tiny.json"
    data = json.loads((EVAL / "karpathy" / "dataset_tiny.json").read_text())
    data["images"] = [i for i in data["images"] if i.get("filename") != "missing.jpg"]
    data["images"][0]["shapes"] = [{"color": "red", "shape": "circle", "size": "large", "cell": [0, 0]}]
    annotations.write_text(json.dumps(data))
    store = tmp_path / "parsed"
    first = read_dataset(annotations, parsed_cache=store)
    assert first.item_attributes[0] == {"shapes": data["images"][0]["shapes"]}  # kept through the store
    assert len(list(store.glob("*.json"))) == 1
    again = read_dataset(annotations, parsed_cache=store)
    assert replace(again, problems=[]) == replace(first, problems=[])
    assert [str(p) for p in again.problems] == [str(p) for p in first.problems]
    (tmp_path / "images" / "d.png").rename(tmp_path / "d.png")  # a file vanished since the split was stored
    gone = read_dataset(annotations, parsed_cache=store)
    assert gone.item_ids == ["images/a.jpg", "images/b.jpg"] and gone.missing == ["images/d.png"]
    assert "a white square" not in gone.texts
    data["images"][0]["sentences"].append({"raw": "a new caption"})
    annotations.write_text(json.dumps(data))  # a changed file is parsed again ...
    assert "a new caption" in read_dataset(annotations, parsed_cache=store).texts
    assert len(list(store.glob("*.json"))) == 1  # ... but not stored while a file is missing
    (tmp_path / "d.png").rename(tmp_path / "images" / "d.png")
    assert read_dataset(annotations, parsed_cache=store).missing == []
    assert len(list(store.glob("*.json"))) == 2
