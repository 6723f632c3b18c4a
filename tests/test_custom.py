"""Your own conversations end to end: extract_features.py, train.py --Dataset custom (--valid dev, --class-weight,
--modals, --testing, t-SNE) and predict.py (the CLI and prediction.predict), with a tiny random BERT made here.

One tiny run is trained through the CLI and tested through the CLI; predict.py must give --testing's predictions
for its test CSV, in the input's row order, and refuse bad input with exit 2, the file and row named and nothing
written.
"""
import functools
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformers

import baseline
import extract_features
import predict
import train
from core import config, feature_folder, training
from helpers import BATCH, LABELS, assert_png, conversation_rows, in_process, ok, run_script, write_csv
from owndata import prediction
from reports import tsne_figures
from utils import UserError, run_cli

pytestmark = pytest.mark.slow      # every test here stands on an extraction and trainings run as processes


def cli_error(capsys, main, argv):
    """Run a CLI in-process; it must exit 2 with one paragraph on stderr: that paragraph."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, list(map(str, argv)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Traceback' not in err
    return err


# ----------------------------------------------------------------------------- a broken feature folder

@pytest.fixture(scope='module')
def feats(tmp_path_factory, encoder_dir):
    """A feature folder of train.csv and test.csv (no training)."""
    root = tmp_path_factory.mktemp('feats')
    csvs = [write_csv(root / f'{split}.csv', conversation_rows(3, seed))
            for seed, split in enumerate(('train', 'test'))]
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                           '--device', 'cpu'])
    return root / 'feats'


def drop(key):
    return lambda meta: meta.pop(key)


def put(key, value):
    return lambda meta: meta.__setitem__(key, value)


BAD_META = {  # name -> (edit of dataset.json, words of the message)
    'no files': (drop('files'), 'lacks files (the sha256 of features.npz and utterances.csv)'),
    'files a list': (put('files', ['features.npz']), 'files should be the sha256 of features.npz and utterances.csv'),
    'files naming another file': (lambda meta: meta['files'].update({'../x.csv': '0'}), 'files should be'),
    'no modals': (drop('modals'), 'lacks modals'),
    'unknown modal letter': (put('modals', 'lx'), 'modals should be the letters of the extracted modalities'),
    'no label_names': (drop('label_names'), 'lacks label_names'),
    'label_names a string': (put('label_names', 'anger,joy'), 'label_names should be a list of distinct label names'),
    'n_speakers a string': (put('n_speakers', '3'), 'n_speakers should be the number of speaker indices'),
    'n_speakers zero': (put('n_speakers', 0), 'but it is 0;'),
    'no speakers': (drop('speakers'), 'lacks speakers'),
    'no modalities': (drop('modalities'), 'lacks modalities'),
}


@pytest.mark.parametrize('name', list(BAD_META))
def test_a_dataset_json_with_missing_or_wrong_fields_exits_2(feats, tmp_path, capsys, name):
    edit, words = BAD_META[name]
    folder = tmp_path / 'feats'
    shutil.copytree(feats, folder)
    meta = json.loads((folder / 'dataset.json').read_text())
    edit(meta)
    (folder / 'dataset.json').write_text(json.dumps(meta))
    proc = run_script('train.py', '--Dataset', 'custom', '--data-dir', folder, '--epochs', 1, cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert f'{folder}/dataset.json' in proc.stderr and words in proc.stderr, proc.stderr
    assert os.listdir(tmp_path) == ['feats']
    assert words in cli_error(capsys, baseline.main, [folder])


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize('seed', ['-1', str(2**32)])
def test_baseline_refuses_seeds_outside_the_32_bit_range(tmp_path, seed):
    proc = run_script('baseline.py', tmp_path, '--seeds', '1', seed, cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'argument --seeds: must be an integer in 0..4294967295' in proc.stderr



def test_the_run_records_the_feature_recipe_and_validates_on_dev(workspace):
    run = json.loads((workspace / 'run' / 'config.json').read_text())
    assert run['flags']['Dataset'] == 'custom' and run['flags']['valid'] == 'dev'
    assert run['flags']['modals'] == 'l' and run['flags']['directed_edge'] == 'l'      # the extracted modalities
    assert run['model_config']['D_g'] == 512 and run['model_config']['D_text'] == 32
    assert run['model_config']['n_classes'] == 3 and run['features']['label_names'] == list(LABELS)
    assert run['features'] == json.loads((workspace / 'feats' / 'dataset.json').read_text())
    assert run['data']['dialogues'] == {'train': 8, 'valid': 2, 'test': 3}
    assert "the feature folder's dev split, 2 dialogues" in run['checkpoint_selection']
    metrics = pd.read_csv(workspace / 'run' / 'metrics.csv')
    assert list(metrics['epoch']) == [1, 2] and 'valid_f1' in metrics
    result = json.loads((workspace / 'run' / 'result.json').read_text())
    assert result['status'] == 'finished' and result['best_valid']['epoch'] in (1, 2)
    assert 'Test at the best-validation epoch' in (workspace / 'run' / 'report.txt').read_text()


def test_modals_default_to_the_extracted_ones_and_a_missing_one_is_refused(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    args = config.parse_args(['--Dataset', 'custom', '--data-dir', 'nowhere'])     # parsing reads no file
    assert (args.modals, args.directed_edge, args.lr, args.num_L) == (None, None, 0.0001, 1)   # custom defaults
    args = config.parse_args(['--Dataset', 'custom', '--data-dir', 'feats'])
    training.load_data(args)
    assert (args.modals, args.directed_edge, args.lr, args.num_L) == ('l', 'l', 0.0001, 1)
    args = config.parse_args(['--Dataset', 'custom', '--data-dir', 'feats', '--modals', 'l', '--directed_edge', ''])
    training.load_data(args)
    assert (args.modals, args.directed_edge) == ('l', '')
    err = cli_error(capsys, train.main, ['--Dataset', 'custom', '--data-dir', 'feats', '--modals', 'la'])
    assert '--modals la asks for audio' in err and 'text only' in err
    assert 'is not a feature folder' in cli_error(capsys, train.main, ['--Dataset', 'custom', '--data-dir', 'nowhere'])
    assert not (workspace / 'runs').exists()
    for flags, message in [(['--Dataset', 'custom', '--data-dir', 'feats', '--synthetic'], 'drop --synthetic'),
                           (['--Dataset', 'IEMOCAP', '--valid', 'dev'], 'hold out a fraction'),
                           (['--Dataset', 'custom', '--modals', 'lx'], 'unknown letter(s) x')]:
        with pytest.raises(SystemExit) as exit_info:
            config.parse_args(flags)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_experiments_read_the_folder_once_for_all_trials(workspace, tmp_path, monkeypatch):
    """Planning reads dataset.json and hashes the files once (not once per trial); a row that does not set --modals
    gets the extracted ones, as the trial's train.py will record them."""
    import experiments
    reads = []
    read_meta = feature_folder.read_meta
    monkeypatch.setattr(feature_folder, 'read_meta', lambda *args, **kwargs: reads.append(args) or
                        read_meta(*args, **kwargs))
    args = experiments.build_parser().parse_args(['table4', '--Dataset', 'custom', '--data-dir',
                                                  str(workspace / 'feats'), '--seeds', '2'])
    trials = experiments.plan_trials(args, experiments.table_rows('table4', []), [], str(tmp_path))
    assert len(trials) == 14 and len(reads) == 1
    modals = {trial.row: (trial.flags['modals'], trial.flags['directed_edge']) for trial in trials}
    assert modals['full'] == ('l', 'l') and modals['modals=la'] == ('la', 'la')


