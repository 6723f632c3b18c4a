"""Running the trials of experiments.py: every trial a train.py subprocess inside a Ray task, on this machine
or a Ray cluster, with as many threads as the CPUs it holds; Ctrl-C or SIGTERM stops them, their reports
marked interrupted.

    prepare_data(args)                                          # the synthetic data once, not in every trial
    outcomes, stopped, timing = run_on_ray(trials, args, out_dir)   # trial -> Outcome
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import dataloader
import utils
from core import config, synthetic
from utils import UserError

TRAIN = os.path.join(utils.REPO, 'train.py')


# ----------------------------------------------------------------------------- the data

def prepare_data(args):
    """Generate the synthetic data once here rather than in every trial; or check that the feature files exist
    (a custom feature folder was read by plan_trials)."""
    if args.synthetic:
        synthetic.ensure_synthetic(args.Dataset, args.data_dir, scale=args.synthetic_scale)
        return
    if args.Dataset == config.CUSTOM:
        return
    info = dataloader.dataset_info(args.Dataset)
    for path in (os.path.join(args.data_dir, info.folder, name) for name in info.file_names):
        if not os.path.isfile(path):
            raise UserError(f"{path} does not exist: the {args.Dataset} features are needed (see the README, "
                            f"'Data and released checkpoints'); give their folder with --data-dir, or use --synthetic.")


# ----------------------------------------------------------------------------- running on Ray

def run_train(script, argv, threads, cwd):
    """The Ray task of one trial: `python script *argv` with `threads` threads. ray.cancel stops it with SIGTERM,
    so train.py writes its report marked interrupted. Uses the standard library only (it runs on any node)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.time()
    with tempfile.TemporaryFile('w+', encoding='utf-8', errors='replace') as stderr:
        proc = subprocess.Popen([sys.executable, script, *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)
        try:
            while proc.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
        stderr.seek(0)
        return dict(returncode=proc.returncode, stderr=stderr.read()[-3000:], seconds=time.time() - started)


class Outcome(NamedTuple):
    status: str                 # finished, failed, interrupted or not run
    error: str = ''
    seconds: float = 0.0        # wall-clock time of the train.py process


def trial_slots(args):
    """How many trials the cluster runs at once."""
    import ray
    resources = ray.cluster_resources()
    slots = resources.get('CPU', 0) // args.cpus_per_trial
    if args.gpus_per_trial:
        slots = min(slots, resources.get('GPU', 0) // args.gpus_per_trial)
    if slots < 1:
        raise UserError(f"no trial fits the Ray cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} "
                        f"GPUs): lower --cpus-per-trial / --gpus-per-trial")
    return int(slots)


def error_text(returncode, stderr):
    """The last line train.py wrote to stderr (its error), or what killed it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if lines:
        return lines[-1]
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"killed by {name}" + (" (out of memory?)" if name == 'SIGKILL' else '')
    if returncode == 0:
        return "train.py exited with status 0 but its run folder holds no finished run"
    return f"train.py exited with status {returncode}"


def trial_outcome(ref, trial):
    import ray
    try:
        done = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return Outcome('not run')
    except ray.exceptions.RayError as err:
        return Outcome('failed', f"{type(err).__name__}: {str(err).strip().splitlines()[0]}")
    if done['returncode'] == 0 and utils.finished_run(trial.run_dir):
        return Outcome('finished', seconds=done['seconds'])
    if done['returncode'] in (130, 143):
        return Outcome('interrupted', 'stopped: its report is marked interrupted', done['seconds'])
    return Outcome('failed', error_text(done['returncode'], done['stderr']), done['seconds'])


def clock(seconds):
    return time.strftime('%H:%M:%S', time.gmtime(seconds))


class Progress:
    """The progress line: rewritten in place on a terminal, else printed whenever a count changes."""

    def __init__(self, total, slots):
        self.total, self.slots, self.started, self.shown = total, slots, time.time(), None
        self.tty = sys.stdout.isatty()

    def show(self, outcomes, n_pending):
        finished = sum(outcome.status == 'finished' for outcome in outcomes.values())
        counts = (finished, min(self.slots, n_pending), len(outcomes) - finished)
        elapsed = time.time() - self.started
        seconds = [outcome.seconds for outcome in outcomes.values()]          # of the trials that ended
        eta = clock(sum(seconds) / len(seconds) * n_pending / self.slots) if seconds else '?'
        line = (f"trials: {counts[0]} done, {counts[1]} running, {counts[2]} failed of {self.total}; "
                f"elapsed {clock(elapsed)}, ETA {eta}")
        if self.tty:
            print(f"\r{line}\x1b[K", end='', flush=True)
        elif counts != self.shown:
            print(line, flush=True)
        self.shown = counts

    def say(self, text):
        """A line of its own (a failure), above the progress line."""
        print(f"\r\x1b[K{text}" if self.tty else text, flush=True)

    def end(self):
        if self.tty:
            print()


def run_grid(trials, args, out_dir, slots):
    """Run the trials as Ray tasks; (trial -> Outcome, whether Ctrl-C stopped it)."""
    import ray
    # run_train travels by value (as from a __main__): a node needs the standard library and train.py, not this module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(run_train).options(num_cpus=args.cpus_per_trial, num_gpus=args.gpus_per_trial, max_retries=0)
    refs = {task.remote(TRAIN, trial.argv, args.cpus_per_trial, out_dir): trial for trial in trials}
    outcomes, pending, progress = {}, list(refs), Progress(len(trials), slots)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                trial = refs[ref]
                outcomes[trial] = outcome = trial_outcome(ref, trial)
                if outcome.status == 'failed':
                    progress.say(f"FAILED {trial.row} seed {trial.seed}: {outcome.error}")
            progress.show(outcomes, len(pending))
        progress.end()
        return outcomes, False
    except KeyboardInterrupt:
        progress.say("stopping: the running trials write their reports (marked interrupted) ...")
        for ref in pending:
            ray.cancel(ref)
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=120) if pending else ([], [])
        for ref in pending:
            outcomes[refs[ref]] = (trial_outcome(ref, refs[ref]) if ref in ready
                                   else Outcome('interrupted', 'did not stop within 120 s'))
        return outcomes, True


def run_on_ray(trials, args, out_dir):
    """Start or join Ray, run the trials, leave Ray; (trial -> Outcome, stop status or None, timing line)."""
    import ray
    init_seconds = utils.start_ray(args.address)
    try:
        with utils.SigtermAsInterrupt() as interrupt:      # run_grid stops the trials on either
            slots = trial_slots(args)
            os.makedirs(out_dir, exist_ok=True)
            print(f"Ray: {slots} trial(s) at a time, {args.cpus_per_trial} CPU(s)"
                  + f" and {args.gpus_per_trial:g} GPU" * bool(args.gpus_per_trial) + " each", flush=True)
            started = time.time()
            outcomes, stopped = run_grid(trials, args, out_dir, slots)
            wall = time.time() - started
    finally:
        ray.shutdown()
    busy = sum(outcome.seconds for outcome in outcomes.values())
    ran = sum(outcome.status != 'not run' for outcome in outcomes.values())
    timing = (f"Ray started in {init_seconds:.1f} s; {ran} trial(s) took {wall:.1f} s wall-clock on {slots} "
              f"slot(s); their train.py processes ran {busy:.1f} s in all ({busy / slots:.1f} s per slot)")
    return outcomes, interrupt.status if stopped else None, timing
