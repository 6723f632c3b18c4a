"""Conversation CSVs (one row per utterance) read into one validated table.

    conv = read_conversations(['train.csv', 'dev.csv', 'test.csv'], columns_from_args(args))
    conv.table      # pandas DataFrame, one row per utterance (columns: TABLE_COLUMNS)
    conv.files      # per input file: path, sha256, schema, the column of each role, where its split came from
    conv = read_dataframe(frame, 'notebook', split='test')     # a DataFrame as if it were the CSV 'notebook'
    conv = read_conversations(['call.vtt'], split='test')     # a meeting transcript (owndata/transcripts.py)

Schemas, detected from each file's header (the first whose dialogue, turn, speaker and text columns
are all there):

    plain     dialogue, turn, speaker, text [, emotion, split, audio, visual, video, start, end]
    MELD      Dialogue_ID, Utterance_ID, Speaker, Utterance [, Emotion]     (one file per split)
    EmoryNLP  Season, Episode, Scene_ID, Utterance_ID, Speaker, Utterance [, Emotion]

A --ROLE-col flag (add_column_flags) names a role's column for every file and wins over the schema;
--dialogue-col takes several comma-separated columns when a dialogue is identified by several
(EmoryNLP: a scene is the triple Season, Episode, Scene_ID; its id here reads '1/15/3').

Rules:
- Dialogue ids are scoped by file: the table's `key` is '<file name>:<dialogue id>', so dialogue 0
  of train.csv and dialogue 0 of test.csv are two conversations (two inputs may not share a name).
- Within a dialogue, rows come in increasing turn order (gaps allowed) and a turn appears once.
- A file without a split column takes its split from its name: the word train, dev / valid /
  validation, or test, not inside a longer word ('latest.csv' says nothing). Splits are train,
  dev, test; a split column may say valid or validation for dev. A dialogue has one split.
  `split=` gives every row that split instead (conversations to predict: no split is needed).
- A speaker written as a Python list literal (EmoryNLP's "['Monica Geller']") is its first name;
  the few EmoryNLP rows that name several speakers keep the first one.
- Labels (emotion) are optional: a file without the column gets none (prediction input); with the
  column, every row needs one. Two labels that differ only in case (joy, Joy) are refused as a typo.
  audio / video / visual hold a path per utterance, relative to the CSV's folder unless absolute: audio any
  file FFmpeg reads (wav, flac, mp3, m4a, or a video's sound track), video any container FFmpeg reads (mp4,
  mkv, avi, webm: its frames give the visual features and, without an audio column, its sound the audio
  ones), visual a .npy vector. start / end (seconds, or hh:mm:ss,mmm as MELD's StartTime / EndTime) cut the
  utterance out of a longer recording; empty: from the start / to the end. `media_dirs=` finds each
  utterance's video as DIR/dia{dialogue}_utt{turn}.mp4 (MELD's raw clips; one folder for all the files or
  one per file). Every recording is probed here (owndata/media.py: its headers, nothing decoded): a missing or
  unreadable file, a missing stream, or a segment outside it is reported before any extraction.
- A .vtt or .srt input is a meeting transcript (owndata/transcripts.py): one dialogue, read as the plain-schema CSV its
  cues make (with the recording beside it or `recordings=`, and the labels of its labels CSV) and checked as a
  CSV's rows, each line its cue's timing line; its split from its file name, else its folder's (train/a.vtt).
- Every problem is a UserError naming the file, the line (1 = the header) and the dialogue.
"""
import ast
import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass

import pandas as pd

from owndata import media, transcripts
from utils import UserError, visible

REQUIRED_ROLES = ('dialogue', 'turn', 'speaker', 'text')
OPTIONAL_ROLES = ('label', 'split', 'audio', 'visual', 'video', 'start', 'end')
ROLES = REQUIRED_ROLES + OPTIONAL_ROLES
ROLE_HELP = {
    'dialogue': 'the dialogue id (several comma-separated columns when it takes several)',
    'turn': 'the integer position of an utterance in its dialogue',
    'speaker': "the speaker's name",
    'text': 'the utterance text',
    'label': 'the emotion label (optional)',
    'split': 'train, dev (or valid) or test (optional: else taken from the file name)',
    'audio': 'an audio file (wav, flac, mp3, a video, ...) per utterance (optional)',
    'visual': 'a .npy vector per utterance (optional)',
    'video': 'a video file (mp4, mkv, avi, webm, ...) per utterance (optional)',
    'start': "the utterance's start in its recording, seconds or hh:mm:ss,mmm (optional)",
    'end': "the utterance's end in its recording, seconds or hh:mm:ss,mmm (optional)",
}
MELD_CLIP = 'dia{dialogue}_utt{turn}.mp4'      # a clip of MELD's raw release, in the folder of --media-dir

