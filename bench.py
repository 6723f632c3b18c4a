"""Time training epochs and test passes of a dataset's paper configuration on synthetic data of real size.

    python bench.py --Dataset IEMOCAP --threads 2
    -> {"dataset": "IEMOCAP", "device": "cpu", "train_epoch_s": ..., "test_pass_s": ...,
        "train_utterances_per_s": ..., "peak_rss_mb": ...}

One warm-up epoch (train + test), then the mean of --epochs timed ones. The arithmetic is train.py's
(training.run_pass).

    python bench.py --Dataset IEMOCAP --threads 2 --compare main
    python bench.py --Dataset MELD --threads 2 --compare 0bcccff ../other-checkout

compares two versions of the code side by side: REF (a git commit or branch of this repository, or a
directory holding a checkout) against this working tree, or against a second REF. Each version runs in
its own worker process (its own imports), which loads the data and builds the model once; after one
warm-up epoch each, the workers take turns, one training epoch and one test pass at a time, in the
order A B, B A, A B, ... so that a change in the machine's load falls on both alike. Printed: both
times of every pair, and per pass kind the median of the per-pair ratios (time of the first version /
time of the second, so > 1 means the second is faster) with their min-max spread, and each worker's
peak RSS; then one JSON line. A version needs training.load_data / build_model and either training.Run /
make_optimizer / run_pass(run, ...) or the earlier training_objects / run_pass(net, fs, ...).

    python bench.py --Dataset IEMOCAP --threads 2 --profile

profiles one training epoch after the warm-up (torch.profiler) and prints the top operators by self
CPU time with their share of the epoch.

    python bench.py --Dataset IEMOCAP --threads 2 --roofline

how far a training epoch is from the machine's limit, for both --graph-backend values: the FLOPs of one
training epoch (training_flops: the matrix products, forward and backward, as executed by the
dense backend; 2 FLOPs per multiply-add), each backend's timed epoch (after a warm-up one) and so its
achieved GFLOP/s, and the matrix-multiply peak this machine reaches at the same thread count
(matmul_peak, the best of its runs before and after each timing); then one JSON line. The pyg
backend is measured against the dense backend's count: the same model, so the same useful work.
"""
import argparse
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import utils

try:
    from core import config, training
except ModuleNotFoundError:     # a --compare worker runs this file over an older tree, from before the packages
    import config
    import training

# a --compare worker runs this file over an older tree, whose config may know the dense path only
BACKENDS = getattr(config, 'GRAPH_BACKENDS', ('dense',))

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--Dataset', default='IEMOCAP', choices=list(config.PAPER))
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: CUDA when available')
    p.add_argument('--epochs', type=config.positive_int,
                   help='timed epochs after the warm-up one (default 2; with --compare: timed pairs, default 5)')
    p.add_argument('--threads', type=config.positive_int, help='torch.set_num_threads (default: torch\'s choice)')
    p.add_argument('--data-dir', default='/tmp/moed_bench',
                   help='where the synthetic dataset is generated once and cached')
    p.add_argument('--synthetic-scale', type=config.positive_float, default=1.0,
                   help="dialogues relative to the real dataset (1.0, the default, is the benchmark; "
                        "smaller is a smoke test)")
    p.add_argument('--compare', nargs='+', metavar='REF',
                   help='a git commit / branch or a directory: time it against this working tree '
                        '(or against a second REF), alternating epochs')
    p.add_argument('--profile', action='store_true',
                   help='profile one training epoch after the warm-up and print the top operators')
    p.add_argument('--roofline', action='store_true',
                   help="FLOPs of a training epoch, achieved GFLOP/s of both graph backends, the matmul peak")
    p.add_argument('--graph-backend', default='dense', choices=list(BACKENDS),
                   help='the model\'s --graph-backend (default dense)')
    p.add_argument('--serve', action='store_true', help=argparse.SUPPRESS)   # a --compare worker
    args = p.parse_args(argv)
    if args.compare and len(args.compare) > 2:
        p.error('--compare takes one or two versions')
    if sum(map(bool, (args.compare, args.profile, args.roofline))) > 1:
        p.error('--compare, --profile and --roofline do not go together')
    args.epochs = args.epochs or (5 if args.compare else 2)
    args.data_dir = str(Path(args.data_dir).resolve())       # --compare workers run in other directories
    return args


