"""Train MoED on IEMOCAP, MELD or CMU-MOSEI, or evaluate a checkpoint (--testing): the original train.py's CLI.

    python train.py --paper --Dataset IEMOCAP              # the paper's IEMOCAP run
    python train.py <README command> --testing             # evaluate ./best_model_<Dataset>.pth
    python train.py --paper --Dataset MELD --synthetic     # the same on generated data of real shape

A training run writes its run folder (--out-dir): config.json, metrics.csv, best_model_<Dataset>.pth
and report.txt. --testing writes saved_features/ and saved_outputs/ under --out-dir if given, else
under the current directory (as the original did).
"""
import argparse
import datetime
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch

import dataloader
import model
import training
import utils

# The original README's command for each dataset. Without --paper, a flag not given takes the
# IEMOCAP value (the original's defaults); with --paper it takes the value of --Dataset's row.
PAPER = {
    'IEMOCAP': dict(base_model='GRU', dropout=0.5, lr=0.0001, l2=3e-5, batch_size=32, epochs=60, modals='avl',
                    norm='BN', num_L=6, num_K=3, window_spk=10, window_spk_f=-1, window_dir=1, window_dir_f=-1,
                    epsilon2=1.0, epsilon=1.0, use_speaker='bh', multimodal_node='both', graph_type='both',
                    directed_edge='avl', single_edge=''),
    'MELD': dict(base_model='GRU', dropout=0.4, lr=0.0001, l2=3e-5, batch_size=32, epochs=6, modals='avl',
                 norm='BN', num_L=1, num_K=1, window_spk=3, window_spk_f=1, window_dir=8, window_dir_f=6,
                 epsilon2=0.1, epsilon=1.1, use_speaker='i', multimodal_node='both', graph_type='both',
                 directed_edge='avl', single_edge=''),
    'MOSEI': dict(base_model='GRU', dropout=0.4, lr=0.0001, l2=3e-5, batch_size=8, epochs=30, modals='avl',
                  norm='BN', num_L=1, num_K=1, window_spk=11, window_spk_f=1, window_dir=1, window_dir_f=2,
                  epsilon=0.1, epsilon2=0.9, use_speaker='', multimodal_node='both', graph_type='both',
                  directed_edge='avl', single_edge=''),
}
DEFAULTS = PAPER['IEMOCAP']
OVERHEAD_UTTERANCES = 40                                         # dialogue length timed by --overhead

# Which flags probably differ when a checkpoint does not fit: (key pattern, kind of mismatch, flag, why).
# kind: 'presence' (missing or unexpected key), 'rows' / 'width' (shape[0] / another dimension differs).
CHECKPOINT_HINTS = [
    (r'graph_model\.directconv\d+\.', 'presence', '--num_L', 'number of EIGNN layers'),
    (r'graph_model\.conv\d+\.', 'presence', '--num_K', 'number of ECGNN layers'),
    (r'graph_model\.speaker_embeddings\.', 'rows', '--Dataset', 'number of speakers'),
    (r'(smax_fc|hidfc)\.', 'rows', '--Dataset', 'number of classes'),
    (r'smax_fc\.', 'width', '--graph_type / --multimodal_node', 'read-out width'),
    (r'(gru|lstm)_[av]\.', 'presence', '--av_using_lstm', 'recurrent audio / visual encoders'),
    (r'(gru|lstm)_', 'presence', '--base-model', 'GRU or LSTM'),
    (r'linear_[av]\.', 'presence', '--modals', 'modalities used'),
    (r'linear_u\.', 'width', '--modals', 'modalities fused'),
    (r'linear_[alv]\.', 'width', '--Dataset', 'feature sizes'),
    (r'.', 'rows', '--Dataset', 'hidden size D_g'),
]


