"""The published dataset files, read as they come: each format in its publisher's layout (small
copies made here, and the real samples of shared/realdata when present), with exact counts;
format detection from content; `@IMAGES` per dataset; class sets of ImageNet and CIFAR."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import FIXTURES, REALDATA
from xmodal.errors import DatasetFormatError
from xmodal.eval.datasets import ReadOptions, detect_format, read_dataset
from xmodal.eval.datasets.class_sets import class_set, class_sets
from xmodal.eval.datasets.classification import read_classification

IMAGES = FIXTURES / "eval" / "images"
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"shared real data not found at {REALDATA}")


def jpeg(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 100, 200)).save(path)
    return path


def reasons(dataset) -> list[tuple[str, int | None, str]]:
    return [(Path(p.path).name, p.line, p.reason) for p in dataset.problems]


# -- Flickr8k: the original release ---------------------------------------------------------------


@pytest.fixture
def flickr8k(tmp_path) -> Path:
    """Flickr8k_text.zip + Flickr8k_Dataset.zip unzipped into one folder: 4 captioned images (one
    absent from Flicker8k_Dataset/), a split list naming an image the token file does not have."""
    lines = []
    for n in range(4):
        lines += [f"{n}000_a.jpg#{k}\tpicture {n} caption {k} ." for k in range(5)]
        if n != 3:
            jpeg(tmp_path / "Flicker8k_Dataset" / f"{n}000_a.jpg", 40 * n)
    lines.insert(7, "broken line without a tab")
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text("0000_a.jpg\n3000_a.jpg\nnot_captioned.jpg\n1000_a.jpg\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("2000_a.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("")
    return tmp_path


def test_flickr8k_release_folder_and_token_file(flickr8k):
    for spec in (flickr8k, flickr8k / "Flickr8k.token.txt", f"flickr8k:{flickr8k}"):
        d = read_dataset(spec)  # --split test: the test list, in its order
        assert (d.format, d.split, d.kind) == ("flickr8k", "test", "image")
        assert d.item_ids == ["0000_a.jpg", "1000_a.jpg"] and d.missing == ["3000_a.jpg"]
        assert len(d.texts) == 10 and d.texts_dropped == 5
        assert d.text_ids[:2] == ["0000_a.jpg#0", "0000_a.jpg#1"]  # the release's own caption ids
        assert d.items[0] == flickr8k / "Flicker8k_Dataset" / "0000_a.jpg"
        assert reasons(d) == [
            ("Flickr8k.token.txt", 8, "expected `image.jpg#k<TAB>caption`"),
            ("Flickr_8k.testImages.txt", 3, "not_captioned.jpg has no captions in Flickr8k.token.txt"),
        ]
    assert read_dataset(flickr8k, ReadOptions(split="train")).item_ids == ["2000_a.jpg"]
    assert len(read_dataset(flickr8k, ReadOptions(split=None)).items) == 3  # every captioned image present
    with pytest.raises(DatasetFormatError, match=r"Flickr8k.token.txt:8: expected"):  # strict: the first bad line
        read_dataset(flickr8k, ReadOptions(strict=True, split=None))
    tokens = flickr8k / "Flickr8k.token.txt"
    tokens.write_text("".join(line for line in tokens.open() if "\t" in line))
    with pytest.raises(
        DatasetFormatError, match=r"partial dataset: 1 files not found \(first: 3000_a.jpg\); 5 captions"
    ):
        read_dataset(flickr8k, ReadOptions(strict=True, split=None))


@needs_realdata
def test_real_flickr8k_release_test_split(tmp_path):
    """The real token file and split lists (1,000 test names + 13 names the token file lacks) with the
    1,000 images of the sample as Flicker8k_Dataset/: 125 of the test images are in the sample."""
    for f in (REALDATA / "flickr8k" / "text").iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "Flicker8k_Dataset").symlink_to(REALDATA / "flickr8k" / "images")
    d = read_dataset(tmp_path)
    assert (d.format, d.split) == ("flickr8k", "test")
    assert (len(d.items), len(d.texts), len(d.missing), len(d.problems)) == (125, 625, 875, 13)
    assert len(d.items) + len(d.missing) == 1000  # --split test = the 1,000-image test list
    assert all(p.line > 1000 for p in d.problems)  # the 13 appended names, reported by line


# -- Kaggle Flickr8k CSV --------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["Images", "images"])
def test_kaggle_flickr8k_csv_finds_its_image_folder(tmp_path, folder):
    jpeg(tmp_path / folder / "a.jpg")
    jpeg(tmp_path / folder / "b.jpg")
    (tmp_path / "captions.txt").write_text(
        'image,caption\na.jpg,"A dog, brown, runs ."\na.jpg,A dog runs .\nb.jpg,"A cat sits\nb.jpg,A cat .\n'
    )
    for spec in (tmp_path / "captions.txt", tmp_path):  # the file, or the unzipped folder
        assert detect_format(Path(spec)) == "csv"
        d = read_dataset(spec)
        assert d.split is None  # no split column: reported as "all"
        assert d.item_ids == ["a.jpg", "b.jpg"] and d.items[0] == tmp_path / folder / "a.jpg"
        assert d.texts == ["A dog, brown, runs .", "A dog runs .", "A cat ."]
        # the quote opened on line 4 is reported there; the lines after it are read, not swallowed
        assert reasons(d) == [("captions.txt", 4, 'unbalanced quote: a field opened with " on this line is not closed')]


@needs_realdata
def test_real_kaggle_flickr8k_csv_beside_its_images(tmp_path):
    (tmp_path / "captions.txt").symlink_to(REALDATA / "flickr8k" / "captions.txt")
    (tmp_path / "Images").symlink_to(REALDATA / "flickr8k" / "images")
    d = read_dataset(tmp_path / "captions.txt")  # no --images: Images/ is found beside it
    assert (len(d.items), len(d.texts), d.missing, d.problems) == (1000, 5000, [], [])
    assert d.format == "csv" and d.split is None


# -- Flickr30k JSON + Flickr30k-Entities split lists ----------------------------------------------


@pytest.fixture
def flickr30k(tmp_path) -> Path:
    captions = {
        f"{n}.jpg": [f"photo {n} caption {k}" for k in range(5)] + [f"flickr30k-images/{n}.jpg"] for n in range(6)
    }
    (tmp_path / "flickr30k.json").write_text(json.dumps(captions))
    (tmp_path / "test.txt").write_text("1\n3\n5\n")
    (tmp_path / "val.txt").write_text("0\n2")
    for n in range(6):
        jpeg(tmp_path / "flickr30k-images" / f"{n}.jpg", n)
    return tmp_path


def test_flickr30k_json_with_entities_split_lists(flickr30k):
    d = read_dataset(flickr30k / "flickr30k.json")  # the path element is no caption
    assert (d.format, d.split) == ("flickr30k", "test")
    assert d.item_ids == ["1.jpg", "3.jpg", "5.jpg"] and len(d.texts) == 15
    assert all("flickr30k-images" not in t for t in d.texts) and d.text_ids[0] == "1.jpg#0"
    assert d.items[0] == flickr30k / "flickr30k-images" / "1.jpg"
    assert read_dataset(flickr30k / "flickr30k.json", ReadOptions(split="val")).item_ids == ["0.jpg", "2.jpg"]
    assert len(read_dataset(flickr30k / "flickr30k.json", ReadOptions(split=None)).items) == 6


def test_flickr30k_without_images_says_where_it_looked(flickr30k):
    shutil.rmtree(flickr30k / "flickr30k-images")
    with pytest.raises(DatasetFormatError) as caught:
        read_dataset(flickr30k / "flickr30k.json")
    message = str(caught.value)
    assert "none of its 3 image files was found (looked for 1.jpg in " in message
    assert str(flickr30k / "flickr30k-images") in message and "--images DIR, or FORMAT:PATH@DIR" in message
    assert "\n" not in message  # one line


@needs_realdata
def test_real_flickr30k_test_json_and_split_list(tmp_path):
    """The real test captions (1,000 images x 5, each list ending with its path); the images are not in
    the sample, so real JPEGs stand in under the published folder name."""
    text = REALDATA / "flickr30k_text"
    data = json.loads((text / "test.json").read_text())
    (tmp_path / "test.json").symlink_to(text / "test.json")
    (tmp_path / "test.txt").symlink_to(text / "test.txt")
    for name in list(data)[:40]:
        jpeg(tmp_path / "flickr30k-images" / name)
    d = read_dataset(tmp_path)  # the folder, --split test: test.json
    assert (d.format, d.split, len(d.items), len(d.texts), len(d.missing)) == ("flickr30k", "test", 40, 200, 960)
    assert detect_format(text / "validation.json") == "flickr30k"


# -- MSVD caption JSON ----------------------------------------------------------------------------


@needs_realdata
def test_real_msvd_label_json_with_its_videos(tmp_path):
    msvd = REALDATA / "msvd"
    for name in ("testing_label.json", "training_label.json", "videos"):
        (tmp_path / name).symlink_to(msvd / name)
    d = read_dataset(tmp_path)  # --split test: testing_label.json, clips in videos/
    labels = {r["id"]: r["caption"] for r in json.loads((msvd / "testing_label.json").read_text())}
    present = sorted(p.name for p in (msvd / "videos").iterdir())
    assert (d.format, d.kind, d.split) == ("msvd", "video", "test")
    assert sorted(f"{i}.avi" for i in d.item_ids) == present and len(d.items) == 5 and len(d.missing) == 95
    assert len(d.texts) == sum(len(labels[p]) for p in present) == 82
    assert read_dataset(tmp_path / "testing_label.json").item_ids == d.item_ids


def test_msvd_label_json_split_folders(tmp_path):
    """The course layout: testing_label.json with the clips in testing_data/video/."""
    clip = FIXTURES / "eval" / "msvd" / "YouTubeClips" / "vid1_0_2.avi"
    (tmp_path / "testing_data" / "video").mkdir(parents=True)
    shutil.copy(clip, tmp_path / "testing_data" / "video" / "abc_1_3.avi")
    (tmp_path / "testing_label.json").write_text(
        json.dumps([{"caption": ["a dot moves", "", "it moves"], "id": "abc_1_3.avi"}, {"id": 5}])
    )
    d = read_dataset(tmp_path)
    assert d.item_ids == ["abc_1_3"] and d.texts == ["a dot moves", "it moves"]
    assert [r for _, _, r in reasons(d)] == [
        "[0].caption[1]: not a non-empty string",
        "[1]: expected an object with an 'id' string and a 'caption' list",
    ]
    with pytest.raises(DatasetFormatError, match=r"no MSVD caption file for split 'train'.*found: testing_label.json"):
        read_dataset(tmp_path, ReadOptions(split="train"))


# -- COCO 2017 layout -----------------------------------------------------------------------------


@needs_realdata
def test_real_coco_2017_layout(tmp_path):
    coco = REALDATA / "coco_mini"
    d = read_dataset(f"coco:{coco}", ReadOptions(split="val"))  # annotations/captions_val2017.json + val2017/
    assert (d.split, len(d.items), len(d.texts), d.missing) == ("val", 79, 395, [])
    assert all(p.parent == coco / "val2017" for p in d.items)
    train = read_dataset(f"coco:{coco}", ReadOptions(split="train"))
    assert (len(train.items), len(train.texts)) == (80, 400) and train.items[0].parent == coco / "train2017"
    with pytest.raises(DatasetFormatError, match=r"no COCO captions file for split 'test'.*splits present: train, val"):
        read_dataset(f"coco:{coco}")  # COCO 2017 publishes no test captions


def test_coco_file_without_split_is_all(tmp_path):
    jpeg(tmp_path / "a.jpg")
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 7, "image_id": 1, "caption": "x"}]}
    (tmp_path / "my_captions.json").write_text(json.dumps(doc))
    d = read_dataset(tmp_path / "my_captions.json")
    assert (d.format, d.split, d.text_ids) == ("coco", None, ["7"])


# -- detection, @IMAGES ---------------------------------------------------------------------------


def test_bare_paths_are_recognised_by_content(tmp_path, flickr8k, flickr30k):
    (tmp_path / "renamed.dat").write_text((FIXTURES / "eval" / "karpathy" / "dataset_tiny.json").read_text())
    assert detect_format(tmp_path / "renamed.dat") == "karpathy"
    (tmp_path / "mine.txt").write_text('{"path": "a.jpg", "caption": "x"}\n{"path": "b.jpg", "caption": "y"}\n')
    assert detect_format(tmp_path / "mine.txt") == "jsonl"
    assert detect_format(flickr8k / "Flickr8k.token.txt") == "flickr8k"
    assert detect_format(flickr30k / "flickr30k.json") == "flickr30k"
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(DatasetFormatError) as caught:
        read_dataset(tmp_path / "notes.txt")
    message = str(caught.value)
    for fmt in ("karpathy", "coco", "flickr", "flickr8k", "flickr30k", "cn-clip", "msvd", "jsonl", "csv"):
        assert f"{fmt}: " in message  # every format, with what it expects


def test_images_folder_per_dataset(tmp_path):
    for sub in ("one", "two"):
        jpeg(tmp_path / sub / "pics" / "x.jpg")
        (tmp_path / sub / "captions.csv").write_text(f"image,caption\nx.jpg,{sub}\n")
    a = read_dataset(f"csv:{tmp_path / 'one' / 'captions.csv'}@{tmp_path / 'one' / 'pics'}")
    b = read_dataset(f"{tmp_path / 'two' / 'captions.csv'}@{tmp_path / 'two' / 'pics'}")
    assert a.items == [tmp_path / "one" / "pics" / "x.jpg"] and b.items == [tmp_path / "two" / "pics" / "x.jpg"]
    with pytest.raises(DatasetFormatError, match="no such folder"):
        read_dataset(f"csv:{tmp_path / 'one' / 'captions.csv'}@{tmp_path / 'nowhere'}")


# -- class sets -----------------------------------------------------------------------------------


def test_shipped_class_sets_are_clips_lists():
    imagenet = class_set("imagenet")
    assert len(imagenet.ids) == len(imagenet.names) == 1000 and list(imagenet.ids) == sorted(imagenet.ids)
    assert imagenet.names[:3] == ("tench", "goldfish", "great white shark") and imagenet.names[-1] == "toilet paper"
    assert imagenet.names[21] == "kite (bird of prey)" and imagenet.names[134] == "crane bird"
    assert imagenet.names[517] == "construction crane" and imagenet.names[657] == imagenet.names[744] == "missile"
    assert (imagenet.ids[0], imagenet.ids[999]) == ("n01440764", "n15075141")
    assert len(class_set("cifar10").ids) == 10 and len(class_set("cifar100").ids) == 100
    assert class_set("cifar100").lookup("aquarium_fish") == 1 and class_set("cifar100").names[1] == "aquarium fish"
    assert sorted(class_sets()) == ["cifar10", "cifar100", "imagenet"]


@needs_realdata
def test_imagenet_wnids_match_the_real_labels():
    """250 of the 1,000 WordNet ids checked against the real sample's class indexes."""
    imagenet = class_set("imagenet")
    rows = list(csv.DictReader((REALDATA / "imagenet" / "labels.tsv").open(), delimiter="\t"))
    assert len(rows) == 250 and all(imagenet.ids[int(r["class_index"])] == r["wnid"] for r in rows)


