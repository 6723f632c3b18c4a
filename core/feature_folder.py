"""The feature folder: MoED's input features of your own conversations, as extract_features.py writes them,
train.py / baseline.py load them and predict.py builds them again for new conversations.

    meta = write_folder(out, arrays, utterances, fields)        # extract_features.py; atomic, hashes recorded
    fs = load(folder)                                           # a CustomFeatureSet; train, dev, test keys
    check_modals(fs, 'avl')                                     # a UserError unless each letter was extracted
    fs = conversation_set(keys, speakers, labels, arrays, ...)  # predict.py: new conversations, all in test

The files (written whole into a temporary folder beside the target, then renamed into place):

    dataset.json     what the folder holds and how it was made (the fields below)
    features.npz     float32 arrays, rows in utterances.csv order: text (4, N, D_text) (the four text inputs),
                     and audio (N, D_audio) / visual (N, D_visual) when extracted
    utterances.csv   one row per utterance (UTTERANCE_COLUMNS): dialogue_key ('<file name>:<dialogue id>'),
                     file, dialogue, turn, speaker, speaker_index (0..n_speakers-1), text, label ('' when the
                     CSV had none), split (train, dev, test); each dialogue's rows together, ordered by split,
                     input file, dialogue (first appearance), turn
    media.csv        when the CSVs name media files: each file read (recordings, .npy vectors) once, by its
                     absolute path, with its sha256 (MEDIA_COLUMNS); the recipe's media_sha256 covers them
    moed_head.pth    with extract_features.py --finetune-head moed: the MoED fine-tuned with the encoder
                     (save_head: its model configuration and state_dict), which train.py starts from (read_head)
    (extras)         any other file or subfolder the writer is given (write_folder's extras), e.g. a text
                     encoder; each of its files is listed in `files` like the two above

dataset.json's fields (format version 1; * = read back by the loader, the others describe):

    format*, format_version*  'moed-conversation-features', 1
    written_by                'extract_features.py'
    label_names*              the labels, sorted by name; a label's index is its position ([] when unlabelled)
    label_order               'sorted by name'
    n_classes                 len(label_names)
    n_speakers*               the number of speaker indices
    speakers*                 the speaker scheme: {'scheme': 'party', max_speakers, most_parties_in_a_dialogue,
                              rule} or {'scheme': 'top-K', 'names': the K names, other_index: K, rule}
    modals*                   letters of the extracted modalities, in l a v order ('l', 'la', 'lav', ...)
    modalities*               per modality its recipe, dimension and details (text: its 'encoder' with text_model,
                              class, sha256 of weights and vocabulary, hidden_states; layers; pooling; ...;
                              audio / visual of recordings: decoder, extractor or model and its sha256, fps,
                              face detector, descriptor, pooling; visual: utterances_without_face, frames,
                              frames_with_face)
    dims                      D_text, D_audio, D_visual (0 for a modality not extracted)
    counts                    per split: dialogues, utterances, and utterances per label
    inputs                    the input CSVs: path, name, sha256, schema, columns
    settings                  extract_features.py's flags (but the CSVs)
    versions                  python, torch, transformers, tokenizers, opensmile, numpy, av, opencv (features.versions)
    recipe                    everything the features depend on (inputs' and media files' sha256, encoder sha256,
                              layers, speaker scheme, library versions): an equal recipe means equal features
    files*                    relative path -> sha256 of every file in the folder but dataset.json
    meta_sha256*              sha256 of this file's other fields (canonical JSON: sorted keys, compact)

Validated on every read: dataset.json's fields, utterances.csv's rows and features.npz's arrays are checked
whenever a folder is loaded (80 ms beside the 0.6 s that reading and hashing take, for 9.5k utterances of 384-d
text on a 2-core CPU), and a file whose sha256 differs from the one recorded in `files` is refused: a reader
hashes the files it reads (training: TRAINING_READS; encoder/ is checked by its own weights' hash where
predict.py loads it, so a large encoder is not hashed on every run). meta_sha256 proves only that dataset.json
was not edited since its meta_sha256 was computed (a hand edit that did not recompute it): anyone can write a
matching one, so it vouches for nothing else; an extraction is up to date only when it and every file's hash
match (trusted_meta).
"""
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from dataloader import Dialogue, FeatureSet
from utils import UserError, as_json, file_sha256, load_json, replace_folder, save_csv, save_json

