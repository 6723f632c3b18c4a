"""dataloader.py: the real pickle formats, validation errors, safe unpickling, batches, splits, synthetic data.

The tiny datasets below are written in each real on-disk format, spelled out here
independently of dataloader.py, so a wrong layout in the loader fails these tests.
"""
import builtins
import collections
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

import dataloader as D
from core import synthetic as S
from utils import UserError

MAIN = ['videoIDs', 'videoSpeakers', 'videoLabels', 'videoText', 'videoAudio', 'videoVisual', 'videoSentence',
        'trainVid', 'testVid']
ROBERTA = ['roberta1', 'roberta2', 'roberta3', 'roberta4']
DIMS = {'D_text': 6, 'D_audio': 5, 'D_visual': 3}
UNUSED_TEXT_DIM = 4


def onehot(index, width):
    return [int(i == index) for i in range(width)]


# Per dataset: folder, files (name -> tuple items), pickle protocol, text items, whether the splits are sets,
# and dialogues (key, raw speakers, raw labels, expected speakers, expected labels); the last one is the test
# split.
FORMATS = {
    'IEMOCAP': dict(
        folder='IEMOCAP_features', protocol=2, text=ROBERTA, split_type=set,
        files={'IEMOCAP_features.pkl': MAIN,
               'iemocap_features_roberta.pkl': ['videoSpeakers', 'videoLabels', *ROBERTA, 'videoSentence',
                                                'trainVid', 'testVid', 'validVid']},
        dialogues=[('Ses02_b', ['M', 'F', 'M'], [5, 0, 3], [0, 1, 0], [5, 0, 3]),
                   ('Ses04_c', ['M'], [2], [0], [2]),
                   ('Ses01_a', ['F', 'F'], [1, 2], [1, 1], [1, 2]),
                   ('Ses03_z', ['F', 'M'], [0, 0], [1, 0], [0, 0]),
                   ('Ses05_t', ['F', 'M', 'M', 'F'], [4, 4, 0, 1], [1, 0, 0, 1], [4, 4, 0, 1])]),
    'MELD': dict(
        folder='MELD_features', protocol=4, text=ROBERTA, split_type=list,
        files={'MELD_features_raw1.pkl': MAIN + ['videoSentiment'],
               'meld_features_roberta.pkl': ['videoSpeakers', 'videoLabels', 'videoSentiment', *ROBERTA,
                                             'videoSentence', 'trainVid', 'testVid', 'validVid']},
        dialogues=[(12, [onehot(i, 9) for i in (0, 2, 8)], [6, 0, 1], [0, 2, 8], [6, 0, 1]),
                   (3, np.array([onehot(i, 9) for i in (1, 1)]), np.array([2, 3]), [1, 1], [2, 3]),
                   (40, [onehot(i, 9) for i in (4, 0, 3, 3)], [4, 5, 6, 0], [4, 0, 3, 3], [4, 5, 6, 0])]),
    'MOSEI': dict(
        folder='CMU-MOSEI_features', protocol=5, text=['videoText'] * 4, split_type=list,
        files={'cmumosei_multi_regression_features.pkl': MAIN},
        dialogues=[('vid_b', [[1, 0]] * 3, [-3.0, -2.0001, -2.0], [0] * 3, [0, 0, 1]),
                   ('vid_a', [[1, 0]] * 2, np.array([[-1.5], [-1.0]], np.float32), [0] * 2, [1, 2]),
                   ('vid_z', [[1, 0]] * 8, [-0.3, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0] * 8,
                    [2, 3, 4, 4, 5, 5, 6, 6])]),
}
NAMES = list(FORMATS)


def feature_dims(name):
    """item -> dim of every feature item of the dataset's files."""
    text = {item: DIMS['D_text'] for item in FORMATS[name]['text']}
    return {'videoText': UNUSED_TEXT_DIM, 'videoAudio': DIMS['D_audio'], 'videoVisual': DIMS['D_visual'], **text}


