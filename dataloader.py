"""The feature pickles of IEMOCAP, MELD and CMU-MOSEI: safe loading, validation and time-major padded
batches (core/synthetic.py writes a stand-in in the same on-disk format).

    fs = load_features('IEMOCAP', data_dir)             # or data_dir = synthetic.ensure_synthetic('IEMOCAP', ...)
    train, valid = split_valid(fs.train_keys, 0.1, seed)
    for batch in iterate_batches(fs, train, 32):        # in the given order
        model(batch.text, batch.audio, batch.visual, batch.qmask, batch.lengths)

Feature files are downloads, so they are unpickled with utils.safe_load_pickle (numpy arrays and plain
containers only) and checked before any training; every problem is a UserError naming the file and the
dialogue.

Your own conversations' feature folders (extract_features.py) are core/feature_folder.py's; they load into the same
Dialogue and FeatureSet and go through the same batching.
"""
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from utils import UserError, safe_load_pickle

# ----------------------------------------------------------------------------- the datasets

# The 9-tuple of IEMOCAP_features.pkl; MELD's and MOSEI's first pickles start the same way.
MAIN_ITEMS = ('videoIDs', 'videoSpeakers', 'videoLabels', 'videoText', 'videoAudio', 'videoVisual',
              'videoSentence', 'trainVid', 'testVid')
ROBERTA = ('roberta1', 'roberta2', 'roberta3', 'roberta4')


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset's pickles live, what their tuples hold and how to read speakers and labels."""
    folder: str
    files: tuple            # (file name, item names of its tuple); a field is read from the first file naming it
    text_items: tuple       # the four text inputs, in order
    speaker_format: str     # 'MF' letters, 'onehot' lists, or 'single' (every utterance is speaker 0)
    label_format: str       # 'class' indices, or sentiment 'score's in [-3, 3] binned into 7 classes
    label_names: tuple
    n_speakers: int
    D_text: int
    D_audio: int
    D_visual: int
    url: str                # the original README's download link

    @property
    def n_classes(self):
        return len(self.label_names)

    @property
    def file_names(self):
        return [file_name for file_name, _ in self.files]


# IEMOCAP's share of each class (DATASETS' label_names order): the original's loss weights are their inverses
# (model.make_loss), and the synthetic IEMOCAP draws its labels from them.
IEMOCAP_CLASS_FREQ = (0.086747, 0.144406, 0.227883, 0.160585, 0.127711, 0.252668)
DATASETS = {
    'IEMOCAP': DatasetInfo(
        folder='IEMOCAP_features',
        files=(('IEMOCAP_features.pkl', MAIN_ITEMS),
               ('iemocap_features_roberta.pkl', ('videoSpeakers', 'videoLabels', *ROBERTA, 'videoSentence',
                                                 'trainVid', 'testVid', 'validVid'))),
        text_items=ROBERTA, speaker_format='MF', label_format='class',
        label_names=('hap', 'sad', 'neu', 'ang', 'exc', 'fru'), n_speakers=2,
        D_text=1024, D_audio=1582, D_visual=342,
        url='https://drive.google.com/drive/folders/1s5S1Ku679nlVZQPEfq-6LXgoN1K6Tzmz?usp=drive_link'),
    'MELD': DatasetInfo(
        folder='MELD_features',
        files=(('MELD_features_raw1.pkl', MAIN_ITEMS + ('videoSentiment',)),
               ('meld_features_roberta.pkl', ('videoSpeakers', 'videoLabels', 'videoSentiment', *ROBERTA,
                                              'videoSentence', 'trainVid', 'testVid', 'validVid'))),
        text_items=ROBERTA, speaker_format='onehot', label_format='class',
        label_names=('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust', 'anger'), n_speakers=9,
        D_text=1024, D_audio=300, D_visual=342,
        url='https://drive.google.com/drive/folders/1GfqY7WNVeCBWoFa_NSTalnaIgyyOVJuC?usp=drive_link'),
    'MOSEI': DatasetInfo(
        folder='CMU-MOSEI_features',
        files=(('cmumosei_multi_regression_features.pkl', MAIN_ITEMS),),
        text_items=('videoText',) * 4, speaker_format='single', label_format='score',
        label_names=('strongly negative', 'negative', 'weakly negative', 'neutral', 'weakly positive',
                     'positive', 'strongly positive'), n_speakers=1,
        D_text=1024, D_audio=384, D_visual=35,
        url='https://drive.google.com/drive/folders/1_j3w21zdYvA1yBajubXnaoIhYM22kI3P?usp=drive_link'),
}


