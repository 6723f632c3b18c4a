"""Meeting transcripts read as conversations: a WebVTT (.vtt) or SubRip (.srt) file is one dialogue, each of its
cues with words one turn, cut out of the recording of the same name beside it.

    cues = read_cues('call.vtt', text)           # [Cue(line, number, start, end, speaker, text)], or UserError
    recording = recording_beside('call.vtt')     # call.mp4, ..., call.wav: the first of RECORDING_EXTENSIONS there
    header, records = as_table('call.vtt', text, recording)    # the plain-schema CSV rows its cues make
    write('call.vtt', [('Ann', 'Hello there.', 0.0, 1.5), ('Bob', 'Hi!', 1.5, 2.2)])     # a transcript

Reading (owndata/conversations.py reads the table as it reads a CSV: the same checks; docs/recordings.md):
- WebVTT with webvtt-py, one block at a time (blocks end at an empty line; a line holding '-->' after a block's
  first line, or after the header, starts the next one, as webvtt-py splits them): the first block is the header
  (WEBVTT, then its metadata), NOTE, STYLE and REGION blocks are skipped, every other block is a cue: an optional
  identifier line, the timing line '[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt [settings]', its text lines. A block that
  is none of these, or from which webvtt-py reads no cue (a malformed time), is refused, named by its line:
  webvtt-py's reading of a whole file drops such a cue silently and keeps no line numbers.
- SubRip with srt, the whole text at once (each cue's line from srt's own pattern, which srt.parse follows
  match by match); a block srt cannot read is refused, named by its line.
- A cue's text: its lines, each stripped, joined by one space, without tags: in WebVTT every cue tag (webvtt-py's
  rule: <v Name>, <i>, <b>, <c.class>, <00:00:01.500>, ...), then character references decoded (&amp; is &); in
  SubRip, which escapes nothing, only its formatting tags <b>, <i>, <u>, <font ...> (so 'a <note>' stays).
- Its speaker: the name of its first voice tag (<v Name>, <v.class Name>). In a file without voice tags, a
  leading 'Name: ' (up to NAME_CHARS characters before the first colon that a space or the end follows) when
  every cue with words starts so (Zoom writes 'Name: text'); in a file where one cue does not (subtitles whose
  sentence begins 'Note: ...'), no prefix is a name. A cue without a name is said by UNNAMED: one party.
- A cue without words (empty, blank, only tags or only its name) is no turn. A turn's number is its cue's
  position in the file (1 = the first cue, as SubRip numbers them), so the turns skip such cues' numbers.
- The cues keep the file's order and may overlap (people talking at once): each is cut on its own.
- Labels, for training: the CSV beside the transcript, call.labels.csv (labels_path), with a turn column (the
  cue's number) and the label column (emotion, or --label-col's), a row per cue with words.
"""
import datetime
import html
import os
import re
from dataclasses import dataclass

import srt
import webvtt

from owndata import media
from utils import UserError

FORMATS = {'.vtt': 'WebVTT', '.srt': 'SubRip'}
# the recording beside a transcript: the first of these found, videos first (their frames and their sound)
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.mov', '.avi', '.m4v')
AUDIO_EXTENSIONS = ('.m4a', '.wav', '.mp3', '.flac', '.ogg', '.opus', '.aac')
RECORDING_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
LABELS_SUFFIX = '.labels.csv'       # call.vtt -> call.labels.csv
TURN = 'turn'                       # the labels CSV's column of cue numbers
LABEL = 'emotion'                   # its column of labels by default, and the plain schema's
UNNAMED = 'unnamed'                 # the speaker of every cue without a name
NAME_CHARS = 40
NAME = re.compile(rf'(?P<name>[^\s:][^:]{{0,{NAME_CHARS - 1}}}?)\s*:(?:\s+|$)')
LINE_BREAK = re.compile(r'\r\n|\r|\n')                      # the line terminators of WebVTT (and SubRip)
KEYWORD_BLOCK = re.compile(r'(NOTE|STYLE|REGION)(\s|$)')    # WebVTT blocks that are not cues
SRT_TAG = re.compile(r'</?(?:b|i|u|font)(?:\s[^<>]*)?>', re.IGNORECASE)   # SubRip's formatting tags
TIMING = "'start --> end'"


