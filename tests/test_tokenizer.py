"""Token ids identical to transformers' tokenizers; cleaning, padding, truncation, windows, NLLB codes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import bert_chinese_tokenizer, clip_tokenizer
from xmodal.errors import InvalidArgumentError, ModelFormatError
from xmodal.models.config import TextCfg
from xmodal.models.tokenizer import TextTokenizer, clean_text, flores_code

pytest.importorskip("transformers")

TEXTS = [
    "A dog on a beach!",
    "two   cats\tsleeping\non a RED sofa",
    "一只狗在海滩上奔跑",
    "🐶🏖️ dog emoji party 🎉",
    "Mixed: Straße, café, 東京タワー, Привет мир, مرحبا",
    " ".join(["word"] * 200) + " END",
]


@pytest.fixture(scope="module")
def clip_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cliptok")
    ref = clip_tokenizer(folder / "vocab")
    ref.save_pretrained(str(folder))
    ours = TextTokenizer(folder / "tokenizer.json", TextCfg(context_length=77, pad_token="<|endoftext|>"))
    return ours, ref


def test_clip_known_ids(clip_pair):
    ours, _ = clip_pair
    ids = ours.encode(["A dog on a beach!"]).ids[0]
    assert ids[:8].tolist() == [49406, 320, 1929, 525, 320, 2117, 256, 49407]
    assert (ids[8:] == 49407).all() and ids.shape == (77,)


def test_clip_ids_match_transformers(clip_pair):
    ours, ref = clip_pair
    got = ours.encode(TEXTS)
    expected = ref([clean_text(t, "whitespace") for t in TEXTS], padding="max_length", max_length=77, truncation=True)
    assert got.ids.tolist() == expected["input_ids"]
    assert got.attention_mask.tolist() == expected["attention_mask"]
    long_row = got.ids[-1]
    assert long_row[0] == 49406 and long_row[-1] == 49407  # truncation keeps the end token


def test_whitespace_cleaning_does_not_change_clip_ids(clip_pair):
    ours, ref = clip_pair
    raw = "two   cats\tsleeping\non a RED sofa"
    assert ours.encode([raw]).ids[0].tolist() == ref(raw, padding="max_length", max_length=77)["input_ids"]


def test_bert_chinese_ids_match_transformers(tmp_path):
    ref = bert_chinese_tokenizer(tmp_path)
    ours = TextTokenizer(tmp_path / "tokenizer.json", TextCfg(context_length=12, pad_token="[PAD]"))
    texts = ["一只狗在海滩上奔跑", "A photo of 两只猫!", "我爱北京天安门 " * 5, "😀 unknown 字"]
    expected = ref(texts, padding="max_length", max_length=12, truncation=True)
    got = ours.encode(texts)
    assert got.ids.tolist() == expected["input_ids"]
    assert got.attention_mask.tolist() == expected["attention_mask"]


def test_clean_modes():
    assert clean_text("  A  dog,\n on_the beach!! ", "whitespace") == "A dog, on_the beach!!"
    assert clean_text("  A  dog,\n on_the beach!! ", "canonicalize") == "a dog on the beach"
    assert clean_text("A  Dog", "lower") == "a dog"
    assert clean_text(" a  b ", "none") == " a  b "


def test_long_text_windows_overlap_and_keep_special_tokens(clip_pair):
    ours, _ = clip_pair
    text = " ".join(f"w{i}" for i in range(150))
    windows = ours.encode_windows(text)
    assert len(windows) >= 3
    for row in windows.ids:
        assert row[0] == 49406 and 49407 in row
    first = [t for t in windows.ids[0] if t not in (49406, 49407)]
    second = [t for t in windows.ids[1] if t not in (49406, 49407)]
    assert first[-5:] == second[:5] or set(first[-10:]) & set(second[:10])  # they overlap
    assert len(ours.encode_windows("short text")) == 1


def test_flores_codes():
    assert flores_code(None) == "eng_Latn"
    assert flores_code("de") == "deu_Latn"
    assert flores_code("zh-TW") == "zho_Hant"
    assert flores_code("pt_BR") == "por_Latn"
    assert flores_code("deu_Latn") == "deu_Latn"
    with pytest.raises(InvalidArgumentError, match="language 'xx'"):
        flores_code("xx")


def test_nllb_tokenizer_gets_language_code(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "eng_Latn": 3, "deu_Latn": 4, "a": 5, "hund": 6, "dog": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["eng_Latn", "deu_Latn", "<pad>", "</s>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = TextTokenizer(tmp_path / "tokenizer.json", TextCfg(context_length=6, pad_token="<pad>"))
    assert ours.is_multilingual_nllb
    assert ours.encode(["a dog"]).ids[0].tolist() == [3, 5, 7, 0, 0, 0]
    assert ours.encode(["ein hund"], language="de").ids[0].tolist()[:3] == [4, 2, 6]


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(ModelFormatError, match="missing file"):
        TextTokenizer(tmp_path / "nope.json", TextCfg())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not a valid tokenizers file"):
        TextTokenizer(tmp_path / "bad.json", TextCfg())


def test_pad_token_must_exist(clip_pair, tmp_path):
    clip_pair[1].save_pretrained(str(tmp_path))
    with pytest.raises(ModelFormatError, match="pad token '<nope>' is not in the vocabulary"):
        TextTokenizer(tmp_path / "tokenizer.json", TextCfg(pad_token="<nope>"))


def test_ids_are_int64_and_padded(clip_pair):
    batch = clip_pair[0].encode(["a", "a much longer sentence here"])
    assert batch.ids.dtype == np.int64 and batch.ids.shape == (2, 77)
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 7]
