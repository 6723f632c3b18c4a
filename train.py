"""Train MoED on IEMOCAP, MELD or CMU-MOSEI, or evaluate a checkpoint (--testing): the original train.py's CLI.

    python train.py --paper --Dataset IEMOCAP              # the paper's IEMOCAP run
    python train.py <README command> --testing             # evaluate ./best_model_<Dataset>.pth
    python train.py --paper --Dataset MELD --synthetic     # the same on generated data of real shape
    python train.py --Dataset custom --data-dir DIR        # your conversations (a folder of extract_features.py)

A training run writes its run folder (--out-dir): config.json, metrics.csv, best_model_<Dataset>.pth,
curves.png, confusion.png, report.txt and result.json (written last: 'finished' or 'interrupted').
--testing writes saved_features/ and saved_outputs/ under --out-dir if given, else under the current
directory (as the original did). main(), at the end, reads: parse, load, build, train or test.
"""
import datetime
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import asdict
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

import utils
from core import checkpoints, config, feature_folder, training
from reports import overhead, plots, viewer

# ----------------------------------------------------------------------------- the run folder

def default_run_dir(args):
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    base = os.path.join('runs', f'{args.Dataset}-{stamp}-seed{args.seed}')
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f'{base}-{n}'
    return path


def refuse_finished_run(run_dir):
    """A folder holding a finished run is never overwritten; an interrupted or partial one is."""
    if utils.finished_run(run_dir):
        raise utils.UserError(f"--out-dir {run_dir} already holds a finished training run (its report.txt and "
                              f"result.json); choose another --out-dir, or delete that folder to train again.")


def selection_metric(args):
    """The metric whose best epoch gives the saved checkpoint."""
    return 'valid_f1' if args.valid is not None else 'test_f1'


def selection_rule(args, n_valid):
    if args.valid is None:
        return ("best test weighted F1 over epochs (the paper's protocol: selected on the TEST set, "
                "so the score is optimistic)")
    if args.valid == 'dev':
        return (f"best validation weighted F1 over epochs (validation: the feature folder's dev split, {n_valid} "
                "dialogues; the test set plays no part)")
    return (f"best validation weighted F1 over epochs (validation: {n_valid} training dialogues, "
            f"fraction {args.valid}, held out with seed {args.seed}; the test set plays no part)")


def protocol_description(name):
    """One line for the run header and report.txt; the textbook protocol is flagged as a deviation."""
    if name == 'original':
        return ("original (the authors' loop: reseeded at every pass, the same batch order and dropout masks "
                "every epoch)")
    return ("textbook: a fresh batch order and fresh dropout masks every epoch, never reseeded "
            "(DEVIATION from the original code: runs do not reproduce the authors')")


def run_config(args, net, fs, splits, rule, start):
    """Everything needed to understand and repeat a run, start (training.start_from_head) included: written to
    config.json."""
    values = dict(
        command=[os.path.basename(sys.argv[0] or 'train.py')] + sys.argv[1:], flags=vars(args),
        model_config=asdict(net.cfg),
        data=dict(dataset=args.Dataset, synthetic=args.synthetic,
                  synthetic_scale=args.synthetic_scale if args.synthetic else None,
                  description=training.data_description(args, fs), source=list(map(str, fs.source)),
                  dialogues={name: len(keys) for name, keys in splits.items()}),
        initial_weights=start, checkpoint_selection=rule, protocol=protocol_description(args.protocol),
        device=args.device,
        device_name=torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or 'cpu',
        torch=torch.__version__, python=platform.python_version(), numpy=np.__version__,
        threads=torch.get_num_threads(), started=datetime.datetime.now().isoformat(timespec='seconds'))
    if args.Dataset == config.CUSTOM:
        values['features'] = fs.meta     # dataset.json: label names, speakers, the recipe predict.py repeats
    return values


# ----------------------------------------------------------------------------- training

class Best(NamedTuple):
    """The best epoch so far by one metric, with that epoch's test pass."""
    f1: float
    epoch: int
    test_pass: training.Pass


def epoch_passes(run, splits, optimizer, progress):
    """Train one epoch, then evaluate validation (if any) and test: split -> Pass."""
    return {split: training.run_pass(run, keys, optimizer if split == 'train' else None, progress)
            for split, keys in splits.items()}