def test_wnid_folders_classify_over_all_1000_and_warn_about_unknown(tmp_path, caplog):
    for name in ("n01440764", "n01443537", "n09999999"):
        jpeg(tmp_path / name / "x.jpg")
    d = read_classification(tmp_path)
    assert d.class_set.key == "imagenet" and len(d.classnames) == 1000 and d.present == 2
    assert [d.classnames[i] for i in d.labels] == ["tench", "goldfish"]
    assert d.unknown == {"n09999999": 1} and "n09999999 (1 images)" in caplog.text
    assert "classified over all 1,000 ImageNet (ILSVRC-2012) classes" in d.describe()
    with pytest.raises(DatasetFormatError, match="not ImageNet .* classes, left out: n09999999"):
        read_classification(tmp_path, strict=True)


def test_cifar_names_by_the_same_mechanism(tmp_path):
    for name in ("cat", "ship"):
        jpeg(tmp_path / name / "x.jpg")
    own = read_classification(tmp_path)  # two folders named like CIFAR classes are still the user's own
    assert own.class_set is None and own.classnames == ["cat", "ship"]
    d = read_classification(tmp_path, classnames="cifar10")
    assert d.class_set.key == "cifar10" and len(d.classnames) == 10 and d.labels.tolist() == [3, 8]
    (tmp_path / "labels.csv").write_text("path,label\ncat/x.jpg,3\nship/x.jpg,8\n")
    numbered = read_classification(tmp_path / "labels.csv", classnames="cifar10")
    assert numbered.labels.tolist() == [3, 8]
    with pytest.raises(DatasetFormatError, match=r"labels are class numbers \(3\.\.8\) without names"):
        read_classification(tmp_path / "labels.csv")


def test_zeroshot_templates_follow_the_class_set(tmp_path):
    from xmodal.eval.zeroshot import load_templates

    jpeg(tmp_path / "cat" / "x.jpg")
    assert len(load_templates(None, read_classification(tmp_path, classnames="cifar10"))) == 18
    assert len(load_templates(None, read_classification(tmp_path))) == 80
    assert np.array_equal(read_classification(tmp_path).labels, [0])
