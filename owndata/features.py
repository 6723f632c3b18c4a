"""Per-utterance features of a conversation table (conversations.py): text from a Hugging Face encoder
(text_encoder.py), audio and visual features of recordings (media_features.py) or given visual vectors (speaker indices:
speaker_scheme.py). extract_features.py writes them into a feature folder; predict.py repeats the recipe
recorded there on new conversations.

    encoder = text_encoder.load_encoder(text_model, device)
    recipes = {'text': text_encoder.text_recipe(settings, encoder, table)}    # what the features depend on
    arrays, details, seconds = extract_modalities(settings, encoder, table, recipes)

`settings` is an ExtractionSettings: extract_features.py's flags (from_args), or a run's recorded recipe
(from_recipe: prediction.py repeats it). `table` is conversations.Conversations.table plus a `path` column
(each row's input file, for error messages).

- text: four vectors, the hidden states of four layers (hidden_states indices: 0 is the embedding layer),
  each averaged over the utterance's tokens (attention mask: padding excluded, [CLS]/[SEP]-like special
  tokens included; texts longer than the model's maximum are truncated), in batches of similar length, read
  packed (text_encoder.py).
- audio: of each utterance's sound (its audio file or its video's sound track, cut to start / end): openSMILE
  functionals (default eGeMAPSv02: 88 values) or a speech encoder's hidden states (media_features.py).
- visual: of each utterance's video frames (the largest face's HOG or an image model's vector, mean and spread
  over the frames: media_features.py), or the given .npy vectors, one 1-D float array per utterance.
The media work runs in parallel, cached per utterance under settings.work_dir (media_jobs.py).
"""
import functools
import hashlib
import os
import platform
import time
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import tokenizers
import torch
import transformers

from owndata import media, media_features, media_jobs, text_encoder
from utils import UserError, file_sha256

DEFAULT_AUDIO_FEATURES = media_features.DEFAULT_AUDIO_FEATURES


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
    'text': (text_encoder.text_recipe, text_encoder.extract_text),
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

