"""Corpus, BPTT batching on real PTB, and the download path over a real loopback HTTP server."""

from __future__ import annotations

import codecs
import functools
import hashlib
import http.server
import logging
import math
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.trainer.connectors.data_connector import _parse_num_batches
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from helpers import TINY, compose_config, run
from rnnreg.command_line import validate_args
from rnnreg.data import (
    SPLITS,
    BPTTWindows,
    Corpus,
    DataError,
    LMDataModule,
    batchify,
    ensure_files,
    limit_batches,
    read_words,
    sha256_of,
    smallest_fraction,
)
from rnnreg.errors import ConfigError
from rnnreg.train import train

PTB_FILES = {s: {"name": f"ptb.{s}.txt"} for s in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def ptb(ptb_dir: Path) -> Corpus:
    return Corpus(ensure_files(ptb_dir, PTB_FILES))


def test_ptb_corpus_sizes(ptb: Corpus):
    assert len(ptb) == 10_000
    assert {s: ids.numel() for s, ids in ptb.ids.items()} == {"train": 929_589, "valid": 73_760, "test": 82_430}
    assert ptb.itos[ptb.ids["train"][-1]] == "<eos>"


def test_a_splits_fingerprint_is_the_sha256_of_its_token_ids_and_changes_with_its_words_or_their_order(
    ptb: Corpus, tmp_path: Path
):
    """Corpus.fingerprints (what a checkpoint records as data_fingerprint): each split's sha256 of its ids, the same
    for the same words however they are spaced, another where a word or the order of two changed; PTB's in well under
    a second."""
    start = time.perf_counter()
    fingerprints = ptb.fingerprints()
    assert time.perf_counter() - start < 1.0
    assert (
        fingerprints["train"]
        == hashlib.sha256(struct.pack(f"<{ptb.ids['train'].numel()}q", *ptb.ids["train"].tolist())).hexdigest()
    )
    texts = {"train": "a b c\nc b a\n", "valid": "a b\nc\n", "test": "c a b\n"}
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text)
    paths = {split: tmp_path / f"{split}.txt" for split in SPLITS}
    before = Corpus(paths).fingerprints()
    assert len(set(before.values())) == 3
    (tmp_path / "valid.txt").write_text("a  b\t\nc\n")  # other spacing, the same words
    assert Corpus(paths).fingerprints() == before
    for edited in ("b a\nc\n", "a b\nc\na\n", "a b\n"):  # two words swapped, a word added, a line gone
        (tmp_path / "valid.txt").write_text(edited)
        after = Corpus(paths).fingerprints()
        assert after["valid"] != before["valid"] and (after["train"], after["test"]) == (
            before["train"],
            before["test"],
        )


@pytest.mark.parametrize("bptt,windows", [(20, 2323), (35, 1327)])
def test_ptb_train_windows_per_epoch(ptb: Corpus, bptt: int, windows: int):
    train = BPTTWindows(batchify(ptb.ids["train"], 20), bptt, drop_last=True)
    assert len(train) == windows
    x, y = train[len(train) - 1]
    assert x.shape == y.shape == (bptt, 20)


def test_batching_layout_is_contiguous_streams_walked_in_order(ptb: Corpus):
    ids = ptb.ids["train"]
    streams = batchify(ids, 20)
    steps = ids.numel() // 20
    assert streams.shape == (steps, 20)
    for col in (0, 7, 19):  # column j is the j-th contiguous slice of the token stream
        assert torch.equal(streams[:, col], ids[col * steps : (col + 1) * steps])
    windows = BPTTWindows(streams, 35, drop_last=True)
    x0, y0 = windows[0]
    x1, _ = windows[1]
    assert torch.equal(y0[:-1], x0[1:]) and torch.equal(y0[-1], x1[0])  # target = next token, no gap
    assert torch.equal(torch.cat([windows[i][0] for i in range(3)]), streams[:105])


@pytest.mark.parametrize("rows,lengths", [(21, [10, 10]), (22, [10, 10, 1]), (12, [10, 1]), (2, [1])])
def test_evaluation_windows_cover_the_predictions_without_an_empty_one(rows, lengths):
    """Evaluation keeps the last partial window: rows - 1 predictions in windows of bptt 10, none empty."""
    windows = BPTTWindows(torch.arange(rows).view(rows, 1), 10, drop_last=False)
    assert [windows[i][1].size(0) for i in range(len(windows))] == lengths
    assert torch.equal(torch.cat([windows[i][1] for i in range(len(windows))]).flatten(), torch.arange(1, rows))