def dataset_info(name):
    """DATASETS[name], or a UserError listing the known names."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
    return DATASETS[name]


def sentiment_bins(scores):
    """MOSEI sentiment scores -> 7 classes: a<-2:0, -2<=a<-1:1, -1<=a<0:2, a==0:3, 0<a<=1:4, 1<a<=2:5, a>2:6."""
    a = np.asarray(scores, dtype=np.float64)
    return np.select([a < -2, a < -1, a < 0, a == 0, a <= 1, a <= 2], [0, 1, 2, 3, 4, 5], 6).astype(np.int64)


# ----------------------------------------------------------------------------- loading

@dataclass
class Dialogue:
    key: object
    speakers: np.ndarray    # int64 (n,)
    labels: np.ndarray      # int64 (n,)
    text: list              # four float32 (n, D_text)
    audio: np.ndarray       # float32 (n, D_audio)
    visual: np.ndarray      # float32 (n, D_visual)


@dataclass
class FeatureSet:
    name: str
    dims: dict              # D_text, D_audio, D_visual as found in the files
    n_classes: int
    n_speakers: int
    label_names: tuple
    train_keys: list
    test_keys: list
    dialogues: dict         # key -> Dialogue, for every key of both splits
    source: list            # the files read
    tensors: dict = field(default_factory=dict, repr=False)   # key -> _DialogueTensors, filled by batching


@dataclass
class _Field:
    """One per-dialogue dict of a pickle, with where it came from (for error messages)."""
    path: str
    item: str
    values: dict


def load_features(name, data_dir):
    """Read and validate the feature pickles of dataset `name` under data_dir/<folder>/.

    train_keys / test_keys keep the order of trainVid / testVid in the file; a split stored as a
    set (which has no order) is sorted. Every check runs here, before any training.
    """
    info = dataset_info(name)
    paths = [os.path.join(data_dir, info.folder, file_name) for file_name in info.file_names]
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(_missing_file_message(name, info, path, data_dir))
    contents = [_read_tuple(path, items) for path, (_, items) in zip(paths, info.files)]

    def item(item_name):
        """The named tuple item from the first file that has it, with its path."""
        for path, (_, items), content in zip(paths, info.files, contents):
            if item_name in items:
                return path, content[items.index(item_name)]

    train_keys = _split_keys(*item('trainVid'), 'trainVid')
    test_keys = _split_keys(*item('testVid'), 'testVid')
    _check_disjoint(paths[0], train_keys, test_keys)
    fields = {role: _as_field(*item(item_name), item_name)
              for role, item_name in [('speakers', 'videoSpeakers'), ('labels', 'videoLabels'),
                                      ('audio', 'videoAudio'), ('visual', 'videoVisual')]}
    texts = [_as_field(*item(item_name), item_name) for item_name in info.text_items]
    dialogues = {key: _read_dialogue(info, key, split, fields, texts)
                 for split, keys in [('trainVid', train_keys), ('testVid', test_keys)] for key in keys}
    dims = {'D_text': _common_dim(dialogues, texts, lambda d, i: d.text[i]),
            'D_audio': _common_dim(dialogues, [fields['audio']], lambda d, i: d.audio),
            'D_visual': _common_dim(dialogues, [fields['visual']], lambda d, i: d.visual)}
    return FeatureSet(name=name, dims=dims, n_classes=info.n_classes, n_speakers=info.n_speakers,
                      label_names=info.label_names, train_keys=train_keys, test_keys=test_keys,
                      dialogues=dialogues, source=paths)


def _missing_file_message(name, info, path, data_dir):
    folder = os.path.join(data_dir, info.folder)
    return (f"{path} does not exist, so the {name} features cannot be loaded. Download the pre-extracted "
            f"{name} features from the original README's link ({info.url}) and place "
            f"{' and '.join(info.file_names)} into {folder}/ (the folder {info.folder}/ under --data-dir), "
            f"or pass --synthetic to use a generated synthetic {name} dataset instead.")


def _read_tuple(path, items):
    """Unpickle path safely; it must hold a tuple with one entry per name in items."""
    try:
        content = safe_load_pickle(path)
    except OSError as err:
        raise UserError(f"{path} could not be read: {err.strerror}.") from None
    if not isinstance(content, (tuple, list)) or len(content) != len(items):
        found = (f"{len(content)} items" if isinstance(content, (tuple, list))
                 else f"a {type(content).__name__}")
        raise UserError(f"{path} should hold a tuple of {len(items)} items ({', '.join(items)}) but holds "
                        f"{found}; is it the right file, unmodified?")
    return content


def _as_field(path, values, item_name):
    if not isinstance(values, dict):
        raise UserError(f"{path}: {item_name} should be a dict keyed by dialogue id, "
                        f"but it is a {type(values).__name__}.")
    return _Field(path, item_name, values)


def _split_keys(path, split, item_name):
    """A split's dialogue ids: file order when it is a list, sorted when it is a set (sets have no order)."""
    if isinstance(split, (set, frozenset)):
        keys = sorted(split, key=lambda key: (type(key).__name__, key))
    elif isinstance(split, (list, tuple, np.ndarray)):
        keys = [key.item() if isinstance(key, np.generic) else key for key in split]
    else:
        raise UserError(f"{path}: {item_name} should be a list or set of dialogue ids, "
                        f"but it is a {type(split).__name__}.")
    if not keys:
        raise UserError(f"{path}: {item_name} is empty; there are no dialogues to use.")
    seen = set()
    for key in keys:
        if isinstance(key, (list, dict, set, np.ndarray)):
            raise UserError(f"{path}: {item_name} holds {key!r}, which is not a dialogue id.")
        if key in seen:
            raise UserError(f"{path}: dialogue {key!r} is listed twice in {item_name}.")
        seen.add(key)
    return keys


