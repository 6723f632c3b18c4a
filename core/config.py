"""The configuration: the paper's values per dataset, the command-line flags, and ModelConfig.

    args = parse_args(argv)                      # flags, paper values filled in, every check done
    cfg = model_config(args, fs.dims, fs.n_classes, fs.n_speakers)    # the frozen ModelConfig of model.MoED

Every impossible flag or combination is refused here, before any work: ModelConfig's own checks
(what the network can be) and the run's (what a training or --testing run can do). Parsing reads no
file: for --Dataset custom, --modals and --directed_edge not given stay None until the loader has read
the feature folder and resolve_extracted fills them in.
"""
import argparse
import math
from dataclasses import asdict, dataclass, fields

from utils import UserError, resolve_device

# The original README's command for each dataset. Without --paper, a flag not given takes the
# IEMOCAP value (the original's defaults); with --paper it takes the value of --Dataset's row.
PAPER = {
    'IEMOCAP': dict(base_model='GRU', dropout=0.5, lr=0.0001, l2=3e-5, batch_size=32, epochs=60, modals='avl',
                    norm='BN', num_L=6, num_K=3, window_spk=10, window_spk_f=-1, window_dir=1, window_dir_f=-1,
                    epsilon2=1.0, epsilon=1.0, use_speaker='bh', multimodal_node='both', graph_type='both',
                    directed_edge='avl', single_edge=''),
    'MELD': dict(base_model='GRU', dropout=0.4, lr=0.0001, l2=3e-5, batch_size=32, epochs=6, modals='avl',
                 norm='BN', num_L=1, num_K=1, window_spk=3, window_spk_f=1, window_dir=8, window_dir_f=6,
                 epsilon2=0.1, epsilon=1.1, use_speaker='i', multimodal_node='both', graph_type='both',
                 directed_edge='avl', single_edge=''),
    'MOSEI': dict(base_model='GRU', dropout=0.4, lr=0.0001, l2=3e-5, batch_size=8, epochs=30, modals='avl',
                  norm='BN', num_L=1, num_K=1, window_spk=11, window_spk_f=1, window_dir=1, window_dir_f=2,
                  epsilon=0.1, epsilon2=0.9, use_speaker='', multimodal_node='both', graph_type='both',
                  directed_edge='avl', single_edge=''),
}
DEFAULTS = PAPER['IEMOCAP']
# Your own conversations (a folder of extract_features.py), with or without --paper: the text path of the
# IEMOCAP configuration (linear layer, then the recurrent encoder) and its optimiser, with one EIGNN and one
# ECGNN layer on MELD's windows, epsilons, speaker embedding and dropout, 12 epochs, --protocol textbook (the
# choices and their numbers: docs/own-data-study.md). --modals and --directed_edge not given are
# the folder's modalities (dataset.json's modals), filled in by resolve_extracted once the folder is loaded.
CUSTOM = 'custom'
PAPER[CUSTOM] = dict(DEFAULTS, dropout=0.4, epochs=12, num_L=1, num_K=1, window_spk=3, window_spk_f=1, window_dir=8,
                     window_dir_f=6, epsilon=1.1, epsilon2=0.1, use_speaker='i')
FROM_EXTRACTED = ('modals', 'directed_edge')
PAPER_D_G = {'IEMOCAP': 512, 'MELD': 1024, 'MOSEI': 1024, CUSTOM: 512}   # hidden size D_g of the models
GRAPH_H = 512                                                  # graph hidden size h
PROTOCOLS = ('original', 'textbook')                           # see training.Protocol

MULTIMODAL_NODES = ('both', 'ECG', 'EIG', '')
GRAPH_TYPES = ('both', 'ECG', 'EIG')
SINGLE_EDGES = ('', 'intra', 'inter')
BASE_MODELS = ('GRU', 'LSTM')
NORMS = ('BN', 'LN', 'LN2', 'none')
GRAPH_BACKENDS = ('dense', 'pyg')   # graph.py's block-dense layers, or core/pyg_graph.py's MessagePassing ones