# ----------------------------------------------------------------------------- command line

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def probability(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def open_fraction(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def build_parser(default_dataset='IEMOCAP'):
    """The original train.py's flags (same spellings) plus this project's own."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])

    def hyper(flag, type, help, **kw):
        """A hyper-parameter with a paper value: default None, filled in by resolve_hyperparameters."""
        dest = kw.pop('dest', flag.lstrip('-').replace('-', '_'))
        p.add_argument(flag, *kw.pop('aliases', ()), dest=dest, type=type, default=None,
                       help=f"{help} (default {DEFAULTS[dest]!r}, the paper's IEMOCAP value; see --paper)", **kw)

    hyper('--base-model', str, 'recurrent text encoder', choices=['GRU', 'LSTM', 'Transformer'])
    hyper('--lr', positive_float, 'Adam learning rate')
    hyper('--l2', non_negative_float, 'Adam weight decay')
    hyper('--dropout', probability, 'dropout between the two stacked recurrent layers')
    hyper('--batch-size', positive_int, 'dialogues per batch')
    hyper('--epochs', positive_int, 'training epochs')
    hyper('--modals', str, "modalities used: letters of 'avl' (audio, visual, language)")
    hyper('--norm', str, 'text feature normalisation', choices=['BN', 'LN', 'LN2', 'none'])
    hyper('--num_L', int, 'number of EIGNN layers')
    hyper('--num_K', int, 'number of ECGNN layers')
    hyper('--window_spk', int, 'EIGNN past window (-1 unbounded)')
    hyper('--window_spk_f', int, 'EIGNN future window (-1 unbounded)')
    hyper('--window_dir', int, 'ECGNN past window (-1 unbounded)')
    hyper('--window_dir_f', int, 'ECGNN future window (-1 unbounded)')
    hyper('--epsilon', float, 'ECGNN residual scaling')
    hyper('--epsilon2', float, 'EIGNN residual scaling')
    hyper('--use_speaker', str, 'speaker embedding letters b-e (ECGNN l, a, v, u) and f-i (EIGNN l, a, v, u)')
    hyper('--multimodal_node', str, 'graphs with a multimodal node', choices=['both', 'ECG', 'EIG', ''])
    hyper('--graph_type', str, 'graphs whose multimodal node is read out', choices=['both', 'ECG', 'EIG'])
    hyper('--directed_edge', str, 'modalities with a directed edge to the multimodal node',
          aliases=['--direcred_edge'])
    hyper('--single_edge', str, "'intra': one edge per intra-utterance modality pair; 'inter': one "
                                "direction per ECGNN pair", choices=['', 'intra', 'inter'])

    p.add_argument('--Dataset', default=default_dataset, choices=list(PAPER), help='dataset')
    p.add_argument('--mm_fusion_mthd', default='concat_DHT', choices=['concat_DHT'],
                   help="multimodal fusion (only the paper's concat_DHT)")
    p.add_argument('--multi_modal', action='store_true',
                   help='accepted for compatibility; the modalities used come from --modals')
    p.add_argument('--class-weight', action='store_true',
                   help='accepted for compatibility: IEMOCAP always uses the reference class weights, '
                        'MELD the focal loss, MOSEI plain NLL')
    p.add_argument('--use_residue', action='store_true', help='not supported (never worked in the reference)')
    p.add_argument('--av_using_lstm', action='store_true',
                   help='a 2-layer bidirectional recurrent encoder after linear_a / linear_v too')
    p.add_argument('--use_modal', action='store_true', help='add modality embeddings to the graph inputs')
    p.add_argument('--testing', action='store_true', help='evaluate --checkpoint on the test set, no training')
    p.add_argument('--overhead', action='store_true',
                   help='with --testing: FLOPs, parameters, memory and latency of one 40-utterance dialogue')
    p.add_argument('--no-cuda', action='store_true', help='never use CUDA (same as --device cpu)')

    p.add_argument('--paper', action='store_true',
                   help="hyper-parameters not given take the paper's values for --Dataset (the original README's "
                        "command for it) instead of the IEMOCAP ones")
    p.add_argument('--protocol', default='original', choices=list(training.PROTOCOLS),
                   help="original (default): the authors' training loop, reseeded at every pass, so every epoch "
                        "sees the same batch order and dropout masks (reproduces their runs on CPU); textbook: "
                        "never reseeded, a fresh order and fresh dropout masks every epoch (a deviation from "
                        "the original)")
    p.add_argument('--seed', type=int, default=67137, help='seed of every random generator (default 67137, the original\'s)')
    p.add_argument('--data-dir', default='.', help='folder holding IEMOCAP_features/, MELD_features/, '
                                                   'CMU-MOSEI_features/ (default: the current directory)')
    p.add_argument('--synthetic', action='store_true',
                   help='generate (once, cached under --data-dir/synthetic/) simulated features in the real files\' '
                        'format and shape, and use them')
    p.add_argument('--synthetic-scale', type=positive_float, default=1.0,
                   help="--synthetic: number of dialogues relative to the real dataset's (default 1.0)")
    p.add_argument('--valid', type=open_fraction, metavar='FRACTION',
                   help='hold out this fraction of training dialogues; the checkpoint is the best-validation '
                        'epoch and test at that epoch is reported too')
    p.add_argument('--checkpoint', metavar='PATH', help='--testing: checkpoint to evaluate '
                                                        '(default ./best_model_<Dataset>.pth)')
    p.add_argument('--out-dir', help='training: run folder (default runs/<Dataset>-<time>-seed<seed>/); '
                                     '--testing: where saved_features/ and saved_outputs/ go (default .)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: CUDA when available (and not --no-cuda)')
    p.add_argument('--quiet', action='store_true', help='no progress bar and no per-epoch lines')
    return p


def resolve_hyperparameters(args):
    """Fill every hyper-parameter left unset from the paper table (--Dataset's row with --paper)."""
    table = PAPER[args.Dataset] if args.paper else DEFAULTS
    for name, value in table.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def model_config(args):
    """The model's cfg dict (golden `config` keys) from the resolved flags."""
    info = dataloader.DATASETS[args.Dataset]
    cfg = {name: getattr(args, name) for name in (
        'base_model', 'dropout', 'modals', 'norm', 'num_L', 'num_K', 'window_spk', 'window_spk_f', 'window_dir',
        'window_dir_f', 'epsilon', 'epsilon2', 'use_speaker', 'use_modal', 'multimodal_node', 'graph_type',
        'directed_edge', 'single_edge', 'av_using_lstm', 'mm_fusion_mthd', 'multi_modal')}
    return dict(cfg, dataset=args.Dataset, n_speakers=info.n_speakers, n_classes=info.n_classes)


def check_flags(args, parser):
    """Refuse flags that never worked and impossible combinations, argparse style (exit 2)."""
    if args.base_model == 'Transformer':
        parser.error("--base-model Transformer never worked in the reference implementation and is not "
                     "provided; use GRU (the paper's) or LSTM")
    if args.use_residue:
        parser.error("--use_residue never worked in the reference implementation and is not provided; drop it")
    if args.overhead and not args.testing:
        parser.error("--overhead measures a trained checkpoint: use it together with --testing")
    if args.testing and args.valid is not None:
        parser.error("--valid splits the training data: it has no effect with --testing")
    if args.checkpoint and not args.testing:
        parser.error("--checkpoint names the checkpoint --testing evaluates; a training run writes its "
                     "checkpoint into its run folder (--out-dir)")
    if args.no_cuda and args.device == 'cuda':
        parser.error("--no-cuda contradicts --device cuda")
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error("--device cuda: this PyTorch sees no CUDA device (torch.cuda.is_available() is False)")


def parse_args(argv=None, default_dataset='IEMOCAP'):
    """Parse, fill in paper values, validate (model.check_config included); errors exit 2 argparse style."""
    parser = build_parser(default_dataset)
    args = parser.parse_args(argv)
    resolve_hyperparameters(args)
    check_flags(args, parser)
    cfg = model_config(args)
    try:
        model.check_config(cfg)
    except utils.UserError as err:
        parser.error(str(err))
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() and not args.no_cuda else 'cpu'
    return args, cfg


# ----------------------------------------------------------------------------- data and model

def load_data(args):
    """The FeatureSet of --Dataset: the real feature files under --data-dir, or synthetic ones."""
    data_dir = args.data_dir
    if args.synthetic:
        data_dir = dataloader.ensure_synthetic(args.Dataset, args.data_dir, scale=args.synthetic_scale)
    return dataloader.load_features(args.Dataset, data_dir)


def data_description(args, fs):
    if args.synthetic:
        return (f"SYNTHETIC {args.Dataset}-shaped data (a simulation of emotional inertia and contagion, scale "
                f"{args.synthetic_scale}), not the real dataset: its scores say nothing about the paper's")
    return f"real {args.Dataset} features from {', '.join(map(str, fs.source))}"


def model_dims(fs):
    return dict(fs.dims, D_g=model.PAPER_D_G[fs.name], graph_h=model.GRAPH_H)


def build_model(args, cfg, fs):
    """MoED for cfg and the data's feature sizes, on args.device, with the seeded initialisation."""
    utils.seed_everything(args.seed)
    return model.MoED(cfg, model_dims(fs)).to(args.device)


# ----------------------------------------------------------------------------- training

def training_objects(args, net, device):
    """Adam, the dataset's loss, and the training protocol (what each pass's order and random state are)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.l2)
    loss_fn = model.make_loss(args.Dataset, device)
    protocol = training.Protocol(args.protocol, args.seed, shuffle=training.dataset_shuffles(args.Dataset))
    return optimizer, loss_fn, protocol


def default_run_dir(args):
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    base = os.path.join('runs', f'{args.Dataset}-{stamp}-seed{args.seed}')
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f'{base}-{n}'
    return path


def selection_metric(args):
    """The metric whose best epoch gives the saved checkpoint."""
    return 'valid_f1' if args.valid is not None else 'test_f1'


def selection_rule(args, n_valid):
    if args.valid is None:
        return ("best test weighted F1 over epochs (the paper's protocol: selected on the TEST set, "
                "so the score is optimistic)")
    return (f"best validation weighted F1 over epochs (validation: {n_valid} training dialogues, "
            f"fraction {args.valid}, held out with seed {args.seed}; the test set plays no part)")


def run_config(args, cfg, fs, splits, rule):
    """Everything needed to understand and repeat a run: written to config.json."""
    return dict(
        command=sys.argv, flags=vars(args), model_config=cfg, dims=model_dims(fs),
        data=dict(dataset=args.Dataset, synthetic=args.synthetic,
                  synthetic_scale=args.synthetic_scale if args.synthetic else None,
                  description=data_description(args, fs), source=list(map(str, fs.source)),
                  dialogues={name: len(keys) for name, keys in splits.items()}),
        checkpoint_selection=rule, device=args.device,
        device_name=torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or 'cpu',
        torch=torch.__version__, python=platform.python_version(), numpy=np.__version__,
        started=datetime.datetime.now().isoformat(timespec='seconds'))


def epoch_line(row):
    """The original's per-epoch line (valid_* fields only with --valid; the time is not in metrics.csv)."""
    fields = [f"epoch: {row['epoch']}"]
    for split in ('train', 'valid', 'test'):
        if f'{split}_loss' in row:
            fields += [f"{split}_loss: {row[f'{split}_loss']:.4f}", f"{split}_acc: {row[f'{split}_acc']:.2f}",
                       f"{split}_fscore: {row[f'{split}_f1']:.2f}"]
    return ', '.join(fields + [f"time: {row['seconds']:.2f} sec"])


def epoch_passes(net, fs, splits, optimizer, loss_fn, protocol, args, progress):
    """Train one epoch, then evaluate validation (if any) and test: split -> Pass."""
    return {split: training.run_pass(net, fs, keys, loss_fn, args.device, args.batch_size, protocol,
                                     optimizer if split == 'train' else None, progress)
            for split, keys in splits.items()}


def epoch_row(epoch, passes, dataset):
    """The metrics.csv row of one epoch: loss, accuracy and weighted F1 of every split."""
    row = dict(epoch=epoch)
    for split, result in passes.items():
        row[f'{split}_loss'] = result.loss
        row.update({f'{split}_{name}': value for name, value in
                    training.scores(dataset, result.labels, result.preds).items()})
    return row


def track_best(best, row, test_pass):
    """Record the epochs of best test and best validation F1 (first one on ties); return what improved."""
    improved = set()
    for metric in ('test_f1', 'valid_f1'):
        if metric in row and (metric not in best or row[metric] > best[metric][0]):
            best[metric] = (row[metric], row['epoch'], test_pass)
            improved.add(metric)
    return improved


def train(args, cfg, fs, net):
    """Train for --epochs, keep the checkpoint the selection rule picks, write the run folder."""
    splits = dict(train=fs.train_keys)
    if args.valid is not None:
        splits['train'], splits['valid'] = dataloader.split_valid(fs.train_keys, args.valid, args.seed)
    splits['test'] = fs.test_keys
    optimizer, loss_fn, protocol = training_objects(args, net, args.device)
    rule = selection_rule(args, len(splits.get('valid', ())))
    select_on = selection_metric(args)
    run_dir = args.out_dir or default_run_dir(args)
    checkpoint = os.path.join(run_dir, f'best_model_{args.Dataset}.pth')
    utils.save_json(os.path.join(run_dir, 'config.json'), run_config(args, cfg, fs, splits, rule))
    print(f"data: {data_description(args, fs)}; device: {args.device}; run folder: {run_dir}")
    print(f"training protocol: {protocol_description(args.protocol)}")
    progress = sys.stderr.isatty() and not args.quiet

    rows, best, interrupted = [], {}, False
    try:
        for epoch in range(1, args.epochs + 1):
            start = time.time()
            passes = epoch_passes(net, fs, splits, optimizer, loss_fn, protocol, args, progress)
            row = epoch_row(epoch, passes, args.Dataset)
            if select_on in track_best(best, row, passes['test']):
                utils.save_state_dict(checkpoint, {k: v.detach().cpu() for k, v in net.state_dict().items()})
            rows.append(row)
            utils.save_csv(os.path.join(run_dir, 'metrics.csv'), pd.DataFrame(rows))
            if not args.quiet:
                print(epoch_line(dict(row, seconds=time.time() - start)))
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: keeping the {len(rows)} finished epoch(s)", file=sys.stderr)

    report = training_report(args, fs, rows, best, rule, checkpoint, interrupted)
    utils.save_text(os.path.join(run_dir, 'report.txt'), report)
    print(report)
    if interrupted:
        sys.exit(130)


def protocol_description(name):
    """One line for the run header and report.txt; the textbook protocol is flagged as a deviation."""
    if name == 'original':
        return ("original (the authors' loop: reseeded at every pass, the same batch order and dropout masks "
                "every epoch)")
    return ("textbook: a fresh batch order and fresh dropout masks every epoch, never reseeded "
            "(DEVIATION from the original code: runs do not reproduce the authors')")


def training_report(args, fs, rows, best, rule, checkpoint, interrupted):
    """report.txt: data, selection rule, and the score blocks of the selected epochs."""
    lines = [f"MoED on {args.Dataset}: {data_description(args, fs)}",
             f"seed {args.seed}, {len(rows)} of {args.epochs} epochs done" + (" (interrupted)" if interrupted else ""),
             f"training protocol: {protocol_description(args.protocol)}",
             ""]
    if not rows:
        return '\n'.join(lines + ["no epoch finished: no checkpoint and no scores", ""])
    selected = best[selection_metric(args)]
    lines += [f"checkpoint: {checkpoint} = epoch {selected[1]}, picked by {rule}", ""]
    f1, epoch, test_pass = best['test_f1']
    lines.append(training.score_block(f"Paper protocol: best test weighted F1 over epochs = epoch {epoch} "
                             f"(SELECTED ON THE TEST SET, as in the paper)",
                             args.Dataset, test_pass.labels, test_pass.preds, fs.label_names))
    if args.valid is not None:
        f1, epoch, test_pass = best['valid_f1']
        lines.append(training.score_block(f"Test at the best-validation epoch = epoch {epoch} (validation weighted F1 "
                                 f"{f1:.2f}; selected without the test set)",
                                 args.Dataset, test_pass.labels, test_pass.preds, fs.label_names))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- testing

def shape_difference(expected, got):
    """'rows' when shape[0] differs, 'width' when another dimension does."""
    if len(expected) != len(got) or expected[0] != got[0]:
        return 'rows'
    return 'width'


def checkpoint_hints(problems):
    """'--flag (why, why)' for the flags that probably differ, from (key, kind) pairs of the mismatch."""
    reasons = {}
    for key, kind in problems:
        for pattern, applies_to, flag, why in CHECKPOINT_HINTS:
            if re.match(pattern, key) and applies_to == kind:
                reasons.setdefault(flag, [])
                if why not in reasons[flag]:
                    reasons[flag].append(why)
                break
    return [f"{flag} ({', '.join(whys)})" for flag, whys in reasons.items()]


def shorten(items, limit=8):
    items = list(items)
    return ', '.join(items[:limit]) + (f' and {len(items) - limit} more' if len(items) > limit else '')


def load_checkpoint(net, path, device):
    """Load a reference-format state_dict strictly; any mismatch is a UserError naming keys and flags."""
    if not os.path.isfile(path):
        raise utils.UserError(
            f"no checkpoint at {path}. Put the released checkpoint there (see the README's Quick Start: "
            f"./best_model_<Dataset>.pth in the current directory), or pass --checkpoint PATH, e.g. the "
            f"best_model_<Dataset>.pth of a training run's folder.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or non-state-dict file
        raise utils.UserError(f"{path} could not be read as a PyTorch state_dict: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise utils.UserError(f"{path} is not a plain state_dict (a dict of tensors).")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        problems = ([(k, 'presence') for k in missing + unexpected]
                    + [(k, shape_difference(tuple(expected[k].shape), tuple(state[k].shape))) for k in wrong])
        parts = [f"missing keys: {shorten(missing)}" if missing else '',
                 f"unexpected keys: {shorten(unexpected)}" if unexpected else '',
                 "wrong shapes: " + shorten(f"{k} (checkpoint {list(state[k].shape)}, model "
                                            f"{list(expected[k].shape)})" for k in wrong) if wrong else '']
        hints = checkpoint_hints(problems) or ['the model flags of the command that trained it']
        raise utils.UserError(
            f"the checkpoint {path} does not match the model these flags build; "
            + '; '.join(part for part in parts if part)
            + f". Flags that probably differ from the training run: {', '.join(hints)}.")
    net.load_state_dict(state, strict=True)


def inertia_text(labels, preds, outputs):
    """Weighted F1 on utterances that repeat the same speaker's previous label (emotional inertia) and the rest."""
    mask = utils.inertia_split(labels, outputs['spk_idx'], outputs['dialogue_ids'])
    lines = ["emotional inertia (label equals the same speaker's previous label in the dialogue):"]
    for name, subset in (('inertia', mask), ('other', ~mask)):
        if subset.any():
            lines.append(f"  {name:8s} {subset.sum():6d} utterances  weighted F1 "
                         f"{utils.weighted_f1(labels[subset], preds[subset]):.2f}")
        else:
            lines.append(f"  {name:8s}      0 utterances")
    return '\n'.join(lines)


def save_test_outputs(args, result):
    """saved_features/*.pkl (numpy arrays, one row per test utterance) and saved_outputs/utterances_<DS>.csv."""
    out, ds = result.outputs, args.Dataset
    base = args.out_dir or '.'
    features = os.path.join(base, 'saved_features')
    arrays = {f'multimodal_emotions_before_{ds}.pkl': out['features_before'],
              f'multimodal_emotions_after_{ds}.pkl': out['features_after'],
              f'emotion_labels_{ds}.pkl': result.labels,
              f'speaker_index_{ds}.pkl': out['spk_idx']}
    for name, array in arrays.items():
        if array is None:
            print(f"not written: {name} (features before fusion exist only with all three modalities)")
            continue
        utils.save_pickle(os.path.join(features, name), array)
    table = pd.DataFrame(dict(
        dialogue_id=out['dialogue_ids'],
        utterance_idx=np.concatenate([np.arange(n) for n in out['lengths']]),
        speaker=out['spk_idx'], label=result.labels, pred=result.preds,
        dialogue_key=np.repeat(np.array(result.keys, dtype=object), out['lengths'])))
    csv = os.path.join(base, 'saved_outputs', f'utterances_{ds}.csv')
    utils.save_csv(csv, table)
    print(f"wrote {features}/ and {csv}")


def test(args, cfg, fs, net):
    """--testing: evaluate a checkpoint on the test set, print every score, save features and outputs."""
    path = args.checkpoint or f'best_model_{args.Dataset}.pth'
    load_checkpoint(net, path, args.device)
    print(f"data: {data_description(args, fs)}; device: {args.device}; checkpoint: {path}")
    overhead = overhead_text(net, fs, args.device) if args.overhead else None  # first: a fresh process's memory
    loss_fn = model.make_loss(args.Dataset, args.device)
    protocol = training.Protocol(args.protocol, args.seed, shuffle=False)
    result = training.run_pass(net, fs, fs.test_keys, loss_fn, args.device, args.batch_size, protocol,
                               progress=sys.stderr.isatty() and not args.quiet, keep_outputs=True)
    print(f"test loss: {result.loss:.4f}")
    print(training.score_block(f"Test set, checkpoint {path}", args.Dataset, result.labels, result.preds, fs.label_names))
    print(inertia_text(result.labels, result.preds, result.outputs))
    if overhead:
        print(overhead)
    save_test_outputs(args, result)


# ----------------------------------------------------------------------------- --overhead

class LogProbOnly(torch.nn.Module):
    """Tensor-in, tensor-out view of MoED for one dialogue of fixed length (what fvcore can trace)."""

    def __init__(self, net, length):
        super().__init__()
        self.net, self.length = net, length

    def forward(self, t1, t2, t3, t4, audio, visual, qmask):
        return self.net([t1, t2, t3, t4], audio, visual, qmask, [self.length])['log_prob']


def dialogue_inputs(fs, n, device):
    """A random n-utterance dialogue of the dataset's shape, speakers taking turns, as (T, 1, D) tensors."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 1, fs.dims[d], generator=gen) for d in ['D_text'] * 4 + ['D_audio', 'D_visual']]
    qmask = torch.nn.functional.one_hot(torch.arange(n) % fs.n_speakers, fs.n_speakers).float()[:, None, :]
    return tuple(t.to(device) for t in feats + [qmask])


def synchronize(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def matmul_flops(inputs, outputs):
    """fvcore's count for aten::matmul (output elements x inner size), also when an operand is a vector."""
    from fvcore.nn.jit_handles import get_shape
    return math.prod(get_shape(outputs[0])) * get_shape(inputs[0])[-1]


def recurrent_flops(net, inputs):
    """Multiply-adds of the GRU / LSTM encoders, which fvcore skips, by thop's counting rules."""
    from thop.rnn_hooks import count_gru, count_lstm
    rules = {torch.nn.GRU: count_gru, torch.nn.LSTM: count_lstm}
    total = []

    def count(module, args, output):
        module.total_ops = torch.zeros(1, dtype=torch.float64)
        rules[type(module)](module, args, output)
        total.append(module.total_ops.item())
        del module.total_ops

    hooks = [m.register_forward_hook(count) for m in net.modules() if type(m) in rules]
    try:
        net(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(total)


def overhead_text(net, fs, device, warmup=5, repeats=30):
    """FLOPs (fvcore + thop), trainable parameters, memory and median latency of one 40-utterance forward pass."""
    import psutil
    from fvcore.nn import FlopCountAnalysis
    n = OVERHEAD_UTTERANCES
    wrapped, inputs = LogProbOnly(net, n).eval(), dialogue_inputs(fs, n, device)
    process = psutil.Process()
    with torch.no_grad():
        if str(device).startswith('cuda'):
            torch.cuda.reset_peak_memory_stats()
            wrapped(*inputs)
            synchronize(device)
            memory = f"CUDA max allocated {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB (weights included)"
        else:
            rss = process.memory_info().rss
            wrapped(*inputs)
            memory = f"RSS growth over the first forward pass {(process.memory_info().rss - rss) / 2**20:.1f} MiB"
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            logging.getLogger('fvcore').setLevel(logging.ERROR)
            flops = FlopCountAnalysis(wrapped, inputs).set_op_handle('aten::matmul', matmul_flops) \
                .unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
            graph_and_linear = flops.total()
            recurrent = recurrent_flops(wrapped, inputs)
        for _ in range(warmup):
            wrapped(*inputs)
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            wrapped(*inputs)
            synchronize(device)
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return '\n'.join([
        f"overhead of one forward pass over a {n}-utterance dialogue (random features, device {device}):",
        f"  FLOPs: {(graph_and_linear + recurrent) / 1e9:.3f} G (one multiply-add = 1 FLOP): "
        f"{graph_and_linear / 1e9:.3f} G in matrix products and normalisations (fvcore) + {recurrent / 1e9:.3f} G "
        f"in the recurrent encoders (thop); elementwise and indexing ops are not counted",
        f"  trainable parameters: {params:,} ({params / 1e6:.2f} M)",
        f"  memory: {memory}",
        f"  latency: median {statistics.median(times) * 1e3:.2f} ms over {repeats} runs after {warmup} warm-up runs",
    ])


# ----------------------------------------------------------------------------- entry points

def main(argv=None, default_dataset='IEMOCAP'):
    args, cfg = parse_args(argv, default_dataset)
    fs = load_data(args)
    net = build_model(args, cfg, fs)
    if args.testing:
        test(args, cfg, fs, net)
    else:
        train(args, cfg, fs, net)


def cli(default_dataset='IEMOCAP'):
    """Run main with UserErrors as one paragraph (exit 2) and Ctrl-C outside training as exit 130."""
    try:
        utils.run_cli(lambda argv: main(argv, default_dataset))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    cli()
