"""A synthetic stand-in for IEMOCAP, MELD and CMU-MOSEI, written in the real on-disk format and shapes.

    data_dir = ensure_synthetic('IEMOCAP', data_dir, scale=1.0)   # generated once, cached under data_dir/synthetic/
    fs = dataloader.load_features('IEMOCAP', data_dir)

It simulates emotional inertia and contagion: text is most informative, then audio, then visual; a
share of utterances is faint in every modality (only context resolves them), and each modality is
independently confusable with a partner class (the modalities complement each other).
"""
import os
import zlib
from dataclasses import dataclass

import numpy as np

from dataloader import IEMOCAP_CLASS_FREQ, dataset_info
from utils import UserError, read_json, save_json, save_pickle


@dataclass(frozen=True)
class SyntheticShape:
    """Sizes of the real dataset that a synthetic one imitates, and its emotion classes' structure."""
    n_train: int
    n_test: int
    lengths: tuple          # (min, mean, max) utterances per dialogue
    speaker_counts: tuple   # probability of 1, 2, ... speakers in a dialogue
    class_prior: tuple      # share of each class (MOSEI: of each sentiment bin)
    partner: tuple          # the class each class is confused with when an utterance is ambiguous
    key_format: str         # dialogue id from its index ('' = the int index itself, like MELD)
    D_unused_text: int      # the first file's text features, unused by the model (IEMOCAP, MELD)


SYNTHETIC = {
    'IEMOCAP': SyntheticShape(
        n_train=120, n_test=31, lengths=(8, 48, 110), speaker_counts=(0, 1),
        class_prior=IEMOCAP_CLASS_FREQ,
        partner=(4, 2, 1, 5, 0, 3), key_format='Syn{:03d}_impro', D_unused_text=100),
    'MELD': SyntheticShape(
        n_train=1153, n_test=280, lengths=(1, 9.6, 24),
        speaker_counts=(0.1, 0.45, 0.25, 0.1, 0.05, 0.02, 0.015, 0.01, 0.005),
        class_prior=(0.4715, 0.1206, 0.0268, 0.0684, 0.1745, 0.0271, 0.1111),
        partner=(3, 4, 3, 0, 1, 6, 5), key_format='', D_unused_text=600),
    'MOSEI': SyntheticShape(
        n_train=2550, n_test=680, lengths=(1, 7, 35), speaker_counts=(1,),
        class_prior=(0.03, 0.09, 0.17, 0.22, 0.27, 0.17, 0.05),
        partner=(1, 0, 3, 2, 5, 4, 5), key_format='syn_video{:05d}', D_unused_text=0),
}
# The generative process. Speakers take turns; each utterance's emotion follows the dynamics below;
# each feature item = STRENGTH[kind] * (mix of unit class prototypes) + N(0, 1) noise per dimension.
# A share of utterances is faint in every modality: only the context tells their emotion. Each other
# utterance is, in each modality independently, clear (its own class's prototype) or confusable (half
# its own, half its partner class's): the modalities complement each other.
# Text is the most informative (its four inputs share prototypes, so their mean halves the noise),
# then audio, then visual (checked in tests/test_dataloader.py).
SYNTHETIC_VERSION = 2       # bump when the generator changes, so cached datasets are rewritten
TURN = 0.8                  # chance the next utterance is by another speaker
INERTIA = 0.65              # chance a speaker keeps their previous emotion
CONTAGION = 0.25            # chance to take the emotion of the last utterance by someone else
MOOD = 0.5                  # chance a fresh emotion is the dialogue's mood rather than a draw from the prior
FAINT = (0.25, 0.1)         # share of utterances faint in every modality, and their prototype's weight
CONFUSABLE = 0.3            # chance, per utterance and modality, to be half its partner class's prototype
STRENGTH = {'text': 1.4, 'audio': 2.8, 'visual': 1.5, 'unused': 1.0}


