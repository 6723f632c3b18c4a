"""extract_features.py and feature_folder.load: the pooled layers against a direct computation, the
folder format and dataset.json, speakers, audio (openSMILE) and visual, idempotence, the errors (exit 2,
nothing written), and loading the folder back. The text encoder is a tiny random BERT made here."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
import transformers

import dataloader
import extract_features as X
import utils
from core import feature_folder
from helpers import MAX_POSITIONS, N_LAYERS
from utils import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]


def write_csv(path, rows, columns=('dialogue', 'turn', 'speaker', 'text', 'emotion', 'split')):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


# 2 train dialogues (one with 4 parties), 1 dev, 1 test; one text longer than the encoder's 24 positions
LONG = ' '.join(['hello you'] * 20)
ROWS = [('a', 0, 'Ann', 'Hi!', 'joy', 'train'), ('a', 1, 'Bob', 'Hello you.', 'neutral', 'train'),
        ('a', 2, 'Ann', 'Is the dog ok?', 'anger', 'train'), ('a', 3, 'Cy', 'Yo.', 'neutral', 'train'),
        ('a', 4, 'Dee', LONG, 'joy', 'train'), ('a', 5, 'Bob', 'Fine.', 'neutral', 'train'),
        ('b', 0, 'Bob', 'Ok, fine', 'neutral', 'train'), ('b', 1, 'Eve', "it's you", 'sad', 'train'),
        ('c', 0, 'Eve', 'Hello hello', 'sad', 'dev'), ('c', 1, 'Ann', 'hi', 'joy', 'dev'),
        ('d', 0, 'Zed', 'the end.', 'neutral', 'test'), ('d', 1, 'Ann', 'Ok.', 'anger', 'test')]


@pytest.fixture
def csv(tmp_path):
    return write_csv(tmp_path / 'talks.csv', ROWS)


def extract(encoder_dir, *args):
    return X.main([*map(str, args), '--text-model', str(encoder_dir), '--device', 'cpu'])


def npz(folder):
    with np.load(Path(folder) / 'features.npz') as f:
        return {name: f[name] for name in f.files}


def meta(folder):
    return json.loads((Path(folder) / 'dataset.json').read_text())


def direct_pooling(encoder_dir, texts, layers):
    """Per text, the mean over its tokens of the chosen hidden states, computed alone (no batch, no padding)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(encoder_dir)
    model = transformers.AutoModel.from_pretrained(encoder_dir).eval()
    pooled = []
    for text in texts:
        inputs = tokenizer([text], truncation=True, max_length=MAX_POSITIONS, return_tensors='pt')
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        pooled.append(np.stack([hidden[layer][0].mean(0).numpy() for layer in layers]))
    return np.stack(pooled, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize('layers, expected', [(None, [2, 3, 4, 5]), ('0,-1,3,3', [0, 5, 3, 3])])
def test_pooled_layers_equal_a_direct_computation(tmp_path, csv, encoder_dir, layers, expected):
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out, '--batch-size', 3, *(['--layers', layers] if layers else []))
    text = npz(out)['text']
    utterances = pd.read_csv(out / 'utterances.csv', keep_default_na=False)
    assert text.shape == (4, len(ROWS), 32) and text.dtype == np.float32
    assert meta(out)['modalities']['text']['layers'] == expected
    np.testing.assert_allclose(text, direct_pooling(encoder_dir, utterances['text'], expected), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_folder_format_and_dataset_json(tmp_path, csv, encoder_dir, capsys):
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out)
    assert sorted(os.listdir(out)) == ['dataset.json', 'features.npz', 'utterances.csv']
    assert sorted(os.listdir(tmp_path)) == ['feats', 'talks.csv']          # no temp folder left behind
    assert 'utterances/s' in capsys.readouterr().out
    m = meta(out)
    assert (m['format'], m['format_version']) == feature_folder.FORMAT
    assert m['label_names'] == ['anger', 'joy', 'neutral', 'sad'] and m['n_classes'] == 4
    assert m['modals'] == 'l' and m['dims'] == {'D_text': 32, 'D_audio': 0, 'D_visual': 0}
    assert m['counts']['train'] == {'dialogues': 2, 'utterances': 8,
                                    'labels': {'anger': 1, 'joy': 2, 'neutral': 4, 'sad': 1}}
    assert [m['counts'][s]['utterances'] for s in ('dev', 'test')] == [2, 2]
    text = m['modalities']['text']
    assert text['dim'] == 32 and text['max_length'] == MAX_POSITIONS and text['truncated_utterances'] == 1
    assert text['encoder']['text_model'] == str(encoder_dir) and len(text['encoder']['sha256']) == 64
    assert text['encoder']['class'] == 'BertModel' and text['encoder']['hidden_states'] == N_LAYERS + 1
    assert 'non-padding tokens' in text['pooling']
    assert m['inputs'][0]['sha256'] == utils.file_sha256(csv) and m['inputs'][0]['schema'] == 'plain'
    assert set(m['versions']) >= {'torch', 'transformers', 'opensmile'}
    assert m['files'] == {name: utils.file_sha256(out / name) for name in ('features.npz', 'utterances.csv')}
    rest = json.dumps({key: value for key, value in m.items() if key != 'meta_sha256'}, sort_keys=True,
                      separators=(',', ':'))
    assert m['meta_sha256'] == hashlib.sha256(rest.encode()).hexdigest()
    assert m['settings']['layers'] == [-4, -3, -2, -1] and m['settings']['speakers'] == 'party'
    utterances = pd.read_csv(out / 'utterances.csv', keep_default_na=False)
    assert list(utterances.columns) == list(feature_folder.UTTERANCE_COLUMNS)
    assert utterances['dialogue_key'].unique().tolist() == ['talks.csv:a', 'talks.csv:b', 'talks.csv:c', 'talks.csv:d']


