"""train.py, train_MOSEI.py and bench.py as a user runs them, on tiny synthetic datasets.

Trainings of a few epochs and the real command line (subprocesses: exit status, signals) are marked slow;
the error tables call train.py's main in this process (train_cli: the same parsing, checks and exit status 2,
without a process and its seconds of imports each) and check the status, the message and that nothing was
written.
"""
import json
import os
import pickle
import re
import signal

import pandas as pd
import pytest
import torch

import train
import utils
from helpers import GOLDEN_DIR, assert_png, data_args, ok, popen_script, run_script

GOLDEN_SHAPES = GOLDEN_DIR / 'checkpoint_shapes.json'
SCORES = re.compile(r'accuracy: (\d+\.\d+)  weighted F1: (\d+\.\d+)')


@pytest.fixture(scope='module')
def one_epoch_run(tmp_path_factory, data_dir):
    """The run folder of a 1-epoch IEMOCAP paper run trained in this process (a checkpoint and its config.json)."""
    out = tmp_path_factory.mktemp('one-epoch') / 'run'
    train.main([str(a) for a in [*data_args('IEMOCAP', data_dir), '--epochs', 1, '--out-dir', out, '--quiet']])
    return out


def train_cli(argv, cwd, monkeypatch):
    """train.py's command line in this process, in cwd: its exit status (utils.run_cli: a UserError is exit 2)."""
    monkeypatch.chdir(cwd)
    try:
        utils.run_cli(train.main, [str(a) for a in argv])
    except SystemExit as stop:
        return stop.code
    return 0


def report_scores(text, title_start):
    """(accuracy, weighted F1) strings of the block of report text whose title starts with title_start."""
    block = text[text.index(f'== {title_start}'):]
    return SCORES.search(block).groups()


# ----------------------------------------------------------------------------- training

@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['IEMOCAP', 'MELD', 'MOSEI'])
def test_training_writes_a_complete_run_folder(trained, dataset):
    out, proc = trained(dataset)
    assert sorted(os.listdir(out)) == ['best_model_%s.pth' % dataset, 'config.json', 'confusion.png', 'curves.png',
                                       'metrics.csv', 'report.txt', 'result.json']
    assert re.search(r'^epoch: 1, train_loss: .*test_fscore: .*time: ', proc.stdout, re.M)
    assert re.search(r'^epoch: 2, ', proc.stdout, re.M)

    config = json.loads((out / 'config.json').read_text())
    assert config['data']['synthetic'] is True and 'SYNTHETIC' in config['data']['description']
    assert config['flags']['Dataset'] == dataset and config['model_config']['dataset'] == dataset
    assert config['torch'] == torch.__version__ and config['device'] == 'cpu'
    assert 'TEST set' in config['checkpoint_selection']

    metrics = pd.read_csv(out / 'metrics.csv')
    assert list(metrics['epoch']) == [1, 2]
    assert {'train_loss', 'train_acc', 'train_f1', 'test_loss', 'test_acc', 'test_f1'} <= set(metrics.columns)

    # The paper configuration at full size: exactly the released checkpoints' keys and shapes.
    state = torch.load(out / f'best_model_{dataset}.pth', weights_only=True)
    golden = json.loads(GOLDEN_SHAPES.read_text())[dataset]
    assert {k: list(v.shape) for k, v in state.items()} == golden

    report = (out / 'report.txt').read_text()
    assert 'SYNTHETIC' in report and 'SELECTED ON THE TEST SET' in report
    best = metrics.loc[metrics['test_f1'].idxmax()]
    assert report_scores(report, 'Paper protocol') == (f"{best['test_acc']:.2f}", f"{best['test_f1']:.2f}")
    assert f"= epoch {int(best['epoch'])}," in report
    from dataloader import DATASETS
    assert all(name in report for name in DATASETS[dataset].label_names)
    assert ('3-class sentiment accuracy' in report) == (dataset == 'MOSEI')
    assert report in proc.stdout

    result = json.loads((out / 'result.json').read_text())
    assert result['status'] == 'finished' and result['epochs_done'] == 2
    assert result['best_test'] == dict(epoch=int(best['epoch']), f1=best['test_f1'])
    assert result['last_epoch']['f1'] == metrics['test_f1'].iloc[-1]
    for picture in ('curves.png', 'confusion.png'):
        assert_png(out / picture)