# schema name -> role -> column(s); the dialogue role is a tuple of columns, None = the schema has none.
SCHEMAS = {
    'plain': dict(dialogue=('dialogue',), turn='turn', speaker='speaker', text='text', label='emotion',
                  split='split', audio='audio', visual='visual', video='video', start='start', end='end'),
    'MELD': dict(dialogue=('Dialogue_ID',), turn='Utterance_ID', speaker='Speaker', text='Utterance',
                 label='Emotion', split=None, audio=None, visual=None, video=None, start=None, end=None),
    'EmoryNLP': dict(dialogue=('Season', 'Episode', 'Scene_ID'), turn='Utterance_ID', speaker='Speaker',
                     text='Utterance', label='Emotion', split=None, audio=None, visual=None, video=None, start=None,
                     end=None),
}

SPLITS = ('train', 'dev', 'test')
SPLIT_WORDS = {'train': 'train', 'dev': 'dev', 'valid': 'dev', 'validation': 'dev', 'test': 'test'}
SPLIT_IN_NAME = re.compile(r'(?<![a-z])(train|dev|validation|valid|test)(?![a-z])')

TABLE_COLUMNS = ('key', 'file', 'line', 'dialogue', 'turn', 'speaker', 'text', 'label', 'split', 'audio', 'visual',
                 'video', 'start', 'end')


@dataclass
class InputFile:
    path: str
    name: str               # the base name, which scopes the file's dialogue ids
    sha256: str
    schema: str             # the detected schema, or 'flags' when the flags named every required column
    columns: dict           # role -> column(s) used; absent roles are None
    split_from: str         # 'column', 'file name' or 'given'


@dataclass
class Conversations:
    table: pd.DataFrame     # one row per utterance: TABLE_COLUMNS, ordered by split, file, dialogue, turn
    files: list             # InputFile per input, in the given order


# ----------------------------------------------------------------------------- flags

def add_column_flags(parser):
    """The --ROLE-col flags that map a CSV's columns to roles (default: detected from the header)."""
    group = parser.add_argument_group('CSV columns (default: detected from the header: plain, MELD or EmoryNLP)')
    for role in ROLES:
        group.add_argument(f'--{role}-col', metavar='NAME', help=f'column of {ROLE_HELP[role]}')
    group.add_argument('--media-dir', nargs='+', metavar='DIR',
                       help=f"each utterance's video is DIR/{MELD_CLIP} (MELD's raw clips), for CSVs without a video "
                            "column: one folder for every CSV, or one per CSV in their order")


def columns_from_args(args):
    """role -> column(s) named by the --ROLE-col flags that were given."""
    overrides = {role: getattr(args, f'{role}_col') for role in ROLES if getattr(args, f'{role}_col')}
    if 'dialogue' in overrides:
        overrides['dialogue'] = tuple(name.strip() for name in overrides['dialogue'].split(','))
    return overrides


# ----------------------------------------------------------------------------- reading