def _check_disjoint(path, train_keys, test_keys):
    test = set(test_keys)
    both = [key for key in train_keys if key in test]
    if both:
        raise UserError(f"{path}: dialogue {both[0]!r} is in both trainVid and testVid ({len(both)} such "
                        "dialogues in all); a dialogue belongs to one split only.")


def _read_dialogue(info, key, split, fields, texts):
    """One dialogue's speakers, labels and features, checked for lengths, values and finiteness."""
    every = list(fields.values()) + texts
    for f in every:
        if key not in f.values:
            raise UserError(f"{f.path}: dialogue {key!r} is listed in {split} but has no entry in {f.item}.")
    labels = fields['labels']
    n = _length(labels, key)
    odd = [f for f in every if _length(f, key) != n]
    if odd:
        raise UserError(f"{odd[0].path}: dialogue {key!r} has {_length(odd[0], key)} rows in {odd[0].item} "
                        f"but {n} labels in {labels.item} of {os.path.basename(labels.path)}; speakers, labels "
                        "and every modality need one entry per utterance.")
    if n == 0:
        raise UserError(f"{labels.path}: dialogue {key!r} is empty (no utterances).")
    text = {f.item: _matrix(f, key) for f in texts}     # MOSEI's one text item, read once for its four inputs
    return Dialogue(key=key, speakers=_speakers(info, fields['speakers'], key), labels=_labels(info, labels, key),
                    text=[text[f.item] for f in texts],
                    audio=_matrix(fields['audio'], key), visual=_matrix(fields['visual'], key))


def _length(f, key):
    try:
        return len(f.values[key])
    except TypeError:
        raise UserError(f"{f.path}: dialogue {key!r} in {f.item} should be a sequence with one entry "
                        f"per utterance, but it is a {type(f.values[key]).__name__}.") from None


