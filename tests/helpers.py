"""What the test files share: the repository's paths, running its scripts as a user does, small checks.

    from helpers import REPO, GOLDEN_DIR, run_script, ok, popen_script
    net = build(paper_config('IEMOCAP'), SMALL_DIMS)           # a small MoED, and random_batch(...) for it

Children start with SIGINT's default disposition, whatever the suite inherited (a suite started as a
background job from a script has SIGINT ignored, and its children would too).
"""
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

import dataloader
import model
from config import MODEL_FLAGS, ModelConfig, parse_args
from utils import run_cli

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get('MOED_GOLDEN_DIR') or REPO / 'tests' / 'golden')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
WORDS = ['hi', 'hello', 'you', 'yo', 'ok', 'the', 'is', 'fine']    # whole words in the tiny encoder's vocabulary
MAX_POSITIONS = 24
N_LAYERS = 5
LABELS = ('anger', 'joy', 'neutral')                    # conversation_rows' emotions
SPLITS = {'train': 8, 'dev': 2, 'test': 3}               # dialogues per split of conftest's custom_run
BATCH = 2                                                # its --batch-size


def default_signals():
    """In the child before exec: SIGINT and SIGTERM as a user's shell gives them (not inherited 'ignore')."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_script(script, *args, cwd, env=None, timeout=600):
    """Run one of the repository's scripts with this python in cwd; the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=None if env is None else dict(os.environ, **env),
                          preexec_fn=default_signals)


def popen_script(script, *args, cwd, python_flags=()):
    """Start one of the repository's scripts (text pipes), SIGINT at its default disposition."""
    return subprocess.Popen([sys.executable, *python_flags, str(REPO / script), *map(str, args)], cwd=cwd,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals)


def ok(proc):
    """proc, after checking that it exited 0 (else fail with the end of its output)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def assert_png(path, min_bytes=10_000):
    """path is a real PNG of some size."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) >= min_bytes, f"{path}: not a PNG of >= {min_bytes} bytes"


def conversation_rows(n_dialogues, seed, labels=LABELS):
    """Random little dialogues in the plain schema (no split column: the file name gives it)."""
    rng = random.Random(seed)
    return [(f'd{d}', turn, rng.choice(['Ann', 'Bob', 'Cy']), ' '.join(rng.choices(WORDS, k=rng.randint(1, 5))),
             rng.choice(labels))
            for d in range(n_dialogues) for turn in range(rng.randint(3, 6))]


def write_csv(path, rows, columns=('dialogue', 'turn', 'speaker', 'text', 'emotion')):
    """rows as a CSV file with these columns; path."""
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def in_process(main, argv, cwd, monkeypatch, capsys):
    """Run a script's main as its command line would, in cwd; its stdout."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    run_cli(main, list(map(str, argv)))
    return capsys.readouterr().out


# ----------------------------------------------------------------------------- small models

SMALL_DIMS = {'D_text': 16, 'D_audio': 12, 'D_visual': 10, 'D_g': 8, 'graph_h': 6}


def paper_config(dataset, *flags):
    """The model flags train.py resolves for the paper command of `dataset` (plus extra flags), with the
    dataset's class and speaker counts: a dict, so that tests can change one field."""
    args = parse_args(['--paper', '--Dataset', dataset, *flags])
    info = dataloader.DATASETS[dataset]
    return dict(dataset=dataset, n_classes=info.n_classes, n_speakers=info.n_speakers,
                **{name: getattr(args, name) for name in MODEL_FLAGS})


def build(flags, dims):
    """MoED of a flags dict (paper_config's) and feature sizes, initialised by torch's generator."""
    return model.MoED(ModelConfig(**flags, **dims))


def random_batch(lengths, dims, n_speakers, seed=0):
    """A padded time-major batch of random features (zeros at padded positions) and random speakers:
    MoED.forward's (text, audio, visual, qmask, lengths)."""
    g = torch.Generator().manual_seed(seed)
    T, B = max(lengths), len(lengths)
    valid = (torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]).float()[..., None]
    text = [torch.randn(T, B, dims['D_text'], generator=g) * valid for _ in range(4)]
    audio = torch.randn(T, B, dims['D_audio'], generator=g) * valid
    visual = torch.randn(T, B, dims['D_visual'], generator=g) * valid
    spk = torch.randint(0, n_speakers, (T, B), generator=g)
    qmask = torch.nn.functional.one_hot(spk, n_speakers).float() * valid
    return text, audio, visual, qmask, lengths
