"""The per-utterance media work (media_features.utterance_features) over many recordings: in parallel processes
or Ray tasks, each result cached as it arrives, so a stopped extraction resumes where it stopped.

    vectors, infos = run('visual', spec, recipe, sources, sha256s, where, workers=4, ray_address=None,
                         cache_dir='.feats.work/media')

    problem = one('audio', spec, recipe, (path, start, end), sha256, cache_dir)    # one utterance (serve.py)

sources: per utterance (path, start, end); sha256s: per utterance its file's sha256; where(i): the CSV, line and
dialogue of utterance i, for messages. Returns (N, D) float32 and one info dict per utterance.

- Processes (default): --workers N (default os.cpu_count()) processes forked from this one (which has imported
  the extractors: they start at once); each runs one decoder thread, one OpenCV thread and one torch thread
  (so torch's thread pool, inherited, is never used across the fork), and loads a model it needs once.
  --workers 1 runs in this process.
- Ray: --ray-address ADDR runs the same function as Ray tasks of one CPU each: 'local' starts Ray inside this
  process with --workers CPUs; any other address (auto, HOST:PORT, ray://HOST:PORT) connects to that cluster,
  whose nodes must see the recordings and this folder at the same paths (it goes on their PYTHONPATH). The
  results are the same as with processes (same function, same inputs). Ray starts once per command (the audio
  and visual passes share it) and stops when the command ends.
- Cache: one .npz per utterance and modality under cache_dir (two-hex-digit subfolders), named by the sha256 of
  the recording's sha256, the segment and the modality's recipe: written by this process as each result comes
  back (a temp file renamed into place), so Ctrl-C, SIGTERM or a crash loses at most the utterances in flight.
  A later run with the same recipe takes every cached utterance and computes the rest; a different recipe or
  recording misses. extract_features.py removes the work area once the feature folder is written.
- Errors: a recording that fails to decode stops the run (the workers are stopped) with a UserError naming the
  CSV, line, dialogue and file; the utterances done so far stay cached.
- A progress bar (tqdm) on stderr counts cached utterances as done and shows the rate and the ETA.
"""
import hashlib
import json
import multiprocessing
import os
import signal
import sys

import numpy as np
from tqdm import tqdm

import utils
from owndata import media, media_features
from utils import UserError


def cache_key(kind, recipe, sha256, start, end):
    """The cache entry's name: what the utterance's features depend on (the recording, the segment, the recipe)."""
    text = json.dumps({'kind': kind, 'media': sha256, 'start': start, 'end': end, 'recipe': recipe},
                      sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    """Per-utterance results on disk: key -> (vector, info)."""

    def __init__(self, folder):
        self.folder = folder

    def path(self, key):
        return os.path.join(self.folder, key[:2], f'{key}.npz')

    def get(self, key):
        try:
            with np.load(self.path(key), allow_pickle=False) as npz:
                return npz['vector'], json.loads(str(npz['info']))
        except (OSError, ValueError, KeyError, EOFError):
            return None             # absent, or cut short by a crash before the rename (never renamed)

    def put(self, key, vector, info):
        utils.atomic_write(self.path(key), lambda f: np.savez(f, vector=vector, info=np.array(json.dumps(info))))


# ----------------------------------------------------------------------------- one task

def work(task):
    """(index, vector, info, None) or (index, None, None, message) for one utterance."""
    i, kind, spec, source = task
    try:
        vector, info = media_features.utterance_features(kind, spec, source)
    except (media.MediaError, UserError) as err:
        return i, None, None, str(err)
    return i, vector, info, None


def worker_setup():
    """Each worker: Ctrl-C is the parent's to handle, SIGTERM (the pool stopping it) ends it at once, whatever
    the parent's handler was when it forked; one thread per library (the workers are the parallelism)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import torch
    torch.set_num_threads(1)        # as torch's DataLoader workers do (OpenCV: one thread, owndata/media_features.py)


def one(kind, spec, recipe, source, sha256, cache_dir):
    """One utterance's features into the cache, computed here unless cached (serve.py: a turn's recording, when
    its request is checked): None, or why its recording cannot give them. The same function and cache as run's."""
    cache = Cache(cache_dir)
    key = cache_key(kind, recipe, sha256, source[1], source[2])
    if cache.get(key) is not None:
        return None
    _, vector, info, problem = work((0, kind, spec, source))
    if problem is None and not np.isfinite(vector).all():
        problem = 'its features contain NaN or infinite values'
    if problem is None:
        cache.put(key, vector, info)
    return problem


# ----------------------------------------------------------------------------- backends

def in_process(tasks):
    for task in tasks:
        yield work(task)


def in_processes(tasks, workers):
    context = multiprocessing.get_context('fork')       # the extractors are imported already: workers start at once
    pool = context.Pool(workers, initializer=worker_setup)
    try:
        yield from pool.imap_unordered(work, tasks, chunksize=1)
        pool.close()                # every task done: the workers leave on their own
    finally:
        pool.terminate()            # (interrupted or failed: stopped now)
        pool.join()


def in_ray(tasks, address, workers):
    import ray
    utils.start_ray(address, {'OMP_NUM_THREADS': '1'}, workers)     # once: the audio and the visual pass share it
    remote = ray.remote(num_cpus=1)(work)
    pending = [remote.remote(task) for task in tasks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


# ----------------------------------------------------------------------------- the run

def run(kind, spec, recipe, sources, sha256s, where, workers, ray_address=None, cache_dir=None, progress=True):
    """(N, D) float32 vectors and per-utterance infos of kind ('audio' or 'visual'), cached under cache_dir; a
    progress bar on stderr unless progress is false."""
    cache = Cache(cache_dir) if cache_dir else None
    keys = [cache_key(kind, recipe, sha256, start, end) for sha256, (_, start, end) in zip(sha256s, sources)]
    results = [cache.get(key) if cache else None for key in keys]
    tasks = [(i, kind, spec, source) for i, source in enumerate(sources) if results[i] is None]
    bar = tqdm(total=len(sources), initial=len(sources) - len(tasks), unit='utt', desc=kind, file=sys.stderr,
               dynamic_ncols=True, disable=not progress)
    if ray_address:
        stream = in_ray(tasks, ray_address, workers)
    elif workers > 1 and len(tasks) > 1:
        stream = in_processes(tasks, min(workers, len(tasks)))
    else:
        stream = in_process(tasks)
    with utils.SigtermAsInterrupt() as interrupt, bar:
        try:
            for i, vector, info, problem in stream:
                if problem is not None:
                    path = sources[i][0]
                    raise UserError(f"{where(i)}: the recording {path} {problem}. Fix or replace the file (the "
                                    "utterances done so far are kept: the same command resumes).")
                results[i] = (vector, info)
                if cache:
                    cache.put(keys[i], vector, info)
                bar.update(1)
        except KeyboardInterrupt:
            stream.close()
            done = sum(result is not None for result in results)
            where_to = f" in {cache_dir}" if cache else ''
            print(f"\ninterrupted: {done} of {len(sources)} utterances' {kind} features are kept{where_to}; run the "
                  "same command again to resume.", file=sys.stderr)
            raise SystemExit(interrupt.status) from None
        finally:
            stream.close()
    dims = {len(vector) for vector, _ in results}
    if len(dims) != 1:
        raise UserError(f"the {kind} features have several dimensions ({sorted(dims)}): the cache in {cache_dir} "
                        "mixes recipes; remove it and run again.")
    return np.stack([vector for vector, _ in results]).astype(np.float32), [info for _, info in results]