@pytest.mark.parametrize(
    "rows,training,evaluation",
    [
        (31, 3, [10, 10, 10]),  # 30 predictions: the last training window ends where the data ends
        (32, 3, [10, 10, 10, 1]),  # one prediction left over: dropped in training, a window of 1 in evaluation
        (40, 3, [10, 10, 10, 9]),  # rows a multiple of bptt: still 3 full windows (39 predictions)
        (41, 4, [10, 10, 10, 10]),
    ],
)
def test_training_windows_are_all_bptt_long_and_evaluation_ends_with_a_shorter_one(rows, training, evaluation):
    """BPTTWindows over 3 streams, bptt 10. Training (drop_last): every window exactly bptt long in x and in y, y
    the rows after x's, the windows tiling the streams from the first row with the partial one dropped. Evaluation:
    the same windows and a shorter last one, whose x and y are as long and whose y ends at the last row."""
    streams = torch.arange(rows * 3).view(rows, 3)
    train = BPTTWindows(streams, 10, drop_last=True)
    assert len(train) == training
    for i in range(training):
        x, y = train[i]
        assert x.shape == y.shape == (10, 3), i
        assert torch.equal(x, streams[10 * i : 10 * i + 10]) and torch.equal(y, streams[10 * i + 1 : 10 * i + 11]), i
    _, last_y = train[training - 1]
    assert torch.equal(last_y[-1], streams[10 * training])  # rows 1..10 x training predicted (31, 41: all of them)
    valid = BPTTWindows(streams, 10, drop_last=False)
    assert [valid[i][0].size(0) for i in range(len(valid))] == [valid[i][1].size(0) for i in range(len(valid))]
    assert [valid[i][1].size(0) for i in range(len(valid))] == evaluation
    x, y = valid[len(valid) - 1]
    assert torch.equal(y, streams[rows - evaluation[-1] :]) and torch.equal(x, streams[rows - evaluation[-1] - 1 : -1])