def test_context_turns_keep_an_utterance_too_long_for_any_context(tmp_path, csv, encoder_dir):
    """--context-turns: the previous turns change what the encoder sees; an utterance longer than the encoder's
    window (LONG, 24 positions here) leaves no room for them and is shown alone, truncated, and counted."""
    extract(encoder_dir, csv, '--out', tmp_path / 'plain')
    extract(encoder_dir, csv, '--out', tmp_path / 'past', '--context-turns', 2)
    plain, past = npz(tmp_path / 'plain')['text'], npz(tmp_path / 'past')['text']
    texts = pd.read_csv(tmp_path / 'past' / 'utterances.csv', keep_default_na=False)['text'].tolist()
    long_row, short_row = texts.index(LONG), texts.index('Is the dog ok?')
    assert meta(tmp_path / 'past')['modalities']['text']['truncated_utterances'] == 1
    assert meta(tmp_path / 'past')['settings']['context_turns'] == 2
    np.testing.assert_allclose(past[:, long_row], plain[:, long_row], rtol=1e-5, atol=1e-6)
    assert not np.allclose(past[:, short_row], plain[:, short_row], atol=1e-3)


def test_the_moed_head_reads_the_previous_turn_and_the_speakers_by_default_and_flags_override_it():
    """docs/own-data.md's default recipe: --finetune on text alone is the MoED head with --context-turns 1
    --speaker-in-text; with audio or visual, or frozen, the encoder reads each utterance's text alone."""
    import extract_features

    def resolved(*flags, modalities=('text',)):
        args = extract_features.parse_args(['talks.csv', '--out', 'feats', *flags])
        extract_features.resolve_recipe_defaults(args, list(modalities))
        return args.finetune_head, args.context_turns, args.speaker_in_text

    assert resolved('--finetune') == ('moed', 1, True)
    assert resolved('--finetune', modalities=('text', 'audio', 'visual')) == ('utterance', 0, False)
    assert resolved()[1:] == (0, False)
    assert resolved('--finetune', '--context-turns', '0', '--no-speaker-in-text') == ('moed', 0, False)
    assert resolved('--finetune', '--finetune-head', 'utterance', '--speaker-in-text') == ('utterance', 0, True)


def speaker_index(folder):
    return pd.read_csv(Path(folder) / 'utterances.csv').groupby('dialogue', sort=False)['speaker_index'].apply(list)


@pytest.mark.slow
def test_a_relative_text_model_is_recorded_by_its_absolute_path(tmp_path, csv, encoder_dir, monkeypatch):
    monkeypatch.chdir(encoder_dir.parent)            # predict.py, run from elsewhere, must still find it
    extract(encoder_dir.name, csv, '--out', tmp_path / 'feats')
    assert meta(tmp_path / 'feats')['modalities']['text']['encoder']['text_model'] == str(encoder_dir)