def timed(fn, device):
    """Seconds fn() takes, with CUDA work finished."""
    utils.synchronize(device)
    start = time.perf_counter()
    fn()
    utils.synchronize(device)
    return time.perf_counter() - start


def peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Workload:
    """The data, the seeded model and the optimizer of one dataset's paper configuration; timed passes."""

    def __init__(self, bench, backend=None):
        if bench.threads:
            torch.set_num_threads(bench.threads)
        backend = backend or bench.graph_backend
        self.args = config.parse_args(['--Dataset', bench.Dataset, '--paper', '--synthetic', '--synthetic-scale',
                                       str(bench.synthetic_scale), '--data-dir', bench.data_dir,
                                       '--device', bench.device, '--quiet']
                                      + (['--graph-backend', backend] if backend != 'dense' else []))
        self.fs = training.load_data(self.args)
        self.net = training.build_model(self.args, self.fs)
        if hasattr(training, 'Run'):
            run, optimizer = training.Run.of(self.args, self.net, self.fs), training.make_optimizer(self.args, self.net)
            self.run_pass = lambda keys, optimizer=None: training.run_pass(run, keys, optimizer)
        else:                                      # a version before training.Run (a --compare worker)
            optimizer, loss_fn, protocol = training.training_objects(self.args, self.net)
            self.run_pass = lambda keys, optimizer=None: training.run_pass(
                self.net, self.fs, keys, loss_fn, self.args.device, self.args.batch_size, protocol, optimizer)
        self.optimizer = optimizer
        self.n_train = sum(len(self.fs.dialogues[k].labels) for k in self.fs.train_keys)

    def describe(self):
        fs, args = self.fs, self.args
        return (f"{args.Dataset}: {len(fs.train_keys)} training dialogues ({self.n_train} utterances), "
                f"{len(fs.test_keys)} test dialogues, batch {args.batch_size}, device {args.device}, "
                f"{torch.get_num_threads()} threads")

    def train_epoch(self):
        self.run_pass(self.fs.train_keys, self.optimizer)

    def test_pass(self):
        self.run_pass(self.fs.test_keys)

    def timed_epoch(self):
        """(training epoch seconds, test pass seconds)."""
        return timed(self.train_epoch, self.args.device), timed(self.test_pass, self.args.device)


def cpu_seconds():
    """CPU time (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- one version

def single(bench):
    work = Workload(bench)
    print(work.describe(), file=sys.stderr)
    train_s, test_s = [], []
    for epoch in range(bench.epochs + 1):
        train, test = work.timed_epoch()
        train_s.append(train)
        test_s.append(test)
        print(f"epoch {epoch}{' (warm-up)' if epoch == 0 else ''}: train {train:.2f} s, test {test:.2f} s",
              file=sys.stderr)
    train_epoch_s = sum(train_s[1:]) / bench.epochs
    print(json.dumps(dict(
        dataset=bench.Dataset, device=work.args.device, train_epoch_s=round(train_epoch_s, 3),
        test_pass_s=round(sum(test_s[1:]) / bench.epochs, 3),
        train_utterances_per_s=round(work.n_train / train_epoch_s, 1), peak_rss_mb=peak_rss_mb())))


def profile(bench, top=15):
    """Top operators of one training epoch (after a warm-up one) by self CPU time, with shares."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    work = Workload(bench)
    print(work.describe(), file=sys.stderr)
    work.timed_epoch()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if work.args.device.startswith('cuda') else [])
    with torch_profile(activities=activities) as prof:
        seconds = timed(work.train_epoch, work.args.device)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"one training epoch: {seconds:.2f} s under the profiler; self CPU time by operator:")
    print(f"{'operator':<40} {'self CPU (s)':>12} {'share':>7} {'calls':>8}")
    for e in events[:top]:
        print(f"{e.key:<40} {e.self_cpu_time_total / 1e6:>12.3f} {e.self_cpu_time_total / total:>7.1%} {e.count:>8}")