# The modalities whose features enter model.MoED without a normalisation of their own (linear_a, linear_v): on
# custom data they are standardised per dimension with the training split's statistics (model.Standardise), since
# a user's audio and visual features come on any scale (openSMILE's functionals: values in the thousands beside
# others of 0.01, HOG in [0, 1], a speech model's hidden states). The text has --norm; the paper's datasets keep
# the reference's exact pass.
STANDARDISED = 'av'


def standardised_modalities(dataset, modals):
    """The letters of the modalities a model of this dataset and --modals standardises (STANDARDISED)."""
    return ''.join(m for m in STANDARDISED if m in modals) if dataset == CUSTOM else ''


# ----------------------------------------------------------------------------- the model's configuration

@dataclass(frozen=True)
class ModelConfig:
    """Everything model.MoED is built from: the flags that shape the network and the feature sizes."""
    dataset: str                # decides the text path (MELD's GRU reads the text features directly)
    n_classes: int
    n_speakers: int
    D_text: int
    D_audio: int
    D_visual: int
    D_g: int                    # hidden size of the encoders and of the multimodal node
    graph_h: int = GRAPH_H      # hidden size inside the graphs
    modals: str = 'avl'
    base_model: str = 'GRU'
    dropout: float = 0.5
    norm: str = 'BN'
    num_L: int = 6              # EIGNN layers
    num_K: int = 3              # ECGNN layers
    window_spk: int = 10
    window_spk_f: int = -1
    window_dir: int = 1
    window_dir_f: int = -1
    epsilon: float = 1.0        # ECGNN residual scaling
    epsilon2: float = 1.0       # EIGNN residual scaling
    use_speaker: str = 'bh'
    use_modal: bool = False
    multimodal_node: str = 'both'
    graph_type: str = 'both'
    directed_edge: str = 'avl'
    single_edge: str = ''
    av_using_lstm: bool = False
    graph_backend: str = 'dense'  # how the graphs run (not in the state_dict): GRAPH_BACKENDS
    causal: bool = False        # --causal: past-only graphs and forward-only recurrent encoders
    standardised: str = ''      # modalities standardised with training-split statistics (standardised_modalities)

    def __post_init__(self):
        check_model_flags(asdict(self))
        if not set(self.standardised) <= set(STANDARDISED) & set(self.modals or ''):
            raise UserError(f"standardised={self.standardised!r}: only the used modalities among "
                            f"{STANDARDISED!r} can be standardised")
        if self.D_g % 2:
            raise UserError(f"the hidden size D_g={self.D_g} must be even (bidirectional halves)")
        if 'l' in self.modals and self.text_skips_linear and self.D_text != self.D_g:
            raise UserError(f"MELD's GRU text encoder reads the text features directly: their size "
                            f"{self.D_text} must equal the hidden size D_g={self.D_g}")

    @property
    def padding_free_eval(self):
        """Custom runs evaluate batch-invariantly (model.MoED.padding_free): a served or predicted dialogue's
        outputs must not depend on the dialogues batched with it. The paper's datasets keep the reference's
        padded pass, which the golden numbers pin."""
        return self.dataset == CUSTOM

    @property
    def text_skips_linear(self):
        """MELD's GRU text encoder reads RoBERTa directly (linear_l exists but is skipped)."""
        return self.dataset == 'MELD' and self.base_model == 'GRU'

    @classmethod
    def from_dict(cls, values):
        """A ModelConfig from a dict that may hold other keys too (a golden fixture's, config.json's)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def check_model_flags(flags):
    """Raise UserError for unknown letters or impossible combinations of the model's flags."""
    def bad(flag, why):
        raise UserError(f"--{flag.replace('base_model', 'base-model')}={flags[flag]!r}: {why}")

    for flag, allowed in (('modals', 'avl'), ('directed_edge', 'avl'), ('use_speaker', 'bcdefghi')):
        if flags[flag] is None:         # --Dataset custom's extracted modalities, before the folder is read
            continue
        unknown = sorted(set(flags[flag]) - set(allowed))
        if unknown:
            bad(flag, f"unknown letter(s) {''.join(unknown)}; allowed: {allowed}")
        if len(set(flags[flag])) != len(flags[flag]):
            bad(flag, "a letter is repeated")
    if flags['modals'] == '':
        bad('modals', "at least one of a, v, l is needed")
    for flag, allowed in (('multimodal_node', MULTIMODAL_NODES), ('graph_type', GRAPH_TYPES),
                          ('single_edge', SINGLE_EDGES), ('base_model', BASE_MODELS), ('norm', NORMS),
                          ('graph_backend', GRAPH_BACKENDS)):
        if flags[flag] not in allowed:
            bad(flag, f"must be one of {', '.join(repr(a) for a in allowed)}")
    for flag in ('window_spk', 'window_spk_f', 'window_dir', 'window_dir_f'):
        if int(flags[flag]) != flags[flag] or flags[flag] < -1:
            bad(flag, "a window is an integer >= -1 (-1 = unbounded, 0 = none)")
    for flag in ('num_L', 'num_K'):
        if int(flags[flag]) != flags[flag] or flags[flag] < 0:
            bad(flag, "the number of layers is an integer >= 0")
    if not 0 <= flags['dropout'] < 1:
        bad('dropout', "must be in [0, 1)")
    for flag in ('epsilon', 'epsilon2'):
        if not math.isfinite(flags[flag]):
            bad(flag, "a residual scaling is a finite number")
    if flags.get('causal') and flags['norm'] == 'LN2':
        raise UserError("--causal reads no later turn, but --norm LN2 normalises over the whole dialogue: "
                        "use --norm BN, LN or none")
    if flags.get('causal') and flags['graph_backend'] != 'dense':
        raise UserError("--causal runs with --graph-backend dense (core/pyg_graph.py builds the full graphs only)")
    graph_type, node = flags['graph_type'], flags['multimodal_node']
    if graph_type != 'both' and node not in ('both', graph_type):
        raise UserError(f"--graph_type={graph_type!r} reads the multimodal node of {graph_type}NN only, "
                        f"but --multimodal_node={node!r} leaves it out of that graph: use "
                        f"--multimodal_node='both' or {graph_type!r}")


