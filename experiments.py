"""Reproduce a table of the paper over seeds: every cell is a train.py run, the runs go in parallel on Ray.

    python experiments.py table3 --Dataset IEMOCAP                 # Table 3, seeds 1-5, on this machine
    python experiments.py layers --Dataset MELD --seeds 3 --synthetic --epochs 2
    python experiments.py --Dataset MELD --grid protocol=original,textbook -- --lr 0.0002
    python experiments.py table4 --Dataset IEMOCAP --address auto  # on a running Ray cluster
    python experiments.py --list                                   # the tables and their rows

A table is data: its rows, each the flags it changes from the dataset's paper command (the original
README's; `train.py --paper --Dataset X`). Every (row, seed) is a trial: an ordinary train.py run in
<out-dir>/<row>/seed<k>/, started as a subprocess inside a Ray task with as many threads as the CPUs the
trial holds, so it gives the numbers of a lone train.py run of the command in its config.json. Rerunning
the same command keeps the finished trials and reruns the others. <out-dir> gets results.csv (one line
per trial), summary.md (mean ± sample standard deviation per row) and summary.png.
"""
import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

import utils
from core import config, feature_folder
from reports import plots
from studies import ray_trials
from utils import UserError

PAPER_F1 = {'IEMOCAP': 74.24, 'MELD': 67.40}          # published weighted F1 of the full model (one run)
PAPER_COMMAND = {'multi_modal': True}                 # in the README's commands, not set by --paper (no effect)


# ----------------------------------------------------------------------------- the tables

class Table(NamedTuple):
    title: str
    rows: dict          # row name -> the flags (argparse dest -> value) it changes from the paper's command


def sweep(flag, values):
    """One row per value of one flag."""
    return {f'{flag}={value}': {flag: value} for value in values}


def modality_row(modals):
    """Table 4: the modalities and their directed edges; --multi_modal removed for a single modality."""
    return {'modals': modals, 'directed_edge': modals, 'multi_modal': len(modals) > 1}


FULL = {'full': {}}
LAYERS = range(1, 7)                                  # Figure 3 (the paper's own values: 1, 3, 6)
EPSILONS = (0.1, 0.5, 0.9, 1.0, 1.1, 1.5)             # Appendix Figure 3: every paper value and a wider one
WINDOWS = (0, 1, 2, 4, 6, 8, 10, 12)                  # Appendix Figure 4 (0 = no edge that way)

TABLES = {
    'table3': Table("Table 3: the full model, without the multimodal node, without EIGNN, without ECGNN", {
        **FULL, 'no_multimodal_node': {'multimodal_node': ''}, 'no_EIGNN': {'graph_type': 'ECG'},
        'no_ECGNN': {'graph_type': 'EIG'}}),
    'table4': Table("Table 4: modality configurations", {
        **FULL, **{f'modals={modals}': modality_row(modals) for modals in ('l', 'a', 'v', 'la', 'lv', 'av')}}),
    'speaker': Table("Appendix Table 5: speaker embedding", {**FULL, 'no_speaker': {'use_speaker': ''}}),
    'single_edge': Table("Appendix Table 6: intra-utterance multi-edges", {
        **FULL, 'single_intra': {'single_edge': 'intra'}}),
    'directed_edge': Table("Appendix Table 7: intra-utterance directed edges", {
        **FULL, **{f'directed_edge={edges or "none"}': {'directed_edge': edges}
                   for edges in ('', 'l', 'a', 'v', 'la', 'lv', 'av')}}),
    'layers': Table("Figure 3: number of EIGNN (num_L) and ECGNN (num_K) layers", {
        **FULL, **sweep('num_L', LAYERS), **sweep('num_K', LAYERS)}),
    'epsilon': Table("Appendix Figure 3: residual scaling of EIGNN (epsilon2) and ECGNN (epsilon)", {
        **FULL, **sweep('epsilon2', EPSILONS), **sweep('epsilon', EPSILONS)}),
    'window': Table("Appendix Figure 4: window sizes of EIGNN (window_spk, _f) and ECGNN (window_dir, _f)", {
        **FULL, **{row: flags for flag in ('window_spk', 'window_spk_f', 'window_dir', 'window_dir_f')
                   for row, flags in sweep(flag, WINDOWS).items()}}),
    'paper': Table("the paper's configuration alone (a seed study)", FULL),
}

