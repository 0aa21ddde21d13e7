"""Corpus loading (download + checksums), BPTT batching and the LightningDataModule.

Layout follows the paper: each split is one token stream (newline -> <eos>), cut into `batch_size`
contiguous streams (columns) and walked in order in windows of `bptt` steps; the target is the next token.
"""

from __future__ import annotations

import array
import codecs
import difflib
import hashlib
import http.client
import math
import os
import shlex
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from numbers import Integral
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rnnreg.console import counted
from rnnreg.errors import ConfigError, DataError
from rnnreg.schema import Data, DataFile, check_value, rules
from rnnreg.tokens import EOS, UNK

SPLITS = ("train", "valid", "test")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_file(url: str, dest: Path, sha256: str | None, timeout: float = 30.0) -> None:
    """Download `url` to `dest` atomically: a checksum mismatch or broken download leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            size, received = response.headers.get("Content-Length"), 0
            while block := response.read(1 << 20):
                out.write(block)
                received += len(block)
        # a connection closed early ends the reads quietly: without a pinned sha256 only the length tells
        if size is not None and size.isdigit() and received != int(size):
            raise OSError(f"the connection closed after {received:,} of {int(size):,} bytes")
        if sha256 and (got := sha256_of(Path(tmp))) != sha256.lower():  # (an upper-case digest is the same sum)
            raise DataError(
                f"checksum mismatch for {dest.name} downloaded from {url}: sha256 {got}, "
                f"expected {sha256}; the file was not used"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_files(data_dir: str | Path, files: dict, url_base: str | None = None) -> dict[str, Path]:
    """Return the path of every split, downloading missing files and verifying pinned checksums."""
    data_dir = Path(data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(
            f"data.data_dir={data_dir} is a file, not a folder: set data.data_dir to the folder holding "
            f"{', '.join(files[s]['name'] for s in SPLITS)}"
        )
    for split in SPLITS:  # before any download
        path = data_dir / files[split]["name"]
        if path.exists() and not path.is_file():
            raise DataError(f"{path} is not a file (a folder?): the {split} split must be a text file; move it away")
    paths = {}
    for split in SPLITS:
        spec = files[split]
        path = data_dir / spec["name"]
        sha256 = spec.get("sha256")
        if not path.exists():
            if not url_base:
                raise DataError(
                    f"missing {split} file {path}: put the {split} text file there, or set data.data_dir to the "
                    f"folder holding it, or data.files.{split}.name to its name in {data_dir}"
                    + named_like(data_dir, split)
                )
            urls = ", ".join(f"{url_base.rstrip('/')}/{files[s]['name']}" for s in SPLITS)
            try:
                fetch_file(f"{url_base.rstrip('/')}/{spec['name']}", path, sha256)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:  # (IncompleteRead: chunks cut)
                raise DataError(
                    f"could not download {spec['name']} ({err}); download {urls} "
                    f"by hand into {data_dir} (or set RNNREG_DATA_DIR)"
                ) from None
        elif sha256 and (got := sha256_of(path)) != sha256.lower():  # (an upper-case digest is the same sum)
            if url_base:  # (a download's folder: the file is a copy of the one at url_base)
                raise DataError(
                    f"checksum mismatch for {path}: sha256 {got}, expected {sha256}; delete the file to download it "
                    f"again"
                )
            # the user's own corpus: nothing to download, and the file may be their only copy
            raise DataError(
                f"checksum mismatch for {path}: sha256 {got}, expected {sha256} (data.files.{split}.sha256): the file "
                f"is not the one that sum names: correct data.files.{split}.sha256 to the file's sum, or set it to "
                f"null not to check it"
            )
        paths[split] = path
    return paths


def named_like(folder: Path, split: str) -> str:
    """The words " (it holds NAME: ...)" where `folder` holds one file whose name has `split` in it (WikiText-2's
    wiki.train.tokens), else ""."""
    try:
        found = [p.name for p in folder.iterdir() if split in p.name.lower() and p.is_file()]
    except OSError:  # (no such folder, or one this user cannot read)
        return ""
    return f" (it holds {found[0]}: data.files.{split}.name={found[0]})" if len(found) == 1 else ""


def read_words(path: Path) -> list[str]:
    """The file's words, each line ended by <eos>. Lines end at \n only (\r\n too), as PyTorch's
    word_language_model reads them: str.splitlines would also end them at \x0c, \x85, U+2028, ...; a
    UTF-8 byte-order mark is no part of the first word."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # newline="": a lone \r stays in its line
            text = f.read()
    except UnicodeDecodeError as err:
        with open(path, "rb") as f:  # (the decoder counts from after a byte-order mark: 3 bytes more in the file)
            start = err.start + (3 if f.read(3) == codecs.BOM_UTF8 else 0)
        raise DataError(f"{path} is not UTF-8 text (byte {start}): re-encode it as UTF-8") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}): make it a readable text file") from None
    if "\ufeff" in text:  # (past the start: utf-8-sig took a first one) a word would hold it, unseen
        raise DataError(byte_order_mark_inside(path))
    lines = text.split("\n")
    if lines[-1] == "":  # the final newline ends the last line, it starts no other
        lines.pop()
    words = [w for line in lines for w in line.split() + [EOS]]
    if not words:
        raise DataError(f"{path} is empty: a split needs at least one line of text")
    return words