def raw_dataset(name):
    """The tiny dataset as {file name: list of tuple items}, ready to be broken by a test and written."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(0)
    keys = [key for key, *_ in fmt['dialogues']]
    items = collections.defaultdict(dict)
    for i, (key, speakers, labels, _, _) in enumerate(fmt['dialogues']):
        n = len(labels)
        items['videoIDs'][key] = [f'{key}_{j}' for j in range(n)]
        items['videoSpeakers'][key] = speakers
        items['videoLabels'][key] = labels
        items['videoSentence'][key] = ['words'] * n
        items['videoSentiment'][key] = [0] * n
        for item, dim in feature_dims(name).items():
            matrix = rng.standard_normal((n, dim))
            # the three forms real files use: a 2-D array, a list of 1-D arrays, a list of lists
            items[item][key] = [matrix.astype(np.float32), list(matrix.astype(np.float32)), matrix.tolist()][i % 3]
    items.update(trainVid=fmt['split_type'](keys[:-1]), testVid=fmt['split_type'](keys[-1:]), validVid=[])
    return {file_name: [items[item] for item in names] for file_name, names in fmt['files'].items()}


def item_of(raw, name, item):
    """The named item of the first file that has it."""
    for file_name, names in FORMATS[name]['files'].items():
        if item in names:
            return raw[file_name][names.index(item)]


def write_dataset(data_dir, name, raw=None):
    folder = os.path.join(data_dir, FORMATS[name]['folder'])
    os.makedirs(folder, exist_ok=True)
    for file_name, content in (raw or raw_dataset(name)).items():
        with open(os.path.join(folder, file_name), 'wb') as f:
            pickle.dump(tuple(content), f, protocol=FORMATS[name]['protocol'])
    return str(data_dir)


def expected_split(name, keys):
    return sorted(keys) if FORMATS[name]['split_type'] is set else list(keys)


# ----------------------------------------------------------------------------- loading the real formats

@pytest.mark.parametrize('name', NAMES)
def test_real_format_loads(tmp_path, name):
    fs = D.load_features(name, write_dataset(tmp_path, name))
    fmt, info = FORMATS[name], D.DATASETS[name]
    keys = [key for key, *_ in fmt['dialogues']]
    assert fs.train_keys == expected_split(name, keys[:-1]) and fs.test_keys == keys[-1:]
    assert fs.dims == DIMS
    assert (fs.name, fs.n_classes, fs.n_speakers, tuple(fs.label_names)) == \
        (name, len(info.label_names), info.n_speakers, tuple(info.label_names))
    assert [os.path.basename(p) for p in fs.source] == list(fmt['files'])
    raw = raw_dataset(name)
    for key, _, _, speakers, labels in fmt['dialogues']:
        d = fs.dialogues[key]
        assert d.speakers.dtype == np.int64 and d.speakers.tolist() == speakers
        assert d.labels.dtype == np.int64 and d.labels.tolist() == labels
        for got, item in [(d.audio, 'videoAudio'), (d.visual, 'videoVisual')] + list(zip(d.text, fmt['text'])):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, np.asarray(item_of(raw, name, item)[key], dtype=np.float32))


def test_mosei_bins_and_dataset_table():
    scores = [-3, -2.5, -2.0001, -2, -1.5, -1, -0.5, -1e-9, 0, 1e-9, 0.5, 1, 1.5, 2, 2.0001, 3]
    assert D.sentiment_bins(scores).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 4, 5, 5, 6, 6]
    table = {name: (info.folder, info.n_speakers, info.n_classes, info.D_text, info.D_audio, info.D_visual)
             for name, info in D.DATASETS.items()}
    assert table == {'IEMOCAP': ('IEMOCAP_features', 2, 6, 1024, 1582, 342),
                     'MELD': ('MELD_features', 9, 7, 1024, 300, 342),
                     'MOSEI': ('CMU-MOSEI_features', 1, 7, 1024, 384, 35)}
    assert D.DATASETS['IEMOCAP'].label_names == ('hap', 'sad', 'neu', 'ang', 'exc', 'fru')
    assert D.DATASETS['MELD'].label_names == ('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust', 'anger')


# ----------------------------------------------------------------------------- bad inputs

def set_value(item, key, value):
    def mutate(raw, name):
        item_of(raw, name, item)[key] = value
    return mutate


def edit_value(item, key, edit):
    def mutate(raw, name):
        values = item_of(raw, name, item)
        values[key] = edit(np.array(values[key], dtype=object if item == 'videoSpeakers' else None))
    return mutate


def with_nan(matrix):
    matrix = np.array(matrix, dtype=np.float32)
    matrix[1, 2] = np.nan
    return matrix


def empty_dialogue(key):
    def mutate(raw, name):
        for item in ['videoSpeakers', 'videoLabels', 'videoAudio', 'videoVisual', *FORMATS[name]['text']]:
            item_of(raw, name, item)[key] = []
    return mutate


def add_to_split(split, key):
    def mutate(raw, name):
        keys = item_of(raw, name, split)
        keys.add(key) if isinstance(keys, set) else keys.append(key)
    return mutate


def drop_tuple_item(file_name):
    def mutate(raw, name):
        raw[file_name].pop()
    return mutate


def drop_entry(item, key):
    def mutate(raw, name):
        del item_of(raw, name, item)[key]
    return mutate


def widen_everywhere(item):
    def mutate(raw, name):
        values = item_of(raw, name, item)
        for key in values:
            values[key] = np.hstack([values[key], np.zeros((len(values[key]), 1))])
    return mutate


def no_columns_everywhere(item):
    def mutate(raw, name):
        values = item_of(raw, name, item)
        for key in values:
            values[key] = np.zeros((len(values[key]), 0), np.float32)
    return mutate


def replace_item(item, value):
    def mutate(raw, name):
        for file_name, names in FORMATS[name]['files'].items():
            if item in names:
                raw[file_name][names.index(item)] = value
    return mutate


IEM_MAIN, IEM_TEXT = 'IEMOCAP_features.pkl', 'iemocap_features_roberta.pkl'
MELD_MAIN, MELD_TEXT = 'MELD_features_raw1.pkl', 'meld_features_roberta.pkl'
MOSEI_MAIN = 'cmumosei_multi_regression_features.pkl'

# (id, dataset, mutation, file named in the message, dialogue named (None: none), words in the message)
BAD_INPUTS = [
    ('tuple length', 'IEMOCAP', drop_tuple_item(IEM_TEXT), IEM_TEXT, None, 'tuple of 10 items'),
    ('tuple length main', 'MOSEI', drop_tuple_item(MOSEI_MAIN), MOSEI_MAIN, None, 'tuple of 9 items'),
    ('rows vs labels', 'MELD', edit_value('videoAudio', 3, lambda m: m[:1]), MELD_MAIN, 3, '1 rows in videoAudio'),
    ('text vs labels', 'IEMOCAP', edit_value('roberta3', 'Ses05_t', lambda m: m[:3]), IEM_TEXT, 'Ses05_t',
     'roberta3'),
    ('speakers vs labels', 'MOSEI', edit_value('videoSpeakers', 'vid_z', lambda s: s[:-1]), MOSEI_MAIN, 'vid_z',
     'videoSpeakers'),
    ('ragged rows', 'MELD', set_value('videoVisual', 40, [[0.0] * 3, [0.0] * 3, [0.0] * 2, [0.0] * 3]),
     MELD_MAIN, 40, 'videoVisual'),
    ('feature dim', 'MOSEI', edit_value('videoVisual', 'vid_a', lambda m: np.hstack([m, m[:, :1]])),
     MOSEI_MAIN, 'vid_a', '4-d'),
    ('text dims differ', 'IEMOCAP', widen_everywhere('roberta2'), IEM_TEXT, None, 'roberta2 7-d'),
    ('no feature columns', 'MELD', no_columns_everywhere('videoVisual'), MELD_MAIN, 12,
     'videoVisual should be an (utterances, dim) array with dim >= 1, but its shape is (3, 0)'),
    ('beyond float32', 'IEMOCAP', set_value('videoAudio', 'Ses02_b', [[1e300] * 5] * 3), IEM_MAIN, 'Ses02_b',
     "utterance 0: videoAudio contains NaN or infinite values (or values beyond float32's range)"),
    ('label too big', 'IEMOCAP', set_value('videoLabels', 'Ses01_a', [1, 6]), IEM_MAIN, 'Ses01_a', 'label 6 '),
    ('label negative', 'MELD', set_value('videoLabels', 12, [6, -1, 1]), MELD_MAIN, 12, 'label -1 '),
    ('label fractional', 'MELD', set_value('videoLabels', 3, [2, 2.5]), MELD_MAIN, 3, 'label 2.5 '),
    ('score too big', 'MOSEI', set_value('videoLabels', 'vid_a', [-1.5, 3.5]), MOSEI_MAIN, 'vid_a',
     'label 3.5 in videoLabels is not a finite sentiment score in [-3, 3]'),
    ('score nan', 'MOSEI', set_value('videoLabels', 'vid_a', [float('nan'), 1.0]), MOSEI_MAIN, 'vid_a',
     'label nan '),
    ('nan audio', 'IEMOCAP', edit_value('videoAudio', 'Ses02_b', with_nan), IEM_MAIN, 'Ses02_b', 'utterance 1'),
    ('inf text', 'MELD', edit_value('roberta4', 40, lambda m: m * np.inf), MELD_TEXT, 40, 'roberta4'),
    ('nan mosei text', 'MOSEI', edit_value('videoText', 'vid_z', with_nan), MOSEI_MAIN, 'vid_z', 'NaN'),
    ('empty dialogue', 'MOSEI', empty_dialogue('vid_a'), MOSEI_MAIN, 'vid_a', 'empty'),
    ('in both splits', 'IEMOCAP', add_to_split('testVid', 'Ses01_a'), IEM_MAIN, 'Ses01_a', 'both'),
    ('twice in a split', 'MOSEI', add_to_split('trainVid', 'vid_a'), MOSEI_MAIN, 'vid_a', 'twice'),
    ('split key without features', 'MELD', add_to_split('testVid', 99), MELD_MAIN, 99, 'no entry'),
    ('missing text entry', 'IEMOCAP', drop_entry('roberta1', 'Ses01_a'), IEM_TEXT, 'Ses01_a', 'roberta1'),
    ('unknown letter speaker', 'IEMOCAP', set_value('videoSpeakers', 'Ses05_t', ['F', 'M', 'X', 'F']), IEM_MAIN,
     'Ses05_t', "'X'"),
    ('two-hot speaker', 'MELD', set_value('videoSpeakers', 3, [onehot(1, 9), [1, 1] + [0] * 7]), MELD_MAIN, 3,
     'utterance 1'),
    ('short one-hot speaker', 'MELD', set_value('videoSpeakers', 40, [onehot(0, 8)] * 4), MELD_MAIN, 40,
     'one-hot list of length 9'),
    ('field not a dict', 'MELD', replace_item('videoAudio', [1, 2]), MELD_MAIN, None, 'videoAudio'),
    ('split not a list', 'IEMOCAP', replace_item('trainVid', 'Ses01_a'), IEM_MAIN, None, 'trainVid'),
]


@pytest.mark.parametrize('case', BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_user_error_naming_file_and_dialogue(tmp_path, case):
    _, name, mutate, file_name, key, words = case
    raw = raw_dataset(name)
    mutate(raw, name)
    with pytest.raises(UserError) as err:
        D.load_features(name, write_dataset(tmp_path, name, raw))
    message = str(err.value)
    assert file_name in message and words in message, message
    assert key is None or repr(key) in message, message
    assert '\n' not in message


@pytest.mark.parametrize('name', NAMES)
def test_missing_file_says_where_to_get_it(tmp_path, name):
    write_dataset(tmp_path, name)
    missing = list(FORMATS[name]['files'])[-1]
    os.remove(os.path.join(tmp_path, FORMATS[name]['folder'], missing))
    with pytest.raises(UserError) as err:
        D.load_features(name, str(tmp_path))
    message = str(err.value)
    for words in [missing, FORMATS[name]['folder'], D.DATASETS[name].url, '--synthetic']:
        assert words in message, message


def test_garbage_file_and_unknown_dataset(tmp_path):
    write_dataset(tmp_path, 'MELD')
    path = os.path.join(tmp_path, 'MELD_features', 'meld_features_roberta.pkl')
    with open(path, 'wb') as f:
        f.write(b'<html>not a pickle</html>')
    with pytest.raises(UserError, match='meld_features_roberta.pkl'):
        D.load_features('MELD', str(tmp_path))
    with pytest.raises(UserError, match='IEMOCAP, MELD, MOSEI'):
        D.load_features('iemocap', str(tmp_path))


class Exploit:
    """Unpickling this calls fn(*args): what a malicious feature file would do."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def exploits(marker):
    return {'os.system': Exploit(os.system, f'touch {marker}'),
            'builtins.open': Exploit(builtins.open, marker, 'w'),
            'builtins.eval': Exploit(builtins.eval, f'open({marker!r}, "w")'),
            'subprocess.call': Exploit(subprocess.call, ['touch', marker])}