TRAIN_FLAGS = {dest: action for dest, action in config.build_parser().flags.items() if dest != 'help'}
# train.py flags that experiments.py sets itself: neither a --grid name nor a flag after --.
OWN_FLAGS = ('Dataset', 'paper', 'seed', 'epochs', 'data_dir', 'synthetic', 'synthetic_scale', 'valid', 'out_dir',
             'device', 'no_cuda', 'quiet', 'testing', 'overhead', 'checkpoint')
# config.json flags that do not decide a run's numbers: a finished run differing only there is kept.
PATH_FLAGS = ('out_dir', 'data_dir', 'quiet', 'tensorboard')


def is_on_off(dest):
    """Whether a train.py flag is a switch (--multi_modal) rather than --name VALUE."""
    return TRAIN_FLAGS[dest].nargs == 0


def flag_arguments(flags):
    """Flags (dest -> value) as train.py arguments: --name=value, a switch by its name when on, nothing when off."""
    return [TRAIN_FLAGS[dest].option_strings[0] if value is True else f'{TRAIN_FLAGS[dest].option_strings[0]}={value}'
            for dest, value in flags.items() if value is not False]


def flags_text(flags):
    """Row flags for people: --graph_type='ECG', no --multi_modal."""
    return ' '.join(f'--{dest}' if value is True else f'no --{dest}' if value is False else f'--{dest}={value!r}'
                    for dest, value in flags.items()) or "(the paper's command)"


def list_tables(names):
    for name in names:
        print(f"{name}: {TABLES[name].title}")
        for row, flags in TABLES[name].rows.items():
            print(f"  {row:24s} {flags_text(flags)}")


# ----------------------------------------------------------------------------- the command line

def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        usage="%(prog)s [TABLE] --Dataset X [options] [--grid NAME=V1,V2 ...] [-- train.py flags for every trial]",
        epilog="Flags after -- go to every trial's train.py, e.g. -- --lr 0.0002 --protocol textbook.")
    p.add_argument('table', nargs='?', metavar='TABLE',
                   help=f"one of {', '.join(TABLES)} (--list shows their rows); with --grid and no TABLE, the "
                        f"grid alone")
    p.add_argument('--Dataset', choices=list(config.PAPER), help='dataset (required to run)')
    p.add_argument('--seeds', type=config.positive_int, default=5, help='run seeds 1..N (default 5)')
    p.add_argument('--epochs', type=config.positive_int, help="training epochs (default: the paper's)")
    p.add_argument('--data-dir', default='.', help='folder holding the feature folders or the synthetic cache '
                                                   '(default: the current directory)')
    p.add_argument('--synthetic', action='store_true', help='synthetic data (see train.py --help)')
    p.add_argument('--synthetic-scale', type=config.positive_float, default=1.0,
                   help="--synthetic: number of dialogues relative to the real dataset's (default 1.0)")
    p.add_argument('--valid', type=config.validation_split, metavar='{FRACTION,dev}',
                   help="hold out this fraction of training dialogues (or, --Dataset custom, 'dev': the feature "
                        "folder's dev split); the test F1 at the best-validation epoch is reported too")
    p.add_argument('--out-dir', help='experiment folder (default experiments/<Dataset>-<TABLE>/)')
    p.add_argument('--address', help="a running Ray cluster: 'auto' or HOST:PORT from one of its machines, or "
                                     "ray://HOST:PORT (Ray Client); default: Ray starts inside this process and "
                                     "uses this machine")
    p.add_argument('--cpus-per-trial', type=config.positive_int, default=1,
                   help='CPUs, and torch threads, of each trial (default 1)')
    p.add_argument('--gpus-per-trial', type=config.non_negative_float, default=0.0,
                   help='GPUs of each trial, a fraction to share one (e.g. 0.25); above 0 the trials train on '
                        'CUDA (default 0: CPU)')
    p.add_argument('--grid', nargs='+', action='extend', default=[], metavar='NAME=V1,V2',
                   help='a train.py flag and its values (true/false for a switch): every row runs with each '
                        'value; several --grid flags: every combination')
    p.add_argument('--list', action='store_true', help='print the tables and their rows, and run nothing')
    return p