def test_class_weight_is_the_inverse_training_frequency(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    utterances = pd.read_csv(workspace / 'feats' / 'utterances.csv')
    counts = utterances[utterances['split'] == 'train']['label'].value_counts().reindex(LABELS).to_numpy()
    expected = counts.sum() / (len(LABELS) * counts)
    log_prob = torch.log_softmax(torch.randn(20, 3, generator=torch.Generator().manual_seed(0)), 1)
    labels = torch.arange(20) % 3
    losses = {}
    for flags in ([], ['--class-weight']):
        args = config.parse_args(['--Dataset', 'custom', '--data-dir', 'feats', *flags])
        fs = training.load_data(args)
        net = training.build_model(args, fs)
        losses[tuple(flags)] = training.Run.of(args, net, fs).loss_fn(log_prob, labels)
    np.testing.assert_allclose(training.class_weights(fs), expected)
    assert torch.isclose(losses[()], F.nll_loss(log_prob, labels))
    weighted = F.nll_loss(log_prob, labels, weight=torch.tensor(expected, dtype=torch.float32))
    assert torch.isclose(losses[('--class-weight',)], weighted) and not torch.isclose(weighted, losses[()])


def test_testing_writes_names_for_the_t_sne(workspace, monkeypatch, capsys):
    names = json.loads((workspace / 'testing' / 'saved_features' / 'class_names_custom.json').read_text())
    assert names == {'emotion': list(LABELS), 'speaker': ['party 0', 'party 1', 'party 2']}
    tsne_custom = functools.partial(tsne_figures.main, dataset='custom')         # what tsne_custom.py runs
    stdout = in_process(tsne_custom, ['--features-dir', 'testing/saved_features', '--out-dir', 'figures',
                                      '--max-iter', 250], workspace, monkeypatch, capsys)
    assert 'no t-SNE of the multimodal features before the graphs' in stdout
    assert sorted(os.listdir(workspace / 'figures')) == ['tsne_custom_after_emotion.png',
                                                         'tsne_custom_after_speaker.png']
    assert_png(workspace / 'figures' / 'tsne_custom_after_emotion.png')


# ----------------------------------------------------------------------------- predict.py

def predictions_of_testing(workspace):
    """--testing's predicted label per test utterance, as (dialogue, turn order) -> label name."""
    table = pd.read_csv(workspace / 'testing' / 'saved_outputs' / 'utterances_custom.csv')
    return {(key.split(':', 1)[1], i): LABELS[p] for key, i, p in zip(table['dialogue_key'], table['utterance_idx'],
                                                                      table['pred'])}


def test_predict_gives_the_predictions_of_testing(workspace, monkeypatch, capsys):
    stdout = in_process(predict.main, ['run', 'test.csv', '--out', 'predictions.csv'], workspace, monkeypatch, capsys)
    out = pd.read_csv(workspace / 'predictions.csv', keep_default_na=False, dtype={'dialogue': str})
    test = pd.read_csv(workspace / 'test.csv', dtype={'dialogue': str})
    assert list(out.columns) == ['dialogue', 'turn', 'speaker', 'text', 'label', 'predicted', 'p_anger', 'p_joy',
                                 'p_neutral']
    assert out[['dialogue', 'turn', 'speaker', 'text']].equals(test[['dialogue', 'turn', 'speaker', 'text']])
    order = out.groupby('dialogue').cumcount()
    assert {(d, i): p for d, i, p in zip(out['dialogue'], order, out['predicted'])} == predictions_of_testing(workspace)
    probabilities = out[['p_anger', 'p_joy', 'p_neutral']].to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    assert [LABELS[i] for i in probabilities.argmax(1)] == out['predicted'].tolist()
    scores = f"accuracy: {prediction.scores(out)['acc']:.2f}  weighted F1: {prediction.scores(out)['f1']:.2f}"
    assert scores in stdout and scores in (workspace / 'testing' / 'stdout.txt').read_text()


def test_predict_api_follows_the_input_rows_and_matches_the_model(workspace):
    test = pd.read_csv(workspace / 'test.csv', dtype={'dialogue': str})
    # rows of d0 and d1 interleaved (each dialogue's turns still in order; first appearance unchanged); no labels
    interleaved = test.iloc[np.argsort(test.groupby('dialogue').cumcount().to_numpy() * 10
                                       + test['dialogue'].str[1:].astype(int).to_numpy(), kind='stable')]
    interleaved = interleaved.drop(columns='emotion').reset_index(drop=True)
    out = prediction.predict(workspace / 'run', interleaved)
    assert 'label' not in out and prediction.scores(out) is None
    with pytest.raises(UserError, match=r"^dataframe, line 3 \(dialogue d0\): the label 'surprise' was never seen"):
        prediction.predict(workspace / 'run', test.assign(emotion=['joy', 'surprise'] + ['joy'] * (len(test) - 2)))
    assert out[['dialogue', 'turn']].equals(interleaved[['dialogue', 'turn']])

    # the same probabilities as the checkpoint on the run's own test features (feature_folder.load, --testing's pass)
    args = config.parse_args(['--Dataset', 'custom', '--data-dir', str(workspace / 'feats'),
                              '--batch-size', str(BATCH)])
    fs = training.load_data(args)
    net = prediction.load_model(prediction.read_run(workspace / 'run'), workspace / 'run', 'cpu')
    result = training.run_pass(training.Run.of(args, net, fs), fs.test_keys, keep_outputs=True)
    expected = pd.DataFrame(np.exp(result.outputs['log_prob']), columns=[f'p_{name}' for name in LABELS])
    expected['dialogue'] = np.repeat([key.split(':', 1)[1] for key in result.keys], result.outputs['lengths'])
    expected['turn'] = test['turn'].to_numpy()          # test.csv lists each dialogue's rows together, in order
    merged = out.merge(expected, on=['dialogue', 'turn'], suffixes=('', '_testing'))
    assert len(merged) == len(test)
    for name in LABELS:
        np.testing.assert_allclose(merged[f'p_{name}'], merged[f'p_{name}_testing'], atol=1e-4)


def test_predict_reads_excel_style_csvs_as_plain_ones(workspace, tmp_path):
    """A byte-order mark and Windows line endings change nothing; one-utterance dialogues are predicted."""
    text = (workspace / 'test.csv').read_text()
    excel = tmp_path / 'excel.csv'
    excel.write_bytes(b'\xef\xbb\xbf' + text.replace('\n', '\r\n').encode())
    pd.testing.assert_frame_equal(prediction.predict(workspace / 'run', excel),
                                  prediction.predict(workspace / 'run', workspace / 'test.csv'))
    single = write_csv(tmp_path / 'single.csv', [('x', 0, 'Ann', 'hi', 'joy'), ('y', 5, 'Bob', 'ok', 'anger')])
    out = prediction.predict(workspace / 'run', single)
    assert out['dialogue'].tolist() == ['x', 'y'] and np.allclose(out.filter(like='p_').sum(axis=1), 1)


PREDICT_PROBLEMS = {    # name -> (the row replacing test.csv's second row, what the message says)
    'empty text': (('d0', 1, 'Bob', ' ', 'joy'), 'the text (text) is empty'),
    'duplicate turn': (('d0', 0, 'Bob', 'hi', 'joy'), 'turn 0 appears twice'),
    'turns out of order': (('d0', -1, 'Bob', 'hi', 'joy'), 'turns out of order'),
    'unseen label': (('d0', 1, 'Bob', 'hi', 'surprise'), "the label 'surprise' was never seen by the model"),
}


@pytest.mark.parametrize('problem', PREDICT_PROBLEMS)
def test_predict_refuses_bad_rows(workspace, tmp_path, capsys, problem):
    row, message = PREDICT_PROBLEMS[problem]
    rows = pd.read_csv(workspace / 'test.csv').values.tolist()
    csv = write_csv(tmp_path / 'new.csv', [rows[0], row, *rows[2:]])
    err = cli_error(capsys, predict.main, [workspace / 'run', csv, '--out', tmp_path / 'out.csv'])
    assert f'{csv}, line 3 (dialogue d0): ' in err and message in err
    assert sorted(os.listdir(tmp_path)) == ['new.csv']


@pytest.fixture(scope='module')
def visual_run(tmp_path_factory, encoder_dir):
    """A 1-epoch run on text and 3-d visual vectors (run/ in the returned folder, with its encoder_dir)."""
    root = tmp_path_factory.mktemp('visual')
    rng = np.random.default_rng(0)
    for split, n in (('train', 3), ('test', 1)):
        rows = conversation_rows(n, seed=len(split))
        for i in range(len(rows)):
            np.save(root / f'{split}{i}.npy', rng.normal(size=3).astype(np.float32))
        write_csv(root / f'{split}.csv', [(*row, f'{split}{i}.npy') for i, row in enumerate(rows)],
                  columns=('dialogue', 'turn', 'speaker', 'text', 'emotion', 'visual'))
    extract_features.main([str(root / 'train.csv'), str(root / 'test.csv'), '--out', str(root / 'feats'),
                           '--text-model', str(encoder_dir), '--device', 'cpu'])
    ok(run_script('train.py', '--Dataset', 'custom', '--data-dir', 'feats', '--epochs', 1, '--out-dir', 'run',
                  '--batch-size', BATCH, cwd=root))
    return root


MODALITY_PROBLEMS = {   # name -> (the visual cell of test.csv's rows, or None for no column; what the message says)
    'no visual column': (None, 'has no visual column, but the model uses visual'),
    'another dimension': ('v4.npy', "the visual features here are 4-d, but the run's model was trained on 3-d"),
}


@pytest.mark.parametrize('problem', MODALITY_PROBLEMS)
def test_predict_refuses_visual_vectors_unlike_the_runs(visual_run, tmp_path, capsys, problem):
    cell, message = MODALITY_PROBLEMS[problem]
    np.save(tmp_path / 'v4.npy', np.ones(4, dtype=np.float32))
    test = pd.read_csv(visual_run / 'test.csv')
    test = test.drop(columns='visual') if cell is None else test.assign(visual=cell)
    csv = write_csv(tmp_path / 'new.csv', test.values.tolist(), columns=list(test.columns))
    err = cli_error(capsys, predict.main, [visual_run / 'run', csv, '--out', tmp_path / 'out.csv'])
    assert err.startswith(f'error: {csv}') and message in err
    assert sorted(os.listdir(tmp_path)) == ['new.csv', 'v4.npy']


def copy_run(workspace, folder, config_json=None):
    """The workspace's run copied into folder (config.json replaced by config_json, a dict, when given)."""
    folder.mkdir()
    for name in ('config.json', 'best_model_custom.pth', 'result.json'):
        (folder / name).write_bytes((workspace / 'run' / name).read_bytes())
    if config_json is not None:
        (folder / 'config.json').write_text(json.dumps(config_json))
    return folder


def test_predict_says_when_the_runs_encoder_folder_is_gone(workspace, tmp_path, capsys, encoder_dir):
    run = json.loads((workspace / 'run' / 'config.json').read_text())
    assert run['features']['modalities']['text']['encoder']['text_model'] == str(encoder_dir)
    run['features']['modalities']['text']['encoder']['text_model'] = str(tmp_path / 'moved-away')
    moved = copy_run(workspace, tmp_path / 'run', run)
    err = cli_error(capsys, predict.main, [moved, workspace / 'test.csv', '--out', tmp_path / 'out.csv'])
    assert f"the run's text encoder, the folder {tmp_path / 'moved-away'}, is not there any more" in err
    assert '--text-model' in err and not (tmp_path / 'out.csv').exists()


def test_predict_refuses_a_config_json_without_what_it_reads(workspace, tmp_path, capsys):
    run = json.loads((workspace / 'run' / 'config.json').read_text())
    del run['features']['label_names'], run['flags']['batch_size']
    edited = copy_run(workspace, tmp_path / 'run', run)
    err = cli_error(capsys, predict.main, [edited, workspace / 'test.csv', '--out', tmp_path / 'out.csv'])
    assert f'{edited}/config.json lacks flags.batch_size, features.label_names, which predict.py reads' in err
    assert not (tmp_path / 'out.csv').exists()


@pytest.mark.parametrize('result, note', [({'status': 'interrupted', 'epochs_done': 1, 'epochs': 2},
                                           'was interrupted after 1 of 2 epochs'),
                                          (None, 'has no result.json: its training is still going or was killed')])
def test_predict_notes_an_unfinished_run(workspace, tmp_path, capsys, result, note):
    run = copy_run(workspace, tmp_path / 'run')
    if result:
        (run / 'result.json').write_text(json.dumps(result))
    else:
        (run / 'result.json').unlink()
    run_cli(predict.main, list(map(str, [run, workspace / 'test.csv', '--out', tmp_path / 'out.csv'])))
    assert note in capsys.readouterr().err and (tmp_path / 'out.csv').exists()


OUT_PROBLEMS = {    # name -> (--out, relative to the folder of new.csv, what the message says)
    'a folder': ('outdir', 'is a folder; give the predictions CSV'),
    'under a file': ('new.csv/predictions.csv', 'new.csv is a file, not a folder'),
    'the input CSV': ('./new.csv', 'is the input CSV'),
}


@pytest.mark.parametrize('problem', OUT_PROBLEMS)
def test_predict_refuses_a_bad_out_before_the_work(workspace, tmp_path, capsys, monkeypatch, problem):
    out, message = OUT_PROBLEMS[problem]
    csv = tmp_path / 'new.csv'
    csv.write_bytes((workspace / 'test.csv').read_bytes())
    (tmp_path / 'outdir').mkdir()
    monkeypatch.setattr(prediction, 'predict', lambda *args, **kwargs: pytest.fail('the work started'))
    monkeypatch.chdir(tmp_path)
    err = cli_error(capsys, predict.main, [workspace / 'run', 'new.csv', '--out', out])
    assert str(out) in err and '--out' in err and message in err
    assert sorted(os.listdir(tmp_path)) == ['new.csv', 'outdir'] and not os.listdir(tmp_path / 'outdir')
    assert csv.read_bytes() == (workspace / 'test.csv').read_bytes()


def test_predict_refuses_bad_columns_runs_and_encoders(workspace, tmp_path, capsys, encoder_dir):
    out = tmp_path / 'out.csv'
    misnamed = write_csv(tmp_path / 'misnamed.csv', [('d0', 0, 'Ann', 'hi')],
                         columns=('dialogue', 'turn', 'who', 'text'))
    err = cli_error(capsys, predict.main, [workspace / 'run', misnamed, '--out', out])
    assert f'{misnamed}: no column for the speaker' in err and 'Columns found: dialogue, turn, who, text' in err
    csv = workspace / 'test.csv'
    assert 'is not a training run folder' in cli_error(capsys, predict.main, [tmp_path, csv, '--out', out])
    paper_run = tmp_path / 'iemocap-run'
    paper_run.mkdir()
    (paper_run / 'config.json').write_text(json.dumps({'flags': {'Dataset': 'IEMOCAP'}, 'model_config': {}}))
    err = cli_error(capsys, predict.main, [paper_run, csv, '--out', out])
    assert 'is a training run on IEMOCAP: predict.py needs a run' in err
    no_checkpoint = tmp_path / 'no-checkpoint'
    no_checkpoint.mkdir()
    (no_checkpoint / 'config.json').write_bytes((workspace / 'run' / 'config.json').read_bytes())
    assert 'best_model_custom.pth does not exist' in cli_error(capsys, predict.main, [no_checkpoint, csv, '--out', out])
    other = tmp_path / 'other-encoder'
    encoder = transformers.AutoModel.from_pretrained(encoder_dir)
    with torch.no_grad():
        encoder.embeddings.word_embeddings.weight[5] += 1
    encoder.save_pretrained(other)
    transformers.AutoTokenizer.from_pretrained(encoder_dir).save_pretrained(other)
    err = cli_error(capsys, predict.main, [workspace / 'run', csv, '--out', out, '--text-model', other])
    assert f'the text encoder {other} is not the one the run' in err and 'sha256' in err
    assert not out.exists()
    feature_folder.load(workspace / 'feats')           # nothing of the run's data was touched
