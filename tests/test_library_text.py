"""One library for photos and documents, with the shipped model: synthetic shapes photos, caption
files and documents written from the photos' own annotations, and unrelated documents. A caption
finds its photo, a photo finds the document describing it, filters return only the asked types,
hits name the window that matched, and scores combine as documented."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xmodal.datasets.shapes import Shape, describe
from xmodal.datasets.synth_shapes import SynthConfig, generate_synth_shapes
from xmodal.library import Library

MODEL = "xmodal-tiny-shapes"
CAPTIONED = range(0, 20)  # photos with a caption file beside them
DESCRIBED = range(20, 40)  # photos a document in notes/ describes
JOURNAL = range(40, 50)  # photos one long document describes, a paragraph each
UNRELATED = {
    "shopping.md": "Shopping list: bread, milk, eggs, coffee. Call the plumber on Tuesday.",
    "recipe.txt": "Pancakes: mix flour, sugar and milk, rest for an hour, fry in butter.",
    "meeting.md": "# Meeting\n\nBudget review moved to Friday; bring the quarterly figures.",
}


def scene(record: dict) -> list[Shape]:
    return [Shape(s["color"], s["shape"], s["size"], tuple(s["cell"])) for s in record["shapes"]]


def written(record: dict, seed: int) -> str:
    """A description of the photo written from its annotation (not one of its captions)."""
    return describe(scene(record), np.random.default_rng([seed, record["imgid"]]))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mixed")
    generate_synth_shapes(root / "synth", SynthConfig(n=60, seed=5))
    records = json.loads((root / "synth" / "dataset_synth_shapes.json").read_text())["images"]
    photos, notes = root / "tree" / "photos", root / "tree" / "notes"
    photos.mkdir(parents=True)
    notes.mkdir()
    for r in records:
        shutil.copy(root / "synth" / "images" / r["filename"], photos / r["filename"])
    for i in CAPTIONED:
        (photos / (Path(records[i]["filename"]).stem + ".txt")).write_text(records[i]["sentences"][0]["raw"] + "\n")
    for i in DESCRIBED:
        (notes / f"photo-{i:02d}.md").write_text(f"{written(records[i], 1)}.\n")
    paragraphs = [written(records[i], 2) for i in JOURNAL]
    (notes / "journal.md").write_text("\n\n".join(paragraphs) + "\n")
    for name, text in UNRELATED.items():
        (notes / name).write_text(text)
    filler = list(UNRELATED.values()) * 2
    (notes / "diary.md").write_text("\n\n".join(filler + [written(records[55], 3)] + filler) + "\n")
    lib = Library(root / "lib")
    report = lib.index([root / "tree"], model=MODEL)
    assert report.failed == [] and report.added == 60 + 20 + 20 + 2 + 3
    yield lib, records, photos, notes, paragraphs
    lib.close()


def test_types_are_counted_and_windows_stored(mixed):
    lib, _, _, notes, paragraphs = mixed
    assert lib.status()["items"] == {"image": 60, "video": 0, "text": 45}
    journal = lib.catalog.item_by_path(str(notes / "journal.md"))
    segments = lib.catalog.segments(lib.catalog.models()[0].key, journal.content_hash)
    text = (notes / "journal.md").read_text()
    assert len(segments) >= 5 and segments[0].start == 0 and segments[-1].end == len(text.rstrip())
    assert all(" ".join(text[int(s.start) : int(s.end)].split()) == s.text for s in segments)
    (own,) = lib.catalog.embeddings.get_many(lib.catalog.models()[0].key, [journal.content_hash]).values()
    mean = np.mean([s.vector for s in segments], axis=0)
    np.testing.assert_allclose(own, mean / np.linalg.norm(mean), atol=1e-5)  # the document's vector: their mean
    assert journal.details["encoding"] == "utf-8" and journal.details["chars"] == len(text)


def test_a_caption_finds_its_photo(mixed):
    lib, records, photos, _, _ = mixed
    for i in CAPTIONED:
        caption = records[i]["sentences"][0]["raw"]
        (hit,) = lib.search(caption, k=1, type="image")  # the default: caption weight 0.5
        assert hit.path == str(photos / records[i]["filename"])
        assert hit.caption.path == str(photos / (Path(records[i]["filename"]).stem + ".txt"))
        assert hit.caption.score == pytest.approx(1.0, abs=1e-4)
        assert hit.score == pytest.approx(0.5 * hit.caption.scaled + 0.5 * hit.pixel_score)  # on the pixel scale
        (by_max,) = lib.search(caption, k=1, type="image", combine="max")
        assert by_max.path == hit.path and by_max.score == pytest.approx(max(hit.pixel_score, hit.caption.scaled))
    other_words = [
        str(photos / records[i]["filename"]) in {h.path for h in lib.search(written(records[i], 9), k=3, type="image")}
        for i in CAPTIONED
    ]
    assert np.mean(other_words) >= 0.8  # in other words, too


def test_a_photo_finds_the_document_describing_it(mixed):
    lib, records, photos, notes, _ = mixed
    found = []
    for i in DESCRIBED:
        hits = lib.search(image=photos / records[i]["filename"], k=3, type="text")
        assert {h.type for h in hits} == {"text"}
        found.append(str(notes / f"photo-{i:02d}.md") in {h.path for h in hits})
    assert np.mean(found) >= 0.7, found


def test_type_filters_return_only_the_asked_types(mixed):
    lib, *_ = mixed
    everything = lib.search("a red circle", k=500, min_score=-1)
    assert len(everything) == 105 and {h.type for h in everything} == {"image", "text"}
    images = lib.search("a red circle", k=500, min_score=-1, type="image")
    texts = lib.search("a red circle", k=500, min_score=-1, type=["text"])
    assert (len(images), {h.type for h in images}) == (60, {"image"})
    assert (len(texts), {h.type for h in texts}) == (45, {"text"})
    both = lib.search("a red circle", k=500, min_score=-1, type=["image", "text"])
    assert {h.item_id for h in both} == {h.item_id for h in everything}
    assert len(lib.search("a red circle", k=10, min_score=-1, type="video")) == 0


def test_text_to_text_and_the_matched_window(mixed):
    lib, records, _, notes, paragraphs = mixed
    key = lib.catalog.models()[0].key
    journal = lib.catalog.item_by_path(str(notes / "journal.md"))
    segments = lib.catalog.segments(key, journal.content_hash)
    found = []
    for n in range(len(JOURNAL)):
        hits = lib.search(paragraphs[n], k=3, type="text", moments=2, min_score=-1)
        found.append(any(h.item_id == journal.id for h in hits))
        (hit,) = lib.search(paragraphs[n], k=1, type="text", moments=2, min_score=-1, path_glob="*/journal.md")
        scores = np.stack([s.vector for s in segments]) @ lib.encoder().embed_texts([paragraphs[n]])[0]
        order = np.argsort(-scores, kind="stable")
        assert [(m.start, m.end, m.text) for m in hit.moments] == [
            (segments[i].start, segments[i].end, segments[i].text) for i in order[:2]
        ]  # the two best windows, best first, with their words
        assert [m.score for m in hit.moments] == pytest.approx(scores[order[:2]].tolist(), abs=1e-5)
        assert hit.to_dict()["snippet"] == hit.moments[0].text
    assert np.mean(found) >= 0.8
    text = (notes / "diary.md").read_text()
    shapes = written(records[55], 3)
    (diary,) = lib.search(written(records[55], 8), k=1, type="text", path_glob="*/diary.md", min_score=-1)
    start = text.index(shapes)
    best = diary.moments[0]
    assert best.start <= start + 5 and best.end >= start + len(shapes) - 5  # the window about the shapes
    assert " ".join(text[int(best.start) : int(best.end)].split()) == best.text
    unrelated = lib.search("pancakes with flour, sugar and milk", k=1, type="text")
    assert unrelated[0].path.endswith("recipe.txt")


def test_floors_per_modality_and_overrides(mixed):
    lib, records, *_ = mixed
    query = records[3]["sentences"][1]["raw"]
    results = lib.search(query, k=500)
    assert results.min_scores == {"image": 0.20, "video": 0.07, "text": 0.68}
    assert all(h.similarity >= 0.20 for h in results if h.type == "image")
    assert all(h.similarity >= 0.68 for h in results if h.type == "text")
    assert len(results) < 105  # unrelated items fall below their floor
    no_texts = lib.search(query, k=500, min_score={"text": 1.01})
    assert {h.type for h in no_texts} == {"image"}
    nothing = lib.search(query, k=5, min_score=1.01)
    assert nothing.no_good_match and nothing.best_score is not None


def test_pixel_and_caption_scores_combine_as_documented(mixed):
    lib, records, photos, _, _ = mixed
    query = records[1]["sentences"][2]["raw"]
    path = str(photos / records[1]["filename"])

    def of(combine):
        return next(h for h in lib.search(query, k=60, type="image", min_score=-1, combine=combine) if h.path == path)

    best, pixels, words, half = of("max"), of(0), of(1.0), of("0.5")
    assert best.score == pytest.approx(max(best.pixel_score, best.caption.scaled))
    assert pixels.score == pytest.approx(pixels.pixel_score)
    assert words.score == pytest.approx(words.caption.scaled)
    assert half.score == pytest.approx(0.5 * half.pixel_score + 0.5 * half.caption.scaled)
    assert best.caption.scaled < best.caption.score  # text -> text scores sit far above text -> image
    uncaptioned = str(photos / records[50]["filename"])
    plain = next(h for h in lib.search(query, k=60, type="image", min_score=-1, combine=1.0) if h.path == uncaptioned)
    assert plain.caption is None and plain.score == pytest.approx(plain.similarity)


def test_eval_library_measures_the_combinations(mixed, tmp_path: Path):
    from xmodal.eval.datasets import read_dataset
    from xmodal.eval.library import evaluate_caption_combinations

    lib, records, photos, _, _ = mixed
    captions = tmp_path / "captions.jsonl"
    lines = [
        {
            "path": str(photos / records[i]["filename"]),
            "captions": [written(records[i], 4), records[i]["sentences"][0]["raw"]],
        }
        for i in list(CAPTIONED) + list(range(50, 60))
    ]
    captions.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = evaluate_caption_combinations(lib, read_dataset(f"jsonl:{captions}"), ["0", "max", "0.5", "1"])
    assert (result.queries, result.left_out, result.photos, result.captioned) == (40, 20, 60, 20)
    metrics = dict(result.rows)
    assert set(metrics) == {"0", "max", "0.5", "1"}
    assert metrics["max"]["R@1"] >= metrics["0"]["R@1"]  # captions help
    assert "| max |" in result.markdown() and "20 queries left out" in result.markdown()


def test_caption_links_follow_the_files(mixed, tmp_path: Path):
    lib, records, photos, _, _ = mixed
    copy = tmp_path / "tree"
    shutil.copytree(photos, copy)
    stem = Path(records[0]["filename"]).stem
    with Library(tmp_path / "lib") as other:
        other.index([copy], model=MODEL)
        assert other.search(records[0]["sentences"][0]["raw"], k=1, type="image")[0].caption is not None
        (copy / f"{stem}.txt").rename(copy / f"{stem}.jpg.caption")  # the other naming: still its caption
        report = other.index(model=MODEL)
        assert (report.moved, report.encoded) == (1, 0)
        assert other.search(records[0]["sentences"][0]["raw"], k=1, type="image")[0].caption.path.endswith(".caption")
        (copy / f"{stem}.jpg.caption").unlink()
        other.index(model=MODEL)
        hit = next(h for h in other.search(records[0]["sentences"][0]["raw"], k=60, type="image") if stem in h.path)
        assert hit.caption is None


def test_eval_library_combine_command(mixed, tmp_path: Path):
    from typer.testing import CliRunner

    from xmodal.cli import app

    lib, records, photos, _, _ = mixed
    captions = tmp_path / "captions.jsonl"
    captions.write_text(
        "\n".join(
            json.dumps({"path": str(photos / records[i]["filename"]), "captions": [written(records[i], 6)]})
            for i in CAPTIONED
        )
        + "\n"
    )
    out = tmp_path / "out"
    args = ["eval", "--library", str(lib.folder), "--captions", str(captions), "--combine", "0", "--combine", "max"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "-q", "--no-cache"])
    assert result.exit_code == 0, result.output
    table = (out / "combinations.md").read_text()
    assert "20 queries over 60 photos (20 with a caption)" in table and "| 0 |" in table and "| max |" in table
    assert (out / "results.md").is_file()  # the library's own benchmark as before