def split_train_flags(argv):
    """(experiments.py's arguments, the train.py flags after --)."""
    if '--' not in argv:
        return argv, []
    return argv[:argv.index('--')], argv[argv.index('--') + 1:]


def train_parser():
    """train.py's parser, raising a UserError where it would exit."""
    parser = config.build_parser()

    def error(message):
        raise UserError(f"train.py flags: {message}")
    parser.error = error
    return parser


def given_flags(train_flags):
    """The dests of the flags that train_flags gives (checked by train.py's parser)."""
    parser = train_parser()
    unset = object()
    parser.set_defaults(**{dest: unset for dest in TRAIN_FLAGS})
    return {dest for dest, value in vars(parser.parse_args(train_flags)).items() if value is not unset}


def parse_grid(items):
    """['num_L=1,2', 'protocol=original,textbook'] -> [(dest, values)]; a switch's values are true / false."""
    grid = {}
    for item in items:
        name, equals, values = item.partition('=')
        dest = config.flag_dest(name)
        if not name or not equals:
            raise UserError(f"--grid {item!r}: write NAME=VALUE1,VALUE2,... (e.g. --grid num_L=1,2,3)")
        if dest not in TRAIN_FLAGS:
            raise UserError(f"--grid {item!r}: train.py has no flag --{name} (python train.py -h lists them)")
        if dest in OWN_FLAGS:
            raise UserError(f"--grid {item!r}: experiments.py sets --{name} itself (see its own options)")
        if dest in grid:
            raise UserError(f"--grid: --{name} is given twice")
        values = values.split(',')
        if len(set(values)) != len(values):
            raise UserError(f"--grid {item!r}: a value is repeated")
        grid[dest] = [switch_value(item, text) if is_on_off(dest) else text for text in values]
    return list(grid.items())


def switch_value(item, text):
    if text.lower() not in ('true', 'false'):
        raise UserError(f"--grid {item!r}: that flag is a switch: its values are true and false")
    return text.lower() == 'true'


def table_rows(table, grid):
    """Row name -> flags changed from the paper's command: the table's rows, each run with every grid combination.
    A grid row is named by its values (full,protocol=textbook is protocol=textbook)."""
    rows = TABLES[table].rows
    for dest, values in grid:
        rows = {','.join(part for part in (row, f'{dest}={value}') if part != 'full'): {**flags, dest: value}
                for row, flags in rows.items() for value in values}
    return rows


def check_args(args, table, grid, train_flags):
    """Refuse what the trials cannot do: no dataset, and flags given twice (by a row and after --)."""
    if args.Dataset is None:
        raise UserError(f"--Dataset is required: IEMOCAP, MELD, MOSEI or {config.CUSTOM} (your conversations: "
                        "--data-dir, a folder of extract_features.py)")
    in_table = {dest for flags in TABLES[table].rows.values() for dest in flags}
    for dest, _ in grid:
        if dest in in_table:
            raise UserError(f"--grid: the rows of {table} already set --{dest}; run the grid on another table")
    given = given_flags(train_flags)
    own = sorted(given & set(OWN_FLAGS))
    if own:
        raise UserError(f"--{own[0]} after --: experiments.py sets it for every trial (see its own options)")
    twice = sorted(given & (in_table | {dest for dest, _ in grid} | set(PAPER_COMMAND)))
    if twice:
        raise UserError(f"--{twice[0]} after --: the table's rows or --grid set it already; drop it after --")


def default_out_dir(args, grid):
    name = '-'.join([args.Dataset] + [args.table] * bool(args.table) + ['grid'] * bool(grid) +
                    [dest for dest, _ in grid])
    return os.path.join('experiments', name)


# ----------------------------------------------------------------------------- the trials

@dataclass(eq=False)
class Trial:
    """One (row, seed) of the experiment: a train.py run in its own folder."""
    row: str
    seed: int
    changed: dict       # the flags the row changes, as train.py reads them
    argv: list          # train.py's arguments
    flags: dict         # every flag train.py resolves from argv: what the run's config.json holds
    run_dir: str


