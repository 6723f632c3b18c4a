"""Seeding, metrics, reports, safe I/O and process plumbing (SIGTERM as Ctrl-C, starting Ray) shared by every
script."""
import atexit
import hashlib
import json
import logging
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.abspath(__file__))


def visible(text):
    """Whether text has one visible character: a zero-width space or a byte-order mark alone is empty (the rule for
    an utterance's text and a speaker's name, in a CSV and in a served request alike)."""
    return any(char.isprintable() and not char.isspace() for char in text)


class UserError(Exception):
    """A problem with the user's input (file, flag, checkpoint): reported in one paragraph, exit 2."""


def run_cli(main, argv=None):
    """Run a script's main(argv); a UserError becomes one paragraph on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------- seeding

def seed_everything(seed):
    """Seed python's random, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device, no_cuda=False):
    """--device as a torch device name: 'auto' is cuda when PyTorch sees a CUDA device (and no_cuda is not set),
    else cpu; 'cuda' without a CUDA device is a UserError."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise UserError("--device cuda: this PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() and not no_cuda else 'cpu'
    return device


def parsed_device(parser, device, no_cuda=False):
    """resolve_device of a script's parsed --device; a problem is the parser's error (usage, exit 2)."""
    try:
        return resolve_device(device, no_cuda)
    except UserError as err:
        parser.error(str(err))


def synchronize(device):
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- metrics
# sklearn is imported where it is used: it takes a second to import, and every script starts with utils.

def accuracy(labels, preds):
    """Accuracy in percent."""
    from sklearn.metrics import accuracy_score
    return accuracy_score(labels, preds) * 100


def weighted_f1(labels, preds):
    """Support-weighted F1 over the classes present in labels or preds, in percent (the paper's metric)."""
    from sklearn.metrics import f1_score
    return f1_score(labels, preds, average="weighted", zero_division=0) * 100


def classification_report_text(labels, preds, label_names):
    """sklearn's per-class report (4 digits) with every class listed, present or not."""
    from sklearn.metrics import classification_report
    return classification_report(labels, preds, labels=list(range(len(label_names))),
                                 target_names=list(label_names), digits=4, zero_division=0)


def confusion(labels, preds, n_classes):
    """Confusion matrix (rows: true class, columns: predicted class) as an (n_classes, n_classes) array."""
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(labels, preds, labels=list(range(n_classes)))


def format_confusion(matrix, label_names):
    """The confusion matrix as a text table with the class names on both axes."""
    width = max(max(len(name) for name in label_names), len(str(matrix.max())))
    header = " " * width + " " + " ".join(name.rjust(width) for name in label_names)
    rows = [name.rjust(width) + " " + " ".join(str(count).rjust(width) for count in row)
            for name, row in zip(label_names, matrix)]
    return "\n".join([header] + rows)


def report_block(title, labels, preds, label_names):
    """The text block printed and written to report.txt: accuracy, weighted F1, report, confusion matrix."""
    matrix = confusion(labels, preds, len(label_names))
    return "\n".join([
        f"== {title} ==",
        f"accuracy: {accuracy(labels, preds):.2f}  weighted F1: {weighted_f1(labels, preds):.2f}"
        f"  ({len(labels)} utterances)",
        "",
        classification_report_text(labels, preds, label_names).rstrip("\n"),
        "",
        "confusion matrix (rows: true label, columns: predicted label):",
        format_confusion(matrix, label_names),
        "",
    ])


def inverse_class_frequency(labels, n_classes):
    """Per-class weights n / (n_classes * n_c) of n labels, n_c each class's count (at least 1: a class that never
    occurs gets weight n / n_classes), as a float64 array."""
    counts = np.maximum(np.bincount(labels, minlength=n_classes), 1)
    return len(labels) / (n_classes * counts)


# Emotional inertia, per utterance: its label against the same speaker's previous one in the dialogue. A speaker's
# first turn has no previous label, so it is neither inertia nor shift: a kind of its own (the report and the
# viewer both break the scores down by these three kinds).
TURN_KINDS = {'first': 'f', 'inertia': 'i', 'shift': 's'}      # kind -> its letter in turn_kinds' array


def turn_kinds(labels, speakers, dialogue_ids):
    """Each utterance's TURN_KINDS letter: 'f' the speaker's first turn in its dialogue, 'i' (inertia) the same
    label as the speaker's previous turn there, 's' (shift) another label. The rows of a dialogue in turn order."""
    previous, kinds = {}, []
    for key, label in zip(zip(dialogue_ids, speakers), labels):
        last = previous.get(key)
        kinds.append('f' if last is None else 'i' if last == label else 's')
        previous[key] = label
    return np.array(kinds, dtype='<U1')


def sentiment3_from_bins(labels7):
    """MOSEI 7 sentiment bins -> 3 classes: bins 0-2 negative (0), 3 neutral (1), 4-6 positive (2)."""
    labels7 = np.asarray(labels7)
    return np.where(labels7 < 3, 0, np.where(labels7 == 3, 1, 2))


# ----------------------------------------------------------------------------- safe reading

# Everything a pickle of numpy arrays, numpy scalars and plain containers may name (python 2 and 3,
# numpy 1 and 2). Anything else could run arbitrary code when loaded, so it is refused.
SAFE_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
}
SAFE_PICKLE_GLOBALS |= {("__builtin__", name) for module, name in SAFE_PICKLE_GLOBALS if module == "builtins"}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses every other class."""

    def find_class(self, module, name):
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not a numpy array "
                                         "or a plain container and is not loaded for safety")
        return super().find_class(module, name)


def safe_load_pickle(path, encoding="latin1"):
    """Load a pickle of numpy arrays and plain containers; anything else or a broken file is a UserError."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding=encoding).load()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise UserError(f"{path} could not be read as a pickle of numpy arrays: {err}.") from None


