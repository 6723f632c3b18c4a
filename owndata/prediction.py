"""Predictions of a trained `--Dataset custom` run for new conversations: the run loaded once, the features of
the conversations made with its recorded recipe, one evaluation pass. predict.py is its command line; serving
(serving/service.py) and the load test use it as a library.

    from owndata import prediction
    table = prediction.predict('runs/custom-...', 'talks.csv')     # or a pandas DataFrame of the same columns
    loaded = prediction.load('runs/custom-...')                     # loaded once (serve.py), then per batch:
    table = prediction.predict_conversations(loaded, prediction.read_input(frame, {}))

The run folder is that of `train.py --Dataset custom`: its config.json holds the flags, the model configuration
and the feature folder's dataset.json (label names, speaker scheme, the extraction recipe), its
best_model_custom.pth the weights. Conversations are read as extract_features.py reads them (conversations.py;
meeting transcripts: transcripts.py); no split is needed, labels are optional. Their features are extracted with
the recorded recipe (features.py): the same encoder (the sha256 of its weights and vocabulary), layers, pooling,
maximum length, audio feature set or speech model, the recordings' decoder, fps, face detector, descriptor or
image model (their sha256) and speaker scheme; a difference is refused, named. Only the modalities the model uses
are extracted.

The model runs in eval mode through training.run_pass, as `train.py --testing` does: dialogues in their order of
first appearance, in batches of the run's --batch-size. A custom run's evaluation is batch-invariant
(model.MoED.padding_free), so a dialogue's probabilities are those it has alone, whatever it is batched with
(serve.py batches requests); the run's test CSV gives --testing's predictions.
"""
import os
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

import model
import utils
from core import checkpoints, config, feature_folder, speaker_scheme, training
from owndata import conversations, features, text_encoder, transcripts
from utils import UserError

SKIPPED_IN_RECIPE = ('media_sha256',)       # the new conversations' own files: not part of the recipe to repeat
# config.json's section -> the keys predict.py reads in it
RUN_KEYS = {'flags': ('protocol', 'seed', 'batch_size'), 'model_config': ('modals', 'n_classes', 'n_speakers'),
            'features': ('label_names', 'speakers', 'modalities', 'recipe')}


# ----------------------------------------------------------------------------- the run

def read_run(run_dir):
    """config.json of a custom training run, with the path of its checkpoint checked."""
    path = os.path.join(run_dir, 'config.json')
    run = utils.read_json(path)
    if not isinstance(run, dict) or not isinstance(run.get('flags'), dict) or 'model_config' not in run:
        raise UserError(f"{path} is missing or is not the config.json of train.py: {run_dir} is not a training "
                        "run folder (train.py --Dataset custom --data-dir DIR --out-dir RUN_DIR writes one).")
    dataset = run['flags'].get('Dataset')
    if dataset != config.CUSTOM or 'features' not in run:
        raise UserError(f"{run_dir} is a training run on {dataset}: predict.py needs a run of train.py --Dataset "
                        f"{config.CUSTOM}, whose config.json records the feature recipe to repeat.")
    missing = [f'{section}.{key}' for section, keys in RUN_KEYS.items() for key in keys
               if not isinstance(run[section], dict) or key not in run[section]]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}, which predict.py reads: it was edited, or written by "
                        "another version of train.py. Train the run again.")
    checkpoint = os.path.join(run_dir, f'best_model_{config.CUSTOM}.pth')
    if not os.path.isfile(checkpoint):
        raise UserError(f"{checkpoint} does not exist: the run in {run_dir} saved no checkpoint (no epoch finished?).")
    return run


def note_unfinished(run_dir):
    """A note on stderr when the run did not finish: its checkpoint is the best of the epochs done."""
    result = utils.read_json(os.path.join(run_dir, 'result.json'))
    if not isinstance(result, dict):
        print(f"note: {run_dir} has no result.json: its training is still going or was killed; its checkpoint is "
              "the best epoch so far.", file=sys.stderr)
    elif result.get('status') != 'finished':
        print(f"note: the training in {run_dir} was {result.get('status')} after {result.get('epochs_done')} of "
              f"{result.get('epochs')} epochs; its checkpoint is the best of those.", file=sys.stderr)


