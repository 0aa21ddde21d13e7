"""A checkpoint from elsewhere (untrusted input, loaded as data only by rnnreg.io), checked to hold what
rnnreg-train writes before anything uses it: hyper_parameters that build a model, weights of that model's shapes,
all finite, a vocabulary of its size, and (where it has one) a data fingerprint of each split; one line naming the file
and the fix where it does not."""

from __future__ import annotations

import re
from collections import Counter

import torch

from rnnreg.errors import CheckpointError, first_line
from rnnreg.model import LSTMLanguageModel, build_net
from rnnreg.schema import Dropout, Model, Optim, Rule, check_value, group_problem, shown_from_file

VOCAB_SIZE = Rule("int", lo=1)
# where a layer-norm model's gate biases sit: after the norms, as Ba et al. (2016) (rnnreg.model.StepLSTM.layer)
LAYER_NORM_BIASES = "after_norms"
SPLITS = ("train", "valid", "test")  # (rnnreg.data's: that module imports Lightning, this one does not)
SHA256 = re.compile(r"[0-9a-f]{64}")


def trained_net(checkpoint: dict, source: str) -> LSTMLanguageModel:
    """The network of a checkpoint (rnnreg.io.load_checkpoint's data) with its trained weights, once the checkpoint
    is checked to hold what rnnreg-train writes: hyper_parameters that build a model, weights of that model's
    shapes, all finite, and a vocabulary of its size (rnnreg.io.load_checkpoint checks only its two main entries).
    Without Lightning, for rnnreg-generate. `source` names the file in the errors."""
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict):  # (before: Python's own words, "list indices must be integers ...")
        raise not_written_by_train(source, f"its hyper_parameters are {briefly(hparams)}, not a mapping")
    if missing := [key for key in ("vocab_size", "model", "dropout") if key not in hparams]:
        raise not_written_by_train(source, f"its hyper_parameters hold no {missing[0]!r}")
    try:
        problem = hyper_parameters_problem(
            hparams["vocab_size"], hparams["model"], hparams["dropout"], hparams.get("optim", {})
        )
        if problem:  # the schema's line, not Python's own words from inside the model's constructor
            raise not_written_by_train(source, f"its hyper_parameters are not valid ({problem})")
        weights = checkpoint["state_dict"]
        if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
        ):
            raise not_written_by_train(source, "its state_dict is not a mapping of names to tensors")
        # every layer has weights of its own: more layers than the file holds tensors is no model of its weights
        if hparams["model"]["num_layers"] > len(weights):
            raise not_this_version(
                source, f"model.num_layers={hparams['model']['num_layers']} for {len(weights)} weights"
            )
        with torch.device("meta"):  # the shapes its hyper_parameters declare, checked before any memory is taken
            declared = build_net(hparams["vocab_size"], hparams["model"], hparams["dropout"]).state_dict()
    except (KeyError, TypeError) as err:
        raise not_this_version(source, err) from None
    except ValueError as err:  # model.num_layers=0, a rate of 2 (a ConfigError): the file's, not the command line's
        raise not_written_by_train(source, f"its hyper_parameters are not valid ({first_line(err)})") from None
    if why := layer_norm_problem(checkpoint, bool(hparams["model"].get("layer_norm")), source):
        raise CheckpointError(why)
    state = {key.removeprefix("net."): value for key, value in weights.items()}
    mismatch = state_mismatch(state, declared)
    if mismatch:
        raise not_this_version(source, mismatch)
    net = build_net(hparams["vocab_size"], hparams["model"], hparams["dropout"])  # as large as the weights it holds
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise not_this_version(source, err) from None
    # NaN/inf weights evaluate to a NaN perplexity and sample nothing (torch.multinomial refuses NaN)
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(
            f"{source} holds non-finite weights ({bad}): it is damaged, or from a run that diverged; give another "
            "checkpoint (an earlier one of that run)"
        )
    vocab = checkpoint.get("vocab")
    if vocab is None and "vocab" in checkpoint:  # LanguageModelTask saved it, given no words: a library user's fit
        raise CheckpointError(no_vocabulary_recorded(source))
    if not isinstance(vocab, list) or not all(isinstance(word, str) for word in vocab):
        raise not_written_by_train(source, "it holds no vocabulary (its 'vocab' entry, a list of words)")
    if len(vocab) != net.embedding.num_embeddings:
        raise not_written_by_train(
            source, f"its vocabulary has {len(vocab)} words, its model {net.embedding.num_embeddings}"
        )
    if twice := next((word for word, n in Counter(vocab).items() if n > 1), None):
        raise not_written_by_train(source, f"its vocabulary lists a word twice ({twice!r})")
    check_data_fingerprint(checkpoint, source)
    return net