def epoch_row(epoch, passes, dataset):
    """The metrics.csv row of one epoch: loss, accuracy and weighted F1 of every split."""
    row = dict(epoch=epoch)
    for split, result in passes.items():
        row[f'{split}_loss'] = result.loss
        row.update({f'{split}_{name}': value for name, value in
                    training.scores(dataset, result.labels, result.preds).items()})
    return row


def epoch_line(row):
    """The original's per-epoch line (valid_* fields only with --valid; the time is not in metrics.csv)."""
    fields = [f"epoch: {row['epoch']}"]
    for split in ('train', 'valid', 'test'):
        if f'{split}_loss' in row:
            fields += [f"{split}_loss: {row[f'{split}_loss']:.4f}", f"{split}_acc: {row[f'{split}_acc']:.2f}",
                       f"{split}_fscore: {row[f'{split}_f1']:.2f}"]
    return ', '.join(fields + [f"time: {row['seconds']:.2f} sec"])


TENSORBOARD_FOLDER = 'tensorboard'
TENSORBOARD_METRICS = dict(loss='loss', acc='accuracy', f1='weighted_f1')     # metrics.csv's suffix -> tag


def tensorboard_writer(run_dir):
    """--tensorboard: a SummaryWriter on <run folder>/tensorboard/, emptied first (an interrupted run's logs)."""
    from torch.utils.tensorboard import SummaryWriter
    folder = os.path.join(run_dir, TENSORBOARD_FOLDER)
    shutil.rmtree(folder, ignore_errors=True)
    return SummaryWriter(folder)


def log_scalars(writer, row):
    """One scalar per metric and split of a metrics.csv row, tagged <metric>/<split>, at step = epoch."""
    for name, value in row.items():
        split, _, metric = name.partition('_')
        if metric:
            writer.add_scalar(f'{TENSORBOARD_METRICS.get(metric, metric)}/{split}', value, row['epoch'])
    writer.flush()


def track_best(best, row, test_pass):
    """Record the epochs of best test and best validation F1 (first one on ties); return what improved."""
    improved = set()
    for metric in ('test_f1', 'valid_f1'):
        if metric in row and (metric not in best or row[metric] > best[metric].f1):
            best[metric] = Best(row[metric], row['epoch'], test_pass)
            improved.add(metric)
    return improved


def train(args, fs, net):
    """Train for --epochs, keep the checkpoint the selection rule picks, write the run folder."""
    splits = training.run_splits(args, fs)
    run_dir = args.out_dir or default_run_dir(args)
    utils.check_output_folder(run_dir, '--out-dir')
    refuse_finished_run(run_dir)
    start = training.start_from_head(args, fs, net)
    run, optimizer = training.Run.of(args, net, fs), training.make_optimizer(args, net)
    rule = selection_rule(args, len(splits.get('valid', ())))
    select_on = selection_metric(args)
    checkpoint = os.path.join(run_dir, f'best_model_{args.Dataset}.pth')
    utils.save_json(os.path.join(run_dir, 'config.json'), run_config(args, net, fs, splits, rule, start))
    print(f"data: {training.data_description(args, fs)}; device: {args.device}; run folder: {run_dir}")
    print(f"starting from {start}")
    print(f"training protocol: {protocol_description(args.protocol)}")
    progress = sys.stderr.isatty() and not args.quiet

    rows, best, stopped, started = [], {}, None, time.time()
    board = tensorboard_writer(run_dir) if args.tensorboard else None
    with utils.SigtermAsInterrupt() as interrupt:     # Ctrl-C or SIGTERM: keep what is done, report, exit
        try:
            for epoch in range(1, args.epochs + 1):
                start = time.time()
                passes = epoch_passes(run, splits, optimizer, progress)
                row = epoch_row(epoch, passes, args.Dataset)
                if select_on in track_best(best, row, passes['test']):
                    checkpoints.save_checkpoint(checkpoint, net)
                rows.append(row)
                utils.save_csv(os.path.join(run_dir, 'metrics.csv'), pd.DataFrame(rows))
                if board:
                    log_scalars(board, row)
                if not args.quiet:
                    print(epoch_line(dict(row, seconds=time.time() - start)))
        except KeyboardInterrupt:
            stopped = interrupt.status
            print(f"\ninterrupted: keeping the {len(rows)} finished epoch(s)", file=sys.stderr)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)     # the run folder is completed whatever comes now
            if board:
                board.close()
        save_pictures(run_dir, args, fs, rows, best)
        report = training_report(args, fs, rows, best, rule, checkpoint, stopped is not None)
        utils.save_text(os.path.join(run_dir, 'report.txt'), report)
        utils.save_json(os.path.join(run_dir, 'result.json'),
                        run_result(args, rows, best, stopped, time.time() - started))
        print(report)
    if stopped is not None:
        sys.exit(stopped)