def byte_order_mark_inside(path: Path) -> str:
    """The line refusing a file with a UTF-8 byte-order mark past its start (`cat a.txt b.txt` of two files that
    each begin with one): read, it would be part of a word ('\ufeffc', another word than 'c'); stripped unasked, the
    words would differ from the file's as other tools read it. Names its line and byte (from the file's start)."""
    data = path.read_bytes()
    at = data.find(codecs.BOM_UTF8, 1)  # (from byte 1: one at the start is no part of a word)
    line, count = data.count(b"\n", 0, at) + 1, data.count(codecs.BOM_UTF8, 1)
    more = f", and {count - 1} more after it" if count > 1 else ""
    return (
        f"{path} has a UTF-8 byte-order mark (U+FEFF) inside its text at line {line}, byte {at}{more} (as `cat` of "
        f"files that each begin with one leaves it): it would be read as part of a word; remove it: "
        f"sed -i 's/\\xEF\\xBB\\xBF//g' {shlex.quote(str(path))}"
    )


class Corpus:
    """Vocabulary from the training split (first-seen order) and the token ids of each split."""

    def __init__(self, paths: dict[str, Path]):
        self.paths = paths
        train = read_words(paths["train"])
        self.itos = list(dict.fromkeys(train))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.unknown = {split: 0 for split in SPLITS}  # each split's words not in the vocabulary, read as <unk>
        self.ids = {"train": self.encode(train, paths["train"])}
        for split in ("valid", "test"):
            self.ids[split] = self.encode(read_words(paths[split]), paths[split], split)
        self._fingerprints: dict[str, str] | None = None

    def fingerprints(self) -> dict[str, str]:
        """Each split's fingerprint: the sha256 (hex) of its token ids' bytes, which any edit of its words or their
        order changes (with the vocabulary: a word's id is its place in it). A checkpoint records them
        (data_fingerprint): a resume or evaluation on a split changed since says so. Computed once (PTB: ~10 ms)."""
        if self._fingerprints is None:
            self._fingerprints = {
                split: hashlib.sha256(self.ids[split].numpy().astype("<i8", copy=False).tobytes()).hexdigest()
                for split in SPLITS
            }
        return dict(self._fingerprints)

    def unknown_words(self) -> list[str]:
        """A note for each split some of whose words are not in the training vocabulary, read as <unk>: its
        perplexity predicts them all as that one word, lower than over the words themselves."""
        return [
            f"{self.paths[split]}: {count:,} of its {counted(self.ids[split].numel(), 'word')} "
            f"({100 * count / self.ids[split].numel():.1f}%) are not in the training vocabulary, read as {UNK}: its "
            f"perplexity predicts them as that one word"
            for split, count in self.unknown.items()
            if count
        ]

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: list[str], path: Path, split: str = "train") -> torch.Tensor:
        ids = list(map(self.stoi.get, words))  # None: a word not in the vocabulary
        if None in ids:
            self.unknown[split] = ids.count(None)
            unk = self.stoi.get(UNK)
            if unk is None:
                unknown = [w for w, i in zip(words, ids) if i is None]
                examples = ", ".join(list(dict.fromkeys(unknown))[:5])
                raise DataError(
                    f"{path} has {counted(len(unknown), 'word')} not in the training vocabulary "
                    f"(e.g. {examples}) and the corpus has no {UNK} token: add {UNK} to train "
                    f"or map rare words to it"
                )
            ids = [unk if i is None else i for i in ids]
        # (through an int64 array: torch.tensor of a list of PTB's 930,000 ints takes twice as long)
        return torch.frombuffer(array.array("q", ids), dtype=torch.long)