FORMAT = ('moed-conversation-features', 1)          # dataset.json's format and format_version
META, FEATURES, UTTERANCES = 'dataset.json', 'features.npz', 'utterances.csv'
MEDIA = 'media.csv'             # every recording or vector file the features were made of, with its sha256
MEDIA_COLUMNS = ('path', 'sha256')
TRAINING_READS = (FEATURES, UTTERANCES)     # the files train.py reads (encoder/ is predict.py's)
HEAD = 'moed_head.pth'      # --finetune-head moed: MoED fine-tuned with the encoder, where train.py starts
SPLITS = ('train', 'dev', 'test')
MODALITY_LETTERS = {'text': 'l', 'audio': 'a', 'visual': 'v'}     # modality -> its --modals letter
UTTERANCE_COLUMNS = ('dialogue_key', 'file', 'dialogue', 'turn', 'speaker', 'speaker_index', 'text', 'label',
                     'split')


def meta_sha256(meta):
    """sha256 of dataset.json's fields but meta_sha256, as canonical JSON (sorted keys, compact separators)."""
    rest = {key: value for key, value in meta.items() if key != 'meta_sha256'}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(',', ':')).encode()).hexdigest()


# ----------------------------------------------------------------------------- writing

def write_folder(out, arrays, utterances, fields, extras=None):
    """Write the feature folder `out` whole (a temporary folder renamed into place); return dataset.json's fields.

    arrays: modality -> float32 features of the extracted modalities (text (4, N, D); audio, visual (N, D)).
    utterances: the utterances.csv table (UTTERANCE_COLUMNS), one row per row of the arrays.
    fields: dataset.json's describing fields (label_names, label_order, n_speakers, speakers, modalities, counts,
      inputs, settings, versions, recipe, and any new one), in the order they are to appear; format,
      format_version, written_by, n_classes, modals, dims, files and meta_sha256 are added here.
    extras: relative path -> function(path) writing that file or subfolder (e.g. a text encoder's
      save_pretrained), called inside the temporary folder; every file it leaves is hashed into `files`.
    """
    meta = {'format': FORMAT[0], 'format_version': FORMAT[1], 'written_by': 'extract_features.py'}
    meta.update(fields)
    meta['n_classes'] = len(meta['label_names'])
    meta['modals'] = ''.join(letter for m, letter in MODALITY_LETTERS.items() if m in arrays)
    meta['dims'] = {f'D_{m}': int(arrays[m].shape[-1]) if m in arrays else 0 for m in MODALITY_LETTERS}

    written = {}

    def write(folder):
        np.savez(os.path.join(folder, FEATURES), **arrays)
        save_csv(os.path.join(folder, UTTERANCES), utterances)
        for name, write_extra in (extras or {}).items():
            write_extra(os.path.join(folder, name))
        meta['files'] = {name: file_sha256(os.path.join(folder, name)) for name in _files_under(folder)}
        written.update(as_json(meta))           # as a reader sees it: numpy values and tuples as JSON's
        written['meta_sha256'] = meta_sha256(written)
        save_json(os.path.join(folder, META), written)
    replace_folder(out, write)
    return written


def _files_under(folder):
    """Every file under folder but dataset.json, as sorted relative paths with '/' separators."""
    names = [os.path.relpath(os.path.join(root, name), folder).replace(os.sep, '/')
             for root, _, files in os.walk(folder) for name in files]
    return sorted(name for name in names if name != META)


def is_feature_folder(folder):
    """Whether folder/dataset.json says this module wrote the folder (intact or not)."""
    try:
        return load_json(os.path.join(folder, META)).get('format') == FORMAT[0]
    except (OSError, ValueError, AttributeError):
        return False


def trusted_meta(folder):
    """dataset.json of a valid folder whose dataset.json and files all match their recorded hashes (meta_sha256,
    files): none was edited by hand since they were written; None for any other."""
    try:
        meta, unedited = read_meta(folder)
    except UserError:
        return None
    return meta if unedited else None


# ----------------------------------------------------------------------------- reading dataset.json