def _matrix(f, key):
    """A dialogue's features as a C-contiguous float32 (n, dim) array with finite values."""
    value = f.values[key]
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = list(value)
    try:
        with np.errstate(over='ignore'):        # values beyond float32's range become inf: refused below
            matrix = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    except (ValueError, TypeError):
        raise UserError(f"{f.path}: dialogue {key!r} in {f.item}: the utterance feature vectors are not "
                        "numbers of one common dimension.") from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise UserError(f"{f.path}: dialogue {key!r} in {f.item} should be an (utterances, dim) array with "
                        f"dim >= 1, but its shape is {matrix.shape}.")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        utterance = int(np.flatnonzero(~finite)[0])
        raise UserError(f"{f.path}: dialogue {key!r}, utterance {utterance}: {f.item} contains NaN or "
                        "infinite values (or values beyond float32's range).")
    return matrix


def _common_dim(dialogues, fields, get):
    """The feature dimension shared by every dialogue of these fields, or a UserError naming the odd one."""
    dims = []
    for i, f in enumerate(fields):
        per_dialogue = {key: get(d, i).shape[1] for key, d in dialogues.items()}
        usual = Counter(per_dialogue.values()).most_common(1)[0][0]
        odd = [key for key, dim in per_dialogue.items() if dim != usual]
        if odd:
            raise UserError(f"{f.path}: dialogue {odd[0]!r} has {per_dialogue[odd[0]]}-d {f.item} features, "
                            f"but the rest of the file has {usual}-d ones.")
        dims.append(usual)
    if len(set(dims)) > 1:
        raise UserError(f"{fields[0].path}: the text inputs differ in dimension "
                        f"({', '.join(f'{f.item} {d}-d' for f, d in zip(fields, dims))}); they must match.")
    return dims[0]


def _letter_speakers(value, n_speakers):
    codes = {'M': 0, 'F': 1}
    return np.array([codes.get(s, -1) if isinstance(s, str) else -1 for s in value], dtype=np.int64)


def _onehot_speakers(value, n_speakers):
    def index(row):
        try:
            row = np.asarray(row, dtype=np.float64)
        except (ValueError, TypeError):
            return -1
        is_onehot = row.shape == (n_speakers,) and ((row == 0) | (row == 1)).all() and row.sum() == 1
        return int(row.argmax()) if is_onehot else -1
    return np.array([index(row) for row in value], dtype=np.int64)


def _single_speaker(value, n_speakers):
    return np.zeros(len(value), dtype=np.int64)


# speaker_format -> (reader giving a speaker index per utterance, -1 where unknown; what is expected)
SPEAKER_FORMATS = {
    'MF': (_letter_speakers, "'M' or 'F'"),
    'onehot': (_onehot_speakers, "a one-hot list of length {n}"),
    'single': (_single_speaker, "anything (every utterance is speaker 0)"),
}


def _speakers(info, f, key):
    read, expected = SPEAKER_FORMATS[info.speaker_format]
    speakers = read(f.values[key], info.n_speakers)
    if (speakers < 0).any():
        utterance = int(np.flatnonzero(speakers < 0)[0])
        raise UserError(f"{f.path}: dialogue {key!r}, utterance {utterance}: unknown speaker "
                        f"{f.values[key][utterance]!r} in {f.item}; expected "
                        f"{expected.format(n=info.n_speakers)}.")
    return speakers


