"""Predict the emotion of every utterance of new conversations with a model trained on your own
(`train.py --Dataset custom`).

    python predict.py RUN_DIR conversations.csv [--out predictions.csv]
    python predict.py RUN_DIR call.vtt --out call.csv          # a meeting transcript, cut from call.mp4 beside it

RUN_DIR is the run folder of `train.py --Dataset custom`: its config.json holds the flags, the model
configuration and the feature folder's dataset.json (label names, speaker scheme, the extraction recipe),
its best_model_custom.pth the weights. The CSV is read as extract_features.py reads one (plain, MELD or
EmoryNLP schema, --ROLE-col flags), or a meeting transcript, .vtt or .srt: one dialogue whose cues are its turns,
cut out of the recording beside it or --recording's. It needs no split, and labels are optional. Its features
are extracted with the recorded recipe: the same encoder (the sha256 of its weights and vocabulary), layers,
pooling, maximum length, audio feature set or speech model, the recordings' decoder, fps, face detector,
descriptor or image model (their sha256) and speaker scheme; a difference is refused, named. Only the
modalities the model uses are extracted.

The output has one row per utterance, in the input's order: dialogue, turn, speaker, text, label (when the
CSV has labels), predicted, and p_<label> for every class (probabilities summing to 1). With labels,
accuracy and weighted F1 are printed.

The work is owndata/prediction.py's (serve.py uses the same library).
"""
import argparse
import os
import sys

import utils
from core import config
from owndata import conversations, prediction, transcripts
from reports import viewer
from utils import UserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('run_dir', help='the run folder of train.py --Dataset custom')
    p.add_argument('csv', help='conversations: a CSV, one row per utterance (labels optional), or a meeting '
                               'transcript, .vtt or .srt (docs/recordings.md)')
    p.add_argument('--out', default='predictions.csv', help='the predictions CSV to write (default predictions.csv)')
    p.add_argument('--html', metavar='FILE', help='also write the conversation viewer of the predictions, one '
                                                  'self-contained HTML page (see viewer.py)')
    p.add_argument('--text-model', help="the run's text encoder, where it is not at the recorded place (its "
                                        "weights must be the same: their sha256 is checked)")
    p.add_argument('--workers', type=config.positive_int, default=os.cpu_count(),
                   help=f'processes decoding recordings and computing their features (default {os.cpu_count()})')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='auto: cuda when available')
    conversations.add_column_flags(p)
    transcripts.add_recording_flag(p)
    args = p.parse_args(argv)
    if args.split_col:
        p.error("--split-col: predict.py predicts every utterance, whatever its split")
    args.device = utils.parsed_device(p, args.device)
    return args


def check_out(out, csv):
    """--out must be a file name that is not the input CSV, in a place where it can be written."""
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a folder; give the predictions CSV's file name, e.g. "
                        f"{os.path.join(out, 'predictions.csv')}.")
    if os.path.exists(out) and os.path.exists(csv) and os.path.samefile(out, csv):
        raise UserError(f"--out {out} is the input CSV {csv}: the predictions would replace the conversations; "
                        "give another file name.")
    utils.check_output_folder(out, '--out', folder=False)


def main(argv=None):
    args = parse_args(argv)
    check_out(args.out, args.csv)
    if args.html:
        viewer.check_page_path(args.html, '--html', others=(args.out, args.csv))
    predictions = prediction.predict(args.run_dir, args.csv, args.text_model, args.device,
                          conversations.columns_from_args(args), args.media_dir, args.workers, args.recording)
    utils.save_csv(args.out, predictions)
    if args.html:
        viewer.write_predictions(args.html, predictions, prediction.read_run(args.run_dir),
                                 f"{args.csv}, model {args.run_dir}")
        print(f"wrote {args.html}: the conversation viewer")
    print(f"wrote {args.out}: {len(predictions)} utterances of {predictions['dialogue'].nunique()} dialogue(s)")
    result = prediction.scores(predictions)
    if result:
        print(f"accuracy: {result['acc']:.2f}  weighted F1: {result['f1']:.2f}  ({len(predictions)} utterances)")


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
