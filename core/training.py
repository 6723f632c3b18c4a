"""Running MoED on data: the data and the seeded model of a run, and one pass over the data (a training
epoch or an evaluation) under the training protocol.

    fs = load_data(args)                                  # args: config.parse_args(...)
    net = build_model(args, fs)
    run, optimizer = Run.of(args, net, fs), make_optimizer(args, net)
    result = run_pass(run, keys, optimizer)               # a training epoch
    result = run_pass(run, keys)                          # an evaluation (no optimizer: --testing builds none)

The protocol decides what each pass sees (see Protocol): `original` reproduces the authors' code
run for run on CPU, `textbook` draws a fresh order and fresh dropout masks every epoch.
train.py, bench.py and the experiment and prediction scripts all go through these functions.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch

import dataloader
import model
import utils
from core import config, feature_folder, synthetic

# The original's SubsetRandomSampler; IEMOCAP trains in file order. Custom data is shuffled like MELD: its
# files (MELD's, EmoryNLP's) list the dialogues of an episode together, and many short dialogues train
# better in a random order (under the original protocol, the same random order every epoch).
SHUFFLED_DATASETS = ('MELD', 'MOSEI', config.CUSTOM)


def dataset_shuffles(name):
    """Whether training dialogues are shuffled: the original shuffles MELD and MOSEI, not IEMOCAP; custom too."""
    return name in SHUFFLED_DATASETS


# ----------------------------------------------------------------------------- data, model, optimizer

def load_data(args):
    """The FeatureSet of --Dataset: the real feature files under --data-dir, synthetic ones, or for custom the
    feature folder --data-dir (--modals and --directed_edge not given: its modalities; it must have every
    modality of --modals)."""
    if args.Dataset == config.CUSTOM:
        fs = feature_folder.load(args.data_dir)
        config.resolve_extracted(args, fs.modals)
        feature_folder.check_modals(fs, args.modals)
        return fs
    data_dir = args.data_dir
    if args.synthetic:
        data_dir = synthetic.ensure_synthetic(args.Dataset, args.data_dir, scale=args.synthetic_scale)
    return dataloader.load_features(args.Dataset, data_dir)


def data_description(args, fs):
    if args.Dataset == config.CUSTOM:
        encoder = fs.meta['modalities']['text']['encoder']
        return (f"features of your conversations from {args.data_dir} (extract_features.py; text encoder "
                f"{encoder.get('package') or encoder['text_model']}; modalities {fs.modals})")
    if args.synthetic:
        return (f"SYNTHETIC {args.Dataset}-shaped data (a simulation of emotional inertia and contagion, scale "
                f"{args.synthetic_scale}), not the real dataset: its scores say nothing about the paper's")
    return f"real {args.Dataset} features from {', '.join(map(str, fs.source))}"


def run_splits(args, fs):
    """split -> dialogue keys: train, valid (with --valid: a held-out fraction of train, or the dev split) and test."""
    splits = dict(train=fs.train_keys)
    if args.valid == 'dev':
        if not fs.valid_keys:
            raise utils.UserError(f"--valid dev: the feature folder {args.data_dir} has no dev split (give "
                                  "extract_features.py a dev CSV too), or hold out a fraction: --valid 0.1")
        splits['valid'] = fs.valid_keys
    elif args.valid is not None:
        splits['train'], splits['valid'] = dataloader.split_valid(fs.train_keys, args.valid, args.seed)
    splits['test'] = fs.test_keys
    return splits


def build_model(args, fs):
    """MoED for the flags and the data, on args.device, with the seeded initialisation of the original; the
    modalities it standardises (custom data: config.standardised_modalities) get the statistics of the dialogues
    the run trains on (run_splits' train: never dev, test, or a held-out --valid fraction)."""
    cfg = config.model_config(args, fs.dims, fs.n_classes, fs.n_speakers)
    utils.seed_everything(args.seed)
    net = model.MoED(cfg)
    train_keys = run_splits(args, fs)['train'] if cfg.standardised else []
    names = {letter: name for name, letter in feature_folder.MODALITY_LETTERS.items()}
    for m in cfg.standardised:
        rows = np.concatenate([getattr(fs.dialogues[key], names[m]) for key in train_keys])
        getattr(net, f'standardise_{m}').set_statistics(rows)
    return net.to(args.device)


def start_from_head(args, fs, net):
    """--Dataset custom training: load the feature folder's MoED head (extract_features.py --finetune-head moed:
    MoED fine-tuned together with the encoder whose features these are) into net when it is the model these
    flags build, and not --from-scratch. Returns what the run started from, as config.json records it."""
    head = feature_folder.read_head(args.data_dir, fs.meta) if args.Dataset == config.CUSTOM else None
    if head is None:
        return 'the seeded initialisation'
    if args.from_scratch:
        return f"the seeded initialisation (--from-scratch: {feature_folder.HEAD} not used)"
    differ = config.model_differences(head[0], net.cfg)
    if differ:
        return (f"the seeded initialisation: {feature_folder.HEAD} (MoED fine-tuned with the encoder) is another "
                f"model than these flags build ({'; '.join(differ)})")
    net.load_state_dict({name: value.to(args.device) for name, value in head[1].items()})
    return f"{feature_folder.HEAD}: the MoED fine-tuned with the feature folder's encoder (--finetune-head moed)"


def make_optimizer(args, net):
    """Adam of --lr and --l2, fused (one kernel per parameter instead of a dozen elementwise passes: a MELD step
    10 ms instead of 42 on the 2-core CPU): the original's update to float rounding (the training traces pass)."""
    return torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.l2, fused=True)