def trial_argv(args, row_flags, seed, run_dir, train_flags):
    """train.py's arguments of one trial: the paper's command, the row's flags, the flags after --, ours."""
    argv = ['--paper', '--Dataset', args.Dataset, *flag_arguments({**PAPER_COMMAND, **row_flags}), *train_flags,
            '--seed', str(seed)]
    argv += ['--epochs', str(args.epochs)] * bool(args.epochs)
    argv += ['--data-dir', os.path.abspath(args.data_dir)]
    argv += ['--synthetic', '--synthetic-scale', str(args.synthetic_scale)] * args.synthetic
    argv += ['--valid', str(args.valid)] * (args.valid is not None)
    return argv + ['--device', 'cuda' if args.gpus_per_trial else 'cpu', '--out-dir', run_dir, '--quiet']


def resolved_flags(argv, extracted=None):
    """Every flag of a train.py command as its config.json records them (combinations are the trial's to check);
    extracted: --Dataset custom's extracted modalities, which train.py gives --modals and --directed_edge unset."""
    flags = train_parser().parse_args(argv)
    config.resolve_hyperparameters(flags)
    if extracted:
        config.resolve_extracted(flags, extracted)
    return vars(flags)


def plan_trials(args, rows, train_flags, out_dir):
    """Every (row, seed) as a Trial, rows in the table's order. --Dataset custom: the feature folder is read here,
    once (dataset.json and the hashes of the files training reads), not once per trial; each trial's train.py
    loads it again."""
    extracted = None
    if args.Dataset == config.CUSTOM:
        extracted = feature_folder.read_meta(args.data_dir, feature_folder.TRAINING_READS)[0]['modals']
    trials = []
    for row, row_flags in rows.items():
        for seed in range(1, args.seeds + 1):
            run_dir = os.path.join(out_dir, row, f'seed{seed}')
            argv = trial_argv(args, row_flags, seed, run_dir, train_flags)
            flags = resolved_flags(argv, extracted)
            trials.append(Trial(row, seed, {dest: flags[dest] for dest in row_flags}, argv, flags, run_dir))
    return trials


def finished_earlier(trial):
    """Whether the trial's folder holds a finished run of its flags (kept, not rerun). A finished run of other
    flags there is never overwritten: a UserError."""
    if not utils.finished_run(trial.run_dir):
        return False
    recorded = (utils.read_json(os.path.join(trial.run_dir, 'config.json')) or {}).get('flags', {})
    differ = sorted(dest for dest in set(recorded) | set(trial.flags)
                    if dest not in PATH_FLAGS and recorded.get(dest) != trial.flags.get(dest))
    if differ:
        raise UserError(f"{trial.run_dir} holds a finished run with other flags "
                        f"({', '.join('--' + dest for dest in differ)}) than this experiment's; give another "
                        f"--out-dir, or delete that folder to run it again.")
    return True


# ----------------------------------------------------------------------------- results and summary

METRICS = {  # results.csv column -> heading: the test weighted F1 of each way of picking the epoch
    'best_test_f1': 'best test epoch (paper protocol)',
    'last_f1': 'last epoch',
    'valid_test_f1': 'best validation epoch',
}
SCORE_COLUMNS = ['best_test_f1', 'best_test_epoch', 'best_test_acc', 'last_f1', 'last_acc']
VALID_COLUMNS = ['valid_test_f1', 'valid_epoch', 'valid_test_acc']


def trial_scores(run_dir, with_valid):
    """The scores of a finished trial, from its metrics.csv (and its training seconds from result.json)."""
    metrics = pd.read_csv(os.path.join(run_dir, 'metrics.csv'))
    best, last = metrics.loc[metrics['test_f1'].idxmax()], metrics.iloc[-1]
    scores = dict(best_test_f1=best['test_f1'], best_test_epoch=int(best['epoch']), best_test_acc=best['test_acc'],
                  last_f1=last['test_f1'], last_acc=last['test_acc'])
    if with_valid:
        chosen = metrics.loc[metrics['valid_f1'].idxmax()]
        scores.update(valid_test_f1=chosen['test_f1'], valid_epoch=int(chosen['epoch']),
                      valid_test_acc=chosen['test_acc'])
    scores['seconds'] = utils.read_json(os.path.join(run_dir, 'result.json'))['seconds']
    return scores