def test_eval_windows_predict_every_token_once(ptb: Corpus):
    one_stream = BPTTWindows(batchify(ptb.ids["test"], 1), 35, drop_last=False)
    assert sum(one_stream[i][1].numel() for i in range(len(one_stream))) == 82_429
    valid = BPTTWindows(batchify(ptb.ids["valid"], 20), 35, drop_last=False)
    assert sum(valid[i][1].numel() for i in range(len(valid))) == (73_760 // 20 - 1) * 20


def test_datamodule_test_loaders_are_one_stream_then_batched(ptb_dir: Path, tmp_path: Path):
    cfg = compose_config(["experiment=paper_medium"], tmp_path)
    dm = instantiate(cfg.data)
    stream, batched = dm.test_dataloader()
    assert next(iter(stream))[0].shape == (200, 1)  # evaluation windows: data.eval_bptt steps
    assert next(iter(batched))[0].shape == (200, 20)
    assert next(iter(dm.train_dataloader()))[0].shape == (35, 20)
    assert len(dm.train_dataloader()) == 1327


def test_evaluation_loaders_walk_windows_of_eval_bptt_and_training_of_bptt(tiny_cfg):
    """Training windows are data.bptt=5 long (the partial last one dropped); validation and both test loaders
    cut data.eval_bptt=7, ending with the shorter rest, so every token after the first is predicted once."""
    cfg = tiny_cfg("data.eval_bptt=7")
    dm = instantiate(cfg.data)
    ids = dm.load().ids
    train_rows = ids["train"].numel() // 4
    assert [x.size(0) for x, _ in dm.train_dataloader()] == [5] * ((train_rows - 1) // 5)
    one_stream, batched = dm.test_dataloader()
    for split, streams, loader in [("valid", 4, dm.val_dataloader()), ("test", 1, one_stream), ("test", 4, batched)]:
        predictions = ids[split].numel() // streams - 1
        assert predictions % 7, (split, streams)  # the split ends in a shorter window
        lengths = [x.size(0) for x, _ in loader]
        assert lengths == [7] * (predictions // 7) + [predictions % 7], (split, streams)


@pytest.mark.parametrize(
    "files, sizes, says",
    [
        ({"train": "train.txt"}, {}, r"^data.files\['train'\]='train.txt' must be a mapping \{'name': <file name>\}"),
        ({"train": {"name": "train.txt"}}, {}, r"^data.files has no valid split: add 'valid': \{'name': <its file"),
        (
            None,
            {"batch_size": "4"},
            r"^data.batch_size='4' must be an integer >= 1 \(parallel streams; the paper's: 20\)$",
        ),
        (
            None,
            {"bptt": 5.0},
            r"^data.bptt=5.0 must be an integer >= 1 \(unroll length; the paper's: 20 \(small\), 35 ",
        ),
        # each size alone by the config's rule (before: three keys named together for any one's fault)
        (None, {"test_batch_size": 0}, r"^data.test_batch_size=0 must be an integer >= 1 \(1 is the paper's test "),
        (
            None,
            {"batch_size": -1},
            r"^data.batch_size=-1 must be an integer >= 1 \(parallel streams; the paper's: 20\)$",
        ),
        # what the config's rules catch and the hand-written checks let through (before: accepted)
        (
            {"sha265": "ab"},
            {},
            r"^data.files\['train'\] has a key 'sha265': its keys are 'name', 'sha256': did you mean ",
        ),
        ({"tarin": {"name": "a"}}, {}, r"^data.files has a split 'tarin': the splits are train, valid, test: did you "),
        ({"name": ""}, {}, r"^data.files\['train'\]\['name'\]='' must be a non-empty string$"),
        (
            {"sha256": ""},
            {},
            r"^data.files\['train'\]\['sha256'\]='' must be a sha256 sum of 64 hexadecimal digits or null \(the file's",
        ),
        (  # (before: taken, and every file refused as a checksum mismatch, with advice to delete it)
            {"sha256": "abc"},
            {},
            r"^data.files\['train'\]\['sha256'\]='abc' must be a sha256 sum of 64 hexadecimal digits or null \(the",
        ),
        (None, {"url_base": ["http://a"]}, r"^data.url_base=\['http://a'\] must be a non-empty string or null \(where"),
        (None, {"data_dir": ""}, r"^data.data_dir='' must be a non-empty string \(the folder holding the train/valid"),
    ],
)
def test_a_library_users_datamodule_arguments_are_one_line_each(tiny_corpus, files, sizes, says):
    """LMDataModule built by hand (rnnreg.LMDataModule): a file given by its bare name or a split left out, a size
    not an integer, is one DataError (before: a TypeError, a KeyError, or a float's error at the first window); each
    key by the rule rnnreg-train's config is checked with (rnnreg.schema.Data), in the same words. A misspelt
    sha256 left the file unchecked, unsaid; an extra split was ignored; an empty name read the folder as the file."""
    plain = {split: {"name": f"{split}.txt"} for split in ("train", "valid", "test")}
    if files and ("sha265" in files or "name" in files or "sha256" in files):
        files = {split: spec | files for split, spec in plain.items()}  # (a key of each split's)
    elif files and "tarin" in files:
        files = plain | files
    arguments = {"data_dir": str(tiny_corpus), "files": files or plain, "batch_size": 4, "bptt": 5} | sizes
    with pytest.raises(DataError, match=says):
        LMDataModule(**arguments)


def test_a_library_users_datamodule_takes_what_the_config_takes(tiny_corpus):
    """A Path for the folder, a numpy integer for a size (a sweep's np.arange), a number for a file's name (as a Hydra
    override reads `data.files.train.name=2024`): taken as the config takes them, each read as the text it names."""
    import numpy as np

    (tiny_corpus / "2024").write_bytes((tiny_corpus / "train.txt").read_bytes())
    files = {"train": {"name": 2024}, "valid": {"name": "valid.txt"}, "test": {"name": "test.txt", "sha256": None}}
    data = LMDataModule(tiny_corpus, files, batch_size=np.int64(4), bptt=np.int32(5))
    assert data.vocab_size == 42 and data.batch_size == 4 and data.files["train"] == {"name": "2024"}


def test_an_evaluation_window_of_no_steps_is_refused_not_read_as_the_training_windows(tiny_corpus):
    """LMDataModule(eval_bptt=0) by hand (the config refuses it): before, 0 was read as None (data.bptt) and a
    negative one failed in Python's len()."""
    files = {split: {"name": f"{split}.txt"} for split in ("train", "valid", "test")}
    for eval_bptt in (0, -5):
        with pytest.raises(DataError, match=rf"^data.eval_bptt={eval_bptt} must be an integer >= 1, or None for data"):
            LMDataModule(str(tiny_corpus), files, batch_size=4, bptt=5, eval_bptt=eval_bptt)


def test_a_trainer_that_would_deal_the_windows_out_again_across_ranks_is_refused(tiny_cfg):
    """Each DDP rank takes its own streams; Lightning's distributed sampler (on unless a Trainer turns it off, as
    conf/trainer does) would give each rank every other window of them, the carried state skipping one: a library
    user's own Trainer(devices=2) is told to turn it off, not trained on half the windows out of order."""
    import lightning as L

    dm = instantiate(tiny_cfg().data)
    for use_distributed_sampler in (True, False):
        dm.trainer = L.Trainer(
            accelerator="cpu", devices=2, logger=False, use_distributed_sampler=use_distributed_sampler
        )
        if use_distributed_sampler:
            with pytest.raises(ConfigError, match=r"pass lightning.Trainer\(use_distributed_sampler=False\)$"):
                dm.train_dataloader()
        else:
            assert next(iter(dm.train_dataloader()))[0].shape == (5, 2)  # this rank's 2 of the 4 streams


def test_a_resumed_epoch_starts_at_its_window_and_every_later_pass_at_the_first(tiny_cfg):
    """rnnreg.resume sets resume_window from a checkpoint stopped after 3 windows: the loader's first pass walks
    windows 3.. to the end, each later pass (the next epochs, same loader) all of them from window 0."""
    cfg = tiny_cfg()
    dm = instantiate(cfg.data)
    windows = [x for x, _ in dm.train_dataloader()]
    dm.resume_window = 3
    loader = dm.train_dataloader()
    # the whole epoch's count: Lightning goes on counting from the saved window and ends the epoch at len()
    assert len(loader) == len(windows)
    first, second, third = ([x for x, _ in loader] for _ in range(3))
    assert len(first) == len(windows) - 3 and all(map(torch.equal, first, windows[3:]))
    for later in (second, third):
        assert len(later) == len(windows) and all(map(torch.equal, later, windows))
    # consumed: a loader built again (reload_dataloaders_every_n_epochs) starts at window 0 too
    assert torch.equal(next(iter(dm.train_dataloader()))[0], windows[0])


def test_a_train_fraction_that_leaves_no_window_counts_the_windows_training_walks(tiny_cfg):
    """trainer.limit_train_batches=0.001 of 69 windows is none: refused in one line counting the windows the
    training loader walks (drop_last, data.bptt=6; not the 70 evaluation would cut, nor eval_bptt=7's 60),
    with the smallest fraction that keeps one; that fraction passes."""
    cfg = tiny_cfg("trainer.limit_train_batches=0.001", "data.bptt=6", "data.eval_bptt=7")
    dm = instantiate(cfg.data)
    walked = sum(1 for _ in dm.train_dataloader())
    assert walked == 69
    with pytest.raises(ConfigError) as refused:
        dm.check_limits(cfg.trainer)
    assert str(refused.value) == (
        "trainer.limit_train_batches=0.001 leaves the train split none of its 69 windows (data.batch_size=4 "
        "streams of 6 steps): set trainer.limit_train_batches to a fraction of at least 0.0145 (1.0: the whole "
        "split) or a whole number of windows (e.g. trainer.limit_train_batches=1)"
    )
    # 0.9936 of a window: none, as Lightning truncates it, though it rounds to 1
    with pytest.raises(
        ConfigError, match=r"^trainer.limit_train_batches=0.0144 leaves the train split none of its 69 "
    ):
        dm.check_limits({"limit_train_batches": 0.0144})
    dm.check_limits({"limit_train_batches": 0.0145})
    dm.check_limits({"limit_train_batches": 1})


def test_an_overfit_fraction_that_leaves_a_split_no_window_names_overfit_batches(tiny_cfg):
    """+trainer.overfit_batches=0.1, which Lightning takes as the train and the valid split's limit both, on a valid
    split of one window (before: Lightning's traceback, exit 1, asking to increase limit_val_batches, a key never
    set): one line naming overfit_batches, with a fraction that keeps a window of both splits, or a count; both
    pass, and the limit_*_batches overfit_batches replaces are not checked."""
    cfg = tiny_cfg("+trainer.overfit_batches=0.1", "data.eval_bptt=200")  # the valid split's streams in one window
    dm = instantiate(cfg.data)
    assert sum(1 for _ in dm.val_dataloader()) == 1
    with pytest.raises(ConfigError) as refused:
        dm.check_limits(cfg.trainer)
    assert str(refused.value) == (
        "trainer.overfit_batches=0.1 leaves the valid split none of its 1 window (data.batch_size=4 streams of 200 "
        "steps), and it limits the train and the valid split both: set trainer.overfit_batches=1.0 (a fraction: the "
        "whole splits) or a whole number of windows (e.g. trainer.overfit_batches=1)"
    )
    with pytest.raises(ConfigError, match=r"^trainer.overfit_batches=0.001 leaves the train split none of its 83 "):
        dm.check_limits({"overfit_batches": 0.001, "limit_val_batches": 1.0})
    for overfit in (1.0, 1):
        dm.check_limits({"overfit_batches": overfit, "limit_val_batches": 0.01, "limit_train_batches": 0.001})


@pytest.mark.parametrize("count", [1, 2, 3, 7, 10, 11, 100, 168, 1327, 2323])
def test_limit_batches_counts_as_lightning_does_and_the_smallest_fraction_is_the_smallest(count):
    """limit_batches gives Lightning's own count (_parse_num_batches: min for a count, int() of the product for a
    fraction, which Lightning refuses where it is 0); smallest_fraction keeps one window and one step less in its
    third significant digit keeps none."""

    def lightning(limit) -> int:
        try:
            return _parse_num_batches(RunningStage.TRAINING, count, limit)
        except MisconfigurationException:  # a fraction that leaves no batch
            return 0

    limits = [None, 1, 2, 5, 200, 5000, 1.0, 0.5, 0.15, 0.29, 0.333, 0.1, 0.01, 0.001, 1e-6]
    for limit in limits:
        expected = count if limit is None else lightning(limit)
        assert limit_batches(count, limit) == expected, limit
    assert limit_batches(10, 0.15) == 1 and limit_batches(100, 0.29) == 28  # truncated as Lightning does, not rounded
    fraction = smallest_fraction(count)
    assert float(f"{fraction:.3g}") == fraction and fraction * count >= 1
    assert limit_batches(count, fraction) == lightning(fraction) == 1
    smaller = fraction - 10 ** (math.floor(math.log10(fraction)) - 2)
    assert limit_batches(count, smaller) == lightning(smaller) == 0, smaller


@pytest.mark.parametrize("split", ["valid", "test"])
def test_unknown_words_without_unk_are_counted_each_time_and_named_once(tmp_path: Path, split):
    """Without <unk> in train, a word of valid or test missing from the training vocabulary is an error counting
    every occurrence (4: z three times, y once) and naming each such word once, in first-seen order."""
    files = {s: {"name": f"{s}.txt"} for s in SPLITS}
    (tmp_path / "train.txt").write_text("a b\nb c\n")
    for other in SPLITS[1:]:
        (tmp_path / f"{other}.txt").write_text("a z y\nz b z\n" if other == split else "c a\n")
    with pytest.raises(DataError) as refused:
        Corpus(ensure_files(tmp_path, files))
    assert str(refused.value) == (
        f"{tmp_path / f'{split}.txt'} has 4 words not in the training vocabulary (e.g. z, y) and the corpus has "
        f"no <unk> token: add <unk> to train or map rare words to it"
    )


def test_vocabulary_from_train_and_unknown_words(tmp_path: Path):
    (tmp_path / "train.txt").write_text("a b <unk>\nb c\n")
    (tmp_path / "valid.txt").write_text("a z\n")
    (tmp_path / "test.txt").write_text("c\n")
    files = {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}
    corpus = Corpus(ensure_files(tmp_path, files))
    assert corpus.itos == ["a", "b", "<unk>", "<eos>", "c"]
    assert corpus.ids["valid"].tolist() == [0, 2, 3]  # z -> <unk>
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(DataError, match=r"valid.txt has 1 word not in the training vocabulary \(e.g. z\)"):
        Corpus(ensure_files(tmp_path, files))


def test_lines_end_at_newlines_only_and_a_byte_order_mark_is_no_word(tmp_path: Path):
    """As PyTorch's word_language_model reads a file: \r\n is a newline; a form feed, \x85, U+2028 or a lone
    \r inside a line separates words, not lines (str.splitlines would add an <eos> at each)."""
    (tmp_path / "train.txt").write_bytes("\ufeffa b\x0cc\r\nd\u2028e\x85f\rg\x1ch\n".encode())
    for split in ("valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a\n")
    files = {s: {"name": f"{s}.txt"} for s in ("train", "valid", "test")}
    corpus = Corpus(ensure_files(tmp_path, files))
    assert corpus.itos == ["a", "b", "c", "<eos>", "d", "e", "f", "g", "h"]
    assert corpus.ids["train"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 3]


def test_a_folder_where_a_file_belongs_is_one_clear_error(pinned_files, tmp_path: Path):
    cache = tmp_path / "cache"
    (cache / "ptb.valid.txt").mkdir(parents=True)
    with pytest.raises(DataError, match=r"ptb.valid.txt is not a file \(a folder\?\): the valid split must be"):
        ensure_files(cache, pinned_files, "http://127.0.0.1:9")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"^data.data_dir=\S*file is a file, not a folder: .*ptb.train.txt"):
        ensure_files(tmp_path / "file", pinned_files, "http://127.0.0.1:9")


# -- download path over a real HTTP server on loopback ---------------------------------------------------


@pytest.fixture
def http_root(tmp_path: Path):
    """Serve a folder over HTTP on 127.0.0.1; yields (folder, base url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def pinned_files(ptb_config) -> dict:
    """The split files with the sha256 sums pinned in conf/data/ptb.yaml."""
    return ptb_config.files


def test_download_verifies_and_caches(http_root, ptb_dir: Path, pinned_files, tmp_path: Path):
    root, url = http_root
    for f in ptb_dir.glob("ptb.*.txt"):
        (root / f.name).write_bytes(f.read_bytes())
    cache = tmp_path / "cache"
    paths = ensure_files(cache, pinned_files, url)
    assert all(p.read_bytes() == (ptb_dir / p.name).read_bytes() for p in paths.values())
    assert sorted(p.name for p in cache.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    for f in root.iterdir():  # cached: a second call needs no server files
        f.unlink()
    assert ensure_files(cache, pinned_files, url) == paths


@pytest.mark.parametrize("split", SPLITS)
def test_download_checksum_mismatch_keeps_nothing(http_root, ptb_dir: Path, pinned_files, tmp_path: Path, split):
    """Every split's download is checked against its pinned sum (the splits download in order)."""
    root, url = http_root
    for f in ptb_dir.glob("ptb.*.txt"):
        (root / f.name).write_bytes(f.read_bytes())
    (root / f"ptb.{split}.txt").write_bytes(b"tampered\n")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"checksum mismatch for ptb.{split}.txt .*not used"):
        ensure_files(cache, pinned_files, url)
    before = [f"ptb.{s}.txt" for s in SPLITS[: SPLITS.index(split)]]
    assert sorted(p.name for p in cache.iterdir()) == sorted(before)  # no partial or bad file left


def test_offline_error_names_urls_and_folder(pinned_files, tmp_path: Path):
    cache = tmp_path / "cache"
    url = "http://127.0.0.1:9"  # discard port: connection refused
    with pytest.raises(DataError) as err:
        ensure_files(cache, pinned_files, url)
    message = str(err.value)
    assert f"{url}/ptb.train.txt" in message and f"{url}/ptb.test.txt" in message
    assert str(cache) in message and "\n" not in message
    assert not cache.exists() or not any(cache.iterdir())


CUT_DOWNLOADS = {  # a server's reply cut short, and how the download says so
    "reset": (b"Content-Length: 100000\r\n\r\n", r".*Connection reset by peer.*"),
    "short": (b"Content-Length: 100000\r\n\r\n", r"the connection closed after 600 of 100,000 bytes"),
    "chunked": (b"Transfer-Encoding: chunked\r\n\r\n186a0\r\n", r"IncompleteRead\(.*"),
}


@pytest.mark.parametrize("cut", list(CUT_DOWNLOADS))
def test_a_download_cut_off_midway_is_one_line_and_keeps_nothing(pinned_files, tmp_path: Path, cut):
    """A file's download ends early: the connection reset (a dropped network, a server restarted), or closed cleanly
    before the file's end: fewer bytes than its Content-Length (read quietly as an end of file: with no sha256
    pinned, as data=text allows, it was kept as the split), or a chunked body cut inside a chunk (http.client's
    IncompleteRead: a traceback). Each is the one line with the URLs to download by hand, and nothing is kept."""
    server = socket.create_server(("127.0.0.1", 0))
    head, why = CUT_DOWNLOADS[cut]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + head + b"a b c\n" * 100)  # 600 bytes of the body
            if cut == "reset":
                time.sleep(0.2)  # the client is reading the body
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    files = {
        split: {**pinned_files[split], "sha256": None if cut == "short" else pinned_files[split]["sha256"]}
        for split in SPLITS
    }
    cache, url = tmp_path / "cache", f"http://127.0.0.1:{server.getsockname()[1]}"
    with pytest.raises(DataError) as err:
        ensure_files(cache, files, url)
    thread.join()
    server.close()
    assert re.fullmatch(
        rf"could not download ptb.train.txt \({why}\); download {url}/ptb.train.txt, "
        rf"{url}/ptb.valid.txt, {url}/ptb.test.txt by hand into {cache} \(or set RNNREG_DATA_DIR\)",
        str(err.value),
    ), str(err.value)
    assert not any(cache.iterdir())