@pytest.mark.slow
def test_party_speakers_and_their_cap(tmp_path, csv, encoder_dir):
    extract(encoder_dir, csv, '--out', tmp_path / 'all')
    assert meta(tmp_path / 'all')['n_speakers'] == 4
    assert speaker_index(tmp_path / 'all').to_dict() == {'a': [0, 1, 0, 2, 3, 1], 'b': [0, 1], 'c': [0, 1],
                                                         'd': [0, 1]}
    extract(encoder_dir, csv, '--out', tmp_path / 'capped', '--max-speakers', 3)
    assert meta(tmp_path / 'capped')['n_speakers'] == 3
    assert speaker_index(tmp_path / 'capped')['a'] == [0, 1, 0, 2, 2, 1]


@pytest.mark.slow
def test_top_k_speakers(tmp_path, csv, encoder_dir):
    extract(encoder_dir, csv, '--out', tmp_path / 'top', '--speakers', 'top-2')
    m = meta(tmp_path / 'top')
    # train counts: Bob 3, Ann 2, then Cy, Dee, Eve 1 each; Zed (test only) is 'other' too
    assert m['n_speakers'] == 3 and m['speakers']['names'] == ['Bob', 'Ann'] and m['speakers']['other_index'] == 2
    assert speaker_index(tmp_path / 'top').to_dict() == {'a': [1, 0, 1, 2, 2, 0], 'b': [0, 2], 'c': [2, 1],
                                                         'd': [2, 1]}


@pytest.mark.slow
def test_rerun_is_idempotent_and_a_change_rewrites(tmp_path, csv, encoder_dir, capsys):
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out)
    stamps = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)}
    capsys.readouterr()
    extract(encoder_dir, csv, '--out', out, '--batch-size', 5)          # batch size does not change features
    assert 'is up to date' in capsys.readouterr().out
    assert {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out)} == stamps
    before = npz(out)['text']
    extract(encoder_dir, csv, '--out', out, '--layers=-1,-2,-3,-4')
    assert 'wrote' in capsys.readouterr().out
    np.testing.assert_array_equal(npz(out)['text'], before[::-1])
    assert sorted(os.listdir(tmp_path)) == ['feats', 'talks.csv']
    write_csv(csv, ROWS[:-1])                                           # a changed input is re-extracted
    extract(encoder_dir, csv, '--out', out, '--layers=-1,-2,-3,-4')
    assert sum(meta(out)['counts'][s]['utterances'] for s in ('train', 'dev', 'test')) == len(ROWS) - 1


@pytest.mark.slow
def test_a_failed_rewrite_leaves_the_old_folder(tmp_path, csv, encoder_dir, monkeypatch):
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(feature_folder, 'save_csv', interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(encoder_dir, csv, '--out', out, '--layers=0,1,2,3')
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ['feats', 'talks.csv']


@pytest.mark.slow
def test_audio_and_visual(tmp_path, encoder_dir):
    rng = np.random.default_rng(0)
    (tmp_path / 'media').mkdir()
    rows = []
    for i, (dialogue, split) in enumerate([('a', 'train'), ('a', 'train'), ('b', 'test')]):
        t = np.arange(8000) / 16000                                     # half a second of a tone, pitch by row
        wave = 0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t) + 0.01 * rng.standard_normal(len(t))
        soundfile.write(tmp_path / 'media' / f'u{i}.wav', wave.astype(np.float32), 16000)
        np.save(tmp_path / 'media' / f'u{i}.npy', np.full(5, i, dtype=np.float64))
        rows.append((dialogue, i, 'A', 'hi you', 'joy', split, f'media/u{i}.wav', f'media/u{i}.npy'))
    csv = write_csv(tmp_path / 'av.csv', rows, columns=('dialogue', 'turn', 'speaker', 'text', 'emotion', 'split',
                                                        'audio', 'visual'))
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out)
    arrays, m = npz(out), meta(out)
    assert m['modals'] == 'lav' and m['dims'] == {'D_text': 32, 'D_audio': 88, 'D_visual': 5}
    assert m['modalities']['audio']['feature_set'] == 'eGeMAPSv02'
    assert arrays['audio'].shape == (3, 88) and np.isfinite(arrays['audio']).all()
    assert not np.allclose(arrays['audio'][0], arrays['audio'][1])     # different pitch, different features
    np.testing.assert_array_equal(arrays['visual'], np.repeat(np.arange(3, dtype=np.float32)[:, None], 5, 1))
    fs = feature_folder.load(out)
    feature_folder.check_modals(fs, 'avl')
    np.testing.assert_array_equal(fs.dialogues['av.csv:b'].audio, arrays['audio'][2:])