def results_table(trials, outcomes, varied, with_valid, out_dir):
    """results.csv: one line per trial; scores for finished trials only."""
    lines = []
    for trial in trials:
        status = 'finished' if utils.finished_run(trial.run_dir) else 'not run'
        outcome = outcomes.get(trial) or ray_trials.Outcome(status)
        line = dict(row=trial.row, seed=trial.seed, **{dest: trial.flags[dest] for dest in varied},
                    status=outcome.status)
        if outcome.status == 'finished':
            line.update(trial_scores(trial.run_dir, with_valid))
        lines.append(dict(line, error=outcome.error, run_dir=os.path.relpath(trial.run_dir, out_dir)))
    columns = (['row', 'seed', *varied, 'status', *SCORE_COLUMNS, *VALID_COLUMNS * with_valid, 'seconds', 'error',
                'run_dir'])
    results = pd.DataFrame(lines, columns=columns)
    for column in ['best_test_epoch'] + ['valid_epoch'] * with_valid:
        results[column] = results[column].astype('Int64')                 # an integer column with gaps
    return results


def row_statistics(results, rows, metrics):
    """Per row, in the table's order: n finished trials, and each metric's mean and sample standard deviation."""
    stats = {}
    for row in rows:
        finished = results[(results['row'] == row) & (results['status'] == 'finished')]
        stats[row] = {'n': len(finished)}
        for metric in metrics:
            values = finished[metric].astype(float)
            stats[row].update({f'{metric}_mean': values.mean(), f'{metric}_std': values.std(ddof=1)})
    return pd.DataFrame.from_dict(stats, orient='index')


def mean_std_text(mean, std, n):
    """'66.03 ± 0.52 (5)': mean ± sample standard deviation (n); a single run has no deviation."""
    if n == 0:
        return '–'
    return f"{mean:.2f} ({n})" if n == 1 else f"{mean:.2f} ± {std:.2f} ({n})"


def sweep_lines(changed):
    """flag -> [(value, row)] when every row but 'full' changes one numeric flag (a sweep); else None."""
    lines = {}
    for row, flags in changed.items():
        if row == 'full':
            continue
        value = next(iter(flags.values()), None)
        if len(flags) != 1 or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        lines.setdefault(next(iter(flags)), []).append((value, row))
    return {flag: sorted(points) for flag, points in lines.items()} or None


def seeds_text(n):
    return '1' if n == 1 else f'1-{n}'


def data_text(args):
    if args.synthetic:
        return (f"SYNTHETIC {args.Dataset}-shaped data (scale {args.synthetic_scale}): these numbers say nothing "
                f"about the paper's")
    return f"real {args.Dataset} features from {os.path.abspath(args.data_dir)}"


