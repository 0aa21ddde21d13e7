"""rnnreg-generate: sample text from a trained checkpoint (the paper's Figure 4)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from omegaconf import DictConfig

from rnnreg.errors import ConfigError
from rnnreg.runtime import hydra_entry, reader_gone
from rnnreg.tokens import EOS, UNK


def generate(
    ckpt_path: str, prompt: str, num_words: int, temperature: float = 1.0, seed: int = 0, device: str = "cpu"
) -> list[str]:
    """The prompt's words followed by `num_words` sampled words; unknown prompt words become <unk>."""
    return list(generated(ckpt_path, prompt, num_words, temperature, seed, device))


def generated(
    ckpt_path: str, prompt: str, num_words: int, temperature: float = 1.0, seed: int = 0, device: str = "cpu"
) -> Iterator[str]:
    """generate()'s words as they are drawn; the checkpoint is loaded and checked, and the prompt read, at the call
    (its errors and warnings come before the first word)."""
    if temperature <= 0:
        raise ConfigError(f"temperature={temperature} must be positive (1.0 samples the model as trained)")
    if num_words < 0:
        raise ConfigError(f"num_words={num_words} must be >= 0")
    # without Lightning (rnnreg.task, seconds to import): the network and its vocabulary are all a sample needs
    from rnnreg.checkpoint_contents import trained_net
    from rnnreg.io import load_checkpoint

    ckpt_path = str(Path(ckpt_path).expanduser())
    checkpoint = load_checkpoint(ckpt_path)
    net = trained_net(checkpoint, ckpt_path)  # checks the vocabulary too
    return sampled(net, checkpoint["vocab"], prompt, num_words, temperature, seed, device)


def sample(net, vocab: list[str], prompt: str, num_words: int, temperature: float, seed: int, device: str) -> list[str]:
    """The prompt's words, then `num_words` words drawn one at a time from the network at `temperature`."""
    return list(sampled(net, vocab, prompt, num_words, temperature, seed, device))


def sampled(
    net, vocab: list[str], prompt: str, num_words: int, temperature: float, seed: int, device: str
) -> Iterator[str]:
    """sample()'s words as they are drawn; the prompt is read (and its unknown words warned of) at the call. A
    vocabulary without capitals (PTB's) reads a capitalised prompt word in lower case, and says so."""
    import torch

    stoi = {w: i for i, w in enumerate(vocab)}
    words = prompt.split() or [EOS]  # no prompt: start as after a sentence (the <eos> is not part of the text)
    capitalised = list(dict.fromkeys(w for w in words if w not in stoi and w != w.lower()))
    if capitalised and not tells_case(vocab):  # (PTB's): read as <unk>, "The" would lose the word itself
        warnings.warn(
            f"prompt words read in lower case, as the checkpoint's vocabulary is: {', '.join(capitalised)}",
            stacklevel=3,
        )
        words = [w.lower() if w in capitalised else w for w in words]
    unknown = [w for w in words if w not in stoi]
    if unknown:
        if UNK not in stoi:
            known = " ".join([w for w in vocab if w.isalnum()][:4])  # (words a shell and Hydra read as they are)
            listed = ", ".join(dict.fromkeys(unknown))
            raise ConfigError(
                f"prompt words {listed} are not in the checkpoint's vocabulary ({len(vocab):,} words, no {UNK} to "
                f"read them as): give a prompt of its words (such as prompt='{known}'), or prompt='' to start as "
                f"after a sentence"
            )
        warnings.warn(f"prompt words not in the vocabulary, read as {UNK}: {', '.join(unknown)}", stacklevel=3)
        words = [w if w in stoi else UNK for w in words]
    net = net.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        logits, state = net(torch.tensor([[stoi[w]] for w in words], device=device))

    def draw() -> Iterator[str]:
        nonlocal logits, state
        yield from words if prompt.split() else []
        for _ in range(num_words):
            with torch.no_grad():  # (not held across the yield: the caller's grad mode stays its own)
                probs = torch.softmax(logits[-1, 0].double() / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=generator)
                logits, state = net(token.view(1, 1), state)
            yield vocab[token.item()]

    return draw()


def tells_case(vocab: list[str]) -> bool:
    """Whether a vocabulary tells capitals from lower case: it has a word of two characters or more with a capital
    (PTB, lower-cased, has N alone: its numbers' token)."""
    return any(len(w) > 1 and w != w.lower() for w in vocab)


def pieces(words: Iterable[str]) -> Iterator[str]:
    """The words as text, piece by piece: <eos> ends a line (no space around the line break)."""
    line_start = True
    for word in words:
        if word == EOS:
            yield "\n"
        else:
            yield word if line_start else " " + word
        line_start = word == EOS


@hydra_entry("generate")
def main(cfg: DictConfig) -> None:
    printed = False
    try:
        prompt = "" if cfg.prompt is None else str(cfg.prompt)  # null: no prompt, as prompt='' (not the word None)
        with warnings.catch_warnings(record=True) as caught:  # as `warning: ...` lines, not Python's two-line form
            words = generated(cfg.ckpt_path, prompt, cfg.num_words, cfg.temperature, cfg.seed, cfg.device)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        for piece in pieces(words):
            sys.stdout.write(piece)
            printed = True
            if piece == "\n":  # a long sample shows a line at a time as it is drawn, not all at its end
                sys.stdout.flush()
        print()
    except KeyboardInterrupt:  # (a long num_words) one line, as rnnreg-eval says it, not the sampler's traceback
        if printed:
            print(flush=True)  # (the line it was drawing ends, before the message)
        so_far = "the words drawn so far are printed above" if printed else "it had printed nothing yet"
        print(f"interrupted: rnnreg-generate stopped by Ctrl-C: {so_far}", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # its reader stopped (| head): it has what it wanted
        reader_gone()
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