@pytest.mark.parametrize("split", SPLITS)
def test_cached_file_with_wrong_checksum_is_rejected(ptb_dir: Path, pinned_files, tmp_path: Path, split):
    cache = tmp_path / "cache"
    cache.mkdir()
    for f in ptb_dir.glob("ptb.*.txt"):
        (cache / f.name).write_bytes(f.read_bytes())
    (cache / f"ptb.{split}.txt").write_bytes(b"truncated")
    with pytest.raises(DataError, match=rf"checksum mismatch for .*ptb.{split}.txt"):
        ensure_files(cache, pinned_files, None)
    assert (cache / f"ptb.{split}.txt").read_bytes() == b"truncated"  # reported, not silently replaced


def test_a_sum_your_own_corpus_does_not_match_says_to_correct_it_not_to_delete_the_file(tiny_corpus, tmp_path):
    """data=text (no url_base): a file that is not the one its data.files.SPLIT.sha256 names is the user's own, with
    nothing to download it from: the line says to correct the sum or set it to null (before: "delete the file to
    download it again", of their only copy). A sum in upper case is the same sum; one that is not 64 hexadecimal
    digits is refused as such before anything is made; a downloaded corpus's file still says to download it again."""
    files = {split: {"name": f"{split}.txt"} for split in SPLITS}
    path = tiny_corpus / "train.txt"
    before = path.read_bytes()
    with pytest.raises(DataError) as err:
        ensure_files(tiny_corpus, files | {"train": {"name": "train.txt", "sha256": "a" * 64}})
    assert str(err.value) == (
        f"checksum mismatch for {path}: sha256 {sha256_of(path)}, expected {'a' * 64} (data.files.train.sha256): "
        "the file is not the one that sum names: correct data.files.train.sha256 to the file's sum, or set it to "
        "null not to check it"
    )
    assert path.read_bytes() == before
    upper = files | {"train": {"name": "train.txt", "sha256": sha256_of(path).upper()}}
    assert ensure_files(tiny_corpus, upper)["train"] == path
    run_dir = tmp_path / "run"
    args = [*TINY, f"data.data_dir={tiny_corpus}", f"hydra.run.dir={run_dir}", "data.files.train.sha256=abc"]
    with pytest.raises(ConfigError) as err:
        validate_args("train", args)
    assert str(err.value) == (
        "data.files.train.sha256=abc must be a sha256 sum of 64 hexadecimal digits or null (the file's pinned sum, "
        "or null not to check it)"
    )
    with pytest.raises(DataError, match=r"; delete the file to download it again$"):  # a copy of url_base's file
        ensure_files(tiny_corpus, files | {"train": {"name": "train.txt", "sha256": "a" * 64}}, "http://127.0.0.1:9")


