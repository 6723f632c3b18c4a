"""experiments.py as a user runs it: tiny grids of tiny synthetic MELD runs under an embedded Ray (slow), and
its planning, summaries and bad input in this process (no Ray).
"""
import json
import os
import re
import statistics

import pandas as pd
import pytest

from helpers import REPO, assert_png, ok, run_script

TINY = ['--Dataset', 'MELD', '--epochs', 1, '--synthetic', '--synthetic-scale', 0.006]   # 7 training dialogues
TRAIN_FLAGS = ['--', '--batch-size', 4]                                                 # two batches per epoch
RUN_FILES = ['best_model_MELD.pth', 'config.json', 'confusion.png', 'curves.png', 'metrics.csv', 'report.txt',
             'result.json']


def experiments(*args, data_dir, cwd, env=None):
    return run_script('experiments.py', *TINY, '--data-dir', data_dir, *args, cwd=cwd, env=env)


@pytest.fixture(scope='module')
def grid(tmp_path_factory, data_dir):
    """The speaker table (2 rows) over 2 seeds, run once: (experiment folder, command's arguments, process)."""
    cwd = tmp_path_factory.mktemp('grid')
    args = ['speaker', '--seeds', 2, '--out-dir', cwd / 'exp', *TRAIN_FLAGS]
    return cwd / 'exp', args, ok(experiments(*args, data_dir=data_dir, cwd=cwd))


def run_folders(out):
    return {f'{row}/seed{seed}': out / row / f'seed{seed}' for row in ('full', 'no_speaker') for seed in (1, 2)}


def scores_from_metrics(run_dir):
    """(best test F1, its epoch, last-epoch F1) recomputed from a trial's metrics.csv."""
    metrics = pd.read_csv(run_dir / 'metrics.csv')
    best = metrics.loc[metrics['test_f1'].idxmax()]
    return best['test_f1'], int(best['epoch']), metrics['test_f1'].iloc[-1]