def read_meta(folder, files=None):
    """(dataset.json, unedited): its format and fields checked, then the sha256 of the recorded files a reader
    reads (files; None: every one). unedited: its meta_sha256 matches its other fields (see the module
    docstring for what that proves). train.py reads features.npz and utterances.csv, never encoder/
    (predict.py checks the encoder's own hash when it loads it), so a large encoder is not hashed per run."""
    path = os.path.join(folder, META)
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: {folder} is not a feature folder written by extract_features.py "
                        "(run it on your conversation CSVs first).")
    try:
        meta = load_json(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path} could not be read as JSON: {err}.") from None
    found = (meta.get('format'), meta.get('format_version')) if isinstance(meta, dict) else None
    if found != FORMAT:
        raise UserError(f"{path} is not the dataset.json of extract_features.py (format {found}, expected "
                        f"{FORMAT}); re-run extract_features.py.")
    _check_fields(path, meta)
    _check_file_hashes(folder, meta, files)
    return meta, meta.get('meta_sha256') == meta_sha256(meta)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _text_encoder(modalities):
    text = modalities.get('text') if isinstance(modalities, dict) else None
    return text.get('encoder') if isinstance(text, dict) else None


def _is_inside(name):
    """A relative path inside the folder ('encoder/model.safetensors'), not dataset.json."""
    parts = name.split('/')
    return name != META and not os.path.isabs(name) and all(part not in ('', '.', '..') for part in parts)


# dataset.json's fields that the loaders read: (key, whether a value is right, what is expected)
META_FIELDS = (
    ('files', lambda v: isinstance(v, dict) and {FEATURES, UTTERANCES} <= set(v)
     and all(_is_inside(name) and isinstance(h, str) for name, h in v.items()),
     f"the sha256 of {FEATURES} and {UTTERANCES}"),
    ('modals', lambda v: isinstance(v, str) and v != '' and set(v) <= set(MODALITY_LETTERS.values())
     and len(set(v)) == len(v), "the letters of the extracted modalities (l, a, v)"),
    ('label_names', lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v) and len(set(v)) == len(v),
     "a list of distinct label names (empty for unlabelled conversations)"),
    ('n_speakers', _is_count, "the number of speaker indices (an integer >= 1)"),
    ('speakers', lambda v: isinstance(v, dict) and (v.get('scheme') == 'party' or isinstance(v.get('names'), list)),
     "the speaker scheme ('party', or top-K with its names)"),
    ('modalities', lambda v: isinstance(_text_encoder(v), dict), "each modality's recipe, the text encoder's included"),
)


def _check_fields(path, meta):
    """The fields of dataset.json that training, testing and the baseline read exist and have the right form."""
    for key, valid, expected in META_FIELDS:
        if key not in meta:
            raise UserError(f"{path} lacks {key} ({expected}); it was not written by this extract_features.py or was "
                            "edited: re-run extract_features.py.")
        if not valid(meta[key]):
            raise UserError(f"{path}: {key} should be {expected}, but it is {json.dumps(meta[key])[:100]}; "
                            "re-run extract_features.py.")


def _check_file_hashes(folder, meta, files=None):
    """The recorded files (those named in files, None: all) are those dataset.json was written with (not
    edited, truncated or swapped)."""
    for name, sha256 in meta['files'].items():
        if files is not None and name not in files:
            continue
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing; the feature folder is incomplete: re-run extract_features.py.")
        if file_sha256(path) != sha256:
            raise UserError(f"{path} is not the file that {os.path.join(folder, META)} was written "
                            "with (its sha256 differs): it was changed after extraction. Re-run extract_features.py.")


# ----------------------------------------------------------------------------- loading the folder

@dataclass
class CustomFeatureSet(FeatureSet):
    """A FeatureSet with the dev split and the extracted modalities of a feature folder."""
    valid_keys: list = field(default_factory=list)     # the dev split's dialogues ([] when there is none)
    modals: str = 'l'                                   # letters of the extracted modalities, l a v order
    meta: dict = field(default_factory=dict, repr=False)   # dataset.json