def _labels(info, f, key):
    """Class indices; MOSEI scores in [-3, 3] become their 7 bins."""
    try:
        values = np.asarray(f.values[key], dtype=np.float64)
    except (ValueError, TypeError):
        raise UserError(f"{f.path}: dialogue {key!r}: {f.item} should be a list of numbers.") from None
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]                               # (n, 1) score columns
    if values.ndim != 1:
        raise UserError(f"{f.path}: dialogue {key!r}: {f.item} should be one number per utterance, "
                        f"but its shape is {values.shape}.")
    if info.label_format == 'score':
        bad = ~(np.abs(values) <= 3)
        expected = "a finite sentiment score in [-3, 3]"
    else:
        bad = ~((values >= 0) & (values < info.n_classes) & (values == np.round(values)))
        expected = f"a class index 0..{info.n_classes - 1} ({', '.join(info.label_names)})"
    if bad.any():
        utterance = int(np.flatnonzero(bad)[0])
        raise UserError(f"{f.path}: dialogue {key!r}, utterance {utterance}: label {values[utterance].item():g} "
                        f"in {f.item} is not {expected}.")
    return sentiment_bins(values) if info.label_format == 'score' else values.astype(np.int64)


# ----------------------------------------------------------------------------- splits and batches

def split_valid(train_keys, fraction, seed):
    """Hold out a seeded share of training dialogues: (train, valid), both in the original order.

    round(fraction * n) dialogues (at least one when fraction > 0) are drawn by
    np.random.default_rng(seed); the same keys, fraction and seed always give the same split.
    """
    n_valid = max(int(round(fraction * len(train_keys))), 1 if fraction > 0 else 0)
    if n_valid >= len(train_keys):
        raise UserError(f"holding out {fraction} of {len(train_keys)} training dialogues leaves none to train on.")
    held_out = set(np.random.default_rng(seed).permutation(len(train_keys))[:n_valid].tolist())
    return ([key for i, key in enumerate(train_keys) if i not in held_out],
            [key for i, key in enumerate(train_keys) if i in held_out])


@dataclass
class Batch:
    text: list              # four float (T, B, D_text)
    audio: torch.Tensor     # (T, B, D_audio)
    visual: torch.Tensor    # (T, B, D_visual)
    qmask: torch.Tensor     # (T, B, n_speakers) one-hot speaker, zeros on padding
    lengths: list           # utterances per dialogue
    labels: torch.Tensor    # long (N,), unpadded, dialogue after dialogue
    speakers: torch.Tensor  # long (N,)
    keys: list

    def to(self, device):
        return Batch(text=[t.to(device) for t in self.text], audio=self.audio.to(device),
                     visual=self.visual.to(device), qmask=self.qmask.to(device), lengths=self.lengths,
                     labels=self.labels.to(device), speakers=self.speakers.to(device), keys=self.keys)


@dataclass
class _DialogueTensors:
    text: list
    audio: torch.Tensor
    visual: torch.Tensor
    qmask: torch.Tensor
    labels: torch.Tensor
    speakers: torch.Tensor


def _tensor(array):
    """A torch view of a numpy array (a copy only when the array is read-only)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def dialogue_tensors(fs, key):
    """The dialogue's tensors, made once and cached on the FeatureSet."""
    if key not in fs.tensors:
        d = fs.dialogues[key]
        speakers = _tensor(d.speakers)
        fs.tensors[key] = _DialogueTensors(
            text=[_tensor(t) for t in d.text], audio=_tensor(d.audio), visual=_tensor(d.visual),
            qmask=torch.nn.functional.one_hot(speakers, fs.n_speakers).float(),
            labels=_tensor(d.labels), speakers=speakers)
    return fs.tensors[key]


def make_batch(fs, keys):
    """One time-major, zero-padded Batch of these dialogues, in this order."""
    parts = [dialogue_tensors(fs, key) for key in keys]
    return Batch(text=[pad_sequence([p.text[i] for p in parts]) for i in range(4)],
                 audio=pad_sequence([p.audio for p in parts]),
                 visual=pad_sequence([p.visual for p in parts]),
                 qmask=pad_sequence([p.qmask for p in parts]),
                 lengths=[len(p.labels) for p in parts],
                 labels=torch.cat([p.labels for p in parts]),
                 speakers=torch.cat([p.speakers for p in parts]),
                 keys=list(keys))


def iterate_batches(fs, keys, batch_size):
    """Batches of batch_size dialogues, keys in the given order (training.Protocol decides the order)."""
    keys = list(keys)
    for start in range(0, len(keys), batch_size):
        yield make_batch(fs, keys[start:start + batch_size])