@dataclass
class RunInfo:
    """What a custom run is, read and checked (describe): its config.json and the modalities its model uses
    (features.EXTRACTORS names); no model (serving/replicas.py's front end, whose replicas hold the models)."""
    run_dir: str
    run: dict
    modalities: list

    @property
    def label_names(self):
        return list(self.run['features']['label_names'])

    @property
    def causal(self):
        """Whether no prediction reads a later turn (train.py --causal): a turn's prediction never changes."""
        return bool(self.run['model_config'].get('causal', False))


@dataclass
class LoadedRun(RunInfo):
    """A custom run loaded once (load): its model in eval mode and its text encoder (None when the model reads
    no text), beside what RunInfo says."""
    net: model.MoED = None
    encoder: object = None
    device: str = 'cpu'
    workers: int = None     # processes for the recordings' features (media_jobs.py; None: the cores)
    progress: bool = True   # progress bars of the feature extraction (a server shows none)
    work_dir: str = None    # where the recordings' features are cached per utterance (serve.py's; None: nowhere)


def describe(run_dir):
    """The RunInfo of RUN_DIR (a folder that is not a custom run is a UserError)."""
    run = read_run(run_dir)
    return RunInfo(run_dir, run, model_modalities(run))


def load(run_dir, text_model=None, device='cpu', workers=None, progress=True):
    """The run of RUN_DIR, loaded for predicting: a folder that is not a custom run, a missing checkpoint or
    another encoder than the recorded one is a UserError, before any conversation is read."""
    info = describe(run_dir)
    encoder = load_same_encoder(info.run['features'], text_model, device) if 'text' in info.modalities else None
    return LoadedRun(run_dir, info.run, info.modalities, net=load_model(info.run, run_dir, device), encoder=encoder,
                     device=device, workers=workers, progress=progress)


def model_modalities(run):
    """The modalities the run's model uses, in features.EXTRACTORS order (as extract_features.py goes)."""
    return [m for m in features.EXTRACTORS if feature_folder.MODALITY_LETTERS[m] in run['model_config']['modals']]


def load_model(run, run_dir, device):
    """MoED of the run's model configuration with its checkpoint's weights, in eval mode."""
    net = model.MoED(config.ModelConfig.from_dict(run['model_config'])).to(device)
    checkpoints.load_checkpoint(net, os.path.join(run_dir, f'best_model_{config.CUSTOM}.pth'), device)
    return net.eval()


# ----------------------------------------------------------------------------- the conversations

def read_input(data, columns, media_dirs=None, recordings=None):
    """The conversations of a CSV or transcript path or a DataFrame, every row in the 'test' split; recordings:
    --recording's (a transcript's recording, when it is not the one beside it)."""
    if isinstance(data, pd.DataFrame):
        return conversations.read_dataframe(data, 'dataframe', columns, split='test')
    return conversations.read_conversations([data], columns, split='test', media_dirs=media_dirs,
                                            recordings=recordings)


MEDIA_ROLES = ('audio', 'video', 'start', 'end')


def conversations_of(dialogues, name='request'):
    """Dialogues of turns already checked (serving/service.py: objects with a speaker, a text and, for a run
    that reads recordings, the paths of its audio and video and its start and end) as the Conversations of one
    input, dialogue ids 0, 1, ... in the 'test' split: the model's input, without writing and reading them again
    as a CSV."""
    rows = [dict(key=f'{name}:{d}', file=name, line=line, dialogue=str(d), turn=t, speaker=turn.speaker,
                 text=turn.text, split='test', **{role: getattr(turn, role, None) for role in MEDIA_ROLES})
            for line, (d, t, turn) in enumerate((d, t, turn) for d, turns in enumerate(dialogues)
                                                for t, turn in enumerate(turns))]
    given = {role for row in rows for role in MEDIA_ROLES if row[role] is not None}
    roles = {role: role if role in conversations.REQUIRED_ROLES or role in given else None
             for role in conversations.ROLES}
    source = conversations.InputFile(path=name, name=name, sha256='', schema='request', columns=roles,
                                     split_from='given')
    return conversations.Conversations(pd.DataFrame(rows, columns=list(conversations.TABLE_COLUMNS)), [source])