def batchify(ids: torch.Tensor, num_streams: int, split: str = "a split", key: str = "") -> torch.Tensor:
    """Cut one token stream into `num_streams` contiguous columns: shape (steps, num_streams). `split` and
    `key` (the setting of `num_streams`) name them in the error."""
    steps = ids.numel() // num_streams
    if steps < 2:
        setting = f" ({key}={num_streams})" if key else ""
        fix = f"lower {key} or give a longer file" if key else "use fewer streams or a longer split"
        raise DataError(
            f"{split} of {counted(ids.numel(), 'token')} is too short for {num_streams} streams{setting}: "
            f"each stream needs 2 tokens or more; {fix}"
        )
    return ids[: steps * num_streams].view(num_streams, steps).t().contiguous()


class BPTTWindows(Dataset):
    """Windows (x, y) of `bptt` steps over the columns, in order; y is x shifted by one token.

    With `drop_last` the final partial window is dropped (training, as in the paper's code: 2,323 windows
    at bptt 20); evaluation keeps it so every token after the first is predicted exactly once.
    """

    def __init__(self, streams: torch.Tensor, bptt: int, drop_last: bool):
        self.streams, self.bptt = streams, bptt
        predictions = streams.size(0) - 1
        self.length = predictions // bptt if drop_last else -(-predictions // bptt)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.bptt
        end = min(start + self.bptt, self.streams.size(0) - 1)
        return self.streams[start:end], self.streams[start + 1 : end + 1]


class StartAt(Sampler[int]):
    """Window indices in order; the first pass starts at `start` (resuming mid-epoch), later ones at 0."""

    def __init__(self, length: int, start: int = 0):
        self.length, self.start = length, start

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(range(start, self.length))


def limit_batches(count: int, limit) -> int:
    """Lightning's limit_*_batches: None all, a float a fraction, an int a count."""
    if limit is None:
        return count
    if isinstance(limit, float):
        return int(count * limit)
    return min(count, int(limit))


def smallest_fraction(windows: int) -> float:
    """The smallest fraction with three significant digits that keeps one of `windows` (limit_batches)."""
    digits = 2 - math.floor(math.log10(1 / windows))
    fraction = math.ceil(10**digits / windows) / 10**digits
    if limit_batches(windows, fraction) >= 1:
        return fraction
    return math.ceil(10 ** (digits + 1) / windows) / 10 ** (digits + 1)


def fraction_or_count(key: str, smallest: float, whole: str = "the whole split") -> str:
    """The fix for trainer.<key>, a fraction that leaves a split no window: the smallest fraction that keeps one
    (smallest_fraction; written as a fraction, 1.0 not 1, which Lightning reads as one window), or a count."""
    count = f"a whole number of windows (e.g. trainer.{key}=1)"
    if smallest >= 1:
        return f"set trainer.{key}=1.0 (a fraction: {whole}) or {count}"
    return f"set trainer.{key} to a fraction of at least {smallest:g} (1.0: {whole}) or {count}"