@pytest.mark.slow
def test_load(tmp_path, csv, encoder_dir):
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out)
    fs = feature_folder.load(out)
    assert isinstance(fs, dataloader.FeatureSet) and fs.name == 'custom'
    assert (fs.train_keys, fs.valid_keys, fs.test_keys) == (['talks.csv:a', 'talks.csv:b'], ['talks.csv:c'],
                                                            ['talks.csv:d'])
    assert fs.label_names == ('anger', 'joy', 'neutral', 'sad') and fs.n_classes == 4 and fs.n_speakers == 4
    assert fs.dims == {'D_text': 32, 'D_audio': 0, 'D_visual': 0} and fs.modals == 'l'
    text = npz(out)['text']
    a = fs.dialogues['talks.csv:a']
    assert a.labels.tolist() == [1, 2, 0, 2, 1, 2] and a.speakers.tolist() == [0, 1, 0, 2, 3, 1]
    for layer in range(4):
        np.testing.assert_array_equal(a.text[layer], text[layer, :6])
    assert a.audio.shape == (6, 0) and a.visual.shape == (6, 0)
    batch = dataloader.make_batch(fs, fs.train_keys)
    assert batch.text[0].shape == (6, 2, 32) and batch.audio.shape == (6, 2, 0) and batch.qmask.shape == (6, 2, 4)
    with pytest.raises(UserError, match=r"--modals avl asks for audio, visual, but .* text only"):
        feature_folder.check_modals(fs, 'avl')


@pytest.mark.slow
def test_load_refuses_bad_folders(tmp_path, csv, encoder_dir):
    with pytest.raises(UserError, match='is not a feature folder written by extract_features.py'):
        feature_folder.load(tmp_path)
    unlabelled = write_csv(tmp_path / 'new_test.csv', [(d, t, s, x, sp) for d, t, s, x, _, sp in ROWS],
                           columns=('dialogue', 'turn', 'speaker', 'text', 'split'))
    extract(encoder_dir, unlabelled, '--out', tmp_path / 'unlabelled')
    with pytest.raises(UserError, match=r'line 2 \(dialogue new_test.csv:a\): the utterance has no label'):
        feature_folder.load(tmp_path / 'unlabelled')
    out = tmp_path / 'feats'
    extract(encoder_dir, csv, '--out', out)
    with open(out / 'features.npz', 'ab') as f:
        f.write(b'tampered')
    with pytest.raises(UserError, match='features.npz is not the file that .* was written with'):
        feature_folder.load(out)
    extract(encoder_dir, csv, '--out', out)                         # an edited folder is rewritten, not "up to date"
    feature_folder.load(out)