@dataclass
class Cue:
    line: int           # the line of its timing ('start --> end'): where messages point
    number: int         # its position among the file's cues, 1 = the first: the turn
    start: int          # milliseconds
    end: int            # milliseconds
    speaker: str        # its voice tag's name, its leading 'Name:', or UNNAMED ('' until names are settled)
    text: str           # its words ('' for a cue without any)


def is_transcript(path):
    return os.path.splitext(os.fspath(path))[1].lower() in FORMATS


def format_name(path):
    return FORMATS[os.path.splitext(os.fspath(path))[1].lower()]


def labels_path(path):
    """The labels CSV of a transcript: call.vtt -> call.labels.csv beside it."""
    return os.path.splitext(os.fspath(path))[0] + LABELS_SUFFIX


# ----------------------------------------------------------------------------- reading

def read_cues(path, text):
    """Every cue of a transcript's text (cues without words included, their text ''), speakers settled."""
    text = '\n'.join(LINE_BREAK.split(text.removeprefix('\ufeff')))
    cues = vtt_cues(path, text) if format_name(path) == 'WebVTT' else srt_cues(path, text)
    if not cues:
        raise UserError(f"{path} holds no cue (no {TIMING} line): there is no turn to read.")
    cues = with_speakers(cues)
    if not any(cue.text for cue in cues):
        raise UserError(f"{path}: none of its {len(cues)} cues holds words (each is empty, blank, only tags or only "
                        "a name); there is no turn to read.")
    return cues


def vtt_blocks(lines):
    """(number of its first line, its lines) of every block of a WebVTT file's lines, as webvtt-py splits them."""
    block, first, in_header = [], 1, True
    for number, line in enumerate(lines, 1):
        if not line or (block and '-->' in line and (in_header or len(block) > 1 or '-->' in block[0])):
            if block:
                yield first, block
                block, in_header = [], False
        if line:
            first = number if not block else first
            block.append(line)
    if block:
        yield first, block


def vtt_cues(path, text):
    blocks = list(vtt_blocks(text.split('\n')))
    if not blocks or not blocks[0][1][0].startswith('WEBVTT'):
        first = blocks[0][1][0] if blocks else ''
        raise UserError(f"{path}, line {blocks[0][0] if blocks else 1}: a WebVTT file starts with the line WEBVTT, "
                        f"this one with {first!r}.")
    cues = []
    for first, block in blocks[1:]:
        arrow = next((i for i, line in enumerate(block[:2]) if '-->' in line), None)
        captions = [] if arrow is None else webvtt.from_string('\n'.join(['WEBVTT', '', *block])).captions
        if not captions and KEYWORD_BLOCK.match(block[0]):
            continue
        if not captions and arrow is None:
            raise UserError(f"{path}, line {first}: this block is neither a cue (an optional identifier line, then "
                            f"{TIMING}) nor a NOTE, STYLE or REGION block: {block[0]!r}.")
        if not captions:
            raise UserError(f"{path}, line {first + arrow}: the cue time {block[arrow].strip()!r} is not {TIMING} in "
                            "WebVTT's [hh:]mm:ss.ttt (e.g. 00:01:02.500 --> 00:01:04.000, or 01:02.500 --> "
                            "01:04.000).")
        caption = captions[0]
        voice = webvtt.Caption.VOICE_SPAN_PATTERN.search(caption.raw_text)
        cues.append(Cue(line=first + arrow, number=len(cues) + 1, start=caption.start_time.in_milliseconds(),
                        end=caption.end_time.in_milliseconds(),
                        speaker=html.unescape(voice.group(1)).strip() if voice else '',
                        text=joined(html.unescape(caption.text))))
    return cues