def check_arguments(data_dir, files, url_base, **sizes) -> None:
    """LMDataModule's arguments as a library user may give them, by the rules rnnreg-train's config is checked with
    (rnnreg.schema's Data and DataFile): a split left out of `files` or a key of it misspelt, a file given as a bare
    name, a size that is not an integer >= 1, is one DataError naming it (Hydra's config is checked before)."""
    data = rules(Data)
    for key, value in (("data_dir", data_dir), ("url_base", url_base)):
        if problem := check_value(os.fspath(value) if isinstance(value, os.PathLike) else value, data[key]):
            raise DataError(f"data.{key}={value!r} {problem}")
    if not isinstance(files, Mapping):
        raise DataError(f"data.files={files!r} must be a mapping of train, valid and test to {{'name': <file name>}}")
    for split in files:
        if split not in SPLITS:
            raise DataError(f"data.files has a split {split!r}: the splits are {', '.join(SPLITS)}{close_to(split)}")
    file_rules = rules(DataFile)
    for split in SPLITS:
        spec = files.get(split)
        if spec is None:
            raise DataError(f"data.files has no {split} split: add {split!r}: {{'name': <its file name>}}")
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise DataError(
                f"data.files[{split!r}]={spec!r} must be a mapping {{'name': <file name>}} (and an optional 'sha256'), "
                f"e.g. {{'name': '{split}.txt'}}"
            )
        for key, value in spec.items():
            if key not in file_rules:  # a misspelt sha256 would leave the file unchecked, unsaid
                known = ", ".join(map(repr, file_rules))
                raise DataError(
                    f"data.files[{split!r}] has a key {key!r}: its keys are {known}{close_to(key, file_rules)}"
                )
            if problem := check_value(value, file_rules[key]):
                raise DataError(f"data.files[{split!r}][{key!r}]={value!r} {problem}")
    for key, value in sizes.items():
        value = int(value) if isinstance(value, Integral) and not isinstance(value, bool) else value  # (numpy's too)
        problem = check_value(value, data[key])
        if problem and key == "eval_bptt":  # (None, not the config's null)
            raise DataError(
                f"data.eval_bptt={value!r} must be an integer >= 1, or None for data.bptt ({sizes['bptt']})"
            )
        if problem:
            raise DataError(f"data.{key}={value!r} {problem}")


def as_text(value):
    """A text key's value as the str it names: a Path's, or a number's (the config's rule takes one: a Hydra
    override reads `data.data_dir=2024` as the number); None as it is."""
    return value if value is None or isinstance(value, str) else str(value)


def close_to(word, words=SPLITS) -> str:
    """ ": did you mean X?" for a word close to one of `words`, else ""."""
    close = difflib.get_close_matches(str(word), list(words), n=1)
    return f": did you mean {close[0]!r}?" if close else ""


