"""train.py --tensorboard: the event files, read back with TensorBoard's own reader, hold metrics.csv's numbers;
a grid of experiments.py gives every trial its own logs, which one `tensorboard --logdir` finds side by side."""
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from helpers import ok, run_script

TINY = ['--Dataset', 'MELD', '--synthetic', '--synthetic-scale', 0.006, '--epochs', 2]     # 7 training dialogues
METRICS = {'loss': 'loss', 'acc': 'accuracy', 'f1': 'weighted_f1'}


def assert_logs_match_metrics(run_dir, splits):
    """Every metrics.csv column (but epoch) is the scalar <metric>/<split>, one value per epoch, and nothing else."""
    metrics = pd.read_csv(run_dir / 'metrics.csv')
    events = EventAccumulator(str(run_dir / 'tensorboard'))
    events.Reload()
    expected = {f'{METRICS[column.split("_", 1)[1]]}/{column.split("_", 1)[0]}': column
                for column in metrics.columns if column != 'epoch'}
    assert set(expected) == {f'{metric}/{split}' for metric in METRICS.values() for split in splits}
    assert sorted(events.Tags()['scalars']) == sorted(expected)
    for tag, column in expected.items():
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == list(metrics['epoch'])
        assert [e.value for e in logged] == pytest.approx(list(metrics[column]), rel=1e-6)    # float32 in the files


@pytest.mark.slow
def test_tensorboard_logs_every_split_and_metric_per_epoch(data_dir, tmp_path):
    run = tmp_path / 'run'
    ok(run_script('train.py', '--paper', *TINY, '--data-dir', data_dir, '--batch-size', 4, '--valid', 0.3,
                  '--tensorboard', '--out-dir', run, cwd=tmp_path))
    assert_logs_match_metrics(run, ('train', 'valid', 'test'))


@pytest.mark.slow
def test_a_grid_gives_every_trial_its_own_logs(data_dir, tmp_path):
    out = tmp_path / 'exp'
    ok(run_script('experiments.py', *TINY, '--data-dir', data_dir, '--seeds', 1, '--grid', 'num_L=1,2',
                  '--out-dir', out, '--', '--batch-size', 4, '--tensorboard', cwd=tmp_path))
    trials = [f'num_L={layers}/seed{seed}' for layers in (1, 2) for seed in (1,)]
    for trial in trials:
        assert_logs_match_metrics(out / trial, ('train', 'test'))
    runs = EventMultiplexer().AddRunsFromDirectory(str(out))        # what `tensorboard --logdir <out-dir>` finds
    assert sorted(runs.Runs()) == sorted(f'{trial}/tensorboard' for trial in trials)