def save_pictures(run_dir, args, fs, rows, best):
    """curves.png (every split's loss and F1 per epoch) and confusion.png (the selected epoch's test set)."""
    if not rows:
        return
    selected = best[selection_metric(args)]
    by = 'best validation F1' if args.valid is not None else 'best test F1'
    plots.training_curves(os.path.join(run_dir, 'curves.png'), pd.DataFrame(rows), selected.epoch, by)
    plots.confusion_picture(os.path.join(run_dir, 'confusion.png'), selected.test_pass.labels,
                            selected.test_pass.preds, fs.label_names,
                            f"{args.Dataset} test set, epoch {selected.epoch} ({by}), rows normalised")


def run_result(args, rows, best, stopped, seconds):
    """result.json: the run's outcome in machine-readable form (written last)."""
    result = dict(status='finished' if stopped is None else 'interrupted', epochs_done=len(rows),
                  epochs=args.epochs, seconds=round(seconds, 3))
    if rows:
        result.update(selected_epoch=best[selection_metric(args)].epoch,
                      best_test=dict(epoch=best['test_f1'].epoch, f1=best['test_f1'].f1),
                      last_epoch=dict(epoch=rows[-1]['epoch'], f1=rows[-1]['test_f1'], acc=rows[-1]['test_acc']))
        if 'valid_f1' in best:
            row = rows[best['valid_f1'].epoch - 1]
            result['best_valid'] = dict(epoch=row['epoch'], valid_f1=row['valid_f1'], test_f1=row['test_f1'],
                                        test_acc=row['test_acc'])
    return result


def training_report(args, fs, rows, best, rule, checkpoint, interrupted):
    """report.txt: data, protocol, selection rule, and the score blocks of the selected epochs."""
    lines = [f"MoED on {args.Dataset}: {training.data_description(args, fs)}",
             f"seed {args.seed}, {len(rows)} of {args.epochs} epochs done" + (" (interrupted)" if interrupted else ""),
             f"training protocol: {protocol_description(args.protocol)}",
             ""]
    if not rows:
        return '\n'.join(lines + ["no epoch finished: no checkpoint and no scores", ""])
    lines += [f"checkpoint: {checkpoint} = epoch {best[selection_metric(args)].epoch}, picked by {rule}", ""]
    test_best = best['test_f1']
    lines.append(training.score_block(
        f"Paper protocol: best test weighted F1 over epochs = epoch {test_best.epoch} "
        f"(SELECTED ON THE TEST SET, as in the paper)",
        args.Dataset, test_best.test_pass.labels, test_best.test_pass.preds, fs.label_names))
    if args.valid is not None:
        valid_best = best['valid_f1']
        lines.append(training.score_block(
            f"Test at the best-validation epoch = epoch {valid_best.epoch} (validation weighted F1 "
            f"{valid_best.f1:.2f}; selected without the test set)",
            args.Dataset, valid_best.test_pass.labels, valid_best.test_pass.preds, fs.label_names))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- testing

FEATURES_FOLDER, OUTPUTS_FOLDER = 'saved_features', 'saved_outputs'      # what --testing writes under --out-dir (or .)


def inertia_text(labels, preds, outputs):
    """Weighted F1 per utils.TURN_KINDS: speakers' first turns, turns that repeat the same speaker's previous label
    (emotional inertia), turns that change it (shift)."""
    kinds = utils.turn_kinds(labels, outputs['spk_idx'], outputs['dialogue_ids'])
    lines = ["emotional inertia (label against the same speaker's previous label in the dialogue: first turn, "
             "inertia = the same, shift = another):"]
    for name, letter in utils.TURN_KINDS.items():
        subset = kinds == letter
        if subset.any():
            lines.append(f"  {name:8s} {subset.sum():6d} utterances  weighted F1 "
                         f"{utils.weighted_f1(labels[subset], preds[subset]):.2f}")
        else:
            lines.append(f"  {name:8s}      0 utterances")
    return '\n'.join(lines)