def load(folder):
    """Read a feature folder, validated (see the module docstring), as a CustomFeatureSet.

    Keys are '<csv file name>:<dialogue id>', in the order of utterances.csv (split, file, first appearance). The
    dialogues of all three splits are in fs.dialogues; a modality that was not extracted has (n, 0) arrays and a
    dimension of 0. Every utterance must have a label, and there must be train and test dialogues.
    """
    meta = read_meta(folder, TRAINING_READS)[0]
    path = os.path.join(folder, UTTERANCES)
    table = _read_utterances(path, meta)
    arrays = _read_arrays(os.path.join(folder, FEATURES), meta, len(table))
    dialogues = dialogues_of(table['dialogue_key'].to_numpy(), table['speaker_index'].to_numpy(),
                             table['label_index'].to_numpy(), arrays)
    split_of = dict(zip(table['dialogue_key'], table['split']))
    keys = {split: [key for key in dialogues if split_of[key] == split] for split in SPLITS}
    for split in ('train', 'test'):
        if not keys[split]:
            raise UserError(f"{path} has no {split} dialogues; training needs a train and a test split (give "
                            "extract_features.py a CSV of each).")
    return CustomFeatureSet(
        name='custom', dims=dims_of(arrays), n_classes=len(meta['label_names']), n_speakers=meta['n_speakers'],
        label_names=tuple(meta['label_names']), train_keys=keys['train'], test_keys=keys['test'],
        dialogues=dialogues, source=[os.path.join(folder, name) for name in (META, FEATURES, UTTERANCES)],
        valid_keys=keys['dev'], modals=meta['modals'], meta=meta)


def _read_utterances(path, meta):
    """utterances.csv with label_index added, checked: every utterance has a label in label_names, a speaker
    index in range and a known split; each dialogue's rows are together and in one split."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    missing = [column for column in UTTERANCE_COLUMNS if column not in table.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; re-run extract_features.py.")
    table['speaker_index'] = pd.to_numeric(table['speaker_index'], errors='coerce')
    label_index = {name: i for i, name in enumerate(meta['label_names'])}
    table['label_index'] = table['label'].map(label_index)
    checks = [(table['label'] == '', "has no label (its CSV had no label column); training needs labels"),
              (table['label_index'].isna() & (table['label'] != ''),
               f"has a label outside dataset.json's label_names ({', '.join(meta['label_names'])})"),
              (~table['speaker_index'].between(0, meta['n_speakers'] - 1),
               f"has a speaker_index outside 0..{meta['n_speakers'] - 1} (n_speakers in dataset.json)"),
              (~table['split'].isin(SPLITS), f"has a split other than {', '.join(SPLITS)}")]
    for bad, what in checks:
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{path}, line {row + 2} (dialogue {table['dialogue_key'].iat[row]}): "
                            f"the utterance {what}.")
    _check_dialogue_blocks(path, table)
    table['speaker_index'] = table['speaker_index'].astype(np.int64)
    table['label_index'] = table['label_index'].astype(np.int64)
    return table


def _check_dialogue_blocks(path, table):
    """Each dialogue's rows are together, and in one split."""
    keys = table['dialogue_key'].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    repeated = pd.Series(keys[starts]).duplicated().to_numpy()
    if repeated.any():
        row = int(starts[repeated][0])
        raise UserError(f"{path}, line {row + 2}: the rows of dialogue {keys[row]} are not together.")
    mixed = table.groupby('dialogue_key', sort=False)['split'].nunique() > 1
    if mixed.any():
        raise UserError(f"{path}: dialogue {mixed.index[mixed.to_numpy()][0]} is in two splits.")


