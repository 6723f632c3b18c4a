"""What the test files share: the repository's paths, running its scripts as a user does, small checks.

    from helpers import REPO, GOLDEN_DIR, run_script, ok, popen_script

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

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get('MOED_GOLDEN_DIR') or REPO / 'tests' / 'golden')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
WORDS = ['hi', 'hello', 'you', 'yo', 'ok', 'the', 'is', 'fine']    # whole words in the tiny encoder's vocabulary
MAX_POSITIONS = 24
N_LAYERS = 5


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


def conversation_rows(n_dialogues, seed, labels=('anger', 'joy', 'neutral')):
    """Random little dialogues in the plain schema (no split column: the file name gives it)."""
    rng = random.Random(seed)
    return [(f'd{d}', turn, rng.choice(['Ann', 'Bob', 'Cy']), ' '.join(rng.choices(WORDS, k=rng.randint(1, 5))),
             rng.choice(labels))
            for d in range(n_dialogues) for turn in range(rng.randint(3, 6))]


def write_csv(path, rows, columns=('dialogue', 'turn', 'speaker', 'text', 'emotion')):
    """rows as a CSV file with these columns; path."""
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path
