"""Captioners and the captioning stage's library: what they write, what they never write, and lineage."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import held_out_phrasings, moving_square, write_video

from videodit.captioning import descriptive
from videodit.captioning.captioner import CaptioningConfig
from videodit.captioning.descriptive import SENTENCE_PATTERNS, WORDS, DescriptiveCaptioner, vocabulary_problems
from videodit.captioning.stage import build_captioner, caption_clips
from videodit.captioning.vision_language import ModelFolderError
from videodit.config import load_preset
from videodit.data.config import Bucket, CurationConfig, ProbeConfig, SourceConfig, SyntheticConfig, ValidationConfig
from videodit.data.curation import curate
from videodit.data.probe import DECODED_CLIPS_DIR, METADATA_FILE, probe_rows, write_metadata
from videodit.data.sources import collect_source, read_manifest, stage_source
from videodit.data.synthetic import SHAPES_DOMAIN, render_clip
from videodit.data.validation import validate_metadata

CLIP = SyntheticConfig(n_frames=9, height=32, width=32)


def _square(step: int, n: int = 9, side: int = 8) -> np.ndarray:
    """A white square starting in the top-left corner, moving right `step` px per frame on a 32×32 frame."""
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    for t in range(n):
        frames[t, 2 : 2 + side, 1 + step * t : 1 + step * t + side] = 255
    return frames


def test_descriptive_captions_say_what_the_pixels_show_in_varied_words():
    captioner = DescriptiveCaptioner(SHAPES_DOMAIN)
    rng = np.random.default_rng(0)
    clips = [(combo, render_clip(*combo, CLIP, rng)) for combo in SHAPES_DOMAIN.trained_combinations()]
    captions = [captioner.caption(frames, CLIP.fps) for _, frames in clips]
    for ((shape, colour, size, direction), _), caption in zip(clips, captions):
        for attribute, value in (("shape", shape), ("colour", colour), ("size", size), ("direction", direction)):
            assert any(word in caption for word in WORDS[attribute][value]), (caption, attribute, value)
    assert held_out_phrasings(captions, SHAPES_DOMAIN) == []
    assert len(set(captions)) == len(captions)  # 152 clips, no caption twice
    first_words = {caption.split(",")[0].split()[-1] for caption in captions}
    assert len(first_words) >= 10  # many sentence patterns are used, not one
    assert [captioner.caption(frames, CLIP.fps) for _, frames in clips[:5]] == captions[:5]  # seeded by the clip


def test_start_and_speed_are_read_from_the_track():
    captioner = DescriptiveCaptioner(SHAPES_DOMAIN)
    # 8 px of 32 in 1 s (0.25 frame sides per second), and 16 px in 0.5 s (1 side per second)
    slow, fast = captioner.caption(_square(step=1), fps=8), captioner.caption(_square(step=2), fps=16)
    assert "top left" in slow and "top left" in fast
    assert any(w in slow for w in WORDS["speed"]["slow"]) and not any(w in slow for w in WORDS["speed"]["fast"])
    assert any(w in fast for w in WORDS["speed"]["fast"])
    assert captioner.caption(np.zeros((9, 32, 32, 3), np.uint8), fps=8) is None  # nothing to describe


def test_the_vocabulary_is_large_enough_and_holds_nothing_held_out(monkeypatch):
    assert len(SENTENCE_PATTERNS) >= 20 and len(set(SENTENCE_PATTERNS)) == len(SENTENCE_PATTERNS)
    for attribute, values in WORDS.items():
        for value, words in values.items():
            assert len(set(words)) >= 3, (attribute, value)
    assert vocabulary_problems(SHAPES_DOMAIN) == []
    trained = {word: value for word, value in SHAPES_DOMAIN.synonyms.items() if word != "ruby"}
    leaky = dataclasses.replace(SHAPES_DOMAIN, synonyms=trained, held_out_synonyms={**SHAPES_DOMAIN.held_out_synonyms, "ruby": "red"})
    with pytest.raises(ValueError, match=r"held-out synonyms in the vocabulary: \['ruby'\]"):
        DescriptiveCaptioner(leaky)
    template = dataclasses.replace(SHAPES_DOMAIN, held_out_templates=("a {size} {colour} {shape} advances {direction} {speed}, {start}",))
    assert vocabulary_problems(template) == [f"sentence patterns in a held-out template: {[SENTENCE_PATTERNS[20]]}"]
    version = descriptive.vocabulary_version()
    monkeypatch.setattr(descriptive, "SENTENCE_PATTERNS", SENTENCE_PATTERNS[:-1])
    assert descriptive.vocabulary_version() != version  # another vocabulary, another captioner version


def test_the_config_refuses_combinations_that_cannot_caption():
    tiny = load_preset("tiny")
    with pytest.raises(ValueError, match=r"captioning.captioner='vision_language' needs captioning.model_dir"):
        tiny.with_overrides({"captioning": {"captioner": "vision_language"}})
    with pytest.raises(ValueError, match=r"captioning.train_on='generated' needs a captioning.captioner"):
        tiny.with_overrides({"captioning": {"train_on": "generated"}})
    with pytest.raises(ValueError, match=r"captioner='blip' is not one of none, descriptive, vision_language"):
        CaptioningConfig(captioner="blip")


class _DarkBlind:
    """A captioner that cannot describe clips without a red pixel."""

    name, version = "dark-blind", "7"

    def caption(self, frames, fps):
        return "something red" if (frames[..., 0] > 128).any() else None


def test_uncaptioned_clips_are_captioned_with_lineage_when_a_captioner_is_configured(tmp_path):
    """From the source listing to the shards: with a captioner, a video without a caption row is ingested,
    validated, captioned and trains on its generated caption; every caption keeps its lineage."""
    src, data_dir, metadata_dir = tmp_path / "src", tmp_path / "data", tmp_path / "video_metadata"
    write_video(src / "red.mp4", moving_square(12, height=32, width=32, step=1))
    write_video(src / "blue.mp4", moving_square(12, height=32, width=32, colour=(0, 0, 255), step=1))
    pd.DataFrame([("red.mp4", "the user's red square")], columns=["path", "caption"]).to_csv(src / "captions.csv", index=False)
    curation = CurationConfig(fps=8, n_frames=9, height=32, width=32, buckets=(Bucket(32, 32, 9),))
    clips = collect_source(src, src / "captions.csv", SourceConfig(captions_required=False))
    assert [(c.path, c.caption, c.problem) for c in clips] == [("blue.mp4", None, None), ("red.mp4", "the user's red square", None)]
    stage_source(clips, src, data_dir)
    write_metadata(probe_rows(data_dir, read_manifest(data_dir), ProbeConfig(), curation, progress=False), metadata_dir, curation)
    metadata = pd.read_parquet(metadata_dir / METADATA_FILE)
    outcome = validate_metadata(metadata, tmp_path / "gx", ValidationConfig(), curation, captions_required=False)
    assert sorted(outcome.accepted["path"]) == ["blue.mp4", "red.mp4"]

    decoded = metadata_dir / DECODED_CLIPS_DIR
    config = CaptioningConfig(captioner="descriptive", train_on="user")
    captions, rejects = caption_clips(outcome.accepted, decoded, curation.fps, config, build_captioner(config, SHAPES_DOMAIN), progress=False)
    by_path = captions.set_index("path")
    assert rejects.empty and list(by_path["caption_source"]) == ["generated", "user"]  # blue has no user caption
    assert by_path.loc["red.mp4", "trained_caption"] == "the user's red square"
    assert any(word in by_path.loc["blue.mp4", "trained_caption"] for word in WORDS["colour"]["blue"])
    assert set(captions["captioner"]) == {"descriptive"} and set(captions["captioner_version"]) == {descriptive.vocabulary_version()}
    index = curate(outcome.accepted, decoded, tmp_path / "shards", curation, captions, progress=False)
    assert list(index.sort_values("path")["caption"]) == list(by_path["trained_caption"])
    assert list(index.sort_values("path")["caption_source"]) == ["generated", "user"]

    # A captioner that cannot describe the blue clip: it has no caption at all and is rejected with the reason; the
    # red one trains on the generated caption it asked for. Without a captioner the blue one is rejected too.
    generated = dataclasses.replace(config, train_on="generated")
    captions, rejects = caption_clips(outcome.accepted, decoded, curation.fps, generated, _DarkBlind(), progress=False)
    assert list(captions[["path", "trained_caption", "caption_source", "captioner"]].itertuples(index=False, name=None)) == [
        ("red.mp4", "something red", "generated", "dark-blind")]
    assert rejects.to_dict("records") == [{"path": "blue.mp4", "window": 0, "reason": "no user caption and the dark-blind captioner could not describe window 0"}]
    index = curate(outcome.accepted, decoded, tmp_path / "rejected", curation, captions, progress=False)
    assert list(index["path"]) == ["red.mp4"]
    _, rejects = caption_clips(outcome.accepted, decoded, curation.fps, CaptioningConfig(), None, progress=False)
    assert rejects["reason"].tolist() == ["no user caption and no captioner configured (captioning.captioner)"]


def _tiny_blip(folder):
    """A randomly initialised BLIP of a few kilobytes, built from its config, that greedily writes "red"."""
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "square", "moves"]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, bos_token="[DEC]")
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=64, bos_token_id=5, sep_token_id=3, pad_token_id=0,
                         eos_token_id=3, **tiny),
        vision_config=dict(image_size=32, patch_size=16, **tiny), projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():  # the output layer's bias makes "red" every next token: a caption the test can predict
        model.text_decoder.cls.predictions.bias[vocab.index("red")] = 100.0
    model.save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer).save_pretrained(folder)


def test_a_tiny_vision_language_captioner_runs_offline(tmp_path, no_network):
    _tiny_blip(tmp_path / "blip")
    config = CaptioningConfig(captioner="vision_language", model_dir=str(tmp_path / "blip"))
    captioner = build_captioner(config, SHAPES_DOMAIN)
    caption = captioner.caption(_square(step=2), fps=8)
    assert caption.split()[:3] == ["red", "red", "red"]
    assert captioner.name == "vision_language:BlipForConditionalGeneration" and len(captioner.version) == 12
    assert build_captioner(config, SHAPES_DOMAIN).version == captioner.version  # the folder's hash, stable
    with pytest.raises(ModelFolderError, match=f"captioning.model_dir {tmp_path / 'missing'} is not a folder"):
        build_captioner(dataclasses.replace(config, model_dir=str(tmp_path / "missing")), SHAPES_DOMAIN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match=f"captioning.model_dir {tmp_path / 'empty'} holds no image-to-text model"):
        build_captioner(dataclasses.replace(config, model_dir=str(tmp_path / "empty")), SHAPES_DOMAIN)
