"""Builders for the models and tokenizers tests use: real tokenizers, random-init transformers
checkpoints of known geometry (no weights can be downloaded here)."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (public algorithm)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_files(folder: str) -> tuple[str, str]:
    """Write CLIP's vocab.json + merges.txt (49,408 tokens) from the shipped BPE file."""
    data = gzip.decompress((FIXTURES / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz").read_bytes()).decode()
    merges = [tuple(line.split()) for line in data.split("\n")[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return str(out / "vocab.json"), str(out / "merges.txt")


def clip_tokenizer(folder: Path):
    """A real transformers CLIPTokenizer (OpenAI vocabulary)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_files(str(folder))
    return CLIPTokenizer(vocab=vocab, merges=merges)


SIGLIP_CORPUS = [
    "a photo of a dog",
    "two cats on a red sofa",
    "a small red circle at the top left",
    "the quick brown fox jumps over the lazy dog",
    "a blue square moves to the right",
    "people walking on a beach at sunset",
    "a bowl of fruit on a wooden table",
]


def siglip_tokenizer(folder: Path):
    """A small SentencePiece-style (Unigram + Metaspace) tokenizer, '</s>' appended, pad '<pad>'."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(SIGLIP_CORPUS * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(folder))
    return fast


CHINESE_VOCAB_TEXT = "一只狗在海滩上奔跑两猫红色沙发小圆形左上角的照片人们日落时分走我爱北京天安门"


def bert_chinese_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer (Chinese characters split, as ChineseCLIP's)."""
    from transformers import BertTokenizer

    words = ["a", "photo", "of", "dog", "cat", "red", "the", "on", "##s", "beach"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(CHINESE_VOCAB_TEXT)), *words, "!", ",", "。"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab_file=str(folder / "vocab.txt"), tokenize_chinese_chars=True, do_lower_case=True)
    tok.save_pretrained(str(folder))
    return tok


TINY_TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


def tiny_vision(image_size: int = 64, patch: int = 16) -> dict:
    return dict(TINY_TOWER, image_size=image_size, patch_size=patch)


def tiny_text(vocab_size: int, max_positions: int, **extra) -> dict:
    return dict(TINY_TOWER, vocab_size=vocab_size, max_position_embeddings=max_positions, **extra)


def make_clip_checkpoint(folder: Path, *, full_geometry: bool = False, seed: int = 0) -> Path:
    """A random-init CLIPModel + real CLIP tokenizer + CLIPImageProcessor config, saved."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(seed)
    if full_geometry:
        config = CLIPConfig()  # ViT-B/32 text+vision geometry
    else:
        config = CLIPConfig(
            text_config=dict(TINY_TOWER),
            vision_config=tiny_vision(),
            projection_dim=32,
        )
    model = CLIPModel(config).eval()
    model.save_pretrained(str(folder))
    clip_tokenizer(folder / "_vocab").save_pretrained(str(folder))
    size = config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        str(folder)
    )
    return folder


def make_siglip_checkpoint(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    torch.manual_seed(seed)
    tok = siglip_tokenizer(folder)
    config = SiglipConfig(
        text_config=tiny_text(len(tok), 16, pad_token_id=0, eos_token_id=1),
        vision_config=tiny_vision(),
    )
    SiglipModel(config).eval().save_pretrained(str(folder))
    SiglipImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(str(folder))
    return folder


def make_chinese_clip_checkpoint(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import ChineseCLIPConfig, ChineseCLIPImageProcessorPil, ChineseCLIPModel

    torch.manual_seed(seed)
    tok = bert_chinese_tokenizer(folder)
    config = ChineseCLIPConfig(
        text_config=tiny_text(len(tok), 64),
        vision_config=tiny_vision(),
        projection_dim=32,
    )
    ChineseCLIPModel(config).eval().save_pretrained(str(folder))
    ChineseCLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(
        str(folder)
    )
    return folder
