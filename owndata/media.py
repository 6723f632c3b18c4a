"""Recordings read with PyAV (FFmpeg inside its wheel): probing at the trust boundary, mono 16 kHz audio and
sampled RGB frames of one utterance's segment.

    info = probe(path)                          # MediaInfo, or MediaError: not there, not decodable
    problem = segment_problem(info, start, end, audio=True, video=True)   # None, or why the segment is bad
    samples = decode_audio(path, start, end)    # float32 (n,), mono 16000 Hz
    frames = decode_frames(path, start, end, fps=2.0)   # list of (H, W, 3) uint8 RGB frames at fps
    seconds = parse_time('00:01:02,500')        # 62.5: seconds, or MELD's hh:mm:ss,mmm

A segment is [start, end) in seconds from the start of the recording (None, None: all of it). Audio: every
audio stream's first one, decoded, mixed down to mono and resampled to 16 kHz by FFmpeg's resampler
(libswresample through av.AudioResampler, float samples), then cut to the segment's samples. Frames: the
first video stream, sampled at fps at the midpoints of equal slots ((k + 0.5) / fps after start, at least
one frame: the segment's middle), each sample the last decoded frame shown at that time; only sampled
frames are converted to RGB. One decoder thread: the parallelism is the workers' (owndata/media_jobs.py).
DECODER is what the features depend on here; it goes into each modality's recipe.
"""
import math
import os
import re
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16000
MIN_SEGMENT = 0.01        # seconds: a shorter segment is empty
DECODER = {'library': f'PyAV {av.__version__}', 'audio': f'first audio stream, mono, {SAMPLE_RATE} Hz float32 '
           '(FFmpeg resampler)', 'video': 'first video stream, rgb24, the frame shown at each sampled time'}
TIME = re.compile(r'^(?:(\d+):)?(\d+):(\d+(?:[.,]\d*)?)$')      # [hh:]mm:ss[,mmm] (MELD: 00:16:16,059)


class MediaError(Exception):
    """A recording that cannot be used; the message says why (the caller names the CSV, line and dialogue)."""


@dataclass
class MediaInfo:
    path: str
    audio: tuple            # (start, end) seconds of the first audio stream, or None without one
    video: tuple            # (start, end) seconds of the first video stream, or None without one
    duration: float         # of the container, seconds


def parse_time(cell):
    """Seconds from a cell: a number ('62.5') or a clock time ('1:02.5', '00:01:02,500'); None when empty."""
    text = cell.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        match = TIME.match(text)
        if not match:
            raise ValueError(f"{cell!r} is neither seconds (62.5) nor a time hh:mm:ss,mmm (00:01:02,500)") from None
        hours, minutes, rest = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(rest.replace(',', '.'))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{cell!r} is not a time of the recording (a non-negative number of seconds)")
    return seconds


# ----------------------------------------------------------------------------- probing

def probe(path):
    """The streams of the recording at path and their time ranges (read from the headers, nothing decoded)."""
    if not os.path.isfile(path):
        raise MediaError('does not exist')
    try:
        with av.open(path) as container:
            duration = container.duration / av.time_base if container.duration else None
            ranges = {kind: stream_range(streams[0], duration) if streams else None
                      for kind, streams in (('audio', container.streams.audio), ('video', container.streams.video))}
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise MediaError(f'cannot be read as audio or video by FFmpeg ({err})') from None
    if ranges['audio'] is None and ranges['video'] is None:
        raise MediaError('holds neither an audio nor a video stream')
    known = [end for _, end in filter(None, ranges.values())]
    return MediaInfo(path=path, audio=ranges['audio'], video=ranges['video'],
                     duration=duration if duration else max(known))