@pytest.mark.parametrize('exploit', list(exploits('x')))
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, exploit):
    marker = str(tmp_path / 'pwned')
    raw = raw_dataset('IEMOCAP')
    item_of(raw, 'IEMOCAP', 'videoAudio')['Ses01_a'] = exploits(marker)[exploit]
    with pytest.raises(UserError) as err:
        D.load_features('IEMOCAP', write_dataset(tmp_path / 'data', 'IEMOCAP', raw))
    message = str(err.value)
    assert 'IEMOCAP_features.pkl' in message and exploit.split('.')[1] in message, message
    assert not os.path.exists(marker)


# ----------------------------------------------------------------------------- batches and splits

@pytest.mark.parametrize('name', NAMES)
def test_batch_layout_padding_and_qmask(tmp_path, name):
    fs = D.load_features(name, write_dataset(tmp_path, name))
    keys = [key for key, *_ in FORMATS[name]['dialogues']][::-1]
    batch = D.make_batch(fs, keys)
    lengths = [len(fs.dialogues[key].labels) for key in keys]
    T, B = max(lengths), len(keys)
    assert batch.keys == keys and batch.lengths == lengths
    assert len(batch.text) == 4 and all(t.shape == (T, B, DIMS['D_text']) for t in batch.text)
    assert batch.audio.shape == (T, B, DIMS['D_audio']) and batch.visual.shape == (T, B, DIMS['D_visual'])
    assert batch.qmask.shape == (T, B, fs.n_speakers) and batch.audio.dtype == torch.float32
    for b, (key, n) in enumerate(zip(keys, lengths)):
        d = fs.dialogues[key]
        for padded, real in [(batch.audio, d.audio), (batch.visual, d.visual)] + list(zip(batch.text, d.text)):
            np.testing.assert_array_equal(padded[:n, b].numpy(), real)
            assert not padded[n:, b].any()
        assert batch.qmask[:n, b].argmax(-1).tolist() == d.speakers.tolist()
        assert (batch.qmask[:n, b].sum(-1) == 1).all() and not batch.qmask[n:, b].any()
    assert batch.labels.dtype == torch.long and batch.speakers.dtype == torch.long
    assert batch.labels.tolist() == [y for key in keys for y in fs.dialogues[key].labels]
    assert batch.speakers.tolist() == [s for key in keys for s in fs.dialogues[key].speakers]
    moved = batch.to('cpu')
    assert moved.keys == keys and torch.equal(moved.text[3], batch.text[3])
    assert torch.equal(moved.qmask, batch.qmask)


