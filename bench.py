"""Time training epochs and test passes of a dataset's paper configuration on synthetic data of real size.

    python bench.py --Dataset IEMOCAP --threads 2
    -> {"dataset": "IEMOCAP", "device": "cpu", "train_epoch_s": ..., "test_pass_s": ...,
        "train_utterances_per_s": ..., "peak_rss_mb": ...}

One warm-up epoch (train + test), then the mean of --epochs timed ones. The arithmetic is train.py's (training.run_pass).
"""
import argparse
import json
import resource
import sys
import time

import torch

import config
import training
import utils


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--Dataset', default='IEMOCAP', choices=list(config.PAPER))
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: CUDA when available')
    p.add_argument('--epochs', type=config.positive_int, default=2, help='timed epochs after the warm-up one')
    p.add_argument('--threads', type=config.positive_int, help='torch.set_num_threads (default: torch\'s choice)')
    p.add_argument('--data-dir', default='/tmp/moed_bench',
                   help='where the synthetic dataset is generated once and cached')
    p.add_argument('--synthetic-scale', type=config.positive_float, default=1.0,
                   help="dialogues relative to the real dataset (1.0, the default, is the benchmark; "
                        "smaller is a smoke test)")
    return p.parse_args(argv)


def timed(fn, device):
    """Seconds fn() takes, with CUDA work finished."""
    utils.synchronize(device)
    start = time.perf_counter()
    fn()
    utils.synchronize(device)
    return time.perf_counter() - start


def main(argv=None):
    bench = parse_args(argv)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    args = config.parse_args(['--Dataset', bench.Dataset, '--paper', '--synthetic', '--synthetic-scale',
                                  str(bench.synthetic_scale), '--data-dir', bench.data_dir,
                                  '--device', bench.device, '--quiet'])
    fs = training.load_data(args)
    net = training.build_model(args, fs)
    optimizer, loss_fn, protocol = training.training_objects(args, net)
    n_train = sum(len(fs.dialogues[k].labels) for k in fs.train_keys)
    print(f"{bench.Dataset}: {len(fs.train_keys)} training dialogues ({n_train} utterances), "
          f"{len(fs.test_keys)} test dialogues, batch {args.batch_size}, device {args.device}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)

    def train_epoch():
        training.run_pass(net, fs, fs.train_keys, loss_fn, args.device, args.batch_size, protocol, optimizer)

    def test_pass():
        training.run_pass(net, fs, fs.test_keys, loss_fn, args.device, args.batch_size, protocol)

    train_s, test_s = [], []
    for epoch in range(bench.epochs + 1):
        train_s.append(timed(train_epoch, args.device))
        test_s.append(timed(test_pass, args.device))
        print(f"epoch {epoch}{' (warm-up)' if epoch == 0 else ''}: train {train_s[-1]:.2f} s, "
              f"test {test_s[-1]:.2f} s", file=sys.stderr)
    train_epoch_s = sum(train_s[1:]) / bench.epochs
    print(json.dumps(dict(
        dataset=bench.Dataset, device=args.device, train_epoch_s=round(train_epoch_s, 3),
        test_pass_s=round(sum(test_s[1:]) / bench.epochs, 3),
        train_utterances_per_s=round(n_train / train_epoch_s, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))))


if __name__ == '__main__':
    utils.run_cli(main)
