"""What the test files share: the repository's paths, running its scripts as a user does, small checks.

    from helpers import REPO, GOLDEN_DIR, run_script, ok, popen_script
    net = build(paper_config('IEMOCAP'), SMALL_DIMS)           # a small MoED, and random_batch(...) for it

Children start with SIGINT's default disposition, whatever the suite inherited (a suite started as a
background job from a script has SIGINT ignored, and its children would too).
"""
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import dataloader
import model
from core.config import MODEL_FLAGS, ModelConfig, parse_args
from utils import run_cli

REPO = Path(__file__).resolve().parents[1]
GOLDEN_DIR = Path(os.environ.get('MOED_GOLDEN_DIR') or REPO / 'tests' / 'golden')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
WORDS = ['hi', 'hello', 'you', 'yo', 'ok', 'the', 'is', 'fine']    # whole words in the tiny encoder's vocabulary
# data_args' tiny paper runs (conftest's trained): synthetic data of 6 / 7 / 8 training and 2 test dialogues, and few
# optimizer steps (the paper models are big; MELD, shuffled, gets two batches per epoch)
TINY_SCALE = {'IEMOCAP': 0.05, 'MELD': 0.006, 'MOSEI': 0.003}
TINY_BATCH = {'IEMOCAP': 32, 'MELD': 4, 'MOSEI': 8}
SCRIPT = {'IEMOCAP': 'train.py', 'MELD': 'train.py', 'MOSEI': 'train_MOSEI.py'}
MAX_POSITIONS = 24
N_LAYERS = 5
LABELS = ('anger', 'joy', 'neutral')                    # conversation_rows' emotions
SPLITS = {'train': 8, 'dev': 2, 'test': 3}               # dialogues per split of conftest's workspace
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


def data_args(dataset, data_dir):
    """Flags of a paper run of `dataset` on its tiny synthetic data (MOSEI's script needs no --Dataset)."""
    args = ['--paper', '--synthetic', '--synthetic-scale', TINY_SCALE[dataset], '--data-dir', data_dir,
            '--batch-size', TINY_BATCH[dataset]]
    return args if SCRIPT[dataset] == 'train_MOSEI.py' else ['--Dataset', dataset, *args]


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


# ----------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which('chromium')
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe; one tab."""

    def __init__(self, profile):
        to_chromium, self._write = os.pipe()
        self._read, from_chromium = os.pipe()

        def child():                        # the protocol's pipe is fds 3 (commands) and 4 (replies)
            a, b = os.dup(to_chromium), os.dup(from_chromium)
            os.dup2(a, 3)
            os.dup2(b, 4)
        self.proc = subprocess.Popen(
            [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--remote-debugging-pipe',
             f'--user-data-dir={profile}', 'about:blank'],
            pass_fds=(3, 4), preexec_fn=child, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chromium)
        os.close(from_chromium)
        self.n, self.buffer, self.events = 0, b'', []
        target = self.send('Target.createTarget', url='about:blank')['targetId']
        self.session = self.send('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        for domain in ('Page', 'Runtime'):
            self.send(f'{domain}.enable', session=self.session)
        self.send('Emulation.setDeviceMetricsOverride', session=self.session, width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)

    def send(self, method, session=None, **params):
        self.n += 1
        message = dict(id=self.n, method=method, params=params, **({'sessionId': session} if session else {}))
        os.write(self._write, json.dumps(message).encode() + b'\0')
        while True:
            reply = self._next()
            if reply.get('id') == self.n:
                assert 'error' not in reply, f"{method}: {reply['error']}"
                return reply['result']
            self.events.append(reply)

    def _next(self):
        while b'\0' not in self.buffer:
            chunk = os.read(self._read, 1 << 20)
            assert chunk, 'chromium closed the pipe'
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b'\0', 1)
        return json.loads(message)

    def open(self, path, fragment=''):
        """Load a file and wait for its load event; the seconds it took."""
        return self.open_url(f'file://{path}{fragment}')

    def open_url(self, url):
        """Load a URL (a local server's page) and wait for its load event; the seconds it took."""
        start = time.perf_counter()
        self.send('Page.navigate', session=self.session, url=url)
        while not any(e.get('method') == 'Page.loadEventFired' for e in self.events):
            self.events.append(self._next())
        self.events = [e for e in self.events if e.get('method') != 'Page.loadEventFired']
        return time.perf_counter() - start

    def js(self, expression):
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.send('Runtime.evaluate', session=self.session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert 'exceptionDetails' not in result, result['exceptionDetails']
        return result['result'].get('value')

    def goto(self, fragment):
        """Change the page's URL fragment and wait until the page has handled it."""
        return self.js(f"new Promise(done => {{ window.addEventListener('hashchange', () => done(location.hash), "
                       f"{{once: true}}); location.hash = {json.dumps(fragment)}; }})")

    def screenshot(self, path):
        data = self.send('Page.captureScreenshot', session=self.session, format='png')['data']
        path.write_bytes(base64.b64decode(data))

    def script_errors(self):
        thrown = [e['params']['exceptionDetails'] for e in self.events if e.get('method') == 'Runtime.exceptionThrown']
        return thrown + ([self.js("document.getElementById('errors').textContent")] if self.js(
            "document.getElementById('errors').textContent") else [])

    def close(self):
        try:
            self.send('Browser.close')
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self._write)
            os.close(self._read)