def test_iterate_batches_keeps_the_given_order(tmp_path):
    fs = D.load_features('IEMOCAP', S.ensure_synthetic('IEMOCAP', str(tmp_path), scale=0.1))
    keys = fs.train_keys[::-1]
    in_order = [batch.keys for batch in D.iterate_batches(fs, keys, 5)]
    assert [key for chunk in in_order for key in chunk] == keys and all(len(c) == 5 for c in in_order[:-1])


def test_split_valid_is_seeded_disjoint_and_ordered():
    keys = [f'd{i}' for i in range(100)]
    train, valid = D.split_valid(keys, 0.1, seed=7)
    assert len(valid) == 10 and set(train).isdisjoint(valid) and set(train) | set(valid) == set(keys)
    assert train == [k for k in keys if k in set(train)] and valid == [k for k in keys if k in set(valid)]
    assert D.split_valid(keys, 0.1, seed=7) == (train, valid)
    assert D.split_valid(keys, 0.1, seed=8)[1] != valid
    assert D.split_valid(keys, 0.0, seed=7) == (keys, [])
    assert len(D.split_valid(keys[:3], 0.01, seed=7)[1]) == 1


# ----------------------------------------------------------------------------- synthetic data

SYNTHETIC_SCALE = {'IEMOCAP': 0.1, 'MELD': 0.02, 'MOSEI': 0.02}