def save_test_outputs(args, fs, result, checkpoint):
    """saved_features/*.pkl (numpy arrays, one row per test utterance), saved_outputs/utterances_<DS>.csv,
    saved_outputs/conversations_<DS>.html (the viewer) and saved_outputs/confusion_<DS>.png."""
    out, ds = result.outputs, args.Dataset
    base = args.out_dir or '.'
    features = os.path.join(base, FEATURES_FOLDER)
    arrays = {f'multimodal_emotions_before_{ds}.pkl': out['features_before'],
              f'multimodal_emotions_after_{ds}.pkl': out['features_after'],
              f'emotion_labels_{ds}.pkl': result.labels,
              f'speaker_index_{ds}.pkl': out['spk_idx']}
    for name, array in arrays.items():
        if array is None:
            print(f"not written: {name} (features before fusion exist only with all three modalities)")
            continue
        utils.save_pickle(os.path.join(features, name), array)
    if ds == config.CUSTOM:     # the names tsne_custom.py shows (the paper datasets' are in dataloader.DATASETS)
        utils.save_json(os.path.join(features, f'class_names_{ds}.json'),
                        dict(emotion=list(fs.label_names), speaker=feature_folder.speaker_names(fs.meta)))
    table = pd.DataFrame(dict(
        dialogue_id=out['dialogue_ids'],
        utterance_idx=np.concatenate([np.arange(n) for n in out['lengths']]),
        speaker=out['spk_idx'], label=result.labels, pred=result.preds,
        dialogue_key=np.repeat(np.array(result.keys, dtype=object), out['lengths'])))
    csv = os.path.join(base, OUTPUTS_FOLDER, f'utterances_{ds}.csv')
    utils.save_csv(csv, table)
    page = os.path.join(base, OUTPUTS_FOLDER, f'conversations_{ds}.html')
    viewer.write_viewer(page, viewer.testing_table(table, out['log_prob'], fs, args.data_dir), fs.label_names,
                        vars(args), f"{ds} test set, checkpoint {checkpoint}")
    picture = os.path.join(base, OUTPUTS_FOLDER, f'confusion_{ds}.png')
    plots.confusion_picture(picture, result.labels, result.preds, fs.label_names,
                            f"{ds} test set, checkpoint {checkpoint}, rows normalised")
    print(f"wrote {features}/, {csv}, {page} and {picture}")


def test(args, fs, net):
    """--testing: evaluate a checkpoint on the test set, print every score, save features, outputs, picture."""
    path = args.checkpoint or f'best_model_{args.Dataset}.pth'
    for folder in (FEATURES_FOLDER, OUTPUTS_FOLDER):
        utils.check_output_folder(os.path.join(args.out_dir or '.', folder), '--out-dir')
    checkpoints.load_checkpoint(net, path, args.device)
    print(f"data: {training.data_description(args, fs)}; device: {args.device}; checkpoint: {path}")
    cost = overhead.overhead_text(net, fs, args.device) if args.overhead else None  # first: a fresh process's memory
    result = training.run_pass(training.Run.of(args, net, fs), fs.test_keys,
                               progress=sys.stderr.isatty() and not args.quiet, keep_outputs=True)
    print(f"test loss: {result.loss:.4f}")
    print(training.score_block(f"Test set, checkpoint {path}", args.Dataset, result.labels, result.preds,
                               fs.label_names))
    print(inertia_text(result.labels, result.preds, result.outputs))
    if cost:
        print(cost)
    save_test_outputs(args, fs, result, path)


# ----------------------------------------------------------------------------- entry points

def main(argv=None, default_dataset='IEMOCAP'):
    args = config.parse_args(argv, default_dataset, description=__doc__.split('\n')[0])
    fs = training.load_data(args)
    net = training.build_model(args, fs)
    if args.testing:
        test(args, fs, net)
    else:
        train(args, fs, net)


def cli(default_dataset='IEMOCAP'):
    """Run main with UserErrors as one paragraph (exit 2) and Ctrl-C outside training as exit 130."""
    try:
        utils.run_cli(lambda argv: main(argv, default_dataset))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    cli()