def ensure_synthetic(name, data_dir, scale=1.0, seed=0):
    """Write (once) a synthetic `name` dataset in the real on-disk format; return the data dir to load it from.

    The files go to <data_dir>/synthetic/<folder>/ with a stamp (synthetic.json) recording
    scale, seed and generator version: a matching stamp means the files are reused, any other
    is rewritten. A folder there holding feature files without a stamp (real data, say) is never
    overwritten. `scale` multiplies the number of dialogues and nothing else.
    """
    info = dataset_info(name)
    root = os.path.join(data_dir, 'synthetic')
    folder = os.path.join(root, info.folder)
    stamp_path = os.path.join(folder, 'synthetic.json')
    stamp = {'dataset': name, 'scale': scale, 'seed': seed, 'version': SYNTHETIC_VERSION}
    paths = [os.path.join(folder, file_name) for file_name in info.file_names]
    if read_json(stamp_path) == dict(stamp, complete=True) and all(map(os.path.isfile, paths)):
        return root
    _refuse_foreign_folder(folder, stamp_path, paths, os.path.join(data_dir, info.folder))
    save_json(stamp_path, dict(stamp, complete=False))
    for path, content in zip(paths, _synthetic_tuples(info, SYNTHETIC[name], scale, seed)):
        save_pickle(path, content)
    save_json(stamp_path, dict(stamp, complete=True))
    return root


def _refuse_foreign_folder(folder, stamp_path, paths, real_folder):
    """Never write into a real feature folder, nor over feature files the generator did not write."""
    if os.path.exists(folder) and os.path.exists(real_folder) and os.path.samefile(folder, real_folder):
        raise UserError(f"{folder} is the real feature folder {real_folder}; synthetic data is never written "
                        "there.")
    if not os.path.exists(stamp_path) and any(map(os.path.exists, paths)):
        raise UserError(f"{folder} holds feature files that were not generated here (no synthetic.json stamp); "
                        "move them away rather than have synthetic data overwrite them.")


def _synthetic_tuples(info, shape, scale, seed):
    """The dataset's pickled tuples, item by item as DatasetInfo.files names them."""
    rng = np.random.default_rng([seed, zlib.crc32(info.folder.encode())])
    n_train, n_test = (max(1, round(n * scale)) for n in (shape.n_train, shape.n_test))
    keys = [shape.key_format.format(i) if shape.key_format else i for i in range(n_train + n_test)]
    lengths = _dialogue_lengths(rng, len(keys), *shape.lengths)
    speakers = [_speaker_turns(rng, n, shape.speaker_counts) for n in lengths]
    classes = [_emotion_dynamics(rng, s, shape.class_prior) for s in speakers]
    flat = np.concatenate(classes)
    faint = rng.random(len(flat)) < FAINT[0]

    def per_dialogue(values):
        return dict(zip(keys, values))

    items = {
        'videoIDs': per_dialogue([[f'{key}_{j:03d}' for j in range(n)] for key, n in zip(keys, lengths)]),
        'videoSpeakers': per_dialogue([_encode_speakers(info, s) for s in speakers]),
        'videoLabels': per_dialogue([_encode_labels(rng, info, c) for c in classes]),
        'videoSentiment': per_dialogue([[0] * n for n in lengths]),     # unused by the model: placeholder
        'videoSentence': per_dialogue([[f'synthetic utterance {j}' for j in range(n)] for n in lengths]),
        'trainVid': keys[:n_train], 'testVid': keys[n_train:], 'validVid': [],
    }
    bounds = np.cumsum(lengths)[:-1]
    weights_by_kind = {}        # the four text inputs share one draw
    for item_name, (kind, dim) in _feature_items(info, shape).items():
        weights = weights_by_kind.setdefault(kind, _prototype_weights(rng, faint))
        features = _features(rng, flat, weights, np.array(shape.partner), dim, STRENGTH[kind],
                             prototypes=_prototypes(seed, info.folder, kind, len(shape.class_prior), dim))
        items[item_name] = per_dialogue([list(block) for block in np.split(features, bounds)])
    return [tuple(items[item_name] for item_name in names) for _, names in info.files]