def layer_norm_record(layer_norm: bool) -> dict:
    """What a checkpoint (or a stacked group's resume file) of a model with `layer_norm` records of its form."""
    return {"layer_norm_biases": LAYER_NORM_BIASES} if layer_norm else {}


def layer_norm_problem(checkpoint: dict, layer_norm: bool, source) -> str | None:
    """One line where `checkpoint` is of a layer-norm model whose gate biases sat inside the norms (an rnnreg from
    before 2026-12-07): the same weights compute another function now, so its perplexities would not be its run's."""
    if not layer_norm or checkpoint.get("layer_norm_biases") == LAYER_NORM_BIASES:
        return None
    return (
        f"{source} is a layer-norm model from an rnnreg that added its gate biases inside the norms (before "
        "2026-12-07; now after them, as Ba et al. 2016 do): its weights compute another function in this version; "
        "train it again with this one, or evaluate it with the rnnreg it was trained with"
    )


def data_fingerprint_problem(fingerprint) -> str | None:
    """What is off in a checkpoint's `data_fingerprint` (rnnreg.data.Corpus.fingerprints: each split's sha256, 64
    lower-case hex digits), said as "its data_fingerprint ..."; None where it fits."""
    if not isinstance(fingerprint, dict) or sorted(fingerprint, key=str) != sorted(SPLITS):
        return f"its data_fingerprint {briefly(fingerprint)} is not a mapping of train, valid and test to sha256 sums"
    bad = next(
        (
            split
            for split in SPLITS
            if not (isinstance(fingerprint[split], str) and SHA256.fullmatch(fingerprint[split]))
        ),
        None,
    )
    if bad is not None:
        return f"its data_fingerprint[{bad!r}] is {briefly(fingerprint[bad])}, not a sha256 sum (64 hex digits)"
    return None


def check_data_fingerprint(checkpoint: dict, source: str) -> None:
    """A CheckpointError where a checkpoint's `data_fingerprint` is not what rnnreg writes; none without one (a
    checkpoint from before it was recorded)."""
    if "data_fingerprint" in checkpoint and (problem := data_fingerprint_problem(checkpoint["data_fingerprint"])):
        raise not_written_by_train(source, problem)


def hyper_parameters_problem(vocab_size, model, dropout, optim) -> str | None:
    """The first of a checkpoint's hyper_parameters the config schema refuses (as a command line's), else None.
    (`optim` holds the clip too, which the schema's optim group does not: keys it does not know are not checked.)"""
    problem = check_value(vocab_size, VOCAB_SIZE)
    if problem:
        return f"vocab_size={shown_from_file(vocab_size)} {problem}"
    groups = ((model, Model, "model"), (dropout, Dropout, "dropout"), (optim, Optim, "optim"))
    return next((p for p in (group_problem(*group) for group in groups) if p), None)


def state_mismatch(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> str | None:
    """The first difference between a checkpoint's weights and the model its hyper_parameters build (names as
    the checkpoint has them), or None. load_state_dict's own message puts the detail below its first line."""
    for key, tensor in ours.items():
        if key not in theirs:
            return f"no net.{key}"
        if theirs[key].shape != tensor.shape:
            return (
                f"net.{key} has shape {tuple(theirs[key].shape)} where its hyper_parameters give {tuple(tensor.shape)}"
            )
    extra = next((key for key in theirs if key not in ours), None)
    return None if extra is None else f"net.{extra} is not in the model its hyper_parameters give"


def no_vocabulary_recorded(source: str) -> str:
    """The line for a LanguageModelTask's checkpoint that records no vocabulary (its 'vocab' entry None): a fit
    without rnnreg's LMDataModule (trainer.fit(task, train_dataloaders=...)) gives the task no words, and a
    perplexity or a sample needs them to read the data or write the words."""
    return (
        f"{source} records no vocabulary (its 'vocab' is None): it was saved by a fit without rnnreg's LMDataModule "
        "(trainer.fit(task, train_dataloaders=...)), which gives the task no words: fit with "
        "trainer.fit(task, datamodule=LMDataModule(...)), or set task.vocab to the training words in id order "
        "(LMDataModule(...).load().itos) before fit or trainer.save_checkpoint"
    )


def not_this_version(source: str, err: Exception | str) -> CheckpointError:
    """A checkpoint whose contents are not what this version of rnnreg writes (a key missing, a shape off)."""
    return CheckpointError(
        f"{source} is not a rnnreg checkpoint of this version ({first_line(err)}): give a checkpoint "
        "written by rnnreg-train"
    )


def briefly(value) -> str:
    """A value read from a file, for a message: its repr, cut to 60 characters ("..." where it was cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def not_written_by_train(source: str, why: str) -> CheckpointError:
    """A checkpoint whose contents rnnreg-train never writes (no vocabulary, impossible hyper_parameters)."""
    return CheckpointError(f"{source} is not a checkpoint rnnreg-train wrote: {why}; give a checkpoint it wrote")
