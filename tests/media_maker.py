"""Recordings made in the tests with PyAV: a voiced sound whose pitch and loudness are chosen per segment, and
frames holding a real face (scikit-image's astronaut) that drifts a little, so the frames differ.

    write_recording('talk.mp4', [(1.0, 140, 0.2), (1.0, 260, 0.6)])    # segments: (seconds, f0 Hz, amplitude)
    write_recording('voice.wav', [(1.0, 140, 0.2)], video=False)
    write_recording('silent.mp4', [(1.0, 0, 0)], audio=False)
    write_recording('nobody.mp4', [(1.0, 140, 0.2)], face=False)        # frames without a face

mp4: H.264 video (libx264, a keyframe every second) and AAC audio; mkv: lossless H.264 (qp 0) and FLAC, so a
segment of a long file holds the same pixels and samples as the clip alone; wav: 16-bit PCM.
"""
import functools

import av
import numpy as np
import skimage.data
import skimage.transform

RATE = 16000
FPS = 25


@functools.lru_cache(maxsize=4)
def face_image(size):
    image = skimage.transform.resize(skimage.data.astronaut(), (size, size), anti_aliasing=True)
    return (image * 255).astype(np.uint8)


def voiced(seconds, f0, amplitude, seed):
    """A voiced sound: harmonics of f0 with a 5 Hz vibrato and an amplitude envelope, plus a little noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    if f0 <= 0:
        return (0.001 * rng.standard_normal(len(t))).astype(np.float32)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.abs(np.sin(2 * np.pi * 2 * t))
    return (amplitude * envelope * wave / 2 + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def frame_at(i, size, face):
    """Frame i: the astronaut shifted by a few pixels (or, without a face, a smooth grey gradient)."""
    if not face:
        ramp = np.linspace(40, 200, size, dtype=np.float32)
        grey = (ramp[None, :] + 20 * np.sin(i / 5 + ramp[:, None] / 30)).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, 2)
    dx, dy = round(4 * np.sin(i / 7)), round(3 * np.cos(i / 11))
    return np.roll(face_image(size), (dy, dx), axis=(0, 1))


def write_recording(path, segments, size=320, video=True, audio=True, face=True, seed=0):
    """Write path (mp4, mkv or wav) holding the segments (seconds, f0, amplitude) one after the other."""
    path = str(path)
    container = av.open(path, mode='w')
    kind = path.rsplit('.', 1)[-1]
    vstream = astream = None
    if video and kind != 'wav':
        lossless = {'qp': '0'} if kind == 'mkv' else {}
        vstream = container.add_stream('libx264', rate=FPS, options={'g': str(FPS), 'preset': 'ultrafast', **lossless})
        vstream.width = vstream.height = size
        vstream.pix_fmt = 'yuv420p'
    if audio:
        codec = {'mp4': 'aac', 'mkv': 'flac', 'wav': 'pcm_s16le'}[kind]
        astream = container.add_stream(codec, rate=RATE, layout='mono')
    sound = np.concatenate([voiced(s, f0, a, seed + k) for k, (s, f0, a) in enumerate(segments)])
    if vstream is not None:
        pts = 0
        for seconds, _, _ in segments:          # each segment's frames as a clip of its own would have them
            for i in range(round(seconds * FPS)):
                frame = av.VideoFrame.from_ndarray(frame_at(i, size, face), format='rgb24')
                frame.pts, pts = pts, pts + 1
                container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
    if astream is not None:
        fmt = 's16' if kind == 'wav' else astream.codec_context.format.name
        samples = (sound * 32767).astype(np.int16) if fmt == 's16' else sound
        step = 1024
        for start in range(0, len(samples), step):
            chunk = samples[start:start + step]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format=fmt.rstrip('p') if fmt != 'fltp' else 'fltp',
                                               layout='mono')
            frame.sample_rate, frame.pts = RATE, start
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    container.close()
    return path


# ----------------------------------------------------------------------------- conversations with recordings

VOICES = {'calm': (120, 0.12), 'happy': (210, 0.35), 'angry': (300, 0.7)}     # emotion -> (f0 Hz, amplitude)
WORDS = ('okay', 'sure', 'I see', 'right', 'well then', 'fine')               # the same words whatever the emotion


def conversations_with_recordings(folder, n_dialogues, turns, seconds, seed, per_dialogue=False, split=None,
                                  fmt='mp4'):
    """Rows (dialogue, turn, speaker, text, emotion, video[, start, end]) whose emotion is heard (pitch and
    loudness) but not read (the words are drawn independently of it); a clip per utterance, or with
    per_dialogue one recording per dialogue and each turn's start / end in it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in range(n_dialogues):
        emotions = rng.choice(sorted(VOICES), size=turns)
        texts = rng.choice(WORDS, size=turns)
        segments = [(seconds, *VOICES[e]) for e in emotions]
        name = f'{split or "x"}{seed}_{d}'
        if per_dialogue:
            write_recording(folder / f'{name}.{fmt}', segments, seed=seed * 1000 + d * 10)
        for t, (emotion, text) in enumerate(zip(emotions, texts)):
            row = {'dialogue': f'd{d}', 'turn': t, 'speaker': 'AB'[t % 2], 'text': str(text), 'emotion': str(emotion)}
            if per_dialogue:
                row.update(video=f'{folder.name}/{name}.{fmt}', start=round(t * seconds, 3),
                           end=round((t + 1) * seconds, 3))
            else:
                write_recording(folder / f'{name}_{t}.{fmt}', [segments[t]], seed=seed * 1000 + d * 10 + t)
                row['video'] = f'{folder.name}/{name}_{t}.{fmt}'
            rows.append(row)
    return rows
