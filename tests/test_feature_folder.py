"""core/feature_folder.py without an encoder: a folder written by write_folder is read back as written; every read
checks the fields, rows and arrays, a matching meta_sha256 (recomputed by anyone) included, and each of those
checks names the file, line or array. Folders are written directly here (milliseconds)."""
import json
import os

import numpy as np
import pandas as pd
import pytest

import utils
from core import feature_folder as F
from utils import UserError

# three dialogues: a (train, 3 utterances), b (dev, 1), c (test, 2)
KEYS = ['t.csv:a'] * 3 + ['t.csv:b'] + ['t.csv:c'] * 2
SPLITS = ['train'] * 3 + ['dev'] + ['test'] * 2
LABELS = ['joy', 'sad', 'joy', 'sad', 'joy', 'joy']
SPEAKERS = [0, 1, 0, 0, 1, 0]


def utterances():
    return pd.DataFrame({'dialogue_key': KEYS, 'file': 't.csv', 'dialogue': [k[-1] for k in KEYS],
                         'turn': [0, 1, 2, 0, 0, 1], 'speaker': [f'p{s}' for s in SPEAKERS], 'speaker_index': SPEAKERS,
                         'text': 'hi', 'label': LABELS, 'split': SPLITS}, columns=list(F.UTTERANCE_COLUMNS))


def write(folder, extras=None, **arrays):
    arrays = arrays or {'text': np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)}
    fields = {'label_names': ['joy', 'sad'], 'n_speakers': 2, 'speakers': {'scheme': 'party'},
              'modalities': {'text': {'encoder': {'text_model': 'tiny'}}}, 'recipe': {'layers': [1, 2, 3, 4]}}
    return F.write_folder(folder, arrays, utterances(), fields, extras)


def edit_json(folder, edit, rehash=False):
    """Edit dataset.json; rehash: as if written so (a new meta_sha256), else left as a hand edit."""
    meta = json.loads((folder / F.META).read_text())
    edit(meta)
    if rehash:
        meta['meta_sha256'] = F.meta_sha256(meta)
    (folder / F.META).write_text(json.dumps(meta))


def replace_file(folder, name, write_fn):
    """Replace one of the folder's files and record its new sha256 (a consistent but hand-made folder)."""
    write_fn(folder / name)
    edit_json(folder, lambda meta: meta['files'].__setitem__(name, utils.file_sha256(folder / name)))


def test_written_and_read_back(tmp_path):
    meta = write(tmp_path / 'feats')
    assert sorted(os.listdir(tmp_path)) == ['feats']                        # no temporary folder left
    assert meta == json.loads((tmp_path / 'feats' / F.META).read_text())
    assert (meta['n_classes'], meta['modals'], meta['dims']) == (2, 'l', {'D_text': 3, 'D_audio': 0, 'D_visual': 0})
    assert meta['meta_sha256'] == F.meta_sha256(meta) and F.read_meta(tmp_path / 'feats') == (meta, True)
    fs = F.load(tmp_path / 'feats')
    assert (fs.train_keys, fs.valid_keys, fs.test_keys) == (['t.csv:a'], ['t.csv:b'], ['t.csv:c'])
    assert fs.dims == meta['dims'] and fs.n_classes == 2 and fs.n_speakers == 2 and fs.label_names == ('joy', 'sad')
    c = fs.dialogues['t.csv:c']
    assert c.labels.tolist() == [0, 0] and c.speakers.tolist() == [1, 0] and c.audio.shape == (2, 0)
    np.testing.assert_array_equal(c.text[3], np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)[3, 4:])


def test_extra_files_are_written_and_hashed_with_the_rest(tmp_path):
    def encoder(path):
        os.makedirs(path)
        with open(os.path.join(path, 'config.json'), 'w') as f:
            f.write('{}')
        with open(os.path.join(path, 'model.safetensors'), 'wb') as f:
            f.write(b'weights')
    folder = tmp_path / 'feats'
    meta = write(folder, extras={'encoder': encoder})
    assert sorted(meta['files']) == ['encoder/config.json', 'encoder/model.safetensors', 'features.npz',
                                     'utterances.csv']
    assert meta['files']['encoder/model.safetensors'] == utils.file_sha256(folder / 'encoder' / 'model.safetensors')
    assert F.trusted_meta(folder) == meta
    (folder / 'encoder' / 'model.safetensors').write_bytes(b'other weights')
    assert F.trusted_meta(folder) is None
    with pytest.raises(UserError, match=r'encoder/model.safetensors is not the file that .* was written with'):
        F.read_meta(folder)
    assert F.load(folder).meta == meta          # training reads features.npz and utterances.csv, not encoder/
    (folder / 'features.npz').write_bytes(b'other features')
    with pytest.raises(UserError, match=r'features.npz is not the file that .* was written with'):
        F.load(folder)


def test_a_failed_write_leaves_nothing(tmp_path):
    def broken(path):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / 'feats', extras={'encoder': broken})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('rehash', [False, True], ids=['hand edit', 'meta_sha256 recomputed'])
def test_rows_are_checked_whatever_meta_sha256_says(tmp_path, rehash):
    """n_speakers lowered below the indices in utterances.csv: the row check refuses it, whether the edit left
    meta_sha256 stale (then the folder is not up to date for a rerun either) or recomputed it."""
    folder = tmp_path / 'feats'
    write(folder)
    edit_json(folder, lambda meta: meta.__setitem__('n_speakers', 1), rehash=rehash)
    assert F.read_meta(folder)[1] is rehash and (F.trusted_meta(folder) is not None) is rehash
    with pytest.raises(UserError, match=r'utterances.csv, line 3 \(dialogue t.csv:a\): the utterance has a '
                                        r'speaker_index outside 0..0 \(n_speakers in dataset.json\)'):
        F.load(folder)