def test_every_split_is_pinned_to_ptbs_sum(ptb_dir: Path, pinned_files):
    """conf/data/ptb.yaml pins each split to the sha256 of the paper's PTB file (a split without a sum would be
    used unchecked)."""
    assert set(pinned_files) == set(SPLITS)
    for split in SPLITS:
        spec = pinned_files[split]
        assert spec.sha256 == sha256_of(ptb_dir / spec.name), split


def test_a_ptb_split_without_its_pinned_sum_is_refused(ptb_config):
    """conf/data/ptb.yaml gives every split its sha256 (ensure_files checks a split only against a sum it is given),
    and the schema requires the key: a data config whose split has no sha256 (deleted from ptb.yaml, or by
    ~data.files.<split>.sha256) is refused in one line naming it, not trained on with that split unchecked; null
    is how a config says not to check a file (conf/data/text.yaml)."""
    for split in SPLITS:
        pinned = ptb_config.files[split].get("sha256")
        assert re.fullmatch(r"[0-9a-f]{64}", str(pinned)), f"conf/data/ptb.yaml pins no sha256 for {split}: {pinned}"
    assert validate_args("train", ["experiment=paper_small"]) == 1
    for split in SPLITS:
        message = rf"^data.files.{split}.sha256 is missing: it must be a sha256 sum of 64 hexadecimal digits or null \("
        with pytest.raises(ConfigError, match=message):
            validate_args("train", ["experiment=paper_small", f"~data.files.{split}.sha256"])