def read_conversations(paths, overrides=None, split=None, media_dirs=None, recordings=None):
    """Read and validate the CSVs and transcripts into one table (see the module docstring for the rules);
    media_dirs: the folders of --media-dir (one for all files, or one per file); recordings: those of --recording
    (one per transcript)."""
    overrides = overrides or {}
    paths = [os.fspath(path) for path in paths]
    if media_dirs and len(media_dirs) not in (1, len(paths)):
        raise UserError(f"--media-dir names {len(media_dirs)} folders for {len(paths)} CSV files: give one folder "
                        "for all of them, or one per CSV in their order.")
    names = [os.path.basename(path) for path in paths]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise UserError(f"{paths[i]} and {paths[names.index(name)]} share the file name {name}, which scopes "
                            "their dialogue ids; give each input file its own name.")
    recording_of = transcripts.recordings_of(paths, recordings, media_dirs)
    files, tables = [], []
    probes = {}
    for i, path in enumerate(paths):
        media_dir = media_dirs[i if len(media_dirs) > 1 else 0] if media_dirs else None
        input_file, rows = read_file(path, read_bytes(path), overrides, split, media_dir, probes,
                                     recording_of.get(path))
        files.append(input_file)
        tables.append(rows)
    table = pd.DataFrame([row for rows in tables for row in rows], columns=list(TABLE_COLUMNS))
    check_label_spellings(table, dict(zip(names, paths)))
    return Conversations(table=ordered(table, [f.name for f in files]), files=files)


def read_dataframe(frame, name, overrides=None, split=None):
    """A pandas DataFrame read as if it were the CSV file `name` in the current directory (its line numbers:
    the row's position + 2, as in the CSV the frame would write)."""
    input_file, rows = read_file(name, frame.to_csv(index=False).encode('utf-8'), overrides or {}, split)
    input_file.path = name                  # no file on disk
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    check_label_spellings(table, {name: name})
    return Conversations(table=ordered(table, [input_file.name]), files=[input_file])


def read_file(path, data, overrides, split=None, media_dir=None, probes=None, recording=None):
    """One CSV's or transcript's bytes: (InputFile, list of row dicts with TABLE_COLUMNS), every row validated;
    probes: path -> media.MediaInfo of the recordings probed so far (one recording serves many rows); recording: a
    transcript's (None: the one beside it)."""
    spoken = transcripts.is_transcript(path)
    header, records, data = (transcript_table(path, data, overrides.get('label'), recording) if spoken
                             else (*parse_csv(path, decode_utf8(path, data)), data))
    schema, columns = detect_columns(path, header, {} if spoken else overrides)
    if columns['video'] and columns['visual']:
        raise UserError(f"{path} has both a video column ({columns['video']}) and a visual column "
                        f"({columns['visual']}): the visual features come from the recordings' frames or from the "
                        ".npy vectors, not both; drop one (or map another name with --video-col / --visual-col).")
    if media_dir and (columns['video'] or columns['visual']):
        raise UserError(f"--media-dir finds {MELD_CLIP} for CSVs without a video column, but {path} has a "
                        f"{'video' if columns['video'] else 'visual'} column; drop one of the two.")
    if media_dir and not os.path.isdir(media_dir):
        raise UserError(f"--media-dir {media_dir} is not a folder.")
    split_from = 'given' if split else 'column' if columns['split'] else 'file name'
    file_split = split or (None if columns['split'] else split_from_name(path, folder=spoken))
    index = {name: i for i, name in enumerate(header)}
    name = os.path.basename(path)
    folder = os.path.dirname(os.path.abspath(path))
    rows, probes = [], {} if probes is None else probes
    for line, cells in records:
        value = {role: cell_of(cells, index, columns[role]) for role in ROLES if role != 'dialogue'}
        dialogue = '/'.join(cell_of(cells, index, column).strip() for column in columns['dialogue'])
        where = f"{path}, line {line} (dialogue {dialogue or '<empty>'})"
        if not dialogue:
            raise UserError(f"{where}: the dialogue id ({', '.join(columns['dialogue'])}) is empty.")
        turn = parse_turn(where, value['turn'], columns['turn'])
        if media_dir:
            value['video'] = os.path.join(os.path.abspath(media_dir), MELD_CLIP.format(dialogue=dialogue, turn=turn))
        media = recordings(where, folder, value, columns, bool(media_dir), probes)
        rows.append(dict(
            key=f'{name}:{dialogue}', file=name, line=line, dialogue=dialogue,
            turn=turn,
            speaker=parse_speaker(where, value['speaker'], columns['speaker']),
            text=check_text(where, value['text'], columns['text']),
            label=check_label(where, value['label'], columns['label']),
            split=file_split or parse_split(where, value['split'], columns['split']),
            visual=check_npy(where, media_path(folder, value['visual'])) if columns['visual'] else None,
            **media))
    if not rows:
        raise UserError(f"{path} has a header but no utterances.")
    check_dialogues(path, rows)
    if media_dir:
        columns = {**columns, 'video': f'--media-dir {os.path.join(os.path.abspath(media_dir), MELD_CLIP)}'}
    return InputFile(path=os.path.abspath(path), name=name, sha256=hashlib.sha256(data).hexdigest(),
                     schema=transcripts.format_name(path) if spoken else schema, columns=columns,
                     split_from=split_from), rows