def _read_arrays(path, meta, n):
    """modality -> float32 array ('text': (4, n, D), others (n, D)); (n, 0) for a modality not extracted. The
    arrays' presence, dtype, shape and finiteness are checked."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:
        raise UserError(f"{path} could not be read as a .npz of arrays: {err}.") from None
    arrays = {m: stored.get(m) for m, letter in MODALITY_LETTERS.items() if letter in meta['modals']}
    for modality, array in arrays.items():
        expected = (4, n) if modality == 'text' else (n,)
        if array is None or array.dtype != np.float32 or array.ndim != len(expected) + 1 \
                or array.shape[:-1] != expected:
            found = 'nothing' if array is None else f'{array.dtype} {array.shape}'
            raise UserError(f"{path}: {modality} should be a float32 array of shape {expected + ('D',)} "
                            f"(utterances.csv has {n} rows), but it holds {found}.")
        if not np.isfinite(array).all():
            raise UserError(f"{path}: {modality} contains NaN or infinite values.")
    return with_empty_modalities(arrays, n)


# ----------------------------------------------------------------------------- building FeatureSets

def with_empty_modalities(arrays, n):
    """Every modality in MODALITY_LETTERS order: the given arrays, and (4, n, 0) / (n, 0) float32 zeros for the others
    (a modality not extracted has dimension 0)."""
    return {m: arrays[m] if m in arrays else np.zeros((4, n, 0) if m == 'text' else (n, 0), dtype=np.float32)
            for m in MODALITY_LETTERS}


def dims_of(arrays):
    return {f'D_{m}': arrays[m].shape[-1] for m in MODALITY_LETTERS}


def dialogues_of(keys, speakers, labels, arrays):
    """key -> Dialogue, in order, from per-utterance rows where each dialogue's rows are together: dialogue
    keys, speaker and label indices, and arrays ('text': (4, n, D), 'audio' / 'visual': (n, D))."""
    bounds = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return {keys[start]: Dialogue(key=keys[start], speakers=speakers[start:stop], labels=labels[start:stop],
                                  text=[layer[start:stop] for layer in arrays['text']],
                                  audio=arrays['audio'][start:stop], visual=arrays['visual'][start:stop])
            for start, stop in zip([0, *bounds], [*bounds, len(keys)])}


def conversation_set(keys, speakers, labels, arrays, label_names, n_classes, n_speakers, source):
    """New conversations (predict.py) as a FeatureSet for a run's model: every dialogue in test_keys, in order.

    keys, speakers, labels: per utterance, each dialogue's rows together (labels 0 where there are none);
    arrays: modality -> the extracted features (a modality the model does not use may be left out).
    """
    arrays = with_empty_modalities(arrays, len(keys))
    dialogues = dialogues_of(np.asarray(keys), speakers, labels, arrays)
    return FeatureSet(name='custom', dims=dims_of(arrays), n_classes=n_classes, n_speakers=n_speakers,
                      label_names=tuple(label_names), train_keys=[], test_keys=list(dialogues), dialogues=dialogues,
                      source=list(source))


# ----------------------------------------------------------------------------- the MoED head

def save_head(path, moed):
    """HEAD: the model configuration (dataclass fields) and state_dict (on the CPU) of the MoED that
    extract_features.py --finetune-head moed fine-tuned with the encoder."""
    torch.save({'model_config': asdict(moed.cfg),
                'state_dict': {name: value.detach().cpu() for name, value in moed.state_dict().items()}}, path)


def read_head(folder, meta):
    """(model configuration dict, state_dict) of the folder's HEAD, or None when it has none. Its sha256 is
    checked against dataset.json's files: a matching file is this module's and is read as written."""
    if HEAD not in meta['files']:
        return None
    _check_file_hashes(folder, meta, (HEAD,))
    head = torch.load(os.path.join(folder, HEAD), map_location='cpu', weights_only=True)
    return head['model_config'], head['state_dict']


# ----------------------------------------------------------------------------- what a run reads of it

def speaker_names(meta):
    """Names of a feature folder's speaker indices (dataset.json): 'party i' (the i-th to speak in the dialogue,
    from 0) or the top-K speakers' names and 'other'."""
    speakers = meta['speakers']
    if speakers['scheme'] == 'party':
        return [f'party {i}' for i in range(meta['n_speakers'])]
    return [*speakers['names'], 'other']


def check_modals(fs, modals):
    """Refuse --modals letters whose modality the feature folder does not have."""
    missing = [letter for letter in modals if letter not in fs.modals]
    if missing:
        names = {letter: name for name, letter in MODALITY_LETTERS.items()}
        raise UserError(f"--modals {modals} asks for {', '.join(names[m] for m in missing)}, but "
                        f"{fs.source[0]} was extracted with {', '.join(names[m] for m in fs.modals)} only "
                        f"(--modals letters available: {fs.modals}); re-run extract_features.py with "
                        f"{' and '.join(names[m] + ' paths' for m in missing)} in the CSV, or drop the letter.")