def test_a_finished_run_folder_is_never_overwritten(one_epoch_run, data_dir, tmp_path, monkeypatch, capsys):
    before = {name: (one_epoch_run / name).read_bytes() for name in os.listdir(one_epoch_run)}
    status = train_cli([*data_args('IEMOCAP', data_dir), '--epochs', 1, '--out-dir', one_epoch_run], tmp_path,
                       monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and 'already holds a finished training run' in err and 'Traceback' not in err
    assert {name: (one_epoch_run / name).read_bytes() for name in os.listdir(one_epoch_run)} == before
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(trained, data_dir, tmp_path):
    """MELD shuffles its training dialogues: a second run with the same seed repeats every number."""
    first, _ = trained('MELD')
    ok(run_script('train.py', *data_args('MELD', data_dir), '--epochs', 2, '--out-dir', tmp_path / 'again',
                  cwd=tmp_path))
    assert (tmp_path / 'again' / 'metrics.csv').read_text() == (first / 'metrics.csv').read_text()


@pytest.mark.slow
def test_textbook_protocol_is_recorded_and_flagged_as_a_deviation(trained, data_dir, tmp_path):
    original, _ = trained('MELD')
    assert json.loads((original / 'config.json').read_text())['flags']['protocol'] == 'original'
    assert 'DEVIATION' not in (original / 'report.txt').read_text()
    out = tmp_path / 'textbook'
    proc = ok(run_script('train.py', *data_args('MELD', data_dir), '--epochs', 2, '--protocol', 'textbook',
                  '--out-dir', out, cwd=tmp_path))
    assert json.loads((out / 'config.json').read_text())['flags']['protocol'] == 'textbook'
    header = proc.stdout[:proc.stdout.index('epoch: 1,')]
    assert 'training protocol: textbook' in header and 'DEVIATION' in header
    assert 'training protocol: textbook' in (out / 'report.txt').read_text()
    assert (out / 'metrics.csv').read_text() != (original / 'metrics.csv').read_text()


@pytest.mark.slow
def test_valid_reports_test_at_the_best_validation_epoch(data_dir, tmp_path):
    out = tmp_path / 'run'
    ok(run_script('train.py', *data_args('MELD', data_dir), '--epochs', 2, '--valid', 0.3, '--out-dir', out,
           cwd=tmp_path))
    metrics = pd.read_csv(out / 'metrics.csv')
    assert {'valid_loss', 'valid_acc', 'valid_f1'} <= set(metrics.columns)
    chosen = metrics.loc[metrics['valid_f1'].idxmax()]
    report = (out / 'report.txt').read_text()
    assert f"= epoch {int(chosen['epoch'])}, picked by best validation weighted F1" in report
    assert report_scores(report, 'Test at the best-validation epoch') == (f"{chosen['test_acc']:.2f}",
                                                                          f"{chosen['test_f1']:.2f}")
    assert 'SELECTED ON THE TEST SET' in report          # the paper's number is still given, labelled
    assert 'validation' in json.loads((out / 'config.json').read_text())['checkpoint_selection']


@pytest.mark.slow
@pytest.mark.parametrize('signum, status', [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=['ctrl-c', 'sigterm'])
def test_a_stopped_run_keeps_the_best_checkpoint_and_writes_the_report(data_dir, tmp_path, signum, status):
    out = tmp_path / 'run'
    proc = popen_script('train.py', *data_args('MELD', data_dir), '--epochs', '1000', '--out-dir', out,
                        cwd=tmp_path, python_flags=['-u'])
    for line in proc.stdout:
        if line.startswith('epoch: 1,'):
            break
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status and 'Traceback' not in stderr and 'interrupted' in stderr
    assert (out / 'best_model_MELD.pth').is_file() and (out / 'curves.png').is_file()
    report = (out / 'report.txt').read_text()
    assert '(interrupted)' in report and 'SELECTED ON THE TEST SET' in report
    epochs = len(pd.read_csv(out / 'metrics.csv'))
    assert epochs >= 1
    result = json.loads((out / 'result.json').read_text())
    assert result['status'] == 'interrupted' and result['epochs_done'] == epochs
    # an interrupted run folder may be trained again (a grid reruns it)
    ok(run_script('train.py', *data_args('MELD', data_dir), '--epochs', 1, '--out-dir', out, cwd=tmp_path))
    assert json.loads((out / 'result.json').read_text())['status'] == 'finished'


# ----------------------------------------------------------------------------- --testing

@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['IEMOCAP', 'MELD', 'MOSEI'])
def test_testing_the_checkpoint_reproduces_the_report(trained, data_dir, dataset, tmp_path):
    out, _ = trained(dataset)
    proc = ok(run_script('train.py', *data_args(dataset, data_dir), '--Dataset', dataset, '--testing',
                  '--checkpoint', out / f'best_model_{dataset}.pth', '--out-dir', tmp_path / 'exports', cwd=tmp_path))
    assert SCORES.search(proc.stdout).groups() == report_scores((out / 'report.txt').read_text(), 'Paper protocol')
    assert 'emotional inertia' in proc.stdout and 'precision' in proc.stdout and 'confusion matrix' in proc.stdout

    table = pd.read_csv(tmp_path / 'exports' / 'saved_outputs' / f'utterances_{dataset}.csv')
    assert list(table.columns) == ['dialogue_id', 'utterance_idx', 'speaker', 'label', 'pred', 'dialogue_key']
    features = tmp_path / 'exports' / 'saved_features'
    import utils
    arrays = {name: utils.safe_load_pickle(features / f'{name}_{dataset}.pkl') for name in (
        'multimodal_emotions_before', 'multimodal_emotions_after', 'emotion_labels', 'speaker_index')}
    assert all(len(a) == len(table) for a in arrays.values())
    assert (arrays['emotion_labels'] == table['label'].to_numpy()).all()
    assert (arrays['speaker_index'] == table['speaker'].to_numpy()).all()
    assert arrays['multimodal_emotions_after'].shape[1] == 1024           # cat(EIGNN u, ECGNN u), h = 512
    assert (table.groupby('dialogue_id')['utterance_idx'].apply(lambda s: list(s) == list(range(len(s))))).all()
    assert table['dialogue_id'].nunique() == table['dialogue_key'].nunique() >= 2
    assert_png(tmp_path / 'exports' / 'saved_outputs' / f'confusion_{dataset}.png')


@pytest.mark.slow
def test_overhead_reports_flops_parameters_memory_latency(trained, data_dir, tmp_path):
    out, _ = trained('IEMOCAP')
    checkpoint = out / 'best_model_IEMOCAP.pth'
    proc = ok(run_script('train.py', *data_args('IEMOCAP', data_dir), '--testing', '--overhead',
                         '--checkpoint', checkpoint, '--out-dir', tmp_path, cwd=tmp_path))
    total, graph_and_linear, recurrent = map(float, re.search(
        r'FLOPs: (\d+\.\d+) G .*?: (\d+\.\d+) G in matrix products.*? \+ (\d+\.\d+) G in the recurrent',
        proc.stdout).groups())
    assert graph_and_linear > 0 and recurrent > 0 and total >= max(graph_and_linear, recurrent)
    assert re.search(r'memory: RSS growth', proc.stdout)
    assert float(re.search(r'latency: median (\d+\.\d+) ms', proc.stdout).group(1)) > 0
    state = torch.load(checkpoint, weights_only=True)
    n_params = sum(v.numel() for k, v in state.items() if not re.search(r'running_|num_batches_tracked', k))
    assert f'trainable parameters: {n_params:,}' in proc.stdout


@pytest.mark.slow
def test_features_before_are_skipped_without_three_modalities(data_dir, tmp_path):
    run_dir = tmp_path / 'run'
    flags = [*data_args('MELD', data_dir), '--modals', 'la', '--directed_edge', 'la']
    ok(run_script('train.py', *flags, '--epochs', 1, '--out-dir', run_dir, cwd=tmp_path))
    proc = ok(run_script('train.py', *flags, '--testing', '--checkpoint', run_dir / 'best_model_MELD.pth',
                         cwd=tmp_path))
    assert 'not written: multimodal_emotions_before_MELD.pkl' in proc.stdout
    assert sorted(os.listdir(tmp_path / 'saved_features')) == [
        'emotion_labels_MELD.pkl', 'multimodal_emotions_after_MELD.pkl', 'speaker_index_MELD.pkl']
    assert (tmp_path / 'saved_outputs' / 'utterances_MELD.csv').is_file()


# ----------------------------------------------------------------------------- errors

ERRORS = {  # name -> (dataset, extra flags, words the message must contain); {ckpt}: the IEMOCAP checkpoint
    'bad value': ('IEMOCAP', ['--base-model', 'RNN'], 'invalid choice'),
    'bad letter': ('IEMOCAP', ['--modals', 'avx'], 'unknown letter'),
    'bad window': ('IEMOCAP', ['--window_spk', '-2'], 'window'),
    'impossible combination': ('IEMOCAP', ['--graph_type', 'EIG', '--multimodal_node', 'ECG'], '--multimodal_node'),
    'transformer': ('IEMOCAP', ['--base-model', 'Transformer'], 'never worked'),
    'use_residue': ('IEMOCAP', ['--use_residue'], 'never worked'),
    'overhead without testing': ('IEMOCAP', ['--overhead'], 'together with --testing'),
    'missing checkpoint': ('IEMOCAP', ['--testing'], 'no checkpoint at best_model_IEMOCAP.pth'),
    'checkpoint of other layers': ('IEMOCAP', ['--testing', '--num_L', '2', '--checkpoint', '{ckpt}'], '--num_L'),
    'checkpoint of other modalities': ('IEMOCAP', ['--testing', '--modals', 'al', '--checkpoint', '{ckpt}'],
                                       '--modals'),
    'checkpoint of other dataset': ('MELD', ['--testing', '--checkpoint', '{ckpt}'], '--Dataset'),
    'infinite lr': ('IEMOCAP', ['--lr', 'inf'], 'argument --lr: must be a positive finite number'),
    'infinite weight decay': ('IEMOCAP', ['--l2', 'inf'], 'argument --l2: must be a finite number >= 0'),
    'infinite synthetic scale': ('IEMOCAP', ['--synthetic-scale', 'inf'], 'argument --synthetic-scale'),
    'nan epsilon': ('IEMOCAP', ['--epsilon', 'nan'], "--epsilon=nan: a residual scaling is a finite number"),
    'infinite epsilon2': ('IEMOCAP', ['--epsilon2', 'inf'], "--epsilon2=inf: a residual scaling"),
    'negative seed': ('IEMOCAP', ['--seed', '-1'], 'argument --seed: must be an integer in 0..4294967295'),
    'seed too big': ('IEMOCAP', ['--seed', str(2**32)], 'argument --seed: must be an integer in 0..4294967295'),
}


@pytest.mark.parametrize('name', list(ERRORS))
def test_errors_exit_2_with_one_clear_sentence_and_write_nothing(one_epoch_run, data_dir, tmp_path, name,
                                                                  monkeypatch, capsys):
    dataset, extra, words = ERRORS[name]
    checkpoint = one_epoch_run / 'best_model_IEMOCAP.pth'
    status = train_cli([*data_args(dataset, data_dir), '--epochs', 1, '--out-dir', tmp_path / 'out',
                        *[checkpoint if a == '{ckpt}' else a for a in extra]], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2, err
    assert 'error: ' in err and words in err and 'Traceback' not in err
    assert os.listdir(tmp_path) == [], "nothing may be written on an error"


@pytest.mark.slow
@pytest.mark.parametrize('extra, words', [(['--base-model', 'RNN'], 'invalid choice'),
                                          (['--testing'], 'no checkpoint at best_model_IEMOCAP.pth')],
                         ids=['bad flag', 'missing checkpoint'])
def test_the_command_line_exits_2_without_a_traceback(data_dir, tmp_path, extra, words):
    """The real command line (a process): a flag error and a UserError each exit 2 with the message, nothing else."""
    proc = run_script('train.py', *data_args('IEMOCAP', data_dir), '--epochs', 1, *extra, cwd=tmp_path)
    assert proc.returncode == 2 and words in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert os.listdir(tmp_path) == []


def nan_weights(good):
    state = torch.load(good)
    state['smax_fc.weight'][0, 0] = float('nan')
    return state


BAD_CHECKPOINTS = {  # name -> (writes the file at path from a good checkpoint, words of the message)
    'truncated': (lambda path, good: path.write_bytes(good.read_bytes()[:5000]), 'damaged (a partial download'),
    'empty': (lambda path, good: path.write_bytes(b''), 'damaged'),
    'text file': (lambda path, good: path.write_text('hello'), 'damaged'),
    'pickled module': (lambda path, good: torch.save(torch.nn.Linear(2, 2), path),
                       'it holds more than tensors (it refers to torch.nn.modules.linear.Linear)'),
    'plain pickle': (lambda path, good: path.write_bytes(pickle.dumps((1, {'a': 2}), protocol=4)),
                     'it holds more than tensors'),
    'wrapped state_dict': (lambda path, good: torch.save({'model': torch.load(good), 'epoch': 3}, path),
                           'not a plain state_dict'),
    'nan weights': (lambda path, good: torch.save(nan_weights(good), path),
                    'holds NaN or infinite weights (smax_fc.weight)'),
}


@pytest.mark.parametrize('name', list(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_one_line_exit_2_and_nothing_written(one_epoch_run, data_dir, tmp_path, name,
                                                                 monkeypatch, capsys):
    write, words = BAD_CHECKPOINTS[name]
    path = tmp_path / 'model.pth'
    write(path, one_epoch_run / 'best_model_IEMOCAP.pth')
    status = train_cli([*data_args('IEMOCAP', data_dir), '--testing', '--checkpoint', path], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(f'error: {path}') and words in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == ['model.pth']


def test_a_run_folder_checkpoint_needs_the_flags_of_its_run(one_epoch_run, data_dir, tmp_path, monkeypatch, capsys):
    """--norm and --use_speaker leave the state_dict's shapes alone: the run's config.json tells them apart."""
    checkpoint = one_epoch_run / 'best_model_IEMOCAP.pth'
    status = train_cli([*data_args('IEMOCAP', data_dir), '--testing', '--checkpoint', checkpoint, '--norm', 'LN',
                        '--use_speaker', 'b', '--dropout', 0.1], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "--norm 'BN' there, 'LN' here; --use_speaker 'bh' there, 'b' here" in err
    assert '--dropout' not in err, 'evaluation has no dropout: it may differ'
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('testing, out_dir', [(False, 'taken'), (False, 'taken/run'), (True, 'taken'),
                                              (True, None)],
                         ids=['training, a file', 'training, under a file', 'testing, a file',
                              'testing, saved_features a file'])
def test_an_out_dir_blocked_by_a_file_exits_2_and_writes_nothing(data_dir, tmp_path, testing, out_dir, monkeypatch,
                                                                capsys):
    taken = tmp_path / ('saved_features' if out_dir is None else 'taken')
    taken.write_text('my notes')
    flags = ['--testing'] * testing + (['--out-dir', tmp_path / out_dir] if out_dir else [])
    status = train_cli([*data_args('IEMOCAP', data_dir), '--epochs', 1, *flags], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and 'Traceback' not in err, err
    assert err.startswith('error: cannot write into') and f'{taken} is a file, not a folder' in err
    assert '--out-dir' in err
    assert os.listdir(tmp_path) == [taken.name] and taken.read_text() == 'my notes'


def test_missing_feature_file_is_named(tmp_path, monkeypatch, capsys):
    status = train_cli(['--Dataset', 'MELD', '--data-dir', tmp_path / 'features'], tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and 'Traceback' not in err
    assert 'MELD_features.pkl' in err or 'MELD_features_raw1.pkl' in err
    assert os.listdir(tmp_path) == []


def test_help_lists_the_original_flags(tmp_path, monkeypatch, capsys):
    assert train_cli(['--help'], tmp_path, monkeypatch) == 0
    shown = capsys.readouterr().out
    for flag in ('--base-model', '--batch-size', '--Dataset', '--num_L', '--window_spk_f', '--multi_modal',
                 '--mm_fusion_mthd', '--use_speaker', '--testing', '--overhead', '--l2', '--class-weight',
                 '--use_residue', '--av_using_lstm', '--use_modal', '--no-cuda', '--direcred_edge', '--paper'):
        assert flag in shown
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- bench.py

@pytest.mark.slow
def test_bench_prints_one_json_line(tmp_path):
    proc = ok(run_script('bench.py', '--Dataset', 'MELD', '--epochs', 1, '--threads', 1, '--data-dir', tmp_path,
                  '--synthetic-scale', 0.006, cwd=tmp_path))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {'dataset', 'device', 'train_epoch_s', 'test_pass_s', 'train_utterances_per_s',
                           'peak_rss_mb'}
    assert result['dataset'] == 'MELD' and result['device'] == 'cpu'
    assert result['train_epoch_s'] > 0 and result['train_utterances_per_s'] > 0 and result['peak_rss_mb'] > 100