def read_bytes(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist.") from None
    except OSError as err:
        raise UserError(f"{path} could not be read: {err.strerror}.") from None


def decode_utf8(path, data):
    """The file's text (a UTF-8 byte-order mark is dropped); anything but UTF-8 is refused."""
    try:
        return data.decode('utf-8-sig')
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b'\n') + 1
        raise UserError(f"{path}, line {line}: the file is not UTF-8 (byte 0x{data[err.start]:02x} at offset "
                        f"{err.start} is not valid UTF-8); save it as UTF-8 (from Excel: 'CSV UTF-8').") from None


def transcript_table(path, data, label_column, recording):
    """(header, records, the bytes hashed) of a meeting transcript: the plain-schema CSV its cues make
    (owndata/transcripts.py), with the labels of its labels CSV when there is one (whose bytes are hashed after
    its own)."""
    text, sidecar, table = decode_utf8(path, data), transcripts.labels_path(path), None
    if os.path.isfile(sidecar):
        labels = read_bytes(sidecar)
        table, data = (sidecar, *parse_csv(sidecar, decode_utf8(sidecar, labels))), data + labels
    return (*transcripts.as_table(path, text, recording, table, label_column or transcripts.LABEL), data)


def parse_csv(path, text):
    """(header, [(line number where the record starts, cells)]), blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=''))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise UserError(f"{path} is empty (no header line).") from None
    except csv.Error as err:
        raise UserError(f"{path}, line 1: the header is not valid CSV: {err}.") from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{path}, line 1: the header names the column {repeated[0]!r} twice.")
    records, start = [], reader.line_num + 1
    try:
        for cells in reader:
            if cells and any(cell.strip() for cell in cells):
                if len(cells) != len(header):
                    raise UserError(f"{path}, line {start}: the row has {len(cells)} fields but the header has "
                                    f"{len(header)} ({', '.join(header)}); a text with commas needs quotes.")
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as err:
        raise UserError(f"{path}, line {start}: not valid CSV: {err}.") from None
    return header, records


def detect_columns(path, header, overrides):
    """(schema name, role -> column(s)) for this header: the first schema whose required columns are
    present, with the flags' columns substituted; a flag naming a missing column is an error."""
    present = set(header)
    for role, column in overrides.items():
        missing = [name for name in as_tuple(column) if name not in present]
        if missing:
            raise UserError(f"{path}: --{role}-col names the column {missing[0]!r}, which the file does not have; "
                            f"columns found: {', '.join(header)}.")
    candidates = [(name, {**schema, **overrides}) for name, schema in SCHEMAS.items()]
    for name, columns in candidates:
        if all(required_present(columns[role], present) for role in REQUIRED_ROLES):
            optional = {role: columns[role] if role in overrides or columns[role] in present else None
                        for role in OPTIONAL_ROLES}
            schema = name if any(role not in overrides for role in REQUIRED_ROLES) else 'flags'
            return schema, {**{role: columns[role] for role in REQUIRED_ROLES}, **optional}
    name, columns = max(candidates, key=lambda c: sum(name in present for name in schema_columns(c[1])))
    missing = [role for role in REQUIRED_ROLES if not required_present(columns[role], present)]
    wanted = '; '.join(f"{role} (looked for {', '.join(as_tuple(columns[role]))}{lacking(columns[role], present)}; "
                       f"map it with --{role}-col NAME)" for role in missing)
    raise UserError(f"{path}: no column for the {', '.join(missing)} of each utterance. The closest known schema "
                    f"is {name}, and the file lacks: {wanted}. Columns found: {', '.join(header)}."
                    f"{separator_hint(header)}")


def schema_columns(columns):
    """Every column name a schema (role -> column(s)) looks for."""
    return [name for role in ROLES if columns[role] for name in as_tuple(columns[role])]