def test_arrays_and_fields_are_checked_whatever_meta_sha256_says(tmp_path):
    folder = tmp_path / 'feats'
    text = np.zeros((4, 6, 3), np.float32)
    text[2, 1, 0] = np.nan
    write(folder, text=text)
    assert F.read_meta(folder)[1] is True
    with pytest.raises(UserError, match='features.npz: text contains NaN or infinite values'):
        F.load(folder)
    edit_json(folder, lambda meta: meta.__setitem__('modals', 'lx'), rehash=True)
    with pytest.raises(UserError, match='modals should be the letters of the extracted modalities'):
        F.read_meta(folder)


def test_a_folder_without_meta_sha256_is_checked_and_loads(tmp_path):
    folder = tmp_path / 'feats'
    write(folder)
    edit_json(folder, lambda meta: meta.pop('meta_sha256'))
    assert F.read_meta(folder)[1] is False
    assert F.load(folder).test_keys == ['t.csv:c']


def test_unlabelled_utterances_and_missing_splits_are_refused(tmp_path):
    labels = LABELS.copy()
    labels[4] = ''
    table = utterances().assign(label=labels)
    F.write_folder(tmp_path / 'a', {'text': np.zeros((4, 6, 3), np.float32)}, table,
                   {'label_names': ['joy', 'sad'], 'n_speakers': 2, 'speakers': {'scheme': 'party'},
                    'modalities': {'text': {'encoder': {}}}})
    with pytest.raises(UserError, match=r'line 6 \(dialogue t.csv:c\): the utterance has no label'):
        F.load(tmp_path / 'a')
    F.write_folder(tmp_path / 'b', {'text': np.zeros((4, 6, 3), np.float32)}, utterances().assign(split='train'),
                   {'label_names': ['joy', 'sad'], 'n_speakers': 2, 'speakers': {'scheme': 'party'},
                    'modalities': {'text': {'encoder': {}}}})
    with pytest.raises(UserError, match='utterances.csv has no test dialogues'):
        F.load(tmp_path / 'b')


def save_table(table):
    return lambda path: table.to_csv(path, index=False)


def save_arrays(**arrays):
    return lambda path: np.savez(path, **arrays)


TABLE = utterances()
HAND_MADE = {   # name -> (file, how it is written, words of the message)
    'a label not in label_names': ('utterances.csv', save_table(TABLE.assign(label=['joy'] * 5 + ['angry'])),
                                   "line 7 (dialogue t.csv:c): the utterance has a label outside dataset.json's "
                                   "label_names (joy, sad)"),
    'an unknown split': ('utterances.csv', save_table(TABLE.assign(split=SPLITS[:5] + ['valid'])),
                         'line 7 (dialogue t.csv:c): the utterance has a split other than train, dev, test'),
    'a missing column': ('utterances.csv', save_table(TABLE.drop(columns='turn')), 'lacks the column(s) turn'),
    'a dialogue in pieces': ('utterances.csv', save_table(TABLE.iloc[[0, 1, 3, 2, 4, 5]]),
                             'line 5: the rows of dialogue t.csv:a are not together'),
    'a dialogue in two splits': ('utterances.csv', save_table(TABLE.assign(split=['train', 'dev'] + SPLITS[2:])),
                                 'dialogue t.csv:a is in two splits'),
    'text of another length': ('features.npz', save_arrays(text=np.zeros((4, 5, 3), np.float32)),
                               'text should be a float32 array of shape (4, 6, \'D\') (utterances.csv has 6 rows), '
                               'but it holds float32 (4, 5, 3)'),
    'text as float64': ('features.npz', save_arrays(text=np.zeros((4, 6, 3))), 'but it holds float64'),
    'no text': ('features.npz', save_arrays(audio=np.zeros((6, 3), np.float32)), 'but it holds nothing'),
    'a NaN': ('features.npz', save_arrays(text=np.full((4, 6, 3), np.nan, np.float32)),
              'text contains NaN or infinite values'),
}


@pytest.mark.parametrize('name', HAND_MADE)
def test_a_hand_made_folder_gets_every_check(tmp_path, name):
    file_name, write_fn, words = HAND_MADE[name]
    folder = tmp_path / 'feats'
    write(folder)
    replace_file(folder, file_name, write_fn)
    with pytest.raises(UserError) as error:
        F.load(folder)
    assert str(folder / file_name) in str(error.value) and words in str(error.value)


def test_conversation_set_fills_the_modalities_left_out():
    arrays = {'visual': np.ones((6, 2), np.float32)}
    fs = F.conversation_set(np.array(KEYS), np.array(SPEAKERS), np.zeros(6, np.int64), arrays, ['joy', 'sad'], 2, 2,
                            ['new.csv'])
    assert fs.test_keys == ['t.csv:a', 't.csv:b', 't.csv:c'] and fs.train_keys == []
    assert fs.dims == {'D_text': 0, 'D_audio': 0, 'D_visual': 2}
    a = fs.dialogues['t.csv:a']
    assert len(a.text) == 4 and a.text[0].shape == (3, 0) and a.audio.shape == (3, 0) and a.visual.shape == (3, 2)