class LMDataModule(L.LightningDataModule):
    """Train/valid on `batch_size` streams; test both on one stream (the paper) and on `batch_size`."""

    def __init__(
        self,
        data_dir: str,
        files: dict,
        url_base: str | None = None,
        *,
        batch_size: int,  # no default: each recipe's own (conf/experiment)
        bptt: int,  # no default: each recipe's own
        eval_bptt: int | None = None,  # None: bptt
        test_batch_size: int = 1,  # the paper's test protocol: one stream over the whole test set
    ):
        super().__init__()
        sizes = {"batch_size": batch_size, "bptt": bptt, "eval_bptt": eval_bptt, "test_batch_size": test_batch_size}
        check_arguments(data_dir, files, url_base, **sizes)
        batch_size, bptt, test_batch_size = int(batch_size), int(bptt), int(test_batch_size)
        eval_bptt = None if eval_bptt is None else int(eval_bptt)
        files = {split: {key: as_text(value) for key, value in files[split].items()} for split in SPLITS}
        self.data_dir, self.files, self.url_base = as_text(data_dir), files, as_text(url_base)
        self.batch_size, self.bptt = batch_size, bptt
        self.eval_bptt = eval_bptt or bptt
        self.test_batch_size = test_batch_size
        self.corpus: Corpus | None = None
        self.resume_window = 0  # set by rnnreg.resume from a mid-epoch checkpoint: the stream continues there

    def prepare_data(self) -> None:
        ensure_files(self.data_dir, self.files, self.url_base)

    def load(self) -> Corpus:
        if self.corpus is None:
            self.corpus = Corpus(ensure_files(self.data_dir, self.files, self.url_base))
        return self.corpus

    @property
    def vocab_size(self) -> int:
        return len(self.load())

    def train_windows(self) -> int:
        """Training windows in an epoch (before trainer.limit_train_batches): every rank's, whatever its streams."""
        return len(BPTTWindows(batchify(self.load().ids["train"], self.batch_size), self.bptt, drop_last=True))

    def check_splits(self) -> None:
        """Every split cut into its streams, and the training split into at least one window of data.bptt
        steps: a split too short stops here (without it Lightning trains no window and says little)."""
        corpus = self.load()
        streams = [("train", "batch_size"), ("valid", "batch_size"), ("test", "batch_size")]
        for split, key in [*streams, ("test", "test_batch_size")]:
            batchify(corpus.ids[split], getattr(self, key), f"the {split} split {corpus.paths[split]}", f"data.{key}")
        tokens = corpus.ids["train"].numel()
        steps = tokens // self.batch_size
        if steps - 1 < self.bptt:  # a window predicts bptt next tokens: bptt + 1 steps per stream
            fewer = tokens // (self.bptt + 1)
            fix = f"data.bptt={steps - 1} or less" + (f", or data.batch_size={fewer} or less" if fewer else "")
            raise DataError(
                f"the train split {corpus.paths['train']} is shorter than one training window: "
                f"{counted(steps, 'step')} per stream (data.batch_size={self.batch_size} streams) for "
                f"data.bptt={self.bptt}: set {fix}, or give a longer train file"
            )

    def check_limits(self, trainer_cfg) -> None:
        """A fraction trainer.limit_*_batches (or trainer.overfit_batches, which Lightning takes as the train and
        valid splits' limit both) that leaves a split no window, or a trainer.val_check_interval past an epoch's
        windows, stops here in one line (Lightning refuses it with a traceback once training has begun)."""
        corpus = self.load()
        loaders = {  # key: (split, its streams' key, window length, whether the last partial window is dropped)
            "limit_train_batches": [("train", "batch_size", self.bptt, True)],
            "limit_val_batches": [("valid", "batch_size", self.eval_bptt, False)],
            "limit_test_batches": [
                ("test", "test_batch_size", self.eval_bptt, False),
                ("test", "batch_size", self.eval_bptt, False),
            ],
        }
        overfit = trainer_cfg.get("overfit_batches")
        overfitting = isinstance(overfit, (int, float)) and not isinstance(overfit, bool) and overfit > 0
        limits = {key: trainer_cfg.get(key) for key in loaders}
        if overfitting:  # (Lightning: overfit_batches replaces both limits)
            limits.update(limit_train_batches=overfit, limit_val_batches=overfit)
        # the loader with the fewest windows of each key's split: the one a fraction leaves empty first
        fewest = {
            key: min(
                (
                    len(BPTTWindows(batchify(corpus.ids[split], getattr(self, streams)), bptt, drop)),
                    split,
                    streams,
                    bptt,
                )
                for split, streams, bptt, drop in specs
            )
            for key, specs in loaders.items()
            if isinstance(limits[key], float) and limits[key] > 0
        }
        for key, (windows, split, streams, bptt) in fewest.items():
            limit = limits[key]
            if limit_batches(windows, limit) >= 1:
                continue
            where = f"{split} split none of its {counted(windows, 'window')} (data.{streams}={getattr(self, streams)} "
            if overfitting and key != "limit_test_batches":
                train, val = fewest["limit_train_batches"][0], fewest["limit_val_batches"][0]
                smallest = max(smallest_fraction(train), smallest_fraction(val))
                fix = fraction_or_count("overfit_batches", smallest, "the whole splits")
                raise ConfigError(
                    f"trainer.overfit_batches={limit} leaves the {where}streams of {bptt} steps), and it limits the "
                    f"train and the valid split both: {fix}"
                )
            raise ConfigError(
                f"trainer.{key}={limit} leaves the {where}streams of {bptt} steps): "
                f"{fraction_or_count(key, smallest_fraction(windows))}"
            )
        interval = trainer_cfg.get("val_check_interval")
        # a count past the epoch's windows: Lightning refuses it with a traceback once training has begun
        if isinstance(interval, int) and not isinstance(interval, bool) and not trainer_cfg.get("fast_dev_run"):
            train = BPTTWindows(batchify(corpus.ids["train"], self.batch_size), self.bptt, True)
            epoch = limit_batches(len(train), limits["limit_train_batches"])
            if interval > epoch:
                raise ConfigError(
                    f"trainer.val_check_interval={interval} is more than the {counted(epoch, 'training window')} of "
                    f"an epoch: set it to at most {epoch}, or to a fraction of the epoch (e.g. 0.5)"
                )

    def streams(self, split: str, num_streams: int) -> torch.Tensor:
        """This rank's columns: the global streams are split across DDP ranks, never reshuffled. A split too short
        for its streams names itself and the setting (rnnreg-eval, which checks no split before)."""
        key = "test_batch_size" if split == "test" and num_streams == self.test_batch_size else "batch_size"
        corpus = self.load()
        columns = batchify(corpus.ids[split], num_streams, f"the {split} split {corpus.paths[split]}", f"data.{key}")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if world > 1 and trainer._accelerator_connector.use_distributed_sampler:
            # Lightning would deal this rank's windows out again across the ranks: every other window, the carried
            # state skipping one between them (rnnreg-train's conf/trainer sets it off)
            raise ConfigError(
                f"Trainer(use_distributed_sampler=True) would split rnnreg's BPTT windows across the {world} "
                f"processes, which already split the streams: pass lightning.Trainer(use_distributed_sampler=False)"
            )
        if num_streams % world:
            if num_streams == 1:
                return columns  # the one-stream test runs whole on every rank
            raise DataError(f"batch size {num_streams} is not divisible by the {world} DDP processes")
        per_rank = num_streams // world
        return columns[:, rank * per_rank : (rank + 1) * per_rank]

    def loader(self, split: str, num_streams: int, bptt: int, drop_last: bool) -> DataLoader:
        windows = BPTTWindows(self.streams(split, num_streams), bptt, drop_last)
        return DataLoader(windows, batch_size=None, shuffle=False, generator=torch.Generator())

    def train_dataloader(self) -> DataLoader:
        windows = BPTTWindows(self.streams("train", self.batch_size), self.bptt, drop_last=True)
        sampler, self.resume_window = StartAt(len(windows), self.resume_window), 0
        # its own generator: starting an epoch's iterator draws no number from the global RNG, so dropout
        # masks after a mid-epoch resume continue the uninterrupted run's random stream exactly
        return DataLoader(windows, batch_size=None, sampler=sampler, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        return self.loader("valid", self.batch_size, self.eval_bptt, drop_last=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [
            self.loader("test", self.test_batch_size, self.eval_bptt, drop_last=False),
            self.loader("test", self.batch_size, self.eval_bptt, drop_last=False),
        ]