def lacking(column, present):
    """', without B' for a role of several columns of which only some are present ('' otherwise)."""
    absent = [name for name in as_tuple(column) if name not in present]
    return f", without {', '.join(absent)}" if len(absent) < len(as_tuple(column)) else ''


def separator_hint(header):
    """A sentence for a header read as one column because the file is separated by something else than commas."""
    found = [sep for sep in (';', '\t', '|') if len(header) == 1 and sep in header[0]]
    if not found:
        return ''
    return (f" The header is one column holding {found[0]!r}: the file seems separated by {found[0]!r}, not commas; "
            "save it as comma-separated CSV (from Excel: 'CSV UTF-8 (Comma delimited)').")


def as_tuple(column):
    return column if isinstance(column, tuple) else (column,)


def required_present(column, present):
    return column is not None and all(name in present for name in as_tuple(column))


def cell_of(cells, index, column):
    return cells[index[column]] if column else ''


# ----------------------------------------------------------------------------- one cell

def parse_turn(where, cell, column):
    try:
        return int(cell.strip())
    except ValueError:
        raise UserError(f"{where}: the turn ({column}) {cell!r} is not an integer.") from None


def parse_speaker(where, cell, column):
    """The speaker's name; a Python list literal such as "['Monica Geller']" gives its first name."""
    speaker = cell.strip()
    if speaker.startswith('[') and speaker.endswith(']'):
        try:
            names = ast.literal_eval(speaker)
        except (ValueError, SyntaxError):
            raise UserError(f"{where}: the speaker ({column}) {cell!r} looks like a list but is not one.") from None
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise UserError(f"{where}: the speaker ({column}) {cell!r} is not a list of names.")
        speaker = names[0].strip() if names else ''
    if not speaker:
        raise UserError(f"{where}: the speaker ({column}) is empty.")
    return speaker


def check_text(where, cell, column):
    """The text, which needs one visible character (a zero-width space or a byte-order mark alone is empty)."""
    if not visible(cell):
        invisible = ' (only invisible characters)' if cell.strip() else ''
        raise UserError(f"{where}: the text ({column}) is empty{invisible}; every utterance needs its words.")
    return cell


def check_label(where, cell, column):
    if not column:
        return None
    if not cell.strip():
        raise UserError(f"{where}: the label ({column}) is empty; a file with a label column needs a label on "
                        "every row (drop the column for unlabelled conversations).")
    return cell.strip()


def parse_split(where, cell, column):
    word = cell.strip().lower()
    if word not in SPLIT_WORDS:
        raise UserError(f"{where}: unknown split {cell!r} in {column}; use train, dev (or valid) or test.")
    return SPLIT_WORDS[word]


def split_from_name(path, folder=False):
    """The split named by the file name (train, dev/valid/validation, test), for a file without a split column;
    with folder (a transcript), else by the name of its folder."""
    names = [os.path.splitext(os.path.basename(path))[0], os.path.basename(os.path.dirname(os.path.abspath(path)))]
    found = next(filter(None, (sorted({SPLIT_WORDS[word] for word in SPLIT_IN_NAME.findall(name.lower())})
                               for name in names[:1 + folder])), [])
    if len(found) != 1:
        says = f"names several splits ({', '.join(found)})" if found else "names no split"
        fix = 'or in the name of its folder' if folder else 'or add a split column (--split-col NAME)'
        raise UserError(f"{path} has no split column and its file name{' (nor its folder)' * (folder and not found)} "
                        f"{says}. Put exactly one of train, dev (or valid) and test in the file name, {fix}.")
    return found[0]


def media_path(folder, cell):
    """A wav / .npy path from its cell, relative to the CSV's folder; '' when the cell is empty."""
    cell = cell.strip()
    return os.path.normpath(os.path.join(folder, os.path.expanduser(cell))) if cell else ''


def recordings(where, folder, value, columns, media_dir, probes):
    """The row's audio and video paths (without an audio column, the video's sound is the audio) and its segment
    (start, end; None: from the start / to the end), each recording probed (owndata/media.py) against the segment."""
    video = media_path(folder, value['video']) if columns['video'] else value['video'] if media_dir else None
    audio = media_path(folder, value['audio']) if columns['audio'] else video
    start, end = (parse_segment_time(where, value[role], columns[role], role) for role in ('start', 'end'))
    for path, kind in ((audio, 'audio'), (video, 'video')):
        if path is not None:
            check_recording(where, path, kind, start, end, probes)
    return dict(audio=audio, video=video, start=start, end=end)