def test_a_split_under_another_name_is_named_with_the_key_that_reads_it(tmp_path: Path):
    """A corpus whose files are named otherwise (WikiText-2's wiki.train.tokens, ...): the missing file's line names
    the setting that reads it under its own name, data.files.SPLIT.name, and the file the folder holds."""
    for split in SPLITS:
        (tmp_path / f"wiki.{split}.tokens").write_text("a b\n")
    files = {s: {"name": f"{s}.txt"} for s in SPLITS}
    with pytest.raises(DataError) as refused:
        ensure_files(tmp_path, files)
    assert str(refused.value) == (
        f"missing train file {tmp_path / 'train.txt'}: put the train text file there, or set data.data_dir to the "
        f"folder holding it, or data.files.train.name to its name in {tmp_path} (it holds wiki.train.tokens: "
        f"data.files.train.name=wiki.train.tokens)"
    )
    files = {s: {"name": f"wiki.{s}.tokens"} for s in SPLITS}
    assert ensure_files(tmp_path, files)["valid"] == tmp_path / "wiki.valid.tokens"


@pytest.mark.parametrize(
    "loader,key,streams", [("val_dataloader", "batch_size", 20), ("test_dataloader", "test_batch_size", 9)]
)
def test_a_split_too_short_for_its_streams_when_loaded_names_it_and_its_setting(tmp_path: Path, loader, key, streams):
    """rnnreg-eval checks no split before it loads them (rnnreg-train's check_splits also wants a training window of
    data.bptt): a split too short for the streams it is cut into said "a split of N tokens is too short for K
    streams ... use fewer streams", naming neither the file nor the setting, as rnnreg-train's line does."""
    for split in SPLITS:
        (tmp_path / f"{split}.txt").write_text("a b c <unk>\nd e\n")  # 8 tokens
    files = {s: {"name": f"{s}.txt"} for s in SPLITS}
    settings = {"batch_size": 4, "test_batch_size": 1, key: streams}
    data = LMDataModule(str(tmp_path), files, bptt=5, **settings)
    split = "valid" if loader == "val_dataloader" else "test"
    with pytest.raises(DataError) as refused:
        getattr(data, loader)()
    assert str(refused.value) == (
        f"the {split} split {tmp_path / f'{split}.txt'} of 8 tokens is too short for {streams} streams "
        f"(data.{key}={streams}): each stream needs 2 tokens or more; lower data.{key} or give a longer file"
    )


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_a_byte_that_is_not_utf8_is_counted_from_the_files_start(tmp_path: Path, bom):
    """A file saved with a byte-order mark and a Latin-1 byte further on: the line named the byte 3 before it (the
    decoder counts from after the mark), so `head -c N` showed text before the byte at fault."""
    (tmp_path / "train.txt").write_bytes(bom + b"a b\ncaf\xe9 au lait\n")
    with pytest.raises(DataError) as refused:
        read_words(tmp_path / "train.txt")
    at = len(bom) + 7
    assert (bom + b"a b\ncaf\xe9")[at] == 0xE9
    assert str(refused.value) == f"{tmp_path / 'train.txt'} is not UTF-8 text (byte {at}): re-encode it as UTF-8"


