"""Recordings in, three modalities out, through the README's own-data commands: CSVs whose `video` column names
clips (or one recording per dialogue with start / end) give text, audio and visual features, a model trained on
all three and predictions; --workers 1 equals --workers 2; an extraction killed half-way resumes to the same
features; predict.py's features are extraction's; and on recordings whose emotion is heard but not read, MoED
on the extracted modalities scores far above the text-only model, cut from long recordings or not."""
import json
import os
import re
import signal
import time

import numpy as np
import pandas as pd
import pytest

import baseline
import extract_features
import predict
import train
from helpers import popen_script
from media_maker import conversations_with_recordings
from owndata import media_jobs, prediction
from utils import run_cli

pytestmark = pytest.mark.slow
SPLITS = {'train': (10, 1), 'dev': (2, 2), 'test': (3, 3)}     # split -> (dialogues, seed); 4 turns each
TURNS, SECONDS = 4, 0.6


def write_split_csvs(root, per_dialogue):
    for split, (n, seed) in SPLITS.items():
        rows = conversations_with_recordings(root / 'media', n, TURNS, SECONDS, seed, per_dialogue, split)
        pd.DataFrame(rows).to_csv(root / f'{split}.csv', index=False)
    return [root / f'{split}.csv' for split in SPLITS]


def cli(main, *argv):
    run_cli(main, [*map(str, argv)])


def arrays(folder):
    with np.load(folder / 'features.npz') as npz:
        return {name: npz[name] for name in npz.files}


def extracted(root, encoder_dir, per_dialogue):
    """train / dev / test CSVs under root and their features by the README's first command."""
    csvs = write_split_csvs(root, per_dialogue=per_dialogue)
    cli(extract_features.main, *csvs, '--out', root / 'my_features', '--finetune', '--text-model', encoder_dir)
    return root, csvs


@pytest.fixture(scope='module')
def clips(tmp_path_factory, encoder_dir):
    """One clip per utterance."""
    return extracted(tmp_path_factory.mktemp('clips'), encoder_dir, per_dialogue=False)


@pytest.fixture(scope='module')
def recordings(tmp_path_factory, encoder_dir):
    """The same conversations as one recording per dialogue, each turn's start and end given."""
    return extracted(tmp_path_factory.mktemp('recordings'), encoder_dir, per_dialogue=True)


def readme_commands(root, csvs):
    cli(train.main, '--Dataset', 'custom', '--data-dir', root / 'my_features', '--valid', 'dev', '--out-dir',
        root / 'my_run')
    cli(predict.main, root / 'my_run', csvs[2], '--out', root / 'predictions.csv', '--html',
        root / 'conversations.html')
    meta = json.loads((root / 'my_features' / 'dataset.json').read_text())
    config = json.loads((root / 'my_run' / 'config.json').read_text())
    predictions = pd.read_csv(root / 'predictions.csv')
    return meta, config, predictions


@pytest.mark.parametrize('layout', ['clips', 'recordings'])
def test_the_readme_commands_give_three_modalities_a_model_and_predictions(layout, request):
    root, csvs = request.getfixturevalue(layout)
    meta, config, predictions = readme_commands(root, csvs)
    assert meta['modals'] == 'lav' and meta['dims'] == {'D_text': 32, 'D_audio': 88, 'D_visual': 649}
    # recordings: the utterance classifier (a text-only MoED head could not be the three-modality run's start)
    assert meta['finetune']['settings']['head'] == 'utterance'
    assert 'input' not in meta['modalities']['text']        # each utterance's text alone, for the utterance head
    assert config['initial_weights'] == 'the seeded initialisation'
    visual = meta['modalities']['visual']
    assert visual['fps'] == 2.0 and visual['detector']['cascade'] == 'haarcascade_frontalface_default.xml'
    assert visual['utterances_without_face'] == 0 and visual['frames'] == visual['frames_with_face'] == 60
    assert meta['modalities']['audio']['feature_set'] == 'eGeMAPSv02'
    media = pd.read_csv(root / 'my_features' / 'media.csv')
    assert len(media) == (60 if layout == 'clips' else 15) and media['sha256'].str.len().eq(64).all()
    assert config['model_config']['modals'] == 'lav' and config['flags']['directed_edge'] == 'lav'
    assert len(predictions) == 12 and set(predictions['predicted']) <= {'angry', 'calm', 'happy'}
    assert not any(name.endswith('.work') for name in os.listdir(root))     # the work area is gone


