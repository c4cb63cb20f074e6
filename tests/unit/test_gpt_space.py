"""The gpt space and the text data sets: causal, exactly counted, next-byte examples split by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nasfleet.errors import NasfleetError
from nasfleet.orchestrator.config import DataConfig
from nasfleet.orchestrator.data import load_data, text_splits
from nasfleet.supernet import GPTSpace, GPTSpaceConfig, LayerChoice, TransformerArch, extract

SMALL = dict(image_size=8, head_dim=4, embed_dims=[8, 12], depths=[1, 2], heads=[1, 2], mlp_ratios=[1.0, 2.0])


@pytest.mark.parametrize("tied", [True, False])
def test_costs_match_torch_counters_and_parameters(tied: bool) -> None:
    space = GPTSpace(GPTSpaceConfig(**SMALL, tie_embeddings=tied))
    supernet = space.build_supernet()
    for arch in [space.smallest(), space.largest(), space.sample(np.random.default_rng(3))]:
        subnet = extract(supernet, space, arch)
        with FlopCounterMode(display=False) as counter:
            subnet(torch.randint(0, 256, (1, 1, 8)))
        assert counter.get_total_flops() == 2 * space.flops(arch)
        assert sum(p.numel() for p in subnet.parameters()) == space.params(arch)


def test_hand_count() -> None:
    space = GPTSpace(GPTSpaceConfig(**SMALL, num_classes=10))
    arch = TransformerArch(8, (LayerChoice(1, 2.0),), space="gpt")
    t, e, w, h, v = 8, 8, 4, 16, 10  # tokens, embed, attention width, MLP hidden, vocabulary
    assert space.flops(arch) == 3 * t * e * w + 2 * t * t * w + t * w * e + 2 * t * e * h + t * e * v
    layer = 2 * e + 3 * (e * w + w) + (w * e + e) + 2 * e + (e * h + h) + (h * e + e)
    assert space.params(arch) == v * e + t * e + layer + 2 * e  # tied: the output layer is the embedding


def test_a_token_sees_only_the_tokens_before_it() -> None:
    space = GPTSpace(GPTSpaceConfig(**SMALL))
    supernet, arch = space.build_supernet().eval(), space.largest()
    x = torch.randint(0, 256, (2, 1, 8), generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, 0, 5:] = (changed[:, 0, 5:] + 1) % 256
    with torch.no_grad():
        before, after = supernet(x, arch), supernet(changed, arch)
    assert before.shape == (2, 256, 8)
    assert torch.equal(before[:, :, :5], after[:, :, :5])
    assert not torch.allclose(before[:, :, 5:], after[:, :, 5:])


def test_text_examples_are_next_bytes_and_the_splits_do_not_overlap() -> None:
    corpus = np.frombuffer(bytes(range(256)) * 40, dtype=np.uint8)
    splits = text_splits(corpus, DataConfig(dataset="text", val_fraction=0.1, test_fraction=0.1), context=16)
    for part in (splits.train, splits.val, splits.test):
        assert part.images.shape[1:] == (1, 16) and part.labels.shape[1:] == (16,)
        assert torch.equal(part.images[:, 0, 1:], part.labels[:, :-1])  # labels are the inputs shifted by one
    # Positions: train first, then validation, then test; each example's bytes are consecutive.
    assert len(splits.train) == (int(len(corpus) * 0.8) - 1) // 16
    first_val = int(splits.val.images[0, 0, 0])
    assert first_val == int(len(corpus) * 0.8) % 256


def test_the_unigram_baseline_is_the_loss_of_predicting_bytes_by_their_training_frequency() -> None:
    # Training text 'ab' repeated: a and b each half the training bytes; held-out text all 'a'.
    corpus = np.frombuffer(b"ab" * 400 + b"a" * 200, dtype=np.uint8)
    splits = text_splits(corpus, DataConfig(dataset="text", val_fraction=0.1, test_fraction=0.1), context=8)
    counts = np.bincount(splits.train.labels.numpy().reshape(-1), minlength=256) + 1.0
    assert splits.unigram_nats("test") == pytest.approx(-np.log(counts[ord("a")] / counts.sum()))
    # It is the loss a model scores that ignores its input and outputs the training frequencies.
    test = splits.test
    logits = torch.log(torch.as_tensor(counts / counts.sum())).view(1, 256, 1).expand(len(test), 256, test.labels.shape[1])
    assert splits.unigram_nats("test") == pytest.approx(torch.nn.functional.cross_entropy(logits, test.labels).item())


def test_a_text_path_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"fine text\n" * 100)
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe broken")
    with pytest.raises(NasfleetError, match=r"b.txt is not UTF-8 text"):
        load_data(DataConfig(dataset="text", path=tmp_path))
    with pytest.raises(NasfleetError, match="dataset text needs data.path"):
        load_data(DataConfig(dataset="text"))