def stream_range(stream, container_duration):
    """(start, end) seconds of a stream, from its header (the container's duration when it has none)."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if stream.duration is not None and stream.time_base is not None:
        return max(start, 0.0), start + float(stream.duration * stream.time_base)
    return max(start, 0.0), container_duration or 0.0


def segment_problem(info, start, end, audio, video):
    """Why [start, end) of this recording cannot give the asked streams (audio, video: bools), or None."""
    kinds = [kind for kind, wanted in (('audio', audio), ('video', video)) if wanted]
    for kind in kinds:
        if getattr(info, kind) is None:
            return f'has no {kind} stream' + (' (the visual features are made from its frames)' if kind == 'video'
                                              else '')
    if start is None and end is None:
        return None
    lo, hi = start or 0.0, end if end is not None else info.duration
    if hi <= lo:
        return f'the segment start {lo:g} s to end {hi:g} s is empty: end must come after start'
    if hi - lo < MIN_SEGMENT:
        return f'the segment {lo:g}-{hi:g} s is shorter than {MIN_SEGMENT * 1000:g} ms: nothing to hear or see'
    if lo >= info.duration or hi > info.duration + 0.5:      # half a second of slack for rounded transcripts
        return f'the segment {lo:g}-{hi:g} s lies outside the recording, which is {info.duration:.3f} s long'
    for kind in kinds:
        s, e = getattr(info, kind)
        if lo >= e or hi <= s:
            return f'the segment {lo:g}-{hi:g} s holds no {kind}: its {kind} stream covers {s:.3f}-{e:.3f} s'
    return None


# ----------------------------------------------------------------------------- decoding

def open_stream(container, kind, start):
    stream = getattr(container.streams, kind)[0]
    stream.thread_type, stream.thread_count = 'SLICE', 1
    if start:
        container.seek(max(0, int((start - 1.0) / stream.time_base)), stream=stream, backward=True)
    return stream


def decode_audio(path, start=None, end=None):
    """float32 (n,) mono 16 kHz samples of [start, end) (the whole stream for None, None)."""
    lo = start or 0.0
    with av.open(path) as container:
        stream = open_stream(container, 'audio', start)
        resampler = av.AudioResampler(format='flt', layout='mono', rate=SAMPLE_RATE)
        chunks, first = [], None
        for frame in container.decode(stream):
            if frame.time is not None and end is not None and frame.time > end:
                break
            if first is None:
                first = frame.time if frame.time is not None else 0.0
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if first is not None and first > lo + 1.0 / SAMPLE_RATE and start:     # the seek went too far: from the top
        return decode_audio_from_top(path, start, end)
    offset = first or 0.0
    a = max(0, round((lo - offset) * SAMPLE_RATE))
    b = len(samples) if end is None else max(a, round((end - offset) * SAMPLE_RATE))
    return np.ascontiguousarray(samples[a:b], dtype=np.float32)


def decode_audio_from_top(path, start, end):
    full = decode_audio(path)
    return full[round(start * SAMPLE_RATE):None if end is None else round(end * SAMPLE_RATE)]


def sample_times(start, end, fps):
    """The times (seconds) at which frames are taken: the midpoints of floor(length * fps) equal slots, at least
    one (the segment's middle)."""
    n = max(1, math.floor((end - start) * fps + 1e-9))
    return [start + (k + 0.5) * (end - start) / n for k in range(n)]


def decode_frames(path, start, end, fps):
    """(H, W, 3) uint8 RGB frames of [start, end) at fps (sample_times), the frame shown at each time."""
    with av.open(path) as container:
        stream = open_stream(container, 'video', start)
        lo = start or 0.0
        hi = end if end is not None else (stream_range(stream, container.duration / av.time_base
                                                       if container.duration else None)[1])
        times, frames, shown = sample_times(lo, hi, fps), [], None
        for frame in container.decode(stream):
            while frames.__len__() < len(times) and frame.time is not None and frame.time > times[len(frames)]:
                if shown is None:       # the first frame comes after a sampled time: take that first frame
                    shown = frame
                frames.append(shown.to_ndarray(format='rgb24'))
            if len(frames) == len(times):
                break
            shown = frame
        while shown is not None and len(frames) < len(times):      # the last frame shows until the end
            frames.append(shown.to_ndarray(format='rgb24'))
    return frames