def mean_std(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


@pytest.mark.slow
def test_a_grid_writes_trial_folders_results_and_summary(grid):
    out, _, proc = grid
    for run_dir in run_folders(out).values():
        assert sorted(os.listdir(run_dir)) == RUN_FILES
        assert json.loads((run_dir / 'result.json').read_text())['status'] == 'finished'
        assert json.loads((run_dir / 'config.json').read_text())['threads'] == 1          # --cpus-per-trial 1
    assert 'trials: 4 done, 0 running, 0 failed of 4' in proc.stdout

    results = pd.read_csv(out / 'results.csv', keep_default_na=False)
    assert list(results[['row', 'seed']].itertuples(index=False, name=None)) == [
        ('full', 1), ('full', 2), ('no_speaker', 1), ('no_speaker', 2)]
    assert list(results['use_speaker']) == ['i', 'i', '', ''] and set(results['status']) == {'finished'}
    summary = (out / 'summary.md').read_text()
    assert 'SYNTHETIC' in summary and 'Trials: 4 finished of 4.' in summary
    for row in ('full', 'no_speaker'):
        mine = results[results['row'] == row]
        recomputed = [scores_from_metrics(out / row / f'seed{seed}') for seed in (1, 2)]
        assert list(mine['best_test_f1']) == [best for best, _, _ in recomputed]
        assert list(mine['best_test_epoch']) == [epoch for _, epoch, _ in recomputed]
        assert list(mine['last_f1']) == [last for _, _, last in recomputed]
        line = next(line for line in summary.splitlines() if line.startswith(f'| {row} |'))
        assert line.split(' | ')[2:4] == [mean_std([best for best, _, _ in recomputed]),
                                         mean_std([last for _, _, last in recomputed])]
    assert next(line for line in summary.splitlines() if line.startswith('| full |')).endswith('| 67.40 |')
    assert_png(out / 'summary.png')


@pytest.mark.slow
def test_a_grid_trial_equals_a_lone_train_run_of_its_command(grid, tmp_path):
    """config.json holds the exact train.py command: run alone with the same thread count, the same numbers."""
    run_dir = run_folders(grid[0])['no_speaker/seed2']
    command = json.loads((run_dir / 'config.json').read_text())['command']
    assert command[0] == 'train.py' and command[command.index('--out-dir') + 1] == str(run_dir)
    command[command.index('--out-dir') + 1] = str(tmp_path / 'lone')
    ok(run_script(command[0], *command[1:], cwd=REPO, env=dict(OMP_NUM_THREADS='1')))
    assert (tmp_path / 'lone' / 'metrics.csv').read_bytes() == (run_dir / 'metrics.csv').read_bytes()


@pytest.mark.slow
def test_a_rerun_keeps_finished_trials_and_reruns_a_trial_without_report(grid, data_dir):
    out, args, _ = grid
    folders = run_folders(out)

    def stamps():
        return {(name, file): os.stat(run_dir / file).st_mtime_ns
                for name, run_dir in folders.items() for file in os.listdir(run_dir)}
    before = stamps()
    import experiments as module  # in-process: with every trial kept, Ray is not even started
    assert module.main([*TINY, '--data-dir', data_dir, *args]) == 0
    assert stamps() == before, "a rerun of a finished grid trains nothing"

    os.remove(folders['full/seed2'] / 'report.txt')
    ok(experiments(*args, data_dir=data_dir, cwd=out.parent))
    after = stamps()
    rerun = {name for (name, file), stamp in after.items() if before.get((name, file)) != stamp}
    assert rerun == {'full/seed2'} and after.keys() == before.keys()
    assert json.loads((folders['full/seed2'] / 'result.json').read_text())['status'] == 'finished'
    assert set(pd.read_csv(out / 'results.csv')['status']) == {'finished'}


@pytest.mark.slow
def test_a_failing_row_fails_alone(data_dir, tmp_path):
    """EIG reads the multimodal node of EIGNN, which --multimodal_node=ECG leaves out: that row fails, exit 1."""
    proc = experiments('--seeds', 1, '--out-dir', tmp_path / 'exp', '--grid', 'graph_type=both,EIG',
                       '--', '--multimodal_node=ECG', '--batch-size', 4, data_dir=data_dir, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED graph_type=EIG seed 1" in proc.stdout and 'Traceback' not in proc.stdout + proc.stderr
    results = pd.read_csv(tmp_path / 'exp' / 'results.csv', keep_default_na=False).set_index('row')
    assert results.loc['graph_type=both', 'status'] == 'finished' and results.loc['graph_type=both', 'error'] == ''
    assert results.loc['graph_type=EIG', 'status'] == 'failed'
    assert "--multimodal_node='ECG' leaves it out" in results.loc['graph_type=EIG', 'error']
    assert results.loc['graph_type=EIG', 'best_test_f1'] == ''
    assert 'Trials: 1 finished, 1 failed of 2.' in (tmp_path / 'exp' / 'summary.md').read_text()


# ----------------------------------------------------------------------------- in-process checks (no Ray)

def test_list_prints_the_tables_and_their_rows(tmp_path, monkeypatch, capsys):
    import experiments
    monkeypatch.chdir(tmp_path)
    assert experiments.main(['--list']) == 0
    listed = capsys.readouterr().out
    for name, table in experiments.TABLES.items():
        assert f'{name}: {table.title}' in listed
        assert all(f'  {row} ' in listed for row in table.rows)
    assert "modals=l                 --modals='l' --directed_edge='l' no --multi_modal" in listed
    assert experiments.main(['--list', 'speaker']) == 0
    assert capsys.readouterr().out.splitlines() == [
        'speaker: Appendix Table 5: speaker embedding',
        "  full                     (the paper's command)",
        "  no_speaker               --use_speaker=''"]
    assert os.listdir(tmp_path) == []


def documented_rows(table):
    """docs/experiments.md's rows of a table whose line names each row with its flag: {row: {dest: value}}."""
    line = next(line for line in (REPO / 'docs' / 'experiments.md').read_text().splitlines()
                if line.startswith(f'| `{table}`'))
    rows = {'full': {}}
    for row, flag, value in re.findall(r"`(\w+)` \(`--(\w+)=([^`]*)`\)", line):
        rows[row] = {flag: value.strip("'")}
    return rows


def test_tables_follow_the_documented_rules():
    import experiments
    for table in ('table3', 'speaker', 'single_edge'):
        assert experiments.TABLES[table].rows == documented_rows(table)
    rows = experiments.TABLES['table4'].rows         # one modality: --multi_modal removed; two: kept
    for modals in ('l', 'a', 'v', 'la', 'lv', 'av'):
        assert rows[f'modals={modals}'] == {'modals': modals, 'directed_edge': modals, 'multi_modal': len(modals) > 1}
    assert all(next(iter(table.rows)) == 'full' for table in experiments.TABLES.values())
    assert experiments.flag_arguments({**experiments.PAPER_COMMAND, **rows['modals=l']}) == [
        '--modals=l', '--directed_edge=l']
    assert experiments.flag_arguments({'multimodal_node': '', 'num_L': 2, 'multi_modal': True}) == [
        '--multimodal_node=', '--num_L=2', '--multi_modal']
    layers = experiments.table_rows('layers', [])
    assert experiments.sweep_lines(layers) == {'num_L': [(n, f'num_L={n}') for n in range(1, 7)],
                                               'num_K': [(n, f'num_K={n}') for n in range(1, 7)]}
    assert experiments.sweep_lines(experiments.table_rows('table3', [])) is None
    grid = experiments.parse_grid(['protocol=original,textbook'])
    assert list(experiments.table_rows('speaker', grid)) == [
        'protocol=original', 'protocol=textbook', 'no_speaker,protocol=original', 'no_speaker,protocol=textbook']


def test_a_sweep_is_drawn_as_lines_with_a_band(tmp_path):
    import experiments
    from reports import plots
    rows = experiments.table_rows('epsilon', [])
    stats = pd.DataFrame({'n': 2, 'best_test_f1_mean': range(len(rows)), 'best_test_f1_std': 0.5}, index=list(rows))
    plots.experiment_sweeps(tmp_path / 'summary.png', stats, experiments.sweep_lines(rows),
                            {'best_test_f1': 'best test epoch'}, 'MELD: epsilon', reference='full')
    assert_png(tmp_path / 'summary.png')


def test_kept_trials_are_summarised_without_ray_with_valid(tmp_path, monkeypatch, capsys):
    """Finished run folders of the right flags (made up here) are kept: their numbers go straight to the summary."""
    import experiments
    import utils
    args = ['layers', '--Dataset', 'IEMOCAP', '--seeds', 2, '--epochs', 2, '--valid', 0.2,
            '--out-dir', tmp_path / 'exp']
    plan = experiments.build_parser().parse_args(map(str, args))
    rows = experiments.table_rows('layers', [])
    for i, trial in enumerate(experiments.plan_trials(plan, rows, [], str(tmp_path / 'exp'))):
        utils.save_json(os.path.join(trial.run_dir, 'config.json'), dict(flags=trial.flags))
        utils.save_csv(os.path.join(trial.run_dir, 'metrics.csv'), pd.DataFrame(dict(
            epoch=[1, 2], test_f1=[50.0 + i, 40.0], test_acc=[60.0, 61.0], valid_f1=[1.0, 2.0])))
        utils.save_text(os.path.join(trial.run_dir, 'report.txt'), 'report')
        utils.save_json(os.path.join(trial.run_dir, 'result.json'), dict(status='finished', seconds=1.5))
    monkeypatch.chdir(tmp_path)
    assert experiments.main(args) == 0
    assert '26 finished earlier (kept), 0 to run' in capsys.readouterr().out
    results = pd.read_csv(tmp_path / 'exp' / 'results.csv')
    assert list(results['best_test_f1']) == [50.0 + i for i in range(26)] and set(results['best_test_epoch']) == {1}
    assert set(results['valid_test_f1']) == {40.0} and set(results['valid_epoch']) == {2}
    assert list(results.columns[2:4]) == ['num_L', 'num_K'] and list(results['num_L'][2:14:2]) == [1, 2, 3, 4, 5, 6]
    summary = (tmp_path / 'exp' / 'summary.md').read_text()
    assert '| best test epoch (paper protocol) | last epoch | best validation epoch | paper |' in summary
    assert '| num_L=1 | --num_L=1 | 52.50 ± 0.71 (2) | 40.00 ± 0.00 (2) | 40.00 ± 0.00 (2) |  |' in summary
    assert_png(tmp_path / 'exp' / 'summary.png')


BAD_INPUT = {  # name -> (arguments, words of the message)
    'unknown table': (['tableX', '--Dataset', 'MELD'], 'unknown table'),
    'no dataset': (['table3'], '--Dataset is required'),
    'grid syntax': (['--Dataset', 'MELD', '--grid', 'num_L'], 'NAME=VALUE1,VALUE2'),
    'grid flag unknown': (['--Dataset', 'MELD', '--grid', 'num_X=1,2'], 'no flag --num_X'),
    'grid value': (['--Dataset', 'MELD', '--grid', 'num_L=1,two'], "invalid int value: 'two'"),
    'grid flag of experiments.py': (['--Dataset', 'MELD', '--grid', 'seed=1,2'], 'sets --seed itself'),
    'grid flag of the table': (['table3', '--Dataset', 'MELD', '--grid', 'graph_type=ECG'], 'already set'),
    'train flag given twice': (['table3', '--Dataset', 'MELD', '--', '--graph_type', 'ECG'], 'drop it after --'),
    'train flag unknown': (['table3', '--Dataset', 'MELD', '--', '--bogus'], 'unrecognized arguments: --bogus'),
}


@pytest.mark.parametrize('name', list(BAD_INPUT))
def test_bad_input_is_one_paragraph_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    import experiments
    import utils
    args, words = BAD_INPUT[name]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(experiments.main, args)
    assert stop.value.code == 2 and words in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_an_out_dir_that_is_a_file_is_refused_before_ray_starts(tmp_path, monkeypatch, capsys):
    import experiments
    import utils
    (tmp_path / 'exp').write_text('not a folder')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        utils.run_cli(experiments.main, ['paper', '--Dataset', 'MELD', '--out-dir', 'exp'])
    assert stop.value.code == 2 and 'is a file, not a folder' in capsys.readouterr().err
    assert os.listdir(tmp_path) == ['exp']


def finished_trials(args, table, out_dir):
    """Finished run folders (made up: config.json, report.txt, result.json) of the trials the arguments plan."""
    import experiments
    import utils
    plan = experiments.build_parser().parse_args(map(str, args))
    for trial in experiments.plan_trials(plan, experiments.table_rows(table, []), [], str(out_dir)):
        utils.save_json(os.path.join(trial.run_dir, 'config.json'), dict(flags=trial.flags))
        utils.save_text(os.path.join(trial.run_dir, 'report.txt'), 'report')
        utils.save_json(os.path.join(trial.run_dir, 'result.json'), dict(status='finished', seconds=1.5))


def test_a_finished_trial_of_other_flags_is_never_overwritten(tmp_path):
    import experiments
    import utils
    args = [*TINY, '--data-dir', tmp_path / 'data', 'speaker', '--seeds', 2, '--out-dir', tmp_path / 'exp']
    finished_trials(args, 'speaker', tmp_path / 'exp')
    before = {path: path.read_bytes() for path in (tmp_path / 'exp').rglob('*') if path.is_file()}
    changed = [str(a) for a in args]
    changed[changed.index('--epochs') + 1] = '2'
    with pytest.raises(utils.UserError, match=r'holds a finished run with other flags \(--epochs\)'):
        experiments.main(changed)
    assert {path: path.read_bytes() for path in (tmp_path / 'exp').rglob('*') if path.is_file()} == before
    assert os.listdir(tmp_path) == ['exp'], 'no data generated, nothing written'