def training_flops(train_epoch):
    """FLOPs of the matrix products (mm, bmm, addmm, ...) that train_epoch() runs, forward and backward, as
    torch dispatches them (torch.utils.flop_counter): 2 per multiply-add; elementwise ops are not counted."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        train_epoch()
    return counter.get_total_flops()


def matmul_peak(device, n=1024, repeats=40):
    """FLOP/s of the fastest of `repeats` float32 (n x n) @ (n x n) products at torch's thread count: 2 n^3 / s.
    Short products and the fastest of many, so that a shared machine's busy moments do not lower it."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    a @ b
    best = math.inf
    for _ in range(repeats):
        best = min(best, timed(lambda: a @ b, device))
    return 2 * n ** 3 / best


def roofline(bench):
    """One line per backend and one JSON line: FLOPs of a training epoch, achieved GFLOP/s, the matmul peak."""
    works = {backend: Workload(bench, backend) for backend in BACKENDS}
    for backend, work in works.items():
        print(work.describe() + f", --graph-backend {backend}", file=sys.stderr)
        work.timed_epoch()                                                   # warm-up
    flops = training_flops(works['dense'].train_epoch)       # the dense backend's count: the same useful work
    device = works['dense'].args.device
    result, peaks = dict(dataset=bench.Dataset, epoch_gflop=round(flops / 1e9, 2)), []
    for backend, work in works.items():
        peaks.append(matmul_peak(device))                                   # before and after each timing
        seconds = statistics.median(timed(work.train_epoch, device) for _ in range(bench.epochs))
        peaks.append(matmul_peak(device))
        result[backend] = dict(train_epoch_s=round(seconds, 3), gflop_per_s=round(flops / seconds / 1e9, 2))
    peak = max(peaks)
    result.update(device=device, threads=torch.get_num_threads(), matmul_peak_gflop_per_s=round(peak / 1e9, 1))
    parts = [f"{b} {result[b]['train_epoch_s']:.2f} s = {result[b]['gflop_per_s']:.1f} GFLOP/s "
             f"({result[b]['gflop_per_s'] * 1e9 / peak:.1%} of peak)" for b in BACKENDS]
    print(f"{bench.Dataset}: {result['epoch_gflop']:.1f} GFLOP per training epoch (forward + backward); "
          + '; '.join(parts) + f"; matmul peak {peak / 1e9:.1f} GFLOP/s at {result['threads']} threads "
          f"({device})")
    print(json.dumps(result))


# ----------------------------------------------------------------------------- two versions, side by side