def srt_cues(path, text):
    try:
        subtitles = list(srt.parse(text))
    except srt.SRTParseError as err:
        raise UserError(f"{path}, line {unread_line(text, err)}: this block is not a SubRip cue (its number, then "
                        f"{TIMING} as hh:mm:ss,ttt --> hh:mm:ss,ttt, then its text): "
                        f"{err.unmatched_content.strip()[:200]!r}.") from None
    lines = [text.count('\n', 0, match.start(2)) + 1 for match in srt.SRT_REGEX.finditer(text)]
    assert len(lines) == len(subtitles)       # srt.parse yields a subtitle per match of this pattern
    return [Cue(line=line, number=i + 1, start=milliseconds(sub.start), end=milliseconds(sub.end), speaker='',
                text=joined(SRT_TAG.sub('', sub.content)))
            for i, (line, sub) in enumerate(zip(lines, subtitles))]


def unread_line(text, err):
    """The line srt could not read: the timing line of the unread block, else its first line that is not blank."""
    offset = err.expected_start + len(err.unmatched_content) - len(err.unmatched_content.lstrip())
    block = err.unmatched_content.lstrip().split('\n')
    arrow = next((i for i, line in enumerate(block) if '->' in line), 0)
    return text.count('\n', 0, offset) + 1 + arrow


def milliseconds(delta):
    return delta // datetime.timedelta(milliseconds=1)


def joined(text):
    """A cue's text lines, each stripped, joined by one space (empty lines dropped)."""
    return ' '.join(line.strip() for line in text.split('\n') if line.strip())


def with_speakers(cues):
    """Each cue's speaker: its voice tag's name; in a file without voice tags, when every cue with words starts
    with 'Name: ', that name (taken off its text); else UNNAMED."""
    spoken = [cue for cue in cues if cue.text]
    names = [NAME.match(cue.text) for cue in spoken]
    if all(names) and not any(cue.speaker for cue in cues):
        for cue, name in zip(spoken, names):
            cue.speaker, cue.text = name.group('name'), cue.text[name.end():]
    for cue in cues:
        cue.speaker = cue.speaker or UNNAMED
    return cues


# ----------------------------------------------------------------------------- the recording and the labels

def add_recording_flag(parser):
    parser.add_argument('--recording', nargs='+', metavar='FILE',
                        help="the recording of each meeting transcript (.vtt, .srt) among the inputs, in their order "
                             "(default: the file of the transcript's name beside it: call.vtt -> call.mp4, "
                             "call.m4a, call.wav, ...)")


def recordings_of(paths, recordings, media_dirs=None):
    """transcript path -> its recording, from --recording's files (one per transcript among paths, in their order);
    --media-dir, which finds MELD's clips for CSVs, is refused with a transcript."""
    spoken = [path for path in paths if is_transcript(path)]
    if spoken and media_dirs:
        raise UserError(f"--media-dir finds the clips of CSVs without a video column, but {spoken[0]} is a meeting "
                        "transcript, whose turns are cut out of its own recording (beside it, or --recording FILE); "
                        "give the transcripts without --media-dir.")
    if recordings and len(recordings) != len(spoken):
        raise UserError(f"--recording names {len(recordings)} file(s) for {len(spoken)} meeting transcript(s) (.vtt, "
                        ".srt) among the inputs: give one per transcript, in their order, or none to take each "
                        "transcript's recording beside it (call.vtt: call.mp4, call.m4a, call.wav, ...).")
    return dict(zip(spoken, recordings or []))