MODEL_FLAGS = [f.name for f in fields(ModelConfig)
               if f.name not in ('dataset', 'n_classes', 'n_speakers', 'D_text', 'D_audio', 'D_visual', 'D_g',
                                 'graph_h', 'standardised')]



# Flags that leave a model's weights and their meaning alone: a checkpoint or a fine-tuned MoED head fits a model
# built with other values (evaluation has no dropout; both graph backends compute the same model).
WEIGHT_NEUTRAL = ('dropout', 'graph_backend')


def model_differences(recorded, cfg):
    """'--flag X there, Y here' for each field of cfg (a ModelConfig) whose value differs from the recorded model
    configuration's (a dict; fields it lacks are not compared), but the WEIGHT_NEUTRAL ones."""
    flags = {**{f: f'--{f}' for f in MODEL_FLAGS}, 'dataset': '--Dataset', 'base_model': '--base-model'}
    return [f"{flags.get(name, name)} {recorded[name]!r} there, {value!r} here" for name, value in asdict(cfg).items()
            if name in recorded and recorded[name] != value and name not in WEIGHT_NEUTRAL]


def model_config(args, dims, n_classes, n_speakers):
    """The ModelConfig of resolved flags and the data's sizes (dims: D_text, D_audio, D_visual)."""
    return ModelConfig(dataset=args.Dataset, n_classes=n_classes, n_speakers=n_speakers,
                       D_text=dims['D_text'], D_audio=dims['D_audio'], D_visual=dims['D_visual'],
                       D_g=PAPER_D_G[args.Dataset], standardised=standardised_modalities(args.Dataset, args.modals),
                       **{name: getattr(args, name) for name in MODEL_FLAGS})


# ----------------------------------------------------------------------------- the command line