def snapshot(folder):
    """Every file under folder with its bytes and modification time."""
    paths = [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files]
    return {path: (open(path, 'rb').read(), os.stat(path).st_mtime_ns) for path in paths}


@pytest.mark.parametrize('name', NAMES)
def test_synthetic_is_in_the_real_format_and_loads(tmp_path, name):
    scale, info, shape = SYNTHETIC_SCALE[name], D.DATASETS[name], S.SYNTHETIC[name]
    root = S.ensure_synthetic(name, str(tmp_path), scale=scale, seed=3)
    assert root == os.path.join(str(tmp_path), 'synthetic')
    fs = D.load_features(name, root)
    assert fs.dims == {'D_text': info.D_text, 'D_audio': info.D_audio, 'D_visual': info.D_visual}
    assert (len(fs.train_keys), len(fs.test_keys)) == (round(shape.n_train * scale), round(shape.n_test * scale))
    labels = np.concatenate([d.labels for d in fs.dialogues.values()])
    assert labels.min() >= 0 and labels.max() < info.n_classes and len(set(labels.tolist())) >= 3
    # the raw files, read as the original code reads them
    fmt = FORMATS[name]
    contents = {}
    for file_name, items in fmt['files'].items():
        with open(os.path.join(root, fmt['folder'], file_name), 'rb') as f:
            content = pickle.load(f, encoding='latin1')
        assert isinstance(content, tuple) and len(content) == len(items)
        contents.update(zip(items, content))
    key = contents['trainVid'][0]
    assert isinstance(key, int if name == 'MELD' else str)
    n = len(contents['videoLabels'][key])
    real_dims = {'videoAudio': info.D_audio, 'videoVisual': info.D_visual}
    real_dims.update({item: info.D_text for item in fmt['text']})
    for item in feature_dims(name):
        rows = contents[item][key]
        assert len(rows) == n and all(row.dtype == np.float32 and row.ndim == 1 for row in rows)
        assert item not in real_dims or rows[0].shape == (real_dims[item],)
    speakers = [s for key in contents['trainVid'] for s in contents['videoSpeakers'][key]]
    raw_labels = [y for key in contents['trainVid'] for y in contents['videoLabels'][key]]
    if name == 'IEMOCAP':
        assert set(speakers) == {'M', 'F'} and all(isinstance(y, int) for y in raw_labels)
    elif name == 'MELD':
        assert all(len(s) == 9 and sum(s) == 1 for s in speakers) and max(np.argmax(speakers, 1)) >= 2
    else:
        assert all(s == [1, 0] for s in speakers) and all(isinstance(y, float) for y in raw_labels)
        assert min(raw_labels) >= -3 and max(raw_labels) <= 3 and 0.0 in raw_labels
        train_labels = [y for key in fs.train_keys for y in fs.dialogues[key].labels]
        assert train_labels == D.sentiment_bins(raw_labels).tolist()