def label_indices(table, label_names):
    """Each row's label index (-1 where the CSV has no labels); a label the model never saw is a UserError."""
    if table['label'].isna().all():
        return np.full(len(table), -1)
    index = {name: i for i, name in enumerate(label_names)}
    unseen = np.flatnonzero(~table['label'].isin(index))
    if len(unseen):
        raise UserError(f"{features.where(table, unseen[0])}: the label {table['label'].iat[unseen[0]]!r} was never "
                        f"seen by the model; it knows {', '.join(label_names)}.")
    return table['label'].map(index).to_numpy()


# ----------------------------------------------------------------------------- the features, as recorded

def encoder_name(meta, text_model):
    """--text-model when given, else the recorded encoder (this installation's copy of the default package's)."""
    if text_model:
        return text_model
    recorded = meta['modalities']['text']['encoder']
    return text_encoder.DEFAULT_TEXT_MODEL if 'package' in recorded else recorded['text_model']


def repeat_recipe(meta, table, modalities, encoder, device, workers=None, progress=True, work_dir=None):
    """(settings, modality -> recipe) for these conversations, checked against the recorded recipe."""
    recorded = meta['recipe']['modalities']
    settings = features.ExtractionSettings.from_recipe(recorded, device, workers, progress, work_dir)
    recipes = {m: features.EXTRACTORS[m][0](settings, encoder, table) for m in modalities}
    for modality, recipe in recipes.items():
        for key, value in recipe.items():
            if key not in SKIPPED_IN_RECIPE and recorded[modality].get(key) != value:
                raise UserError(f"the run's {modality} features were made with {key} {recorded[modality].get(key)!r}, "
                                f"but here they would be made with {value!r}; the model only understands features "
                                "made its way (same libraries and settings as for training).")
    scheme = meta['speakers']['scheme']
    if scheme != 'party' and not scheme.startswith('top-'):
        raise UserError(f"the run's speaker scheme {scheme!r} is unknown to this predict.py.")
    return settings, recipes


def load_same_encoder(meta, text_model, device):
    """The run's text encoder (--text-model, or where it was): its weights' sha256 must be the recorded one."""
    name = encoder_name(meta, text_model)
    if not text_model and os.path.isabs(name) and not os.path.isdir(name):
        raise UserError(f"the run's text encoder, the folder {name}, is not there any more: give --text-model the "
                        "folder it is in now (its weights' sha256 is checked).")
    encoder = text_encoder.load_encoder(name, device)
    expected = meta['recipe']['modalities']['text']['encoder_sha256']
    recorded = meta['modalities']['text']['encoder']['text_model']
    if encoder.sha256 != expected:
        raise UserError(f"the text encoder {name} is not the one the run's features were made with: its weights and "
                        f"vocabulary have sha256 {encoder.sha256}, the run's ({recorded}) {expected}. Give "
                        "--text-model the run's encoder.")
    return encoder


