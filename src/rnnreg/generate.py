"""rnnreg-generate: sample text from a trained checkpoint (the paper's Figure 4)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig

from rnnreg.errors import ConfigError
from rnnreg.runtime import hydra_entry
from rnnreg.tokens import EOS, UNK


def generate(
    ckpt_path: str, prompt: str, num_words: int, temperature: float = 1.0, seed: int = 0, device: str = "cpu"
) -> list[str]:
    """The prompt's words followed by `num_words` sampled words; unknown prompt words become <unk>."""
    if temperature <= 0:
        raise ConfigError(f"temperature={temperature} must be positive (1.0 samples the model as trained)")
    if num_words < 0:
        raise ConfigError(f"num_words={num_words} must be >= 0")
    # without Lightning (rnnreg.task, seconds to import): the network and its vocabulary are all a sample needs
    import torch

    from rnnreg.checkpoint_contents import trained_net
    from rnnreg.io import load_checkpoint

    ckpt_path = str(Path(ckpt_path).expanduser())
    checkpoint = load_checkpoint(ckpt_path)
    net = trained_net(checkpoint, ckpt_path)  # checks the vocabulary too
    with torch.no_grad():
        return sample(net, checkpoint["vocab"], prompt, num_words, temperature, seed, device)


def sample(net, vocab: list[str], prompt: str, num_words: int, temperature: float, seed: int, device: str) -> list[str]:
    """The prompt's words, then `num_words` words drawn one at a time from the network at `temperature`."""
    import torch

    stoi = {w: i for i, w in enumerate(vocab)}
    words = prompt.split() or [EOS]  # no prompt: start as after a sentence (the <eos> is not part of the text)
    unknown = [w for w in words if w not in stoi]
    if unknown:
        if UNK not in stoi:
            raise ConfigError(f"prompt words {unknown} are not in the vocabulary, which has no {UNK}")
        warnings.warn(f"prompt words not in the vocabulary, read as {UNK}: {', '.join(unknown)}", stacklevel=3)
        words = [w if w in stoi else UNK for w in words]
    net = net.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    logits, state = net(torch.tensor([[stoi[w]] for w in words], device=device))
    out = list(words) if prompt.split() else []
    for _ in range(num_words):
        probs = torch.softmax(logits[-1, 0].double() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        out.append(vocab[token.item()])
        logits, state = net(token.view(1, 1), state)
    return out


def render(words: list[str]) -> str:
    """The words as text: <eos> ends a line (no space around the line break)."""
    lines, line = [], []
    for word in words:
        if word == EOS:
            lines.append(" ".join(line))
            line = []
        else:
            line.append(word)
    return "\n".join([*lines, " ".join(line)])


@hydra_entry("generate")
def main(cfg: DictConfig) -> None:
    with warnings.catch_warnings(record=True) as caught:  # as `warning: ...` lines, not Python's two-line form
        try:
            words = generate(cfg.ckpt_path, str(cfg.prompt), cfg.num_words, cfg.temperature, cfg.seed, cfg.device)
        except KeyboardInterrupt:  # (a long num_words) one line, as rnnreg-eval says it, not the sampler's traceback
            print("interrupted: rnnreg-generate stopped by Ctrl-C before it finished: nothing printed", file=sys.stderr)
            raise SystemExit(130) from None
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(render(words))


if __name__ == "__main__":
    main()
