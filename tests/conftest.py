"""Shared by the test files: the repository on sys.path, its paths, running its scripts as a user does, and
a tiny text encoder.

    from conftest import REPO, GOLDEN_DIR, run_script, ok
    def test_x(encoder_dir): ...        # a tiny random BERT saved like a hub model (fixture)
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get('MOED_GOLDEN_DIR') or REPO / 'tests' / 'golden')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
WORDS = ['hi', 'hello', 'you', 'yo', 'ok', 'the', 'is', 'fine']    # whole words in the tiny encoder's vocabulary
MAX_POSITIONS = 24
N_LAYERS = 5

sys.path.insert(0, str(REPO))


def run_script(script, *args, cwd, env=None, timeout=600):
    """Run one of the repository's scripts with this python in cwd; the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=None if env is None else dict(os.environ, **env))


def ok(proc):
    """proc, after checking that it exited 0 (else fail with the end of its output)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def assert_png(path, min_bytes=10_000):
    """path is a real PNG of some size."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) >= min_bytes, f"{path}: not a PNG of >= {min_bytes} bytes"


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """A folder where synthetic datasets are generated once per test session and cached."""
    return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='session')
def encoder_dir(tmp_path_factory):
    """A randomly initialised 5-layer, 32-d BERT with a small WordPiece vocabulary, saved like a hub model."""
    import torch
    import transformers
    folder = tmp_path_factory.mktemp('tiny-bert')
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"",
             *(f'##{c}' for c in 'abcdefghijklmnopqrstuvwxyz'), *WORDS]
    tokenizer = transformers.BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=N_LAYERS,
                                     num_attention_heads=2, intermediate_size=37,
                                     max_position_embeddings=MAX_POSITIONS)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