def test_a_byte_order_mark_inside_a_file_is_refused_with_its_line_and_byte(tmp_path: Path):
    """`cat a.txt b.txt` of two files that each begin with a byte-order mark leaves the second one inside the text:
    it was read as part of a word ('\ufeffc', another word than 'c', silently); refused (rnnreg-train: exit 2, one
    line) with its line and byte, and how to remove it. One at the very start is still no part of the first word."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_bytes(codecs.BOM_UTF8 + b"a b <unk>\n")
    assert read_words(corpus / "valid.txt") == ["a", "b", "<unk>", "<eos>"]
    joined = codecs.BOM_UTF8 + b"a b\n" + codecs.BOM_UTF8 + b"c a\n" + codecs.BOM_UTF8 + b"b\n"
    (corpus / "valid.txt").write_bytes(joined)
    with pytest.raises(DataError) as refused:
        read_words(corpus / "valid.txt")
    assert joined[7:10] == codecs.BOM_UTF8
    assert str(refused.value) == (
        f"{corpus / 'valid.txt'} has a UTF-8 byte-order mark (U+FEFF) inside its text at line 2, byte 7, and 1 more "
        "after it (as `cat` of files that each begin with one leaves it): it would be read as part of a word; remove "
        f"it: sed -i 's/\\xEF\\xBB\\xBF//g' {corpus / 'valid.txt'}"
    )
    proc = run("rnnreg-train", *TINY, f"data.data_dir={corpus}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {refused.value}"], proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_words_read_as_unk_are_counted_and_said(tmp_path: Path, tiny_cfg, tiny_corpus, caplog):
    """valid or test words not in the training vocabulary, with <unk> in train, are read as <unk> (PTB's way): a
    corpus of one's own where most are (a vocabulary of its train file that its other files hardly share) had a
    perplexity of predicting <unk> over and over, and no word said so. Each such split is counted in a warning."""
    (tmp_path / "train.txt").write_text("a b <unk>\nb c\n")
    (tmp_path / "valid.txt").write_text("a z y\n")
    (tmp_path / "test.txt").write_text("c a\n")
    corpus = Corpus(ensure_files(tmp_path, {s: {"name": f"{s}.txt"} for s in SPLITS}))
    assert corpus.unknown_words() == [
        f"{tmp_path / 'valid.txt'}: 2 of its 4 words (50.0%) are not in the training vocabulary, read as <unk>: its "
        "perplexity predicts them as that one word"
    ]
    with open(tiny_corpus / "test.txt", "a") as f:
        f.write("unseen words\n")
    with caplog.at_level(logging.WARNING, logger="rnnreg"):
        train(tiny_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false"))
    said = [r.getMessage() for r in caplog.records if "not in the training vocabulary" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{tiny_corpus / 'test.txt'}: 2 of its "), said