def cli_error(capsys, argv):
    """Run the CLI in-process as a user would; it must exit 2 with one paragraph on stderr: that paragraph."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(X.main, [*map(str, argv), '--device', 'cpu'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err and err.count('\n') == 1
    return err


CSV_PROBLEMS = {    # name -> (rows replacing ROWS[1], what the message says); the bad row is line 3, dialogue a
    'empty text': (('a', 1, 'Bob', ' ', 'joy', 'train'), 'the text (text) is empty'),
    'duplicate turn': (('a', 0, 'Bob', 'Hi.', 'joy', 'train'), 'turn 0 appears twice'),
    'turns out of order': (('a', -1, 'Bob', 'Hi.', 'joy', 'train'), 'turns out of order'),
    'unknown split': (('a', 1, 'Bob', 'Hi.', 'joy', 'training'), "unknown split 'training'"),
    'two splits': (('a', 1, 'Bob', 'Hi.', 'joy', 'test'), 'this dialogue is in two splits'),
}


@pytest.mark.parametrize('problem', CSV_PROBLEMS)
def test_bad_csv_rows_exit_2_and_write_nothing(tmp_path, capsys, problem):
    row, message = CSV_PROBLEMS[problem]
    csv = write_csv(tmp_path / 'talks.csv', [ROWS[0], row, *ROWS[2:]])
    err = cli_error(capsys, [csv, '--out', tmp_path / 'feats'])
    assert f'{csv}, line 3 (dialogue a): ' in err and message in err
    assert not (tmp_path / 'feats').exists()


@pytest.mark.slow
def test_bad_files_exit_2_and_write_nothing(tmp_path, capsys, encoder_dir):
    out = tmp_path / 'feats'
    misnamed = write_csv(tmp_path / 'train.csv', [('a', 0, 'Ann', 'Hi.')], columns=('dialogue', 'turn', 'who', 'text'))
    assert 'Columns found: dialogue, turn, who, text' in cli_error(capsys, [misnamed, '--out', out])
    latin = tmp_path / 'test.csv'
    latin.write_bytes('dialogue,turn,speaker,text\na,0,Zoé,Hi.\n'.encode('latin-1'))
    assert f'{latin}, line 2: the file is not UTF-8' in cli_error(capsys, [latin, '--out', out])
    no_wav = write_csv(tmp_path / 'dev.csv', [('a', 0, 'Ann', 'Hi.', 'gone.wav')],
                       columns=('dialogue', 'turn', 'speaker', 'text', 'audio'))
    assert f'{no_wav}, line 2 (dialogue a): the wav file {tmp_path}/gone.wav does not exist' in \
        cli_error(capsys, [no_wav, '--out', out])
    (tmp_path / 'noise.wav').write_bytes(b'RIFF....WAVEfmt garbage')
    bad_wav = write_csv(tmp_path / 'dev.csv', [('a', 0, 'Ann', 'Hi.', 'noise.wav')],
                        columns=('dialogue', 'turn', 'speaker', 'text', 'audio'))
    assert f'{bad_wav}, line 2 (dialogue a): the wav file {tmp_path}/noise.wav cannot be read as audio' in \
        cli_error(capsys, [bad_wav, '--out', out])
    np.save(tmp_path / 'frames.npy', np.zeros((3, 4)))
    frames = write_csv(tmp_path / 'dev.csv', [('a', 0, 'Ann', 'Hi.', 'frames.npy')],
                       columns=('dialogue', 'turn', 'speaker', 'text', 'visual'))
    assert f'{frames}, line 2 (dialogue a): {tmp_path}/frames.npy holds a float64 array of shape (3, 4)' in \
        cli_error(capsys, [frames, '--out', out, '--text-model', encoder_dir])
    csv = write_csv(tmp_path / 'talks.csv', ROWS)
    assert 'is not a folder' in cli_error(capsys, [csv, '--out', out, '--text-model', tmp_path / 'no-model'])
    assert 'does not hold a complete Hugging Face model' in \
        cli_error(capsys, [csv, '--out', out, '--text-model', tmp_path])
    no_tokenizer = tmp_path / 'weights-only'
    no_tokenizer.mkdir()
    for name in ('config.json', 'model.safetensors'):
        (no_tokenizer / name).write_bytes((encoder_dir / name).read_bytes())
    assert 'its tokenizer has no vocabulary beyond its special tokens' in \
        cli_error(capsys, [csv, '--out', out, '--text-model', no_tokenizer])
    assert 'has 6 hidden states' in cli_error(capsys, [csv, '--out', out, '--text-model', encoder_dir,
                                                       '--layers=1,2,3,6'])
    assert not out.exists()


def save_npz_as(path):
    """An .npz archive under the given name (np.savez would add .npz to it)."""
    with open(path, 'wb') as f:
        np.savez(f, x=np.ones(3))


BAD_VECTORS = {     # name -> (how the second utterance's .npy file is written, what the message says)
    'zero bytes': (lambda path: path.write_bytes(b''), 'could not be read as a .npy array'),
    'empty vector': (lambda path: np.save(path, np.zeros(0)), 'holds a float64 array of shape (0,)'),
    'complex numbers': (lambda path: np.save(path, np.ones(3, complex)), 'holds a complex128 array of shape (3,)'),
    'npz archive': (lambda path: save_npz_as(path), 'is a .npz archive, not a .npy array'),
    'frames': (lambda path: np.save(path, np.ones((2, 3))), 'holds a float64 array of shape (2, 3)'),
    'another dimension': (lambda path: np.save(path, np.ones(4)), "holds a 4-d vector, but the first utterance's"),
}


@pytest.mark.parametrize('problem', BAD_VECTORS)
def test_bad_visual_vectors_exit_2_and_write_nothing(tmp_path, capsys, encoder_dir, problem):
    write_file, message = BAD_VECTORS[problem]
    np.save(tmp_path / 'v0.npy', np.ones(3))
    write_file(tmp_path / 'v1.npy')
    csv = write_csv(tmp_path / 'train.csv', [('a', 0, 'Ann', 'Hi.', 'v0.npy'), ('a', 1, 'Bob', 'Yo.', 'v1.npy')],
                    columns=('dialogue', 'turn', 'speaker', 'text', 'visual'))
    err = cli_error(capsys, [csv, '--out', tmp_path / 'feats', '--text-model', encoder_dir])
    assert f'{csv}, line 3 (dialogue a): {tmp_path}/v1.npy ' in err and message in err
    assert not (tmp_path / 'feats').exists()


@pytest.mark.slow
def test_visual_vectors_of_one_value_and_row_vectors(tmp_path, encoder_dir):
    for i, (dim, shape) in enumerate([(1, (1,)), (1, (1, 1)), (3, (1, 3)), (3, (3, 1))]):
        np.save(tmp_path / f'v{i}.npy', np.arange(dim, dtype=np.float32).reshape(shape))
        csv = write_csv(tmp_path / 'train.csv', [('a', 0, 'Ann', 'Hi.', f'v{i}.npy')],
                        columns=('dialogue', 'turn', 'speaker', 'text', 'visual'))
        extract(encoder_dir, csv, '--out', tmp_path / f'feats{i}')
        np.testing.assert_array_equal(npz(tmp_path / f'feats{i}')['visual'], np.arange(dim)[None])


def test_modalities_must_be_in_every_file_or_none(tmp_path, capsys, csv):
    soundfile.write(tmp_path / 'u.wav', np.zeros(800, dtype=np.float32), 8000)
    with_audio = write_csv(tmp_path / 'more_test.csv', [('z', 0, 'A', 'Hi.', 'u.wav')],
                           columns=('dialogue', 'turn', 'speaker', 'text', 'audio'))
    err = cli_error(capsys, [csv, with_audio, '--out', tmp_path / 'feats'])
    assert f'{csv} has no audio column, but {with_audio} has one' in err
    err = cli_error(capsys, [csv, '--out', tmp_path / 'feats', '--audio-features', 'ComParE_2016'])
    assert '--audio-features was given, but the CSVs have no audio' in err
    assert not (tmp_path / 'feats').exists()


@pytest.mark.parametrize('content', [['IEMOCAP_features'], ['meld_features_roberta.pkl'], ['notes.txt']])
def test_refuses_to_write_into_foreign_folders(tmp_path, capsys, csv, content):
    out = tmp_path / 'data'
    out.mkdir()
    for name in content:
        (out / name).mkdir() if '.' not in name else (out / name).write_text('keep me')
    err = cli_error(capsys, [csv, '--out', out])
    assert ('holds real IEMOCAP/MELD/MOSEI features' if content != ['notes.txt'] else 'not one written by') in err
    assert sorted(os.listdir(out)) == content


def test_out_under_a_file_is_refused_before_the_work(tmp_path, capsys, csv, monkeypatch):
    (tmp_path / 'notes').write_text('keep me')
    monkeypatch.setattr(X.text_encoder, 'load_encoder', lambda *args: pytest.fail('the work started'))
    err = cli_error(capsys, [csv, '--out', tmp_path / 'notes' / 'feats'])
    assert f"cannot write into {tmp_path / 'notes' / 'feats'} (--out): {tmp_path / 'notes'} is a file" in err
    assert sorted(os.listdir(tmp_path)) == ['notes', 'talks.csv'] and (tmp_path / 'notes').read_text() == 'keep me'


def run_script(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / 'extract_features.py'), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **(env or {})))


@pytest.mark.slow
def test_cli_subprocess_reports_a_bad_row(tmp_path):
    csv = write_csv(tmp_path / 'talks.csv', [ROWS[0], CSV_PROBLEMS['empty text'][0], *ROWS[2:]])
    proc = run_script(csv, '--out', tmp_path / 'feats')
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert proc.stderr.startswith(f'error: {csv}, line 3 (dialogue a): the text (text) is empty')
    assert sorted(os.listdir(tmp_path)) == ['talks.csv']


@pytest.mark.slow
def test_cli_subprocess_hub_id_not_available_offline(tmp_path, csv):
    proc = run_script(csv, '--out', tmp_path / 'feats', '--text-model', 'no-such-org/no-such-model',
                      env={'HF_HUB_OFFLINE': '1'})
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert ('no-such-org/no-such-model cannot be loaded: it is not a local folder, not in the local Hugging Face '
            'cache') in proc.stderr
    assert not (tmp_path / 'feats').exists()