def test_synthetic_is_cached_deterministic_and_rewritten_for_other_settings(tmp_path):
    def first_dialogue(data_dir, **kwargs):
        fs = D.load_features('MOSEI', S.ensure_synthetic('MOSEI', str(data_dir), scale=0.01, **kwargs))
        return fs.dialogues[fs.train_keys[0]]
    a = first_dialogue(tmp_path / 'a', seed=5)
    written = snapshot(tmp_path / 'a')
    assert first_dialogue(tmp_path / 'a', seed=5).labels.tolist() == a.labels.tolist()
    assert snapshot(tmp_path / 'a') == written                      # cached: nothing rewritten
    b = first_dialogue(tmp_path / 'b', seed=5)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.labels.tolist() == b.labels.tolist()
    assert not np.array_equal(first_dialogue(tmp_path / 'a', seed=6).audio, a.audio)
    bigger = D.load_features('MOSEI', S.ensure_synthetic('MOSEI', str(tmp_path / 'a'), scale=0.02, seed=6))
    assert len(bigger.train_keys) == round(0.02 * S.SYNTHETIC['MOSEI'].n_train)


def test_synthetic_never_touches_real_feature_folders(tmp_path):
    write_dataset(tmp_path, 'IEMOCAP')
    real = snapshot(tmp_path / 'IEMOCAP_features')
    S.ensure_synthetic('IEMOCAP', str(tmp_path), scale=0.05)
    assert snapshot(tmp_path / 'IEMOCAP_features') == real
    assert D.load_features('IEMOCAP', str(tmp_path)).test_keys == ['Ses05_t']
    # real files placed in the synthetic folder by hand are not overwritten either
    write_dataset(tmp_path / 'other' / 'synthetic', 'IEMOCAP')
    by_hand = snapshot(tmp_path / 'other')
    with pytest.raises(UserError, match='synthetic.json'):
        S.ensure_synthetic('IEMOCAP', str(tmp_path / 'other'), scale=0.05)
    assert snapshot(tmp_path / 'other') == by_hand