def test_predict_repeats_the_extraction(clips):
    root, csvs = clips
    loaded = prediction.load(root / 'my_run', workers=1)
    fs, table, _ = prediction.feature_set(loaded, prediction.read_input(str(csvs[2]), {}))
    extracted = arrays(root / 'my_features')
    test_rows = slice(-len(table), None)                   # utterances.csv: train, dev, then test
    for modality in ('audio', 'visual'):
        got = np.concatenate([getattr(fs.dialogues[key], modality) for key in fs.test_keys])
        np.testing.assert_array_equal(got, extracted[modality][test_rows])


def cached(work):
    return sum(name.endswith('.npz') for _, _, files in os.walk(work) for name in files)


def test_one_worker_equals_two_and_a_killed_extraction_resumes(clips, tmp_path, monkeypatch):
    """On the dev and test CSVs (text features frozen, so only the media are compared with the fixture's)."""
    root, csvs = clips
    expected = {name: array[-20:] for name, array in arrays(root / 'my_features').items() if name != 'text'}
    cli(extract_features.main, *csvs[1:], '--out', tmp_path / 'one', '--workers', '1')
    for name, array in expected.items():                # the fixture's: --workers 2 (the cores)
        np.testing.assert_array_equal(arrays(tmp_path / 'one')[name], array, err_msg=name)
    work = tmp_path / '.killed.work' / 'media'
    proc = popen_script('extract_features.py', *csvs[1:], '--out', tmp_path / 'killed', '--workers', '1',
                        cwd=tmp_path)
    deadline = time.time() + 300
    while cached(work) < 20 and time.time() < deadline and proc.poll() is None:     # half of 2 x 20 utterances
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)                        # a crash: nothing cleans up
    proc.communicate()
    done = cached(work)
    assert 20 <= done < 2 * 20 and not (tmp_path / 'killed').exists()
    calls = []
    real_work = media_jobs.work
    monkeypatch.setattr(media_jobs, 'work', lambda task: calls.append(task[0]) or real_work(task))
    cli(extract_features.main, *csvs[1:], '--out', tmp_path / 'killed', '--workers', '1')
    assert len(calls) == 2 * 20 - done                      # only what the killed run had not finished
    for name, array in expected.items():
        np.testing.assert_array_equal(arrays(tmp_path / 'killed')[name], array, err_msg=name)
    assert not (tmp_path / '.killed.work').exists()


def test_heard_not_read_moed_far_above_text_and_the_same_from_long_recordings(clips, recordings, capsys):
    """Pitch and loudness carry the emotion, the words do not: every modality against text alone."""
    root, csvs = clips
    flags = ['--Dataset', 'custom', '--data-dir', root / 'my_features', '--valid', 'dev', '--batch-size', 2,
             '--epochs', 8, '--quiet']
    cli(train.main, *flags, '--out-dir', root / 'all')
    cli(train.main, *flags, '--modals', 'l', '--directed_edge', 'l', '--out-dir', root / 'text')
    score = {run: json.loads((root / run / 'result.json').read_text())['best_valid']['test_f1'] for run in
             ('all', 'text')}
    assert score['all'] >= 80 and score['all'] >= score['text'] + 30, score
    clip_predictions = prediction.predict(root / 'all', str(csvs[2]), workers=2)
    long_predictions = prediction.predict(root / 'all', str(recordings[1][2]), workers=2)
    f1 = {name: prediction.scores(table)['f1'] for name, table in (('clips', clip_predictions),
                                                                 ('long', long_predictions))}
    print(f"test weighted F1: MoED on text+audio+visual {score['all']:.1f}, text only {score['text']:.1f}; "
          f"predict.py on the clips {f1['clips']:.1f}, cut from one recording per dialogue {f1['long']:.1f}")
    assert f1['clips'] >= 80 and abs(f1['clips'] - f1['long']) <= 10, f1
    capsys.readouterr()
    cli(baseline.main, root / 'my_features')
    out = capsys.readouterr().out
    alone = {m: float(re.search(rf'on {m} alone, test weighted F1 ([\d.]+)', out).group(1))
             for m in ('text', 'audio', 'visual')}
    print(out)
    assert alone['audio'] >= alone['text'] + 30, alone           # the emotion is in the sound