def checked(name, kind, ok, what):
    """An argparse type: text read as kind, refused unless ok(value), the message saying it must be what."""
    def parse(text):
        value = kind(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    parse.__name__ = name       # argparse names the type in its message for text kind cannot read
    return parse


MAX_SEED = 2**32 - 1        # numpy's and sklearn's seeds are unsigned 32-bit integers

positive_int = checked('positive_int', int, lambda v: v >= 1, 'a positive integer')
positive_float = checked('positive_float', float, lambda v: 0 < v < math.inf, 'a positive finite number')
non_negative_int = checked('non_negative_int', int, lambda v: v >= 0, 'an integer >= 0')
non_negative_float = checked('non_negative_float', float, lambda v: 0 <= v < math.inf, 'a finite number >= 0')
seed_value = checked('seed_value', int, lambda v: 0 <= v <= MAX_SEED, f'an integer in 0..{MAX_SEED}')
probability = checked('probability', float, lambda v: 0 <= v < 1, 'in [0, 1)')
open_fraction = checked('open_fraction', float, lambda v: 0 < v < 1, 'strictly between 0 and 1')


def validation_split(text):
    """--valid: 'dev' (the feature folder's own dev split) or a fraction of the training dialogues."""
    if text == 'dev':
        return text
    try:
        return open_fraction(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'dev' or a fraction strictly between 0 and 1, got {text}") from None


# The paper-valued flags: (flag, type, help, extra argparse keywords). Default None, filled in by
# resolve_hyperparameters from PAPER.
HYPERPARAMETERS = [
    ('--base-model', str, 'recurrent text encoder', dict(choices=['GRU', 'LSTM', 'Transformer'])),
    ('--lr', positive_float, 'Adam learning rate', {}),
    ('--l2', non_negative_float, 'Adam weight decay', {}),
    ('--dropout', probability, 'dropout between the two stacked recurrent layers', {}),
    ('--batch-size', positive_int, 'dialogues per batch', {}),
    ('--epochs', positive_int, 'training epochs', {}),
    ('--modals', str, "modalities used: letters of 'avl' (audio, visual, language)", {}),
    ('--norm', str, 'text feature normalisation', dict(choices=list(NORMS))),
    ('--num_L', int, 'number of EIGNN layers', {}),
    ('--num_K', int, 'number of ECGNN layers', {}),
    ('--window_spk', int, 'EIGNN past window (-1 unbounded)', {}),
    ('--window_spk_f', int, 'EIGNN future window (-1 unbounded)', {}),
    ('--window_dir', int, 'ECGNN past window (-1 unbounded)', {}),
    ('--window_dir_f', int, 'ECGNN future window (-1 unbounded)', {}),
    ('--epsilon', float, 'ECGNN residual scaling', {}),
    ('--epsilon2', float, 'EIGNN residual scaling', {}),
    ('--use_speaker', str, 'speaker embedding letters b-e (ECGNN l, a, v, u) and f-i (EIGNN l, a, v, u)', {}),
    ('--multimodal_node', str, 'graphs with a multimodal node', dict(choices=list(MULTIMODAL_NODES))),
    ('--graph_type', str, 'graphs whose multimodal node is read out', dict(choices=list(GRAPH_TYPES))),
    ('--directed_edge', str, 'modalities with a directed edge to the multimodal node',
     dict(aliases=['--direcred_edge'])),
    ('--single_edge', str, "'intra': one edge per intra-utterance modality pair; 'inter': one direction per "
                           "ECGNN pair", dict(choices=list(SINGLE_EDGES))),
]


def flag_dest(flag):
    return flag.lstrip('-').replace('-', '_')


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser that keeps its flags: flags[dest] is the argparse Action add_argument returned (its
    option_strings, nargs, default...), for the scripts that write train.py command lines (experiments.py)."""

    def __init__(self, *args, **kwargs):
        self.flags = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.flags[action.dest] = action
        return action


def build_parser(default_dataset='IEMOCAP', description=None):
    """The original train.py's flags (same spellings) plus this project's own (a FlagParser)."""
    p = FlagParser(description=description)
    for flag, type_, help_, extra in HYPERPARAMETERS:
        extra = dict(extra)
        name = flag_dest(flag)
        custom = (f"; --Dataset {CUSTOM}: the extracted modalities" if name in FROM_EXTRACTED else
                  f"; --Dataset {CUSTOM}: {PAPER[CUSTOM][name]!r}" if PAPER[CUSTOM][name] != DEFAULTS[name] else '')
        p.add_argument(flag, *extra.pop('aliases', ()), dest=flag_dest(flag), type=type_, default=None,
                       help=f"{help_} (default {DEFAULTS[flag_dest(flag)]!r}, the paper's IEMOCAP value; "
                            f"see --paper{custom})", **extra)

    p.add_argument('--Dataset', default=default_dataset, choices=list(PAPER),
                   help=f"dataset; {CUSTOM}: a feature folder of extract_features.py (--data-dir)")
    p.add_argument('--mm_fusion_mthd', default='concat_DHT', choices=['concat_DHT'],
                   help="multimodal fusion (only the paper's concat_DHT)")
    p.add_argument('--multi_modal', action='store_true',
                   help='accepted for compatibility; the modalities used come from --modals')
    p.add_argument('--class-weight', action='store_true',
                   help='custom: weight the NLL loss by inverse class frequency in the training split, '
                        'n_train / (n_classes * n_class); accepted and without effect for the others: IEMOCAP '
                        'always uses the reference class weights, MELD the focal loss, MOSEI plain NLL')
    p.add_argument('--use_residue', action='store_true', help='not supported (never worked in the reference)')
    p.add_argument('--av_using_lstm', action='store_true',
                   help='a 2-layer bidirectional recurrent encoder after linear_a / linear_v too')
    p.add_argument('--use_modal', action='store_true', help='add modality embeddings to the graph inputs')
    p.add_argument('--testing', action='store_true', help='evaluate --checkpoint on the test set, no training')
    p.add_argument('--overhead', action='store_true',
                   help='with --testing: FLOPs, parameters, memory and latency of one 40-utterance dialogue')
    p.add_argument('--graph-backend', dest='graph_backend', default='dense', choices=list(GRAPH_BACKENDS),
                   help="dense (default): graph.py's block-dense layers; pyg: the same layers as torch_geometric "
                        "MessagePassing over core/pyg_graph.py's graphs (same parameters and checkpoints, slower)")
    p.add_argument('--causal', action='store_true',
                   help='a past-only MoED: no utterance reads a later one (the graphs keep only their edges from '
                        'earlier turns, normalised by in-degrees; the recurrent encoders run forward only, hidden '
                        'size D_g, the width of both directions): predictions that never change as turns arrive')
    p.add_argument('--from-scratch', action='store_true',
                   help=f"--Dataset {CUSTOM}: start from the seeded initialisation even where the feature folder "
                        "holds a MoED fine-tuned with its encoder (extract_features.py --finetune-head moed), "
                        "which training otherwise starts from")
    p.add_argument('--no-cuda', action='store_true', help='never use CUDA (same as --device cpu)')

    p.add_argument('--paper', action='store_true',
                   help="hyper-parameters not given take the paper's values for --Dataset (the original README's "
                        "command for it) instead of the IEMOCAP ones")
    p.add_argument('--protocol', choices=list(PROTOCOLS),
                   help="original (default, but textbook for --Dataset custom): the authors' training loop, "
                        "reseeded at every pass, so every epoch sees the same batch order and dropout masks "
                        "(reproduces their runs on CPU); textbook: never reseeded, a fresh order and fresh dropout "
                        "masks every epoch (a deviation from the original)")
    p.add_argument('--seed', type=seed_value, default=67137, help="seed of every random generator (default 67137, "
                                                           "the original's)")
    p.add_argument('--data-dir', default='.', help='folder holding IEMOCAP_features/, MELD_features/, '
                                                   'CMU-MOSEI_features/ (default: the current directory); '
                                                   f'--Dataset {CUSTOM}: the feature folder itself')
    p.add_argument('--synthetic', action='store_true',
                   help='generate (once, cached under --data-dir/synthetic/) simulated features in the real files\' '
                        'format and shape, and use them')
    p.add_argument('--synthetic-scale', type=positive_float, default=1.0,
                   help="--synthetic: number of dialogues relative to the real dataset's (default 1.0)")
    p.add_argument('--valid', type=validation_split, metavar='{FRACTION,dev}',
                   help='hold out this fraction of training dialogues, or (--Dataset custom) validate on the '
                        "feature folder's dev split; the checkpoint is the best-validation epoch and test at that "
                        'epoch is reported too')
    p.add_argument('--checkpoint', metavar='PATH', help='--testing: checkpoint to evaluate '
                                                        '(default ./best_model_<Dataset>.pth)')
    p.add_argument('--out-dir', help='training: run folder (default runs/<Dataset>-<time>-seed<seed>/); '
                                     '--testing: where saved_features/ and saved_outputs/ go (default .)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                   help='auto: CUDA when available (and not --no-cuda)')
    p.add_argument('--quiet', action='store_true', help='no progress bar and no per-epoch lines')
    p.add_argument('--tensorboard', action='store_true',
                   help="training: log every split's loss, accuracy and weighted F1 per epoch to <run folder>/"
                        "tensorboard/ (view with: tensorboard --logdir <run folder or experiment folder>)")
    return p


def check_data_flags(args):
    """Raise UserError for data flags that do not fit --Dataset (before any file is read)."""
    if args.Dataset == CUSTOM and args.synthetic:
        raise UserError(f"--synthetic generates stand-ins of IEMOCAP, MELD and MOSEI; --Dataset {CUSTOM} reads "
                        "your feature folder (--data-dir DIR, written by extract_features.py): drop --synthetic")
    if args.valid == 'dev' and args.Dataset != CUSTOM:
        raise UserError(f"--valid dev validates on the dev split of a feature folder (--Dataset {CUSTOM}); for "
                        f"{args.Dataset} hold out a fraction of the training dialogues instead, e.g. --valid 0.1")


def resolve_hyperparameters(args):
    """Fill every hyper-parameter left unset from the paper table (--Dataset's row with --paper, and always for
    custom data); for custom data, --modals and --directed_edge stay unset: resolve_extracted fills them once
    the folder is read."""
    table = PAPER[args.Dataset] if args.paper or args.Dataset == CUSTOM else DEFAULTS
    if args.protocol is None:
        args.protocol = 'textbook' if args.Dataset == CUSTOM else 'original'
    for name, value in table.items():
        if getattr(args, name) is None and not (args.Dataset == CUSTOM and name in FROM_EXTRACTED):
            setattr(args, name, value)


def resolve_extracted(args, modals):
    """--Dataset custom: --modals and --directed_edge left unset become the feature folder's extracted
    modalities (dataset.json's modals, which the loader read)."""
    for name in FROM_EXTRACTED:
        if getattr(args, name) is None:
            setattr(args, name, modals)


def check_run_flags(args):
    """Raise UserError for flags that never worked and combinations a run cannot do."""
    if args.base_model == 'Transformer':
        raise UserError("--base-model Transformer never worked in the reference implementation and is not "
                        "provided; use GRU (the paper's) or LSTM")
    if args.use_residue:
        raise UserError("--use_residue never worked in the reference implementation and is not provided; drop it")
    if args.overhead and not args.testing:
        raise UserError("--overhead measures a trained checkpoint: use it together with --testing")
    if args.testing and args.tensorboard:
        raise UserError("--tensorboard logs a training run's epochs: it has no effect with --testing")
    if args.testing and args.valid is not None:
        raise UserError("--valid splits the training data: it has no effect with --testing")
    if args.checkpoint and not args.testing:
        raise UserError("--checkpoint names the checkpoint --testing evaluates; a training run writes its "
                        "checkpoint into its run folder (--out-dir)")
    if args.no_cuda and args.device == 'cuda':
        raise UserError("--no-cuda contradicts --device cuda")
    check_model_flags(vars(args))


def parse_args(argv=None, default_dataset='IEMOCAP', description=None):
    """Parse, fill in paper values and check every flag; a problem exits 2, argparse style."""
    parser = build_parser(default_dataset, description)
    args = parser.parse_args(argv)
    try:
        check_data_flags(args)
        resolve_hyperparameters(args)
        check_run_flags(args)
        args.device = resolve_device(args.device, args.no_cuda)
    except UserError as err:
        parser.error(str(err))
    return args