@pytest.mark.slow
def test_synthetic_has_emotional_inertia_and_graded_modalities(tmp_path):
    fs = D.load_features('IEMOCAP', S.ensure_synthetic('IEMOCAP', str(tmp_path), scale=0.3))
    keep, prior = [], np.zeros(6)
    for d in fs.dialogues.values():
        last = {}
        for speaker, label in zip(d.speakers.tolist(), d.labels.tolist()):
            if speaker in last:
                keep.append(last[speaker] == label)
            last[speaker] = label
            prior[label] += 1
    chance = ((prior / prior.sum()) ** 2).sum()
    assert np.mean(keep) > chance + 0.3, (np.mean(keep), chance)

    def centroid_accuracy(get):
        """Nearest class mean, fitted on train, scored on test: how informative a modality is alone."""
        X, y = (np.concatenate([get(fs.dialogues[k]) for k in fs.train_keys]),
                np.concatenate([fs.dialogues[k].labels for k in fs.train_keys]))
        means = np.stack([X[y == c].mean(0) for c in range(6)])
        Xt = np.concatenate([get(fs.dialogues[k]) for k in fs.test_keys])
        yt = np.concatenate([fs.dialogues[k].labels for k in fs.test_keys])
        return np.mean(((Xt[:, None] - means[None]) ** 2).sum(-1).argmin(1) == yt)
    text, audio, visual = (centroid_accuracy(lambda d: np.mean(d.text, 0)), centroid_accuracy(lambda d: d.audio),
                           centroid_accuracy(lambda d: d.visual))
    assert text > audio > visual > 1 / 6 + 0.05, (text, audio, visual)