def parse_segment_time(where, cell, column, role):
    if not column:
        return None
    try:
        return media.parse_time(cell)
    except ValueError as err:
        raise UserError(f"{where}: the {role} ({column}) {err}.") from None


def check_recording(where, path, kind, start, end, probes):
    """A UserError unless the recording at path exists, FFmpeg reads it and it holds kind's stream over the
    segment; probes: path -> media.MediaInfo, each recording probed once."""
    if not path:
        other = ' (or other audio file)' if kind == 'audio' else ''
        raise UserError(f"{where}: the {kind} column has no {'wav' if kind == 'audio' else kind} path{other} for "
                        "this utterance.")
    name = 'wav file' if path.lower().endswith('.wav') else f'{kind} file'
    if path not in probes:
        try:
            probes[path] = media.probe(path)
        except media.MediaError as err:
            raise UserError(f"{where}: the {name} {path} {err}.") from None
    info = probes[path]
    problem = media.segment_problem(info, start, end, audio=kind == 'audio', video=kind == 'video')
    if problem is None and kind == 'audio' and start is None and end is None and info.audio[1] <= info.audio[0]:
        problem = 'holds no samples'
    if problem:
        raise UserError(f"{where}: the {name} {path} {problem}.")


def check_npy(where, path):
    if not path:
        raise UserError(f"{where}: the visual column has no .npy path for this utterance.")
    if not os.path.isfile(path):
        raise UserError(f"{where}: the visual feature file {path} does not exist.")
    return path


# ----------------------------------------------------------------------------- whole file

def check_dialogues(path, rows):
    """Per dialogue of one file: turns increasing and unique, one split."""
    last = {}       # key -> the dialogue's latest row so far
    seen = {}       # (key, turn) -> line
    for row in rows:
        key, turn = row['key'], row['turn']
        where = f"{path}, line {row['line']} (dialogue {row['dialogue']})"
        if (key, turn) in seen:
            raise UserError(f"{where}: turn {turn} appears twice in this dialogue (lines {seen[key, turn]} and "
                            f"{row['line']}); each (dialogue, turn) must be unique.")
        seen[key, turn] = row['line']
        previous = last.get(key)
        if previous and turn < previous['turn']:
            raise UserError(f"{where}: turns out of order: turn {turn} comes after turn {previous['turn']} (line "
                            f"{previous['line']}); sort each dialogue's rows by turn.")
        if previous and row['split'] != previous['split']:
            raise UserError(f"{where}: this dialogue is in two splits ({previous['split']} on line "
                            f"{previous['line']}, {row['split']} here); a dialogue belongs to one split.")
        last[key] = row


def check_label_spellings(table, paths):
    """Labels that differ only in case (joy, Joy) are one label mistyped, not two classes: refused, both named.
    paths: file name -> its path (for the message); rows in input order, so the first spelling is the earlier."""
    first = {}      # casefolded label -> row index of its first spelling
    for i, label in table['label'].dropna().drop_duplicates().items():
        j = first.setdefault(label.casefold(), i)
        if j != i:
            row, other = table.loc[i], table.loc[j]
            raise UserError(f"{paths[row['file']]}, line {row['line']} (dialogue {row['dialogue']}): the label "
                            f"{label!r} differs only in case from {other['label']!r} ({paths[other['file']]}, line "
                            f"{other['line']}); labels are case-sensitive, so these would be two classes: write "
                            "them the same way.")


def ordered(table, file_names):
    """Rows by split (train, dev, test), then input file, then first appearance of the dialogue, then turn."""
    dialogue_rank = table.groupby('key', sort=False).ngroup()
    order = pd.DataFrame({'split': table['split'].map(SPLITS.index),
                          'file': table['file'].map(file_names.index),
                          'dialogue': dialogue_rank, 'turn': table['turn']})
    rows = order.sort_values(['split', 'file', 'dialogue', 'turn'], kind='stable').index
    return table.loc[rows].reset_index(drop=True)
