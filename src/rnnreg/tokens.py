"""The corpus's two special words: the end of a sentence, which data appends to every line, and the word rare
words were replaced by (PTB's preprocessing). Torch-free: rnnreg-generate reads them before it loads torch."""

EOS = "<eos>"
UNK = "<unk>"