def summary_markdown(args, title, command, stats, changed, metrics, results):
    """summary.md: what was run, then one line per row: mean ± sample std (n) of each way of picking the epoch."""
    counts = results['status'].value_counts()
    epochs = args.epochs or config.PAPER[args.Dataset]['epochs']
    paper = PAPER_F1.get(args.Dataset)
    lines = [f"# {args.Dataset}: {title}", "",
             f"Data: {data_text(args)}. Seeds: {seeds_text(args.seeds)}; epochs per trial: {epochs}.  ",
             f"Command: `{command}`  ",
             "Trials: " + ', '.join(f"{counts[s]} {s}" for s in ('finished', 'failed', 'interrupted', 'not run')
                                    if s in counts) + f" of {len(results)}.", "",
             "Test weighted F1 (%), mean ± sample standard deviation (number of finished seeds). "
             "\"Best test epoch\" is the paper's protocol: the epoch is picked on the test set, so it is optimistic.",
             ""]
    header = ['row', "flags changed from the paper's command", *metrics.values()] + ['paper'] * bool(paper)
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row, stat in stats.iterrows():
        cells = [row, flags_text(changed[row]).replace('|', '\\|'),
                 *(mean_std_text(stat[f'{m}_mean'], stat[f'{m}_std'], int(stat['n'])) for m in metrics)]
        if paper:
            cells.append('' if changed[row] else f"{paper:.2f}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    if paper:
        lines += ["", "paper: the published weighted F1 of the full model on the real data (one run)."]
    return '\n'.join(lines) + '\n'


def summary_picture(path, args, title, stats, changed, metrics):
    """summary.png: lines with a ± std band for a numeric sweep, else bars with error bars."""
    lines = sweep_lines(changed)
    title = f"{args.Dataset}: {title}" + " (SYNTHETIC data)" * args.synthetic
    if lines:
        plots.experiment_sweeps(path, stats, lines, metrics, title, reference='full' if 'full' in stats.index else None)
    else:
        plots.experiment_bars(path, stats, metrics, title, paper=PAPER_F1.get(args.Dataset))


def write_outputs(args, argv, title, trials, outcomes, out_dir):
    """results.csv, summary.md and summary.png in out_dir; the summary's text."""
    changed = {trial.row: trial.changed for trial in trials}
    varied = list(dict.fromkeys(dest for flags in changed.values() for dest in flags))
    metrics = {m: heading for m, heading in METRICS.items() if m != 'valid_test_f1' or args.valid is not None}
    results = results_table(trials, outcomes, varied, args.valid is not None, out_dir)
    stats = row_statistics(results, changed, metrics)
    command = shlex.join(['python', 'experiments.py', *argv])
    summary = summary_markdown(args, title, command, stats, changed, metrics, results)
    utils.save_csv(os.path.join(out_dir, 'results.csv'), results)
    utils.save_text(os.path.join(out_dir, 'summary.md'), summary)
    summary_picture(os.path.join(out_dir, 'summary.png'), args, title, stats, changed, metrics)
    return summary


# ----------------------------------------------------------------------------- main

def experiment_title(table, grid):
    """The table's title, and the grid's flags and values (table None: the grid alone)."""
    grid_text = '--grid ' + ' '.join(f"{dest}={','.join(map(str, values))}" for dest, values in grid)
    if table is None:
        return grid_text
    return TABLES[table].title + f", each row with {grid_text}" * bool(grid)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    own, train_flags = split_train_flags(argv)
    args = build_parser().parse_args(own)
    if args.table is not None and args.table not in TABLES:
        raise UserError(f"unknown table {args.table!r}; the tables: {', '.join(TABLES)} (--list shows their rows)")
    if args.list:
        list_tables([args.table] if args.table else TABLES)
        return 0
    if args.table is None and not args.grid:
        raise UserError(f"name a table ({', '.join(TABLES)}) or give --grid NAME=V1,V2")
    table, grid = args.table or 'paper', parse_grid(args.grid)
    check_args(args, table, grid, train_flags)
    out_dir = os.path.abspath(args.out_dir or default_out_dir(args, grid))
    utils.check_output_folder(out_dir, '--out-dir')
    trials = plan_trials(args, table_rows(table, grid), train_flags, out_dir)
    to_run = [trial for trial in trials if not finished_earlier(trial)]
    title = experiment_title(args.table, grid)
    print(f"{args.Dataset}, {title}: {len(trials)} trials in {out_dir}; "
          f"{len(trials) - len(to_run)} finished earlier (kept), {len(to_run)} to run", flush=True)
    outcomes, stopped, timing = {}, None, None
    if to_run:
        ray_trials.prepare_data(args)
        outcomes, stopped, timing = ray_trials.run_on_ray(to_run, args, out_dir)
    print(write_outputs(args, argv, title, trials, outcomes, out_dir))
    failed = [(trial, outcome) for trial, outcome in outcomes.items() if outcome.status == 'failed']
    for trial, outcome in failed:
        print(f"FAILED {trial.row} seed {trial.seed} ({trial.run_dir}): {outcome.error}")
    if timing:
        print(timing)
    print(f"wrote {os.path.join(out_dir, 'results.csv')}, summary.md and summary.png")
    if stopped:
        print("interrupted: the finished trials are summarised; run the same command again to run the rest")
        return stopped
    return 1 if failed else 0


def cli():
    """main with UserErrors as one paragraph (exit 2), and Ctrl-C before the trials run as exit 130."""
    try:
        sys.exit(utils.run_cli(main))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    cli()