def _feature_items(info, shape):
    """item name -> (modality kind, dim) of every feature item in the dataset's files."""
    items = {'videoText': ('unused', shape.D_unused_text), 'videoAudio': ('audio', info.D_audio),
             'videoVisual': ('visual', info.D_visual)}
    items.update({item_name: ('text', info.D_text) for item_name in info.text_items})
    return items


def _dialogue_lengths(rng, n, low, mean, high):
    """Utterances per dialogue: a beta distribution stretched over [low, high] with the given mean."""
    m = (mean - low) / (high - low)
    return (low + np.round((high - low) * rng.beta(2, 2 * (1 - m) / m, size=n))).astype(int)


def _speaker_turns(rng, n, speaker_counts):
    """Speaker index per utterance: the floor passes to another speaker with probability TURN."""
    k = min(n, 1 + rng.choice(len(speaker_counts), p=speaker_counts))
    passes = (rng.random(n) < TURN) & (np.arange(n) > 0)
    steps = np.where(passes, rng.integers(1, max(k, 2), size=n), 0)
    return (rng.integers(k) + np.cumsum(steps)) % k


def _emotion_dynamics(rng, speakers, prior):
    """Emotion class per utterance: a speaker keeps their emotion (inertia) or catches the last other
    speaker's (contagion); otherwise a fresh one, the dialogue's mood or a draw from the prior."""
    n, n_classes = len(speakers), len(prior)
    chance = rng.random(n)
    fresh = np.where(rng.random(n) < MOOD, rng.choice(n_classes, p=prior), rng.choice(n_classes, size=n, p=prior))
    classes = np.empty(n, dtype=np.int64)
    last = {}   # speaker -> (time, emotion) of their latest utterance
    for t, s in enumerate(speakers.tolist()):
        others = [last[o] for o in last if o != s]
        if s in last and chance[t] < INERTIA:
            classes[t] = last[s][1]
        elif others and chance[t] >= 1 - CONTAGION:
            classes[t] = max(others)[1]
        else:
            classes[t] = fresh[t]
        last[s] = (t, classes[t])
    return classes


def _prototypes(seed, folder, kind, n_classes, dim):
    """One random unit direction per class for a modality kind (shared by the four text inputs)."""
    rng = np.random.default_rng([seed, zlib.crc32(f'{folder}/{kind}'.encode())])
    directions = rng.standard_normal((n_classes, dim)).astype(np.float32)
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _prototype_weights(rng, faint):
    """(own, partner) prototype weights per utterance for one modality: faint, confusable or clear."""
    confusable = rng.random(len(faint)) < CONFUSABLE
    own = np.where(faint, FAINT[1], np.where(confusable, 0.5, 1.0))
    partner = np.where(~faint & confusable, 0.5, 0.0)
    return np.stack([own, partner], 1).astype(np.float32)


def _features(rng, classes, weights, partner, dim, strength, prototypes):
    """strength * (own-class and partner-class prototype mix) + N(0, 1) noise, float32 (N, dim)."""
    features = rng.standard_normal((len(classes), dim), dtype=np.float32)
    features += strength * weights[:, :1] * prototypes[classes]
    features += strength * weights[:, 1:] * prototypes[partner[classes]]
    return features


def _encode_speakers(info, speakers):
    """Speaker indices in the dataset's on-disk form: 'M'/'F', one-hot lists of 9, or MOSEI's [1, 0]."""
    if info.speaker_format == 'MF':
        return ['MF'[s] for s in speakers]
    width = max(info.n_speakers, 2)
    return np.eye(width, dtype=int)[speakers].tolist()


def _encode_labels(rng, info, classes):
    """Class indices, or for MOSEI a sentiment score (a multiple of 1/3) inside each class's bin."""
    if info.label_format == 'class':
        return classes.tolist()
    offset = rng.integers(0, 3, size=len(classes))
    thirds = np.select([classes < 3, classes > 3], [3 * (classes - 3) + offset, 3 * (classes - 4) + 1 + offset], 0)
    return (thirds / 3).tolist()