def feature_set(loaded, conv):
    """The conversations as a FeatureSet for the run's model: every dialogue in test_keys, in order."""
    run, encoder = loaded.run, loaded.encoder
    meta, cfg = run['features'], run['model_config']
    table = conv.table.assign(path=conv.table['file'].map({f.name: f.path for f in conv.files}))
    labels = label_indices(table, meta['label_names'])
    # in features.EXTRACTORS order, as extract_features.py goes: a bad .npy or wav stops it before the text pass
    for modality in loaded.modalities:
        if features.media_columns(conv.files[0].columns)[modality] is None:
            path = conv.files[0].path
            if transcripts.is_transcript(path):
                raise UserError(f"the model uses {modality}, but the recording of {path} is an audio file: give the "
                                "call's video (--recording FILE).")
            raise UserError(f"{path} has no {modality} column, but the model uses {modality}: give each utterance "
                            f"its {'audio or video' if modality == 'audio' else 'video or .npy'} path.")
    settings, recipes = repeat_recipe(meta, table, loaded.modalities, encoder, loaded.device, loaded.workers,
                                       loaded.progress, loaded.work_dir)
    dims = {m: cfg[f'D_{m}'] for m in recipes}
    arrays, _, _ = features.extract_modalities(settings, encoder, table, recipes, dims)
    speakers = speaker_scheme.speaker_indices(table, meta['speakers'], cfg['n_speakers']).astype(np.int64)
    fs = feature_folder.conversation_set(table['key'].to_numpy(), speakers, np.maximum(labels, 0), arrays,
                                         meta['label_names'], cfg['n_classes'], cfg['n_speakers'],
                                         [f.path for f in conv.files])
    return fs, table, labels


# ----------------------------------------------------------------------------- predicting

def predict(run_dir, data, text_model=None, device='cpu', columns=None, media_dirs=None, workers=None,
            recordings=None):
    """One row per utterance of `data` (a CSV or transcript path, or a DataFrame), in its order: dialogue, turn,
    speaker, text, label (if given), predicted, p_<label> per class. columns: role -> column name
    (conversations.py); recordings: --recording's."""
    read_run(run_dir)                  # a folder that is not a run is named before the CSV is read
    conv = read_input(data, columns or {}, media_dirs, recordings)
    predictions = predict_conversations(load(run_dir, text_model, device, workers), conv)
    note_unfinished(run_dir)           # after the work: an error stays the one paragraph on stderr
    return predictions


def predict_conversations(loaded, conv, batch_size=None):
    """predict()'s table for conversations (read_input's) with a loaded run: its features extracted with the
    recorded recipe, then one evaluation pass in batches of batch_size dialogues (default the run's
    --batch-size; a custom run's evaluation does not depend on it)."""
    table, labels, probabilities = predicted(loaded, conv, batch_size)
    names = loaded.label_names
    out = table[['dialogue', 'turn', 'speaker', 'text']].copy()
    if (labels >= 0).all():
        out['label'] = table['label']
    out['predicted'] = [names[i] for i in probabilities.argmax(1)]
    for i, name in enumerate(names):
        out[f'p_{name}'] = probabilities[:, i]
    return out.iloc[np.argsort(table['line'].to_numpy(), kind='stable')].reset_index(drop=True)


def predicted(loaded, conv, batch_size=None):
    """(the conversations' table, its rows' label indices (-1: none), the probabilities (rows, classes)), rows
    dialogue after dialogue in order of first appearance, each in turn order (a served request's order)."""
    fs, table, labels = feature_set(loaded, conv)
    flags = loaded.run['flags']
    # an evaluation draws no random number: no protocol reseeds the global generators here (a server's batches)
    protocol = training.Protocol('textbook', flags['seed'], shuffle=False)
    run = training.Run(loaded.net, fs, model.make_loss(config.CUSTOM), loaded.device,
                       batch_size or flags['batch_size'], protocol)
    result = training.run_pass(run, fs.test_keys, keep_outputs=True)
    assert result.keys == fs.test_keys        # table order: dialogue after dialogue, each in turn order
    return table, labels, np.exp(result.outputs['log_prob'].astype(np.float64))


def scores(predictions):
    """Accuracy and weighted F1 (percent) of a predict() table with labels; None without."""
    if 'label' not in predictions:
        return None
    return dict(acc=utils.accuracy(predictions['label'], predictions['predicted']),
                f1=utils.weighted_f1(predictions['label'], predictions['predicted']))