def class_weights(fs):
    """Inverse class frequency in the training split (every train dialogue, --valid or not):
    n_train / (n_classes * n_c), with n_c at least 1 for a class that never occurs in it."""
    labels = np.concatenate([fs.dialogues[key].labels for key in fs.train_keys])
    return utils.inverse_class_frequency(labels, fs.n_classes)


# ----------------------------------------------------------------------------- one pass over the data

@dataclass
class Protocol:
    """Where each pass's dialogue order and random numbers come from.

    original (the authors' code, the default): every pass, training or evaluation, starts with
      seed_everything(seed); then one int64 is drawn from torch's global generator (what creating
      a torch DataLoader iterator draws, its base seed); a shuffled training pass then orders its
      dialogues by torch.randperm(n) from the same generator (a SubsetRandomSampler). Dropout
      draws from that generator after it. So every epoch sees the same order and the same
      dropout masks. On CUDA the masks come from the CUDA generator: identical to the original
      on CPU only.
    textbook: nothing is reseeded after the model is built; a shuffled training pass draws a
      fresh order from a numpy generator seeded once per run, and dropout fresh masks.
    """
    name: str
    seed: int
    shuffle: bool                                    # shuffle training passes
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):                         # name: one of config.PROTOCOLS (argparse's choices)
        self.rng = np.random.default_rng(self.seed)

    def pass_order(self, keys, training):
        """Begin a pass over `keys`: set the random state and return the dialogues in this pass's order."""
        keys = list(keys)
        shuffled = training and self.shuffle
        if self.name == 'textbook':
            return [keys[i] for i in self.rng.permutation(len(keys))] if shuffled else keys
        utils.seed_everything(self.seed)
        torch.empty((), dtype=torch.int64).random_()          # the DataLoader iterator's base seed
        return [keys[i] for i in torch.randperm(len(keys)).tolist()] if shuffled else keys


@dataclass
class Pass:
    """What one pass over a list of dialogues produced, in the order the pass saw them."""
    loss: float                 # mean of the batch losses
    batch_losses: list
    labels: np.ndarray
    preds: np.ndarray
    keys: list                  # the dialogues, in pass order
    outputs: dict = None        # with keep_outputs: features_after, features_before, spk_idx, lengths,
                                # dialogue_ids, log_prob


@dataclass
class Run:
    """What every pass over a run's dialogues shares: the model, the data, the loss, the device, the batch size
    and the protocol."""
    net: torch.nn.Module
    fs: dataloader.FeatureSet
    loss_fn: object                  # (log_prob (N, C), labels (N,)) -> loss
    device: str
    batch_size: int
    protocol: Protocol

    @classmethod
    def of(cls, args, net, fs):
        """The Run of the parsed flags: the dataset's loss (custom data with --class-weight: weighted by the
        training split's inverse class frequency) and protocol."""
        weight = class_weights(fs) if args.class_weight and args.Dataset == config.CUSTOM else None
        return cls(net, fs, model.make_loss(args.Dataset, args.device, weight), args.device, args.batch_size,
                   Protocol(args.protocol, args.seed, shuffle=dataset_shuffles(args.Dataset)))


def progress_bar(batches, n_keys, batch_size, desc, show):
    if not show:
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=math.ceil(n_keys / batch_size), desc=desc, leave=False)


def run_pass(run, keys, optimizer=None, progress=False, keep_outputs=False):
    """One pass of a Run over the dialogues `keys`: a training epoch when an optimizer is given, else evaluation."""
    training, net = optimizer is not None, run.net
    net.train(training)
    keys = run.protocol.pass_order(keys, training)
    losses, labels, preds, kept = [], [], [], []
    batches = dataloader.iterate_batches(run.fs, keys, run.batch_size)
    with torch.enable_grad() if training else torch.inference_mode():
        for batch in progress_bar(batches, len(keys), run.batch_size, 'train' if training else 'eval', progress):
            batch = batch.to(run.device)
            out = net(batch.text, batch.audio, batch.visual, batch.qmask, batch.lengths)
            loss = run.loss_fn(out['log_prob'], batch.labels)
            if training:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            losses.append(loss.item())
            labels.append(batch.labels.cpu().numpy())
            preds.append(out['log_prob'].argmax(1).cpu().numpy())
            if keep_outputs:
                kept.append((out, batch.lengths))
    outputs = gather_outputs(kept) if keep_outputs else None
    return Pass(float(np.mean(losses)), losses, np.concatenate(labels), np.concatenate(preds), keys, outputs)


def gather_outputs(kept):
    """Concatenate per-batch model outputs into numpy arrays, one row per utterance."""
    def stack(name):
        parts = [out[name] for out, _ in kept]
        return None if parts[0] is None else torch.cat(parts).detach().cpu().numpy()
    lengths = [n for _, batch_lengths in kept for n in batch_lengths]
    return dict(features_after=stack('features_after'), features_before=stack('features_before'),
                spk_idx=stack('spk_idx'), log_prob=stack('log_prob'), lengths=lengths,
                dialogue_ids=np.repeat(np.arange(len(lengths)), lengths))   # position in pass order, per utterance


def scores(dataset, labels, preds):
    """Accuracy and weighted F1 in percent; for MOSEI also the 3-class sentiment accuracy from the 7 bins."""
    result = dict(acc=utils.accuracy(labels, preds), f1=utils.weighted_f1(labels, preds))
    if dataset == 'MOSEI':
        result['sent3_acc'] = utils.accuracy(utils.sentiment3_from_bins(labels), utils.sentiment3_from_bins(preds))
    return result


def score_block(title, dataset, labels, preds, label_names):
    """utils.report_block, plus the MOSEI 3-class line."""
    block = utils.report_block(title, labels, preds, label_names)
    if dataset == 'MOSEI':
        block += f"3-class sentiment accuracy (from the 7 bins): {scores(dataset, labels, preds)['sent3_acc']:.2f}\n"
    return block