# ----------------------------------------------------------------------------- safe writing

def _current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _new_file_mode():
    """Permission bits a plain open() would give a new file (mkstemp's 0600 would hide results)."""
    return 0o666 & ~_current_umask()


def atomic_write(path, write_fn, mode="wb"):
    """Call write_fn(file) on a temp file beside path, fsync, rename it over path: never half-written."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        text = "b" not in mode
        with open(fd, mode, encoding="utf-8" if text else None, newline="" if text else None) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_pickle(path, obj):
    """Pickle obj (protocol 4, readable by python 3.4+) atomically."""
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=4))


def save_text(path, text):
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda f: f.write(text), mode="w")


def _to_json(value):
    """json.dump fallback for numpy values and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def as_json(obj):
    """obj as a JSON file written by save_json reads back: tuples as lists, numpy values as Python's, paths as
    strings (so that what is compared with, or hashed as, a file's content is that content)."""
    return json.loads(json.dumps(obj, default=_to_json))


def save_json(path, obj):
    """Write obj as indented JSON atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, default=_to_json) + "\n"), mode="w")


def save_csv(path, dataframe):
    """Write a pandas DataFrame as CSV (no index column) atomically."""
    atomic_write(path, lambda f: dataframe.to_csv(f, index=False), mode="w")


def save_state_dict(path, state_dict):
    """torch.save a state_dict atomically."""
    atomic_write(path, lambda f: torch.save(state_dict, f))


def save_figure(path, figure):
    """Save a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt
    try:
        atomic_write(path, lambda f: figure.savefig(f, format='png', dpi=110, bbox_inches='tight'))
    finally:
        plt.close(figure)


# ----------------------------------------------------------------------------- run folders

def check_output_folder(path, flag, folder=True):
    """A UserError, before any work, unless path (a folder, or with folder=False a file) can be written:
    no file stands where it or a parent folder would be."""
    existing = os.path.abspath(path) if folder else os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"cannot write into {path} ({flag}): {existing} is a file, not a folder; move that file "
                        f"away or give another {flag}.")


def load_json(path):
    """A JSON file's content; OSError or ValueError (json.JSONDecodeError) when it cannot be read."""
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def read_json(path):
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


def file_sha256(path):
    """sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(model, *extra):
    """sha256 of a model's weights (names, dtypes, shapes, values, in name order), then of each extra string
    (e.g. its tokenizer's or processor's settings), as hex."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f'{name} {tensor.dtype} {tuple(tensor.shape)}\n'.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for text in extra:
        digest.update(text.encode())
    return digest.hexdigest()


def finished_run(run_dir):
    """Whether run_dir holds a finished training run: its report.txt, and result.json saying 'finished'."""
    result = read_json(os.path.join(run_dir, 'result.json'))
    return (os.path.isfile(os.path.join(run_dir, 'report.txt')) and isinstance(result, dict)
            and result.get('status') == 'finished')


# ----------------------------------------------------------------------------- whole folders


def replace_folder(path, write_fn):
    """Call write_fn(temp folder) beside path, then rename the temp folder to path, replacing the old one.

    Readers see the old folder or the new one, never a mix: only between two renames (an instant) is
    path absent (a crash right then leaves the old folder in .<name>.old-*/ beside it). On an error
    the temp folder is removed and path is left as it was.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_current_umask())     # what a plain mkdir gives (mkdtemp's is 0700)
        write_fn(tmp)
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old-")
            os.replace(path, os.path.join(old, name))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old and not os.path.exists(path):
            os.replace(os.path.join(old, name), path)
        raise
    if old:
        shutil.rmtree(old)


# ----------------------------------------------------------------------------- processes

class SigtermAsInterrupt:
    """with SigtermAsInterrupt() as interrupt: SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does
    (one exception to catch, and the only one Ray's waits pass on); interrupt.status is the exit status the
    signal asks for (128 + 15), 130 (Ctrl-C's) until one comes. Leaving gives SIGTERM back its previous handler.
    In another thread (a server's model thread) it changes nothing: signals are the main thread's."""

    def __enter__(self):
        self.status, self.previous = 130, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self)
        return self

    def __call__(self, signum, frame):
        self.status = 128 + signum
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def start_ray(address=None, env_vars=None, num_cpus=None):
    """Ray for this process, once (a later call finds it started): address None or 'local' starts it here
    (no dashboard; num_cpus CPUs, default all), any other (auto, HOST:PORT, ray://HOST:PORT) joins that cluster.
    Its workers run with this repository on their PYTHONPATH (a cluster's machines need it at the same path) and
    env_vars; Ray's own logging only for errors, the workers' output not copied here; no usage statistics. Shut
    down when the process ends (or by ray.shutdown before). Returns the seconds it took."""
    import ray  # imported where Ray is used: the scripts start without it
    started = time.time()
    if ray.is_initialized():
        return 0.0
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    env = {'PYTHONPATH': os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])), **(env_vars or {})}
    local = address in (None, 'local')
    options = dict(include_dashboard=False, num_cpus=num_cpus) if local else {}
    ray.init(address='local' if local else address, runtime_env={'env_vars': env}, logging_level=logging.ERROR,
             log_to_driver=False, **options)
    atexit.register(ray.shutdown)
    return time.time() - started