def serve(bench):
    """A --compare worker: build the workload, then time one epoch per 'epoch' line read from stdin.

    Replies go to the original stdout, one JSON line each; anything the code prints goes to stderr.
    """
    replies = os.fdopen(os.dup(1), 'w', buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    work = Workload(bench)
    replies.write(json.dumps(dict(ready=work.describe())) + '\n')
    for line in sys.stdin:
        cpu = cpu_seconds()
        train, test = work.timed_epoch()
        replies.write(json.dumps(dict(train_s=train, test_s=test, cpu_s=cpu_seconds() - cpu,
                                      peak_rss_mb=peak_rss_mb())) + '\n')


def materialise(ref, into):
    """(code directory, label) of a version: a directory as it is, or a git commit / branch extracted."""
    path = Path(ref)
    if path.is_dir():
        return path.resolve(), f"{ref} (directory)"
    rev = subprocess.run(['git', '-C', str(HERE), 'rev-parse', '--verify', '--quiet', f'{ref}^{{commit}}'],
                         capture_output=True, text=True)
    if rev.returncode != 0:
        raise utils.UserError(f"--compare {ref}: neither a directory nor a commit of the git repository at {HERE}.")
    sha = rev.stdout.strip()
    dest = Path(into) / sha[:12]
    dest.mkdir()
    archive = subprocess.run(['git', '-C', str(HERE), 'archive', '--format=tar', sha], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter='data')
    return dest, f"{ref} ({sha[:12]})"


def worker_argv(bench, code_dir):
    """A python command running serve() of this file with `code_dir` first on the import path."""
    flags = ['--Dataset', bench.Dataset, '--device', bench.device, '--data-dir', bench.data_dir,
             '--synthetic-scale', str(bench.synthetic_scale), '--serve']
    if bench.threads:
        flags += ['--threads', str(bench.threads)]
    code = (f"import runpy, sys; sys.path.insert(0, {str(code_dir)!r}); "
            f"bench = runpy.run_path({str(HERE / 'bench.py')!r}); "
            f"bench['serve'](bench['parse_args']({flags!r}))")
    return [sys.executable, '-c', code]


class Worker:
    """One version's worker process; epoch() asks it for one timed training epoch and test pass."""

    def __init__(self, bench, code_dir, label):
        self.label = label
        self.proc = subprocess.Popen(worker_argv(bench, code_dir), cwd=code_dir, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        print(f"{label}: {self.read()['ready']}", file=sys.stderr)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise utils.UserError(f"the worker of {self.label} stopped (exit status {self.proc.wait()}); "
                                  f"its error is above.")
        return json.loads(line)

    def epoch(self):
        self.proc.stdin.write('epoch\n')
        return self.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def ratio_summary(first, second):
    """Median and min-max of the per-pair ratios first / second."""
    ratios = [a / b for a, b in zip(first, second)]
    return dict(median=round(statistics.median(ratios), 3), min=round(min(ratios), 3), max=round(max(ratios), 3))


def compare(bench):
    refs = bench.compare if len(bench.compare) == 2 else [bench.compare[0], None]
    pairs = bench.epochs
    with tempfile.TemporaryDirectory(prefix='moed_compare_') as tmp:
        versions = [materialise(ref, tmp) if ref else (HERE, f"this working tree ({HERE})") for ref in refs]
        workers = []
        try:
            for code_dir, label in versions:        # one after the other: the first may generate the data
                workers.append(Worker(bench, code_dir, label))
            for w in workers:
                w.epoch()                               # warm-up
            times = [[], []]
            for pair in range(1, pairs + 1):
                order = (0, 1) if pair % 2 else (1, 0)
                for i in order:
                    times[i].append(workers[i].epoch())
                a, b = times[0][-1], times[1][-1]
                print(f"pair {pair} ({'AB' if order == (0, 1) else 'BA'}): train A {a['train_s']:.2f} s, "
                      f"B {b['train_s']:.2f} s, A/B {a['train_s'] / b['train_s']:.3f} | test A {a['test_s']:.2f} s, "
                      f"B {b['test_s']:.2f} s, A/B {a['test_s'] / b['test_s']:.3f}", flush=True)
        finally:
            for w in workers:
                w.close()
    result = dict(dataset=bench.Dataset, device=bench.device, threads=bench.threads, pairs=pairs,
                  A=versions[0][1], B=versions[1][1])
    for kind in ('train', 'test', 'cpu'):
        a, b = ([t[f'{kind}_s'] for t in times[i]] for i in (0, 1))
        r = ratio_summary(a, b)
        result[kind] = dict(A_median_s=round(statistics.median(a), 3), B_median_s=round(statistics.median(b), 3),
                            ratio_A_over_B=r)
        what = {'train': 'train epoch', 'test': 'test pass  ', 'cpu': 'CPU s/epoch'}[kind]
        print(f"{what}: A median {statistics.median(a):.2f} s, "
              f"B median {statistics.median(b):.2f} s; A/B median of {pairs} per-pair ratios {r['median']:.3f} "
              f"(spread {r['min']:.3f}-{r['max']:.3f})")
    rss = [times[i][-1]['peak_rss_mb'] for i in (0, 1)]
    result['peak_rss_mb'] = dict(A=rss[0], B=rss[1])
    print(f"peak RSS: A {rss[0]:.0f} MB, B {rss[1]:.0f} MB\nA = {versions[0][1]}\nB = {versions[1][1]}")
    print(json.dumps(result))


def main(argv=None):
    bench = parse_args(argv)
    if bench.serve:
        return serve(bench)
    if bench.compare:
        return compare(bench)
    if bench.profile:
        return profile(bench)
    if bench.roofline:
        return roofline(bench)
    return single(bench)


if __name__ == '__main__':
    utils.run_cli(main)