def recording_beside(path):
    """The recording of the transcript at path: the file of the same name beside it whose extension (in any case)
    comes first in RECORDING_EXTENSIONS."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(name)[0]
    found = {}
    for other in os.listdir(folder):
        other_stem, extension = os.path.splitext(other)
        if other_stem == stem and os.path.isfile(os.path.join(folder, other)):
            found.setdefault(extension.lower(), other)
    for extension in RECORDING_EXTENSIONS:
        if extension in found:
            return os.path.join(folder, found[extension])
    raise UserError(f"{path}: no recording of the same name beside it (looked in {folder} for {stem} with "
                    f"{', '.join(RECORDING_EXTENSIONS)}); put the call's recording there under that name, or give "
                    "--recording FILE.")


def recording_role(path):
    """The column the recording fills: 'audio' for an audio file (AUDIO_EXTENSIONS, or one without a video
    stream), else 'video' (its frames and its sound)."""
    if os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS:
        return 'audio'
    try:
        return 'video' if media.probe(path).video else 'audio'
    except media.MediaError:
        return 'video'          # owndata/conversations.py reports why, naming the first cue's line


def cue_labels(path, cues, sidecar, header, records, column):
    """cue number -> label from the transcript's labels CSV (header and (line, cells) records as
    conversations.parse_csv reads them): a row per cue with words, its turn and its label in `column`."""
    missing = [name for name in (TURN, column) if name not in header]
    if missing:
        raise UserError(f"{sidecar}, line 1: no {missing[0]} column. The labels of {path} are a row per cue with "
                        f"the columns {TURN} (the cue's position in the transcript, 1 = the first cue) and {column} "
                        f"(its label; --label-col names another column); columns found: {', '.join(header)}.")
    numbers = {cue.number: cue for cue in cues}
    labels, lines = {}, {}
    for line, cells in records:
        where = f"{sidecar}, line {line}"
        turn, label = cells[header.index(TURN)].strip(), cells[header.index(column)].strip()
        if not re.fullmatch(r'\d+', turn) or int(turn) not in numbers:
            raise UserError(f"{where}: the {TURN} {turn!r} is not a cue of {path}, whose cues are numbered 1 to "
                            f"{len(cues)} in the order of the file.")
        if int(turn) in lines:
            raise UserError(f"{where}: turn {turn} is labelled twice (lines {lines[int(turn)]} and {line}).")
        if not label and numbers[int(turn)].text:
            raise UserError(f"{where}: the label ({column}) of turn {turn} is empty; every cue with words needs one.")
        labels[int(turn)], lines[int(turn)] = label, line
    unlabelled = [cue for cue in cues if cue.text and cue.number not in labels]
    if unlabelled:
        raise UserError(f"{path}, line {unlabelled[0].line}: this cue (turn {unlabelled[0].number}) has no row in "
                        f"{sidecar}, which labels {len(labels)} cues; every cue with words needs its label there "
                        f"({len(unlabelled)} have none).")
    return labels


def as_table(path, text, recording=None, sidecar=None, label_column=LABEL):
    """(header, [(line, cells)]) of the transcript at path: the plain-schema CSV rows its cues with words make
    (dialogue: the file's stem; turn: the cue's number; speaker; text; start and end in seconds; the recording
    (None: recording_beside's) in recording_role's column), and their labels (in the LABEL column) when sidecar,
    the labels CSV read (path, header, records), is given, label_column its column of labels."""
    cues = read_cues(path, text)
    labels = cue_labels(path, cues, *sidecar, label_column) if sidecar else None
    recording = os.path.abspath(recording) if recording else recording_beside(path)
    role = recording_role(recording)
    header = ['dialogue', 'turn', 'speaker', 'text', 'start', 'end', role] + ([LABEL] if labels else [])
    dialogue = os.path.splitext(os.path.basename(path))[0]
    records = [(cue.line, [dialogue, str(cue.number), cue.speaker, cue.text, str(cue.start / 1000),
                           str(cue.end / 1000), recording] + ([labels[cue.number]] if labels else []))
               for cue in cues if cue.text]
    return header, records


# ----------------------------------------------------------------------------- writing

def write(path, turns):
    """Write turns (speaker, text, start seconds, end seconds) as the transcript at path, by its extension: WebVTT
    with each cue's speaker in a voice tag (as Teams writes), SubRip as 'Speaker: text' (as Zoom writes)."""
    ms = [(round(start * 1000), round(end * 1000)) for _, _, start, end in turns]
    if format_name(path) == 'WebVTT':
        stamp = webvtt.models.Timestamp.from_seconds
        captions = [webvtt.Caption(str(stamp(a / 1000)), str(stamp(b / 1000)),
                                   f'<v {html.escape(speaker, quote=False)}>{html.escape(text, quote=False)}</v>')
                    for (speaker, text, _, _), (a, b) in zip(turns, ms)]
        content = webvtt.WebVTT(captions=captions).content
    else:
        content = srt.compose([srt.Subtitle(i + 1, datetime.timedelta(milliseconds=a),
                                            datetime.timedelta(milliseconds=b), f'{speaker}: {text}')
                               for i, ((speaker, text, _, _), (a, b)) in enumerate(zip(turns, ms))], reindex=False)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(content)
    return path
