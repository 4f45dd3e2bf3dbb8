"""A tiny randomly initialized Llama-style causal LM with an in-code tokenizer, for fast tests.

Nothing is downloaded: the tokenizer is character-level over printable ASCII, with pad, bos,
eos and unk special tokens and a ChatML-style chat template like SmolLM2's. The model is a 2-layer Llama with hidden size 32 built from a `LlamaConfig`.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<|pad|>", "<|im_start|>", "<|im_end|>", "<|unk|>"
CHARS = "\n\t" + "".join(chr(c) for c in range(32, 127))  # printable ASCII

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer: ids 0..3 are pad/bos/eos/unk, then one id per ASCII character.

    Every token decodes to valid text, so sampled responses re-tokenize to the same ids (other
    characters map to <|unk|>).
    """
    vocab = {PAD: 0, BOS: 1, EOS: 2, UNK: 3} | {ch: 4 + i for i, ch in enumerate(CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([PAD, BOS, EOS, UNK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_causal_lm(
    seed: int = 0, *, hidden_size: int = 32, num_layers: int = 2, init_std: float = 0.1
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Return (model, tokenizer), deterministic given `seed`; the global RNG is left untouched.

    `init_std` is larger than Llama's 0.02 so that next-token distributions are peaked enough
    for greedy decoding to be numerically stable (batched and unbatched argmax agree).
    """
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=init_std,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer
